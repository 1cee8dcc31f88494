"""Synthetic dermoscopy-like images with exact lesion masks: the embedded default dataset.

The book and every test must run on a fresh machine with no download, so `default_dataset()` generates
a small dataset and prepares it like any custom folder. Each image is drawn from its own seeded
generator (`seed`, `index`), so image i is the same whatever `n` is, on any machine:
- skin: a skin-toned base colour modulated by smooth noise at two scales, plus fine grain;
- one pigmented lesion: an irregular star-shaped region (a circle whose radius varies with a few
  random harmonics, stretched into an ellipse), darker towards its centre, mottled, sometimes with a
  blue-grey veil and dark globules; its edge is blended over a few pixels but the MASK is the exact
  region (pixels whose centre lies inside the boundary curve);
- a few dark hairs (curves that may cross the lesion: the mask does not include them);
- the dermoscope's vignette and, in some images, its dark circular field stop in the corners.
Written in the custom-folder layout (`images/*.png` 24-bit RGB, `masks/*.png` 8-bit 0/255), so it goes
through the same preparation as real data. `notebooks/04_data.ipynb` shows a grid of them.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..errors import DataError
from ..io import atomic_directory, atomic_write_bytes, exclusive
from .prepare import png_bytes, prepare

DEFAULT_COUNT = 200
DEFAULT_COUNTS = {"train": 120, "val": 20, "test": 60}


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth random field in about [-1, 1]: a cells x cells grid of noise, bicubically upsampled."""
    grid = rng.uniform(0, 255, (cells, cells)).astype(np.uint8)
    field = np.asarray(Image.fromarray(grid).resize((size, size), Image.BICUBIC), dtype=np.float32)
    return field / 127.5 - 1.0


def _hair_layer(rng: np.random.Generator, size: int) -> np.ndarray:
    """Hair coverage in [0, 1], (size, size): a few thin curved strokes across the image."""
    layer = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(layer)
    for _ in range(rng.poisson(2.5)):
        start, end = rng.uniform(-0.1, 1.1, 2) * size, rng.uniform(-0.1, 1.1, 2) * size
        bend = (start + end) / 2 + rng.normal(0, 0.25, 2) * size
        t = np.linspace(0, 1, 40)[:, None]
        curve = (1 - t) ** 2 * start + 2 * (1 - t) * t * bend + t**2 * end  # quadratic Bezier
        draw.line([tuple(p) for p in curve], fill=255, width=int(rng.integers(1, 3)))
    return np.asarray(layer.filter(ImageFilter.GaussianBlur(0.6)), dtype=np.float32) / 255.0


