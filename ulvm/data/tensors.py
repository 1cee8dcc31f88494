"""A prepared split as tensors: what training, evaluation and the data benchmark hold in memory.

`split_tensors` normalises a split the paper's way (`paper_normalize`: per-split statistics, then per-image
min-max to 0..255) once, and resizes it to the model's input size when the prepared data has another size
(the quick profile trains at 64² on data prepared at 256²). Batches are then cut by indexing.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..config import Config
from .dataset import paper_normalize, split_statistics
from .prepared import PreparedDataset, load_prepared


def load_data(data) -> PreparedDataset:
    """A prepared dataset object from a path (or the object itself)."""
    return data if isinstance(data, PreparedDataset) else load_prepared(data)


# Images normalised at a time. Each image is normalised on its own anyway; the whole ISIC2017 training split
# at once with its float32 temporaries peaked at 4.9 GB of memory (2.4 GB in parts), which 14 runs starting
# together on one machine all need at the same time.
NORMALIZE_AT_ONCE = 64


def split_tensors(prepared: PreparedDataset, split: str, config: Config, device: torch.device,
                  limit: int | None = None, *, normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """One split, normalised the paper's way and resized to `config.input_size`, as device tensors.

    Returns images `(n, 3, S, S)` float32 in [0, 255], soft masks `(n, 1, S, S)` float32 in [0, 1], ids
    (the first `limit` images of the split when given). The paper normalises each split with its own
    mean/std (`paper_normalize`); `normalize=False` keeps the prepared pixel values (to show).
    """
    rows = prepared.indices(split, fold=config.fold)[:limit]
    stats = split_statistics(prepared.images, rows) if normalize else None
    images = torch.empty((len(rows), 3, *prepared.images.shape[1:3]))                 # (n, 3, S0, S0)
    for part in batches(len(rows), NORMALIZE_AT_ONCE):
        pixels = prepared.images[rows[part]]                                           # (k, S0, S0, 3) uint8
        values = torch.from_numpy(paper_normalize(pixels, *stats) if normalize else pixels.astype(np.float32))
        images[part] = values.permute(0, 3, 1, 2)
    images = images.to(device)
    masks = torch.from_numpy(prepared.masks[rows]).to(device).float().div_(255.0).unsqueeze(1)
    images, masks = to_input_size(images, masks, config.input_size)
    return images, masks, [prepared.ids[i] for i in rows]


def pixel_hashes(prepared: PreparedDataset, ids: list[str]) -> dict[str, str]:
    """id -> the SHA-256 of its prepared pixels (the manifest's), for the given ids: what identifies an image
    across datasets, whatever its name."""
    recorded = {sample["id"]: sample["pixels_sha256"] for sample in prepared.manifest["samples"]}
    return {key: recorded[key] for key in ids}


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
