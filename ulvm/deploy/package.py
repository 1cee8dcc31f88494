"""The .pt2 package: UltraLight VM-UNet compiled ahead of time for the CPU, and loaded back for calls.

A `.pt2` package (`export_pt2`; `ulvm export --format pt2`) is the model put through torch.export and
AOTInductor: Inductor's C++ for the whole graph, built into a shared library, with the model's input size, scan
and torch version in its metadata. Loaded with `load_pt2` (`ulvm predict --weights x.pt2`), it has the
contract of the ONNX file (`ulvm.deploy.export`) as a torch function, runs ~3x faster than ONNX Runtime on our
CPU (`ulvm.deploy.export.cpu_benchmark`), and runs only with the torch and on the kind of CPU that built it,
with ulvm installed for its scan operator. `compile_for_cpu` is the same model through torch.compile, in
process.

A package is compiled code, run when it is loaded: `load_pt2` loads only packages this user exported (their
SHA-256 is recorded in a per-user trust list) or ones the caller marks trusted (see `ulvm.deploy.trust`).
"""
from __future__ import annotations

import copy
import io
import logging
import os
import shutil
import tempfile
import weakref
from pathlib import Path

import torch

from ..cpp import direct_convolutions_, direct_group_norms_
from ..errors import UlvmError
from ..io import atomic_write_bytes
from ..ssm import REGISTRY, resolve
from .trust import check_trusted, record_trusted

log = logging.getLogger(__name__)


def _images(n: int, size: int, seed: int) -> torch.Tensor:
    """n random images (n, 3, size, size) in the paper's 0..255 range, the same for the same seed."""
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 255


# Inductor's options for CPU inference (`compile_for_cpu`). "cpp_wrapper": the compiled graph is driven by
# generated C++ instead of a generated Python function, so its many kernel and library calls and the tensor
# views between them cost no Python each. Freezing (weights folded in as constants, prepacked oneDNN
# convolutions) did not help (the measurements are in book/results/bench/NOTES.md).
CPU_INDUCTOR_OPTIONS = {"cpp_wrapper": True}


def fastest_cpu_backend() -> str:
    """The scan for CPU inference: "cpp" (`ulvm.ssm.cpu_scan`, built on first use) where it can be built, else
    "chunked", the fastest of plain tensor ops under torch.compile (the reason is logged)."""
    with torch.no_grad():
        reason = REGISTRY["cpp"].why_unavailable(torch.zeros(()))
    if reason:
        log.warning("CPU inference uses the 'chunked' scan; backend 'cpp' cannot run: %s", reason)
        return "chunked"
    return "cpp"


def _cpu_copy(model: torch.nn.Module, backend: str | None) -> torch.nn.Module:
    """A CPU fp32 eval copy of `model` on scan `backend` (default `fastest_cpu_backend()`), resolved (and
    "cpp" built and loaded) before anything traces it: see `ulvm.ssm.cpu_scan`. With "cpp", its convolutions
    with few output channels also run on our C++ operator (`ulvm.cpp.direct_convolutions_`)."""
    copied = copy.deepcopy(model).cpu().float().eval()
    if hasattr(copied, "set_backend"):
        backend = backend or fastest_cpu_backend()
        with torch.no_grad():
            resolve(backend, torch.zeros(()))
        copied.set_backend(backend)
        if backend == "cpp":
            direct_convolutions_(copied)
    return copied


def compile_for_cpu(model: torch.nn.Module, example: torch.Tensor, backend: str | None = None) -> torch.nn.Module:
    """A CPU fp32 copy of `model` through torch.compile (Inductor's C++ code, with `CPU_INDUCTOR_OPTIONS`),
    compiled now for inputs shaped like `example` (`ulvm.deploy.export.cpu_benchmark` times it). The scan:
    `backend`, by default `fastest_cpu_backend()`; the fused C++ operator of "cpp" stays one call in the
    compiled graph, "chunked" is compiled with the rest. Compiling takes ~1 minute on 2 cores with "cpp", ~3
    with "chunked" (Inductor caches its work on disk, so a second process compiles faster); an input of
    another shape compiles again.
    """
    # fullgraph: a graph break (it makes the compiled model much slower) is an error, not a slow path
    compiled = torch.compile(_cpu_copy(model, backend), dynamic=False, fullgraph=True, options=CPU_INDUCTOR_OPTIONS)
    with torch.no_grad():
        compiled(example.cpu().float())
    return compiled


