"""Engine runs on what CI may lack: a CUDA GPU (AMP, batch augmentation on the device; the CPU variant
always runs) and the real PH2 images beside the checkout (`../shared/realdata`, never committed).
Each skips cleanly without it."""
import math

import pytest
import torch

import ulvm.engine.train
from helpers import CPU, tiny_config, write_tiny_prepared
from ulvm.config import Config, RunSettings
from ulvm.data import prepare
from ulvm.engine.checkpoint import read_checkpoint
from ulvm.engine.evaluate import evaluate
from ulvm.engine.train import fit

CUDA = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("device, amp", [("cpu", False), pytest.param("cuda", False, marks=CUDA),
                                         pytest.param("cuda", True, marks=CUDA)])
def test_fit_interrupt_resume_and_evaluate(tmp_path, monkeypatch, device, amp):
    """Ctrl-C in epoch 2, resume, evaluate; on CUDA with "auto" = batch augmentation on the GPU, and AMP."""
    data = write_tiny_prepared(tmp_path)
    config = tiny_config(epochs=2, amp=amp)
    settings = RunSettings(device=device)
    real_validate, calls = ulvm.engine.train.validate, []

    def interrupted_in_epoch_2(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_validate(*args)

    monkeypatch.setattr(ulvm.engine.train, "validate", interrupted_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        fit(config, data, tmp_path / "run", settings=settings, progress=False)
    checkpoint = read_checkpoint(tmp_path / "run" / "last.pt")
    assert checkpoint["epoch"] == 1 and ("scaler" in checkpoint) == amp
    monkeypatch.setattr(ulvm.engine.train, "validate", real_validate)
    run = fit(config, data, tmp_path / "run", settings=settings, progress=False)   # resumes
    assert run.resumed_from_epoch == 1 and all(math.isfinite(row["val_loss"]) for row in run.history)
    results = evaluate(run.run_dir, data, settings=settings, bootstrap=100)
    assert results["machine"]["device"].startswith(device) and 0 <= results["pooled"]["dsc"] <= 1


@pytest.mark.slow
def test_quick_profile_end_to_end_on_real_ph2(realdata, tmp_path):
    """`ulvm prepare folder` on the 200 real PH2 images, a quick run on cross-validation fold 0, its test."""
    data = prepare("folder", realdata / "PH2", tmp_path / "ph2")
    run = fit(Config.profile("quick", fold=0, epochs=2), data, tmp_path / "run", settings=CPU, progress=False)
    assert run.history[-1]["train_loss"] < run.history[0]["train_loss"]
    own = evaluate(run.run_dir, data, settings=CPU, bootstrap=200)
    assert own["fold"] == 0 and own["n_images"] == 40 and own["external"] is False
    assert 0.3 < own["pooled"]["dsc"] <= 1.0       # far from an empty or all-lesion prediction
