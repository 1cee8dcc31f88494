"""How many training runs one GPU holds: aggregate training throughput for K runs at once.

A 49k-parameter model leaves an H200 mostly idle (thousands of tiny kernels per step), so the cost of a
grid of runs is how many share each GPU. `measure_throughput` starts K real `ulvm train` processes at once
(the code path of `ulvm train` and `ulvm sweep`), each pinned round-robin to one of `gpus`, for a few
epochs, and reads each run's steady-state epoch time from its log.csv (the first epoch, with its kernel
compilation, cuDNN timing and graph capture, is left out). For every K it reports the aggregate training
images per second and epochs per minute, and the speed-up over K = 1 in the same mode.

With `together` = P > 1 the K runs are trained P to a process (`ulvm train --seeds`: `ulvm.engine.train.fit_together`
takes turns between them step by step, each on its own CUDA stream), the other way to let one GPU run the
kernels of several runs at once, which needs no daemon.

Several processes share a GPU by time-slicing unless the CUDA MPS daemon runs (`nvidia-cuda-mps-control
-d`, usually as root): then their kernels run concurrently. With `mps=("off", "on")` the measurement is
taken without and with it; the daemon is started and stopped here, and when it cannot be (no binary, not
permitted) the "on" rows say why instead of numbers. `mps_percentage` caps each run's share of the GPU
under the daemon (`ulvm.sweeps.mps`) where processes share a GPU: a lone run shares it with nothing, and a
cap would only slow it, so K = 1, the usual reference of the speed-ups, runs uncapped and the speed-up
stays over a run as it trains alone.

    ulvm throughput --data data/prepared/isic2017 --ks 1 2 4 8 16 --mps off on --out book/results/bench/throughput.json
"""
from __future__ import annotations

import math
import os
import signal
import statistics
import subprocess
import time
from pathlib import Path

from ..config import RunSettings, parse_overrides
from ..engine.checkpoint import read_run_checkpoint
from ..engine.runs import RunFolder
from ..errors import RunError
from .experiments import Job, together_command
from .mps import client_environment, start_mps, stop_mps


def _steady_epoch_times(run: Path) -> list[float]:
    times = [row["epoch_time_s"] for row in RunFolder(run).read_log()]
    if len(times) < 2:
        raise RunError(f"{run}: {len(times)} epoch(s) logged; the throughput needs at least 2 (the first is warm-up)")
    return times[1:]


def _exit_reason(code: int) -> str:
    if code < 0:        # Popen's code for a process killed by a signal; SIGKILL is how the kernel's OOM killer ends one
        return f"killed by signal {-code}" + (", e.g. out of host memory" if -code == signal.SIGKILL else "")
    return f"exit code {code}"


def run_k(k: int, data: Path, folder: Path, *, epochs: int, profile: str, settings: RunSettings,
          gpus: tuple[int, ...], overrides: tuple[str, ...] = (), together: int = 1,
          environment: dict[str, str] | None = None) -> dict:
    """K training runs at once (the grid jobs of seeds 42, 43, ...: `ulvm sweep`'s command) into
    FOLDER/<job>, `together` of them in each `ulvm train` process (`--seeds`, one CUDA stream a run), the
    processes pinned round-robin to `gpus`, run with `settings`, with more variables in their `environment`;
    their aggregate steady-state throughput."""
    changes = {**parse_overrides(overrides), "epochs": epochs}
    jobs = [Job.of(4, True, None, 42 + i, profile=profile, overrides=changes) for i in range(k)]
    groups = [jobs[i:i + together] for i in range(0, k, together)]
    folder.mkdir(parents=True, exist_ok=True)
    processes, logs = [], []
    started = time.perf_counter()
    for i, group in enumerate(groups):
        env = {**os.environ, **(environment or {})}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(gpus[i % len(gpus)])
        logs.append(open(folder / f"{group[0].name}.log", "w"))
        flags = dict(test=False, overwrite=True)
        command = (group[0].command(data, folder, settings, **flags) if len(group) == 1 else
                   together_command(group, data, folder, settings, **flags))
        processes.append(subprocess.Popen(command, stdout=logs[-1], stderr=subprocess.STDOUT, env=env))
    codes = [process.wait() for process in processes]
    wall = time.perf_counter() - started
    for log in logs:
        log.close()
    if any(codes):
        failed = [f"{folder / f'{group[0].name}.log'} ({_exit_reason(code)})"
                  for group, code in zip(groups, codes) if code]
        raise RunError(f"{len(failed)} of {len(groups)} training processes failed; see {', '.join(failed)}")
    epoch_s = [statistics.mean(_steady_epoch_times(folder / job.name)) for job in jobs]
    images = read_run_checkpoint(folder / jobs[0].name / "last.pt")["data"]["train_images"]
    return {"k": k, "runs_per_process": min(together, k), "wall_s": round(wall, 2),
            "mean_epoch_s": round(statistics.mean(epoch_s), 4),
            "images_per_s": round(sum(images / s for s in epoch_s), 2),
            "epochs_per_min": round(sum(60.0 / s for s in epoch_s), 3), "train_images": images}


