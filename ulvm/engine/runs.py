"""The run folder `ulvm.engine.train.fit` writes, and the one owner of what it holds: `RunFolder`.

A run folder holds config.yaml, log.csv (one row per epoch), last.pt / best.pt, TensorBoard logs, the
results of `ulvm test` (results_<data>_<split>[_fold<k>].json, predictions_... folders) and a lock file.
Every room that asks "is this run finished?", reads its log or looks for its results asks `RunFolder`.

Here also: the decision between a fresh start, a resume (same config and data required) and a refusal (a
finished run, another config, other data, a folder of the user's), and the `TrainResult` read back from a
run's checkpoint.
"""
from __future__ import annotations

import contextlib
import csv
import io
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import RunError
from ..io import LockHeld, atomic_write_text, exclusive, foreign_entries, made_by_ulvm
from .checkpoint import read_run_checkpoint

LOG_COLUMNS = ("epoch", "lr", "train_loss", "val_loss", "val_dsc", "val_iou", "epoch_time_s")
SPLIT_NAMES = ("train", "val", "test")
# results_<data folder name>_<split>[_fold<k>].json, and the predictions_... folder named alike
_TEST_OUTPUT = re.compile(rf"(results|predictions)_(.+)_({'|'.join(SPLIT_NAMES)})(_fold\d+)?(\.json)?")
_TEMPORARY = re.compile(r"\..+\.(tmp|old)")        # what `ulvm.io`'s atomic writes leave when killed midway


def file_stem(data_root: str | Path, split: str, fold: int | None) -> str:
    """`<data folder name>_<split>[_fold<k>]`: what a run's results and predictions of one split are named by."""
    return f"{Path(data_root).name}_{split}" + (f"_fold{fold}" if fold is not None else "")


def is_finished(checkpoint: dict[str, Any]) -> bool:
    """THE definition of a finished run: its checkpoint has trained every epoch of its config."""
    return checkpoint["epoch"] >= Config.from_dict(checkpoint["config"]).epochs


