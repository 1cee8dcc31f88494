"""CUDA-graph training steps (`ulvm.graphs`): they must train exactly like the eager loop."""
import copy

import pytest
import torch

from ulvm.config import Config
from ulvm.graphs import GraphedTrainStep, training_state_restored
from ulvm.model import UltraLightVMUNet
from ulvm.train import build_optimizer, loss_weights, train_step

WEIGHTS = loss_weights(Config())


def _batches(device, n=3, batch=2, size=64):
    g = torch.Generator().manual_seed(5)
    return [(torch.rand(batch, 3, size, size, generator=g).to(device) * 255,
             (torch.rand(batch, 1, size, size, generator=g) > 0.5).float().to(device)) for _ in range(n)]


def test_warm_up_steps_inside_the_block_leave_no_trace():
    """Steps taken inside `training_state_restored` (as graph warm-up) change nothing that follows."""
    torch.manual_seed(0)
    model = UltraLightVMUNet(backend="parallel")
    twin = copy.deepcopy(model)
    optimizer, _ = build_optimizer(model, Config())
    twin_optimizer, _ = build_optimizer(twin, Config())
    batches = _batches("cpu")
    with training_state_restored(model, optimizer):
        for images, masks in batches:
            train_step(model, optimizer, images, masks, WEIGHTS)
        assert not torch.equal(model.final.weight, twin.final.weight)      # the block did train
    for images, masks in batches:
        train_step(model, optimizer, images, masks, WEIGHTS)
        train_step(twin, twin_optimizer, images, masks, WEIGHTS)
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["parallel", "triton"])
def test_graphed_training_step_follows_the_eager_one(backend):
    torch.manual_seed(0)
    model = UltraLightVMUNet(backend=backend).cuda()
    twin = copy.deepcopy(model)
    config = Config(lr=1e-2)          # large steps: a wrong update would show
    optimizer, scheduler = build_optimizer(model, config, capturable=True)
    twin_optimizer, twin_scheduler = build_optimizer(twin, config)
    batches = _batches("cuda")
    step = GraphedTrainStep(lambda x, y: train_step(model, optimizer, x, y, WEIGHTS, keep_grad_tensors=True),
                            model, optimizer, *batches[0])
    for images, masks in batches:
        loss = step(images, masks).clone()
        twin_loss = train_step(twin, twin_optimizer, images, masks, WEIGHTS)
        torch.testing.assert_close(loss, twin_loss, rtol=1e-4, atol=1e-5)
        scheduler.step()                # the tensor learning rate changes in place, under the graph
        twin_scheduler.step()
    assert float(optimizer.param_groups[0]["lr"]) == pytest.approx(twin_optimizer.param_groups[0]["lr"])
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-5)
