"""Batch reproduction: execute the book's notebooks in order with papermill, then Jupyter Book renders them.

`ulvm reproduce --profile quick` (the default of `make reproduce`) runs every notebook of `notebooks/`
on the CPU on the synthetic embedded dataset; `--profile paper` first trains the paper's runs through the
sweep engine on a GPU (`ulvm.report.reproduce_paper`), then runs the notebooks here against their records.
The profile only decides the *parameters* injected into each notebook's cell tagged `parameters`
(`NOTEBOOK_PARAMETERS`: `PROFILE`, `DATA`, `DEVICE`, `RUNS`, `SEEDS`, `results_root`, ...); what a
profile means for training (epochs, image counts) lives in `ulvm.config.Config.profile`.

Executed copies go to `book/executed/` (a build product, git-ignored), which `_toc.yml` points at;
Jupyter Book never executes anything itself (`execute_notebooks: "off"` in `_config.yml`). A notebook
is executed into a hidden temporary file, then published with an atomic write, so the book never sees
half a notebook. If a cell fails, the partial notebook (with the traceback) is still published, the
run stops and the error names the notebook and the cell. `resume=True` skips notebooks whose executed
copy succeeded, is newer than its source and ran with the same parameters.

After every call, `book/executed/execution.json` records each notebook's status, seconds, end time and
profile (merged with earlier calls), and `book/executed/reproducibility.md`, the book's reproducibility
page, is rewritten from it: the execution table, this machine's environment, and how each recorded
result set under `book/results/` was produced (read from the records). The helpers notebooks use to find
things (`project_root`, `resolve`, `dataset_path`, `run_folder`) live in `ulvm.report.book`.

How to run the book is explained in `book/how_to_run.md`.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import UlvmError
from ..io import atomic_write_bytes
from ..version import utc_now
from .book import project_root, resolve

# The parameters each book profile injects into the notebooks (not `ulvm.config.PROFILES`, which are
# training protocols). Paths are relative to the project root (the folder holding `_toc.yml`); a notebook
# receives only the names its `parameters` cell declares.
NOTEBOOK_PARAMETERS: dict[str, dict] = {
    "quick": {
        "PROFILE": "quick",
        "DATA": "synthetic",  # `ulvm.data.default_dataset()`: runs on a fresh machine, no download
        "PH2": None,  # a prepared or flat PH2 folder, only when asked (`--ph2`)
        "DEVICE": "cpu",
        "SEEDS": [42],
        "RUNS": "runs/quick",
        "FIGURES": "figures/generated",
        "RESULTS": "book/results",
        "results_root": None,  # the Results chapters show the book's records only (their own numbers are synthetic)
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
        "results_root": None,  # `ulvm reproduce --profile paper` passes this build's records (its --results)
    },
}


NOTEBOOK_DIR = "notebooks"
EXECUTED_DIR = "book/executed"
EXECUTION_RECORD = "execution.json"      # in EXECUTED_DIR: what ran, when, how long (the status page reads it)
STATUS_PAGE = "reproducibility.md"       # in EXECUTED_DIR: the book's reproducibility page

class NotebookFailed(UlvmError):
    """A cell of a notebook raised: the message names the notebook, the cell and the error."""

@dataclass
class NotebookResult:
    name: str
    status: str  # "ran", "skipped" (resume: up to date) or "failed"
    seconds: float
    finished: str = ""  # UTC time the notebook ended (ISO 8601)

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
    if profile not in NOTEBOOK_PARAMETERS:
        raise UlvmError(f"unknown profile {profile!r} (choose from {', '.join(NOTEBOOK_PARAMETERS)})")
    parameters = dict(NOTEBOOK_PARAMETERS[profile])
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

def shown(path: Path, root: Path) -> str:
    """A path as a message shows it: relative to the project when inside it (`--out` may be elsewhere)."""
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


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
            kernel_name="python3", progress_bar=False, log_output=False,
            # the kernel's own log (a "running over TCP without encryption" warning about local sockets
            # only this process uses, a shutdown interrupt) is noise; cell errors reach us through papermill
            extra_arguments=["--IPKernelApp.log_level=CRITICAL"])
    except PapermillExecutionError as error:
        publish(running, executed)
        first_line = next((line for line in error.source.splitlines() if line.strip()), "")
        raise NotebookFailed(
            f"{shown(source, root)}: cell {error.cell_index} (In [{error.exec_count}], "
            f"starts {first_line.strip()!r}) raised {error.ename}: {error.evalue} "
            f"-- partial output kept in {shown(executed, root)}") from None
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
                results.append(NotebookResult(source.stem, "failed", time.perf_counter() - start, utc_now()))
                raise
            results.append(NotebookResult(source.stem, "ran", time.perf_counter() - start, utc_now()))
    finally:
        print(timing_table(results, profile))
        if results:
            record = record_execution(out / EXECUTION_RECORD, results, profile, parameters)
            write_status_page(out / STATUS_PAGE, record, root)
    return results

def timing_table(results: list[NotebookResult], profile: str) -> str:
    """A plain-text table: notebook, status, seconds, and the total."""
    width = max([len(r.name) for r in results] + [len("notebook")])
    lines = [f"ulvm reproduce --profile {profile}", f"{'notebook':<{width}}  {'status':<8}  {'seconds':>8}"]
    lines += [f"{r.name:<{width}}  {r.status:<8}  {r.seconds:8.1f}" for r in results]
    lines.append(f"{'total':<{width}}  {'':<8}  {sum(r.seconds for r in results):8.1f}")
    return "\n".join(lines)


# ---- the reproducibility page: what ran, where, and how the recorded results were made ----------------


BOOK_PACKAGES = ("ulvm", "torch", "numpy", "scipy", "pandas", "matplotlib", "pillow", "papermill", "jupyter-book")


def environment() -> dict:
    """Python, the key packages' versions, the CPU and the GPU(s) of this machine, from `provenance`."""
    from ..runtime import gpu_names, provenance

    record = provenance("cpu", packages=BOOK_PACKAGES)
    machine = record["machine"]
    return {"python": machine["python"], "platform": machine["platform"], "cpu": machine["cpu"],
            "cpu_count": machine["cpu_cores"], "gpu": ", ".join(gpu_names()) or "none",
            "packages": record["packages"]}