PT2_FORMAT = "ulvm-pt2/1"      # the metadata `export_pt2` writes and `load_pt2` checks
# AOTInductor's options for the package: max-autotune times Inductor's own C++ matrix-product templates
# against the library call for each of the model's Linear layers and keeps the faster one: a faster package
# for a longer compilation (book/results/bench/NOTES.md).
PT2_INDUCTOR_OPTIONS = {"max_autotune": True}


def export_pt2(model: torch.nn.Module, path: str | os.PathLike, size: int = 256, backend: str | None = None) -> Path:
    """Write the model of `compile_for_cpu` compiled ahead of time by AOTInductor (torch.export, then
    Inductor's C++ for the whole graph) as a .pt2 package for one CPU float32 image (1, 3, size, size);
    returns the path (written atomically). Loaded with `load_pt2`, each call runs the compiled code with no
    Dynamo guards and no Python graph call: the fastest batch-1 CPU path we measured. A batch of B images
    goes through it one image at a time: compiled for any batch instead, the package was slower at batch 1,
    and on a CPU a batch gains little (book/results/bench/NOTES.md). It is exported channels-last, with
    the model's group norms on our C++ operator where "cpp" builds (`ulvm.cpp.direct_group_norms_`): Inductor
    runs the convolutions channels-last anyway, and its own code for a 2-channel group of channels-last maps is
    slow; the operator keeps the layout it is given (channels-last alone changed nothing). The package holds
    the input size, the batch, the input's memory format, the scan and the torch version in its metadata.

    A package runs where it was built: same torch, same CPU instruction set (metadata AOTI_CPU_ISA). With
    the "cpp" scan it calls our C++ operators (`ulvm.cpp`), which `load_pt2` loads (building them if needed)
    before the package; the ONNX file (`ulvm.deploy.export.export_onnx`) is the portable form.
    """
    from ..version import code_version

    backend = (backend or fastest_cpu_backend()) if hasattr(model, "set_backend") else None
    metadata = {"format": PT2_FORMAT, "input_size": str(size), "batch": "1", "memory_format": "channels_last",
                "scan": backend or "none", "torch": torch.__version__, "code_version": code_version()}
    copied = _cpu_copy(model, backend)
    if backend == "cpp":
        direct_group_norms_(copied)
    example = _images(1, size, seed=0).contiguous(memory_format=torch.channels_last)
    buffer = io.BytesIO()
    with torch.no_grad():
        program = torch.export.export(copied.to(memory_format=torch.channels_last), (example,))
        torch._inductor.aoti_compile_and_package(
            program, package_path=buffer, inductor_configs={**PT2_INDUCTOR_OPTIONS, "aot_inductor.metadata": metadata})
    atomic_write_bytes(path, buffer.getvalue())
    record_trusted(path)                 # built here by this user: `load_pt2` may load it
    return Path(path)


class CompiledPackage(torch.nn.Module):
    """A package of `export_pt2`, loaded (`load_pt2`): probabilities (B, 1, S, S) of CPU float32 images
    (B, 3, S, S), S = `config.input_size`, like the model it was made from in eval mode. A package compiled
    for one image (metadata "batch": "1") takes a batch one image at a time; one from before that was
    compiled for any batch and takes it whole."""

    def __init__(self, path: Path, compiled, metadata: dict[str, str]):
        super().__init__()
        from ..config import Config

        self.path, self.metadata, self._compiled = path, metadata, compiled
        self.config = Config(input_size=int(metadata["input_size"]))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        size = self.config.input_size
        if (images.device.type != "cpu" or images.dtype != torch.float32 or images.shape[1:] != (3, size, size)
                or len(images) < 1):
            raise UlvmError(f"{self.path}: takes CPU float32 images (B, 3, {size}, {size}), B >= 1, not "
                            f"{images.dtype} {tuple(images.shape)} on {images.device}")
        channels_last = self.metadata.get("memory_format") == "channels_last"     # older packages: NCHW
        layout = torch.channels_last if channels_last else torch.contiguous_format   # as it was compiled
        if self.metadata.get("batch") == "1" and len(images) > 1:
            return torch.cat([self._compiled(image[None].contiguous(memory_format=layout)) for image in images])
        return self._compiled(images.contiguous(memory_format=layout))

    def to(self, *args, **kwargs):          # `load_weights(..., device)` moves what it returns
        device, dtype = torch._C._nn._parse_to(*args, **kwargs)[:2]
        if (device is not None and device.type != "cpu") or dtype not in (None, torch.float32):
            raise UlvmError(f"{self.path}: a .pt2 package runs on the CPU in float32 only (its code is compiled "
                            "for it); use the device cpu, or the checkpoint it was exported from")
        return self


