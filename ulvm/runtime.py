"""Where code runs: device choice, seeding, timers, and the provenance every record carries."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import random
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from .errors import UlvmError
from .version import code_version, utc_now


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> cuda if available else cpu; 'cuda' without a GPU, or a device torch does not run ulvm on
    (tpu, xla, ...), is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda", "mps"):
        raise UlvmError(f"device {device!r}: unknown; use auto, cpu, cuda or cuda:N (or mps on a Mac)")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise UlvmError(f"device {device!r} asked for, but torch sees no CUDA GPU "
                        f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})")
    return parsed


def use_deterministic() -> None:
    """Deterministic kernels only, for this process (`RunSettings.deterministic`): with the same seed, GPU
    model and software, two runs give bit-identical weights.

    `torch.use_deterministic_algorithms` (an op that has no deterministic kernel raises instead of varying);
    cuDNN restricted to deterministic algorithms and not autotuned (two runs could time their way to different
    algorithms); cuBLAS given a fixed workspace (`CUBLAS_WORKSPACE_CONFIG`, read when the process makes its
    first cuBLAS handle, so call this before the first matrix product on the GPU). Our own code that adds with
    atomics takes its deterministic form while `torch.are_deterministic_algorithms_enabled()`: the Triton
    scan's backward (`ulvm.ssm.triton_scan`), the decoder's bilinear upsampling and the bridge's pooling
    (`ulvm.model`).
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def describe_machine(device: torch.device | str = "cpu") -> dict:
    """What ran it: the device, the software that computed, the CPU (and the GPU when it ran on one)."""
    device = torch.device(device)
    info = {
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_cores": os.cpu_count(),
        "cpu_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def gpu_names() -> list[str]:
    """The name of every GPU torch sees ([] without CUDA)."""
    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def package_versions(names) -> dict[str, str]:
    """The installed version of each distribution named ("not installed" when it is not)."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def provenance(device: torch.device | str = "cpu", packages=()) -> dict:
    """Where a number comes from, as every record says it: the code (`code_version`: the commit, "-dirty"
    for uncommitted changes), the machine and software (`describe_machine`), the time (UTC) and, when
    `packages` are named, their versions. The one description of a machine that records and the book's
    reproducibility page share."""
    record = {"code_version": code_version(), "machine": describe_machine(device), "recorded_at": utc_now()}
    if packages:
        record["packages"] = package_versions(packages)
    return record


def time_ms(fn, device: torch.device | str = "cpu", repeats: int = 20, warmup: int = 2) -> float:
    """Median wall time of fn() in milliseconds, synchronising the GPU around each call: the timer of
    `ulvm bench`'s paths (`interleaved_ms` below times several CPU paths against each other)."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def interleaved_ms(fns: dict[str, Callable[[], object]], repeats: int = 20, warmup: int = 2, settle: int = 2,
                   seed: int = 0) -> dict[str, float]:
    """Median CPU wall time of each fn() in milliseconds, over `repeats` rounds that visit every fn once in
    a shuffled order (seeded), so that whatever else slows a shared machine for a while slows every path
    alike: timed each in turn, a busy minute can fall on one path (`ulvm.deploy.export.cpu_benchmark`).

    At each visit fn() runs `settle` times untimed, then once timed: the thread pools of the path before
    (torch's OpenMP, ONNX Runtime's, a compiled package's own) keep spinning for a while after it returns
    and would slow the next path's first call.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    order, rng = list(fns), random.Random(seed)
    for _ in range(repeats):
        rng.shuffle(order)
        for name in order:
            for _ in range(settle):
                fns[name]()
            start = time.perf_counter()
            fns[name]()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}
