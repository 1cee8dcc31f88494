"""What the book's notebooks call to find things: the project root, their data, their run folders, the
result sets recorded on other machines, and "reuse a finished run or train it" in one line.

Paths in notebook parameters are relative to the project root (the folder holding `_toc.yml`), so a
notebook runs the same from JupyterLab (working directory `notebooks/`) and from papermill.
`source_for_page(obj)` is the source of a function as "this is the code" cells print it, fitted to the
page's text column.
`train_or_reuse(config, data, run_dir, settings)` returns the `TrainResult` of the run in `run_dir` when it
finished with exactly `config` on `data` (re-executing the book costs nothing), else trains (or resumes) it:
the quick profile's demo. Paper-scale runs come from the sweep only (`sweep_run`); `book_run` picks by profile.

Importing this module loads no torch: the training and checkpoint rooms are imported where they are used.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UlvmError

if TYPE_CHECKING:
    import pandas as pd

    from ..config import Config, RunSettings
    from ..engine.runs import TrainResult

# The result sets recorded on GPU machines and committed under `book/results/` (RESULTS parameter):
# `<trained on>/test_<tested on>/<run>.json`, one `ulvm.engine.evaluate.evaluate` result per run.
RECORDED_SETS = {
    ("isic2017", "isic2017"): "isic2017/test_isic2017",   # the paper's protocol, 14 runs
    ("isic2017", "ph2"): "isic2017/test_ph2",             # the same 14 models on all 200 PH2 images
    ("ph2_cv", "ph2"): "ph2_cv/test_ph2",                 # PH2 5-fold cross-validation, 30 runs
    ("ph2_fold0", "ph2"): "ph2_transfer/test_ph2",        # one x4 model trained on PH2 fold 0
    ("ph2_fold0", "isic2017"): "ph2_transfer/test_isic2017",
    ("baselines", "isic2017"): "baselines/test_isic2017",   # the comparison's models on ISIC2017, 3 seeds
    ("baselines", "ph2"): "baselines/test_ph2",
}


def project_root(start: str | os.PathLike | None = None) -> Path:
    """The folder holding `_toc.yml`: searched upward from `start` (default: the working directory),
    else the checkout this package was imported from."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").is_file():
            return folder
    package_checkout = Path(__file__).resolve().parents[2]
    if (package_checkout / "_toc.yml").is_file():
        return package_checkout
    raise UlvmError(f"no _toc.yml found above {here}: run from inside the project checkout")


def resolve(path: str | os.PathLike | None, root: Path | None = None) -> Path | None:
    """A notebook parameter path made absolute against the project root (None stays None)."""
    if path is None:
        return None
    path = Path(path).expanduser()
    return path if path.is_absolute() else (root or project_root()) / path


def dataset_path(data: str | os.PathLike, root: Path | None = None, all_test: bool = False) -> Path:
    """The prepared dataset a notebook's `DATA` (or `PH2`) parameter names.

    "synthetic" is the embedded default (`ulvm.data.default_dataset`, generated under `data/` on first
    use); a prepared folder (with `manifest.json`) is used as it is; a raw folder in the custom layout
    (`images/` + `masks/`, e.g. `../shared/realdata/PH2`) is prepared once into `data/prepared/<name>`,
    with every image in the test split when `all_test` (external validation, as the paper uses PH2).
    """
    root = root or project_root()
    if str(data) == "synthetic":
        from ..data import default_dataset

        return default_dataset(root / "data")
    path = resolve(data, root)
    if (path / "manifest.json").is_file():
        return path
    if (path / "images").is_dir() and (path / "masks").is_dir():
        from ..data import prepare

        prepared = root / "data" / "prepared" / (path.name.lower() + ("_test" if all_test else ""))
        if not (prepared / "manifest.json").is_file():
            n = sum(1 for f in (path / "images").iterdir() if not f.name.startswith("."))
            prepare("folder", path, prepared, counts={"test": n} if all_test else None,
                    overwrite=prepared.exists())
        return prepared
    raise UlvmError(f"{path}: not a prepared dataset (no manifest.json) nor an images/ + masks/ folder; "
                    f"prepare one with `ulvm prepare isic2017|isic2018|ph2|folder --src RAW --out {data}`")


def run_folder(runs: str | os.PathLike, data_dir: Path, config: Config) -> Path:
    """Where the book keeps the run of `config` on `data_dir`: `RUNS/<data>_x<parallel>[_nobridge]_seed<seed>_<digest>`.

    The digest (8 hex digits of the config's SHA-256) gives every distinct config its own folder, so a
    changed profile trains a new run instead of colliding with an old one, while re-executing the book
    with the same config reuses (or resumes) the run already there.
    """
    import hashlib

    from ..io import json_dumps

    digest = hashlib.sha256(json_dumps(config.to_dict()).encode("utf-8")).hexdigest()[:8]
    bridge = "" if config.bridge else "_nobridge"
    return resolve(runs) / f"{data_dir.name}_x{config.parallel}{bridge}_seed{config.seed}_{digest}"


