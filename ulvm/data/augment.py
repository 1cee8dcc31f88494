"""The paper's training augmentation, twice: per image with NumPy/SciPy (exactly the paper's loader) and
per batch with torch ops on any device (the fast path for GPU training). Both are the same family.

The paper's `isic_loader` (loader.py of the official code) does, for each training image:
  1. with probability 0.5: `np.rot90` by k in {0, 1, 2, 3}, then `np.flip` along a random axis (0 or 1);
  2. with probability 0.5: `scipy.ndimage.rotate` by an integer angle in [20, 80) degrees, nearest
     neighbour (`order=0`), `reshape=False`, filling outside pixels with 0;
the same transformation for the image and its mask.

One transformation is described by three numbers per image: `k` (quarter turns), `flip` (-1 none, 0
rows, 1 columns) and `angle` (degrees, 0 = no rotation, which is exactly the identity). `draw_params`
draws them with the paper's probabilities; `transform_numpy` and `transform_batch` apply given ones, so
the two paths can be compared on the same draws (tests/test_data_augment.py). The batch path computes,
for every output pixel, which input pixel it comes from (rotation inverse-mapped and rounded to the
nearest pixel as SciPy does, then the rot90/flip index map) and gathers: one gather per batch. Drawn
from a torch generator on the GPU, the parameters stay there and the cosines come from a table on the
device, so augmenting a batch never waits for the GPU: the host can queue the next training step while
the GPU still runs this one.
The book shows the family in `notebooks/04_data.ipynb`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage, special

ANGLE_RANGE = (20, 80)  # integer degrees, upper bound excluded (np.random.randint(20, 80))


@dataclass
class AugmentParams:
    """Per-image transformation parameters, (batch,) each: k in 0..3, flip in {-1, 0, 1}, angle in whole
    degrees. NumPy arrays when drawn from a NumPy generator, tensors on its device from a torch generator."""
    k: np.ndarray | torch.Tensor
    flip: np.ndarray | torch.Tensor
    angle: np.ndarray | torch.Tensor


def draw_params(batch: int, rng: np.random.Generator | torch.Generator) -> AugmentParams:
    """Draw the paper's random transformation for `batch` images from a NumPy or torch generator."""
    if isinstance(rng, torch.Generator):
        def uniform(): return torch.rand(batch, generator=rng, device=rng.device)
        def integers(lo, hi): return torch.randint(lo, hi, (batch,), generator=rng, device=rng.device)
        where = torch.where
    else:
        def uniform(): return rng.random(batch)
        def integers(lo, hi): return rng.integers(lo, hi, batch)
        where = np.where
    dihedral, k, axis = uniform() < 0.5, integers(0, 4), integers(0, 2)
    rotate, angle = uniform() < 0.5, integers(*ANGLE_RANGE)
    return AugmentParams(k=where(dihedral, k, 0), flip=where(dihedral, axis, -1), angle=where(rotate, angle, 0))


def transform_numpy(image: np.ndarray, mask: np.ndarray, k: int, flip: int, angle: int):
    """The paper's transformation of one (H, W, C) image and its (H, W, 1) mask (NumPy/SciPy):
    `np.rot90` by k, `np.flip` along axis `flip` (-1: none), then the rotation by `angle` degrees."""
    image, mask = np.rot90(image, k), np.rot90(mask, k)
    if flip >= 0:
        image, mask = np.flip(image, flip), np.flip(mask, flip)
    if angle:
        image = ndimage.rotate(image, int(angle), order=0, reshape=False)
        mask = ndimage.rotate(mask, int(angle), order=0, reshape=False)
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


def paper_augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator):
    """The paper's random augmentation of one (H, W, C) image and (H, W, 1) mask."""
    p = draw_params(1, rng)
    return transform_numpy(image, mask, int(p.k[0]), int(p.flip[0]), int(p.angle[0]))


@functools.lru_cache(maxsize=8)
def _dihedral_index_maps(size: int, device: torch.device) -> torch.Tensor:
    """(12, size*size): for each (k, flip), at row (flip + 1) * 4 + k, the input index of each output pixel."""
    grid = torch.arange(size * size, device=device).reshape(size, size)
    maps = []
    for flip in (-1, 0, 1):
        for k in range(4):
            moved = torch.rot90(grid, k, dims=(0, 1))
            maps.append((moved if flip < 0 else torch.flip(moved, dims=(flip,))).reshape(-1))
    return torch.stack(maps)  # row = (flip + 1) * 4 + k


