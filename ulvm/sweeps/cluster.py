"""Where a sweep's jobs run: the GPUs of this machine, the Dask cluster and its worker slots.

Each slot is a single-threaded Dask worker and, on a machine with GPUs, the GPU its runs see: the sweep
passes it to the task (`ulvm.sweeps.jobs.run_job`), which sets CUDA_VISIBLE_DEVICES for its subprocesses.
The workers of a local cluster ignore Ctrl-C and end when the sweep ends, however it ends (SIGKILL too):
their runs end with them (`ulvm.io.die_with_parent`).
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import UlvmError
from ..io import die_with_parent


@dataclass(frozen=True)
class Slot:
    """Where one job runs at a time: a Dask worker (None: any), and the GPU its runs see (None: the worker's)."""
    worker: str | None
    gpu: str | None


def visible_gpus() -> tuple[str, ...]:
    """The GPUs runs may use: CUDA_VISIBLE_DEVICES's entries when set, else one per `nvidia-smi -L` line
    (no torch import: the client stays light)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return tuple(item.strip() for item in visible.split(",") if item.strip() and item.strip() != "-1")
    if shutil.which("nvidia-smi") is None:
        return ()
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(str(i) for i in range(sum(line.startswith("GPU ") for line in listing.splitlines())))


def worker_slots(workers: dict[str, dict], gpus: tuple[str, ...]) -> list[Slot]:
    """One slot per worker thread; on a local cluster (workers named 0..n-1) worker i gets GPU i mod G."""
    def order(item):                     # 0, 1, 2, ..., 10 (not "10" before "2"); other names after
        name = item[1].get("name")
        return (0, name, "") if isinstance(name, int) else (1, 0, str(name))

    slots = []
    for index, (address, info) in enumerate(sorted(workers.items(), key=order)):
        gpu = gpus[index % len(gpus)] if gpus else None
        slots += [Slot(address, gpu)] * max(1, int(info.get("nthreads", 1)))
    return slots


@contextlib.contextmanager
def _without_ctrl_c() -> Iterator[None]:
    """Processes started inside ignore Ctrl-C (SIGINT), which the terminal sends to the whole process group:
    the sweep alone handles it, by closing its cluster (a worker would print a traceback of its own)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def import_distributed():
    """Dask distributed, an optional extra, imported only when a sweep runs."""
    try:
        import distributed
    except ImportError:
        raise UlvmError("ulvm sweep needs Dask distributed: pip install 'ulvm[sweep]' "
                        "(or: pip install dask distributed)") from None
    return distributed


def start_client(scheduler: str | None, workers: int, processes: bool = True):
    """(client, cluster): a client of the running cluster at `scheduler` (cluster None), or of a new local
    cluster of `workers` single-threaded workers (threads of this process if not `processes`)."""
    distributed = import_distributed()
    if not logging.getLogger().isEnabledFor(logging.DEBUG):           # Dask's INFO lines drown the progress
        logging.getLogger("distributed").setLevel(logging.WARNING)
    if scheduler:
        return distributed.Client(scheduler), None
    with _without_ctrl_c():
        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes,
                                           dashboard_address=":0", silence_logs=logging.ERROR)
        client = distributed.Client(cluster)
    if processes:
        client.run(die_with_parent, os.getpid(), True)
    return client, cluster