def finished_run(config: Config, data, run_dir: str | Path) -> TrainResult | None:
    """The result of the run in `run_dir` if it finished with exactly `config` on `data`, else None."""
    from ..data.tensors import load_data
    from ..engine.runs import RunFolder, differences, is_finished, run_result

    folder = RunFolder(run_dir)
    checkpoint = folder.checkpoint()
    if (checkpoint is None or differences(checkpoint, config, load_data(data).content_hash, folder.last_path)
            or not is_finished(checkpoint)):
        return None
    return run_result(Path(run_dir), checkpoint, 0.0, checkpoint["epoch"], "")


def train_or_reuse(config: Config, data, run_dir: str | Path, settings: RunSettings | None = None) -> TrainResult:
    """The finished run in `run_dir`, or `fit` it there (resuming an unfinished one), without progress bars.
    A paper-scale run is never trained here: in the paper profile the sweep's run is returned instead
    (`sweep_run`, with RUNS the parent of `run_dir`, as `run_folder` names it)."""
    from ..engine.train import fit

    found = finished_run(config, data, run_dir)
    if found is None and config.profile_name == "paper":
        return sweep_run(config, data, Path(run_dir).parent)
    return found or fit(config, data, run_dir, settings=settings, progress=False)


def sweep_run(config: Config, data, runs: str | os.PathLike, grid: str = "isic2017") -> TrainResult:
    """The finished run the sweep trained for `config` on `data`: `RUNS/<grid>/<job name>`, e.g.
    `runs/paper/isic2017/p4_b1_s42` (`ulvm reproduce --profile paper` or `ulvm sweep`). Never trains: the
    paper-scale runs are made one way only, all of a grid together."""
    from ..sweeps.experiments import Job

    job = Job(config)
    run_dir = resolve(runs) / grid / job.name
    found = finished_run(config, data, run_dir)
    if found is None:
        raise UlvmError(f"{run_dir}: no run of this chapter's config finished there; train the grid first: "
                        f"`ulvm reproduce --profile paper --runs {runs} --no-book` (or `ulvm sweep "
                        f"book/grids/{grid}.yaml --runs {run_dir.parent}`)")
    return found


def book_run(config: Config, data, runs: str | os.PathLike, settings: RunSettings | None = None) -> TrainResult:
    """The run a chapter shows: in the paper profile the sweep's (`sweep_run`); in the quick profile's demo the
    run in `run_folder(runs, data, config)`, reused or trained there (`train_or_reuse`)."""
    if config.profile_name == "paper":
        return sweep_run(config, data, runs)
    return train_or_reuse(config, data, run_folder(runs, Path(data), config), settings)


def recorded_folder(trained_on: str, tested_on: str, results: str | os.PathLike = "book/results") -> Path:
    """The folder of a recorded result set (see `RECORDED_SETS`), e.g. `("isic2017", "ph2")`."""
    if (trained_on, tested_on) not in RECORDED_SETS:
        known = ", ".join(f"{a}->{b}" for a, b in RECORDED_SETS)
        raise UlvmError(f"no recorded set trained on {trained_on!r}, tested on {tested_on!r} (have: {known})")
    return resolve(results) / RECORDED_SETS[(trained_on, tested_on)]


def recorded_runs(trained_on: str, tested_on: str, results: str | os.PathLike = "book/results") -> pd.DataFrame:
    """A recorded result set as `ulvm.report.results.runs_table` rows (empty when it is not in this
    checkout). `results` may also be a fresh build's results folder in the same layout (`results_root`)."""
    from .results import load_recorded_runs

    return load_recorded_runs(recorded_folder(trained_on, tested_on, results))


def source_for_page(obj, width: int = 88) -> str:
    """The source of `obj` as the book prints it: dedented, every trailing comment that would push its line
    past `width` characters moved onto its own line above, and long comment lines wrapped (the code itself
    is unchanged; a code line longer than `width` stays as it is)."""
    import inspect
    import io
    import textwrap
    import tokenize

    lines = []
    for line in textwrap.dedent(inspect.getsource(obj)).splitlines():
        comments = []
        if len(line) > width and "#" in line:
            try:
                tokens = tokenize.generate_tokens(io.StringIO(line + "\n").readline)
                comments = [t for t in tokens if t.type == tokenize.COMMENT]
            except (tokenize.TokenError, SyntaxError, IndentationError):
                comments = []     # a line inside a bracket or string: leave it as it is
        code = line[:comments[-1].start[1]].rstrip() if comments else ""
        indent = line[:len(line) - len(line.lstrip())]
        if code.strip():
            comment, line = comments[-1].string, code
        elif line.lstrip().startswith("#") and len(line) > width:
            comment, line = line.strip(), None
        else:
            comment = None
        if comment:
            text = comment.lstrip("#").strip()
            lines += textwrap.wrap(text, width, initial_indent=indent + "# ", subsequent_indent=indent + "# ")
        if line is not None:
            lines.append(line)
    return "\n".join(lines)