class RunFolder:
    """A run folder: the names of its files, whether it is finished, its log, its test results, its lock."""

    CONFIG, LOG, LAST, BEST, LOCK = "config.yaml", "log.csv", "last.pt", "best.pt", ".ulvm-train.lock"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def log_path(self) -> Path:
        return self.path / self.LOG

    @property
    def last_path(self) -> Path:
        return self.path / self.LAST

    @property
    def best_path(self) -> Path:
        return self.path / self.BEST

    # -- state -------------------------------------------------------------------------------------------

    def checkpoint(self) -> dict[str, Any] | None:
        """last.pt (checked by `read_run_checkpoint`), or None before the first epoch."""
        return read_run_checkpoint(self.last_path) if self.last_path.is_file() else None

    def is_finished(self) -> bool:
        """Whether last.pt has trained every epoch of its config (`is_finished`); False without one."""
        checkpoint = self.checkpoint()
        return checkpoint is not None and is_finished(checkpoint)

    def read_log(self) -> list[dict[str, float]]:
        """The epochs log.csv lists, as numbers; [] before the first one."""
        if not self.log_path.is_file():
            return []
        with open(self.log_path, newline="") as f:
            return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(f)]

    def write_log(self, history: list[dict[str, float]]) -> None:
        """log.csv, one row per epoch, written atomically after every epoch."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=LOG_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
        atomic_write_text(self.log_path, buffer.getvalue())

    # -- test results ------------------------------------------------------------------------------------

    def results_path(self, data_root: str | Path, split: str, fold: int | None = None) -> Path:
        """RUN/results_<data folder name>_<split>[_fold<k>].json: one file per data set and split."""
        return self.path / f"results_{file_stem(data_root, split, fold)}.json"

    def predictions_path(self, data_root: str | Path, split: str, fold: int | None = None) -> Path:
        """RUN/predictions_<data folder name>_<split>[_fold<k>]/, named like the results file."""
        return self.path / f"predictions_{file_stem(data_root, split, fold)}"

    def results(self, test_set: str | None = None, split: str = "test") -> list[Path]:
        """The results files of `split` (any fold) on the data set named `test_set` (None: on any)."""
        found = []
        for path in sorted(self.path.glob("results_*.json")):
            match = _TEST_OUTPUT.fullmatch(path.name)
            if match and match[3] == split and (test_set is None or match[2] == test_set):
                found.append(path)
        return found

    # -- what is ulvm's, and who trains here --------------------------------------------------------------

    def _ours(self, entry: Path) -> bool:
        """Whether `entry` is one of the files ulvm writes into a run folder."""
        name = entry.name
        if entry.is_symlink():
            return False
        if _TEMPORARY.fullmatch(name):
            return True
        if name in (self.CONFIG, self.LOG, self.LAST, self.BEST, self.LOCK):
            return entry.is_file()
        if name == "tensorboard":
            return entry.is_dir() and not foreign_entries(
                entry, lambda f: f.name.startswith("events.out.tfevents.") and f.is_file())
        match = _TEST_OUTPUT.fullmatch(name)
        if match and match[1] == "results":
            return entry.is_file() and match[5] == ".json"
        return bool(match) and match[5] is None and entry.is_dir() and made_by_ulvm(entry)

    def check_ours(self) -> None:
        """Refuse a folder that holds anything ulvm does not write into a run folder, or that holds no run
        (no last.pt and no lock file: e.g. a folder of the user's with a file named like one of ours)."""
        if self.path.is_symlink() or (self.path.exists() and not self.path.is_dir()):
            raise RunError(f"{self.path}: not a folder; --out is the run folder to train into")
        if not self.path.exists() or not any(self.path.iterdir()):
            return
        foreign = foreign_entries(self.path, self._ours)
        if not foreign and not (self.last_path.is_file() or (self.path / self.LOCK).is_file()):
            foreign = sorted(entry.name for entry in self.path.iterdir())
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise RunError(f"{self.path}: not a ulvm run folder (it holds {shown}); nothing was changed: "
                           "choose another --out, or move those files away")

    def clear(self) -> None:
        """Remove what a previous run wrote here, after `check_ours` (the lock file stays: it is held)."""
        self.check_ours()
        for entry in self.path.iterdir() if self.path.is_dir() else ():
            if entry.name == self.LOCK:
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's lock while training into it: a second trainer is refused, naming the holder.
        The kernel drops the lock when the holder exits, however it exits."""
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            with exclusive(self.path / self.LOCK, wait=False):
                yield
        except LockHeld as held:
            holder = str(held).rpartition("held by process ")[2]
            raise RunError(f"{self.path}: another ulvm is training into this run folder (process {holder}); "
                           "wait for it to end, or stop it") from None


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


def prepare_run_dir(run_dir: Path, config: Config, content_hash: str, resume: bool,
                     overwrite: bool) -> dict[str, Any] | None:
    """Decide between a fresh start and a resume; returns the checkpoint to resume from, if any."""
    folder = RunFolder(run_dir)
    if overwrite:
        folder.clear()
        return None
    checkpoint = folder.checkpoint()
    if checkpoint is None:
        return None
    problem = differences(checkpoint, config, content_hash, folder.last_path)
    if problem:
        raise RunError(f"{folder.last_path}: {problem}; use another output folder or pass --overwrite")
    if is_finished(checkpoint):
        raise RunError(f"{run_dir}: this run already finished ({config.epochs} epochs); "
                       "pass --overwrite (overwrite=True) to train it again")
    if not resume:
        raise RunError(f"{run_dir}: holds an unfinished run (epoch {checkpoint['epoch']}); "
                       "resume it, or pass --overwrite to start again")
    return checkpoint


def run_result(run_dir: Path, checkpoint: dict[str, Any], wall_time_s: float, resumed_from: int,
               device: str) -> TrainResult:
    """The `TrainResult` of a run folder, read from its checkpoint."""
    history, folder = list(checkpoint["history"]), RunFolder(run_dir)
    return TrainResult(run_dir=run_dir, best_path=folder.best_path, last_path=folder.last_path,
                       log_path=folder.log_path, history=history, best_epoch=checkpoint["best"]["epoch"],
                       best_val_loss=checkpoint["best"]["val_loss"], wall_time_s=wall_time_s,
                       train_time_s=sum(row["epoch_time_s"] for row in history),
                       resumed_from_epoch=resumed_from, device=device,
                       data_manifest_hash=checkpoint["data"]["manifest_hash"])


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
