"""`ulvm throughput`: K real training runs at once, their aggregate steady-state throughput."""
import json
import shutil

import pytest

from helpers import write_tiny_prepared
from ulvm.cli import main
from ulvm.config import RunSettings
from ulvm.sweeps.mps import ACTIVE_THREAD_PERCENTAGE, client_environment, start_mps
from ulvm.sweeps.throughput import measure_throughput

TINY = ("input_size=32", "batch_size=4", "max_images=8")
CPU = RunSettings(device="cpu")


def test_k_runs_at_once_report_aggregate_throughput_and_speedup(tmp_path):
    data = write_tiny_prepared(tmp_path)
    rows = measure_throughput(data, tmp_path / "runs", ks=(1, 2), epochs=2, profile="quick", settings=CPU,
                              overrides=TINY, progress=lambda line: None)
    assert [(row["mps"], row["k"]) for row in rows] == [("off", 1), ("off", 2)]
    assert rows[0]["speedup"] == 1.0 and rows[1]["speedup"] > 0
    for row in rows:
        assert row["images_per_s"] > 0 and row["train_images"] == 8
        # sum of the runs' rates vs K / mean time: equal for equal runs, larger when they differ (AM-HM)
        assert row["epochs_per_min"] >= 60 * row["k"] / row["mean_epoch_s"] * (1 - 1e-3)
    assert (tmp_path / "runs" / "mps_off" / "k2" / "p4_b1_s43" / "log.csv").is_file()