def sample(index: int, seed: int = 0, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic image `index`: (image (size, size, 3) uint8, mask (size, size) uint8 0/255)."""
    rng = np.random.default_rng([seed, index])
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1  # pixel centres in [-1, 1]
    y, x = np.meshgrid(coords, coords, indexing="ij")

    # Skin: base colour, smooth modulation at two scales.
    red = float(rng.uniform(190, 235))
    skin = np.array([red, red * rng.uniform(0.70, 0.82), red * rng.uniform(0.58, 0.72)], np.float32)
    texture = 1 + 0.07 * _smooth_noise(rng, size, 5) + 0.03 * _smooth_noise(rng, size, 24)
    image = skin * texture[..., None]

    # Lesion boundary r(theta) around a centre, in an elliptic, rotated frame. (Python floats keep
    # the arithmetic in float32.)
    centre = [float(c) for c in rng.normal(0, 0.12, 2).clip(-0.25, 0.25)]
    tilt, stretch = float(rng.uniform(0, np.pi)), float(rng.uniform(0.7, 1.0))
    dy, dx = y - centre[0], x - centre[1]
    u = math.cos(tilt) * dx + math.sin(tilt) * dy
    v = (-math.sin(tilt) * dx + math.cos(tilt) * dy) / stretch
    rho, theta = np.hypot(u, v), np.arctan2(v, u)
    base_radius = float(rng.uniform(0.22, 0.55))
    angles = np.linspace(-np.pi, np.pi, 721)
    boundary = np.full_like(angles, base_radius)
    for harmonic in range(2, 17):  # irregular outline: random harmonics, weaker as they get finer
        boundary += (base_radius * rng.uniform(0, 0.16) / harmonic
                     * np.cos(harmonic * angles + rng.uniform(0, 2 * np.pi)))
    radius = np.interp(theta, angles, boundary).astype(np.float32)
    mask = rho < radius  # the exact lesion: pixel centre inside the boundary curve
    depth = np.clip(1 - rho / radius, 0, 1)  # 0 at the edge, 1 at the centre

    # Pigment: brown, darker in the centre, mottled; sometimes a blue-grey veil and dark globules.
    brown = np.array([rng.uniform(95, 150), rng.uniform(55, 85), rng.uniform(35, 60)], np.float32)
    shade = (1 - rng.uniform(0.25, 0.55) * depth) * (1 + 0.18 * _smooth_noise(rng, size, 14))
    pigment = brown * shade[..., None]
    if rng.random() < 0.35:
        veil = np.clip(_smooth_noise(rng, size, 4), 0, 1)[..., None] * depth[..., None]
        pigment = pigment * (1 - 0.6 * veil) + np.array([95, 100, 125], np.float32) * 0.6 * veil
    if rng.random() < 0.4:  # pigment network: a warped mesh of faint darker lines, strongest at the rim
        warp = 0.3 * _smooth_noise(rng, size, 8)
        frequency = rng.uniform(12, 20) * math.pi
        lines = np.minimum(np.abs(np.sin(frequency * (u + warp))), np.abs(np.sin(frequency * (v - warp))))
        network = (lines < 0.3) * np.clip(1.5 * (1 - depth), 0, 1) * float(rng.uniform(0.1, 0.25))
        network = np.asarray(Image.fromarray((network * 255).astype(np.uint8)).filter(
            ImageFilter.GaussianBlur(0.8)), dtype=np.float32) / 255.0
        pigment *= (1 - network)[..., None]
    if rng.random() < 0.5:  # dark globules
        layer = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(layer)
        for _ in range(int(rng.integers(3, 15))):
            angle, distance = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.8) * base_radius
            gy = (centre[0] + distance * np.sin(angle) + 1) * size / 2
            gx = (centre[1] + distance * np.cos(angle) + 1) * size / 2
            r = rng.uniform(0.006, 0.015) * size
            draw.ellipse([gx - r, gy - r, gx + r, gy + r], fill=255)
        globules = np.asarray(layer.filter(ImageFilter.GaussianBlur(1.0)), dtype=np.float32) / 255.0
        pigment *= (1 - 0.55 * globules * mask)[..., None]
    edge_width = rng.uniform(0.01, 0.04)  # blend over a few pixels; alpha = 0.5 exactly at the boundary
    alpha = np.clip((radius - rho) / (2 * edge_width) + 0.5, 0, 1)[..., None] * rng.uniform(0.75, 1.0)
    image = image * (1 - alpha) + pigment * alpha

    # Hairs, vignette, field stop, grain.
    hair = _hair_layer(rng, size)[..., None] * rng.uniform(0.6, 0.9)
    image = image * (1 - hair) + np.array([40, 28, 22], np.float32) * hair
    centre_distance = np.hypot(x, y)
    image *= (1 - rng.uniform(0.1, 0.35) * (centre_distance / math.sqrt(2)) ** 2.5)[..., None]
    if rng.random() < 0.4:
        stop = rng.uniform(1.2, 1.4)
        image *= np.clip((stop - centre_distance) / 0.05, 0.04, 1)[..., None]
    image += 2.5 * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), mask.astype(np.uint8) * 255


def generate(out_dir: str | os.PathLike, n: int = DEFAULT_COUNT, seed: int = 0, size: int = 256,
             overwrite: bool = False) -> Path:
    """Write `n` synthetic images and masks in the custom-folder layout (`images/`, `masks/`)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise DataError(f"{out_dir}: already exists (pass overwrite=True to replace it)")
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        for index in range(n):
            image, mask = sample(index, seed, size)
            name = f"synth_{index:04d}.png"
            atomic_write_bytes(tmp / "images" / name, png_bytes(image, compress_level=1))  # raw files:
            atomic_write_bytes(tmp / "masks" / name, png_bytes(mask, compress_level=1))    # fast over small
    return out_dir


def default_dataset(root: str | os.PathLike = "data") -> Path:
    """The embedded default: `root/prepared/synthetic`, generated and prepared on first use.

    200 synthetic images (seed 0) split 120 / 20 / 60 (seed 42) plus 5 folds. Idempotent: returns the
    existing prepared folder when there is one. No download needed.
    """
    root = Path(root)
    prepared, raw = root / "prepared" / "synthetic", root / "raw" / "synthetic"
    with exclusive(root / "prepared" / ".synthetic.lock"):   # two notebooks at once: one builds, one waits
        if (prepared / "manifest.json").is_file():
            return prepared
        if not (raw / "images").is_dir():
            generate(raw, DEFAULT_COUNT, seed=0, overwrite=raw.exists())
        return prepare("folder", raw, prepared, counts=DEFAULT_COUNTS, overwrite=prepared.exists())
