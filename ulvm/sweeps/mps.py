"""The CUDA MPS daemon, and how much of the GPU each of its clients may use.

Several processes on one GPU are time-sliced unless the CUDA Multi-Process Service runs
(`nvidia-cuda-mps-control -d`, usually as root): then the kernels of all of them run at the same time.
By default each client may fill every SM with one kernel. `CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`, read by
each client when it creates its CUDA context, caps the SMs one process's kernels may occupy. Why a cap
can help many runs that share a GPU (our reading, not measured kernel by kernel): a training step of this
49k-parameter model is many small kernels, and uncapped, each run's few large ones (cuDNN's weight
gradients, the norms, the scan's backward) spread over the whole GPU while the other runs' small kernels
wait for SMs. A cap is for runs that share a GPU: a lone run under a cap only loses SMs. The measured
effects are in `book/results/bench/NOTES.md`.
Without the daemon the variable does nothing (it is read only by MPS clients).
"""
from __future__ import annotations

import shutil
import subprocess

from ..errors import UlvmError

ACTIVE_THREAD_PERCENTAGE = "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"


def start_mps() -> str:
    """Start the CUDA MPS control daemon; "" when it runs, else why not."""
    if shutil.which("nvidia-cuda-mps-control") is None:
        return "nvidia-cuda-mps-control not found"
    done = subprocess.run(["nvidia-cuda-mps-control", "-d"], capture_output=True, text=True)
    if done.returncode == 0:
        return ""
    return f"nvidia-cuda-mps-control -d failed: {done.stderr.strip() or done.returncode}"


def stop_mps() -> None:
    subprocess.run(["nvidia-cuda-mps-control"], input="quit\n", capture_output=True, text=True)


def client_environment(percentage: int | None) -> dict[str, str]:
    """The variables that give a process started under MPS at most `percentage` % of the GPU's SMs
    (none for None); refuses a share outside 1..100."""
    if percentage is None:
        return {}
    if not 1 <= percentage <= 100:
        raise UlvmError(f"the MPS share of the GPU is a percentage from 1 to 100, not {percentage}")
    return {ACTIVE_THREAD_PERCENTAGE: str(percentage)}
