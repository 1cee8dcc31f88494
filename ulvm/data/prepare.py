"""Preparation: raw dataset -> ONE prepared format (256x256 PNGs + manifest.json).

What the paper's preparation scripts do (`dataprepare/Prepare_*.py`, §4.1), made reproducible:
- every image is resized to 256x256 with bilinear interpolation (`scipy.misc.imresize(..., 'bilinear')`
  in the paper, which is Pillow's bilinear resize underneath; we call Pillow directly);
- every mask is ALSO resized bilinearly, so its edges become soft (values between 0 and 255). The paper
  keeps these soft values: the loader divides by 255 and trains on soft targets, and the metrics
  threshold targets and predictions at 0.5. We store the soft uint8 mask and threshold at use;
- the split is seeded and machine-independent (see `ulvm.data.splits`).

The prepared folder (`data/prepared/NAME/`) holds `images/<id>.png` (RGB), `masks/<id>.png` (8-bit, soft
0..255) and `manifest.json`: source file names, sizes and SHA-256, split and folds, every fix-up applied,
a SHA-256 of the prepared pixels, and the exact command. Lossless PNG keeps it compact (the 200 PH2
images take ~20 MB) and readable by any image viewer. The same inputs and seed give a byte-identical
manifest on any machine (no dates, no absolute paths the user did not type, no library versions).
The folder is built under a temporary name and renamed at the end: a failure leaves nothing behind.
`--overwrite` only ever replaces a prepared dataset (its manifest and nothing but its images and masks),
never a folder of yours, and `--out` may not be, hold or lie inside `--src`.
`ulvm.data.prepared.load_prepared` reads it back. The book explains all this in `notebooks/04_data.ipynb`.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shlex
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError
from ..io import (
    OWNER_MARKER,
    atomic_directory,
    atomic_write_bytes,
    die_with_parent,
    foreign_entries,
    json_dumps,
)
from ..progress import progress_bar
from .checks import file_sha256, read_image, read_mask
from .layouts import RawSample, raw_samples
from .splits import (DEFAULT_FOLD_VAL_FRACTION, PAPER_COUNTS, SPLIT_METHODS, SPLITS, kfold_splits, normalize_counts,
                     official_split, seeded_split)

log = logging.getLogger(__name__)

FORMAT = "ulvm-prepared-1"
KINDS = ("isic2017", "isic2018", "ph2", "folder")
PNG_COMPRESS_LEVEL = 6
RESIZE_NOTE = {
    "image": "Pillow bilinear resize to size x size (as scipy.misc.imresize 'bilinear' in the paper)",
    "mask": "Pillow bilinear resize, soft edges kept (0..255) as in the paper; targets are mask / 255, "
            "thresholded at 0.5 where a binary mask is needed (metrics)",
}


# What a manifest's `content_sha256` covers, recorded beside it: the prepared pixels of every sample in id
# order, the size, the split and the k folds. Two preparations of the same images into other splits or folds
# (PH2 all-test with `ulvm prepare ph2`, 5 folds, or with `ulvm prepare folder --all-test`, none) differ in it;
# `ulvm.data.prepared.PreparedDataset.split_sha256` compares one split alone. Manifests without the key are
# scheme 1, unchanged since the first prepare; a change of what the hash covers must give it a new number.
CONTENT_SCHEME = 1


def pixels_sha256(image: np.ndarray, mask: np.ndarray) -> str:
    """Hash of one prepared sample's pixels (not of the PNG bytes, which depend on the zlib build)."""
    digest = hashlib.sha256(np.ascontiguousarray(image).tobytes())
    digest.update(np.ascontiguousarray(mask).tobytes())
    return digest.hexdigest()


