"""The chunked (exportable) selective scan against the sequential reference: fp64 forward and gradients."""
import copy
from functools import partial

import pytest
import torch

from helpers import make_inputs, run_scan
from ulvm.model import UltraLightVMUNet
from ulvm.ssm.chunked_scan import scan_chunked
from ulvm.ssm.pytorch_scan import pytorch_selective_scan


def selective_scan_chunked(*args, chunk_size=16, **kwargs):
    """The "chunked" backend with a given chunk size."""
    return pytorch_selective_scan(partial(scan_chunked, chunk_size=chunk_size), *args, **kwargs)

torch.set_num_threads(1)


def grads_equal(grads, expected, tol):
    for name, g_ref in expected.items():
        g = grads[name] if grads[name] is not None else torch.zeros_like(g_ref)   # L = 1: A unused, grad None
        torch.testing.assert_close(g, g_ref, rtol=tol, atol=tol, msg=f"grad of {name}")


def run_chunked(inputs, **kwargs):
    inputs = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    y = selective_scan_chunked(**inputs, delta_softplus=True, **kwargs)
    (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum().backward()   # as helpers.run_scan
    return y.detach(), {k: v.grad for k, v in inputs.items()}


@pytest.mark.parametrize("length,chunk", [(1, 16), (2, 8), (7, 4), (64, 16), (256, 16), (1024, 16), (1024, 8),
                                          (1024, 4), (100, 8), (300, 32), (64, 2)])
def test_matches_reference_in_float64(length, chunk):
    """Forward and every input gradient to ~1e-10, for L below, equal to and not a multiple of the chunk
    (and chunk ends that need padding one level up: 100 = 13 chunks of 8, 13 = 2 chunks of 8 ...)."""
    inputs = make_inputs(2, 4, length, dtype=torch.float64)
    y_ref, g_ref = run_scan("reference", inputs)
    y, grads = run_chunked(inputs, chunk_size=chunk)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    grads_equal(grads, g_ref, 1e-10)


def test_strong_decay_is_stable():
    """Δ·A down to about -16·25 per step: decays underflow to 0, never overflow (no inf/nan), still exact."""
    inputs = make_inputs(1, 4, 200, dtype=torch.float64)
    inputs = {k: v.detach() for k, v in inputs.items()}
    inputs["delta"] = (inputs["delta"].abs() * 20 + 5).requires_grad_()
    y_ref, g_ref = run_scan("reference", inputs)
    y, grads = run_chunked(inputs, chunk_size=16)
    assert torch.isfinite(y).all() and all(torch.isfinite(g).all() for g in grads.values() if g is not None)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    grads_equal(grads, g_ref, 1e-10)


def test_backend_chunked_through_selective_scan_and_fp32():
    from ulvm.ssm import selective_scan
    inputs = {k: v.detach() for k, v in make_inputs(2, 8, 130).items()}
    y = selective_scan(**inputs, delta_softplus=True, backend="chunked")
    torch.testing.assert_close(y, selective_scan(**inputs, delta_softplus=True, backend="reference"),
                               rtol=6e-4, atol=2e-3)


def test_whole_model_chunked_matches_parallel():
    from ulvm.deploy.export import amplify_mamba_
    torch.manual_seed(0)
    model = amplify_mamba_(UltraLightVMUNet(backend="parallel")).eval()
    x = torch.rand(2, 3, 64, 64) * 255
    with torch.no_grad():
        y_par = model(x)
        y_chunked = model.set_backend("chunked")(x)
        y_without_mamba = amplify_mamba_(copy.deepcopy(model), 0.0)(x)
    assert (y_without_mamba - y_par).abs().max() > 2e-2     # the Mamba branches matter for the output here
    torch.testing.assert_close(y_chunked, y_par, rtol=1e-5, atol=1e-5)
