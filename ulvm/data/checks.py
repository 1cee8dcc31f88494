"""Reading one raw image or mask, with the input checks of the data chapter.

Raw datasets come in many small variations (1-bit BMP masks in PH2, palette PNGs, JPEG masks with soft
edges, grayscale, RGBA or 16-bit images...). Every check here either raises a `DataError` that names the file and
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


def _open(path: Path, what: str, low_bytes: bool = False) -> tuple[Image.Image, str]:
    """Open and fully decode an image file; any failure is a DataError naming the file.

    Returns (image, raw mode of the file's samples, e.g. "RGB;16B"; "" if Pillow gives none). Pillow reads
    a 16-bit grey file as mode I;16 / I, but a 16-bit RGB(A) PNG as 8-bit RGB(A) keeping each sample's
    high byte, which only the raw mode (gone after decoding) tells. `low_bytes` decodes such a PNG
    keeping the LOW bytes instead (the little-endian unpacker picks the other byte of each sample).
    """
    try:
        image = Image.open(path)
        # a tile is (codec, extents, offset, args): a plain tuple before Pillow 11, a named one since
        rawmode = str(image.tile[0][3]) if len(image.tile) == 1 else ""
        if low_bytes:
            tile = (*image.tile[0][:3], rawmode.replace(";16B", ";16L"))
            image.tile = [tile if type(image.tile[0]) is tuple else type(image.tile[0])(*tile)]
        image.load()  # decode now: a truncated file fails here, not later
    except FileNotFoundError:
        raise DataError(f"{path}: {what} file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(f"{path}: cannot read {what} ({error})") from None
    return image, rawmode


def _is_wide(image: Image.Image) -> bool:
    """One channel of more than 8 bits (16-bit grey, 32-bit integer or float): Pillow's conversion to
    RGB or L clips these at 255, which turns a 16-bit image all white."""
    return image.mode in ("I", "F") or image.mode.startswith("I;16")


def _to_8bit_by_range(values: np.ndarray) -> np.ndarray:
    """Stretch `values` linearly so that their minimum -> 0 and maximum -> 255 (a constant -> 0).

    Why by range rather than by the full 0..65535 scale: many 16-bit files hold 10-14-bit data (a full
    scale division would leave them nearly black, in a handful of grey levels), and the paper's loader
    min-max stretches every image anyway (`paper_normalize`), so a per-image linear map costs nothing
    but keeps the most grey levels.
    """
    values = values.astype(np.float64)
    low, high = values.min(), values.max()
    scale = 255.0 / (high - low) if high > low else 0.0
    return np.round((values - low) * scale).astype(np.uint8)


# EXIF orientation tag -> the turn that shows the stored pixels upright, as photo viewers do
# (Pillow's `ImageOps.exif_transpose` table; 1 = stored upright).
EXIF_ORIENTATION_TAG = 0x0112
UPRIGHT_TURNS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                 4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
                 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}


def read_image(path: str | Path, upright: bool = False) -> tuple[np.ndarray, list[str]]:
    """Read a dermoscopic image as RGB. Returns (image (H, W, 3) uint8, notes on conversions).

    16-bit (and 32-bit integer or float) images are scaled to 8 bits by their own range (min -> 0,
    max -> 255; see `_to_8bit_by_range` for why), never clipped. A photo whose EXIF orientation says it is
    stored turned (phone cameras do this) is turned upright with `upright=True`, as viewers show it
    (`ulvm predict`: the mask then matches what the user sees); `ulvm prepare` keeps the stored pixels,
    on which a dataset's masks are assumed to be drawn, and says so in a note.
    """
    path = Path(path)
    image, rawmode = _open(path, "image")
    array, notes = _as_8bit_rgb(image, rawmode, path)
    orientation = _exif_orientation(image)
    if orientation in UPRIGHT_TURNS:
        if upright:
            array = np.asarray(Image.fromarray(array).transpose(UPRIGHT_TURNS[orientation]))
            notes.append(f"{path.name}: turned upright by its EXIF orientation ({orientation})")
        else:
            notes.append(f"{path.name}: EXIF orientation {orientation} not applied (the stored pixels are used)")
    return array, notes


def _exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag, 1 (upright) when there is none or the EXIF block cannot be parsed: a
    broken tag must not cost the pixels."""
    try:
        return int(image.getexif().get(EXIF_ORIENTATION_TAG, 1))
    except (SyntaxError, ValueError, TypeError, OSError):
        return 1


def _as_8bit_rgb(image: Image.Image, rawmode: str, path: Path) -> tuple[np.ndarray, list[str]]:
    notes = []
    if _is_wide(image):
        array = np.asarray(image)
        kind = "16-bit" if ";16" in rawmode or image.mode.startswith("I;16") else f"{image.mode}-mode"
        notes.append(f"{path.name}: {kind} grey image scaled to 8 bits by its range "
                     f"({array.min()}..{array.max()} -> 0..255) and converted to RGB")
        return np.repeat(_to_8bit_by_range(array)[..., None], 3, axis=2), notes
    if ";16" in rawmode:  # 16-bit RGB(A): Pillow kept the high bytes only
        high = np.asarray(image.convert("RGB")).astype(np.uint16)
        if image.format == "PNG" and rawmode in ("RGB;16B", "RGBA;16B"):
            low = np.asarray(_open(path, "image", low_bytes=True)[0].convert("RGB"))
            values, how = high * 256 + low, "16-bit"
        else:
            values, how = high, "16-bit (high bytes, as Pillow reads it)"
        notes.append(f"{path.name}: {how} {image.mode} image scaled to 8 bits by its range "
                     f"({values.min()}..{values.max()} -> 0..255)"
                     + ("; alpha dropped" if image.mode != "RGB" else ""))
        return _to_8bit_by_range(values), notes
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


def _wide_mask(image: Image.Image, path: Path, notes: list[str]) -> np.ndarray:
    """A 16-bit (or 32-bit integer) grey mask as 8 bits, so that the 8-bit rules then apply alike.

    Values up to 255 are kept (an 8-bit mask saved in 16 bits: 0/255 or 0/1); otherwise the full 16-bit
    scale maps to 0..255 (0/65535 -> 0/255, and a soft value keeps its fraction, so "lesion" means at
    least half the range, as for 8-bit masks). Not by range: that would turn any two values into 0/255.
    """
    if image.mode == "F":
        raise DataError(f"{path}: floating-point mask (mode F); save it as 8-bit grey, background 0 and "
                        f"lesion 255")
    values = np.asarray(image).astype(np.int64)
    if values.min() < 0 or values.max() > 65535:
        raise DataError(f"{path}: mask values {values.min()}..{values.max()} outside 0..65535")
    if values.max() <= 255:
        notes.append(f"{path.name}: {image.mode} mask with values up to {values.max()} read as 8-bit")
        return values.astype(np.uint8)
    notes.append(f"{path.name}: 16-bit mask scaled to 8 bits by the full scale (0..65535 -> 0..255)")
    return np.round(values * (255 / 65535)).astype(np.uint8)


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
    image, _ = _open(path, "mask")  # a 16-bit RGB mask: its high bytes are what the checks need
    notes: list[str] = []
    if image.size != tuple(image_size):
        raise DataError(f"{path}: mask size {image.size[0]}x{image.size[1]} differs from its image "
                        f"size {image_size[0]}x{image_size[1]}")
    mask = _wide_mask(image, path, notes) if _is_wide(image) else _mask_luminance(image, path, notes)
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
