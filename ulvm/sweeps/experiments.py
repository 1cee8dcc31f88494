"""The book's real-data experiments: the job of a grid, and the per-run records the book renders.

One job = one `ulvm train` run at a profile (the book's grids: the paper protocol): (model, parallel, bridge,
fold, seed) plus config overrides, optionally followed by `ulvm test` on other prepared datasets (external
validation: the paper tests its ISIC2017 model on all 200 PH2 images). The grids themselves are YAML files
under book/grids/, expanded and run on Dask by `ulvm sweep` (`ulvm.sweeps.sweep`):

* `book/grids/ph2_cv.yaml`: the PVM ablation with 5-fold cross-validation on PH2 (30 runs);
* `book/grids/isic2017.yaml`: the paper's Table 1 and PVM ablation on ISIC2017 (×4 with 5 seeds; ×2, ×1 and
  ×4 without the bridge with 3 seeds: 14 runs), each also tested on PH2;
* `book/grids/ph2_transfer.yaml`: ×4, PH2 fold 0, seed 42, tested on ISIC2017's test split (the other half
  of the book's transfer matrix).

`record_runs` packs what a finished run proves into one small JSON per test set,
`DEST/test_<dataset>/<run>.json`, for the ablation and tables chapters. Checkpoints and images are not
recorded. Every record names the commit that produced it (`ulvm.version`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Config, RunSettings
from ..engine.commands import test_argv, train_argv
from ..engine.runs import RunFolder
from ..errors import RunError
from ..io import atomic_write_json
from ..version import require_clean


@dataclass(frozen=True)
class Job:
    """One run of a grid: the exact config it trains (how it runs, `RunSettings`, is the sweep's)."""
    config: Config

    @classmethod
    def of(cls, parallel: int = 4, bridge: bool = True, fold: int | None = None, seed: int = 42,
           model: str = "ultralight", profile: str = "paper", overrides: dict[str, Any] | None = None,
           width: float = 1.0) -> "Job":
        """The job of a grid's axes on a profile, with config overrides (they win, as `--set` does)."""
        axes = dict(parallel=parallel, bridge=bridge, fold=fold, seed=seed, model=model, width=width)
        return cls(Config.profile(profile, **{**axes, **(overrides or {})}))

    @property
    def name(self) -> str:
        """p4_b1_f0_s42 (no _f part without a fold; w0.5_p4_b1_s42 at another width than 1); a baseline, which
        has no PVM settings: egeunet_f0_s42."""
        return self._name(str(self.config.seed))

    def _name(self, seed: str) -> str:
        config = self.config
        fold = "" if config.fold is None else f"_f{config.fold}"
        if config.model != "ultralight":
            return f"{config.model}{fold}_s{seed}"
        width = "" if config.width == 1 else f"w{config.width:g}_"
        return f"{width}p{config.parallel}_b{int(config.bridge)}{fold}_s{seed}"

    @property
    def epochs(self) -> int:
        return self.config.epochs

    def command(self, data: Path, runs: Path, settings: RunSettings = RunSettings(), **flags) -> list[str]:
        """`ulvm train` of this job into RUNS/NAME (it resumes an unfinished run); `flags`: `train_argv`'s."""
        return train_argv(self.config, settings, data, Path(runs) / self.name, **flags)

    def test_command(self, external: Path, runs: Path, settings: RunSettings = RunSettings()) -> list[str]:
        """`ulvm test` of this job's best.pt on the test split of a prepared dataset (its own or another)."""
        return test_argv(Path(runs) / self.name, external, settings)


def together_command(jobs: list[Job], data: Path, runs: Path, settings: RunSettings = RunSettings(),
                     **flags) -> list[str]:
    """ONE `ulvm train --seeds` process that trains `jobs` together (`ulvm.engine.train.fit_together`), each into
    RUNS/NAME as `Job.command` would; the jobs must differ only in their seed."""
    first = jobs[0]
    if any(job.config.replace(seed=first.config.seed) != first.config for job in jobs):
        names = ", ".join(job.name for job in jobs)
        raise RunError(f"only jobs that differ in their seed alone can train together: {names}")
    out = Path(runs) / first._name("{seed}")                          # e.g. RUNS/p4_b1_s{seed}
    return train_argv(first.config, settings, data, out, seeds=tuple(job.config.seed for job in jobs), **flags)


def record_run(results_file: Path, dest: Path, allow_dirty: bool = False, **extra) -> Path:
    """Write DEST/test_<dataset>/<run>.json for one results file of a run folder: the test results (metrics,
    per-image DSC, config, data hashes, machine, code version) + the run's training curves and training time
    (the sum of its epoch times, as `TrainResult.train_time_s`) + `extra` (e.g. how many runs shared the
    GPU). Refuses results of a dirty or unknown tree unless `allow_dirty` (then recorded as such)."""
    results_file = Path(results_file)
    run = RunFolder(results_file.parent)
    record = json.loads(results_file.read_text(encoding="utf-8"))
    require_clean(record.get("code_version", "unknown"), allow_dirty, str(results_file))
    rows = run.read_log()
    if not rows:
        raise RunError(f"{run.path}: log.csv lists no epoch (is this a finished run folder?)")
    record["history"] = {key: [round(row[key], 6) for row in rows]
                         for key in ("train_loss", "val_loss", "val_dsc", "lr", "epoch_time_s")}
    record["train_time_s"] = round(sum(record["history"]["epoch_time_s"]), 1)
    record.pop("run_dir", None)
    if allow_dirty:
        record["allow_dirty"] = True
    record.update(extra)
    test_set = Path(record["data"]["root"]).name
    return atomic_write_json(Path(dest) / f"test_{test_set}" / f"{run.name}.json", record)


def record_runs(run_dir: Path, dest: Path, allow_dirty: bool = False, **extra) -> list[Path]:
    """`record_run` for every test-split results file of a finished run (its own test set and external ones)."""
    results = RunFolder(run_dir).results(split="test")
    if not results:
        raise RunError(f"{run_dir}: no results_*_test*.json (is the run finished and tested?)")
    return [record_run(path, dest, allow_dirty, **extra) for path in results]
