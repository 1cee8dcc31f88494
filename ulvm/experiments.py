"""The book's real-data experiments: grids of paper-protocol runs, and the per-run records the book renders.

One job = one `ulvm train` run at the paper protocol: (parallel, bridge, fold, seed), optionally followed by
`ulvm test` on other prepared datasets (external validation: the paper tests its ISIC2017 model on all 200
PH2 images). The grids:

* `ph2-cv`: the PVM ablation with 5-fold cross-validation on PH2 (30 runs);
* `isic2017`: the paper's Table 1 and PVM ablation on ISIC2017 (×4 with 5 seeds; ×2, ×1 and ×4 without
  the bridge with 3 seeds: 14 runs), each also tested on PH2;
* `ph2-transfer`: ×4, PH2 fold 0, seed 42, tested on ISIC2017's test split (the other half of the book's
  transfer matrix).

`run_grid` runs the jobs as parallel processes (the model is so small that one run leaves a GPU mostly
idle), spread round-robin over the GPUs it is given. `record_runs` packs what a finished run proves into
one small JSON per test set, `DEST/test_<dataset>/<run>.json`, for the ablation and tables chapters.
Checkpoints and images are not recorded. Every record names the commit that produced it (`ulvm.version`).
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .errors import RunError
from .io import atomic_write_json
from .version import require_clean


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

    @property
    def name(self) -> str:
        """p4_b1_f0_s42 (no _f part without a fold), prefixed by the model when it is not UltraLight VM-UNet."""
        fold = "" if self.fold is None else f"_f{self.fold}"
        model = "" if self.model == "ultralight" else f"{self.model}_"
        return f"{model}p{self.parallel}_b{int(self.bridge)}{fold}_s{self.seed}"

    def command(self, data: Path, runs: Path, device: str = "cuda", settings: tuple[str, ...] = ()) -> list[str]:
        """`ulvm train` of this job into RUNS/NAME (it resumes an unfinished run); `settings`: more flags of
        how it runs (e.g. --threads 1), never of what it computes."""
        cmd = [sys.executable, "-m", "ulvm", "train", "--data", str(data), "--out", str(runs / self.name),
               "--profile", self.profile, "--seed", str(self.seed), "--parallel", str(self.parallel),
               "--device", device, "--no-progress"]
        if self.fold is not None:
            cmd += ["--fold", str(self.fold)]
        if self.model != "ultralight":
            cmd += ["--model", self.model]
        if not self.bridge:
            cmd += ["--no-bridge"]
        for item in self.overrides:
            cmd += ["--set", item]
        return cmd + list(settings)

    def test_command(self, external: Path, runs: Path, device: str = "cuda",
                     settings: tuple[str, ...] = ()) -> list[str]:
        """`ulvm test` of this job's best.pt on the test split of a prepared dataset (its own or another)."""
        return [sys.executable, "-m", "ulvm", "test", "--run", str(runs / self.name), "--data", str(external),
                "--device", device, *settings]


def ph2_grid(folds=range(5)) -> list[Job]:
    """The PH2 grid, most important first: ×4 and ×1 (seed 42), ×4 seeds 43 and 44, ×2, ×4 no bridge."""
    jobs = [Job(4, True, f, 42) for f in folds] + [Job(1, True, f, 42) for f in folds]
    jobs += [Job(4, True, f, s) for s in (43, 44) for f in folds]
    jobs += [Job(2, True, f, 42) for f in folds] + [Job(4, False, f, 42) for f in folds]
    return jobs


def isic2017_grid() -> list[Job]:
    """Table 1 and the PVM ablation on ISIC2017: ×4 seeds 42-46, then ×1, ×2, ×4 no bridge seeds 42-44."""
    jobs = [Job(4, True, None, seed) for seed in range(42, 47)]
    for parallel, bridge in ((1, True), (2, True), (4, False)):
        jobs += [Job(parallel, bridge, None, seed) for seed in range(42, 45)]
    return jobs


GRIDS = {"ph2-cv": ph2_grid, "isic2017": isic2017_grid,
         "ph2-transfer": lambda: [Job(4, True, 0, 42)]}


def grid_jobs(name: str) -> list[Job]:
    if name not in GRIDS:
        raise RunError(f"unknown grid {name!r}; known: {', '.join(GRIDS)}")
    return GRIDS[name]()


def run_grid(jobs: list[Job], data: Path, runs: Path, processes: int = 10, device: str = "cuda",
             external: tuple[Path, ...] = (), gpus: tuple[int, ...] = ()) -> dict:
    """Run the jobs, `processes` at a time, each then tested on every `external` dataset; each job's output
    goes to RUNS/NAME.log. With `gpus`, job i sees only GPU gpus[i % len(gpus)] (CUDA_VISIBLE_DEVICES).
    Returns {name: exit code}. A killed grid resumes: `ulvm train` continues unfinished runs and skips
    finished ones."""
    runs.mkdir(parents=True, exist_ok=True)

    def run(index_job: tuple[int, Job]) -> tuple[str, int]:
        index, job = index_job
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(gpus[index % len(gpus)])
        commands = [job.command(data, runs, device)] + [job.test_command(e, runs, device) for e in external]
        with open(runs / f"{job.name}.log", "a") as log:
            for command in commands:
                code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, env=env)
                if code != 0:
                    return job.name, code
        return job.name, 0

    with ThreadPoolExecutor(processes) as pool:
        return dict(pool.map(run, enumerate(jobs)))


def record_run(results_file: Path, dest: Path, allow_dirty: bool = False, **extra) -> Path:
    """Write DEST/test_<dataset>/<run>.json for one results file of a run folder: the test results (metrics,
    per-image DSC, config, data hashes, machine, code version) + the run's training curves and training time
    (the sum of its epoch times, as `TrainResult.train_time_s`) + `extra` (e.g. how many runs shared the
    GPU). Refuses results of a dirty or unknown tree unless `allow_dirty` (then recorded as such)."""
    results_file = Path(results_file)
    run_dir = results_file.parent
    record = json.loads(results_file.read_text(encoding="utf-8"))
    require_clean(record.get("code_version", "unknown"), allow_dirty, str(results_file))
    with open(run_dir / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    record["history"] = {key: [round(float(row[key]), 6) for row in rows]
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