def test_mps_where_it_cannot_start_is_reported_not_measured(tmp_path, monkeypatch):
    if shutil.which("nvidia-cuda-mps-control"):
        monkeypatch.setenv("PATH", "")          # as on a machine without the CUDA driver tools
    assert start_mps() == "nvidia-cuda-mps-control not found"
    out = tmp_path / "throughput.json"
    assert main(["throughput", "--data", str(tmp_path), "--mps", "on", "--device", "cpu", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["rows"] == [{"mps": "on", "unavailable": "nvidia-cuda-mps-control not found"}]
    assert record["code_version"] and record["compile"] is False


def test_an_mps_share_of_the_gpu_is_a_percentage(tmp_path, capsys):
    assert client_environment(None) == {}
    assert client_environment(10) == {ACTIVE_THREAD_PERCENTAGE: "10"}
    for wrong in (0, 101):
        assert main(["throughput", "--data", str(tmp_path), "--device", "cpu", "--mps-percentage", str(wrong),
                     "--runs", str(tmp_path / "runs")]) == 2
        assert f"a percentage from 1 to 100, not {wrong}" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()                          # refused before any run


def test_the_mps_cap_applies_to_runs_that_share_not_to_the_lone_reference(tmp_path, monkeypatch):
    import ulvm.sweeps.throughput

    monkeypatch.setattr(ulvm.sweeps.throughput, "start_mps", lambda: "")      # as on a GPU machine with MPS
    monkeypatch.setattr(ulvm.sweeps.throughput, "stop_mps", lambda: None)
    started = []
    real_run_k = ulvm.sweeps.throughput.run_k
    monkeypatch.setattr(ulvm.sweeps.throughput, "run_k", lambda k, *args, **kwargs: (
        started.append((k, kwargs["environment"])) or real_run_k(k, *args, **kwargs)))
    data = write_tiny_prepared(tmp_path)
    rows = measure_throughput(data, tmp_path / "runs", ks=(1, 2), mps=("on",), epochs=2, profile="quick",
                              settings=CPU, overrides=TINY, mps_percentage=30, progress=lambda line: None)
    assert started == [(1, None), (2, {ACTIVE_THREAD_PERCENTAGE: "30"})]
    assert "mps_percentage" not in rows[0] and rows[1]["mps_percentage"] == 30 and rows[0]["speedup"] == 1.0
    started.clear()
    rows = measure_throughput(data, tmp_path / "together", ks=(2,), mps=("on",), epochs=2, profile="quick",
                              settings=CPU, overrides=TINY, together=2, mps_percentage=30, progress=lambda line: None)
    assert started == [(2, None)] and "mps_percentage" not in rows[0]     # one process: it shares with nothing


def test_runs_together_in_one_process_are_measured_the_same_way(tmp_path):
    data = write_tiny_prepared(tmp_path)
    rows = measure_throughput(data, tmp_path / "runs", ks=(3,), epochs=2, profile="quick", settings=CPU,
                              overrides=TINY, together=2, progress=lambda line: None)
    assert rows[0]["k"] == 3 and rows[0]["runs_per_process"] == 2 and rows[0]["images_per_s"] > 0
    folder = tmp_path / "runs" / "mps_off" / "k3"
    assert sorted(p.name for p in folder.glob("*.log")) == ["p4_b1_s42.log", "p4_b1_s44.log"]   # 2 processes
    for seed in (42, 43, 44):
        assert len((folder / f"p4_b1_s{seed}" / "log.csv").read_text().splitlines()) == 3   # header + 2 epochs


def test_fewer_than_one_run_per_process_is_refused(tmp_path, capsys):
    assert main(["throughput", "--data", str(tmp_path), "--device", "cpu", "--together", "0"]) == 2
    assert "--together) must be at least 1, not 0" in capsys.readouterr().err


def test_settings_reach_every_training_process(tmp_path):
    """`ulvm throughput --compile`: each `ulvm train` gets the flag (on a CPU it says it ignores it)."""
    data = write_tiny_prepared(tmp_path)
    measure_throughput(data, tmp_path / "runs", ks=(1,), epochs=2, profile="quick", overrides=TINY,
                       settings=RunSettings(device="cpu", compile=True), progress=lambda line: None)
    log = (tmp_path / "runs" / "mps_off" / "k1" / "p4_b1_s42.log").read_text()
    assert "compile=True is ignored on cpu" in log


def test_a_failing_k_is_recorded_and_what_was_measured_before_it_is_kept(tmp_path, monkeypatch):
    """K = 40 ran out of host memory on an H200 machine and the whole record was lost; now the record keeps
    K = 1, says why K = 2 failed, and does not try K = 4."""
    import ulvm.sweeps.throughput as throughput
    from ulvm.errors import RunError

    tried = []

    def run_k(k, *args, **kwargs):
        tried.append(k)
        if k == 2:
            raise RunError(f"1 of 2 training processes failed; see x.log ({throughput._exit_reason(-9)})")
        return {"k": k, "images_per_s": 100.0, "epochs_per_min": 5.0, "mean_epoch_s": 12.0}

    monkeypatch.setattr(throughput, "run_k", run_k)
    out = tmp_path / "throughput.json"
    assert main(["throughput", "--data", str(tmp_path), "--device", "cpu", "--mps", "off", "--ks", "1", "2", "4",
                 "--out", str(out)]) == 1
    assert tried == [1, 2]
    rows = json.loads(out.read_text())["rows"]
    assert rows[0]["k"] == 1 and rows[0]["speedup"] == 1.0
    assert rows[1] == {"mps": "off", "k": 2, "failed": "1 of 2 training processes failed; see x.log "
                                                          "(killed by signal 9, e.g. out of host memory)"}
    assert throughput._exit_reason(3) == "exit code 3"


def test_a_grid_estimate_from_wall_time_counts_start_and_first_epoch():
    from ulvm.sweeps.throughput import grid_minutes, grid_wall_minutes

    row = {"k": 14, "wall_s": 79.0, "mean_epoch_s": 3.3, "epochs_per_min": 14 * 60 / 3.3}
    by_rate = grid_minutes(row["epochs_per_min"], runs=14, epochs=250)
    assert by_rate == pytest.approx(250 * 3.3 / 60)
    # three measured epochs took 79 s, where the steady rate says 9.9 s: the difference is start and compilation
    assert grid_wall_minutes(row, measured_epochs=3, epochs=250) == pytest.approx(by_rate + (79 - 3 * 3.3) / 60)

