"""Trained weights shipped inside the package: `load_pretrained("isic2017")`.

Each entry is a weights-only file (`NAME.pt`: the state dict, the protocol config that builds the network,
and where it came from; no optimizer state) and its model card (`NAME.md`: data, split, protocol, metrics,
licence). Loading reads with `torch.load(weights_only=True)` and works offline, on CPU or GPU.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ...engine.checkpoint import model_from_checkpoint, read_checkpoint
from ...errors import UlvmError

FOLDER = Path(__file__).resolve().parent
FORMAT = "ulvm-weights/1"


def available() -> list[str]:
    """The names of the shipped models."""
    return sorted(path.stem for path in FOLDER.glob("*.pt"))


def weights_path(name: str) -> Path:
    if name not in available():
        raise UlvmError(f"unknown pretrained model {name!r}; shipped: {', '.join(available()) or 'none'}")
    return FOLDER / f"{name}.pt"


def model_card(name: str) -> str:
    """The model card of a shipped model (Markdown)."""
    return (FOLDER / f"{weights_path(name).stem}.md").read_text(encoding="utf-8")


def load_pretrained(name: str = "isic2017", device: str | torch.device = "cpu", backend: str = "auto"):
    """The shipped model `name` in eval mode on `device`, with the protocol config it was trained with as
    `model.config`. Offline: the weights are inside the package."""
    path = weights_path(name)
    checkpoint = read_checkpoint(path)
    if checkpoint.get("format") != FORMAT:
        raise UlvmError(f"{path}: not a ulvm weights file (format {checkpoint.get('format')!r})")
    model, config = model_from_checkpoint(checkpoint, source=str(path), backend=backend)
    model.config = config
    return model.to(device).eval()
