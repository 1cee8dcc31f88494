"""Small raw datasets in the official layouts, generated for the data tests (no real images)."""
from pathlib import Path

import numpy as np
from PIL import Image

# ISIC images come in many sizes (1022x767 ... 6688x4439); these keep the aspect ratios, ~50x smaller.
ISIC_SIZES = [(20, 15), (27, 18), (36, 27), (64, 48), (134, 89)]


def lesion_pair(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """A light image with one dark ellipse, and its 0/255 mask."""
    y, x = np.mgrid[0:height, 0:width]
    cy, cx = height / 2 + rng.uniform(-2, 2), width / 2 + rng.uniform(-2, 2)
    mask = ((y - cy) / (0.3 * height)) ** 2 + ((x - cx) / (0.3 * width)) ** 2 < 1
    image = np.where(mask[..., None], [90, 60, 40], [220, 170, 150]) + rng.integers(0, 20, (height, width, 3))
    return image.clip(0, 255).astype(np.uint8), mask.astype(np.uint8) * 255


def make_isic_tree(root: Path, n: int, year: int = 2017, seed: int = 0) -> Path:
    """The official ISIC training layout: inputs (+ superpixels for 2017) and ground-truth folders."""
    inputs = root / ("ISIC-2017_Training_Data" if year == 2017 else "ISIC2018_Task1-2_Training_Input")
    truth = root / ("ISIC-2017_Training_Part1_GroundTruth" if year == 2017 else "ISIC2018_Task1_Training_GroundTruth")
    inputs.mkdir(parents=True)
    truth.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        name = f"ISIC_{i * 7 + 13:07d}"
        image, mask = lesion_pair(rng, *ISIC_SIZES[i % len(ISIC_SIZES)])
        Image.fromarray(image).save(inputs / f"{name}.jpg", quality=95)
        Image.fromarray(mask).save(truth / f"{name}_segmentation.png")
        if year == 2017:  # superpixel maps sit beside the images and must be ignored
            Image.fromarray(image[..., ::-1].copy()).save(inputs / f"{name}_superpixels.png")
    (inputs / "ATTRIBUTION.txt").write_text("generated for tests\n")
    return root


def make_folder(root: Path, n: int, mask_suffix: str = "", seed: int = 0, size=(40, 30)) -> Path:
    """The custom layout: images/<stem>.png + masks/<stem><suffix>.png."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        image, mask = lesion_pair(rng, *size)
        Image.fromarray(image).save(root / "images" / f"case{i:03d}.png")
        Image.fromarray(mask).save(root / "masks" / f"case{i:03d}{mask_suffix}.png")
    return root
