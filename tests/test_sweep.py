"""`ulvm sweep`: grid files, and tiny CPU sweeps through a local Dask cluster of 2 worker processes."""
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from helpers import write_tiny_prepared
from ulvm.cli import main
from ulvm.config import RunSettings
from ulvm.engine.runs import LOG_COLUMNS
from ulvm.errors import UlvmError
from ulvm.sweeps.grid import parse_grid
from ulvm.sweeps.sweep import load_grid, offline_wheels_command, sweep

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
GRIDS = REPO / "book" / "grids"
TINY = {"input_size": 32, "batch_size": 4, "max_images": None, "t_max": 2}
SETTINGS = RunSettings(device="cpu", threads=1, backend="parallel")


def recorded_names(grid: str) -> set[str]:
    return {path.stem for path in (REPO / "book" / "results" / grid).glob("test_*/*.json")}


def test_book_grid_files_give_the_recorded_grids_in_order():
    ph2 = [job.name for job in load_grid(GRIDS / "ph2_cv.yaml").jobs]
    assert len(ph2) == len(set(ph2)) == 30 and set(ph2) == recorded_names("ph2_cv")
    assert ph2[:10] == [f"p{p}_b1_f{f}_s42" for p in (4, 1) for f in range(5)]          # x4 and x1 first
    assert ph2[10:] == ([f"p4_b1_f{f}_s{s}" for s in (43, 44) for f in range(5)]
                        + [f"p2_b1_f{f}_s42" for f in range(5)] + [f"p4_b0_f{f}_s42" for f in range(5)])
    isic = load_grid(GRIDS / "isic2017.yaml")
    names = [job.name for job in isic.jobs]
    assert names == ([f"p4_b1_s{s}" for s in range(42, 47)] + [f"p{p}_b1_s{s}" for p in (1, 2) for s in (42, 43, 44)]
                     + [f"p4_b0_s{s}" for s in (42, 43, 44)])
    assert set(names) == recorded_names("isic2017") and isic.test_sets() == ["isic2017", "ph2"]
    transfer = load_grid(GRIDS / "ph2_transfer.yaml")
    assert [job.name for job in transfer.jobs] == ["p4_b1_f0_s42"] and transfer.test_sets() == ["ph2", "isic2017"]
    assert all(job.config.profile_name == "paper" for job in isic.jobs)
    official = load_grid(GRIDS / "isic2017_official_split.yaml")      # pending: trained on a GPU
    assert [job.name for job in official.jobs] == [f"p4_b1_s{s}" for s in (42, 43, 44)]
    assert official.test_sets() == ["isic2017_official", "ph2"] and official.jobs[0].config.profile_name == "paper"


def test_grid_expansion_models_and_overrides(tmp_path):
    grid = parse_grid({"name": "g", "profile": "quick", "data": "d", "seed": [1, 2], "model": ["ultralight", "unet"],
                       "set": {"epochs": 2, "lr": 0.002}, "cross": [{"parallel": 2, "set": {"epochs": 3}}]})
    assert [job.name for job in grid.jobs] == ["p2_b1_s1", "p2_b1_s2", "unet_s1", "unet_s2"]
    command = " ".join(grid.jobs[2].command(grid.data, tmp_path))
    assert "--profile quick" in command and "--model unet" in command
    assert "--set epochs=3" in command and "--set lr=0.002" in command


@pytest.mark.parametrize("text, problem", [
    ("name: g\ndata: [", "not valid YAML"),
    ("- 1\n", "a grid file is a mapping"),
    ("name: g\n", "'data' is required"),
    ("name: g\ndata: d\nseeds: [1]\n", "unknown key(s) 'seeds'"),
    ("name: g\ndata: d\nprofile: fast\n", "profile 'fast' is not one of paper, quick"),
    ("name: g\ndata: d\nparallel: [3]\n", "'parallel' value 3 is not 1, 2 or 4"),
    ("name: g\ndata: d\ncross: [{bridge: maybe}]\n", "cross[0]: 'bridge' value 'maybe' is not true or false"),
    ("name: g\ndata: d\ncross: [{seed: 1}, {seed: [1, 2]}]\n", "job p4_b1_s1 appears twice"),
    ("name: g\ndata: d\ntest_on: x\n", "'test_on' must be a list"),
    ("name: ../../x\ndata: d\n", "'name' '../../x' is not a plain name"),
    ("name: g\ndata: d\nmodel: ../../../y\n", "'model' '../../../y' is not a plain name"),
    ("name: g\ndata: d\ncross: [{model: [unet, a/b]}]\n", "cross[0]: 'model' 'a/b' is not a plain name"),
    ("name: g\ndata: d\nset: {lr: -1}\n", "cross[0]: invalid config"),
])
def test_grid_file_errors_name_the_file_and_the_problem(tmp_path, text, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UlvmError, match=rf"^{re.escape(str(path))}: .*{re.escape(problem)}"):
        load_grid(path)
    with pytest.raises(UlvmError, match="cannot read the grid file"):
        load_grid(tmp_path / "missing.yaml")


