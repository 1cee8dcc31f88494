"""What the book's notebooks call: reuse a finished run or train it, in one line.

`train_or_reuse(config, data, run_dir, settings)` returns the `TrainResult` of the run in `run_dir` when it
finished with exactly `config` on `data` (re-executing the book costs nothing), else trains (or resumes) it.
"""
from __future__ import annotations

from pathlib import Path

from .checkpoint import read_run_checkpoint
from .config import Config, RunSettings
from .data.tensors import load_data
from .runs import TrainResult, differences, run_result
from .train import fit


def finished_run(config: Config, data, run_dir: str | Path) -> TrainResult | None:
    """The result of the run in `run_dir` if it finished with exactly `config` on `data`, else None."""
    last = Path(run_dir) / "last.pt"
    if not last.is_file():
        return None
    checkpoint = read_run_checkpoint(last)
    if differences(checkpoint, config, load_data(data).content_hash, last) or checkpoint["epoch"] < config.epochs:
        return None
    return run_result(Path(run_dir), checkpoint, 0.0, checkpoint["epoch"], "")


def train_or_reuse(config: Config, data, run_dir: str | Path, settings: RunSettings | None = None) -> TrainResult:
    """The finished run in `run_dir`, or `fit` it there (resuming an unfinished one), without progress bars."""
    return finished_run(config, data, run_dir) or fit(config, data, run_dir, settings=settings, progress=False)