def pt2_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a .pt2 package, read without loading it (as torch's own loader first reads it:
    loading needs our operator first); a clear error naming the file when it is not a package."""
    if not Path(path).is_file():
        raise UlvmError(f"{path}: no such file")
    try:
        return dict(torch._C._aoti.AOTIModelPackageLoader.load_metadata_from_package(str(path), "model"))
    except Exception as error:        # not a zip, a truncated file, a package without a model...
        raise UlvmError(f"{path}: not a readable .pt2 package ({type(error).__name__}: {error})") from None


def load_pt2(path: str | os.PathLike, trust: bool = False) -> CompiledPackage:
    """A package written by `export_pt2`, loaded for calls; a clear error naming the file when it is not one,
    was built by another torch, or needs the "cpp" operator where it cannot be built.

    A package is compiled code that runs when it is loaded: only a package this user's `ulvm export` wrote
    is loaded, or with `trust=True` one the caller vouches for (`ulvm.deploy.trust`)."""
    path = Path(path)
    if not path.is_file():
        raise UlvmError(f"{path}: no such file")
    check_trusted(path, trust)
    metadata = pt2_metadata(path)
    if metadata.get("format") != PT2_FORMAT:
        raise UlvmError(f"{path}: not a package of `ulvm export --format pt2` (no {PT2_FORMAT!r} in its metadata)")
    if metadata["torch"] != torch.__version__:
        raise UlvmError(f"{path}: built with torch {metadata['torch']}, this is torch {torch.__version__}; a .pt2 "
                        "package runs with the torch that built it: export it again here")
    from torch._inductor.codecache import get_device_information

    here = get_device_information("cpu").get("AOTI_CPU_ISA")
    if metadata.get("AOTI_CPU_ISA") != here:      # running another instruction set's code would crash the process
        raise UlvmError(f"{path}: compiled for CPUs with {metadata.get('AOTI_CPU_ISA')}, this one has {here}: "
                        "export it again on this machine (or deploy the portable ONNX file)")
    if metadata["scan"] == "cpp":
        with torch.no_grad():
            reason = REGISTRY["cpp"].why_unavailable(torch.zeros(()))   # builds and loads the operator
        if reason:
            raise UlvmError(f"{path}: calls ulvm's C++ operators, which cannot run here: {reason}")
    loader, extracted = _load_package(path)
    package = CompiledPackage(path, loader, metadata).eval()
    weakref.finalize(package, shutil.rmtree, extracted, ignore_errors=True)   # once the loader is gone
    return package


def _load_package(path: Path):
    """AOTInductor's loader, with the folder it extracts the package into made inside a private temporary
    folder, removed when loading fails (the loader itself leaves it behind then); returns (loader, folder)."""
    private = Path(tempfile.mkdtemp(prefix="ulvm-pt2-"))
    before = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(private)      # where the loader's C++ makes its extraction folder
    tempfile.tempdir = None                  # and where Python's tempfile looks, re-read below
    try:
        return torch._inductor.aoti_load_package(str(path)), private
    except Exception as error:
        shutil.rmtree(private, ignore_errors=True)
        raise UlvmError(f"{path}: cannot load this .pt2 package ({type(error).__name__}: "
                        f"{str(error).splitlines()[0] if str(error) else ''})") from None
    finally:
        if before is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = before
        tempfile.tempdir = None
