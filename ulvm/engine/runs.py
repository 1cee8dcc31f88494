"""The run folder `ulvm.engine.train.fit` writes: last.pt / best.pt, log.csv, config.yaml, TensorBoard logs.

Here is the decision between a fresh start, a resume (same config and data required) and a refusal (a
finished run, another config, other data), and the `TrainResult` read back from a run's checkpoint.
"""
from __future__ import annotations

import csv
import io
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import RunError
from ..io import atomic_write_text
from .checkpoint import read_run_checkpoint

LOG_COLUMNS = ("epoch", "lr", "train_loss", "val_loss", "val_dsc", "val_iou", "epoch_time_s")
RUN_FILES = ("last.pt", "best.pt", "log.csv", "config.yaml", "tensorboard", "results_*.json", "predictions_*")


@dataclass
class TrainResult:
    """What `fit` leaves behind: paths, the per-epoch history (as in log.csv) and timings."""
    run_dir: Path
    best_path: Path
    last_path: Path
    log_path: Path
    history: list[dict[str, float]]
    best_epoch: int
    best_val_loss: float
    wall_time_s: float               # of this call (0 for `finished_run`)
    train_time_s: float              # sum of the epoch times of the whole run, across resumes
    resumed_from_epoch: int = 0      # 0 = started from scratch
    device: str = ""
    data_manifest_hash: str = ""


def differences(checkpoint: dict[str, Any], config: Config, content_hash: str, source: Path) -> str | None:
    """Why a run folder's checkpoint does not belong to (config, data), or None when it does."""
    saved = Config.from_dict(checkpoint["config"], source=str(source))
    if saved != config:
        changed = sorted(k for k, v in config.to_dict().items() if saved.to_dict().get(k) != v)
        return f"the run was started with a different config (differs in: {', '.join(changed)})"
    if checkpoint["data"]["content_hash"] != content_hash:
        return (f"the run was started on other data (prepared content hash "
                f"{checkpoint['data']['content_hash'][:12]} != {content_hash[:12]})")
    return None


def clear_run_dir(run_dir: Path) -> None:
    """Remove what a previous run wrote (and only that: the folder may hold other files)."""
    for pattern in RUN_FILES:
        for target in run_dir.glob(pattern):
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink()


def prepare_run_dir(run_dir: Path, config: Config, content_hash: str, resume: bool,
                     overwrite: bool) -> dict[str, Any] | None:
    """Decide between a fresh start and a resume; returns the checkpoint to resume from, if any."""
    last = run_dir / "last.pt"
    if overwrite:
        clear_run_dir(run_dir)
        return None
    if not last.exists():
        return None
    checkpoint = read_run_checkpoint(last)
    problem = differences(checkpoint, config, content_hash, last)
    if problem:
        raise RunError(f"{last}: {problem}; use another output folder or pass --overwrite")
    if checkpoint["epoch"] >= config.epochs:
        raise RunError(f"{run_dir}: this run already finished ({config.epochs} epochs); "
                       "pass --overwrite (overwrite=True) to train it again")
    if not resume:
        raise RunError(f"{run_dir}: holds an unfinished run (epoch {checkpoint['epoch']}); "
                       "resume it, or pass --overwrite to start again")
    return checkpoint


def run_result(run_dir: Path, checkpoint: dict[str, Any], wall_time_s: float, resumed_from: int,
               device: str) -> TrainResult:
    """The `TrainResult` of a run folder, read from its checkpoint."""
    history = list(checkpoint["history"])
    return TrainResult(run_dir=run_dir, best_path=run_dir / "best.pt", last_path=run_dir / "last.pt",
                       log_path=run_dir / "log.csv", history=history, best_epoch=checkpoint["best"]["epoch"],
                       best_val_loss=checkpoint["best"]["val_loss"], wall_time_s=wall_time_s,
                       train_time_s=sum(row["epoch_time_s"] for row in history),
                       resumed_from_epoch=resumed_from, device=device,
                       data_manifest_hash=checkpoint["data"]["manifest_hash"])


def write_log(path: Path, history: list[dict[str, float]]) -> None:
    """log.csv, one row per epoch, written atomically after every epoch."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LOG_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, buffer.getvalue())


def open_tensorboard(run_dir: Path, start_epoch: int):
    """A TensorBoard writer continuing after `start_epoch`, or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_epoch + 1)


def epoch_line(row: dict[str, float], epochs: int, is_best: bool) -> str:
    return (f"epoch {row['epoch']:>3}/{epochs}  lr {row['lr']:.2e}  train {row['train_loss']:.4f}  "
            f"val {row['val_loss']:.4f}  val DSC {row['val_dsc']:.4f}  {row['epoch_time_s']:.1f}s"
            + ("  *best" if is_best else ""))
