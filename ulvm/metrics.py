"""Segmentation metrics the paper's way — one confusion matrix pooled over every test pixel — and per image.

The official `test_one_epoch` stacks the predictions and the ground truths of the whole test set into two
long vectors, thresholds both (prediction >= 0.5, soft ground truth >= 0.5) and computes ONE confusion
matrix. From its counts (UltraLight VM-UNet, §4.1, "Evaluation metrics"):

    DSC = 2TP / (2TP + FP + FN)      IoU = TP / (TP + FP + FN)   (the code's "miou" is this foreground IoU)
    ACC = (TP + TN) / all            SE  = TP / (TP + FN)         SP = TN / (TN + FP)
    precision = TP / (TP + FP)

Pooling weights each image by its lesion size, so large lesions dominate. The per-image view (one DSC per
image, `per_image_metrics`) and a bootstrap confidence interval over images (`bootstrap_ci`, images are the
independent units, pixels are not) are what the paper does not report; the book's evaluation chapter
compares both views.

Everything is built on per-image counts `(n_images, 4)` = (TP, FP, FN, TN), computed on the tensors'
device without a host sync (`confusion_counts`), so an evaluation loop only moves 4 numbers per image.
Undefined ratios: DSC and IoU are 1 when prediction and ground truth are both empty (perfect agreement);
SE, SP and precision are NaN when their denominator is 0.
"""
from __future__ import annotations

import numpy as np
import torch

COUNT_NAMES = ("tp", "fp", "fn", "tn")
METRIC_NAMES = ("dsc", "iou", "acc", "se", "sp", "precision")
GT_THRESHOLD = 0.5  # soft ground truth (bilinear-resized masks / 255) counts as lesion from 0.5 on, as the paper


def confusion_counts(probs, targets, threshold: float = 0.5) -> torch.Tensor:
    """Per-image confusion counts: `(n, ...)` probabilities and soft targets -> `(n, 4)` int64 (TP, FP, FN, TN).

    Accepts torch tensors or numpy arrays of any shape whose first axis is the image. A prediction is
    positive when `prob >= threshold`; the ground truth when `target >= 0.5`.
    """
    probs, targets = torch.as_tensor(probs), torch.as_tensor(targets)
    if probs.shape != targets.shape:
        raise ValueError(f"predictions {tuple(probs.shape)} and targets {tuple(targets.shape)} differ in shape")
    n = probs.shape[0] if probs.dim() else 1
    pred = (probs >= threshold).reshape(n, -1)          # (n, pixels)
    true = (targets >= GT_THRESHOLD).reshape(n, -1)     # (n, pixels)
    tp = (pred & true).sum(dim=1)
    fp = (pred & ~true).sum(dim=1)
    fn = (~pred & true).sum(dim=1)
    tn = true.shape[1] - tp - fp - fn
    return torch.stack([tp, fp, fn, tn], dim=1).to(torch.int64)


def confusion(probs, targets, threshold: float = 0.5) -> dict[str, int]:
    """The paper's one confusion matrix over every pixel: {'tp', 'fp', 'fn', 'tn'} as Python ints."""
    total = confusion_counts(probs, targets, threshold).sum(dim=0).tolist()
    return dict(zip(COUNT_NAMES, total))


def _as_counts(counts) -> np.ndarray:
    """A {'tp',...} dict, a (4,) or (n, 4) array/tensor -> float64 array (..., 4)."""
    if isinstance(counts, dict):
        counts = [counts[name] for name in COUNT_NAMES]
    if isinstance(counts, torch.Tensor):
        counts = counts.detach().cpu().numpy()
    counts = np.asarray(counts, dtype=np.float64)
    if counts.shape[-1:] != (4,):
        raise ValueError(f"confusion counts must end in an axis of 4 (TP, FP, FN, TN), got shape {counts.shape}")
    return counts


def _ratio(numerator: np.ndarray, denominator: np.ndarray, when_empty: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1), when_empty)


def metrics_from_counts(counts) -> dict[str, np.ndarray]:
    """The six metrics from confusion counts `(..., 4)`, elementwise over the leading axes."""
    tp, fp, fn, tn = np.moveaxis(_as_counts(counts), -1, 0)
    return {
        "dsc": _ratio(2 * tp, 2 * tp + fp + fn, 1.0),
        "iou": _ratio(tp, tp + fp + fn, 1.0),
        "acc": _ratio(tp + tn, tp + fp + fn + tn, np.nan),
        "se": _ratio(tp, tp + fn, np.nan),
        "sp": _ratio(tn, tn + fp, np.nan),
        "precision": _ratio(tp, tp + fp, np.nan),
    }


def _counts_of(probs_or_counts, targets, threshold: float) -> np.ndarray:
    """Per-image counts `(n, 4)`: from probabilities + targets, or the counts given (dict, `(4,)`, `(n, 4)`)."""
    if targets is not None:
        probs_or_counts = confusion_counts(probs_or_counts, targets, threshold)
    return _as_counts(probs_or_counts).reshape(-1, 4)


def pooled_metrics(probs_or_counts, targets=None, threshold: float = 0.5) -> dict[str, float]:
    """The paper's metrics from one pooled confusion matrix.

    Either `pooled_metrics(probs, targets, threshold=0.5)` (tensors/arrays of any shape), or
    `pooled_metrics(counts)` with the dict of `confusion` or per-image counts `(n, 4)` (summed here).
    """
    pooled = _counts_of(probs_or_counts, targets, threshold).sum(axis=0)
    return {name: float(value) for name, value in metrics_from_counts(pooled).items()}


def per_image_metrics(probs_or_counts, targets=None, threshold: float = 0.5) -> dict[str, np.ndarray]:
    """DSC and IoU of each image: `(n,)` arrays. Takes probabilities + targets, or counts `(n, 4)`."""
    metrics = metrics_from_counts(_counts_of(probs_or_counts, targets, threshold))
    return {"dsc": metrics["dsc"], "iou": metrics["iou"]}


def bootstrap_ci(counts, metric: str = "dsc", *, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 42) -> tuple[float, float]:
    """Percentile bootstrap CI of a POOLED metric, resampling whole images with replacement.

    `counts` are per-image counts `(n, 4)`; each replicate draws n images, pools their counts and
    computes `metric`. Seeded, so the interval is reproducible.
    """
    if metric not in METRIC_NAMES:
        raise ValueError(f"unknown metric {metric!r}; one of {METRIC_NAMES}")
    counts = _as_counts(counts).reshape(-1, 4)
    n = counts.shape[0]
    if n == 0:
        raise ValueError("bootstrap_ci needs at least one image")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_boot, n))          # (n_boot, n) image indices
    pooled = counts[draws].sum(axis=1)                     # (n_boot, 4)
    values = metrics_from_counts(pooled)[metric]
    alpha = (1.0 - level) / 2.0
    low, high = np.nanquantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)
