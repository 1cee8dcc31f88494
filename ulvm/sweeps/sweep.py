"""Sweeps: a grid of runs, written as a small YAML file, run on Dask distributed.

The book's recorded grids reproduce with one command each (from the repository root, with the prepared
data under data/prepared/; `--data`/`--test-on` point elsewhere):

    ulvm sweep book/grids/ph2_cv.yaml         # PVM ablation, 5-fold CV on PH2 (30 runs)
    ulvm sweep book/grids/isic2017.yaml       # Table 1 + ablation on ISIC2017, each also tested on PH2 (14)
    ulvm sweep book/grids/ph2_transfer.yaml   # x4, PH2 fold 0, seed 42, also tested on ISIC2017 (1)
    ulvm sweep book/grids/baselines.yaml      # the comparison chapter's models on ISIC2017 (14)

A grid file::

    name: ph2_cv                  # the default run folder is runs/NAME, the records go to book/results/NAME
    profile: paper                # base profile: paper | quick
    data: data/prepared/ph2       # the prepared dataset every run trains on (relative to the working folder)
    test_on: []                   # prepared datasets to also test every run on (their test split)
    set: {}                       # more config overrides for every run (`ulvm train --set FIELD=VALUE`)
    fold: [0, 1, 2, 3, 4]         # the axes: model, width, parallel, bridge, seed, fold (lists; a scalar =
                                  # one value)
    cross:                        # optional: a union of crosses; each entry's axes (and `set`) override the
      - {parallel: [4, 1]}        # top-level ones. Without `cross`, the top-level axes are the one cross.
      - {parallel: [4], seed: [43, 44]}

Axes left out take one value: model ultralight, width 1, parallel 4, bridge true, seed 42, fold none (the plain
split). Jobs are expanded in file order, each cross as model > width > parallel > bridge > seed > fold (fold
fastest), and named like p4_b1_f0_s42 (w0.5_p4_b1_s42 at another width); a baseline, which has no PVM
settings, by its model: unet_s42.

Each job runs as subprocesses, exactly as by hand: `python -m ulvm train ...` (it resumes an interrupted run
from RUN/last.pt), then `python -m ulvm test` on every `test_on` dataset, all logged to RUNS/NAME.log. The
sweep then writes one record per test set (`ulvm.sweeps.experiments.record_runs`). It is idempotent: a job whose
records exist is skipped; a job whose run folder is finished and tested is only recorded; a failed job is
reported with its log and does not stop the others (the exit code then is 1).
While it runs, one progress line says jobs done / running / failed and the time left, estimated from
the epochs every run has logged so far (known within a minute, not only once the first job ends).

Where it runs (Dask distributed, an optional extra: `pip install ".[sweep]"`; dask is imported only here):

* default: a `LocalCluster` on this machine, one single-threaded worker process per GPU slot, i.e.
  `--runs-per-gpu K` slots on every visible GPU (CUDA_VISIBLE_DEVICES, else `nvidia-smi -L`); worker i's runs
  see only GPU i mod G (the task sets CUDA_VISIBLE_DEVICES for its subprocesses from the worker's name).
  Without a GPU: `--workers N` CPU workers (default 2).
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

How many runs per GPU: measure it with `ulvm throughput` (`ulvm.sweeps.throughput`: K runs at once, CUDA MPS off and
on) and pass the best K as `--runs-per-gpu`; without MPS, processes on one GPU are time-sliced and K > 1
gains little. Under MPS, `--mps-percentage P` caps each run's share of its GPU (`ulvm.sweeps.mps`): 14 runs on an
H200 trained 23% faster at 10% each than uncapped.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from ..config import PROFILES
from ..errors import UlvmError
from ..version import code_version, require_clean
from .experiments import Job, read_log, record_runs
from .mps import client_environment

AXES = ("model", "width", "parallel", "bridge", "seed", "fold")        # the crossing order (fold fastest)
DEFAULT_AXES: dict[str, list[Any]] = {"model": ["ultralight"], "width": [1.0], "parallel": [4], "bridge": [True],
                                      "seed": [42], "fold": [None]}
GRID_KEYS = ("name", "profile", "data", "test_on", "set", "cross", *AXES)
SWEEP_VERSIONS = {"dask": "2026.8.0", "distributed": "2026.8.0"}


@dataclass(frozen=True)
class Grid:
    """A parsed grid file: where the runs train, what else they are tested on, and the jobs in order."""
    name: str
    profile: str
    data: Path
    jobs: tuple[Job, ...]
    test_on: tuple[Path, ...] = ()
    source: str = "<grid>"

    def test_sets(self) -> list[str]:
        """The names of the test sets each job is recorded on (the prepared folders' names)."""
        return [self.data.name, *(path.name for path in self.test_on)]


def load_grid(path: str | Path) -> Grid:
    """Read and expand a grid file; every problem is a `UlvmError` naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise UlvmError(f"{path}: cannot read the grid file ({error.strerror or error})") from None
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UlvmError(f"{path}: not valid YAML: {' '.join(str(error).split())}") from None
    return parse_grid(spec, str(path))


def _values(axis: str, value: Any, where: str) -> list[Any]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise UlvmError(f"{where}: '{axis}' is an empty list")
    for item in values:
        ok = {"model": isinstance(item, str) and item != "",
              "width": type(item) in (int, float) and 0 < item <= 16,
              "parallel": type(item) is int and item in (1, 2, 4),
              "bridge": isinstance(item, bool),
              "seed": type(item) is int,
              "fold": item is None or (type(item) is int and item >= 0)}[axis]
        if not ok:
            expected = {"model": "a model name", "width": "a channel multiplier in (0, 16]", "parallel": "1, 2 or 4",
                        "bridge": "true or false", "seed": "an integer", "fold": "an integer >= 0 or null"}[axis]
            raise UlvmError(f"{where}: '{axis}' value {item!r} is not {expected}")
    return values


def _overrides(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise UlvmError(f"{where}: 'set' must be a mapping FIELD: VALUE, got {value!r}")
    return value


def parse_grid(spec: Any, source: str = "<grid>") -> Grid:
    """Expand a grid mapping (a loaded grid file) into its jobs; `source` names it in errors."""
    if not isinstance(spec, dict):
        raise UlvmError(f"{source}: a grid file is a mapping (name, profile, data, ...), got {type(spec).__name__}")
    unknown = sorted(set(spec) - set(GRID_KEYS))
    if unknown:
        raise UlvmError(f"{source}: unknown key(s) {', '.join(map(repr, unknown))}; known: {', '.join(GRID_KEYS)}")
    for key in ("name", "data"):
        if not isinstance(spec.get(key), str) or not spec[key]:
            raise UlvmError(f"{source}: '{key}' is required (a string)")
    profile = spec.get("profile", "paper")
    if profile not in PROFILES:
        raise UlvmError(f"{source}: profile {profile!r} is not one of {', '.join(PROFILES)}")
    test_on = spec.get("test_on") or []
    if not isinstance(test_on, list) or not all(isinstance(item, str) for item in test_on):
        raise UlvmError(f"{source}: 'test_on' must be a list of prepared dataset paths")
    base_set = _overrides(spec.get("set"), source)
    base = {axis: _values(axis, spec[axis], source) for axis in AXES if axis in spec}
    crosses = spec.get("cross", [{}])
    if not isinstance(crosses, list) or not crosses:
        raise UlvmError(f"{source}: 'cross' must be a non-empty list of mappings of axes")
    jobs: list[Job] = []
    for index, cross in enumerate(crosses):
        where = f"{source}: cross[{index}]"
        if not isinstance(cross, dict):
            raise UlvmError(f"{where}: expected a mapping of axes, got {cross!r}")
        wrong = sorted(set(cross) - {*AXES, "set"})
        if wrong:
            raise UlvmError(f"{where}: unknown key(s) {', '.join(map(repr, wrong))}; known: {', '.join(AXES)}, set")
        axes = {**DEFAULT_AXES, **base, **{axis: _values(axis, cross[axis], where) for axis in AXES if axis in cross}}
        overrides = {**base_set, **_overrides(cross.get("set"), where)}
        sets = tuple(f"{key}={json.dumps(value)}" for key, value in overrides.items())
        for model, width, parallel, bridge, seed, fold in itertools.product(*(axes[axis] for axis in AXES)):
            jobs.append(Job(parallel, bridge, fold, seed, model=model, profile=profile, overrides=sets,
                            width=float(width)))
    seen: set[str] = set()
    for job in jobs:
        if job.name in seen:
            raise UlvmError(f"{source}: job {job.name} appears twice (the crosses overlap)")
        seen.add(job.name)
    return Grid(spec["name"], profile, Path(spec["data"]), tuple(jobs), tuple(map(Path, test_on)), source)


# --- the state of a job, read from its run folder and its records -----------------------------------------

def _results(run: Path, test_set: str) -> list[Path]:
    return sorted(run.glob(f"results_{test_set}_test*.json"))


def trained(run: Path) -> bool:
    """Whether the run folder holds a finished training (log.csv has all the epochs of its config.yaml)."""
    try:
        epochs = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))["epochs"]
        rows = (run / "log.csv").read_text(encoding="utf-8").strip().splitlines()[1:]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return False
    return len(rows) >= int(epochs)


def job_state(job: Job, grid: Grid, runs: Path, record: Path) -> str:
    """'done' (all records written), 'tested' (only recording left), 'partial' (an unfinished run to resume)
    or 'new'."""
    if all((record / f"test_{name}" / f"{job.name}.json").is_file() for name in grid.test_sets()):
        return "done"
    run = runs / job.name
    if all(_results(run, name) for name in grid.test_sets()):
        return "tested"
    return "partial" if (run / "last.pt").is_file() else "new"


# --- the task a Dask worker runs -----------------------------------------------------------------------

def _worker_gpu(gpus: tuple[str, ...]) -> str | None:
    """The GPU of this worker slot: worker i of a LocalCluster (named 0..n-1) gets gpus[i mod len(gpus)]."""
    if not gpus:
        return None
    from distributed import get_worker
    try:
        index = int(get_worker().name)
    except (TypeError, ValueError):       # a worker not named by an index: hash its name
        index = sum(map(ord, str(get_worker().name)))
    return gpus[index % len(gpus)]


def run_job(job: Job, data: Path, test_on: tuple[Path, ...], runs: Path, device: str = "auto",
            settings: tuple[str, ...] = (), gpus: tuple[str, ...] = (),
            environment: dict[str, str] | None = None) -> dict[str, Any]:
    """Train (or resume) and test one job, in subprocesses logged to RUNS/NAME.log, with `environment`
    added to theirs (e.g. `ulvm.sweeps.mps.client_environment`); returns what happened (name, code, log, gpu).
    Never raises for a failed run: its exit code says it."""
    runs.mkdir(parents=True, exist_ok=True)
    run, log_path = runs / job.name, runs / f"{job.name}.log"
    gpu = _worker_gpu(gpus)
    added = {**(environment or {}), **({"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else {})}
    env = {**os.environ, **added}
    commands = []
    if not _results(run, data.name):
        commands.append(job.test_command(data, runs, device, settings) if trained(run)
                        else job.command(data, runs, device, settings))
    commands += [job.test_command(path, runs, device, settings) for path in test_on if not _results(run, path.name)]
    code = 0
    with open(log_path, "a", encoding="utf-8") as log:
        for command in commands:
            log.write(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}"
                      + "".join(f" ({name}={value})" for name, value in added.items()) + "\n")
            log.flush()
            code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, env=env)
            if code != 0:
                log.write(f"== exit code {code}\n")
                break
    return dict(name=job.name, code=code, log=str(log_path), gpu=gpu)


# --- the client side ------------------------------------------------------------------------------------

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


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise UlvmError("ulvm sweep needs Dask distributed: pip install 'ulvm[sweep]' "
                        "(or: pip install dask distributed)") from None
    return distributed


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Jobs done / running / failed and the time left: one rewritten line on a terminal; elsewhere (a log
    file) a line whenever a job changes state, and at least every `every_s` seconds while they run."""

    def __init__(self, name: str, total: int, stream: TextIO, every_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self.name, self.total, self.stream, self.every_s, self.clock = name, total, stream, every_s, clock
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.last: tuple[int, int, int] | None = None
        self.last_time = -float("inf")

    def line(self, done: int, running: int, failed: int, eta_s: float | None) -> str:
        left = self.total - done - failed
        eta = "0:00:00" if not left else ("?" if eta_s is None else _clock(eta_s))
        return f"{self.name}: {done}/{self.total} done, {running} running, {failed} failed, ETA {eta}"

    def show(self, done: int, running: int, failed: int, eta_s: float | None = None) -> None:
        now = self.clock()
        if self.tty:
            self.stream.write("\r" + self.line(done, running, failed, eta_s).ljust(79))
            self.stream.flush()
        elif (done, running, failed) != self.last or now - self.last_time >= self.every_s:
            print(self.line(done, running, failed, eta_s), file=self.stream, flush=True)
            self.last_time = now
        self.last = (done, running, failed)

    def say(self, text: str) -> None:
        """A line of its own (a job finished or failed), above the progress line on a terminal."""
        if self.tty:
            self.stream.write("\r" + " " * 79 + "\r")
        print(text, file=self.stream, flush=True)


class TrainingETA:
    """The time the sweep's training has left, from the epochs its runs have logged (RUN/log.csv) since the
    sweep started and how fast they came: known after the first epochs, long before the first job ends.
    Tests after training are not counted; a failed job is dropped."""

    def __init__(self, jobs: list[Job], runs: Path, clock: Callable[[], float] = time.monotonic):
        self.jobs, self.runs, self.clock = {job.name: job for job in jobs}, runs, clock
        self.start_time, self.at_start = clock(), self.logged()      # (a resumed run starts part-way)

    def logged(self) -> dict[str, int]:
        return {name: min(len(read_log(self.runs / name)), job.epochs) for name, job in self.jobs.items()}

    def drop(self, job: Job) -> None:
        self.jobs.pop(job.name, None)

    def seconds_left(self) -> float | None:
        logged = self.logged()
        new = sum(logged.values()) - sum(self.at_start[name] for name in logged)
        elapsed = self.clock() - self.start_time
        if new <= 0 or elapsed <= 0:
            return None
        return sum(job.epochs - logged[name] for name, job in self.jobs.items()) * elapsed / new


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


def sweep(grid: Grid, runs: Path | None = None, record: Path | None = None, *, dry_run: bool = False,
          scheduler: str | None = None, workers: int | None = None, runs_per_gpu: int = 1, device: str = "auto",
          settings: tuple[str, ...] = (), mps_percentage: int | None = None, allow_dirty: bool = False,
          processes: bool = True, stream: TextIO | None = None, poll_s: float = 1.0) -> SweepResult:
    """Run the grid's unfinished jobs on Dask and record each finished one (see the module docstring).

    `runs`: run folders (default runs/NAME); `record`: records (default book/results/NAME). `settings`: more
    flags for every `ulvm train`/`ulvm test` (e.g. ("--threads", "1")). `mps_percentage`: under the CUDA MPS
    daemon, each run's share of its GPU's SMs (`ulvm.sweeps.mps`; the records say it). `processes=False` runs the
    local workers as threads of this process (each job is a subprocess either way)."""
    started = time.monotonic()
    stream = stream or sys.stdout
    environment = client_environment(mps_percentage)          # a share outside 1..100: refused before anything runs
    runs = Path(runs) if runs else Path("runs") / grid.name
    record = Path(record) if record else Path("book/results") / grid.name
    states = {job.name: job_state(job, grid, runs, record) for job in grid.jobs}
    if dry_run:
        for job in grid.jobs:
            print(f"{job.name:<28} {states[job.name]:<8} {' '.join(job.command(grid.data, runs, device, settings))}",
                  file=stream)
        counts = {state: sum(s == state for s in states.values()) for state in ("done", "tested", "partial", "new")}
        print(f"{grid.name}: {len(grid.jobs)} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items()), file=stream)
        return SweepResult({name: state for name, state in states.items()})
    result = SweepResult()
    todo = [job for job in grid.jobs if states[job.name] in ("new", "partial")]
    if any(state != "done" for state in states.values()):         # refuse before training (records need it)
        require_clean(code_version(), allow_dirty, f"ulvm sweep {grid.source}")
    say = lambda text: print(text, file=stream, flush=True)
    for job in grid.jobs:
        if states[job.name] == "done":
            result.status[job.name] = "skipped"
    gpus = () if (scheduler or device == "cpu") else visible_gpus()
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
    distributed = _import_distributed()
    import dask

    if not logging.getLogger().isEnabledFor(logging.DEBUG):           # Dask's INFO lines drown the progress
        logging.getLogger("distributed").setLevel(logging.WARNING)

    cluster = None
    with dask.config.set({"distributed.scheduler.worker-saturation": 1.0}):   # one task per worker thread
        if scheduler:
            client = distributed.Client(scheduler)
        else:
            n = runs_per_gpu * len(gpus) if gpus else (workers or 2)
            cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=processes,
                                               dashboard_address=":0", silence_logs=logging.ERROR)
            client = distributed.Client(cluster)
    try:
        slots = sum(w["nthreads"] for w in client.scheduler_info()["workers"].values()) or 1
        extra["concurrent_runs"] = min(slots, len(todo))
        for job in grid.jobs:                     # finished and tested before: record now
            if states[job.name] == "tested":
                _record(job, runs, record, allow_dirty, extra, result, say)
        progress, eta = Progress(grid.name, len(todo), stream), TrainingETA(todo, runs)
        say(f"{grid.name}: {len(todo)} jobs to run on {slots} worker slot(s)"
            + (f" over {len(gpus)} GPU(s)" if gpus else "") + f"; logs in {runs}/NAME.log")
        token = uuid.uuid4().hex[:8]
        futures = {client.submit(run_job, job, grid.data, grid.test_on, runs, device, settings, gpus, environment,
                                 key=f"ulvm-sweep-{job.name}-{token}", pure=False, priority=-index): job
                   for index, job in enumerate(todo)}
        pending = set(futures)
        done = failed = 0
        eta_s, eta_time = None, -float("inf")
        while pending:
            try:
                finished, pending = distributed.wait(pending, timeout=poll_s, return_when="FIRST_COMPLETED")
            except TimeoutError:                   # none finished within poll_s
                finished = set()
            for future in finished:
                job = futures[future]
                try:
                    outcome = future.result()
                except Exception as error:       # the task itself broke (a worker died, ...)
                    outcome = dict(code=-1, log=str(runs / f"{job.name}.log"), error=repr(error))
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
            keys = {future.key for future in pending}
            running = min(slots, sum(key in keys for tasks in client.processing().values() for key in tasks))
            if time.monotonic() - eta_time >= 10:                  # (reads every run's log.csv)
                eta_s, eta_time = eta.seconds_left(), time.monotonic()
            progress.show(done, running, failed, eta_s)
        if progress.tty:
            stream.write("\n")
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    took = f"after {_clock(time.monotonic() - started)}"          # the grid's wall time, start to last record
    if result.failures:
        failed = ", ".join(result.failures)
        say(f"{grid.name}: {len(result.failures)} of {len(grid.jobs)} jobs failed, {took}: {failed}")
    else:
        say(f"{grid.name}: all {len(grid.jobs)} jobs done, {took}")
    return result


def offline_wheels_command(dest: str = "wheels", python_version: str = "3.12",
                           platform: str = "manylinux2014_x86_64") -> str:
    """The `pip download` command that fetches the sweep extra's wheels for an offline machine."""
    pins = " ".join(f'"{name}=={version}"' for name, version in SWEEP_VERSIONS.items())
    return (f"pip download --dest {dest} --only-binary=:all: --python-version {python_version} "
            f"--platform {platform} {pins}")
