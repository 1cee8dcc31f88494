"""The fit loop: determinism, resume after SIGKILL, refusing to redo a finished run, NaN stop, LR schedule."""
import csv
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import ulvm.engine.train
from helpers import CPU, interrupted_fit, tiny_config, write_tiny_prepared
from ulvm.config import Config, RunSettings
from ulvm.data.tensors import to_input_size
from ulvm.engine.checkpoint import read_checkpoint
from ulvm.engine.optim import lr_schedule
from ulvm.engine.train import fit, fit_together
from ulvm.errors import RunError, UlvmError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return write_tiny_prepared(tmp_path_factory.mktemp("tiny"))


def test_resume_on_another_kind_of_device_is_a_clear_error(tiny_data, tmp_path, monkeypatch):
    run = tmp_path / "run"
    interrupted_fit(tiny_config(), tiny_data, run, monkeypatch, after_epochs=1)
    checkpoint = read_checkpoint(run / "last.pt")
    checkpoint["rng"]["generators"]["batch_augment"] = torch.zeros(16, dtype=torch.uint8)  # a CUDA Philox state
    torch.save(checkpoint, run / "last.pt")
    with pytest.raises(RunError, match=r"last.pt: cannot continue this run's random streams on cpu .*trained on"):
        fit(tiny_config(), tiny_data, run, settings=CPU, progress=False)


def _weights(path):
    return read_checkpoint(path)["model"]


def _losses(history):
    return [(row["train_loss"], row["val_loss"]) for row in history]


def test_same_seed_same_losses_and_weights_on_cpu(tiny_data, tmp_path):
    first = fit(tiny_config(), tiny_data, tmp_path / "a", settings=CPU, progress=False)
    second = fit(tiny_config(), tiny_data, tmp_path / "b", settings=CPU, progress=False)
    other_seed = fit(tiny_config(seed=7, epochs=1), tiny_data, tmp_path / "c", settings=CPU, progress=False)
    assert _losses(first.history) == _losses(second.history)
    assert all(torch.equal(a, b) for a, b in zip(_weights(first.last_path).values(),
                                                 _weights(second.last_path).values()))
    assert _losses(other_seed.history)[0] != _losses(first.history)[0]
    # the loss goes down on this easy data, and the log has one row per epoch
    assert first.history[-1]["train_loss"] < first.history[0]["train_loss"]
    with open(first.log_path) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[0]["lr"]) == pytest.approx(1e-3)
    best = read_checkpoint(first.best_path)
    assert best["epoch"] == first.best_epoch
    assert best["history"][-1]["val_loss"] == min(r["val_loss"] for r in first.history)


def test_runs_trained_together_in_one_process_equal_runs_trained_alone(tiny_data, tmp_path, monkeypatch):
    """Taking turns step by step changes nothing of a run: seed, data order, augmentation, epochs, resume."""
    configs = [tiny_config(), tiny_config(seed=7, epochs=2)]
    alone = [fit(config, tiny_data, tmp_path / f"alone{i}", settings=CPU, progress=False)
             for i, config in enumerate(configs)]
    interrupted_fit(configs[0], tiny_data, tmp_path / "together0", monkeypatch, after_epochs=1)   # resumes at 2
    lines = []
    together = fit_together(configs, tiny_data, [tmp_path / "together0", tmp_path / "together1"], settings=CPU,
                            progress=False, on_epoch=lines.append)
    for one, other in zip(alone, together):
        assert _losses(one.history) == _losses(other.history)
        assert all(torch.equal(a, b) for a, b in zip(_weights(one.best_path).values(),
                                                     _weights(other.best_path).values()))
    assert together[0].resumed_from_epoch == 1 and len(together[1].history) == 2
    assert [line.split(":")[0] for line in lines] == ["together1", "together0", "together1", "together0"]
    with pytest.raises(RunError, match="two runs would share a run folder"):
        fit_together(configs, tiny_data, [tmp_path / "x", tmp_path / "y" / ".." / "x"], settings=CPU)


@pytest.mark.parametrize("augment", ["batch", "none"])
def test_other_augmentation_paths_train(tiny_data, tmp_path, augment):
    result = fit(tiny_config(epochs=1, augment=augment, drop_last=True), tiny_data, tmp_path / augment,
                 settings=CPU, progress=False)
    assert math.isfinite(result.history[0]["train_loss"])


