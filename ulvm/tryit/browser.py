"""The Try it page driven in a real browser: the system's headless Chromium, through Playwright.

    with try_it_page(site) as page:                 # site: the folder `build_site` wrote into (and more)
        result = page.segment("photo.jpg")          # what the reader would see, and the mask read back
        result.mask                                 # (H, W) bool, or None when the page showed an error

The page is served from 127.0.0.1 on a free port (WebAssembly cannot load from file://). Chromium is the
system's (Debian: `apt-get install chromium`), never one downloaded by `playwright install`. Playwright is
in the `dev` extra. `agreement` compares two masks; `browser_record` measures the page for
`book/results/bench/browser.json`.
"""
from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import io
import json
import shutil
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from ..errors import UlvmError
from ..io import atomic_write_bytes
from .build import PAGE_FOLDER, page_weight

PAGE = "book/try_it.html"                 # the page's place in the built book, relative to its HTML root
TIMEOUT_MS = 120_000                      # the slowest step: a large photo on a busy 2-core machine
# base64 RGBA bytes in and out: a long list of numbers would take minutes to pass through Playwright
RESIZE_JS = """([pixels, width, height, outWidth, outHeight]) => {
  const bytes = Uint8ClampedArray.from(atob(pixels), (c) => c.charCodeAt(0));
  const out = ulvmTryIt.resizePil(bytes, width, height, outWidth, outHeight);
  let text = "";
  for (let i = 0; i < out.length; i += 8192) text += String.fromCharCode(...out.subarray(i, i + 8192));
  return btoa(text);
}"""
# What the page does NOT do: let the canvas shrink the image (drawImage's own bilinear filter), for comparison
CANVAS_RESIZE_JS = """async ([file, size]) => {
  const bytes = Uint8Array.from(atob(file), (c) => c.charCodeAt(0));
  const bitmap = await createImageBitmap(new Blob([bytes]), { colorSpaceConversion: "none" });
  const canvas = new OffscreenCanvas(size, size);
  const context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0, size, size);
  const out = context.getImageData(0, 0, size, size).data;
  let text = "";
  for (let i = 0; i < out.length; i += 8192) text += String.fromCharCode(...out.subarray(i, i + 8192));
  return btoa(text);
}"""
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def chromium_executable() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def minimal_site(root: Path, site: Path, files: Path | None = None) -> Path:
    """`site/book/try_it.html`: the raw HTML of `book/try_it.md` (its markup, style and scripts, which MyST
    passes to the book unchanged) in a bare page beside `site/try_it/`, for a test or a measurement that
    should not build the whole book. `files`: the folder `build_site` wrote, linked as `site/try_it` when it
    is elsewhere. Returns the page's path."""
    lines = (root / "book" / "try_it.md").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith('<div id="tryit"'))
    end = max(i for i, line in enumerate(lines) if line.startswith("<script"))
    html = "\n".join(["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                      "<title>Try it</title></head><body>", *lines[start:end + 1], "</body></html>"])
    if files is not None and Path(files).resolve() != (site / PAGE_FOLDER).resolve():
        (site / PAGE_FOLDER).symlink_to(Path(files).resolve(), target_is_directory=True)
    return atomic_write_bytes(site / PAGE, html.encode("utf-8"))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def served(folder: Path) -> Iterator[str]:
    """`folder` over HTTP on 127.0.0.1 (a free port); yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def chromium(executable: str | None = None):
    """A Playwright browser on the system's Chromium (headless)."""
    from playwright.sync_api import sync_playwright

    executable = executable or chromium_executable()
    if executable is None:
        raise UlvmError("chromium not found: install the system's Chromium (Debian: apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class PageResult:
    state: str                             # "done" or "error"
    message: str                           # the page's status line
    mask: np.ndarray | None = None         # (H, W) bool, read back from the page's mask canvas
    numbers: dict = field(default_factory=dict)   # name, width, height, area, modelMs, totalMs


class TryItPage:
    """The loaded page, ready for images (`segment`)."""

    def __init__(self, page, url: str):
        self.page = page
        started = time.perf_counter()
        page.goto(url)
        self._wait_for("['ready', 'error']", url)
        self.load_seconds = time.perf_counter() - started          # page, runtime and model, from a local server
        if self.status()[0] != "ready":
            raise UlvmError(f"{url}: the page did not load its model: {self.status()[1]}")

    def _wait_for(self, states: str, what) -> None:
        """Wait until the page's status is one of `states` (a JavaScript array), or say where it stopped."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        try:
            self.page.wait_for_function(
                f"{states}.includes(document.getElementById('tryit-status').dataset.state)", timeout=TIMEOUT_MS)
        except PlaywrightTimeout:
            raise UlvmError(f"{what}: the page gave no answer in {TIMEOUT_MS / 1000:.0f} s; its status: "
                            f"{self.status()}") from None

    def status(self) -> tuple[str, str]:
        return tuple(self.page.evaluate("(s => [s.dataset.state, s.textContent])"
                                        "(document.getElementById('tryit-status'))"))

    def segment(self, image: str | Path) -> PageResult:
        """Give `image` to the page's file input, wait for its answer, read the mask back."""
        self.page.evaluate("document.getElementById('tryit-status').dataset.state = 'submitted'")
        self.page.set_input_files("#tryit-file", str(image))
        self._wait_for("['done', 'error']", image)
        state, message = self.status()
        if state != "done":
            return PageResult(state, message)
        numbers = json.loads(self.page.evaluate("document.getElementById('tryit-result').dataset.result"))
        png = self.page.evaluate("document.getElementById('tryit-mask').toDataURL('image/png')")
        mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(png.split(",", 1)[1]))).convert("L")) > 127
        return PageResult(state, message, mask, numbers)

    def pil_resize(self, rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """The page's JavaScript copy of PIL's bilinear resize applied to `rgb` (H, W, 3) uint8, to (w, h)."""
        height, width = rgb.shape[:2]
        rgba = np.concatenate([rgb, np.full((height, width, 1), 255, np.uint8)], axis=2)
        resized = self.page.evaluate(RESIZE_JS, [base64.b64encode(rgba.tobytes()).decode(), width, height, *size])
        return np.frombuffer(base64.b64decode(resized), np.uint8).reshape(size[1], size[0], 4)[..., :3]


    def canvas_resize_difference(self, image: Path, size: int = 256) -> dict:
        """How far a canvas's resize of `image` to size x size lies from PIL's (grey levels, all channels)."""
        from ..deploy.prediction import as_rgb

        encoded = base64.b64encode(Path(image).read_bytes()).decode()
        canvas = np.frombuffer(base64.b64decode(self.page.evaluate(CANVAS_RESIZE_JS, [encoded, size])), np.uint8)
        pil = np.asarray(Image.fromarray(as_rgb(image)).resize((size, size), Image.BILINEAR)).astype(int)
        difference = np.abs(canvas.reshape(size, size, 4)[..., :3] - pil)
        return {"mean": round(float(difference.mean()), 3), "max": int(difference.max()),
                "fraction_over_2": round(float((difference > 2).mean()), 4)}


@contextlib.contextmanager
def try_it_page(site: Path, executable: str | None = None) -> Iterator[TryItPage]:
    """The page `site/book/try_it.html` (the built book, or `minimal_site`) loaded in headless Chromium."""
    with served(site) as url, chromium(executable) as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1600})
        yield TryItPage(page, f"{url}/{PAGE}")


