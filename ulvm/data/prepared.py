"""The prepared dataset as read back: `load_prepared` reads a folder of `ulvm prepare` (`ulvm.data.prepare`)
into memory as a `PreparedDataset`, checking its manifest, the size of every PNG and (by default) every
sample's pixel hash against the manifest.
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError
from ..io import json_dumps
from .prepare import FORMAT, MANIFEST_FIELDS, pixels_sha256
from .splits import SPLITS


@dataclass
class PreparedDataset:
    """A prepared dataset held in memory: all images and masks, the manifest, the splits.

    images: (n, size, size, 3) uint8; masks: (n, size, size) uint8, soft 0..255 (threshold at 128 / 0.5
    after /255 where binary masks are needed). Rows follow `ids` (sorted).
    """
    root: Path
    manifest: dict
    manifest_hash: str
    images: np.ndarray
    masks: np.ndarray
    _position: dict = field(init=False, repr=False)  # id -> row

    def __post_init__(self):
        self._position = {key: i for i, key in enumerate(self.ids)}

    @property
    def ids(self) -> list[str]:
        return self.manifest["ids"]

    @property
    def content_hash(self) -> str:
        """SHA-256 of the prepared pixels and splits: independent of the paths in the command."""
        return self.manifest["content_sha256"]

    @property
    def content_scheme(self) -> int:
        """What `content_hash` covers (`ulvm.data.prepare.CONTENT_SCHEME`; older manifests, without the key: 1)."""
        return self.manifest.get("content_scheme", 1)

    def split_sha256(self, split: str, fold: int | None = None) -> str:
        """SHA-256 of one split alone: its ids in order, their prepared pixels and the size. Equal for two
        preparations whose `content_hash` differs only in the other splits or the folds."""
        rows = self.indices(split, fold)
        samples = self.manifest["samples"]
        return hashlib.sha256(json_dumps({"ids": [self.ids[i] for i in rows], "size": self.manifest["size"],
                                          "pixels": [samples[i]["pixels_sha256"] for i in rows]}).encode()).hexdigest()

    @property
    def diagnosis(self) -> list[str | None] | None:
        labels = [s["diagnosis"] for s in self.manifest["samples"]]
        return labels if any(labels) else None

    @property
    def folds(self) -> int:
        return len(self.manifest["folds"])

    def __len__(self) -> int:
        return len(self.ids)

    def _parts(self, fold: int | None) -> dict:
        if fold is None:
            return self.manifest["split"]
        if not 0 <= fold < self.folds:
            raise DataError(f"{self.root}: no fold {fold} (this dataset has {self.folds} folds)")
        return self.manifest["folds"][fold]

    def split_names(self, fold: int | None = None) -> list[str]:
        """The non-empty splits, in train/val/test order (PH2's paper split has only "test")."""
        parts = self._parts(fold)
        return [name for name in SPLITS if parts.get(name)]

    def indices(self, split: str, fold: int | None = None) -> np.ndarray:
        """Row indices (into images/masks) of a split of the paper split, or of fold `fold`."""
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r} (train, val or test)")
        parts = self._parts(fold)
        if not parts.get(split):
            where = "the paper split" if fold is None else f"fold {fold}"
            raise DataError(f"{self.root}: {where} has no {split!r} images")
        return np.array([self._position[key] for key in parts[split]], dtype=np.int64)


def _read_png(path: Path, mode: str) -> np.ndarray:
    try:
        with Image.open(path) as image:
            if image.mode != mode:
                raise DataError(f"{path}: prepared file has mode {image.mode}, expected {mode}")
            return np.asarray(image)
    except (OSError, SyntaxError) as error:
        raise DataError(f"{path}: cannot read prepared file ({error})") from None


def load_prepared(root: str | os.PathLike, verify: bool = True) -> PreparedDataset:
    """Load a prepared dataset into memory (decoding in threads); `verify` checks every pixel hash."""
    root = Path(root)
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise DataError(f"{root}: not a prepared dataset (no manifest.json; run `ulvm prepare`)")
    raw = manifest_path.read_bytes()
    try:
        manifest = json.loads(raw)
    except json.JSONDecodeError as error:
        raise DataError(f"{manifest_path}: not valid JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{manifest_path}: not a {FORMAT} manifest")
    missing = [key for key in MANIFEST_FIELDS if key not in manifest]
    if missing:
        raise DataError(f"{manifest_path}: manifest lacks {', '.join(missing)} (prepare the dataset again)")
    ids = manifest["ids"]
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        images = list(pool.map(lambda key: _read_png(root / "images" / f"{key}.png", "RGB"), ids))
        masks = list(pool.map(lambda key: _read_png(root / "masks" / f"{key}.png", "L"), ids))
    size = manifest["size"]
    for key, image, mask in zip(ids, images, masks):
        for folder, array in (("images", image), ("masks", mask)):
            if array.shape[:2] != (size, size):
                raise DataError(f"{root / folder / key}.png: prepared file is {array.shape[1]}x{array.shape[0]}, "
                                f"the manifest says {size}x{size}")
    if verify:
        for key, image, mask, record in zip(ids, images, masks, manifest["samples"]):
            if pixels_sha256(image, mask) != record["pixels_sha256"]:  # one hash covers both files
                raise DataError(f"{root / 'images' / key}.png or {root / 'masks' / key}.png: pixels differ "
                                f"from the manifest's hash (the prepared dataset was modified; prepare it again)")
    return PreparedDataset(root, manifest, hashlib.sha256(raw).hexdigest(),
                           np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8),
                           np.stack(masks) if masks else np.zeros((0, size, size), np.uint8))
