"""UltraLight VM-UNet and its parts: exact parameter counts, official state-dict keys, init, equivalences."""
import math

import pytest
import torch
import torch.nn.functional as F

from helpers import assert_backends_agree
from ulvm.complexity import count_params, mamba_param_formula, params_by_child
from ulvm.model import PVMLayer, UltraLightVMUNet
from ulvm.ssm import Mamba


@pytest.mark.parametrize("parallel,params", [(1, 136_269), (2, 69_589), (4, 49_457)])
def test_parameter_counts_are_the_papers(parallel, params):
    assert count_params(UltraLightVMUNet(parallel=parallel)) == params


def test_state_dict_keys_are_the_official_ones():
    keys = UltraLightVMUNet().state_dict()
    expected_shapes = {
        "encoder1.0.weight": (8, 3, 3, 3),
        "encoder4.0.skip_scale": (1,),
        "encoder4.0.norm.weight": (24,),
        "encoder4.0.mamba.in_proj.weight": (24, 6),       # d_model = 24 / 4, 2·d_inner = 24
        "encoder4.0.mamba.conv1d.weight": (12, 1, 4),
        "encoder4.0.mamba.x_proj.weight": (33, 12),       # dt_rank 1 + 2·16
        "encoder4.0.mamba.dt_proj.weight": (12, 1),
        "encoder4.0.mamba.dt_proj.bias": (12,),
        "encoder4.0.mamba.A_log": (12, 16),
        "encoder4.0.mamba.D": (12,),
        "encoder4.0.mamba.out_proj.weight": (6, 12),
        "encoder4.0.proj.weight": (32, 24),
        "decoder1.0.mamba.in_proj.weight": (64, 16),      # d_model = 64 / 4, 2·d_inner = 64
        "scab.catt.get_all_att.weight": (1, 1, 3),
        "scab.catt.att1.weight": (8, 128),                # 8+16+24+32+48 pooled channels
        "scab.catt.att5.bias": (48,),
        "scab.satt.shared_conv2d.0.weight": (1, 2, 7, 7),
        "ebn5.weight": (48,), "dbn1.weight": (48,), "dbn5.weight": (8,),
        "final.weight": (1, 8, 1, 1),
    }
    for key, shape in expected_shapes.items():
        assert tuple(keys[key].shape) == shape, key
    assert len(keys) == 129
    assert not any(k.startswith("scab") for k in UltraLightVMUNet(bridge=False).state_dict())


def test_official_style_state_dict_loads_strictly_and_reproduces_the_output():
    torch.manual_seed(0)
    source = UltraLightVMUNet(backend="parallel").eval()
    state = {k: v.clone() for k, v in source.state_dict().items()}
    target = UltraLightVMUNet(backend="reference").eval()
    target.load_state_dict(state, strict=True)
    x = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x), rtol=1e-4, atol=1e-5)



def test_backends_agree_on_the_whole_model_forward_and_backward():
    torch.manual_seed(1)
    assert_backends_agree(UltraLightVMUNet(), torch.rand(2, 3, 64, 64) * 255, "parallel", baseline="reference")


@pytest.mark.parametrize("parallel", [1, 2, 4])
def test_pvm_batched_chunks_equal_the_official_chunk_loop(parallel):
    torch.manual_seed(parallel)
    layer = PVMLayer(32, 48, parallel=parallel, backend="parallel")
    with torch.no_grad():
        layer.skip_scale.fill_(0.7)
    x = torch.randn(3, 32, 8, 8)
    batched = layer(x)
    layer.batch_chunks = False                    # the official forward: one Mamba call per chunk
    torch.testing.assert_close(batched, layer(x), rtol=1e-5, atol=1e-6)


def test_official_init_overwrites_mambas_dt_init():
    model = UltraLightVMUNet()
    mamba = model.encoder4[0].mamba
    assert torch.equal(mamba.dt_proj.bias, torch.zeros_like(mamba.dt_proj.bias))   # Δ starts at softplus(0)
    torch.testing.assert_close(mamba.A_log, torch.log(torch.arange(1, 17.0)).repeat(12, 1))  # kept
    assert torch.equal(mamba.D, torch.ones(12))
    linear = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, torch.nn.Linear)])
    assert abs(linear.std().item() - 0.02) < 0.002 and linear.abs().max() <= 2.0
    final = model.final.weight
    assert abs(final.std().item() - math.sqrt(2.0 / 1)) < 1.0 and torch.equal(model.final.bias, torch.zeros(1))


def test_bare_mamba_keeps_mamba_ssm_init():
    torch.manual_seed(0)
    block = Mamba(d_model=32, dt_min=0.001, dt_max=0.1)
    dt = F.softplus(block.dt_proj.bias)
    assert dt.min() >= 0.001 * 0.999 and dt.max() <= 0.1 * 1.001
    bound = block.dt_rank ** -0.5
    assert block.dt_proj.weight.abs().max() <= bound
    assert getattr(block.dt_proj.bias, "_no_reinit", False)


@pytest.mark.parametrize("d_model,d_state,d_conv,expand",
                         [(6, 16, 4, 2), (16, 16, 4, 2), (48, 8, 3, 1), (64, 16, 4, 2)])
def test_mamba_parameter_formula(d_model, d_state, d_conv, expand):
    block = Mamba(d_model, d_state=d_state, d_conv=d_conv, expand=expand)
    formula = mamba_param_formula(d_model, d_state, d_conv, expand)
    assert count_params(block) == formula["total"]
    assert params_by_child(block) == {k: v for k, v in formula.items() if k != "total"}
    for name in ("in_proj", "x_proj", "out_proj"):
        assert getattr(block, name).weight.numel() == formula[name]


def test_mamba_ssm_style_state_dict_round_trip():
    """A state dict with mamba-ssm's names and shapes (as `mamba_ssm.Mamba(16).state_dict()` has) loads strictly."""
    d_model, inner, rank, n = 16, 32, 1, 16
    g = torch.Generator().manual_seed(0)
    state = {
        "A_log": torch.log(torch.arange(1, n + 1.0)).repeat(inner, 1), "D": torch.rand(inner, generator=g),
        "in_proj.weight": torch.randn(2 * inner, d_model, generator=g),
        "conv1d.weight": torch.randn(inner, 1, 4, generator=g), "conv1d.bias": torch.randn(inner, generator=g),
        "x_proj.weight": torch.randn(rank + 2 * n, inner, generator=g),
        "dt_proj.weight": torch.randn(inner, rank, generator=g), "dt_proj.bias": torch.randn(inner, generator=g),
        "out_proj.weight": torch.randn(d_model, inner, generator=g),
    }
    block = Mamba(d_model)
    block.load_state_dict(state, strict=True)
    saved = block.state_dict()
    assert saved.keys() == state.keys() and all(torch.equal(saved[k], state[k]) for k in state)


def test_mixer_conv_is_a_plain_unet_and_bad_settings_are_refused():
    plain = UltraLightVMUNet(mixer="conv", bridge=False)
    assert not any(isinstance(m, PVMLayer) for m in plain.modules())
    assert plain(torch.rand(1, 3, 64, 64)).shape == (1, 1, 64, 64)
    with pytest.raises(ValueError, match="not divisible by parallel=5"):
        UltraLightVMUNet(parallel=5)
    with pytest.raises(ValueError, match="c_list needs 6"):
        UltraLightVMUNet(c_list=(8, 16))
