"""Equivalence with mamba-ssm's CUDA kernels. Runs only where CUDA and mamba-ssm are present (the GPU
machine; see "On a GPU" in book/how_to_run.md); skipped cleanly elsewhere."""
import pytest
import torch

from helpers import assert_backends_agree, make_inputs
from ulvm.model import UltraLightVMUNet
from ulvm.ssm import Mamba, cuda_kernels, selective_scan  # noqa: E402

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(not cuda_kernels.available(), reason=f"needs mamba-ssm: {cuda_kernels.why_unavailable()}"),
]


def _scan(backend, inputs):
    inputs = {k: v.detach().cuda().requires_grad_() for k, v in inputs.items()}
    y = selective_scan(**inputs, delta_softplus=True, backend=backend)
    weights = torch.linspace(-1, 1, y.numel(), device=y.device).view_as(y)
    (y * weights).sum().backward()
    return y.detach(), {k: v.grad for k, v in inputs.items()}


@pytest.mark.parametrize("length,d_inner", [(64, 24), (64, 32), (256, 16), (1024, 12)])
@pytest.mark.parametrize("backend", ["reference", "parallel", "triton"])
def test_scan_backends_match_mamba_ssm_kernel(backend, length, d_inner):
    inputs = make_inputs(4, d_inner, length, seed=length + d_inner)
    y_cuda, g_cuda = _scan("cuda", inputs)
    y_ours, g_ours = _scan(backend, inputs)
    torch.testing.assert_close(y_ours, y_cuda, rtol=6e-4, atol=2e-3)
    for name in g_cuda:
        torch.testing.assert_close(g_ours[name], g_cuda[name], rtol=6e-4, atol=2e-3, msg=f"grad of {name}")


@pytest.mark.parametrize("fast_path", [True, False])
def test_mamba_ssm_state_dict_loads_strictly_and_matches(fast_path):
    from mamba_ssm import Mamba as MambaSSM

    torch.manual_seed(0)
    official = MambaSSM(d_model=16, use_fast_path=fast_path).cuda()
    ours = Mamba(d_model=16, backend="parallel").cuda()
    ours.load_state_dict(official.state_dict(), strict=True)
    assert list(ours.state_dict()) == list(official.state_dict())
    x = torch.randn(4, 256, 16, device="cuda")
    torch.testing.assert_close(ours(x), official(x), rtol=6e-4, atol=2e-3)
    ours.backend, ours.use_fast_path = "cuda", fast_path
    torch.testing.assert_close(ours(x), official(x), rtol=1e-5, atol=1e-6)


def test_whole_model_cuda_backend_matches_parallel():
    torch.manual_seed(0)
    model, x = UltraLightVMUNet().cuda(), torch.rand(2, 3, 256, 256, device="cuda") * 255
    assert_backends_agree(model, x, "parallel", baseline="cuda")


def test_whole_model_triton_backend_matches_mamba_ssm():
    torch.manual_seed(0)
    model, x = UltraLightVMUNet().cuda(), torch.rand(2, 3, 256, 256, device="cuda") * 255
    assert_backends_agree(model, x, "triton", baseline="cuda")
