"""Training batches for one epoch: shuffled, augmented, resumable.

`TrainBatcher` yields `(images, masks)` batches of the training split. Data order comes from a seeded CPU
torch generator. Augmentation (`Config.augment`): "batch"/"none" cut batches from the split held in memory
(`ulvm.data.tensors.split_tensors`) and augment them on the device with `augment_batch` (its own torch
generator); "paper" takes items of `SegmentationDataset` (per-image normalisation and the official
NumPy/SciPy augmentation, with the dataset's NumPy generator); "auto" = batch on CUDA, paper on CPU. `generators()` hands every stream to the checkpoint, so a
resumed run continues them exactly.
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch

from ..config import Config
from .augment import augment_batch
from .dataset import SegmentationDataset
from .tensors import batches, to_input_size


class TrainBatcher:
    def __init__(self, prepared, images: torch.Tensor, masks: torch.Tensor, config: Config,
                 device: torch.device):
        self.images, self.masks, self.config = images, masks, config    # (n, 3, S, S), (n, 1, S, S)
        self.mode = config.augment if config.augment != "auto" else ("batch" if device.type == "cuda" else "paper")
        self.shuffle = torch.Generator().manual_seed(config.seed)
        self.batch_rng = torch.Generator(device=device).manual_seed(config.seed + 1)
        self.dataset = SegmentationDataset(prepared, "train", fold=config.fold, augment=True,
                                           seed=config.seed + 1)

    def generators(self) -> dict[str, torch.Generator | np.random.Generator]:
        return {"shuffle": self.shuffle, "batch_augment": self.batch_rng, "paper_augment": self.dataset.rng}

    def steps(self) -> int:
        n, b = self.images.shape[0], self.config.batch_size
        return n // b if self.config.drop_last else math.ceil(n / b)

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(self.images.shape[0], generator=self.shuffle)   # positions in the split
        # on the split's device once an epoch: a step that copied its positions there would wait for the GPU
        device_order = order.to(self.images.device)
        for part in batches(len(order), self.config.batch_size, self.config.drop_last):
            if self.mode == "paper":
                items = [self.dataset[int(i)] for i in order[part]]              # (3, S0, S0), (1, S0, S0)
                images = torch.stack([image for image, _ in items]).to(self.images.device)
                masks = torch.stack([mask for _, mask in items]).to(self.images.device)
                yield to_input_size(images, masks, self.config.input_size)
                continue
            index = device_order[part]
            images, masks = self.images[index], self.masks[index]                # (batch, 3|1, S, S)
            if self.mode == "batch":
                images, masks = augment_batch(images, masks, generator=self.batch_rng)
            yield images, masks