def png_bytes(array: np.ndarray, compress_level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """An (H, W, 3) or (H, W) uint8 array as lossless PNG bytes (RGB or 8-bit grey)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG", compress_level=compress_level)
    return buffer.getvalue()


def _prepare_sample(sample: RawSample, *, src: Path, out: Path, size: int, allow_soft: bool,
                    check_inverted: bool, min_size: int | None = None) -> dict:
    """Read, check, resize and write one sample; return its manifest record."""
    image, notes = read_image(sample.image)
    if min_size and min(image.shape[:2]) < min_size:
        raise DataError(f"{sample.image}: image is {image.shape[1]}x{image.shape[0]} pixels, its shorter side "
                        f"is below --min-size {min_size}")
    mask, mask_notes = read_mask(sample.mask, (image.shape[1], image.shape[0]), allow_soft=allow_soft,
                                 check_inverted=check_inverted)
    image_small = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
    mask_small = np.asarray(Image.fromarray(mask).resize((size, size), Image.BILINEAR))
    atomic_write_bytes(out / "images" / f"{sample.id}.png", png_bytes(image_small))
    atomic_write_bytes(out / "masks" / f"{sample.id}.png", png_bytes(mask_small))
    return {
        "id": sample.id,
        "image": sample.image.relative_to(src).as_posix(),
        "mask": sample.mask.relative_to(src).as_posix(),
        "image_sha256": file_sha256(sample.image),
        "mask_sha256": file_sha256(sample.mask),
        "source_size": [image.shape[1], image.shape[0]],
        "diagnosis": sample.diagnosis,
        "pixels_sha256": pixels_sha256(image_small, mask_small),
        "lesion_pixels": int(np.count_nonzero(mask >= 128)),  # in the source mask; 0: an empty mask
        "notes": notes + mask_notes,
    }


def _command(kind, src, out, size, seed, counts, folds, fold_val_fraction, allow_soft_masks, mask_suffix,
             check_inverted, min_size, all_test, split_method="seeded") -> str:
    """The `ulvm prepare` command line that reproduces this preparation."""
    words = ["ulvm", "prepare", kind, "--src", str(src), "--out", str(out), "--size", str(size),
             "--seed", str(seed)]
    if all_test:  # no folds, no counts: the flag says it all
        words.append("--all-test")
    else:
        words += ["--folds", str(folds)]
        if fold_val_fraction != DEFAULT_FOLD_VAL_FRACTION:
            words += ["--fold-val-fraction", str(fold_val_fraction)]
    if counts is not None:
        words += ["--counts", *(str(counts.get(name, 0)) for name in SPLITS)]
    if split_method != "seeded":
        words += ["--split", split_method]
    if allow_soft_masks:
        words.append("--allow-soft-masks")
    if mask_suffix is not None:
        words += ["--mask-suffix", mask_suffix]
    if check_inverted is not None:
        words.append("--inverted-check" if check_inverted else "--no-inverted-check")
    if min_size:
        words += ["--min-size", str(min_size)]
    return shlex.join(words)


MANIFEST_FIELDS = ("ids", "size", "samples", "split", "folds")


def is_prepared_dataset(folder: Path) -> bool:
    """True if `folder` is a prepared dataset made by `ulvm prepare` and holds nothing else.

    Its manifest has our `format` (every manifest ulvm ever wrote has it) and the prepared layout's
    fields, and besides it there are only `images/` and `masks/` holding `<id>.png` of the manifest's ids
    (and the marker `ulvm.io` adds). This is what `--overwrite` may delete; anything else is refused.
    """
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not (isinstance(manifest, dict) and manifest.get("format") == FORMAT
            and all(key in manifest for key in MANIFEST_FIELDS) and isinstance(manifest["ids"], list)):
        return False
    pngs = {f"{key}.png" for key in manifest["ids"] if isinstance(key, str)}

    def ours(entry: Path) -> bool:
        if entry.is_symlink():
            return False
        if entry.name in ("manifest.json", OWNER_MARKER):
            return entry.is_file()
        return entry.name in ("images", "masks") and entry.is_dir() and not foreign_entries(
            entry, lambda f: f.name in pngs and f.is_file() and not f.is_symlink())

    return not foreign_entries(folder, ours)


def _check_out(src: Path, out: Path, overwrite: bool) -> None:
    """Refuse an `out` that overlaps `src`, or that exists and may not be replaced (before any work)."""
    s, o = src.resolve(), out.resolve()
    if o == s or s in o.parents or o in s.parents:
        relation = "is" if o == s else ("lies inside" if s in o.parents else "contains")
        raise DataError(f"--out {out} {relation} --src {src}: the prepared dataset must go to a folder "
                        f"of its own, apart from the raw data (e.g. data/prepared/NAME)")
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise DataError(f"{out}: already exists (pass overwrite=True / --overwrite to replace it)")
        if out.is_symlink() or not out.is_dir() or (any(out.iterdir()) and not is_prepared_dataset(out)):
            raise DataError(f"{out}: not replaced: it is not a prepared dataset made by `ulvm prepare` (no "
                            f"{FORMAT} manifest, or it holds other files); --overwrite only replaces a "
                            f"prepared dataset. Move it away or choose another --out")


def _listed(ids: list[str]) -> str:
    return ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")


def _warn_unusual(records: list[dict], size: int) -> tuple[list[str], list[str]]:
    """Ids of empty masks and of images smaller than `size`, each kind logged as one warning.

    Both are accepted (they are not errors): some datasets rightly hold images without a lesion, and a
    small image is upscaled like any other. But either can also be a missing annotation or a thumbnail
    slipped in, so the manifest lists them and the log says so.
    """
    empty = [r["id"] for r in records if r["lesion_pixels"] == 0]
    small = [r["id"] for r in records if min(r["source_size"]) < size]
    if empty:
        log.warning("%d empty masks (no lesion pixel): %s. Legitimate where a dataset has images without a "
                    "lesion; otherwise a missing annotation (listed in the manifest's empty_masks)",
                    len(empty), _listed(empty))
    if small:
        log.warning("%d images smaller than %dx%d are upscaled: %s (listed in the manifest's small_images; "
                    "--min-size PIXELS refuses them)", len(small), size, size, _listed(small))
    return empty, small


def _default_counts(kind: str, n: int, where: str) -> dict[str, int] | None:
    if kind == "ph2":
        return {"test": n}  # the paper's external validation: every PH2 image is a test image
    if kind in PAPER_COUNTS:
        paper = PAPER_COUNTS[kind]
        if sum(paper.values()) != n:
            raise DataError(f"{where}: the paper's {kind} split {paper} needs {sum(paper.values())} "
                            f"images, found {n} (an incomplete download? or pass counts)")
        return dict(paper)
    return None


def prepare(kind: str, src: str | os.PathLike, out: str | os.PathLike, *, size: int = 256, seed: int = 42,
            counts=None, folds: int | None = None, overwrite: bool = False, allow_soft_masks: bool = False,
            mask_suffix: str | None = None, check_inverted: bool | None = None,
            fold_val_fraction: float = DEFAULT_FOLD_VAL_FRACTION, workers: int | None = None,
            min_size: int | None = None, all_test: bool = False, split_method: str = "seeded") -> Path:
    """Prepare a raw dataset of `kind` ("isic2017", "isic2018", "ph2", "folder") from `src` into `out`.

    counts: {split: n} or (train, val, test); default: the paper's counts (ISIC), all images as test
    (PH2), or 70/10/20% (folder). all_test: every image in the test split and no folds (an external
    test set, e.g. PH2 for a model trained on ISIC); not with counts or folds. folds: k of the extra
    k-fold CV splits (default 5; 0: none; skipped with a note when there are fewer than 2k images). check_inverted: reject masks that look inverted (default: on
    for custom folders, off for the official datasets, whose convention is known). min_size: refuse
    (DataError naming the file) an image whose shorter side is below it; smaller images than `size` are
    otherwise accepted, upscaled, and listed in the manifest's `small_images`. split_method: "seeded"
    (sorted ids, permuted with `seed`, then cut) or "official" (sorted ids cut into contiguous parts, as the
    official ISIC 2017 script slices its list; `seed` then only draws the folds). Returns `out`.
    """
    if kind not in KINDS:
        raise DataError(f"unknown dataset kind {kind!r} ({', '.join(KINDS)})")
    if split_method not in SPLIT_METHODS:
        raise DataError(f"unknown split method {split_method!r} ({', '.join(SPLIT_METHODS)})")
    src_given, out_given, src, out = src, out, Path(src), Path(out)
    _check_out(src, out, overwrite)
    if size <= 0 or size % 32:
        raise DataError(f"size {size} must be a positive multiple of 32 (the U-Net halves it five times)")
    if min_size is not None and min_size < 1:
        raise DataError(f"min_size {min_size} must be at least 1 pixel")
    if all_test and (counts is not None or folds):
        raise DataError("all_test (--all-test) puts every image in the test split, with no folds: "
                        "pass it without counts (--counts) and folds (--folds)")
    folds = 0 if all_test else (5 if folds is None else folds)
    samples = raw_samples(kind, src, mask_suffix)
    ids = [s.id for s in samples]
    if all_test:
        counts = {"test": len(ids)}
    split_counts = normalize_counts(counts if counts is not None else _default_counts(kind, len(ids), str(src)),
                                    len(ids), str(src))
    if split_method == "official":
        split = official_split(ids, split_counts)
    else:
        split = seeded_split(ids, split_counts, seed)
    explicit_counts = split_counts if counts is not None and not all_test else None
    command = _command(kind, src_given, out_given, size, seed, explicit_counts, folds, fold_val_fraction,
                       allow_soft_masks, mask_suffix, check_inverted, min_size, all_test, split_method)
    if check_inverted is None:
        check_inverted = kind == "folder"
    notes = ["every image in the test split (--all-test): no folds"] if all_test else []
    fold_parts = []
    if folds and len(ids) < 2 * folds:
        notes.append(f"{len(ids)} images are too few for {folds} folds: no folds written")
        log.warning(notes[-1])
    elif folds:
        labels = [s.diagnosis for s in samples]
        fold_parts = kfold_splits(ids, labels if any(labels) else None, folds, seed, fold_val_fraction)

    work = partial(_prepare_sample, src=src, size=size, allow_soft=allow_soft_masks,
                   check_inverted=check_inverted, min_size=min_size)
    workers = workers or min(len(samples), os.cpu_count() or 1, 8)
    try:
        with atomic_directory(out, overwrite=overwrite, replaceable=is_prepared_dataset) as tmp:
            work = partial(work, out=tmp)
            progress = dict(total=len(samples), desc=f"prepare {kind}", unit="img", leave=False)
            if workers > 1:
                with ProcessPoolExecutor(workers, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
                    try:
                        records = list(progress_bar(pool.map(work, samples, chunksize=4), **progress))
                    except BaseException:
                        pool.shutdown(cancel_futures=True)  # first error: stop, don't finish the rest
                        raise
            else:
                records = [work(s) for s in progress_bar(samples, **progress)]
            for record in records:
                for note in record["notes"]:
                    log.info("fix-up: %s", note)
            empty_masks, small_images = _warn_unusual(records, size)
            content = hashlib.sha256(json_dumps({
                "pixels": [r["pixels_sha256"] for r in records], "size": size,
                "split": split, "folds": fold_parts}).encode())
            manifest = {
                "format": FORMAT,
                "kind": kind,
                "command": command,
                "size": size,
                "seed": seed,
                "resize": RESIZE_NOTE,
                "ids": ids,
                "samples": records,
                "split": {"counts": split_counts, **split},
                "folds": fold_parts,
                "fold_val_fraction": fold_val_fraction if fold_parts else None,
                "notes": notes,
                "empty_masks": empty_masks,
                "small_images": small_images,
                "content_sha256": content.hexdigest(),
                "content_scheme": CONTENT_SCHEME,
            }
            atomic_write_bytes(tmp / "manifest.json", json_dumps(manifest).encode())
    except FileExistsError:
        raise DataError(f"{out}: already exists (pass overwrite=True / --overwrite to replace it)") from None
    log.info("prepared %d %s images in %s", len(ids), kind, out)
    return out
