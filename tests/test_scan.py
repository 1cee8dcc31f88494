"""The selective-scan interface: every backend against the sequential reference, forward and backward."""
import logging

import pytest
import torch

from helpers import assert_matches_reference, make_inputs
from ulvm.errors import BackendUnavailable
from ulvm.ssm import associative_scan, backends, selective_scan


@pytest.mark.parametrize("length,d_inner", [(64, 24), (64, 32), (256, 16), (1024, 12)])
def test_parallel_matches_reference_forward_and_backward(length, d_inner):
    assert_matches_reference("parallel", make_inputs(2, d_inner, length))


def test_reference_is_exact_in_float64_against_a_plain_loop():
    """The reference backend against an independent scalar loop over (b, d, n), in fp64."""
    inputs = {k: v.detach() for k, v in make_inputs(1, 3, 20, d_state=4, dtype=torch.float64).items()}
    y = selective_scan(**inputs, delta_softplus=True, backend="reference")
    u, A, B, C, D, z = (inputs[k] for k in "u A B C D z".split())
    delta = torch.nn.functional.softplus(inputs["delta"] + inputs["delta_bias"][:, None])
    expected = torch.zeros_like(u)
    for d in range(u.shape[1]):
        h = torch.zeros(A.shape[1], dtype=torch.float64)
        for t in range(u.shape[2]):
            h = torch.exp(delta[0, d, t] * A[d]) * h + delta[0, d, t] * B[0, :, t] * u[0, d, t]
            y_t = (C[0, :, t] * h).sum() + D[d] * u[0, d, t]
            expected[0, d, t] = y_t * torch.nn.functional.silu(z[0, d, t])
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("length", [1, 2, 3, 7, 64, 100])
def test_associative_scan_any_length_and_input_untouched(length):
    g = torch.Generator().manual_seed(length)
    a = torch.rand(2, 3, length, 4, generator=g, dtype=torch.float64)
    b = torch.randn(2, 3, length, 4, generator=g, dtype=torch.float64)
    a0, b0 = a.clone(), b.clone()
    h, expected = associative_scan(a, b), torch.zeros_like(b)
    state = torch.zeros_like(b[..., 0, :])
    for t in range(length):
        state = a[..., t, :] * state + b[..., t, :]
        expected[..., t, :] = state
    torch.testing.assert_close(h, expected)
    assert torch.equal(a, a0) and torch.equal(b, b0)


def test_parallel_scan_is_stable_with_strong_decay():
    """Large Δ·|A| (decay products underflow to 0) must give finite values equal to the reference."""
    inputs = {k: v.detach() for k, v in make_inputs(1, 4, 512).items()}
    inputs["delta"] = inputs["delta"].abs() * 20 + 5          # Δ·A down to about -16·25 per step
    y_ref = selective_scan(**inputs, delta_softplus=True, backend="reference")
    y_par = selective_scan(**inputs, delta_softplus=True, backend="parallel")
    assert torch.isfinite(y_par).all()
    torch.testing.assert_close(y_par, y_ref, rtol=6e-4, atol=2e-3)


def test_optional_arguments_match_mamba_semantics():
    """Without D, z, delta_bias and softplus the output is the bare scan."""
    inputs = {k: v.detach() for k, v in make_inputs(1, 4, 16).items()}
    bare = selective_scan(inputs["u"], inputs["delta"].abs(), inputs["A"], inputs["B"], inputs["C"],
                          backend="parallel")
    with_d = selective_scan(inputs["u"], inputs["delta"].abs(), inputs["A"], inputs["B"], inputs["C"],
                            D=inputs["D"], backend="parallel")
    torch.testing.assert_close(with_d - bare, inputs["u"] * inputs["D"][:, None])


def test_cuda_backend_on_cpu_says_why():
    inputs = {k: v.detach() for k, v in make_inputs(1, 4, 8).items()}
    with pytest.raises(BackendUnavailable, match="backend 'cuda' cannot run: .*(not importable|no CUDA|on cpu)"):
        selective_scan(**inputs, backend="cuda")


def test_unknown_backend_and_bad_shapes_are_clear_errors():
    inputs = {k: v.detach() for k, v in make_inputs(1, 4, 8).items()}
    with pytest.raises(BackendUnavailable, match="unknown selective-scan backend 'fast'"):
        selective_scan(**inputs, backend="fast")
    inputs["B"] = inputs["B"][:, :, :5]
    with pytest.raises(ValueError, match=r"B has shape \(1, 16, 5\), expected \(1, 16, 8\)"):
        selective_scan(**inputs, backend="parallel")


def test_auto_logs_its_choice_once(caplog, monkeypatch):
    monkeypatch.setattr(backends, "_announced", set())
    inputs = {k: v.detach() for k, v in make_inputs(1, 4, 8).items()}
    with caplog.at_level(logging.INFO, logger="ulvm.ssm.backends"):
        selective_scan(**inputs, backend="auto")
        selective_scan(**inputs, backend="auto")
    messages = [r.getMessage() for r in caplog.records if "chose" in r.getMessage()]
    # CPU tensors: the fastest pure-PyTorch backend, also on a machine with mamba-ssm and a GPU
    assert len(messages) == 1 and "chose 'parallel' on cpu" in messages[0]


def test_triton_backend_without_triton_says_why(monkeypatch):
    monkeypatch.setattr(backends.triton_scan, "_kernels", lambda: (None, "triton is not importable (test)"))
    inputs = {k: v.detach() for k, v in make_inputs(1, 4, 8).items()}
    with pytest.raises(BackendUnavailable, match="backend 'triton' cannot run: triton is not importable"):
        selective_scan(**inputs, backend="triton")
