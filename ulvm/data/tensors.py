"""A prepared split as tensors: what training, evaluation and the data benchmark hold in memory.

`split_tensors` normalises a split the paper's way (`paper_normalize`: per-split statistics, then per-image
min-max to 0..255) once, and resizes it to the model's input size when the prepared data has another size
(the quick profile trains at 64² on data prepared at 256²). Batches are then cut by indexing.
"""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F

from ..config import Config
from .dataset import paper_normalize, split_statistics
from .prepare import PreparedDataset, load_prepared


def load_data(data) -> PreparedDataset:
    """A prepared dataset object from a path (or the object itself)."""
    return data if isinstance(data, PreparedDataset) else load_prepared(data)


def split_tensors(prepared: PreparedDataset, split: str, config: Config, device: torch.device,
                  limit: int | None = None, *, normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """One split, normalised the paper's way and resized to `config.input_size`, as device tensors.

    Returns images `(n, 3, S, S)` float32 in [0, 255], soft masks `(n, 1, S, S)` float32 in [0, 1], ids
    (the first `limit` images of the split when given). The paper normalises each split with its own
    mean/std (`paper_normalize`); `normalize=False` keeps the prepared pixel values (to show).
    """
    rows = prepared.indices(split, fold=config.fold)[:limit]
    if normalize:
        mean, std = split_statistics(prepared.images, rows)
        images = torch.from_numpy(paper_normalize(prepared.images[rows], mean, std))  # (n, S0, S0, 3)
    else:
        images = torch.from_numpy(prepared.images[rows]).float()                       # (n, S0, S0, 3)
    images = images.permute(0, 3, 1, 2).contiguous().to(device)                       # (n, 3, S0, S0)
    masks = torch.from_numpy(prepared.masks[rows]).to(device).float().div_(255.0).unsqueeze(1)
    images, masks = to_input_size(images, masks, config.input_size)
    return images, masks, [prepared.ids[i] for i in rows]


def to_input_size(images: torch.Tensor, masks: torch.Tensor, size: int):
    """Resize a batch to the model's input size when the prepared data has another size (quick profile).

    Bilinear with antialiasing, images and masks alike. The filter weights are a convex combination, but
    their float sum can exceed 1 by an ulp: clamp, since BCE refuses targets above 1.
    """
    if images.shape[-2:] == (size, size):
        return images, masks
    images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    masks = F.interpolate(masks, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return images.clamp_(0.0, 255.0), masks.clamp_(0.0, 1.0)


def batches(n: int, batch_size: int, drop_last: bool = False) -> Iterator[slice]:
    """Consecutive slices of `batch_size` items (the last one shorter unless `drop_last`)."""
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield slice(start, min(start + batch_size, n))
