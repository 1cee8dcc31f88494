"""VM-UNet's SS2D as one grouped scan call against the four per-direction calls it replaced.

The grouped interface (B, C of shape (batch, G, N, L)) is checked against G ungrouped calls for every
trainable backend, and SS2D / a small VSSM against `per_direction_scan_2d`, the previous implementation kept
here as the reference: forward and every gradient to fp32 tolerance. Triton runs interpreted on the CPU
(TRITON_INTERPRET=1, small shapes, as in test_triton_scan.py) and compiled on a GPU (`@pytest.mark.cuda`).
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from ulvm.baselines.vmunet import SS2D, VSSM, VMUNet  # noqa: E402
from ulvm.ssm import selective_scan, triton_scan  # noqa: E402

ON_GPU = torch.cuda.is_available()
HAS_TRITON = not triton_scan.why_unavailable()
CPU_BACKENDS = ["reference", "parallel", "chunked"] + (["triton"] if HAS_TRITON else [])
CUDA = [pytest.mark.cuda, pytest.mark.skipif(not ON_GPU, reason="needs a CUDA GPU"),
        pytest.mark.skipif(not HAS_TRITON, reason=f"needs triton: {triton_scan.why_unavailable()}")]


def per_direction_scan_2d(ss2d: SS2D, x: torch.Tensor) -> torch.Tensor:
    """SS2D.scan_2d as it was: one ungrouped selective scan per direction, four calls."""
    b, e, h, w = x.shape
    length, n = h * w, ss2d.d_state
    rows, cols = x.reshape(b, e, length), x.transpose(2, 3).reshape(b, e, length)
    xs = torch.stack([rows, cols, rows.flip(-1), cols.flip(-1)], dim=1)                    # (B, K, E, L)
    x_dbl = torch.einsum("bkel,kce->bkcl", xs, ss2d.x_proj_weight)
    dts, Bs, Cs = torch.split(x_dbl, [ss2d.dt_rank, n, n], dim=2)
    dts = torch.einsum("bkrl,ker->bkel", dts, ss2d.dt_projs_weight)
    As = -torch.exp(ss2d.A_logs.float()).view(4, e, n)
    Ds, biases = ss2d.Ds.float().view(4, e), ss2d.dt_projs_bias.float()
    ys = [selective_scan(xs[:, i], dts[:, i], As[i], Bs[:, i].contiguous(), Cs[:, i].contiguous(), Ds[i],
                         delta_bias=biases[i], delta_softplus=True, backend=ss2d.backend) for i in range(4)]

    def from_cols(y):
        return y.view(b, e, w, h).transpose(2, 3).reshape(b, e, length)
    return ys[0] + ys[2].flip(-1) + from_cols(ys[1]) + from_cols(ys[3].flip(-1))


@pytest.fixture
def per_direction(monkeypatch):
    """Run every SS2D the old way while active."""
    def use():
        monkeypatch.setattr(SS2D, "scan_2d", per_direction_scan_2d)
    return use


@pytest.fixture(autouse=True)
def short_chunks(monkeypatch):
    if not ON_GPU:                 # several Triton chunks, a partial last one included, at small L
        monkeypatch.setattr(triton_scan, "BLOCK_L", 8)


def _grouped_inputs(batch, groups, d_group, length, d_state=4, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    d = groups * d_group
    tensors = dict(u=torch.randn(batch, d, length, generator=g), delta=torch.randn(batch, d, length, generator=g) * 0.5,
                   A=-torch.rand(d, d_state, generator=g) * 4 - 0.5,
                   B=torch.randn(batch, groups, d_state, length, generator=g),
                   C=torch.randn(batch, groups, d_state, length, generator=g), D=torch.randn(d, generator=g),
                   z=torch.randn(batch, d, length, generator=g), delta_bias=torch.randn(d, generator=g) * 0.1)
    return {k: v.to(device).requires_grad_() for k, v in tensors.items()}


def _value_and_grads(fn, inputs):
    inputs = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    y = fn(**inputs)
    (y * torch.linspace(-1, 1, y.numel(), device=y.device).view_as(y)).sum().backward()
    return y.detach(), {k: v.grad for k, v in inputs.items()}


def _per_group(backend):
    def scan(u, delta, A, B, C, D, z, delta_bias):
        e = u.shape[1] // B.shape[1]
        part = lambda t, k: t[:, k * e:(k + 1) * e]                      # noqa: E731
        return torch.cat([selective_scan(part(u, k), part(delta, k), A[k * e:(k + 1) * e], B[:, k], C[:, k],
                                         D[k * e:(k + 1) * e], part(z, k), delta_bias[k * e:(k + 1) * e],
                                         delta_softplus=True, backend=backend)
                          for k in range(B.shape[1])], dim=1)
    return scan


def _grouped(backend):
    return lambda **inputs: selective_scan(**inputs, delta_softplus=True, backend=backend)


def _assert_close(got, want):
    """fp32 agreement, the absolute tolerance scaled to each tensor's largest value (summation order differs)."""
    (y_got, g_got), (y_want, g_want) = got, want
    for name, a, b in [("y", y_got, y_want)] + [(f"d{name}", g_got[name], g_want[name]) for name in g_want]:
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * max(float(b.abs().max()), 1.0),
                                   msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("batch,groups,d_group,length", [(2, 4, 3, 19), (1, 2, 2, 1), (2, 2, 8, 19)])
