"""`ulvm reproduce --profile paper`: the paper's runs from the raw data to the rendered book, each phase timed.

The runs the Results chapters need are made one way only, the sweep's (`ulvm.sweeps.sweep`): the same grid
files (`book/grids/`), run folders, logs and per-run records as `ulvm sweep`, runs packed on the GPU, resumable,
with progress and an ETA. The notebooks then read those records through their `results_root` parameter and
show them beside the book's committed ones (`book/results/`, never written here).

Phases, in order, each timed; a phase with nothing left to do keeps the time an earlier call recorded:

* prepare: the prepared datasets the grids train and test on (`PREPARED/isic2017`, `PREPARED/ph2`), made from
  the raw folders when missing with the preparations the book's records were made from, so that the records'
  data hashes compare: ISIC2017 split 1250/150/600 with seed 42 (`ulvm prepare isic2017`), PH2 with every
  image in the test split and its 5 cross-validation folds (`ulvm prepare ph2`);
* train and test: every grid of the scope through the sweep, records into `RESULTS/<grid>/test_<set>/`.
  Training and testing overlap (one run tests while another trains), so "train" is the wall time until the
  last run of a grid finished training (the first `ulvm test` line of each run's log) and "test" the rest;
* notebooks: `ulvm.report.reproduce.reproduce` with `results_root=RESULTS`;
* book: `jupyter-book build`.

After the runs and after the book, `RESULTS/reproduce/reproduce_<gpu>.json` records the GPU, the commit, the
settings and the seconds of each phase with their total. The notebooks and the book can run later, on another
machine, against the same results folder (`only_book=True`): their phases are merged into that record.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TextIO

from ..config import RunSettings
from ..errors import UlvmError
from ..io import atomic_write_json
from .book import project_root, resolve

# Which grids (book/grids/NAME.yaml) a scope trains. "grid": Table 1 and the PVM ablation (14 runs).
SCOPES = {"grid": ("isic2017",), "all": ("isic2017", "baselines", "ph2_transfer")}
PH2_CV_GRID = "ph2_cv"                                  # 30 runs, only on request
# How a prepared dataset the grids name is made from its raw folder: the book's own preparations.
PREPARATIONS = {"isic2017": ("isic2017", "--isic2017-raw"), "ph2": ("ph2", "--ph2-raw")}
PHASES = ("prepare", "train", "test", "notebooks", "book")
RECORD_DIR = "reproduce"


@dataclass
class PaperRun:
    """What `ulvm reproduce --profile paper` was asked for (paths relative to the project root)."""
    results: str | Path = "runs/paper/results"
    runs: str | Path = "runs/paper"
    prepared: str | Path = "data/prepared"
    raw: dict[str, str | Path] = field(default_factory=dict)      # dataset name -> raw folder to prepare from
    scope: str = "grid"
    ph2_cv: bool = False
    grids: tuple[str | Path, ...] = ()          # grid files instead of the scope's (tests: a tiny grid)
    runs_per_gpu: int = 1
    mps_percentage: int | None = None
    compile: bool = False
    eval_batch_size: int | None = None
    deterministic: bool = False
    allow_dirty: bool = False
    allow_cpu: bool = False                     # tests only: train a tiny grid on the CPU
    workers: int | None = None                  # CPU workers of the sweep (with allow_cpu)
    threads: int | None = None                  # --threads of every run (CPU)
    book: bool = True                           # False: train, test and record only
    only_book: bool = False                     # the notebooks and the book against existing records


def results_folder(path: str | Path, root: Path) -> Path:
    """The results folder, refused when it is (or lies inside) the book's committed `book/results/`."""
    folder, committed = resolve(path, root).resolve(), (root / "book" / "results").resolve()
    if folder == committed or folder.is_relative_to(committed):
        raise UlvmError(f"--results {path}: this is the book's committed records (book/results/); a reproduction "
                        "writes its own records elsewhere, e.g. runs/paper/results")
    return folder


def grid_files(request: PaperRun, root: Path) -> list[Path]:
    if request.grids:
        return [resolve(path, root) for path in request.grids]
    if request.scope not in SCOPES:
        raise UlvmError(f"--scope {request.scope!r}: choose from {', '.join(SCOPES)}")
    names = SCOPES[request.scope] + ((PH2_CV_GRID,) if request.ph2_cv else ())
    return [root / "book" / "grids" / f"{name}.yaml" for name in names]


def load_grids(request: PaperRun, root: Path) -> list:
    """The scope's grids with their datasets moved into the prepared folder (`PREPARED/<dataset name>`)."""
    from ..sweeps.grid import load_grid

    prepared = resolve(request.prepared, root)
    grids = []
    for path in grid_files(request, root):
        grid = load_grid(path)
        grids.append(replace(grid, data=prepared / grid.data.name,
                             test_on=tuple(prepared / other.name for other in grid.test_on)))
    return grids


