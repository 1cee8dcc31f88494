"""What a running sweep shows: one progress line (jobs done / running / failed) and the time left.

The time left is estimated from the epochs every run has logged so far (RUN/log.csv), so it is known
within a minute, not only once the first job ends.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from ..engine.runs import RunFolder
from .experiments import Job


def hms(seconds: float) -> str:
    """Seconds as H:MM:SS."""
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
        eta = "0:00:00" if not left else ("?" if eta_s is None else hms(eta_s))
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
        return {name: min(len(RunFolder(self.runs / name).read_log()), job.epochs)
                for name, job in self.jobs.items()}

    def drop(self, job: Job) -> None:
        self.jobs.pop(job.name, None)

    def seconds_left(self) -> float | None:
        logged = self.logged()
        new = sum(logged.values()) - sum(self.at_start[name] for name in logged)
        elapsed = self.clock() - self.start_time
        if new <= 0 or elapsed <= 0:
            return None
        return sum(job.epochs - logged[name] for name, job in self.jobs.items()) * elapsed / new