def synthetic_photo(folder: Path, name: str = "synthetic_photo.png", size: tuple[int, int] = (767, 576),
                    index: int = 5) -> Path:
    """A synthetic dermoscopy-like image (`ulvm.data.synthetic`) at a photo's shape (default: PH2's 767 x 576),
    saved as PNG, or as JPEG (quality 92) when `name` ends in .jpg."""
    from PIL import Image

    from ..data.synthetic import sample

    image = Image.fromarray(sample(index, seed=11)[0]).resize(size, Image.BILINEAR)
    path = Path(folder) / name
    image.save(path, quality=92) if path.suffix == ".jpg" else image.save(path)
    return path


def agreement(page_mask: np.ndarray, python_mask: np.ndarray) -> dict:
    """How two boolean masks of one image agree: the fraction of equal pixels and the Dice of the two."""
    if page_mask.shape != python_mask.shape:
        raise UlvmError(f"mask shapes differ: page {page_mask.shape}, Python {python_mask.shape}")
    both = int((page_mask & python_mask).sum())
    total = int(page_mask.sum() + python_mask.sum())
    return {"pixels": int(page_mask.size), "equal_fraction": float((page_mask == python_mask).mean()),
            "dice": 2 * both / total if total else 1.0, "different_pixels": int((page_mask != python_mask).sum())}


def browser_record(site: Path, image: Path, repeats: int = 10, others: tuple[Path, ...] = (),
                   executable: str | None = None) -> dict:
    """The page's weight and its time in this machine's headless Chromium on `image` (a first run, then the
    median and minimum of `repeats`), and how its mask agrees with `ulvm.predict`'s on `image` and on each
    of `others`: the record `ulvm try-it --bench` writes."""
    import os
    import platform

    from ..deploy.prediction import predict

    load_before = os.getloadavg()[0]
    with try_it_page(site, executable) as page:
        runs = [page.segment(image) for _ in range(repeats + 1)]
        checked = {path: page.segment(path) for path in others}
        canvas = {path.name: page.canvas_resize_difference(path) for path in (image, *others)}
        browser_version = page.page.context.browser.version
        load_seconds = page.load_seconds
    failed = [r.message for r in [*runs, *checked.values()] if r.state != "done"]
    if failed:
        raise UlvmError(f"the page answered: {failed[0]}")
    first, rest = runs[0].numbers, [r.numbers for r in runs[1:]]

    def timing(pick) -> dict:
        return {key: round(pick(r[f"{key}Ms"] for r in rest), 1) for key in ("model", "total")}

    return {
        "what": "the book's Try it page (book/try_it.md): onnxruntime-web, WebAssembly CPU, in headless Chromium",
        "browser": f"Chromium {browser_version} (headless, the system's), {first['threads']} WebAssembly thread(s)",
        "machine": {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                    "load_average_1min_before": round(load_before, 2)},
        "page_weight": page_weight(site / PAGE_FOLDER),
        "page_load_s_local_server": round(load_seconds, 3),
        "image": {"file": image.name, "width": first["width"], "height": first["height"]},
        "first_run_ms": {"model": round(first["modelMs"], 1), "total": round(first["totalMs"], 1)},
        "repeats": repeats,
        "median_ms": timing(statistics.median),
        "min_ms": timing(min),
        "canvas_resize_vs_pil_grey_levels": canvas,      # why the page resizes in JavaScript (try_it.js)
        "agreement_with_ulvm_predict": {
            path.name: agreement(result.mask, predict(path) > 127)
            for path, result in [(image, runs[0]), *checked.items()]},
    }
