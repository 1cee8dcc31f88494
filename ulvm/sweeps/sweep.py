"""Sweeps: a grid of runs (`ulvm.sweeps.grid`), run on Dask distributed; here is the orchestration.

The book's recorded grids reproduce with one command each (from the repository root, with the prepared
data under data/prepared/; `--data`/`--test-on` point elsewhere):

    ulvm sweep book/grids/ph2_cv.yaml         # PVM ablation, 5-fold CV on PH2 (30 runs)
    ulvm sweep book/grids/isic2017.yaml       # Table 1 + ablation on ISIC2017, each also tested on PH2 (14)
    ulvm sweep book/grids/ph2_transfer.yaml   # x4, PH2 fold 0, seed 42, also tested on ISIC2017 (1)
    ulvm sweep book/grids/baselines.yaml      # the comparison chapter's models on ISIC2017 (14)

A sweep walks each job (`ulvm.sweeps.jobs`) from its state on disk: a job whose records exist is skipped;
one whose run folder is finished and tested is only recorded; the others run on a worker slot (`ulvm
train`, which resumes an interrupted run, then `ulvm test` on every `test_on` dataset, logged to
RUNS/NAME.log) and are recorded when they end (`ulvm.sweeps.experiments.record_runs`, one record per test
set). A failed job is reported with its log and does not stop the others (the exit code then is 1). Ctrl-C
stops the workers and their runs; the same command resumes them. While it runs, one progress line says
jobs done / running / failed and the time left (`ulvm.sweeps.status`).

Where it runs (Dask distributed, an optional extra: `pip install ".[sweep]"`; dask is imported only here):

* default: a `LocalCluster` on this machine, one single-threaded worker process per slot: `--runs-per-gpu K`
  slots on every visible GPU (CUDA_VISIBLE_DEVICES, else `nvidia-smi -L`), each slot given its GPU, which
  the job's subprocesses see as their only one (CUDA_VISIBLE_DEVICES). Without a GPU: `--workers N` CPU
  workers (default 2).
* `--scheduler ADDRESS`: a running Dask cluster, e.g. one that `dask-jobqueue` (SLURMCluster, PBSCluster)
  starts on a batch system; start one worker per GPU slot with its CUDA_VISIBLE_DEVICES already set and one
  thread (`--nthreads 1`). The run and record folders must be on a filesystem the workers share.

Carrying Dask to an offline GPU machine: download the wheels here, for the GPU machine's Python, then
install them there with no index::

    pip download --dest wheels --only-binary=:all: --python-version 3.12 \\
        --platform manylinux2014_x86_64 "dask==2026.8.0" "distributed==2026.8.0"
    # on the GPU machine:
    pip install --no-index --find-links wheels "dask==2026.8.0" "distributed==2026.8.0"

(`offline_wheels_command()` prints that command for other versions or platforms.)

How many runs per GPU: measure it with `ulvm throughput` (`ulvm.sweeps.throughput`: K runs at once, CUDA MPS
off and on) and pass the best K as `--runs-per-gpu`; without MPS, processes on one GPU are time-sliced and
K > 1 gains little. Under MPS, `--mps-percentage P` caps each run's share of its GPU (`ulvm.sweeps.mps`;
the measured effect is in book/results/bench/NOTES.md).
"""
from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ..config import RunSettings
from ..errors import UlvmError
from ..version import code_version, require_clean
from .cluster import Slot, import_distributed, start_client, visible_gpus, worker_slots
from .experiments import Job, record_runs
from .grid import Grid, load_grid
from .jobs import job_state, run_job
from .mps import client_environment
from .status import Progress, TrainingETA, hms

__all__ = ["SweepResult", "load_grid", "offline_wheels_command", "sweep"]

SWEEP_VERSIONS = {"dask": "2026.8.0", "distributed": "2026.8.0"}


@dataclass
class SweepResult:
    """Job name -> 'skipped' (already recorded), 'recorded' or 'failed'; `failures`: name -> message."""
    status: dict[str, str] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures


