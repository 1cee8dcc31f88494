"""The training/evaluation Dataset with the paper's normalisation and augmentation.

Paper's loader (loader.py, `dataset_normalized` + `isic_loader`), reproduced:
- normalisation: z-score with the mean and std of the WHOLE split (all pixels, all channels), then
  per-image min-max to [0, 255]. The network therefore sees values in 0..255, not 0..1;
- masks are divided by 255 and used as soft targets (their bilinear-resized edges stay soft);
- training augmentation: `ulvm.data.augment` (rot90 + flip, rotation by 20..79 degrees).

A finding for readers: z-scoring is an affine map x -> (x - mean) / std with std > 0, and per-image
min-max removes every increasing affine map, so the split statistics have NO effect on what the network
sees: `paper_normalize(x, mean, std) == paper_normalize(x, 0, 1)` (up to float rounding), i.e. each image
is simply stretched to span 0..255. We implement the pipeline as the paper does anyway and test the
identity (tests/test_data_augment.py); `notebooks/04_data.ipynb` shows it.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from .augment import paper_augment
from .prepared import PreparedDataset


def split_statistics(images, rows=None, chunk: int = 64) -> tuple[float, float]:
    """Mean and (population) std over all values of a split, as `np.mean` / `np.std` in the paper.

    images: (n, H, W, C) uint8 (or float) array or tensor; `rows` selects the split's images. uint8 is
    summed exactly in integers, chunk by chunk (no float64 copy of the whole split).
    """
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    rows = np.arange(len(images)) if rows is None else np.asarray(rows)
    if len(rows) == 0:
        raise ValueError("split_statistics of an empty split")
    accumulate = np.int64 if images.dtype == np.uint8 else np.float64
    total = total_sq = accumulate(0)
    for start in range(0, len(rows), chunk):
        part = images[rows[start:start + chunk]].astype(accumulate)
        total += part.sum()
        total_sq += (part * part).sum()
    count = len(rows) * int(np.prod(images.shape[1:]))
    if accumulate is np.int64:  # exact: variance = (count * sum(x^2) - sum(x)^2) / count^2
        variance = (count * int(total_sq) - int(total) ** 2) / count**2
    else:
        variance = max(float(total_sq) / count - (float(total) / count) ** 2, 0.0)
    return float(total) / count, variance**0.5


def paper_normalize(images, mean: float, std: float):
    """The paper's normalisation: (x - mean) / std, then per-image min-max to [0, 255]; float32.

    images: one image, (H, W, C) or (C, H, W), or a batch (4-D, first axis = image), NumPy array or torch
    tensor (any device); min and max are taken per image. A constant image (max = min, where the paper divides by zero) becomes all zeros.
    """
    is_tensor = isinstance(images, torch.Tensor)
    x = images.to(torch.float32) if is_tensor else np.asarray(images, dtype=np.float32)
    z = (x - mean) / std
    axes = tuple(range(1, x.ndim)) if x.ndim == 4 else tuple(range(x.ndim))
    if is_tensor:
        low, high = z.amin(dim=axes, keepdim=True), z.amax(dim=axes, keepdim=True)
    else:
        low, high = z.min(axis=axes, keepdims=True), z.max(axis=axes, keepdims=True)
    span = high - low
    scale = 255.0 / (span + (span == 0))  # constant image: scale irrelevant, result (z - low) = 0
    return (z - low) * scale


class SegmentationDataset(Dataset):
    """One split of a prepared dataset, as the paper's `isic_loader`.

    Item: (image (3, H, W) float32 in 0..255, mask (1, H, W) float32 soft 0..1). `augment=True` applies
    the paper's random augmentation, drawn from this dataset's NumPy generator (seeded with `seed`;
    in DataLoader workers re-seeded by `worker_init_fn` from the loader's torch generator).
    """

    def __init__(self, prepared: PreparedDataset, split: str, fold: int | None = None,
                 augment: bool = False, seed: int = 0):
        self.prepared = prepared
        self.split, self.fold, self.augment = split, fold, augment
        self.rows = prepared.indices(split, fold)
        # The split's statistics, as the paper computes them on each split file (no effect: see above).
        self.mean, self.std = split_statistics(prepared.images, self.rows)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int):
        row = self.rows[index]
        image = paper_normalize(self.prepared.images[row], self.mean, self.std)  # (H, W, 3)
        mask = self.prepared.masks[row][..., None].astype(np.float32) / 255.0  # (H, W, 1)
        if self.augment:
            image, mask = paper_augment(image, mask, self.rng)
        return (torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
                torch.from_numpy(np.ascontiguousarray(mask.transpose(2, 0, 1))))


def worker_init_fn(worker_id: int) -> None:
    """DataLoader hook: give each worker's dataset copy its own generator, derived from the loader's
    seed (torch sets a different, reproducible `initial_seed` per worker and epoch)."""
    info = get_worker_info()
    if info is not None and hasattr(info.dataset, "rng"):
        info.dataset.rng = np.random.default_rng([torch.initial_seed() % 2**63, worker_id])


def seeded_generator(seed: int) -> torch.Generator:
    """A torch generator for `DataLoader(generator=...)`: shuffling and worker seeds follow `seed`."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
