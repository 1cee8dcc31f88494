"""Checkpoints: what a run writes every epoch, how it is read back, and loading official weights.

A run folder (`ulvm.engine.train.fit`) holds `last.pt` (the state after the latest finished epoch: model,
optimizer, scheduler, every random-number state, epoch, history, config) and `best.pt` (the same at the
epoch with the lowest validation loss — the paper's model selection). Both are written atomically
(`ulvm.io.atomic_torch_save`: temp file + rename), so a run killed at any instant leaves the previous
epoch's files intact, and resuming from `last.pt` reproduces the uninterrupted run exactly on CPU.

`read_run_checkpoint` reads a run folder's file and refuses, with one clear error, a file that lacks what
this version writes (an older version's run, or official weights copied into a run folder).

Everything stored is plain (tensors, numbers, strings, lists, dicts), so every file is read with
`torch.load(..., weights_only=True)`: loading a checkpoint never runs code from it.

`load_model_state(model, path_or_state)` is the one way weights enter a model: our checkpoints, the
official UltraLight VM-UNet `best.pth` (a plain state dict saved from `model.module`), its
`latest.pth` (`{"model_state_dict": ...}`), or any dict wrapping the weights under `"model"`/`"state_dict"`,
with or without the `module.` prefix of `nn.DataParallel`.
"""
from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ..config import Config
from ..errors import RunError
from ..io import atomic_torch_save
from ..registry import build_model

FORMAT = "ulvm-checkpoint/1"
_WRAPPER_KEYS = ("model", "model_state_dict", "state_dict")
# What `ulvm.engine.train.fit` stores in every run checkpoint (and what resume, `finished_run` and evaluation read).
RUN_KEYS = ("model", "optimizer", "scheduler", "rng", "epoch", "config", "history", "best", "data")
RUN_DATA_KEYS = ("root", "manifest_hash", "content_hash")


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """`torch.load(path, weights_only=True)` with a clear error naming the file when it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # objects weights_only refuses: torch's message suggests the unsafe way
        raise RunError(f"{path}: not a ulvm checkpoint or official weights: it holds Python objects besides tensors "
                       "and numbers, and ulvm never loads those (loading them runs code from the file)") from None
    except Exception as error:  # truncated file, not a torch file
        first = str(error).splitlines()[0] if str(error) else ""
        raise RunError(f"{path}: not a readable checkpoint ({type(error).__name__}: {first[:200]})") from None


def save_checkpoint(path: str | Path, **content: Any) -> Path:
    """Write a checkpoint dict atomically, tagged with the format version."""
    return atomic_torch_save({"format": FORMAT, **content}, path)


def read_run_checkpoint(path: str | Path) -> dict[str, Any]:
    """A run folder's `best.pt` / `last.pt`, checked to hold everything this version's `fit` writes.

    A file written by an older ulvm (e.g. without `data.content_hash`) or official weights copied into a
    run folder are refused here with one error naming the file and what it lacks, instead of a KeyError
    deep inside training or evaluation.
    """
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, Mapping):
        missing = list(RUN_KEYS)
    else:
        missing = [key for key in RUN_KEYS if key not in checkpoint]
        data = checkpoint.get("data")
        missing += [f"data.{key}" for key in RUN_DATA_KEYS if not isinstance(data, Mapping) or key not in data]
    if missing or checkpoint.get("format") != FORMAT:
        found = checkpoint.get("format") if isinstance(checkpoint, Mapping) else None
        lacks = f"missing {', '.join(missing)}" if missing else f"format {found!r}"
        raise RunError(f"{path}: not a run checkpoint of this ulvm version ({FORMAT}; {lacks}); it was written "
                       "by an older version or another program: train the run again (--overwrite), or load "
                       "plain weights with ulvm.engine.checkpoint.load_model_state")
    return checkpoint


def extract_state_dict(checkpoint: Mapping[str, Any], source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The model weights inside any of the accepted layouts, without `module.` prefixes."""
    state = checkpoint
    for key in _WRAPPER_KEYS:
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RunError(f"{source}: no model state dict found (expected tensors, possibly under one of "
                       f"{', '.join(map(repr, _WRAPPER_KEYS))})")
    return {key.removeprefix("module."): value for key, value in state.items()}


def load_model_state(model: torch.nn.Module, path_or_state: str | Path | Mapping[str, Any]) -> torch.nn.Module:
    """Load weights into `model` (strict: every key and shape must match) and return it."""
    if isinstance(path_or_state, (str, Path)):
        source = str(path_or_state)
        checkpoint = read_checkpoint(path_or_state)
    else:
        source, checkpoint = "state dict", path_or_state
    state = extract_state_dict(checkpoint, source)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong_shape:
        def first(keys):
            return ", ".join(keys[:4]) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")
        details = [f"{label}: {first(keys)}" for label, keys in
                   (("missing", missing), ("unexpected", unexpected), ("shape differs", wrong_shape)) if keys]
        raise RunError(f"{source}: weights do not fit this model ({'; '.join(details)}); "
                       "check parallel / bridge / c_list against the run that wrote them")
    model.load_state_dict(state)
    return model


def model_from_checkpoint(checkpoint: Mapping[str, Any], source: str = "checkpoint", backend: str = "auto"):
    """`(model, config)` from one of our checkpoints: the model its config describes, with its weights,
    in eval mode (`backend`: the selective-scan backend it runs with)."""
    if "config" not in checkpoint:  # official weights: their architecture is not recorded in the file
        raise RunError(f"{source}: no config in this checkpoint (not written by ulvm); build the model and "
                       "load the weights with load_model_state")
    config = Config.from_dict(checkpoint["config"], source=source)
    model = build_model(config, backend)
    load_model_state(model, checkpoint)
    return model.eval(), config


def load_run(run_dir: str | Path, which: str = "best", device: str | torch.device = "cpu", backend: str = "auto"):
    """The model of a run folder and its config: `(model, config)`.

    `which` = "best" (lowest validation loss, what the paper tests) or "last".
    """
    path = Path(run_dir) / f"{which}.pt"
    model, config = model_from_checkpoint(read_run_checkpoint(path), source=str(path), backend=backend)
    return model.to(device), config


# --- random-number states: restoring them is what makes a resumed run equal an uninterrupted one ------

Generator = torch.Generator | np.random.Generator


def rng_states(generators: Mapping[str, Generator]) -> dict[str, Any]:
    """Every RNG the training loop draws from (global ones and `generators`), as weights_only-safe values."""
    numpy_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                  "pos": int(numpy_state["state"]["pos"]),
                  "has_gauss": int(numpy_state["has_gauss"]), "gauss": float(numpy_state["gauss"])},
        "torch": torch.get_rng_state(),
        "generators": {name: g.get_state() if isinstance(g, torch.Generator) else g.bit_generator.state
                       for name, g in generators.items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_states(state: Mapping[str, Any], generators: Mapping[str, Generator]) -> None:
    """Put every RNG back where `rng_states` found it."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": numpy_state["key"].numpy().astype(np.uint32),
                                   "pos": numpy_state["pos"]},
                         "has_gauss": numpy_state["has_gauss"], "gauss": numpy_state["gauss"]})
    torch.set_rng_state(state["torch"])
    for name, generator in generators.items():
        if isinstance(generator, torch.Generator):
            generator.set_state(state["generators"][name])
        else:
            generator.bit_generator.state = state["generators"][name]
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