def test_offline_wheels_command_pins_the_extra():
    pyproject = (REPO / "pyproject.toml").read_text()
    command = offline_wheels_command()
    for pin in ("dask==", "distributed=="):
        version = command.split(pin)[1].split('"')[0]
        assert f'"{pin}{version}"' in pyproject
    assert command.startswith("pip download --dest wheels --only-binary=:all:")


def test_gpu_slots_come_from_cuda_visible_devices_and_each_worker_is_given_its_gpu(monkeypatch):
    from ulvm.sweeps.cluster import Slot, visible_gpus, worker_slots

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 5")
    assert visible_gpus() == ("2", "5")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == ()
    workers = {f"tcp://w{name}": {"name": name, "nthreads": 1} for name in (3, 10, 0, 2, 1)}
    assert worker_slots(workers, ("2", "5")) == [Slot("tcp://w0", "2"), Slot("tcp://w1", "5"), Slot("tcp://w2", "2"),
                                                 Slot("tcp://w3", "5"), Slot("tcp://w10", "2")]
    assert worker_slots({"tcp://a": {"name": "x", "nthreads": 2}}, ()) == [Slot("tcp://a", None)] * 2


def test_a_tested_run_is_only_recorded_and_missing_data_is_refused_early(tmp_path, capsys):
    grid = parse_grid({"name": "g", "data": str(tmp_path / "ph2"), "fold": 0}, "g.yaml")
    run = tmp_path / "runs" / "p4_b1_f0_s42"
    run.mkdir(parents=True)
    (run / "results_ph2_test_fold0.json").write_text(json.dumps(
        {"pooled": {"dsc": 0.9}, "code_version": "abc1234", "data": {"root": "/x/ph2"}, "run_dir": str(run)}))
    (run / "log.csv").write_text("epoch,lr,train_loss,val_loss,val_dsc,val_iou,epoch_time_s\n1,1,1,1,1,1,2.5\n")
    sweep(grid, tmp_path / "runs", tmp_path / "record", dry_run=True)
    assert "p4_b1_f0_s42                 tested" in capsys.readouterr().out
    result = sweep(grid, tmp_path / "runs", tmp_path / "record", allow_dirty=True)   # no cluster, no run
    assert result.status == {"p4_b1_f0_s42": "recorded"}
    assert json.loads((tmp_path / "record" / "test_ph2" / "p4_b1_f0_s42.json").read_text())["train_time_s"] == 2.5
    assert sweep(grid, tmp_path / "runs", tmp_path / "record").status == {"p4_b1_f0_s42": "skipped"}
    other = parse_grid({"name": "g", "data": str(tmp_path / "nowhere")}, "g.yaml")
    with pytest.raises(UlvmError, match=f"g.yaml: prepared dataset.s. not found: {tmp_path / 'nowhere'}"):
        sweep(other, tmp_path / "runs", tmp_path / "record", allow_dirty=True)


def test_progress_is_a_line_per_change_or_minute_off_a_terminal_and_one_rewritten_line_on_one():
    import io

    from ulvm.sweeps.status import Progress

    now = [0.0]
    plain = io.StringIO()
    progress = Progress("g", 5, plain, every_s=60, clock=lambda: now[0])
    progress.show(0, 2, 0)
    now[0] = 30
    progress.show(0, 2, 0, 600.0)                 # no change, under a minute: nothing
    now[0] = 61
    progress.show(0, 2, 0, 570.0)                 # a minute since the last line
    progress.show(1, 2, 1, 120.0)
    assert plain.getvalue().splitlines() == ["g: 0/5 done, 2 running, 0 failed, ETA ?",
                                             "g: 0/5 done, 2 running, 0 failed, ETA 0:09:30",
                                             "g: 1/5 done, 2 running, 1 failed, ETA 0:02:00"]

    class Terminal(io.StringIO):
        def isatty(self):
            return True
    tty = Terminal()
    progress = Progress("g", 5, tty)
    progress.show(0, 2, 0)
    progress.say("p4_b1_s42: recorded x")
    progress.show(1, 1, 0)
    assert tty.getvalue().count("\n") == 1 and tty.getvalue().startswith("\rg: 0/5 done")


