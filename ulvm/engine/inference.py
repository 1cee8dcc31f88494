"""Inference: a trained network applied to images, apart from the training loop.

`predict_batches(model, images, batch_size)` runs a model over tensors already normalised the paper's way
(what evaluation uses); `validate` adds the loss and pooled DSC / IoU of the validation pass; `overlay` draws
a prediction (red outline) and optionally the ground truth (green) on an image. Files in, masks out:
`ulvm.predict`.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from ..config import Config
from ..data.tensors import batches
from ..metrics import confusion_counts, pooled_metrics
from .losses import bce_dice_per_image, loss_weights


@torch.no_grad()
def predict_batches(model: torch.nn.Module, images: torch.Tensor,
                    batch_size: int) -> Iterator[tuple[slice, torch.Tensor]]:
    """Probabilities `(batch, 1, S, S)` for consecutive slices of `images` `(n, 3, S, S)` (model in eval mode)."""
    model.eval()
    for part in batches(images.shape[0], batch_size):
        yield part, model(images[part]).float()


def validate(model, images, masks, config: Config, batch_size: int = 8) -> dict[str, float]:
    """Validation loss (mean over images, as the official batch-1 loop) and pooled DSC / IoU."""
    loss_sum = torch.zeros((), device=images.device)
    counts = torch.zeros(4, dtype=torch.int64, device=images.device)
    for part, probs in predict_batches(model, images, batch_size):
        loss_sum += bce_dice_per_image(probs, masks[part], **loss_weights(config)).sum()
        counts += confusion_counts(probs, masks[part], config.threshold).sum(dim=0)
    metrics = pooled_metrics(counts.cpu())
    return {"val_loss": loss_sum.item() / images.shape[0], "val_dsc": metrics["dsc"], "val_iou": metrics["iou"]}


def outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of a boolean mask `(H, W)` with a 4-neighbour outside it (a one-pixel contour)."""
    padded = np.pad(mask, 1, mode="edge")
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def overlay(image: np.ndarray, predicted: np.ndarray, truth: np.ndarray | None = None) -> np.ndarray:
    """`image` `(H, W, 3)` uint8 with the outline of `predicted` in red and of `truth` (if given) in green."""
    drawn = image.copy()
    if truth is not None:
        drawn[outline(truth)] = (0, 255, 0)
    drawn[outline(predicted)] = (255, 0, 0)
    return drawn
