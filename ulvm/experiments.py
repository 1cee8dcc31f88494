"""The real-data experiment of the book: the PVM ablation with 5-fold cross-validation on PH2.

One job = one `ulvm train` run at the paper protocol: (parallel, bridge, fold, seed). `run_grid` runs the
jobs as parallel processes on one GPU (the model is so small that one run leaves the GPU mostly idle:
10 concurrent runs of 250 epochs took ~6 minutes on an H100), and `record_run` packs what a finished run
proves into one small JSON under `book/results/ph2_cv/` for the ablation and tables chapters
(`notebooks/07_ablations.ipynb`, `08_paper_tables.ipynb`). Checkpoints and images are not recorded.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .errors import RunError
from .io import atomic_write_json


@dataclass(frozen=True)
class Job:
    parallel: int
    bridge: bool
    fold: int
    seed: int

    @property
    def name(self) -> str:
        return f"p{self.parallel}_b{int(self.bridge)}_f{self.fold}_s{self.seed}"

    def command(self, data: Path, runs: Path, device: str = "cuda") -> list[str]:
        cmd = [sys.executable, "-m", "ulvm", "train", "--data", str(data), "--out", str(runs / self.name),
               "--profile", "paper", "--fold", str(self.fold), "--seed", str(self.seed),
               "--parallel", str(self.parallel), "--device", device, "--no-progress"]
        return cmd if self.bridge else cmd + ["--no-bridge"]


def ph2_grid(folds=range(5)) -> list[Job]:
    """The issue's grid, most important first: ×4 and ×1 (seed 42), ×4 seeds 43 and 44, ×2, ×4 no bridge."""
    jobs = [Job(4, True, f, 42) for f in folds] + [Job(1, True, f, 42) for f in folds]
    jobs += [Job(4, True, f, s) for s in (43, 44) for f in folds]
    jobs += [Job(2, True, f, 42) for f in folds] + [Job(4, False, f, 42) for f in folds]
    return jobs


def run_grid(jobs: list[Job], data: Path, runs: Path, processes: int = 10, device: str = "cuda") -> dict:
    """Run the jobs, `processes` at a time; each one's output goes to RUNS/NAME.log. Returns {name: rc}.
    A killed grid resumes: `ulvm train` continues unfinished runs and skips finished ones."""
    runs.mkdir(parents=True, exist_ok=True)

    def run(job: Job) -> tuple[str, int]:
        with open(runs / f"{job.name}.log", "w") as log:
            return job.name, subprocess.call(job.command(data, runs, device), stdout=log, stderr=subprocess.STDOUT)

    with ThreadPoolExecutor(processes) as pool:
        return dict(pool.map(run, jobs))


def record_run(run_dir: Path, dest: Path, **extra) -> Path:
    """Write DEST/NAME.json: the run's test results (metrics, per-image DSC, config, data hashes, machine)
    + its training curves and training time (the sum of its epoch times, as `TrainResult.train_time_s`),
    + `extra` (e.g. how many runs shared the GPU)."""
    run_dir = Path(run_dir)
    results = sorted(run_dir.glob("results_*_test*.json"))
    if not results:
        raise RunError(f"{run_dir}: no results_*_test*.json (is the run finished and tested?)")
    record = json.loads(results[0].read_text(encoding="utf-8"))
    with open(run_dir / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    record["history"] = {key: [round(float(row[key]), 6) for row in rows]
                         for key in ("train_loss", "val_loss", "val_dsc", "lr", "epoch_time_s")}
    record["train_time_s"] = round(sum(record["history"]["epoch_time_s"]), 1)
    record.pop("run_dir", None)
    record.update(extra)
    return atomic_write_json(Path(dest) / f"{run_dir.name}.json", record)
