"""PVM as a drop-in layer: the Mamba baselines with PVM layers, built by module surgery."""
import pytest
import torch

from ulvm.baselines import LightMUNet, VMUNet
from ulvm.baselines.lightmunet import MambaLayer
from ulvm.baselines.pvm_variants import PVM_VARIANTS, replace_modules
from ulvm.baselines.vmunet import SS2D
from ulvm.complexity import count_params
from ulvm.config import Config
from ulvm.model import PVMLayer
from ulvm.registry import build_model, known

torch.set_num_threads(1)


@pytest.mark.parametrize("base, original, kind", [("lightmunet", LightMUNet, MambaLayer), ("vmunet", VMUNet, SS2D)])
def test_every_mamba_layer_is_replaced_and_the_variants_are_smaller(base, original, kind):
    torch.manual_seed(0)
    plain = count_params(original(backend="parallel"))
    counts = []
    for parallel in (2, 4):
        model = build_model(Config(model=f"{base}_pvm{parallel}"), "parallel")
        assert not any(isinstance(m, kind) for m in model.modules())
        layers = [m for m in model.modules() if isinstance(m, PVMLayer)]
        assert layers and {layer.parallel for layer in layers} == {parallel}
        counts.append(count_params(model))
    assert plain > counts[0] > counts[1]                   # ×4 splits further than ×2
    assert f"{base}_pvm2" in known() and f"{base}_pvm4" in known()


@pytest.mark.parametrize("name", sorted(PVM_VARIANTS))
def test_the_variants_run_forward_and_backward(name):
    torch.manual_seed(0)
    model = build_model(Config(model=name), "parallel")
    x = torch.rand(2, 3, 32, 32) * 255
    out = model(x)
    assert out.shape == (2, 1, 32, 32) and ((out >= 0) & (out <= 1)).all()
    out.mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.set_backend("reference")
    assert {layer.mamba.backend for layer in model.modules() if isinstance(layer, PVMLayer)} == {"reference"}


def test_replace_modules_counts_and_keeps_the_rest():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Linear(2, 2)))
    assert replace_modules(net, torch.nn.Linear, lambda old: torch.nn.Identity()) == 2
    assert isinstance(net[0], torch.nn.Identity) and isinstance(net[1][0], torch.nn.ReLU)
    assert isinstance(net[1][1], torch.nn.Identity)
