"""Where code runs: device choice, seeding and a description of the machine for results files."""
from __future__ import annotations

import platform
import random
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from .errors import UlvmError


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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def describe_machine(device: torch.device | str = "cpu") -> dict:
    """What ran it: recorded next to every number we report."""
    device = torch.device(device)
    info = {
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


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
    (torch's OpenMP, ONNX Runtime's, a compiled package's own) keep spinning for a while after it returns.
    Measured on our 2-core box (NOTES.md, CPU row 32): eager PyTorch after another path took 50 ms with no
    settling calls where it took 37 ms timed in turn, and 39 ms with two.
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