def require_gpu(request: PaperRun, n_runs: int) -> str:
    """The device the runs train on: "cuda", or "cpu" where a test allowed it; else a clear refusal."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if request.allow_cpu:
        return "cpu"
    raise UlvmError(f"the paper profile trains {n_runs} runs of the paper's protocol and needs a CUDA GPU; this "
                    "machine has none (torch sees no CUDA device): on a CPU it would take days. Run "
                    "`ulvm reproduce` (the quick profile) here, or train on a GPU machine and run "
                    "`ulvm reproduce --profile paper --results DIR --only-book` here against its records")


def prepare_missing(grids: list, request: PaperRun, say) -> float:
    """Prepare every dataset the grids need that is not prepared yet; the seconds it took (0: none missing).
    All missing datasets are checked for a raw source before any is prepared."""
    from ..data import prepare
    from ..data.prepare import is_prepared_dataset

    needed = {path: None for grid in grids for path in (grid.data, *grid.test_on)}
    missing = [path for path in needed if not is_prepared_dataset(path)]
    problems = []
    for path in missing:
        kind, option = PREPARATIONS.get(path.name, (None, None))
        if kind is None:
            problems.append(f"{path}: not a prepared dataset (prepare it with `ulvm prepare`)")
        elif not request.raw.get(path.name):
            problems.append(f"{path}: not prepared yet; pass the raw folder with {option} RAW to prepare it")
    if problems:
        raise UlvmError("; ".join(problems))
    started = time.perf_counter()
    for path in missing:
        kind = PREPARATIONS[path.name][0]
        say(f"preparing {path} from {request.raw[path.name]} (ulvm prepare {kind}) ...")
        prepare(kind, request.raw[path.name], path)
    return time.perf_counter() - started if missing else 0.0


def run_settings(request: PaperRun, device: str) -> RunSettings:
    """How every run executes (never what it computes)."""
    return RunSettings(device=device, compile=request.compile, threads=request.threads,
                       deterministic=request.deterministic,
                       **({"eval_batch_size": request.eval_batch_size} if request.eval_batch_size is not None else {}))


_LOG_COMMAND = re.compile(r"^== (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (.*)$")


def training_ended(log: Path, since: float) -> float | None:
    """When a run's training ended in this call: the time of the first `ulvm test` line of its sweep log
    written at or after `since` (epoch seconds), None when there is none."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        match = _LOG_COMMAND.match(line)
        if match and " -m ulvm test " in f" {match.group(2)} ":
            when = time.mktime(time.strptime(match.group(1), "%Y-%m-%d %H:%M:%S"))
            if when >= int(since):
                return when
    return None


def run_grids(grids: list, request: PaperRun, device: str, runs: Path, results: Path, stream: TextIO) -> dict:
    """Every grid through the sweep, under the CUDA MPS daemon when runs share a GPU (started here when it can
    be and not running yet, and then stopped here); the seconds of training and of testing, each grid's job
    states, and whether MPS ran (or why not)."""
    from ..sweeps.mps import start_mps, stop_mps

    why_not = start_mps() if device == "cuda" and request.runs_per_gpu > 1 else "one run per GPU"
    if why_not and why_not != "one run per GPU":
        print(f"CUDA MPS not started here ({why_not}): runs sharing a GPU are time-sliced unless it already runs",
              file=stream, flush=True)
    try:
        outcome = _sweep_grids(grids, request, device, runs, results, stream)
    finally:
        if not why_not:
            stop_mps()
    return {**outcome, "mps": "started" if not why_not else why_not}


def _sweep_grids(grids: list, request: PaperRun, device: str, runs: Path, results: Path, stream: TextIO) -> dict:
    from ..sweeps.sweep import sweep

    seconds = {"train": 0.0, "test": 0.0}
    outcome: dict[str, dict] = {}
    for grid in grids:
        started, wall_start = time.perf_counter(), time.time()
        result = sweep(grid, runs / grid.name, results / grid.name, runs_per_gpu=request.runs_per_gpu,
                       settings=run_settings(request, device), mps_percentage=request.mps_percentage,
                       allow_dirty=request.allow_dirty, workers=request.workers, stream=stream)
        took = time.perf_counter() - started
        ran = [job for job in grid.jobs if result.status.get(job.name) != "skipped"]
        if ran:
            ends = [training_ended(runs / grid.name / f"{job.name}.log", wall_start) for job in ran]
            train = min(took, max([end - wall_start for end in ends if end is not None], default=0.0))
            seconds["train"] += train
            seconds["test"] += took - train
        outcome[grid.name] = {"jobs": len(grid.jobs), "status": dict(result.status), "failures": result.failures}
    return {"seconds": seconds, "grids": outcome,
            "did_work": any(s != "skipped" for g in outcome.values() for s in g["status"].values())}


def gpu_name(device: str) -> str:
    """The first visible GPU's name, from nvidia-smi: asking torch would open a CUDA context in this process,
    which holds GPU memory for as long as the runs train."""
    if device != "cuda":
        return "cpu"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    query = ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", *(["-i", visible] if visible else [])]
    try:
        names = subprocess.run(query, capture_output=True, text=True, timeout=30).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        names = []
    return names[0].strip() if names else "unknown GPU"