def _processes_per_gpu(k: int, together: int, gpus: tuple[int, ...]) -> int:
    """How many of `run_k`'s processes (K runs, `together` to a process, round-robin over `gpus`, all on one
    GPU when none are given) the busiest GPU holds."""
    return math.ceil(math.ceil(k / together) / max(1, len(gpus)))


def measure_throughput(data, runs: Path, *, ks=(1, 2, 4, 8, 16), mps=("off",), epochs: int = 3,
                       profile: str = "paper", settings: RunSettings = RunSettings(device="cuda"),
                       gpus: tuple[int, ...] = (), overrides: tuple[str, ...] = (), together: int = 1,
                       mps_percentage: int | None = None, progress=print, on_row=lambda rows: None) -> list[dict]:
    """One row per (MPS mode, K): aggregate images/s and epochs/min of K runs at once, `together` of them in
    each process, and the speed-up over K = 1 in that mode (or the reason a mode could not be measured);
    with MPS on, where several processes share a GPU, each at most `mps_percentage` % of its SMs (None: all;
    the rows so capped say it).
    A K whose training processes fail gets a row saying why, and the larger Ks of that mode are not tried
    (they need more of what ran out). `on_row(rows)` is called after every row (measured, failed or
    unavailable), so a caller can keep what was measured before a later K fails or the command is killed."""
    if together < 1:
        raise RunError(f"runs per process (--together) must be at least 1, not {together}")
    client = client_environment(mps_percentage)                # a share outside 1..100: refused here
    rows = []
    for mode in mps:
        why = start_mps() if mode == "on" else ""
        if why:
            rows.append({"mps": mode, "unavailable": why})
            on_row(rows)
            progress(f"MPS on: not measured ({why})")
            continue
        try:
            single = None
            for k in ks:
                capped = bool(client) and mode == "on" and _processes_per_gpu(k, together, gpus) > 1
                try:
                    row = {"mps": mode, **run_k(k, Path(data), Path(runs) / f"mps_{mode}" / f"k{k}", epochs=epochs,
                                                profile=profile, settings=settings, gpus=gpus,
                                                overrides=overrides, together=together,
                                                environment=client if capped else None)}
                except RunError as error:
                    rows.append({"mps": mode, "k": k, "failed": str(error)})
                    on_row(rows)
                    progress(f"MPS {mode}, K={k}: failed ({error}); larger K not tried")
                    break
                if capped:
                    row["mps_percentage"] = mps_percentage
                if single is None:                      # the first K of this mode is the reference
                    single = row["images_per_s"]
                row["speedup"] = round(row["images_per_s"] / single, 2)
                rows.append(row)
                on_row(rows)
                progress(f"MPS {mode}, K={k}: {row['images_per_s']:.0f} images/s, {row['epochs_per_min']:.1f} "
                         f"epochs/min in all ({row['speedup']:.2f}x K={ks[0]}), "
                         f"{row['mean_epoch_s']:.2f} s an epoch each")
        finally:
            if mode == "on":
                stop_mps()
    return rows


def grid_minutes(epochs_per_min: float, runs: int, epochs: int) -> float:
    """Minutes of training for a grid of `runs` runs of `epochs` epochs at an aggregate rate of
    `epochs_per_min` (all runs together, from `measure_throughput`): an estimate that leaves out each run's
    start, its first epoch (compilation, graph capture) and its tests."""
    return runs * epochs / epochs_per_min


def grid_wall_minutes(row: dict, measured_epochs: int, epochs: int) -> float:
    """Minutes for K runs of `epochs` epochs each, all at once, from a `measure_throughput` row of the same K
    runs of `measured_epochs` epochs: its wall time (the runs' start, their first epoch with its compilation
    and graph capture, the other epochs) plus the missing epochs at its steady epoch time. Closer to a real
    grid than `grid_minutes`; it still leaves out the tests after training."""
    return (row["wall_s"] + (epochs - measured_epochs) * row["mean_epoch_s"]) / 60

