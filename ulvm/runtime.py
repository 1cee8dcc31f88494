"""Where code runs: device choice, seeding and a description of the machine for results files."""
from __future__ import annotations

import platform
import random

import numpy as np
import torch

from .errors import UlvmError


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> cuda if available else cpu; 'cuda' without a GPU is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UlvmError(f"device {device!r} asked for, but torch sees no CUDA GPU "
                        f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})")
    return torch.device(device)


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


def capture_cuda_graph(step, warmup: int = 3):
    """Record `step()` (static shapes, tensors that stay in place) once as a CUDA graph; return a replayer.

    A 49k-parameter model is launch-bound on a GPU: a forward is ~400 tiny kernels whose launch costs more
    than their work. Replaying them as one graph removes the Python and launch overhead. The returned
    function replays the graph and returns what `step()` returned during capture (the same tensors,
    refreshed by every replay). Optimizers inside `step` need `capturable=True`.
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):          # warm up on a side stream, as torch.cuda.graphs requires
        for _ in range(warmup):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        output = step()

    def replay():
        graph.replay()
        return output

    return replay
