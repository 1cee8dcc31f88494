"""`ulvm reproduce --profile paper`: a tiny grid through the same path as the paper's (prepare, the sweep engine,
records in --results, the phase record), trained on the CPU where a hidden option allows it."""
import json
import os
import shutil
import time
from pathlib import Path

import pytest
import yaml

from helpers import write_tiny_prepared
from ulvm.cli import main
from ulvm.report.reproduce_paper import training_ended

REPO = Path(__file__).resolve().parents[1]
TINY = {"input_size": 32, "batch_size": 4, "max_images": None, "t_max": 1, "epochs": 1}


@pytest.fixture
def tiny_paper(tmp_path, monkeypatch):
    """A prepared folder with a training set and an 'external' one, a 2-run grid on them, and the argv that
    runs it on the CPU without the notebooks."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data = write_tiny_prepared(tmp_path / "made")
    prepared = tmp_path / "prepared"
    shutil.copytree(data, prepared / "tinyset")
    shutil.copytree(data, prepared / "tinyext")
    grid = tmp_path / "tiny.yaml"
    grid.write_text(yaml.safe_dump({"name": "tiny", "profile": "quick", "data": "data/prepared/tinyset",
                                    "test_on": ["data/prepared/tinyext"], "seed": [42, 43], "set": TINY}))
    argv = ["reproduce", "--profile", "paper", "--grid", str(grid), "--prepared", str(prepared),
            "--runs", str(tmp_path / "runs"), "--allow-cpu", "--workers", "2", "--threads", "1",
            "--allow-dirty", "--no-book"]
    return argv, tmp_path


def test_a_tiny_grid_is_trained_recorded_timed_and_skipped_when_run_again(tiny_paper, capsys):
    pytest.importorskip("distributed")
    argv, tmp = tiny_paper
    results = tmp / "results"
    assert main([*argv, "--results", str(results)]) == 0
    for run in ("p4_b1_s42", "p4_b1_s43"):
        for test_set in ("tinyset", "tinyext"):
            record = json.loads((results / "tiny" / f"test_{test_set}" / f"{run}.json").read_text())
            assert len(record["history"]["val_dsc"]) == 1 and record["allow_dirty"] is True
    phases = json.loads((results / "reproduce" / "reproduce_cpu.json").read_text())
    assert phases["gpu"] == "cpu" and phases["code_version"] and phases["profile"] == "paper"
    assert set(phases["phases_s"]) == {"train", "test"} and phases["phases_s"]["train"] > 0
    assert phases["total_s"] == pytest.approx(sum(phases["phases_s"].values()), abs=0.2)
    assert phases["grids"]["tiny"] == {"jobs": 2, "failures": {}}
    assert "tiny: all 2 jobs done" in capsys.readouterr().out

    started = time.perf_counter()
    assert main([*argv, "--results", str(results)]) == 0                  # resumes: nothing left to run
    assert time.perf_counter() - started < 10
    assert "tiny: all 2 jobs done (2 already recorded)" in capsys.readouterr().out
    again = json.loads((results / "reproduce" / "reproduce_cpu.json").read_text())
    assert again["phases_s"] == phases["phases_s"]                        # the measured times are kept


def test_the_books_records_a_machine_without_cuda_and_missing_data_are_refused_before_anything_runs(
        tiny_paper, capsys):
    argv, tmp = tiny_paper
    assert main([*argv, "--results", str(REPO / "book" / "results")]) == 2
    assert main([*argv, "--results", "book/results/isic2017"]) == 2
    assert "book/results/" in capsys.readouterr().err
    without_cpu = [arg for arg in argv if arg != "--allow-cpu"]
    import torch
    if not torch.cuda.is_available():
        assert main([*without_cpu, "--results", str(tmp / "r1")]) == 2
        assert "needs a CUDA GPU" in capsys.readouterr().err
    assert main([*argv, "--results", str(tmp / "r2"), "--prepared", str(tmp / "nothing")]) == 2
    assert "tinyset: not a prepared dataset" in capsys.readouterr().err
    paper_grid = [arg for arg in argv if arg not in ("--grid",) and not arg.endswith("tiny.yaml")]
    assert main([*paper_grid, "--results", str(tmp / "r3"), "--prepared", str(tmp / "nothing")]) == 2
    error = capsys.readouterr().err
    assert "isic2017: not prepared yet; pass the raw folder with --isic2017-raw" in error and "--ph2-raw" in error
    assert not any((tmp / name).exists() for name in ("r1", "r2", "r3", "runs"))


def test_training_ends_at_the_first_test_command_logged_in_this_call(tmp_path):
    log = tmp_path / "p4_b1_s42.log"
    log.write_text("== 2026-01-01 10:00:00 python -m ulvm test --run x\n"        # an earlier call's
                   "== 2026-01-01 11:00:00 python -m ulvm train --data d\nepoch 1\n"
                   "== 2026-01-01 11:05:30 python -m ulvm test --run x --data d\n"
                   "== 2026-01-01 11:06:00 python -m ulvm test --run x --data e\n")
    since = time.mktime(time.strptime("2026-01-01 11:00:00", "%Y-%m-%d %H:%M:%S"))
    assert training_ended(log, since) - since == 330
    assert training_ended(log, since + 3600) is None and training_ended(tmp_path / "none.log", since) is None


def test_a_paper_chapter_reads_the_sweeps_run_and_never_trains_one(tmp_path):
    from helpers import CPU
    from ulvm.config import Config
    from ulvm.engine.train import fit
    from ulvm.errors import UlvmError
    from ulvm.report.book import book_run

    data = write_tiny_prepared(tmp_path / "tiny")
    config = Config.profile("paper", epochs=1, input_size=32, batch_size=4)
    with pytest.raises(UlvmError, match=r"p4_b1_s42: no run of this chapter's config finished there; train the grid"):
        book_run(config, data, tmp_path / "runs", CPU)
    assert not (tmp_path / "runs").exists()
    trained = fit(config, data, tmp_path / "runs" / "isic2017" / "p4_b1_s42", settings=CPU, progress=False)
    found = book_run(config, data, tmp_path / "runs", CPU)
    assert found.run_dir == trained.run_dir and found.history == trained.history


def test_only_book_merges_its_phases_into_the_record_of_the_training_machine(tiny_paper, monkeypatch):
    import ulvm.report.reproduce_paper as reproduce_paper

    argv, tmp = tiny_paper
    results = tmp / "results"
    (results / "reproduce").mkdir(parents=True)
    (results / "reproduce" / "reproduce_nvidia_h100.json").write_text(json.dumps(
        {"gpu": "NVIDIA H100", "phases_s": {"prepare": 30.0, "train": 600.0, "test": 40.0}, "total_s": 670.0}))
    asked = {}

    def notebooks_and_book(request, root, results_dir, runs):
        asked.update(results=results_dir, runs=runs)
        return {"notebooks": 100.0, "book": 20.0}

    monkeypatch.setattr(reproduce_paper, "notebooks_and_book", notebooks_and_book)
    book_only = [arg for arg in argv if arg not in ("--no-book", "--allow-cpu")]
    assert main([*book_only, "--results", str(results), "--only-book"]) == 0
    record = json.loads((results / "reproduce" / "reproduce_nvidia_h100.json").read_text())
    assert record["phases_s"] == {"prepare": 30.0, "train": 600.0, "test": 40.0, "notebooks": 100.0, "book": 20.0}
    assert record["total_s"] == 790.0 and record["gpu"] == "NVIDIA H100" and record["book_code_version"]
    assert asked == {"results": results.resolve(), "runs": tmp / "runs"}


def test_train_or_reuse_never_trains_a_paper_run_either(tmp_path):
    from helpers import CPU
    from ulvm.config import Config
    from ulvm.errors import UlvmError
    from ulvm.report.book import run_folder, train_or_reuse

    data = write_tiny_prepared(tmp_path / "tiny")
    config = Config.profile("paper", epochs=1, input_size=32, batch_size=4)
    with pytest.raises(UlvmError, match="train the grid first"):
        train_or_reuse(config, data, run_folder(tmp_path / "runs", data, config), CPU)
    assert not (tmp_path / "runs").exists()