def test_grouped_scan_equals_one_call_per_group(backend, batch, groups, d_group, length):
    inputs = _grouped_inputs(batch, groups, d_group, length, seed=length)
    _assert_close(_value_and_grads(_grouped(backend), inputs), _value_and_grads(_per_group(backend), inputs))


def test_grouped_scan_refuses_groups_that_do_not_divide_the_channels():
    inputs = _grouped_inputs(1, 4, 3, 5)
    inputs["B"] = inputs["C"] = torch.randn(1, 5, 4, 5)
    with pytest.raises(ValueError, match="5 groups of B and C do not divide the D=12 channels"):
        selective_scan(**inputs, backend="parallel")


def _ss2d_result(ss2d, x):
    ss2d.zero_grad()
    x = x.detach().clone().requires_grad_()
    y = ss2d(x)
    (y * torch.linspace(-1, 1, y.numel(), device=y.device).view_as(y)).sum().backward()
    return y.detach(), {"x": x.grad, **{name: p.grad.clone() for name, p in ss2d.named_parameters()}}


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_ss2d_one_grouped_call_matches_four_calls(backend, per_direction):
    torch.manual_seed(0)
    ss2d = SS2D(d_model=6, d_state=4, backend=backend)
    x = torch.randn(2, 3, 5, 6)                       # non-square: rows and columns differ
    new = _ss2d_result(ss2d, x)
    per_direction()
    _assert_close(new, _ss2d_result(ss2d, x))


def test_small_vssm_matches_the_per_direction_model(per_direction):
    """A whole U-shaped VSSM (small widths) in training mode, drop path off: outputs and every gradient."""
    torch.manual_seed(0)
    model = VSSM(dims=(8, 16, 32, 64), drop_path_rate=0.0, backend="parallel")
    x = torch.randn(2, 3, 64, 32)
    new = _ss2d_result(model, x)
    per_direction()
    _assert_close(new, _ss2d_result(model, x))


def test_vmunet_keeps_the_official_parameter_names():
    names = set(VMUNet().state_dict())
    assert {"vmunet.layers.0.blocks.0.self_attention.x_proj_weight",
            "vmunet.layers.0.blocks.0.self_attention.dt_projs_weight",
            "vmunet.layers.0.blocks.0.self_attention.A_logs",
            "vmunet.layers.0.blocks.0.self_attention.Ds"} <= names


@pytest.mark.parametrize("backend", ["parallel", "triton"])
@pytest.mark.parametrize("batch,groups,d_group,length", [(2, 4, 96, 4096), (8, 4, 384, 1024), (2, 4, 768, 64)])
@pytest.mark.parametrize("mark", [pytest.param(None, marks=CUDA)])
def test_grouped_scan_equals_one_call_per_group_on_cuda(backend, batch, groups, d_group, length, mark):
    inputs = _grouped_inputs(batch, groups, d_group, length, d_state=16, seed=length, device="cuda")
    _assert_close(_value_and_grads(_grouped(backend), inputs), _value_and_grads(_per_group(backend), inputs))


@pytest.mark.parametrize("mark", [pytest.param(None, marks=CUDA)])
def test_vmunet_matches_the_per_direction_model_on_cuda(per_direction, mark):
    """The real VM-UNet at 128x96, Triton scan, drop path off: the new grouped call against the old four."""
    torch.manual_seed(0)
    model = VMUNet(drop_path_rate=0.0, backend="triton").cuda()
    x = torch.randn(2, 3, 128, 96, device="cuda")
    new = _ss2d_result(model, x)
    per_direction()
    _assert_close(new, _ss2d_result(model, x))


@pytest.mark.parametrize("mark", [pytest.param(None, marks=CUDA)])
def test_drop_path_draws_new_masks_at_every_graph_replay(mark):
    """DropPath's bernoulli_ uses the default CUDA generator, which torch.cuda.graph registers: each replay
    of a recorded step advances its offset, so VM-UNet's stochastic depth stays random in a graphed run."""
    from ulvm.baselines.vmunet import drop_path
    from ulvm.graphs import capture_cuda_graph

    x = torch.ones(4096, 1, device="cuda")
    replay = capture_cuda_graph(lambda: drop_path(x, 0.5, training=True))
    first = replay().clone()
    second = replay().clone()
    assert not torch.equal(first, second)
    for kept in (first, second):
        assert set(kept.unique().tolist()) <= {0.0, 2.0}
        assert 0.45 < (kept > 0).float().mean().item() < 0.55
