"""Data-path speed, printed (never asserted): `python -m ulvm.data.benchmark [--ph2 PATH] [--device D]`.

1. preparing the 200 PH2 images at 256x256, when the folder is given;
2. one epoch of 1250 training images at batch 8 with augmentation, three ways: the paper's per-image
   NumPy/SciPy loader in the main process and with one worker (as the paper), and the batch path
   (the split held as tensors by `ulvm.data.tensors.split_tensors`, `augment_batch` per batch, as `ulvm.engine.train`
   does) on the CPU and, where there is one, on the GPU (target >= 2000 images/s).
Uses the synthetic default dataset's 120 training images, cycled until 1250 are seen, so it runs anywhere.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from .augment import augment_batch
from .dataset import SegmentationDataset, seeded_generator, worker_init_fn
from .prepare import prepare
from .prepared import load_prepared
from .synthetic import default_dataset

EPOCH_IMAGES, BATCH = 1250, 8


def time_prepare(src: Path, workers: int | None = None) -> tuple[int, float]:
    """(number of images, seconds) to prepare the custom folder `src` at 256x256."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        out = prepare("folder", src, Path(tmp) / "prepared", workers=workers)
        seconds = time.perf_counter() - start
        return len(load_prepared(out, verify=False)), seconds


def loader_images_per_second(prepared, workers: int) -> float:
    """The paper's path: per-image normalisation + SciPy augmentation in a DataLoader."""
    dataset = SegmentationDataset(prepared, "train", augment=True)
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers,
                        worker_init_fn=worker_init_fn, generator=seeded_generator(0))
    seen, start = 0, time.perf_counter()
    while seen < EPOCH_IMAGES:
        for images, _ in loader:
            seen += images.shape[0]
            if seen >= EPOCH_IMAGES:
                break
    return seen / (time.perf_counter() - start)


def batch_images_per_second(prepared, device: str) -> float:
    """The fast path: the normalised split on the device, batches augmented with torch ops."""
    from ..config import Config
    from .tensors import split_tensors  # the training loop's own in-memory split

    device = torch.device(device)
    config = Config.profile("paper", input_size=prepared.images.shape[1])
    images, masks, ids = split_tensors(prepared, "train", config, device)  # (n, 3, H, W) 0..255, (n, 1, H, W)
    generator = seeded_generator(0)
    augment_batch(images[:BATCH], masks[:BATCH], generator)       # warm-up (CUDA context, caches)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    seen, start = 0, time.perf_counter()
    while seen < EPOCH_IMAGES:
        order = torch.randperm(len(ids), generator=generator).to(device)
        for first in range(0, len(ids), BATCH):
            index = order[first:first + BATCH]
            augment_batch(images[index], masks[index], generator)
            seen += len(index)
    sync()
    return seen / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ph2", type=Path, default=None, help="flat PH2 folder (images/ + masks/) to time preparing")
    parser.add_argument("--data", default="data", help="root of the synthetic default dataset")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda: device of the batch path")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.ph2 is not None:
        count, seconds = time_prepare(args.ph2)
        print(f"prepare {count} images of {args.ph2} at 256x256: {seconds:.1f} s")
    prepared = load_prepared(default_dataset(args.data))
    print(f"one epoch of {EPOCH_IMAGES} images, batch {BATCH}, with augmentation (torch threads {args.threads}):")
    print(f"  paper loader (NumPy/SciPy), main process: {loader_images_per_second(prepared, 0):8.0f} images/s")
    print(f"  paper loader (NumPy/SciPy), 1 worker:     {loader_images_per_second(prepared, 1):8.0f} images/s")
    print(f"  batch path (torch), cpu:                  {batch_images_per_second(prepared, 'cpu'):8.0f} images/s")
    if args.device in ("auto", "cuda") and torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        print(f"  batch path (torch), cuda ({name}): {batch_images_per_second(prepared, 'cuda'):8.0f} images/s")


if __name__ == "__main__":
    main()
