"""The book's grids and the per-run records it renders."""
import json

import pytest

from ulvm.config import RunSettings
from ulvm.errors import RunError
from ulvm.sweeps.experiments import Job, record_run, record_runs


def test_job_command_is_a_paper_protocol_train(tmp_path):
    command = Job.of(4, False, 3, 43).command(tmp_path / "ph2", tmp_path / "runs")
    assert command[1:4] == ["-m", "ulvm", "train"]
    joined = " ".join(command)
    for piece in ("--profile paper", "--fold 3", "--seed 43", "--parallel 4", "--no-bridge",
                  f"--out {tmp_path / 'runs' / 'p4_b0_f3_s43'}"):
        assert piece in joined
    assert "--fold" not in Job.of(4, True, None, 42).command(tmp_path, tmp_path)
    test = " ".join(Job.of(4, True, None, 42).test_command(tmp_path / "ph2", tmp_path / "runs"))
    assert f"test --run {tmp_path / 'runs' / 'p4_b1_s42'} --data {tmp_path / 'ph2'}" in test


def test_job_names_and_commands_of_baselines_profiles_and_overrides(tmp_path):
    job = Job.of(4, True, 0, 42, model="unet", profile="quick", overrides={"epochs": 2, "lr": 1e-5})
    assert job.name == "unet_f0_s42" and Job.of(2, False, None, 7).name == "p2_b0_s7"
    command = job.command(tmp_path, tmp_path / "runs", RunSettings(device="cpu", threads=1))
    assert " ".join(command).endswith("--model unet --set epochs=2 --set lr=1.0e-05 --device cpu --threads 1 "
                                      "--no-progress")
    assert command[command.index("--profile") + 1] == "quick" and "--no-bridge" not in command
    assert job.test_command(tmp_path, tmp_path, RunSettings(threads=1))[-2:] == ["--threads", "1"]


def _finished_run(run, version="abc1234", data_roots=("data/ph2",)):
    run.mkdir(parents=True)
    for root in data_roots:
        name = root.rsplit("/", 1)[-1]
        (run / f"results_{name}_test.json").write_text(json.dumps(
            {"pooled": {"dsc": 0.93}, "per_image": {"dsc": [0.9, 0.95]}, "config": {"parallel": 4},
             "run_dir": "x", "code_version": version, "data": {"root": root}}))
    (run / "log.csv").write_text("epoch,lr,train_loss,val_loss,val_dsc,val_iou,epoch_time_s\n"
                                 "1,0.001,0.8,0.5,0.81,0.68,9.8\n2,0.00099,0.5,0.4,0.88,0.78,1.0\n")
    return run


def test_record_run_packs_results_curves_and_train_time(tmp_path):
    run = _finished_run(tmp_path / "runs" / "p4_b1_f0_s42")
    path = record_run(run / "results_ph2_test.json", tmp_path / "record", concurrent_runs=10)
    assert path == tmp_path / "record" / "test_ph2" / "p4_b1_f0_s42.json"
    record = json.loads(path.read_text())
    assert record["pooled"]["dsc"] == 0.93 and record["train_time_s"] == 10.8
    assert record["history"]["val_dsc"] == [0.81, 0.88] and record["concurrent_runs"] == 10
    assert "run_dir" not in record and "allow_dirty" not in record


def test_record_runs_writes_one_record_per_test_set(tmp_path):
    run = _finished_run(tmp_path / "p4_b1_s42", data_roots=(".gpu/isic2017", ".gpu/ph2"))
    paths = record_runs(run, tmp_path / "record")
    assert sorted(p.relative_to(tmp_path / "record").as_posix() for p in paths) == [
        "test_isic2017/p4_b1_s42.json", "test_ph2/p4_b1_s42.json"]


@pytest.mark.parametrize("version", ["unknown", "abc1234-dirty"])
def test_record_of_a_dirty_or_unknown_tree_needs_the_flag_and_says_so(tmp_path, version):
    run = _finished_run(tmp_path / "run", version=version)
    with pytest.raises(RunError, match="not a clean commit.*--allow-dirty"):
        record_runs(run, tmp_path / "record")
    assert not (tmp_path / "record").exists()
    [path] = record_runs(run, tmp_path / "record", allow_dirty=True)
    record = json.loads(path.read_text())
    assert record["allow_dirty"] is True and record["code_version"] == version


def test_record_runs_refuses_an_untested_run(tmp_path):
    with pytest.raises(RunError, match="no results_"):
        record_runs(tmp_path, tmp_path / "record")


def test_committed_records_name_a_clean_commit():
    from pathlib import Path

    from ulvm.version import is_clean
    records = list((Path(__file__).resolve().parents[1] / "book" / "results").rglob("test_*/*.json"))
    assert len(records) >= 30
    for path in records:
        assert is_clean(json.loads(path.read_text())["code_version"]), path


def test_jobs_that_differ_in_their_seed_alone_train_together_in_one_command(tmp_path):
    from ulvm.sweeps.experiments import together_command

    jobs = [Job.of(2, False, 1, seed) for seed in (42, 43)]
    settings = RunSettings(device="cpu", threads=1)
    command = together_command(jobs, tmp_path / "data", tmp_path / "runs", settings)
    assert command[command.index("--out") + 1] == str(tmp_path / "runs" / "p2_b0_f1_s{seed}")
    assert command[command.index("--seeds") + 1:command.index("--seeds") + 3] == ["42", "43"]
    assert "--seed" not in command and command[-3:] == ["--threads", "1", "--no-progress"]
    assert jobs[0].command(tmp_path / "data", tmp_path / "runs", settings)[3:] != command[3:]
    with pytest.raises(RunError, match="differ in their seed alone"):
        together_command([jobs[0], Job.of(4, False, 1, 43)], tmp_path / "data", tmp_path / "runs")
