"""Batch reproduction: execute the book's notebooks in order with papermill, then Jupyter Book renders them.

`ulvm reproduce --profile quick` (the default of `make reproduce`) runs every notebook of `notebooks/`
on the CPU on the synthetic embedded dataset; `--profile paper` runs the paper's full protocol on
prepared real data (a GPU is advised). The profile only decides the *parameters* injected into each
notebook's cell tagged `parameters` (`PROFILE`, `DATA`, `DEVICE`, `RUNS`, `SEEDS`, ...); what a
profile means for training (epochs, image counts) lives in `ulvm.config.Config.profile`.

Executed copies go to `book/executed/` (a build product, git-ignored), which `_toc.yml` points at;
Jupyter Book never executes anything itself (`execute_notebooks: "off"` in `_config.yml`). A notebook
is executed into a hidden temporary file, then published with an atomic write, so the book never sees
half a notebook. If a cell fails, the partial notebook (with the traceback) is still published, the
run stops and the error names the notebook and the cell. `resume=True` skips notebooks whose executed
copy succeeded, is newer than its source and ran with the same parameters.

How to run the book is explained in `book/how_to_run.md`.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import UlvmError
from .io import atomic_write_bytes

# The parameters each profile injects. Paths are relative to the project root (the folder holding
# `_toc.yml`); a notebook receives only the names its `parameters` cell declares.
PROFILES: dict[str, dict] = {
    "quick": {
        "PROFILE": "quick",
        "DATA": "synthetic",  # `ulvm.data.default_dataset()`: runs on a fresh machine, no download
        "PH2": None,  # a prepared or flat PH2 folder, only when asked (`--ph2`)
        "DEVICE": "cpu",
        "SEEDS": [42],
        "RUNS": "runs/quick",
        "FIGURES": "figures/generated",
        "RESULTS": "book/results",
    },
    "paper": {
        "PROFILE": "paper",
        "DATA": "data/prepared/isic2017",  # `ulvm download isic2017 && ulvm prepare isic2017 ...`
        "PH2": None,
        "DEVICE": "auto",
        "SEEDS": [42, 43, 44],
        "RUNS": "runs/paper",
        "FIGURES": "figures/generated",
        "RESULTS": "book/results",
    },
}

NOTEBOOK_DIR = "notebooks"
EXECUTED_DIR = "book/executed"

class NotebookFailed(UlvmError):
    """A cell of a notebook raised: the message names the notebook, the cell and the error."""

@dataclass
class NotebookResult:
    name: str
    status: str  # "ran", "skipped" (resume: up to date) or "failed"
    seconds: float

def project_root(start: str | os.PathLike | None = None) -> Path:
    """The folder holding `_toc.yml`: searched upward from `start` (default: the working directory),
    else the checkout this package was imported from. Notebooks resolve their paths against it, so they
    run the same from JupyterLab (working directory `notebooks/`) and from papermill."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").is_file():
            return folder
    package_checkout = Path(__file__).resolve().parents[1]
    if (package_checkout / "_toc.yml").is_file():
        return package_checkout
    raise UlvmError(f"no _toc.yml found above {here}: run from inside the project checkout")

def resolve(path: str | os.PathLike | None, root: Path | None = None) -> Path | None:
    """A notebook parameter path made absolute against the project root (None stays None)."""
    if path is None:
        return None
    path = Path(path).expanduser()
    return path if path.is_absolute() else (root or project_root()) / path

