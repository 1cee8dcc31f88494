"""The book's notebooks: how they are committed, the papermill runner, and every notebook executed.

Fast: committed notebooks carry no outputs and exactly one `parameters` cell followed by a code cell;
the table of contents lists exactly the notebooks; `ulvm.report.reproduce` injects parameters, resumes, and on a
failing cell names the notebook and the cell and keeps the partial output (on tiny notebooks).
Slow: every notebook executed with the quick profile through `ulvm reproduce` (once per session).
"""
from __future__ import annotations

import json
import time

import nbformat
import pytest
import yaml
from book_session import REPO, executed_notebooks

from ulvm.report.reproduce import EXECUTION_RECORD, STATUS_PAGE, NotebookFailed, list_notebooks, reproduce

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_is_clean_with_one_parameters_cell(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: cell {index} has outputs"
    tagged = [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged 'parameters', want exactly one"
    code_cells = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"]
    assert tagged[0] == code_cells[0], f"{path.name}: the parameters cell must be the first code cell"
    assert code_cells[1] == tagged[0] + 1, f"{path.name}: derived values go in the cell right after it"
    assert notebook.cells[0].cell_type == "markdown" and notebook.cells[0].source.startswith("# "), \
        f"{path.name}: the first cell is the chapter title"


def test_table_of_contents_lists_every_executed_notebook():
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = [chapter["file"] for part in toc["parts"] for chapter in part["chapters"]]
    executed = [f.removeprefix("book/executed/") for f in files if f.startswith("book/executed/")]
    # besides the notebooks, book/executed/ holds the page `ulvm reproduce` writes (reproducibility.md)
    listed = sorted(name for name in executed if name != STATUS_PAGE.removesuffix(".md"))
    assert STATUS_PAGE.removesuffix(".md") in executed, "the reproducibility page is in the book"
    assert listed == [p.stem for p in NOTEBOOKS]
    assert [p.stem for p in list_notebooks(REPO)] == listed


def _tiny_project(tmp_path, cells: dict[str, list[str]]):
    """A project root (with `_toc.yml`) whose notebooks have a parameters cell and the given code cells."""
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\n")
    (tmp_path / "notebooks").mkdir()
    for stem, sources in cells.items():
        parameters = nbformat.v4.new_code_cell('PROFILE = "none"\nSEEDS = []')
        parameters.metadata["tags"] = ["parameters"]
        notebook = nbformat.v4.new_notebook(
            cells=[nbformat.v4.new_markdown_cell(f"# {stem}"), parameters]
            + [nbformat.v4.new_code_cell(source) for source in sources])
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(notebook, tmp_path / "notebooks" / f"{stem}.ipynb")
    return tmp_path


def test_runner_injects_parameters_and_resumes(tmp_path):
    root = _tiny_project(tmp_path, {"00_a": ["print(PROFILE, SEEDS)"]})
    [result] = reproduce("quick", root=root, out="executed")
    assert result.status == "ran"
    executed = json.loads((root / "executed" / "00_a.ipynb").read_text())
    # only the names the notebook declares are injected (no unknown-parameter noise)
    assert executed["metadata"]["papermill"]["parameters"] == {"PROFILE": "quick", "SEEDS": [42]}
    assert "quick [42]" in "".join(executed["cells"][-1]["outputs"][0]["text"])
    assert not list((root / "executed").glob(".*")), "no temporary file left behind"
    record = json.loads((root / "executed" / EXECUTION_RECORD).read_text())
    assert record["notebooks"]["00_a"]["status"] == "ran" and record["profile"] == "quick"
    assert record["environment"]["python"] and "torch" in record["environment"]["packages"]
    page = (root / "executed" / STATUS_PAGE).read_text()
    assert page.startswith("# Reproducibility") and "| 00_a | ran |" in page

    [again] = reproduce("quick", root=root, out="executed", resume=True)
    assert again.status == "skipped"
    [other_profile] = reproduce("paper", root=root, out="executed", resume=True)
    assert other_profile.status == "ran", "parameters changed: the copy is not up to date"
    time.sleep(0.01)
    (root / "notebooks" / "00_a.ipynb").touch()
    [edited] = reproduce("paper", root=root, out="executed", resume=True)
    assert edited.status == "ran", "source newer than its executed copy"


def test_failing_cell_names_notebook_and_cell_and_keeps_partial_output(tmp_path, capsys):
    root = _tiny_project(tmp_path, {"00_ok": ["x = 1"],
                                    "01_broken": ["print('before the error')", "1 / 0", "print('never')"],
                                    "02_after": ["x = 2"]})
    with pytest.raises(NotebookFailed) as error:
        reproduce("quick", root=root, out="executed")
    message = str(error.value)
    assert "notebooks/01_broken.ipynb" in message and "cell 4" in message
    assert "1 / 0" in message and "ZeroDivisionError" in message
    partial = nbformat.read(root / "executed" / "01_broken.ipynb", as_version=4)
    assert partial.metadata.papermill.exception is True
    outputs = [output for cell in partial.cells if cell.cell_type == "code" for output in cell.outputs]
    assert any("before the error" in output.get("text", "") for output in outputs)
    assert any(output.get("ename") == "ZeroDivisionError" for output in outputs)
    assert not (root / "executed" / "02_after.ipynb").exists(), "the run stops at the failing notebook"
    table = capsys.readouterr().out
    assert "01_broken" in table and "failed" in table and "total" in table
    with pytest.raises(NotebookFailed):  # a failed copy is never taken as up to date
        reproduce("quick", root=root, out="executed", only=["01"], resume=True)
    elsewhere = tmp_path.parent / f"{tmp_path.name}-out"    # --out outside the project: its full path is shown
    with pytest.raises(NotebookFailed, match=f"partial output kept in {elsewhere / '01_broken.ipynb'}"):
        reproduce("quick", root=root, out=elsewhere, only=["01"])


@pytest.mark.slow
def test_every_notebook_executes_with_the_quick_profile():
    results = executed_notebooks()
    assert [r.name for r in results] == [p.stem for p in NOTEBOOKS]
    assert all(r.status == "ran" for r in results)
    for path in NOTEBOOKS:
        executed = nbformat.read(REPO / "book" / "executed" / path.name, as_version=4)
        errors = [output for cell in executed.cells if cell.cell_type == "code" for output in cell.outputs
                  if output.output_type == "error"]
        assert not errors, f"{path.name}: {errors[0].ename}: {errors[0].evalue}"


def test_run_folders_are_distinct_per_config_and_stable():
    from ulvm.config import Config
    from ulvm.report.book import run_folder

    data = REPO / "data" / "prepared" / "synthetic"
    quick = Config.profile("quick")
    assert run_folder("runs/x", data, quick) == run_folder("runs/x", data, Config.profile("quick"))
    names = {run_folder("runs/x", data, quick.replace(**change)).name
             for change in ({}, {"parallel": 1}, {"bridge": False}, {"seed": 7}, {"epochs": quick.epochs + 1})}
    assert len(names) == 5
    assert run_folder("runs/x", data, quick.replace(bridge=False)).name.startswith("synthetic_x4_nobridge_seed42_")


def test_dataset_path_names_the_folder_that_is_not_a_dataset(tmp_path):
    from ulvm.errors import UlvmError
    from ulvm.report.book import dataset_path

    (tmp_path / "_toc.yml").write_text("")
    with pytest.raises(UlvmError, match="nothing_here.*not a prepared dataset"):
        dataset_path("nothing_here", root=tmp_path)
