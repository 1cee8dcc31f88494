"""The PH2 cross-validation grid and the per-run records the book renders."""
import json

import pytest

from ulvm.errors import RunError
from ulvm.experiments import Job, ph2_grid, record_run


def test_grid_covers_the_issue_most_important_first():
    grid = ph2_grid()
    assert len(grid) == len({job.name for job in grid}) == 30
    assert [job.parallel for job in grid[:10]] == [4] * 5 + [1] * 5            # x4 and x1 first
    assert sum(job.parallel == 4 and job.bridge for job in grid) == 15        # x4: 3 seeds x 5 folds
    assert {(j.parallel, j.bridge) for j in grid} == {(4, True), (1, True), (2, True), (4, False)}


def test_job_command_is_a_paper_protocol_train(tmp_path):
    command = Job(4, False, 3, 43).command(tmp_path / "ph2", tmp_path / "runs")
    assert command[1:4] == ["-m", "ulvm", "train"]
    joined = " ".join(command)
    for piece in ("--profile paper", "--fold 3", "--seed 43", "--parallel 4", "--no-bridge",
                  f"--out {tmp_path / 'runs' / 'p4_b0_f3_s43'}"):
        assert piece in joined


def test_record_run_packs_results_curves_and_train_time(tmp_path):
    run = tmp_path / "runs" / "p4_b1_f0_s42"
    run.mkdir(parents=True)
    (run / "results_ph2_test_fold0.json").write_text(json.dumps(
        {"pooled": {"dsc": 0.93}, "per_image": {"dsc": [0.9, 0.95]}, "config": {"parallel": 4}, "run_dir": "x"}))
    (run / "log.csv").write_text("epoch,lr,train_loss,val_loss,val_dsc,val_iou,epoch_time_s\n"
                                 "1,0.001,0.8,0.5,0.81,0.68,9.8\n2,0.00099,0.5,0.4,0.88,0.78,1.0\n")
    record = json.loads(record_run(run, tmp_path / "record", concurrent_runs=10).read_text())
    assert record["pooled"]["dsc"] == 0.93 and record["train_time_s"] == 10.8
    assert record["history"]["val_dsc"] == [0.81, 0.88] and record["concurrent_runs"] == 10
    assert "run_dir" not in record


def test_record_run_refuses_an_untested_run(tmp_path):
    with pytest.raises(RunError, match="no results_"):
        record_run(tmp_path, tmp_path / "record")
