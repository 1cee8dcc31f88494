"""The paper's training loss: BCE + Dice on sigmoid probabilities (UltraLight VM-UNet, §4.1).

The official `BceDiceLoss` is `wb * BCE + wd * DiceLoss` with `wb = wd = 1`, where BCE is the mean binary
cross-entropy over every pixel of the batch and the Dice loss is `1 - mean over the batch of`

    dice(p, t) = (2 * sum(p * t) + smooth) / (sum(p) + sum(t) + smooth),   smooth = 1,

the sums running over the pixels of one image, on soft targets (masks / 255). Because every image has
the same number of pixels, the batch mean of the per-image BCE equals the BCE over the whole batch, so the
loss is computed here per image (`bce_dice_per_image`, shape `(batch,)`) and the training loss is its
mean. The per-image form also makes the validation loss independent of the validation batch size (the
official code validates with batch 1). The book derives the Dice loss in the training chapter.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def bce_dice_per_image(probs: torch.Tensor, targets: torch.Tensor, *, bce_weight: float = 1.0,
                       dice_weight: float = 1.0, smooth: float = 1.0) -> torch.Tensor:
    """`bce_weight * BCE + dice_weight * (1 - dice)` of each image: `(batch, ...)` x2 -> `(batch,)`.

    `probs` are probabilities (the model ends in a sigmoid, as the official one); `targets` are soft
    masks in [0, 1]. Computed in float32 even under autocast (BCE on half precision is unsafe).
    """
    batch = probs.shape[0]
    p = probs.reshape(batch, -1).float()      # (batch, pixels)
    t = targets.reshape(batch, -1).float()    # (batch, pixels)
    with torch.autocast(device_type=p.device.type, enabled=False):
        # F.binary_cross_entropy clamps log() at -100, exactly as the official nn.BCELoss. It refuses NaN
        # probabilities (diverged weights) with an error on CPU and a device assert on CUDA, so it gets a
        # finite stand-in; the NaN still reaches the loss through the Dice sums (0 * NaN is NaN), and the
        # fit loop stops with a clear message.
        bce = F.binary_cross_entropy(torch.nan_to_num(p, nan=0.5), t, reduction="none").mean(dim=1)
        dice = (2.0 * (p * t).sum(dim=1) + smooth) / (p.sum(dim=1) + t.sum(dim=1) + smooth)
    return bce_weight * bce + dice_weight * (1.0 - dice)


def bce_dice_loss(probs: torch.Tensor, targets: torch.Tensor, **weights: float) -> torch.Tensor:
    """The training loss of one batch (a scalar): the batch mean of `bce_dice_per_image`."""
    return bce_dice_per_image(probs, targets, **weights).mean()


def loss_weights(config) -> dict[str, float]:
    """The loss keywords of a `ulvm.config.Config`: `bce_dice_loss(probs, masks, **loss_weights(config))`."""
    return {"bce_weight": config.bce_weight, "dice_weight": config.dice_weight, "smooth": config.dice_smooth}