def list_notebooks(root: Path, only: list[str] | None = None) -> list[Path]:
    """The book's notebooks in their two-digit order; `only` selects by prefix ("03") or full stem."""
    notebooks = sorted((root / NOTEBOOK_DIR).glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise UlvmError(f"no notebooks found in {root / NOTEBOOK_DIR}")
    if not only:
        return notebooks
    chosen = [nb for nb in notebooks if any(nb.stem == key or nb.stem.startswith(key + "_") for key in only)]
    unknown = [key for key in only if not any(nb.stem == key or nb.stem.startswith(key + "_") for nb in chosen)]
    if unknown:
        names = ", ".join(nb.stem for nb in notebooks)
        raise UlvmError(f"--only {','.join(unknown)}: no such notebook (have: {names})")
    return chosen

def profile_parameters(profile: str, **overrides) -> dict:
    """The parameters of a named profile, with `overrides` (None values are ignored) applied."""
    if profile not in PROFILES:
        raise UlvmError(f"unknown profile {profile!r} (choose from {', '.join(PROFILES)})")
    parameters = dict(PROFILES[profile])
    parameters.update({key: value for key, value in overrides.items() if value is not None})
    return parameters

def declared_parameters(notebook: Path) -> set[str]:
    """Names assigned in the notebook's cell tagged `parameters` (papermill's own parser)."""
    import papermill

    return set(papermill.inspect_notebook(str(notebook)))

def is_up_to_date(source: Path, executed: Path, parameters: dict) -> bool:
    """True when `executed` succeeded, is newer than `source` and ran with exactly `parameters`."""
    if not executed.is_file() or executed.stat().st_mtime < source.stat().st_mtime:
        return False
    try:
        metadata = json.loads(executed.read_text(encoding="utf-8"))["metadata"]["papermill"]
    except (ValueError, KeyError):
        return False
    return not metadata.get("exception") and metadata.get("parameters") == parameters

def execute_notebook(source: Path, executed: Path, parameters: dict, root: Path) -> None:
    """Run one notebook with papermill in the project root; publish the executed copy atomically.

    On a failing cell the partial notebook (outputs so far + the traceback) is published all the same,
    and `NotebookFailed` names the notebook and the cell.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    running = executed.with_name(f".{executed.stem}.running.ipynb")  # papermill saves after every cell
    running.parent.mkdir(parents=True, exist_ok=True)
    try:
        papermill.execute_notebook(
            str(source), str(running), parameters=parameters, cwd=str(root),
            kernel_name="python3", progress_bar=False, log_output=False)
    except PapermillExecutionError as error:
        publish(running, executed)
        first_line = next((line for line in error.source.splitlines() if line.strip()), "")
        raise NotebookFailed(
            f"{source.relative_to(root)}: cell {error.cell_index} (In [{error.exec_count}], "
            f"starts {first_line.strip()!r}) raised {error.ename}: {error.evalue} "
            f"-- partial output kept in {executed.relative_to(root)}") from None
    publish(running, executed)

def publish(running: Path, executed: Path) -> None:
    """Move papermill's copy to its final name atomically. In the rendered book the notebook's own
    `parameters` cell is hidden (tag `remove-cell`): the cell papermill injected after it shows the
    values the notebook actually ran with."""
    import nbformat

    notebook = nbformat.read(running, as_version=4)
    if any("injected-parameters" in cell.metadata.get("tags", []) for cell in notebook.cells):
        for cell in notebook.cells:
            tags = cell.metadata.get("tags", [])
            if "parameters" in tags and "remove-cell" not in tags:
                cell.metadata["tags"] = [*tags, "remove-cell"]
    atomic_write_bytes(executed, nbformat.writes(notebook).encode("utf-8"))
    running.unlink()

def reproduce(profile: str = "quick", only: list[str] | None = None, resume: bool = False,
              out: str | os.PathLike = EXECUTED_DIR, root: Path | None = None,
              **overrides) -> list[NotebookResult]:
    """Execute the book's notebooks in order; return one `NotebookResult` per notebook.

    `overrides` replace profile parameters (e.g. `DATA="data/prepared/ph2"`, `PH2=...`, `DEVICE="cuda"`).
    Stops at the first failing notebook (raises `NotebookFailed`); the timing table of what ran before is
    printed either way.
    """
    root = root or project_root()
    logging.getLogger("papermill").setLevel(logging.WARNING)  # one line per notebook is enough
    parameters = profile_parameters(profile, **overrides)
    out = resolve(out, root)
    results: list[NotebookResult] = []
    try:
        for source in list_notebooks(root, only):
            executed = out / source.name
            wanted = {key: value for key, value in parameters.items() if key in declared_parameters(source)}
            if resume and is_up_to_date(source, executed, wanted):
                results.append(NotebookResult(source.stem, "skipped", 0.0))
                continue
            print(f"executing {source.relative_to(root)} ...", flush=True)
            start = time.perf_counter()
            try:
                execute_notebook(source, executed, wanted, root)
            except NotebookFailed:
                results.append(NotebookResult(source.stem, "failed", time.perf_counter() - start))
                raise
            results.append(NotebookResult(source.stem, "ran", time.perf_counter() - start))
    finally:
        print(timing_table(results, profile))
    return results

def timing_table(results: list[NotebookResult], profile: str) -> str:
    """A plain-text table: notebook, status, seconds, and the total."""
    width = max([len(r.name) for r in results] + [len("notebook")])
    lines = [f"ulvm reproduce --profile {profile}", f"{'notebook':<{width}}  {'status':<8}  {'seconds':>8}"]
    lines += [f"{r.name:<{width}}  {r.status:<8}  {r.seconds:8.1f}" for r in results]
    lines.append(f"{'total':<{width}}  {'':<8}  {sum(r.seconds for r in results):8.1f}")
    return "\n".join(lines)


# ---- what the notebooks call to find their data --------------------------------


def dataset_path(data: str | os.PathLike, root: Path | None = None, all_test: bool = False) -> Path:
    """The prepared dataset a notebook's `DATA` (or `PH2`) parameter names.

    "synthetic" is the embedded default (`ulvm.data.default_dataset`, generated under `data/` on first
    use); a prepared folder (with `manifest.json`) is used as it is; a raw folder in the custom layout
    (`images/` + `masks/`, e.g. `../shared/realdata/PH2`) is prepared once into `data/prepared/<name>`,
    with every image in the test split when `all_test` (external validation, as the paper uses PH2).
    """
    root = root or project_root()
    if str(data) == "synthetic":
        from .data import default_dataset

        return default_dataset(root / "data")
    path = resolve(data, root)
    if (path / "manifest.json").is_file():
        return path
    if (path / "images").is_dir() and (path / "masks").is_dir():
        from .data import prepare

        prepared = root / "data" / "prepared" / (path.name.lower() + ("_test" if all_test else ""))
        if not (prepared / "manifest.json").is_file():
            n = sum(1 for f in (path / "images").iterdir() if not f.name.startswith("."))
            prepare("folder", path, prepared, counts={"test": n} if all_test else None,
                    overwrite=prepared.exists())
        return prepared
    raise UlvmError(f"{path}: not a prepared dataset (no manifest.json) nor an images/ + masks/ folder; "
                    f"prepare one with `ulvm prepare isic2017|isic2018|ph2|folder --src RAW --out {data}`")


def run_folder(runs: str | os.PathLike, data_dir: Path, config) -> Path:
    """Where the book keeps the run of `config` on `data_dir`: `RUNS/<data>_x<parallel>[_nobridge]_seed<seed>_<digest>`.

    The digest (8 hex digits of the config's SHA-256) gives every distinct config its own folder, so a
    changed profile trains a new run instead of colliding with an old one, while re-executing the book
    with the same config reuses (or resumes) the run already there.
    """
    import hashlib

    from .io import json_dumps

    digest = hashlib.sha256(json_dumps(config.to_dict()).encode("utf-8")).hexdigest()[:8]
    bridge = "" if config.bridge else "_nobridge"
    return resolve(runs) / f"{data_dir.name}_x{config.parallel}{bridge}_seed{config.seed}_{digest}"
