"""The fast data path: a whole split held on the device, served as normalised, augmented batches.

The paper's loader normalises and rotates one image at a time on one CPU worker (SciPy), which is its
training bottleneck. Here a split lives on the device as uint8 (200 images of 256x256: 39 MB; 1250:
246 MB), and each batch is indexed, normalised (`paper_normalize`) and augmented (`augment_batch`) with
torch ops on that device. Same numbers as `SegmentationDataset`, in batches; the GPU-speed chapter
compares the two (`ulvm.data.benchmark`).
"""
from __future__ import annotations

from collections.abc import Iterator

import torch

from .augment import augment_batch
from .dataset import paper_normalize, split_statistics
from .prepare import PreparedDataset


class DeviceSplit:
    """One split of a prepared dataset on `device`: images (n, 3, H, W) and masks (n, 1, H, W), uint8."""

    def __init__(self, prepared: PreparedDataset, split: str, fold: int | None = None,
                 device: str | torch.device = "cpu"):
        rows = prepared.indices(split, fold)
        self.device = torch.device(device)
        self.images = torch.from_numpy(prepared.images[rows]).permute(0, 3, 1, 2).contiguous().to(self.device)
        self.masks = torch.from_numpy(prepared.masks[rows])[:, None].contiguous().to(self.device)
        self.mean, self.std = split_statistics(prepared.images, rows)  # as SegmentationDataset

    def __len__(self) -> int:
        return self.images.shape[0]

    def batches(self, batch_size: int, *, shuffle: bool = False, augment: bool = False,
                generator: torch.Generator | None = None,
                drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (images (b, 3, H, W) float32 0..255, masks (b, 1, H, W) float32 0..1) on the device.

        `generator` (a CPU torch.Generator) drives the shuffling and the augmentation draws.
        """
        count = len(self)
        order = torch.randperm(count, generator=generator) if shuffle else torch.arange(count)
        stop = count - count % batch_size if drop_last else count
        for start in range(0, stop, batch_size):
            index = order[start:start + batch_size].to(self.device)
            images = paper_normalize(self.images[index], self.mean, self.std)
            masks = self.masks[index].to(torch.float32) / 255.0
            if augment:
                images, masks = augment_batch(images, masks, generator)
            yield images, masks