def test_the_eta_comes_from_the_epochs_the_runs_log_and_drops_failed_jobs(tmp_path):
    from ulvm.engine.runs import RunFolder
    from ulvm.sweeps.experiments import Job
    from ulvm.sweeps.status import TrainingETA

    def log(name, epochs):
        (tmp_path / name).mkdir(exist_ok=True)
        RunFolder(tmp_path / name).write_log([dict.fromkeys(LOG_COLUMNS, 1.0) for _ in range(epochs)])

    now = [0.0]
    jobs = [Job.of(4, True, None, seed, overrides={"epochs": 10}) for seed in (42, 43, 44)]
    log(jobs[0].name, 4)                          # resumed: 4 epochs done before the sweep started
    eta = TrainingETA(jobs, tmp_path, clock=lambda: now[0])
    assert eta.seconds_left() is None             # nothing logged since the start: no rate yet
    now[0] = 60.0
    log(jobs[0].name, 6)
    log(jobs[1].name, 2)                          # 4 epochs in 60 s; 30 - 8 = 22 left: 330 s
    assert eta.seconds_left() == pytest.approx(330.0)
    eta.drop(jobs[1])                             # failed: its epochs leave both the rate and the total
    assert eta.seconds_left() == pytest.approx((20 - 6) * 60 / 2)
    assert Job.of(4, True, None, 42).epochs == 250 and Job.of(4, True, None, 42, profile="quick").epochs == 6


# --- tiny sweeps on Dask ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny prepared dataset and a copy of it under another name (an 'external' test set)."""
    root = tmp_path_factory.mktemp("sweepdata")
    data = write_tiny_prepared(root)
    shutil.copytree(data, root / "ext")
    return data, root / "ext"


