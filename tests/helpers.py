"""Helpers the test modules share (tests never import each other)."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ulvm.config import Config, RunSettings
from ulvm.data import prepare
from ulvm.engine.runs import RunFolder
from ulvm.engine.train import fit
from ulvm.ssm import selective_scan

CPU = RunSettings(device="cpu", backend="parallel")


def write_tiny_prepared(root: Path, n: int = 20, size: int = 32, seed: int = 0) -> Path:
    """A handful of dark discs on a noisy light background, prepared at `size` with a 12/4/4 split."""
    rng = np.random.default_rng(seed)
    raw = root / "raw"
    (raw / "images").mkdir(parents=True)
    (raw / "masks").mkdir()
    rows, cols = np.mgrid[:48, :48]
    for i in range(n):
        cy, cx = rng.uniform(15, 33, 2)
        lesion = (rows - cy) ** 2 + (cols - cx) ** 2 < rng.uniform(6, 13) ** 2
        image = rng.normal(180, 20, (48, 48, 3))
        image[lesion] -= 90
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(raw / "images" / f"disc{i:02d}.png")
        Image.fromarray(lesion.astype(np.uint8) * 255).save(raw / "masks" / f"disc{i:02d}.png")
    counts = (n - 8, 4, 4)
    return prepare("folder", raw, root / "prepared", size=size, counts=counts, folds=0, workers=1)


def tiny_config(**overrides) -> Config:
    """The quick profile shrunk to the tiny data: 32x32, batch 4."""
    values = dict(input_size=32, epochs=3, batch_size=4, max_images=None, t_max=3)
    values.update(overrides)
    return Config.profile("quick", **values)


def interrupted_fit(config, data, out_dir, monkeypatch, after_epochs: int, settings: RunSettings = CPU) -> None:
    """Run `fit` and stop it (KeyboardInterrupt) right after epoch `after_epochs` was checkpointed."""
    real_write_log = RunFolder.write_log

    def write_log_then_stop(folder, history):
        real_write_log(folder, history)
        if len(history) == after_epochs:
            raise KeyboardInterrupt
    monkeypatch.setattr(RunFolder, "write_log", write_log_then_stop)
    with pytest.raises(KeyboardInterrupt):
        fit(config, data, out_dir, settings=settings, progress=False)
    monkeypatch.undo()


def make_inputs(batch, d_inner, length, d_state=16, seed=0, dtype=torch.float32):
    """Random inputs of the model's real shapes, with Mamba's real A init (A = -(1..N))."""
    g = torch.Generator().manual_seed(seed)
    A = -torch.arange(1, d_state + 1, dtype=dtype).repeat(d_inner, 1)
    tensors = dict(
        u=torch.randn(batch, d_inner, length, generator=g, dtype=dtype),
        delta=torch.randn(batch, d_inner, length, generator=g, dtype=dtype) * 0.5,
        A=A,
        B=torch.randn(batch, d_state, length, generator=g, dtype=dtype),
        C=torch.randn(batch, d_state, length, generator=g, dtype=dtype),
        D=torch.randn(d_inner, generator=g, dtype=dtype),
        z=torch.randn(batch, d_inner, length, generator=g, dtype=dtype),
        delta_bias=torch.randn(d_inner, generator=g, dtype=dtype) * 0.1,
    )
    return {k: v.requires_grad_() for k, v in tensors.items()}


def assert_backends_agree(model, x, backend, baseline):
    """Whole-model output and every parameter gradient of `backend` match `baseline` (fp32 tolerances)."""
    results = {}
    for name in (baseline, backend):
        model.set_backend(name).zero_grad()
        y = model(x)
        y.mean().backward()
        results[name] = (y.detach(), [p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(results[backend][0], results[baseline][0], rtol=6e-4, atol=2e-3)
    for grad, grad_baseline in zip(results[backend][1], results[baseline][1]):
        torch.testing.assert_close(grad, grad_baseline, rtol=6e-4, atol=2e-3)


def run_scan(backend, inputs):
    """Output and every input gradient of `selective_scan` on `backend` (a fixed non-trivial upstream grad)."""
    inputs = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    y = selective_scan(**inputs, delta_softplus=True, backend=backend)
    weights = torch.linspace(-1, 1, y.numel(), dtype=y.dtype, device=y.device).view_as(y)
    (y * weights).sum().backward()
    return y.detach(), {k: v.grad for k, v in inputs.items()}


def assert_matches_reference(backend, inputs):
    """`backend`'s output and every input gradient equal the reference's (fp32 tolerances); returns them."""
    y_ref, g_ref = run_scan("reference", inputs)
    y, grads = run_scan(backend, inputs)
    torch.testing.assert_close(y, y_ref, rtol=6e-4, atol=2e-3)
    for name in g_ref:
        torch.testing.assert_close(grads[name], g_ref[name], rtol=6e-4, atol=2e-3, msg=f"grad of {name}")
    return y, grads
