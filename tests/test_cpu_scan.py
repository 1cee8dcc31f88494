"""Backend "cpp", the fused C++ scan for CPU inference, against the sequential reference (fp64 and fp32),
in the whole model, and its refusals. Skipped where the operator cannot be built (no C++ compiler/ninja):
the first test in a fresh environment compiles it (~1 minute)."""
import pytest
import torch

from helpers import make_inputs
from ulvm.errors import BackendUnavailable
from ulvm.model import UltraLightVMUNet
from ulvm.ssm import REGISTRY, resolve, selective_scan
from ulvm.ssm.pytorch_scan import pytorch_selective_scan, scan_reference

torch.set_num_threads(1)


@pytest.fixture(scope="module", autouse=True)
def built():
    with torch.no_grad():
        reason = REGISTRY["cpp"].why_unavailable(torch.zeros(1))
    if reason:
        pytest.skip(f"backend 'cpp' unavailable here: {reason}")


def _detached(inputs):
    return {name: tensor.detach() for name, tensor in inputs.items()}


@pytest.mark.parametrize("length", [1, 2, 7, 64, 100, 1024])
@pytest.mark.parametrize("options", [dict(delta_softplus=True), dict(D=None, z=None, delta_bias=None)])
def test_matches_reference_in_float64(length, options):
    """Every optional input used or left out; exact to rounding in fp64 (the loop is the reference's)."""
    inputs = {**_detached(make_inputs(2, 4, length, dtype=torch.float64)), **options}
    with torch.no_grad():
        y_ref = pytorch_selective_scan(scan_reference, **inputs)
        y = selective_scan(**inputs, backend="cpp")
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)


def test_strided_inputs_as_mamba_passes_them():
    """B and C as (batch, N, L) views of a time-major tensor, z a channel slice: read in place, same result."""
    inputs = _detached(make_inputs(2, 6, 80, dtype=torch.float64))
    x_dbl = torch.cat([inputs["B"].transpose(1, 2), inputs["C"].transpose(1, 2)], dim=-1)     # (b, L, 2N)
    xz = torch.cat([inputs["u"], inputs["z"]], dim=1).transpose(0, 1).contiguous().transpose(0, 1)
    strided = {**inputs, "B": x_dbl[..., :16].transpose(1, 2), "C": x_dbl[..., 16:].transpose(1, 2),
               "z": xz[:, 6:]}
    assert not strided["B"].is_contiguous() and not strided["z"].is_contiguous()
    with torch.no_grad():
        expected = pytorch_selective_scan(scan_reference, **inputs, delta_softplus=True)
        got = selective_scan(**strided, delta_softplus=True, backend="cpp")
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_causal_conv_silu_is_the_mamba_conv():
    """The shifted-adds causal conv of backend "cpp" equals Mamba's Conv1d(padding=K-1)[..., :L] + silu."""
    from ulvm.ssm import Mamba

    mamba = Mamba(d_model=8).double()
    x = torch.randn(3, mamba.d_inner, 50, dtype=torch.float64)
    with torch.no_grad():
        expected = torch.nn.functional.silu(mamba.conv1d(x)[..., :50])
        got = REGISTRY["cpp"].conv_silu(x, mamba.conv1d.weight, mamba.conv1d.bias)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_float32_half_inputs_and_strong_decay():
    """fp32 to fp32 tolerances, with Δ up to ~25 (decay underflows to 0, never inf/nan); fp16 in, fp16 out."""
    inputs = _detached(make_inputs(2, 12, 300))
    inputs["delta"] = inputs["delta"].abs() * 40
    with torch.no_grad():
        y_ref = pytorch_selective_scan(scan_reference, **inputs, delta_softplus=True)
        y = selective_scan(**inputs, delta_softplus=True, backend="cpp")
        y_half = selective_scan(**{k: v.half() for k, v in inputs.items()}, delta_softplus=True, backend="cpp")
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    assert y_half.dtype == torch.float16 and torch.isfinite(y_half).all()


def test_whole_model_matches_parallel():
    torch.manual_seed(0)
    model = UltraLightVMUNet(backend="parallel").eval()
    x = torch.rand(2, 3, 64, 64) * 255
    with torch.no_grad():
        expected = model(x)
        got = model.set_backend("cpp")(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_refuses_to_train_and_non_cpu_tensors():
    """Forward only: resolving it for a call that needs gradients says so, before anything runs."""
    x = torch.zeros(1, requires_grad=True)
    with pytest.raises(BackendUnavailable, match="forward only.*'parallel'"):
        resolve("cpp", x)
    with torch.no_grad():
        assert resolve("cpp", x).name == "cpp"
    assert "on meta" in REGISTRY["cpp"].why_unavailable(torch.zeros(1, device="meta"))
