"""Checkpoints: weights_only loading, official .pth layouts, clear errors, RNG state round trip."""
import random

import numpy as np
import pytest
import torch

from ulvm.config import Config
from ulvm.engine.checkpoint import load_model_state, read_checkpoint, restore_rng_states, rng_states, save_checkpoint
from ulvm.errors import RunError
from ulvm.registry import build_model


@pytest.fixture(scope="module")
def trained_like():
    torch.manual_seed(0)
    return build_model(Config(), "parallel")


def _fresh(**overrides):
    torch.manual_seed(1)
    return build_model(Config(**overrides), "parallel")


def _same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("layout", ["plain", "model", "model_state_dict", "dataparallel"])
def test_official_checkpoint_layouts_load(tmp_path, trained_like, layout):
    state = trained_like.state_dict()
    wrapped = {
        "plain": state,                                                 # official best.pth
        "model": {"model": state, "epoch": 3},
        "model_state_dict": {"model_state_dict": state, "epoch": 3, "min_loss": 0.2},  # official latest.pth
        "dataparallel": {f"module.{k}": v for k, v in state.items()},
    }[layout]
    path = tmp_path / "weights.pth"
    torch.save(wrapped, path)
    model = _fresh()
    assert not _same_weights(model, trained_like)
    load_model_state(model, path)
    assert _same_weights(model, trained_like)
    assert _same_weights(load_model_state(_fresh(), wrapped), trained_like)   # a dict works as well


def test_wrong_architecture_names_the_file_and_the_keys(tmp_path, trained_like):
    path = tmp_path / "x4.pth"
    torch.save(trained_like.state_dict(), path)
    with pytest.raises(RunError, match=r"x4.pth: weights do not fit.*shape differs: .*mamba"):
        load_model_state(_fresh(parallel=1), path)
    with pytest.raises(RunError, match="x4.pth: weights do not fit.*unexpected: scab"):
        load_model_state(_fresh(bridge=False), path)


def test_unreadable_and_unsafe_files_are_clear_errors(tmp_path):
    truncated = tmp_path / "truncated.pt"
    save_checkpoint(truncated, model={"w": torch.ones(3)})
    truncated.write_bytes(truncated.read_bytes()[:40])
    with pytest.raises(RunError, match="truncated.pt: not a readable checkpoint"):
        read_checkpoint(truncated)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"model": {"w": torch.ones(1)}, "object": Config()}, unsafe)   # pickled class: refused
    with pytest.raises(RunError, match="unsafe.pt: not a ulvm checkpoint or official weights") as refused:
        read_checkpoint(unsafe)
    assert "weights_only=False" not in str(refused.value) and "can still be loaded" not in str(refused.value)
    with pytest.raises(RunError, match="missing.pt: checkpoint not found"):
        read_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(RunError, match="no model state dict"):
        load_model_state(_fresh(), {"epoch": 1})


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    generators = {"g": torch.Generator().manual_seed(5), "n": np.random.default_rng(6)}
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    save_checkpoint(tmp_path / "rng.pt", rng=rng_states(generators))
    draws = lambda: (random.random(), np.random.rand(), torch.rand(1).item(),  # noqa: E731
                     torch.rand(1, generator=generators["g"]).item(), generators["n"].random())
    expected = draws()
    restore_rng_states(read_checkpoint(tmp_path / "rng.pt")["rng"], generators)
    assert draws() == expected
