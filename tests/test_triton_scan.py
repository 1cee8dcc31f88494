"""The fused Triton selective scan against the sequential reference, forward and every gradient.

On a GPU the kernels run compiled, at the model's real sizes. Without one, Triton's interpreter runs the same
kernels on CPU tensors (TRITON_INTERPRET=1 must be set before the kernels are first imported, hence at the top
of this module); it is slow, so the CPU sizes are small and the chunk length is shortened to keep several
chunks, a partial last chunk included, in play."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from helpers import assert_matches_reference, make_inputs  # noqa: E402
from ulvm.errors import BackendUnavailable  # noqa: E402
from ulvm.ssm import selective_scan, triton_scan  # noqa: E402

ON_GPU = torch.cuda.is_available()
pytestmark = pytest.mark.skipif(bool(triton_scan.why_unavailable()),
                                reason=f"needs triton: {triton_scan.why_unavailable()}")
# (batch, D, L): the model's PVM scans on a GPU; on the CPU, 3 chunks of 32 steps, the last partial
GPU_SHAPES = [(4, 24, 64), (4, 32, 64), (4, 16, 256), (4, 12, 1024), (2, 4, 1)]
SHAPES = GPU_SHAPES if ON_GPU else [(2, 3, 80), (1, 2, 7), (1, 2, 1), (2, 8, 40)]   # D = 8: 4 channels a program


def _on_device(inputs):
    return {k: v.detach().cuda() if ON_GPU else v.detach() for k, v in inputs.items()}


@pytest.fixture(autouse=True)
def short_chunks(monkeypatch):
    if not ON_GPU:
        monkeypatch.setattr(triton_scan, "BLOCK_L", 32)


@pytest.mark.parametrize("batch,d_inner,length", SHAPES)
def test_triton_matches_reference_forward_and_backward(batch, d_inner, length):
    assert_matches_reference("triton", _on_device(make_inputs(batch, d_inner, length, seed=length + d_inner)))


def test_triton_without_optional_arguments():
    """No D, z, delta_bias or softplus: the bare scan, still with every gradient right."""
    inputs = _on_device(make_inputs(1, 2, 40))
    bare = {k: inputs[k] for k in ("u", "A", "B", "C")}
    bare["delta"] = inputs["delta"].abs()
    results = {}
    for backend in ("reference", "triton"):
        leaves = {k: v.clone().requires_grad_() for k, v in bare.items()}
        y = selective_scan(**leaves, backend=backend)
        (y * torch.linspace(-1, 1, y.numel(), device=y.device).view_as(y)).sum().backward()
        results[backend] = [y.detach()] + [leaves[k].grad for k in sorted(leaves)]
    for got, expected in zip(results["triton"], results["reference"]):
        torch.testing.assert_close(got, expected, rtol=6e-4, atol=2e-3)


def test_triton_is_stable_with_strong_decay():
    """Δ·|A| up to ~400 a step: Ā underflows to 0; the chunk carry must stay finite and exact."""
    inputs = _on_device(make_inputs(1, 2, 70))
    inputs["delta"] = inputs["delta"].abs() * 20 + 5
    y, grads = assert_matches_reference("triton", inputs)
    assert torch.isfinite(y).all() and all(torch.isfinite(g).all() for g in grads.values())


def test_triton_keeps_low_precision_inputs_dtype():
    inputs = {k: v.half() for k, v in _on_device(make_inputs(1, 2, 40)).items()}
    y = selective_scan(**inputs, delta_softplus=True, backend="triton")
    expected = selective_scan(**{k: v.float() for k, v in inputs.items()}, delta_softplus=True, backend="reference")
    assert y.dtype == torch.float16
    torch.testing.assert_close(y.float(), expected, rtol=2e-3, atol=2e-3)


def test_triton_refuses_fp64_clearly():
    inputs = _on_device(make_inputs(1, 2, 8, dtype=torch.float64))
    with pytest.raises(BackendUnavailable, match="backend 'triton' cannot run: .*fp32"):
        selective_scan(**inputs, backend="triton")