@pytest.fixture
def subprocess_env(monkeypatch):
    """Runs (subprocesses of the Dask workers) import this checkout's ulvm, with one thread."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def write_grid(path: Path, data: Path, **spec) -> Path:
    path.write_text(yaml.safe_dump({"name": "tiny", "profile": "quick", "data": str(data), **spec}))
    return path


def test_sweep_runs_records_and_skips_on_a_second_call(tmp_path, tiny, subprocess_env, capsys):
    pytest.importorskip("distributed")
    data, ext = tiny
    grid = load_grid(write_grid(tmp_path / "g.yaml", data, test_on=[str(ext)], seed=[42, 43],
                                set={**TINY, "epochs": 1}))
    runs, record = tmp_path / "runs", tmp_path / "record"
    started = time.perf_counter()
    result = sweep(grid, runs, record, workers=2, settings=SETTINGS, mps_percentage=30,
                   allow_dirty=True, poll_s=0.2)
    first = time.perf_counter() - started
    assert result.ok, result.failures
    assert result.status == {"p4_b1_s42": "recorded", "p4_b1_s43": "recorded"}
    for name in ("p4_b1_s42", "p4_b1_s43"):
        for test_set in ("prepared", "ext"):
            rec = json.loads((record / f"test_{test_set}" / f"{name}.json").read_text())
            assert rec["allow_dirty"] is True and rec["concurrent_runs"] == 2 and len(rec["history"]["val_dsc"]) == 1
            assert rec["mps_percentage"] == 30
        assert "(CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=30)" in (runs / f"{name}.log").read_text()
    out = capsys.readouterr().out
    assert "tiny: 2/2 done, 0 running, 0 failed" in out and re.search(r"tiny: all 2 jobs done, after 0:0\d:\d\d", out)
    assert "p4_b1_s42: recorded" in out

    started = time.perf_counter()
    again = sweep(grid, runs, record, workers=2, settings=SETTINGS, allow_dirty=True)
    assert again.status == {"p4_b1_s42": "skipped", "p4_b1_s43": "skipped"}
    assert time.perf_counter() - started < 2 < first                       # no cluster, no run
    sweep(grid, runs, record, dry_run=True)
    out = capsys.readouterr().out
    assert "tiny: 2 jobs: 2 done, 0 tested, 0 partial, 0 new" in out and "p4_b1_s43" in out


def test_sweep_resumes_a_killed_run_and_reports_a_failed_job(tmp_path, tiny, subprocess_env, capsys):
    pytest.importorskip("distributed")
    data, _ = tiny
    path = write_grid(tmp_path / "g.yaml", data, set={**TINY, "epochs": 4},
                      cross=[{"seed": 44}, {"model": "nope"}])
    grid = load_grid(path)
    runs, record = tmp_path / "runs", tmp_path / "record"
    # one job trained by hand and killed after its first epoch was checkpointed
    log_csv = runs / "p4_b1_s44" / "log.csv"
    train = subprocess.Popen(grid.jobs[0].command(data, runs, SETTINGS), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (log_csv.is_file() and len(log_csv.read_text().splitlines()) >= 2) and time.monotonic() < deadline:
        assert train.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    train.kill()
    train.wait()
    first_epoch = log_csv.read_text().splitlines()[1]
    assert len(log_csv.read_text().splitlines()) < 5
    capsys.readouterr()
    assert main(["sweep", str(path), "--dry-run", "--runs", str(runs), "--record", str(record)]) == 0
    out = capsys.readouterr().out
    assert "p4_b1_s44                    partial" in out and "nope_s42" + " " * 21 + "new" in out

    code = main(["sweep", str(path), "--runs", str(runs), "--record", str(record), "--device", "cpu",
                 "--threads", "1", "--workers", "2", "--allow-dirty"])
    out = capsys.readouterr().out
    assert code == 1
    lines = log_csv.read_text().splitlines()
    assert len(lines) == 5 and lines[1] == first_epoch                    # resumed, not restarted
    assert "resuming after epoch" in (runs / "p4_b1_s44.log").read_text()
    assert (record / "test_prepared" / "p4_b1_s44.json").is_file()
    failed_log = runs / "nope_s42.log"
    assert f"nope_s42: FAILED (exit code 2), see {failed_log}" in out
    assert "nope" in failed_log.read_text() and re.search(r"1 of 2 jobs failed, after \d:\d\d:\d\d: nope_s42", out)
    assert not (record / "test_prepared" / "nope_s42.json").exists()


@pytest.mark.parametrize("arguments, problem", [
    (dict(runs_per_gpu=0), "runs per GPU must be at least 1, not 0"),
    (dict(workers=0), "workers must be at least 1, not 0"),
])
def test_sweep_checks_its_arguments_itself(tmp_path, arguments, problem):
    grid = parse_grid({"name": "g", "data": str(tmp_path)}, "g.yaml")
    with pytest.raises(UlvmError, match=problem):
        sweep(grid, tmp_path / "runs", tmp_path / "record", **arguments)


def _processes_using(folder: Path) -> list[int]:
    """Processes whose command line names `folder` (the sweep's `ulvm train` children)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(folder) in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:
            pass
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_ctrl_c_stops_a_sweep_cleanly_and_sigkill_takes_its_runs_with_it(tmp_path, tiny, subprocess_env):
    """Ctrl-C (SIGINT to the terminal's process group): one message, no worker traceback, no run left behind.
    SIGKILL of the sweep: its `ulvm train` children do not live on (a re-run would share their folders)."""
    pytest.importorskip("distributed")
    import signal

    data, _ = tiny
    path = write_grid(tmp_path / "g.yaml", data, seed=[42, 43], set={**TINY, "epochs": 500})
    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "ulvm", "sweep", str(path), "--runs", str(runs), "--record",
               str(tmp_path / "record"), "--device", "cpu", "--threads", "1", "--workers", "2", "--allow-dirty"]
    for stop in (signal.SIGINT, signal.SIGKILL):
        sweep_process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                         start_new_session=True)
        deadline = time.monotonic() + 240
        while not (all((runs / name / "last.pt").is_file() for name in ("p4_b1_s42", "p4_b1_s43"))
                   and len(_processes_using(runs)) >= 3):                 # the sweep and its two runs
            assert sweep_process.poll() is None and time.monotonic() < deadline, sweep_process.communicate()
            time.sleep(0.2)
        os.killpg(sweep_process.pid, stop) if stop == signal.SIGINT else sweep_process.kill()
        out, err = sweep_process.communicate(timeout=120)
        if stop == signal.SIGINT:
            assert sweep_process.returncode == 130, err
            assert "Traceback" not in err and "Traceback" not in out, err
            assert "tiny: interrupted; the running jobs were stopped" in out and "ulvm sweep: interrupted" in err
        deadline = time.monotonic() + 30
        while _processes_using(runs) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _processes_using(runs), f"left running after {stop!r}"
