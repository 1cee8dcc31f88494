"""CUDA-graph training steps (`ulvm.engine.graphs`): they must train exactly like the eager loop."""
import copy

import pytest
import torch

from ulvm.config import Config, RunSettings
from ulvm.engine.graphs import GraphedTrainStep, set_capturable, training_state_restored
from ulvm.engine.losses import loss_weights
from ulvm.engine.optim import build_optimizer
from ulvm.engine.train import fit, fit_together, train_step
from ulvm.model import UltraLightVMUNet

WEIGHTS = loss_weights(Config())


def _batches(device, n=3, batch=2, size=64):
    g = torch.Generator().manual_seed(5)
    return [(torch.rand(batch, 3, size, size, generator=g).to(device) * 255,
             (torch.rand(batch, 1, size, size, generator=g) > 0.5).float().to(device)) for _ in range(n)]


TRITON = RunSettings(device="cuda", backend="triton")


def _twins(backend="parallel", device="cpu", config=Config(), capturable=False):
    """A model and its identical twin, each with the paper's optimizer and scheduler (the first one
    capturable when asked): (model, optimizer, scheduler), (twin, optimizer, scheduler)."""
    torch.manual_seed(0)
    model = UltraLightVMUNet(backend=backend).to(device)
    twin = copy.deepcopy(model)
    return (model, *build_optimizer(model, config, capturable=capturable)), (twin, *build_optimizer(twin, config))


def test_warm_up_steps_inside_the_block_leave_no_trace():
    """Steps taken inside `training_state_restored` (as graph warm-up) change nothing that follows."""
    (model, optimizer, _), (twin, twin_optimizer, _) = _twins()
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


def test_a_checkpointed_optimizer_state_takes_this_runs_mode():
    """State saved by a graphed run (tensor lr, capturable) resumes eagerly, and stays equal to eager state."""
    (model, optimizer, _), (twin, twin_optimizer, _) = _twins()
    batches = _batches("cpu", n=2)
    for opt, net in ((optimizer, model), (twin_optimizer, twin)):
        train_step(net, opt, *batches[0], WEIGHTS)
    set_capturable(optimizer, True)                     # as a graphed run holds and saves it
    group = optimizer.param_groups[0]
    assert torch.is_tensor(group["lr"]) and group["capturable"] and group["fused"]
    resumed, _ = build_optimizer(model, Config())
    resumed.load_state_dict(optimizer.state_dict())
    set_capturable(resumed, False)
    group = resumed.param_groups[0]
    assert isinstance(group["lr"], float) and group["lr"] == pytest.approx(1e-3)
    assert not group["capturable"] and not group["fused"]
    train_step(model, resumed, *batches[1], WEIGHTS)
    train_step(twin, twin_optimizer, *batches[1], WEIGHTS)
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-8)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["parallel", "triton"])
def test_graphed_training_step_follows_the_eager_one(backend):
    # lr 1e-2: large steps, a wrong update would show
    (model, optimizer, scheduler), (twin, twin_optimizer, twin_scheduler) = _twins(
        backend, "cuda", Config(lr=1e-2), capturable=True)
    batches = _batches("cuda")
    step = GraphedTrainStep(lambda x, y: train_step(model, optimizer, x, y, WEIGHTS),
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


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_graphed_run_interrupted_and_resumed_follows_an_uninterrupted_one(tmp_path, monkeypatch):
    """The graph is re-recorded after a resume, on the optimizer state loaded from last.pt."""
    from helpers import interrupted_fit, tiny_config, write_tiny_prepared

    data = write_tiny_prepared(tmp_path / "data")
    config = tiny_config(augment="none", input_size=64)   # L >= 4 in every PVM layer
    clean = fit(config, data, tmp_path / "clean", settings=TRITON, progress=False)
    interrupted_fit(config, data, tmp_path / "cut", monkeypatch, after_epochs=2, settings=TRITON)
    resumed = fit(config, data, tmp_path / "cut", settings=TRITON, progress=False)
    assert resumed.resumed_from_epoch == 2
    for row, clean_row in zip(resumed.history, clean.history):
        assert row["lr"] == pytest.approx(clean_row["lr"], rel=1e-6)
        assert row["train_loss"] == pytest.approx(clean_row["train_loss"], rel=1e-3)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_graphed_runs_trained_together_follow_the_same_runs_trained_alone(tmp_path):
    """`fit_together` on CUDA: one graph per run, replayed on the runs' own streams, interleaved. Each run
    keeps its own memory (before each graph had its own capture stream, 8 runs crashed on an H200)."""
    from helpers import tiny_config, write_tiny_prepared

    data = write_tiny_prepared(tmp_path / "data", n=42)   # 34 training images: a short last batch
    configs = [tiny_config(augment="none", input_size=64, seed=seed, epochs=3) for seed in (1, 2, 3, 4)]
    alone = [fit(config, data, tmp_path / f"alone{i}", settings=TRITON, progress=False)
             for i, config in enumerate(configs)]
    together = fit_together(configs, data, [tmp_path / f"together{i}" for i in range(len(configs))],
                            settings=TRITON, progress=False)
    for one, other in zip(alone, together):
        assert [row["train_loss"] for row in other.history] == pytest.approx(
            [row["train_loss"] for row in one.history], rel=1e-3)
        assert [row["val_loss"] for row in other.history] == pytest.approx(
            [row["val_loss"] for row in one.history], rel=1e-3)
    assert len({round(run.history[-1]["train_loss"], 6) for run in together}) == len(configs)  # 4 distinct runs


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_graphed_run_follows_an_eager_run(tmp_path):
    """`RunSettings.compile`: the graphed step's model through torch.compile trains as the eager loop does."""
    from dataclasses import replace

    from helpers import tiny_config, write_tiny_prepared

    data = write_tiny_prepared(tmp_path / "data", n=42)
    config = tiny_config(augment="none", input_size=64)
    eager = fit(config, data, tmp_path / "eager", settings=replace(TRITON, cuda_graph=False), progress=False)
    compiled = fit(config, data, tmp_path / "compiled", settings=replace(TRITON, compile=True), progress=False)
    for row, eager_row in zip(compiled.history, eager.history):
        assert row["train_loss"] == pytest.approx(eager_row["train_loss"], rel=1e-3)
        assert row["val_loss"] == pytest.approx(eager_row["val_loss"], rel=1e-3)
