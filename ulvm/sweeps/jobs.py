"""The jobs of a sweep on disk: what state each one is in, and the task that trains and tests one.

A job's state is read from its run folder (`ulvm.engine.runs.RunFolder`) and its records, so that a sweep
can be stopped at any moment and run again: 'done' (every record written), 'tested' (only recording
left), 'partial' (an unfinished run to resume) or 'new'.

`run_job` is what a Dask worker runs for one job: `ulvm train` (it resumes an interrupted run), then
`ulvm test` on every other test set, as subprocesses logged to RUNS/NAME.log, exactly as by hand. The
subprocesses die with the worker that started them, however it ends (`ulvm.io.die_with_parent`), and
ignore Ctrl-C: the sweep stops them by stopping its workers.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from ..config import RunSettings
from ..engine.runs import RunFolder
from ..errors import UlvmError
from ..io import die_with_parent
from .experiments import Job
from .grid import Grid


def record_path(record: Path, test_set: str, job: Job) -> Path:
    """RECORD/test_<test set>/<job>.json: the record of one job on one test set."""
    return Path(record) / f"test_{test_set}" / f"{job.name}.json"


def job_state(job: Job, grid: Grid, runs: Path, record: Path) -> str:
    """'done' (all records written), 'tested' (only recording left), 'partial' (an unfinished run to resume)
    or 'new'."""
    if all(record_path(record, name, job).is_file() for name in grid.test_sets()):
        return "done"
    run = RunFolder(Path(runs) / job.name)
    if all(run.results(name) for name in grid.test_sets()):
        return "tested"
    return "partial" if run.last_path.is_file() else "new"


def _child_setup(parent: int) -> None:
    """In a job's subprocess, before `ulvm` starts: die with the worker; leave Ctrl-C to the sweep."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent)


def run_job(job: Job, data: Path, test_on: tuple[Path, ...], runs: Path, settings: RunSettings = RunSettings(),
            gpu: str | None = None, environment: dict[str, str] | None = None) -> dict[str, Any]:
    """Train (or resume) and test one job, in subprocesses logged to RUNS/NAME.log, on `gpu` (its
    CUDA_VISIBLE_DEVICES; None: as the worker's environment says), with `environment` added to theirs (e.g.
    `ulvm.sweeps.mps.client_environment`); returns what happened (name, code, log, gpu).
    Never raises for a failed run: its exit code says it."""
    runs = Path(runs)
    runs.mkdir(parents=True, exist_ok=True)
    run, log_path = RunFolder(runs / job.name), runs / f"{job.name}.log"
    added = {**(environment or {}), **({"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else {})}
    env = {**os.environ, **added}
    try:
        finished = run.is_finished()
    except UlvmError:              # a damaged last.pt: `ulvm train` says what is wrong, in the job's log
        finished = False
    commands = []
    if not run.results(data.name):
        commands.append(job.test_command(data, runs, settings) if finished else job.command(data, runs, settings))
    commands += [job.test_command(path, runs, settings) for path in test_on if not run.results(path.name)]
    code = 0
    with open(log_path, "a", encoding="utf-8") as log:
        for command in commands:
            log.write(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}"
                      + "".join(f" ({name}={value})" for name, value in added.items()) + "\n")
            log.flush()
            code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   preexec_fn=lambda parent=os.getpid(): _child_setup(parent))
            if code != 0:
                log.write(f"== exit code {code}\n")
                break
    return dict(name=job.name, code=code, log=str(log_path), gpu=gpu)