def test_finished_run_is_not_redone_unless_asked(tiny_data, tmp_path):
    config = tiny_config(epochs=1)
    fit(config, tiny_data, tmp_path / "run", settings=CPU, progress=False)
    with pytest.raises(RunError, match="already finished.*--overwrite"):
        fit(config, tiny_data, tmp_path / "run", settings=CPU, progress=False)
    with pytest.raises(RunError, match="different config.*differs in: epochs, parallel"):
        fit(config.replace(parallel=2, epochs=2), tiny_data, tmp_path / "run", settings=CPU, progress=False)
    again = fit(config, tiny_data, tmp_path / "run", settings=CPU, progress=False, overwrite=True)
    assert again.resumed_from_epoch == 0 and len(again.history) == 1


@pytest.mark.parametrize("config,settings,message", [
    (dict(model="fastnet"), CPU, "unknown model 'fastnet'; known models: ultralight, unet, "),
    ({}, RunSettings(device="cpu", backend="fast"), "unknown selective-scan backend 'fast'"),
])
def test_unknown_model_or_backend_is_refused_before_the_run_folder(tiny_data, tmp_path, config, settings, message):
    with pytest.raises(UlvmError, match=message):
        fit(tiny_config(**config), tiny_data, tmp_path / "run", settings=settings, progress=False)
    assert not (tmp_path / "run").exists()


def test_the_book_reuses_a_finished_run_and_trains_a_missing_one(tiny_data, tmp_path):
    from ulvm.report.book import train_or_reuse
    config = tiny_config(epochs=1)
    trained = train_or_reuse(config, tiny_data, tmp_path / "run", CPU)
    reused = train_or_reuse(config, tiny_data, tmp_path / "run", CPU)
    assert trained.wall_time_s > 0 and reused.wall_time_s == 0 and reused.history == trained.history
    assert train_or_reuse(config.replace(seed=7), tiny_data, tmp_path / "other", CPU).wall_time_s > 0


def test_fewer_train_images_than_a_dropped_batch_is_refused_before_the_run_folder(tiny_data, tmp_path):
    with pytest.raises(RunError, match="12 training images are fewer than batch_size=16 with drop_last"):
        fit(tiny_config(batch_size=16, drop_last=True), tiny_data, tmp_path / "run", settings=CPU, progress=False)
    assert not (tmp_path / "run").exists()


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path, monkeypatch):
    real_loss, calls = ulvm.engine.train.bce_dice_loss, []

    def loss_that_explodes_in_epoch_2(probs, masks, **weights):
        calls.append(1)
        loss = real_loss(probs, masks, **weights)
        return loss * float("nan") if len(calls) > 3 else loss      # 3 steps per epoch

    monkeypatch.setattr(ulvm.engine.train, "bce_dice_loss", loss_that_explodes_in_epoch_2)
    run = tmp_path / "nan"
    with pytest.raises(RunError, match="epoch 2: loss is not finite.*last good checkpoint kept.*epoch 1"):
        fit(tiny_config(), tiny_data, run, settings=CPU, progress=False)
    assert read_checkpoint(run / "last.pt")["epoch"] == 1
    assert read_checkpoint(run / "best.pt")["epoch"] == 1


def test_lr_schedule_is_the_papers_cycling_cosine():
    rates = lr_schedule(Config())
    assert len(rates) == 250
    assert rates[0] == pytest.approx(1e-3)
    assert rates[50] == pytest.approx(1e-5) and rates[150] == pytest.approx(1e-5)   # minima every 100 epochs
    assert rates[100] == pytest.approx(1e-3) and rates[200] == pytest.approx(1e-3)  # back up at 100, 200
    assert rates[25] == pytest.approx(1e-5 + (1e-3 - 1e-5) / 2)


