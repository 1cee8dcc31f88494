"""Progress display: a tqdm bar on a terminal; in a file or a pipe (logs, CI, papermill), a plain line at
every tenth of the way instead of hundreds of carriage-return updates.

    for item in progress_bar(items, total=len(items), desc="prepare", unit="img"): ...
"""
from __future__ import annotations

import sys


class LineProgress:
    """The part of tqdm's interface the package uses, printing `desc: 40% (400/1000 img)` lines to stderr."""

    def __init__(self, iterable=None, total=None, desc="", unit="it", initial=0, disable=False, steps=10, **_):
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n, self.disable, self.steps, self.postfix = initial, disable, steps, ""
        self._shown = self._step()

    def _step(self) -> int:
        return int(self.n * self.steps / self.total) if self.total else 0

    def update(self, n: int = 1) -> None:
        self.n += n
        step = self._step()
        if not self.disable and step > self._shown:
            self._shown = step
            print(f"{self.desc}: {100 * self.n // self.total}% ({self.n}/{self.total} {self.unit}){self.postfix}",
                  file=sys.stderr, flush=True)

    def set_postfix(self, **values) -> None:
        self.postfix = "  " + "  ".join(f"{key} {value}" for key, value in values.items())

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update()

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(iterable=None, **options):
    """tqdm on a terminal, else `LineProgress`; same arguments (total, desc, unit, initial, disable, ...)."""
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(iterable, **options)
    return LineProgress(iterable, **options)
