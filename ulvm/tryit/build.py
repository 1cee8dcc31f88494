"""Build the files of the book's "Try it" page: the runtime from npm, the model exported, the script, samples.

    book/web/package.json, package-lock.json   onnxruntime-web, pinned (committed)
    book/web/node_modules/                     `npm ci` puts it here (`install_runtime`; git-ignored)
    book/web/try_it.js                         the page's script (committed)
    book/web/build/try_it/                     `build_site` writes here (git-ignored); `_config.yml`'s
                                               html_extra_path copies it to `_build/html/try_it/`:
        ulvm.onnx                              the shipped weights, exported by `ulvm.deploy.export.export_onnx`
        ort.wasm.min.js, ort-wasm-simd-threaded.mjs, ort-wasm-simd-threaded.wasm
                                               onnxruntime-web's WebAssembly CPU runtime, nothing else of it
        try_it.js, samples/synthetic_<i>.png   the script, and synthetic images to try at once

npm is needed once, to install; after that the book builds offline. The page itself is `book/try_it.md`.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from ..data.prepare import png_bytes
from ..errors import UlvmError
from ..io import atomic_write_bytes

WEB_DIR = "book/web"                          # relative to the project root
SITE_DIR = "book/web/build"                   # what the book copies (html_extra_path)
PAGE_FOLDER = "try_it"                        # the folder of the page's files in the built HTML
RUNTIME_PACKAGE = "onnxruntime-web"
# The WebAssembly CPU build only: the UMD script, its Emscripten loader and the engine. The package's
# WebGPU/WebGL/JSEP variants and source maps (150 MB in all) stay out of the book.
RUNTIME_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
MODEL_FILE = "ulvm.onnx"
SCRIPT_FILE = "try_it.js"
SAMPLES = 3                                   # synthetic_0.png ... the buttons of book/try_it.md
SAMPLE_SIZE = (480, 360)                      # not square, as photos: both axes of each resize differ


def runtime_folder(root: Path) -> Path:
    return root / WEB_DIR / "node_modules" / RUNTIME_PACKAGE / "dist"


def install_runtime(root: Path, force: bool = False) -> Path:
    """Install onnxruntime-web with `npm ci` (the exact versions of book/web/package-lock.json) unless the
    locked version is already there; returns the folder of its files."""
    web = root / WEB_DIR
    installed = web / "node_modules" / ".package-lock.json"        # npm's record of what it installed
    if not force and installed.is_file() and installed.stat().st_mtime >= (web / "package-lock.json").stat().st_mtime \
            and all((runtime_folder(root) / name).is_file() for name in RUNTIME_FILES):
        return runtime_folder(root)
    npm = shutil.which("npm")
    if npm is None:
        raise UlvmError("npm not found: the book's Try it page needs onnxruntime-web from the npm registry; install "
                        "Node.js with npm (Debian/Ubuntu: apt-get install nodejs npm), then run `ulvm try-it` again")
    print(f"installing {RUNTIME_PACKAGE} into {WEB_DIR}/node_modules (npm ci) ...", flush=True)
    process = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=web,
                             capture_output=True, text=True)
    if process.returncode != 0:
        last_line = ((process.stderr or process.stdout).strip().splitlines() or ["no output"])[-1]
        raise UlvmError(f"npm ci in {web} failed (exit {process.returncode}): {last_line}")
    missing = [name for name in RUNTIME_FILES if not (runtime_folder(root) / name).is_file()]
    if missing:
        raise UlvmError(f"{runtime_folder(root)}: {', '.join(missing)} missing: not the onnxruntime-web this page "
                        f"was written for (see {WEB_DIR}/package.json)")
    return runtime_folder(root)


def write_samples(folder: Path, count: int = SAMPLES) -> list[Path]:
    """Synthetic dermoscopy-like images (`ulvm.data.synthetic.sample`), resized to `SAMPLE_SIZE`."""
    from PIL import Image

    from ..data.synthetic import sample

    written = []
    for index in range(count):
        image = Image.fromarray(sample(index, seed=2024)[0]).resize(SAMPLE_SIZE, Image.BILINEAR)
        written.append(atomic_write_bytes(folder / f"synthetic_{index}.png", png_bytes(np.asarray(image))))
    return written


def build_site(root: Path, weights: str = "isic2017", out: str | os.PathLike = SITE_DIR,
               install: bool = True) -> Path:
    """Write the page's files into `OUT/try_it/` (default `book/web/build/try_it/`); returns that folder.

    The model is exported from `weights` by `ulvm.deploy.export.export_onnx` and checked against PyTorch in ONNX
    Runtime (`deployed_parity`), as `ulvm export` does. With `install`, onnxruntime-web is installed by npm
    first if it is not there yet.
    """
    from ..deploy import export
    from ..deploy.prediction import load_weights

    runtime = install_runtime(root) if install else runtime_folder(root)
    missing = [name for name in RUNTIME_FILES if not (runtime / name).is_file()]
    if missing:
        raise UlvmError(f"{runtime}: {', '.join(missing)} missing: install onnxruntime-web with `ulvm try-it`")
    folder = Path(out) if Path(out).is_absolute() else root / out
    folder = folder / PAGE_FOLDER
    model = load_weights(weights, "cpu")
    size = getattr(getattr(model, "config", None), "input_size", 256)
    if size != 256:
        raise UlvmError(f"{weights}: input size {size}; the Try it page's script is written for 256")
    onnx_file = export.export_onnx(model, folder / MODEL_FILE, size=size)
    error = export.deployed_parity(model, onnx_file)
    if error > export.MAX_PARITY_ERROR:
        raise UlvmError(f"{onnx_file}: ONNX Runtime differs from PyTorch by {error:.1e} (limit "
                        f"{export.MAX_PARITY_ERROR:.0e}): the export does not reproduce the model")
    for name in RUNTIME_FILES:
        atomic_write_bytes(folder / name, (runtime / name).read_bytes())
    atomic_write_bytes(folder / SCRIPT_FILE, (root / WEB_DIR / SCRIPT_FILE).read_bytes())
    write_samples(folder / "samples")
    return folder


def page_weight(folder: Path) -> dict:
    """Bytes the page downloads once (model + runtime + script), raw and gzip-compressed (as most web
    servers send them)."""
    import gzip

    files = {name: (folder / name).read_bytes() for name in (MODEL_FILE, *RUNTIME_FILES, SCRIPT_FILE)}
    raw = {name: len(data) for name, data in files.items()}
    compressed = {name: len(gzip.compress(data, compresslevel=6)) for name, data in files.items()}
    return {"files": raw, "gzip": compressed, "total_bytes": sum(raw.values()),
            "total_gzip_bytes": sum(compressed.values())}
