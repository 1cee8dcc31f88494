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

import csv
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from ..config import Config, parse_overrides
from ..errors import RunError
from ..io import atomic_write_json
from ..version import require_clean


@dataclass(frozen=True)
class Job:
    """One run of a grid: the axes a grid crosses, plus the profile and `--set` overrides (FIELD=JSON)."""
    parallel: int
    bridge: bool
    fold: int | None
    seed: int
    model: str = "ultralight"
    profile: str = "paper"
    overrides: tuple[str, ...] = ()
    width: float = 1.0               # Config.width; a job of another width is named w0.25_p4_b1_s42

    @property
    def name(self) -> str:
        """p4_b1_f0_s42 (no _f part without a fold); a baseline, which has no PVM settings: egeunet_f0_s42."""
        fold = "" if self.fold is None else f"_f{self.fold}"
        if self.model != "ultralight":
            return f"{self.model}{fold}_s{self.seed}"
        width = "" if self.width == 1 else f"w{self.width:g}_"
        return f"{width}p{self.parallel}_b{int(self.bridge)}{fold}_s{self.seed}"

    @property
    def epochs(self) -> int:
        """How many epochs this job trains: its profile's, unless an `epochs=` override says otherwise."""
        return Config.profile(self.profile, **parse_overrides(self.overrides)).epochs

    def command(self, data: Path, runs: Path, device: str = "cuda", settings: tuple[str, ...] = ()) -> list[str]:
        """`ulvm train` of this job into RUNS/NAME (it resumes an unfinished run); `settings`: more flags of
        how it runs (e.g. --threads 1), never of what it computes."""
        return self._train_command(data, runs / self.name, ("--seed", str(self.seed)), device, settings)

    def _train_command(self, data: Path, out: Path, seed_flags: tuple[str, ...], device: str,
                       settings: tuple[str, ...]) -> list[str]:
        cmd = [sys.executable, "-m", "ulvm", "train", "--data", str(data), "--out", str(out),
               "--profile", self.profile, *seed_flags, "--parallel", str(self.parallel),
               "--device", device, "--no-progress"]
        if self.fold is not None:
            cmd += ["--fold", str(self.fold)]
        if self.model != "ultralight":
            cmd += ["--model", self.model]
        if not self.bridge:
            cmd += ["--no-bridge"]
        if self.width != 1:
            cmd += ["--set", f"width={self.width:g}"]
        for item in self.overrides:
            cmd += ["--set", item]
        return cmd + list(settings)

    def test_command(self, external: Path, runs: Path, device: str = "cuda",
                     settings: tuple[str, ...] = ()) -> list[str]:
        """`ulvm test` of this job's best.pt on the test split of a prepared dataset (its own or another)."""
        return [sys.executable, "-m", "ulvm", "test", "--run", str(runs / self.name), "--data", str(external),
                "--device", device, *settings]


def together_command(jobs: list[Job], data: Path, runs: Path, device: str = "cuda",
                     settings: tuple[str, ...] = ()) -> list[str]:
    """ONE `ulvm train --seeds` process that trains `jobs` together (`ulvm.engine.train.fit_together`), each into
    RUNS/NAME as `Job.command` would; the jobs must differ only in their seed."""
    first = jobs[0]
    if any(replace(job, seed=first.seed) != first for job in jobs):
        names = ", ".join(job.name for job in jobs)
        raise RunError(f"only jobs that differ in their seed alone can train together: {names}")
    out = runs / replace(first, seed="{seed}").name                 # e.g. RUNS/p4_b1_s{seed}
    return first._train_command(data, out, ("--seeds", *(str(job.seed) for job in jobs)), device, settings)


def read_log(run_dir: Path) -> list[dict[str, float]]:
    """The epochs a run folder's log.csv lists (`ulvm.engine.runs.write_log`), as numbers; [] before the first one."""
    path = Path(run_dir) / "log.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(f)]


def record_run(results_file: Path, dest: Path, allow_dirty: bool = False, **extra) -> Path:
    """Write DEST/test_<dataset>/<run>.json for one results file of a run folder: the test results (metrics,
    per-image DSC, config, data hashes, machine, code version) + the run's training curves and training time
    (the sum of its epoch times, as `TrainResult.train_time_s`) + `extra` (e.g. how many runs shared the
    GPU). Refuses results of a dirty or unknown tree unless `allow_dirty` (then recorded as such)."""
    results_file = Path(results_file)
    run_dir = results_file.parent
    record = json.loads(results_file.read_text(encoding="utf-8"))
    require_clean(record.get("code_version", "unknown"), allow_dirty, str(results_file))
    rows = read_log(run_dir)
    if not rows:
        raise RunError(f"{run_dir}: log.csv lists no epoch (is this a finished run folder?)")
    record["history"] = {key: [round(row[key], 6) for row in rows]
                         for key in ("train_loss", "val_loss", "val_dsc", "lr", "epoch_time_s")}
    record["train_time_s"] = round(sum(record["history"]["epoch_time_s"]), 1)
    record.pop("run_dir", None)
    if allow_dirty:
        record["allow_dirty"] = True
    record.update(extra)
    test_set = Path(record["data"]["root"]).name
    return atomic_write_json(Path(dest) / f"test_{test_set}" / f"{run_dir.name}.json", record)


def record_runs(run_dir: Path, dest: Path, allow_dirty: bool = False, **extra) -> list[Path]:
    """`record_run` for every test-split results file of a finished run (its own test set and external ones)."""
    results = sorted(Path(run_dir).glob("results_*_test*.json"))
    if not results:
        raise RunError(f"{run_dir}: no results_*_test*.json (is the run finished and tested?)")
    return [record_run(path, dest, allow_dirty, **extra) for path in results]
