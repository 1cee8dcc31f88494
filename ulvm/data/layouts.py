"""Adapters: one per raw dataset layout, each yielding the same list of (id, image file, mask file).

Everything after this module (checks, resizing, splits) is shared, so ISIC 2017, ISIC 2018, PH2 and your
own data all become ONE prepared format. The layouts are those the datasets are distributed in:

- ISIC 2017 / 2018 (paper §4.1): `ISIC_xxxxxxx.jpg` in the training-input folder and
  `ISIC_xxxxxxx_segmentation.png` in the ground-truth folder. The 2017 input folder also holds
  `ISIC_xxxxxxx_superpixels.png` files, which are ignored. Folder names vary between the official zips
  and the paper's scripts, so both are found by file name anywhere below the source folder.
- PH2 (the paper's external test set): `PH2 Dataset images/IMDxxx/IMDxxx_Dermoscopic_Image/IMDxxx.bmp`
  with `IMDxxx_lesion/IMDxxx_lesion.bmp`, and the clinical diagnosis per image in `PH2_dataset.txt`.
- A custom folder (the paper's "prepare your own dataset"): `images/` and `masks/` with matching stems;
  the masks may carry a suffix (`IMD002_lesion.png`, `ISIC_0000000_segmentation.png`), found
  automatically or given explicitly.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# Mask-name suffixes tried when none is given (PH2, ISIC, common custom names).
KNOWN_MASK_SUFFIXES = ("", "_lesion", "_segmentation", "_mask", "_Segmentation", "_gt")
PH2_DIAGNOSES = {"0": "common nevus", "1": "atypical nevus", "2": "melanoma"}


@dataclass(frozen=True)
class RawSample:
    """One raw (image, mask) pair; `diagnosis` is None where the dataset gives none."""
    id: str
    image: Path
    mask: Path
    diagnosis: str | None = None


def _is_hidden(path: Path, root: Path) -> bool:
    # macOS archive debris (`__MACOSX/`, `._name`) and hidden files are not data.
    parts = path.relative_to(root).parts
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _files(root: Path, pattern: str) -> list[Path]:
    return sorted(p for p in root.rglob(pattern) if p.is_file() and not _is_hidden(p, root))


def _unique_by_id(files: list[Path], make_id, what: str) -> dict[str, Path]:
    """Files by id; two ids that differ only in letter case are refused too: their prepared files
    (`images/<id>.png`) would be one file on a macOS or Windows disk."""
    found: dict[str, Path] = {}
    folded: dict[str, Path] = {}
    for path in files:
        key = make_id(path)
        if key.casefold() in folded:
            raise DataError(f"{path}: duplicate {what} id {key!r} (also {folded[key.casefold()]}; ids must differ "
                            "in more than letter case)")
        found[key] = folded[key.casefold()] = path
    return found


def _pair(images: dict[str, Path], masks: dict[str, Path], src: Path,
          diagnosis: dict[str, str] | None = None) -> list[RawSample]:
    """Match images and masks by id; an image without mask (or the reverse) is an error."""
    if not images and not masks:
        raise DataError(f"{src}: no images or masks found (is this the right folder?)")
    for lonely, other, what in ((images.keys() - masks.keys(), images, "image without mask"),
                                (masks.keys() - images.keys(), masks, "mask without image")):
        if lonely:
            names = ", ".join(str(other[k]) for k in sorted(lonely)[:3])
            more = f" and {len(lonely) - 3} more" if len(lonely) > 3 else ""
            raise DataError(f"{src}: {len(lonely)} {what}: {names}{more}")
    diagnosis = diagnosis or {}
    return [RawSample(k, images[k], masks[k], diagnosis.get(k)) for k in sorted(images)]


def isic_samples(src: str | Path) -> list[RawSample]:
    """ISIC 2017 or 2018 training set in its official layout (found by file name below `src`)."""
    src = Path(src)
    if not src.is_dir():
        raise DataError(f"{src}: not a folder")
    images = _unique_by_id(_files(src, "ISIC_*.jpg"), lambda p: p.stem, "image")
    masks = _unique_by_id(_files(src, "ISIC_*_segmentation.png"),
                          lambda p: p.stem[: -len("_segmentation")], "mask")
    # `ISIC_xxxxxxx_superpixels.png` never matches the two patterns above: nothing to do.
    return _pair(images, masks, src)


def parse_ph2_diagnoses(path: str | Path) -> dict[str, str]:
    """Clinical diagnosis per image id from PH2's `PH2_dataset.txt`.

    Reads both the database's `||`-separated table and a tab-separated export of it: the column headed
    "Clinical Diagnosis" holds 0 (common nevus), 1 (atypical nevus) or 2 (melanoma).
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error})") from None
    name_col = diag_col = None
    result: dict[str, str] = {}
    for line in lines:
        cells = [c.strip() for c in (line.split("||") if "||" in line else line.split("\t"))]
        if name_col is None:
            if "Name" in cells and "Clinical Diagnosis" in cells:
                name_col, diag_col = cells.index("Name"), cells.index("Clinical Diagnosis")
            continue
        if len(cells) > max(name_col, diag_col) and re.fullmatch(r"IMD\d+", cells[name_col]):
            code = cells[diag_col]
            if code not in PH2_DIAGNOSES:
                raise DataError(f"{path}: unknown clinical diagnosis {code!r} for {cells[name_col]}")
            result[cells[name_col]] = PH2_DIAGNOSES[code]
    if name_col is None or not result:
        raise DataError(f"{path}: no 'Name' / 'Clinical Diagnosis' table found")
    return result