def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(tiny_data, tmp_path):
    """Kill `ulvm train` with SIGKILL after some epoch's checkpoint exists, resume, compare with a clean run.

    The killed run is a subprocess with one torch thread; the resumed and the clean run run here, also
    with one thread (conftest), so all three compute in the same order.
    """
    epochs = 8
    config = tiny_config(epochs=epochs, t_max=4)
    config_file = tmp_path / "tiny.yaml"
    config.to_yaml(config_file)
    run = tmp_path / "killed"
    command = [sys.executable, "-m", "ulvm", "train", "--data", str(tiny_data), "--out", str(run),
               "--config", str(config_file), "--device", "cpu", "--no-test", "--no-progress"]
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": python_path}  # one thread, like this process
    process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        log = run / "log.csv"
        if log.exists() and len(log.read_text().splitlines()) >= 1 + 2:   # header + 2 epochs done
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
    killed_at = read_checkpoint(run / "last.pt")["epoch"]
    assert 2 <= killed_at < epochs, "the run finished before it could be killed: make the test run longer"

    resumed = fit(config, tiny_data, run, settings=CPU, progress=False)     # resumes automatically
    assert resumed.resumed_from_epoch == killed_at

    clean = fit(config, tiny_data, tmp_path / "clean", settings=CPU, progress=False)
    assert _losses(resumed.history) == _losses(clean.history)
    clean_weights, resumed_weights = _weights(clean.last_path), _weights(resumed.last_path)
    assert all(torch.equal(resumed_weights[k], clean_weights[k]) for k in clean_weights)
    assert read_checkpoint(run / "best.pt")["epoch"] == clean.best_epoch == resumed.best_epoch
    with open(run / "log.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == list(range(1, epochs + 1))


def test_resizing_to_the_input_size_keeps_targets_in_range():
    images = torch.full((2, 3, 256, 256), 255.0)
    masks = torch.ones(2, 1, 256, 256)
    images, masks = to_input_size(images, masks, 64)
    assert masks.shape == (2, 1, 64, 64) and masks.max() <= 1.0 and images.max() <= 255.0


@pytest.fixture
def restores_determinism():
    """`RunSettings.deterministic` switches process-wide settings: put them back after the test."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark)
    yield
    torch.use_deterministic_algorithms(saved[0])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[1:]


def test_deterministic_training_on_cpu_is_bit_identical_and_switches_deterministic_kernels_on(
        tiny_data, tmp_path, restores_determinism):
    settings = replace(CPU, deterministic=True)
    first = fit(tiny_config(epochs=2), tiny_data, tmp_path / "a", settings=settings, progress=False)
    assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
    assert not torch.backends.cudnn.benchmark and os.environ["CUBLAS_WORKSPACE_CONFIG"]
    second = fit(tiny_config(epochs=2), tiny_data, tmp_path / "b", settings=settings, progress=False)
    assert _losses(first.history) == _losses(second.history)
    assert all(torch.equal(a, b) for a, b in zip(_weights(first.best_path).values(),
                                                 _weights(second.best_path).values()))


def test_a_full_disk_during_training_is_one_line_that_says_last_pt_survived(tiny_data, tmp_path, monkeypatch, capsys):
    import errno

    import ulvm.io
    from ulvm.cli import main

    real_write, epochs_saved = ulvm.io.atomic_write_bytes, []

    def disk_full_in_epoch_2(path, data):
        if Path(path).name == "last.pt":
            epochs_saved.append(1)
        if len(epochs_saved) > 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(path, data)

    monkeypatch.setattr(ulvm.io, "atomic_write_bytes", disk_full_in_epoch_2)
    config = tmp_path / "tiny.yaml"
    tiny_config().to_yaml(config)
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_data), "--out", str(run), "--config", str(config), "--device", "cpu",
                 "--no-progress", "--no-test"]) == 2
    err = capsys.readouterr().err
    assert "epoch 2 could not be saved (No space left on device)" in err and "last.pt of epoch 1 is intact" in err
    assert "Traceback" not in err and read_checkpoint(run / "last.pt")["epoch"] == 1


def test_train_out_a_file_and_a_nan_learning_rate_are_one_line_errors(tiny_data, tmp_path, capsys):
    from ulvm.cli import main

    (tmp_path / "notes.txt").write_text("mine")
    base = ["train", "--data", str(tiny_data), "--profile", "quick", "--device", "cpu", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "notes.txt")]) == 2
    assert main([*base, "--out", str(tmp_path / "run"), "--set", "lr=.nan"]) == 2
    err = capsys.readouterr().err
    assert "notes.txt: exists and is not a folder" in err and "lr=nan must be a finite number" in err
    assert (tmp_path / "notes.txt").read_text() == "mine" and not (tmp_path / "run").exists()