def _record(job: Job, runs: Path, record: Path, allow_dirty: bool, extra: dict, result: SweepResult,
            say: Callable[[str], None]) -> None:
    try:
        paths = record_runs(runs / job.name, record, allow_dirty, **extra)
    except UlvmError as error:
        result.status[job.name], result.failures[job.name] = "failed", f"not recorded: {error}"
        say(f"{job.name}: FAILED, not recorded: {error}")
        return
    result.status[job.name] = "recorded"
    say(f"{job.name}: recorded {', '.join(str(path) for path in paths)}")


def _check_arguments(runs_per_gpu: int, workers: int | None, poll_s: float) -> None:
    if runs_per_gpu < 1:
        raise UlvmError(f"runs per GPU must be at least 1, not {runs_per_gpu}")
    if workers is not None and workers < 1:
        raise UlvmError(f"workers must be at least 1, not {workers}")
    if not poll_s > 0:
        raise UlvmError(f"poll_s must be > 0, not {poll_s}")


def sweep(grid: Grid, runs: Path | None = None, record: Path | None = None, *, dry_run: bool = False,
          scheduler: str | None = None, workers: int | None = None, runs_per_gpu: int = 1,
          settings: RunSettings | None = None, mps_percentage: int | None = None, allow_dirty: bool = False,
          processes: bool = True, stream: TextIO | None = None, poll_s: float = 1.0) -> SweepResult:
    """Run the grid's unfinished jobs on Dask and record each finished one (see the module docstring).

    `runs`: run folders (default runs/NAME); `record`: records (default book/results/NAME). `settings`: how
    every run executes (device, threads, compile, ...; default `RunSettings()`). `mps_percentage`: under the
    CUDA MPS daemon, each run's share of its GPU's SMs (`ulvm.sweeps.mps`; the records say it).
    `processes=False` runs the local workers as threads of this process (each job is a subprocess either way)."""
    started = time.monotonic()
    _check_arguments(runs_per_gpu, workers, poll_s)
    stream, settings = stream or sys.stdout, settings or RunSettings()
    environment = client_environment(mps_percentage)          # a share outside 1..100: refused before anything runs
    runs = Path(runs) if runs else Path("runs") / grid.name
    record = Path(record) if record else Path("book/results") / grid.name
    states = {job.name: job_state(job, grid, runs, record) for job in grid.jobs}
    if dry_run:
        for job in grid.jobs:
            print(f"{job.name:<28} {states[job.name]:<8} {' '.join(job.command(grid.data, runs, settings))}",
                  file=stream)
        counts = {state: sum(s == state for s in states.values()) for state in ("done", "tested", "partial", "new")}
        print(f"{grid.name}: {len(grid.jobs)} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items()), file=stream)
        return SweepResult({name: state for name, state in states.items()})
    result = SweepResult({name: "skipped" for name, state in states.items() if state == "done"})
    todo = [job for job in grid.jobs if states[job.name] in ("new", "partial")]
    if any(state != "done" for state in states.values()):         # refuse before training (records need it)
        require_clean(code_version(), allow_dirty, f"ulvm sweep {grid.source}")
    say = lambda text: print(text, file=stream, flush=True)
    gpus = () if (scheduler or settings.device == "cpu") else visible_gpus()
    extra = dict(concurrent_runs=None, gpus=len(gpus) or None,
                 **({"mps_percentage": mps_percentage} if mps_percentage is not None else {}))
    if not todo:
        extra["concurrent_runs"] = 1
        for job in grid.jobs:
            if states[job.name] == "tested":
                _record(job, runs, record, allow_dirty, extra, result, say)
        say(f"{grid.name}: all {len(grid.jobs)} jobs done ({sum(s == 'skipped' for s in result.status.values())} "
            f"already recorded)")
        return result
    missing = [str(path) for path in (grid.data, *grid.test_on) if not path.is_dir()]
    if missing and not scheduler:                 # (a remote cluster's workers may see other folders)
        raise UlvmError(f"{grid.source}: prepared dataset(s) not found: {', '.join(missing)} (pass --data/--test-on "
                        "or prepare them with `ulvm prepare`)")
    distributed = import_distributed()
    client, cluster = start_client(scheduler, runs_per_gpu * len(gpus) if gpus else (workers or 2), processes)
    try:
        slots = worker_slots(client.scheduler_info()["workers"], gpus)
        extra["concurrent_runs"] = min(len(slots), len(todo))
        for job in grid.jobs:                     # finished and tested before: record now
            if states[job.name] == "tested":
                _record(job, runs, record, allow_dirty, extra, result, say)
        say(f"{grid.name}: {len(todo)} jobs to run on {len(slots)} worker slot(s)"
            + (f" over {len(gpus)} GPU(s)" if gpus else "") + f"; logs in {runs}/NAME.log")
        _run_jobs(client, distributed, todo, slots, grid, runs, record, settings, environment, allow_dirty, extra,
                  result, stream, poll_s, pinned=cluster is not None)
    except KeyboardInterrupt:
        logging.getLogger("distributed").setLevel(logging.CRITICAL)      # the workers' ends are expected now
        say(f"\n{grid.name}: interrupted; the running jobs were stopped. Run the same command to resume them.")
        raise
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    took = f"after {hms(time.monotonic() - started)}"              # the grid's wall time, start to last record
    if result.failures:
        failed = ", ".join(result.failures)
        say(f"{grid.name}: {len(result.failures)} of {len(grid.jobs)} jobs failed, {took}: {failed}")
    else:
        say(f"{grid.name}: all {len(grid.jobs)} jobs done, {took}")
    return result


def _run_jobs(client, distributed, todo: list[Job], slots: list[Slot], grid: Grid, runs: Path, record: Path,
              settings: RunSettings, environment: dict[str, str], allow_dirty: bool, extra: dict,
              result: SweepResult, stream: TextIO, poll_s: float, pinned: bool) -> None:
    """Give each free slot the next job, with the slot's GPU; record each job that ends; show progress."""
    progress, eta = Progress(grid.name, len(todo), stream), TrainingETA(todo, runs)
    token, queue, free, running = uuid.uuid4().hex[:8], list(todo), list(slots), {}
    done = failed = 0
    eta_s, eta_time = None, -float("inf")
    while queue or running:
        while queue and free:
            job, slot = queue.pop(0), free.pop(0)
            future = client.submit(run_job, job, grid.data, grid.test_on, runs, settings, slot.gpu, environment,
                                   key=f"ulvm-sweep-{job.name}-{token}", pure=False,
                                   workers=[slot.worker] if pinned else None, allow_other_workers=False)
            running[future] = (job, slot)
        if not running:                           # every worker is gone
            for job in queue:
                result.status[job.name], result.failures[job.name] = "failed", "no Dask worker left to run it"
            break
        try:
            finished, _ = distributed.wait(list(running), timeout=poll_s, return_when="FIRST_COMPLETED")
        except TimeoutError:                       # none finished within poll_s
            finished = set()
        for future in finished:
            job, slot = running.pop(future)
            try:
                outcome = future.result()
            except Exception as error:           # the task itself broke (a worker died, ...)
                outcome = dict(code=-1, log=str(runs / f"{job.name}.log"), error=repr(error))
            if slot.worker in client.scheduler_info()["workers"]:
                free.append(slot)
            if outcome["code"] == 0:
                _record(job, runs, record, allow_dirty, extra, result, progress.say)
            else:
                why = outcome.get("error") or f"exit code {outcome['code']}"
                result.status[job.name] = "failed"
                result.failures[job.name] = f"{why}, see {outcome['log']}"
                progress.say(f"{job.name}: FAILED ({why}), see {outcome['log']}")
            if result.status[job.name] == "failed":
                eta.drop(job)
                failed += 1
            else:
                done += 1
        if time.monotonic() - eta_time >= 10:                  # (reads every run's log.csv)
            eta_s, eta_time = eta.seconds_left(), time.monotonic()
        progress.show(done, len(running), failed, eta_s)
    if progress.tty:
        stream.write("\n")


def offline_wheels_command(dest: str = "wheels", python_version: str = "3.12",
                           platform: str = "manylinux2014_x86_64") -> str:
    """The `pip download` command that fetches the sweep extra's wheels for an offline machine."""
    pins = " ".join(f'"{name}=={version}"' for name, version in SWEEP_VERSIONS.items())
    return (f"pip download --dest {dest} --only-binary=:all: --python-version {python_version} "
            f"--platform {platform} {pins}")