def _ph2_diagnoses_below(src: Path) -> dict[str, str]:
    """The diagnoses of the PH2_dataset.txt below `src`; several copies must agree."""
    tables = _files(src, "PH2_dataset.txt")
    parsed = [parse_ph2_diagnoses(table) for table in tables]
    for table, diagnoses in zip(tables[1:], parsed[1:]):
        if diagnoses != parsed[0]:
            raise DataError(f"{table}: its diagnoses differ from those of {tables[0]}; keep one "
                            f"PH2_dataset.txt below {src}")
    return parsed[0] if parsed else {}


def ph2_samples(src: str | Path) -> list[RawSample]:
    """PH2 in its official folder layout, or as a flat `images/` + `masks/` folder (with the table)."""
    src = Path(src)
    if not src.is_dir():
        raise DataError(f"{src}: not a folder (extract the PH2 archive first; see `ulvm download ph2`)")
    image_files = [p for p in _files(src, "IMD*.bmp") if p.parent.name.endswith("_Dermoscopic_Image")]
    if not image_files:
        if (src / "images").is_dir() and (src / "masks").is_dir():
            return folder_samples(src)
        raise DataError(f"{src}: no PH2 images found (expected 'PH2 Dataset images/IMDxxx/"
                        f"IMDxxx_Dermoscopic_Image/IMDxxx.bmp', or an images/ + masks/ folder)")
    images = _unique_by_id(image_files, lambda p: p.stem, "image")
    mask_files = [p for p in _files(src, "IMD*_lesion.bmp") if p.parent.name.endswith("_lesion")]
    masks = _unique_by_id(mask_files, lambda p: p.stem[: -len("_lesion")], "mask")
    return _pair(images, masks, src, _ph2_diagnoses_below(src))


def detect_mask_suffix(image_ids: set[str], mask_stems: list[str], src: Path) -> str:
    """The mask-name suffix that matches the most images (ties: the shorter, i.e. earlier, one)."""
    def matches(suffix: str) -> int:
        return sum(1 for s in mask_stems if s.endswith(suffix) and s[: len(s) - len(suffix)] in image_ids)
    best = max(KNOWN_MASK_SUFFIXES, key=matches)
    if matches(best) == 0 and image_ids and mask_stems:
        raise DataError(f"{src}: no mask name matches an image name (tried suffixes "
                        f"{', '.join(repr(s) for s in KNOWN_MASK_SUFFIXES)}); pass mask_suffix "
                        f"(--mask-suffix)")
    return best


def folder_samples(src: str | Path, mask_suffix: str | None = None) -> list[RawSample]:
    """A custom `images/` + `masks/` folder with matching stems (mask stem = image stem + suffix).

    `mask_suffix=None` detects the suffix among "", "_lesion", "_segmentation", "_mask"...; a
    `PH2_dataset.txt` anywhere below `src` provides diagnoses (used to stratify the folds).
    """
    src = Path(src)
    image_dir, mask_dir = src / "images", src / "masks"
    for folder in (image_dir, mask_dir):
        if not folder.is_dir():
            raise DataError(f"{folder}: folder not found (a custom dataset has images/ and masks/)")
    image_files = [p for p in _files(image_dir, "*") if p.suffix.lower() in IMAGE_SUFFIXES]
    mask_files = [p for p in _files(mask_dir, "*") if p.suffix.lower() in IMAGE_SUFFIXES]
    images = _unique_by_id(image_files, lambda p: p.stem, "image")
    if mask_suffix is None:
        mask_suffix = detect_mask_suffix(set(images), [p.stem for p in mask_files], src)

    def mask_id(path: Path) -> str:
        return path.stem[: len(path.stem) - len(mask_suffix)] if path.stem.endswith(mask_suffix) else path.stem

    masks = _unique_by_id(mask_files, mask_id, "mask")
    return _pair(images, masks, src, _ph2_diagnoses_below(src))


def raw_samples(kind: str, src: str | Path, mask_suffix: str | None = None) -> list[RawSample]:
    """The samples of a raw dataset of the given kind, sorted by id."""
    if kind in ("isic2017", "isic2018"):
        return isic_samples(src)
    if kind == "ph2":
        return ph2_samples(src)
    if kind == "folder":
        return folder_samples(src, mask_suffix)
    raise DataError(f"unknown dataset kind {kind!r} (isic2017, isic2018, ph2 or folder)")