def record_path(results: Path, machine: str) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "_", machine.lower()).strip("_") or "unknown"
    return results / RECORD_DIR / f"reproduce_{slug}.json"


def latest_record(results: Path) -> Path | None:
    """The newest phase record under RESULTS/reproduce/ (the one `only_book` merges into), None if none."""
    records = sorted((results / RECORD_DIR).glob("reproduce_*.json"), key=lambda path: path.stat().st_mtime)
    return records[-1] if records else None


def merge_record(path: Path, update: dict, phases: dict[str, float]) -> dict:
    """Write `update` and the timed `phases` into the JSON record at `path` (kept phases: earlier calls')."""
    import json

    from .reproduce import utc_now

    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    record.update(update)
    record["phases_s"] = {name: round(seconds, 1) for name, seconds in
                          {**record.get("phases_s", {}), **phases}.items()}
    record["phases_s"] = {name: record["phases_s"][name] for name in PHASES if name in record["phases_s"]}
    record["total_s"] = round(sum(record["phases_s"].values()), 1)
    record["updated"] = utc_now()
    atomic_write_json(path, record)
    return record


def build_book(root: Path) -> None:
    """`jupyter-book build . -W --keep-going` in the project root (the Makefile's `make book`)."""
    beside = Path(sys.executable).with_name("jupyter-book")
    command = [str(beside) if beside.is_file() else "jupyter-book", "build", str(root), "-W", "--keep-going"]
    try:
        code = subprocess.call(command, cwd=root)
    except FileNotFoundError:
        raise UlvmError("jupyter-book is not installed here: pip install 'ulvm[book]', or build the book on "
                        "another machine with --only-book against the same --results") from None
    if code != 0:
        raise UlvmError(f"jupyter-book build failed (exit code {code}); its messages are above")


def notebooks_and_book(request: PaperRun, root: Path, results: Path, runs: Path) -> dict[str, float]:
    """Execute the notebooks against this build's records, then render the book; the seconds of each."""
    from .reproduce import reproduce

    prepared = resolve(request.prepared, root)
    started = time.perf_counter()
    reproduce("paper", root=root, DATA=str(prepared / "isic2017"), PH2=str(prepared / "ph2"), RUNS=str(runs),
              results_root=str(results))
    notebooks = time.perf_counter() - started
    started = time.perf_counter()
    build_book(root)
    return {"notebooks": notebooks, "book": time.perf_counter() - started}


def reproduce_paper(request: PaperRun, root: Path | None = None, stream: TextIO | None = None) -> dict:
    """Prepare, train and test through the sweep, record, then the notebooks and the book (see the module
    docstring); returns the phase record. Refused before anything runs: a results folder inside
    book/results, a dirty tree (unless `allow_dirty`), a machine without CUDA (unless `allow_cpu`)."""
    from ..version import code_version, require_clean
    from .reproduce import utc_now

    root = root or project_root()
    stream = stream or sys.stdout
    say = lambda text: print(text, file=stream, flush=True)
    results, runs = results_folder(request.results, root), resolve(request.runs, root)
    version = code_version()
    if request.only_book:                   # the notebooks read the prepared data too: prepare it here if missing
        prepared_here = prepare_missing(load_grids(request, root), request, say)
        path = latest_record(results) or record_path(results, "book_only")
        phases = notebooks_and_book(request, root, results, runs)
        return merge_record(path, {"book_code_version": version, "book_prepare_s": round(prepared_here, 1)}, phases)
    require_clean(version, request.allow_dirty, "ulvm reproduce --profile paper")
    grids = load_grids(request, root)
    device = require_gpu(request, sum(len(grid.jobs) for grid in grids))
    started = utc_now()
    prepare_s = prepare_missing(grids, request, say)
    outcome = run_grids(grids, request, device, runs, results, stream)
    phases = {**({"prepare": prepare_s} if prepare_s else {}), **(outcome["seconds"] if outcome["did_work"] else {})}
    machine = gpu_name(device)
    record = merge_record(record_path(results, machine), {
        "profile": "paper", "gpu": machine, "code_version": version, "started": started,
        "grids": {name: {key: grid[key] for key in ("jobs", "failures")} for name, grid in outcome["grids"].items()},
        "settings": {"scope": request.scope, "ph2_cv": request.ph2_cv, "runs_per_gpu": request.runs_per_gpu,
                     "mps_percentage": request.mps_percentage, "compile": request.compile,
                     "eval_batch_size": request.eval_batch_size, "deterministic": request.deterministic},
        "mps": outcome["mps"], "results": str(results), "runs": str(runs)}, phases)
    failed = [f"{grid}/{job}" for grid, entry in outcome["grids"].items() for job in entry["failures"]]
    if failed:
        raise UlvmError(f"{len(failed)} run(s) failed ({', '.join(failed)}; their logs are under {runs}); run the "
                        "same command again to resume them")
    say(f"records in {results}; phase record {record_path(results, machine)}")
    if request.book:
        record = merge_record(record_path(results, machine), {}, notebooks_and_book(request, root, results, runs))
    return record