@functools.lru_cache(maxsize=8)
def _cos_sin_degrees(device: torch.device) -> torch.Tensor:
    """(2, 360) float64: the cosine and sine of 0..359 whole degrees by SciPy's `cosdg`/`sindg`, the
    functions `ndimage.rotate` uses (exact at multiples of 90 degrees, the same last bit elsewhere)."""
    degrees = np.arange(360)
    return torch.as_tensor(np.stack([special.cosdg(degrees), special.sindg(degrees)]), device=device)


@functools.lru_cache(maxsize=8)
def _pixel_rows_cols(size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The row and column coordinate of every pixel of a (size, size) image, float64 (size, size) each."""
    coordinates = torch.arange(size, device=device, dtype=torch.float64)
    return torch.meshgrid(coordinates, coordinates, indexing="ij")


def transform_batch(images: torch.Tensor, masks: torch.Tensor, params: AugmentParams):
    """Apply per-image transformations to a batch: images (batch, C, H, W), masks (batch, 1, H, W).

    Same result as `transform_numpy` image by image, except where a source coordinate falls exactly
    half-way between two pixels and SciPy's C arithmetic rounds the tie the other way: among the integer
    angles in [20, 80) on 256x256 images this happens only at 45 degrees, for 85 of 65,536 pixels, each
    taking its neighbour's value (tests/test_data_augment.py).
    """
    batch, _, height, width = images.shape
    if height != width:
        raise ValueError(f"rot90 needs square images, got {height}x{width}")
    device = images.device
    k = torch.as_tensor(params.k, device=device, dtype=torch.long)
    flip = torch.as_tensor(params.flip, device=device, dtype=torch.long)
    # Rotation, inverse-mapped in scipy.ndimage.rotate's own arithmetic (row, col coordinates):
    # input = M @ output + offset, M = [[cos, sin], [-sin, cos]], offset = centre - M @ centre; outside
    # [0, size - 1] is filled with 0 (mode "constant"), inside the nearest pixel is taken (order 0).
    centre = (height - 1) / 2
    rows, cols = _pixel_rows_cols(height, device)
    angle = torch.as_tensor(params.angle, device=device, dtype=torch.long) % 360
    cos, sin = _cos_sin_degrees(device)[:, angle, None, None]                   # (batch, 1, 1) each
    offset_row = centre - (cos * centre + sin * centre)
    offset_col = centre - (-sin * centre + cos * centre)
    src_row = cos * rows + sin * cols + offset_row  # (batch, H, W)
    src_col = -sin * rows + cos * cols + offset_col
    inside = (src_row >= 0) & (src_row <= height - 1) & (src_col >= 0) & (src_col <= width - 1)
    src_row = torch.floor(src_row + 0.5).clamp(0, height - 1)
    src_col = torch.floor(src_col + 0.5).clamp(0, width - 1)
    rotated_index = (src_row * width + src_col).long()
    # Then rot90 + flip, as an index map: output of the dihedral step -> input pixel.
    maps = _dihedral_index_maps(height, device)[(flip + 1) * 4 + k]  # (batch, H*W)
    index = torch.gather(maps, 1, rotated_index.reshape(batch, -1))  # (batch, H*W)
    keep = inside.reshape(batch, 1, -1)

    def gather(x):  # (batch, C, H, W) -> same, zero outside the rotated input
        flat = x.reshape(batch, x.shape[1], -1)
        out = torch.gather(flat, 2, index[:, None, :].expand(-1, x.shape[1], -1))
        return torch.where(keep, out, 0.0).reshape(x.shape)

    return gather(images), gather(masks)


def augment_batch(images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator | None = None):
    """The paper's random augmentation for a whole batch (any device), one draw per image.

    images (batch, C, H, W), masks (batch, 1, H, W); returns both transformed alike. Draws come from
    `generator` (a torch.Generator on any device; default: torch's global CPU generator).
    """
    if generator is None:
        generator = torch.default_generator
    return transform_batch(images, masks, draw_params(images.shape[0], generator))