def record_execution(path: Path, results: list[NotebookResult], profile: str, parameters: dict) -> dict:
    """Merge this call's notebooks into the JSON record at `path` (one entry per notebook, the latest run
    kept; skipped notebooks keep their earlier entry) and return the record."""
    from ..io import json_dumps
    from ..version import code_version

    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    notebooks = record.get("notebooks", {})
    for result in results:
        if result.status != "skipped" or result.name not in notebooks:
            notebooks[result.name] = {"status": result.status, "seconds": round(result.seconds, 1),
                                      "finished": result.finished, "profile": profile}
    record = {"updated": utc_now(), "profile": profile, "parameters": parameters,
              "code_version": code_version(), "environment": environment(),
              "notebooks": dict(sorted(notebooks.items()))}
    atomic_write_bytes(path, json_dumps(record).encode("utf-8"))
    return record




def recorded_sets_table(root: Path) -> list[dict]:
    """One row per recorded result set under `book/results/`: runs, where and with which code they ran,
    the command that made them and the training time, read from the records themselves."""
    from .book import RECORDED_SETS

    rows = []
    for (trained_on, tested_on), folder in RECORDED_SETS.items():
        files = sorted((root / "book" / "results" / folder).glob("*.json"))
        if not files:
            continue
        records = [json.loads(f.read_text(encoding="utf-8")) for f in files]
        machines = {f"{r.get('machine', {}).get('gpu') or r.get('machine', {}).get('device', '?')}, "
                    f"torch {r.get('machine', {}).get('torch', '?')}" for r in records}
        train_s = [r["train_time_s"] for r in records if r.get("train_time_s")]
        grid = root / "book" / "grids" / f"{folder.split('/')[0]}.yaml"     # the grid that reproduces the set
        rows.append({
            "result set": f"`book/results/{folder}/`", "trained on": trained_on, "tested on": tested_on,
            "runs": len(records), "test images": records[0].get("n_images"),
            "machine": "; ".join(sorted(machines)),
            "code": ", ".join(sorted({str(r.get("code_version", "?")) for r in records})),
            "training time per run (min)": f"{min(train_s) / 60:.0f}-{max(train_s) / 60:.0f}" if train_s else "-",
            "reproduced by": (f"`ulvm sweep {grid.relative_to(root).as_posix()}`" if grid.is_file() else "-")
                             + (f"; concurrent runs: {records[0]['concurrent_runs']}"
                                if "concurrent_runs" in records[0] else ""),
        })
    return rows


def markdown_table(rows: list[dict]) -> str:
    if not rows:
        return "*(none)*"
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(row.get(k, "")) for k in keys) + " |" for row in rows]
    return "\n".join(lines)


def write_status_page(path: Path, record: dict, root: Path) -> Path:
    """The book's reproducibility page (markdown, a build product beside the executed notebooks)."""
    env = record["environment"]
    executed = [{"notebook": name, "status": entry["status"], "seconds": f"{entry['seconds']:.1f}",
                 "finished (UTC)": entry["finished"] or "-", "profile": entry["profile"]}
                for name, entry in record["notebooks"].items()]
    total = sum(entry["seconds"] for entry in record["notebooks"].values())
    packages = [{"package": name, "version": version} for name, version in env["packages"].items()]
    text = f"""# Reproducibility

This page is written by `ulvm reproduce` (run by `make reproduce`) each time it executes notebooks; its
data is `book/executed/{EXECUTION_RECORD}`. Nothing here is typed by hand.

## Execution of this build

Profile **{record['profile']}**, code version `{record['code_version']}`, last updated {record['updated']}.
Every notebook ran with papermill, in order, with the parameters below; the total is {total:.0f} s.

{markdown_table(executed)}

Parameters injected into the notebooks' `parameters` cells:

{markdown_table([{"parameter": k, "value": f"`{v!r}`"} for k, v in record['parameters'].items()])}

## Environment

Python {env['python']} on {env['platform']}; CPU {env['cpu']} ({env['cpu_count']} logical cores); GPU: {env['gpu']}.

{markdown_table(packages)}

## Recorded result sets

The real-data results the Results part reads were trained on GPU machines and committed as JSON records
under `book/results/` (one file per run: config, pooled and per-image metrics, bootstrap CI, training
history, machine, code version). This table is read from those records.

{markdown_table(recorded_sets_table(root))}

## Citing

The project's citation metadata is in `CITATION.cff` at the top of the repository; please cite the
original paper too (see the bibliography).
"""
    return atomic_write_bytes(path, text.encode("utf-8"))
