"""Reading one raw image or mask, with the input checks of the data chapter.

Raw datasets come in many small variations (1-bit BMP masks in PH2, palette PNGs, JPEG masks with soft
edges, grayscale or RGBA images...). Every check here either raises a `DataError` that names the file and
says what is wrong, or applies a documented fix-up and returns a short note that ends up in the
prepared dataset's manifest (so nothing is changed silently). The book shows these in
`notebooks/04_data.ipynb`.

Conventions of the prepared data (the paper's "prepare your own dataset"): images are 24-bit RGB,
masks are 8-bit with background 0 and lesion 255.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from ..errors import DataError

# A truncated file must be an error, never a silently grey-padded image.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# A mask "looks inverted" when the lesion (255) covers almost the whole image border: real lesions are
# photographed centred. On the 200 real PH2 masks the largest border coverage is 81% (their lesions
# cover up to 98% of the image, so the lesion area alone cannot tell).
INVERTED_BORDER_FRACTION = 0.95


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _open(path: Path, what: str) -> Image.Image:
    """Open and fully decode an image file; any failure is a DataError naming the file."""
    try:
        image = Image.open(path)
        image.load()  # decode now: a truncated file fails here, not later
    except FileNotFoundError:
        raise DataError(f"{path}: {what} file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(f"{path}: cannot read {what} ({error})") from None
    return image


def read_image(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """Read a dermoscopic image as RGB. Returns (image (H, W, 3) uint8, notes on conversions)."""
    path = Path(path)
    image = _open(path, "image")
    notes = []
    if image.mode != "RGB":
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            alpha = np.asarray(image.convert("RGBA"))[..., 3]
            if alpha.min() < 255:
                notes.append(f"{path.name}: {image.mode} image with transparent pixels; alpha dropped")
        notes.append(f"{path.name}: {image.mode} image converted to RGB")
        image = image.convert("RGB")
    return np.asarray(image), notes


def _mask_luminance(image: Image.Image, path: Path, notes: list[str]) -> np.ndarray:
    """A mask as 8-bit luminance (H, W), whatever its storage mode.

    Palette masks are converted through their colours' luminance, never through raw palette indices (a
    palette whose index 0 is white would otherwise invert the mask). A two-colour palette whose colours
    are not black and white (e.g. red on black) is mapped darker -> 0, brighter -> 255.
    """
    if image.mode in ("1", "L"):
        return np.asarray(image.convert("L"))
    luminance = np.asarray(image.convert("L"))
    if image.mode == "P":
        values = np.unique(luminance)
        if len(values) == 2 and (values[0], values[1]) != (0, 255):
            notes.append(f"{path.name}: two-colour palette mask mapped by luminance "
                         f"({values[0]} -> 0, {values[1]} -> 255)")
            return np.where(luminance == values[1], 255, 0).astype(np.uint8)
    elif image.mode in ("RGB", "RGBA"):
        rgb = np.asarray(image.convert("RGB"))
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])):
            raise DataError(f"{path}: colour mask (R, G, B differ); expected a grey mask with "
                            f"background 0 and lesion 255")
    return luminance


def read_mask(path: str | Path, image_size: tuple[int, int], *, allow_soft: bool = False,
              check_inverted: bool = True) -> tuple[np.ndarray, list[str]]:
    """Read a lesion mask and check it against its image.

    `image_size` is the (width, height) of the image. Returns (mask (H, W) uint8 with background 0 and
    lesion 255, notes). 1-bit and 24-bit grey masks (PH2's BMPs) are read losslessly as 8-bit grey.
    Fix-up (logged in the notes): masks with values {0, 1} are scaled to {0, 255}. Errors: size differs
    from the image; values other than 0/255 (soft masks, e.g. JPEG) unless `allow_soft`; a mask that
    looks inverted.
    """
    path = Path(path)
    image = _open(path, "mask")
    notes: list[str] = []
    if image.size != tuple(image_size):
        raise DataError(f"{path}: mask size {image.size[0]}x{image.size[1]} differs from its image "
                        f"size {image_size[0]}x{image_size[1]}")
    mask = _mask_luminance(image, path, notes)
    values = np.unique(mask)
    if np.all(np.isin(values, (0, 1))) and 1 in values:
        notes.append(f"{path.name}: mask values {{0, 1}} scaled to {{0, 255}}")
        mask = mask * np.uint8(255)
        values = np.unique(mask)
    if not np.all(np.isin(values, (0, 255))):
        soft = int(np.count_nonzero((mask != 0) & (mask != 255)))
        if not allow_soft:
            raise DataError(f"{path}: mask has values other than 0 and 255 ({len(values)} distinct "
                            f"values, {soft} soft pixels; a JPEG mask?); pass allow_soft_masks=True "
                            f"(--allow-soft-masks) to accept soft masks as they are")
        notes.append(f"{path.name}: soft mask accepted ({soft} pixels not 0/255)")
    if check_inverted:
        lesion = mask >= 128
        border = np.concatenate([lesion[0], lesion[-1], lesion[:, 0], lesion[:, -1]])
        if border.mean() >= INVERTED_BORDER_FRACTION and lesion.mean() > 0.5:
            raise DataError(f"{path}: mask looks inverted: the lesion (255) covers {lesion.mean():.0%} "
                            f"of the image and {border.mean():.0%} of its border; the lesion must be "
                            f"255 and the background 0 (if the mask is right, pass check_inverted=False "
                            f"/ --no-inverted-check)")
    return mask, notes
