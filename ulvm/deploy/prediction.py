"""Your own images in, lesion masks out: `ulvm.predict` and `ulvm predict`.

    masks = ulvm.predict(["a.jpg", pil_image, array], weights="isic2017")      # (H, W) uint8 0/255 each
    ulvm predict photos/ --weights isic2017 --out masks/ --overlay            # the same from the shell

Each image is read as `ulvm prepare` reads it (any size; RGB, grey, RGBA, 16-bit: `ulvm.data.checks`),
resized to the model's input (bilinear, as the paper's preparation), normalised the paper's way
(per-image min-max to 0..255: the paper's per-split z-score changes nothing after it), segmented, and the
probability map is resized back to the image's ORIGINAL size (bilinear) before thresholding, so the mask
lies on the photo. Weights: a shipped name (`ulvm.deploy.pretrained`), a run folder or its `best.pt`, a weights
file, an official UltraLight VM-UNet `.pth` (a plain state dict of the ×4 model), or a `.pt2` package of
`ulvm export --format pt2` (the fastest on a CPU; CPU only). A package is compiled code, run when it is
loaded: only one this user built, or marked trusted, is loaded (`ulvm.deploy.trust`).

`predict_files` replaces only files it wrote (`OutputFolder`), and batches by pixels as well as by count.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from ..config import Config
from ..data.checks import read_image, read_mask
from ..data.dataset import paper_normalize
from ..data.layouts import IMAGE_SUFFIXES, KNOWN_MASK_SUFFIXES, detect_mask_suffix
from ..data.prepare import png_bytes
from ..data.tensors import batches
from ..engine.checkpoint import load_model_state, model_from_checkpoint, read_checkpoint
from ..engine.inference import overlay
from ..errors import DataError, UlvmError
from ..io import atomic_write_bytes, atomic_write_json, writable_folder
from ..metrics import confusion_counts, per_image_metrics, pooled_metrics
from ..progress import progress_bar
from ..registry import build_model
from ..runtime import resolve_device
from .pretrained import available, load_pretrained


def load_weights(weights: str | os.PathLike | torch.nn.Module = "isic2017", device: str = "cpu",
                 backend: str = "auto", trust_package: bool = False) -> torch.nn.Module:
    """A model in eval mode from a shipped name, a run folder, a checkpoint / weights file, an official .pth,
    or a .pt2 package (`ulvm.deploy.package.load_pt2`: compiled code, loaded only if this user exported it
    or `trust_package`). Checkpoints and weights files are read with weights_only=True: they run no code."""
    if isinstance(weights, torch.nn.Module):
        return weights.to(device).eval()
    if str(weights) in available():
        return load_pretrained(str(weights), device, backend)
    path = Path(weights)
    if path.suffix == ".pt2":         # compiled ahead of time by `ulvm export --format pt2`: CPU only
        from .package import load_pt2

        if backend != "auto":
            raise UlvmError(f"{path}: the scan is compiled into the package ({backend!r} cannot be chosen)")
        return load_pt2(path, trust=trust_package).to(device)
    if path.is_dir():
        path = path / "best.pt"
    if not path.is_file():
        raise UlvmError(f"{weights}: no such weights file or run folder, and not a shipped model "
                        f"(shipped: {', '.join(available())})")
    checkpoint = read_checkpoint(path)
    if isinstance(checkpoint, dict) and "config" in checkpoint:
        model, config = model_from_checkpoint(checkpoint, source=str(path), backend=backend)
        model.config = config                # its input size: what predict and export default to
    else:  # official weights: a state dict of the paper's model
        model = load_model_state(build_model(Config(), backend), checkpoint).eval()
    return model.to(device).eval()


def _device_for(weights, device: str) -> torch.device:
    """`device` resolved; "auto" is the CPU for a .pt2 package, whose code is compiled for it."""
    is_package = isinstance(weights, (str, os.PathLike)) and Path(weights).suffix == ".pt2"
    return resolve_device("cpu" if is_package and device == "auto" else device)


def as_rgb(image, name: str = "image") -> np.ndarray:
    """An input as `(H, W, 3)` uint8: a path (read as `ulvm prepare` reads it), a PIL image or an array.
    Files and PIL images are turned upright by their EXIF orientation, as viewers show them, so that the
    mask matches the photo the user sees."""
    if isinstance(image, (str, os.PathLike)):
        return read_photo(image)[0]
    if isinstance(image, Image.Image):
        image = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or min(array.shape[:2]) < 1:
        raise DataError(f"{name}: expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {array.shape}")
    if array.dtype != np.uint8:
        low, high = float(array.min()), float(array.max())
        array = ((array - low) * (255.0 / (high - low)) if high > low else np.zeros_like(array)).round()
    return array[..., :3].astype(np.uint8)


@torch.no_grad()
def probabilities(model: torch.nn.Module, images: list[np.ndarray], size: int, device) -> list[np.ndarray]:
    """Lesion probability `(H, W)` float32 at each image's own size, for RGB images `(H, W, 3)` uint8."""
    small = np.stack([np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
                      for image in images])                                            # (n, S, S, 3)
    # The paper z-scores with its split's mean/std, then min-maxes each image: the min-max undoes any
    # z-score, so the statistics do not matter here (0 and 1), and one image predicts as in a batch.
    batch = torch.from_numpy(paper_normalize(small, 0.0, 1.0)).permute(0, 3, 1, 2).to(device)   # (n, 3, S, S)
    probs = model(batch).float()                                                     # (n, 1, S, S)
    return [F.interpolate(p[None], size=image.shape[:2], mode="bilinear", align_corners=False)[0, 0].cpu().numpy()
            for p, image in zip(probs, images)]


def check_settings(threshold: float, batch_size: int) -> None:
    """A clear error for a threshold or batch size that means nothing (nan, 2, -1; 0 images a batch)."""
    if not (isinstance(threshold, (int, float)) and 0.0 < threshold < 1.0):      # nan fails the comparison too
        raise UlvmError(f"threshold {threshold}: must be a number strictly between 0 and 1 (e.g. 0.5)")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UlvmError(f"batch size {batch_size}: must be a whole number >= 1")


def predict(images, weights="isic2017", *, threshold: float = 0.5, device: str = "auto", backend: str = "auto",
            batch_size: int = 8, size: int | None = None, trust_package: bool = False) -> list[np.ndarray]:
    """Lesion masks `(H, W)` uint8 (0 or 255) at each input's original size.

    `images`: one image or a list of paths, PIL images and arrays. `weights`: see `load_weights` (or a
    model; a .pt2 package is code: see `ulvm.deploy.trust`). `size`: the model's input size (default: the
    weights' training size, 256 for the paper).
    """
    check_settings(threshold, batch_size)
    single = isinstance(images, (str, os.PathLike, Image.Image, np.ndarray))
    items = [images] if single else list(images)
    device = _device_for(weights, device)
    model = load_weights(weights, device, backend, trust_package)
    size = size or getattr(getattr(model, "config", None), "input_size", 256)
    rgb = [read_photo(item)[0] if isinstance(item, (str, os.PathLike)) else as_rgb(item, f"image {i}")
           for i, item in enumerate(items)]
    masks = []
    for part in batches(len(rgb), batch_size):
        masks += [(p >= threshold).astype(np.uint8) * 255 for p in probabilities(model, rgb[part], size, device)]
    return masks[0] if single else masks


# The smallest photo segmented: below it a photo holds too little to segment (a 1x1 image upscaled to the
# model's input is one flat colour, all "lesion").
MIN_PHOTO_SIDE = 32
# Pixels read and predicted at a time (besides --batch-size images): ~20 bytes a pixel are held (the photo,
# its probability map, its mask), so a batch stays below ~0.5 GB however large the photos.
PIXELS_PER_BATCH = 24_000_000


def photo_size(path: Path) -> tuple[int, int, int] | None:
    """(width, height, frames) of an image file, read from its header without decoding it; None when the
    header cannot be read (reading it later gives the error)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return (*image.size, int(getattr(image, "n_frames", 1)))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def read_photo(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """A photo file as `(H, W, 3)` uint8, upright (`as_rgb`), and warnings about it: several frames (an
    animated GIF, a multi-page TIFF: the first is used), a size above Pillow's decompression-bomb limit. A
    photo smaller than MIN_PHOTO_SIDE or above twice that limit is a DataError naming the file."""
    path = Path(path)
    header, notes = photo_size(path), []
    if header is not None:
        width, height, frames = header
        megapixels, limit = width * height / 1e6, (Image.MAX_IMAGE_PIXELS or math.inf) / 1e6
        if min(width, height) < MIN_PHOTO_SIDE:
            raise DataError(f"{path}: {width}x{height} pixels is too small to segment (at least "
                            f"{MIN_PHOTO_SIDE}x{MIN_PHOTO_SIDE})")
        if megapixels > 2 * limit:
            raise DataError(f"{path}: {megapixels:.0f} megapixels, more than the {2 * limit:.0f} that are read "
                            "safely (Pillow's decompression-bomb guard); resize the photo first")
        if megapixels > limit:
            notes.append(f"{megapixels:.1f} megapixels: read at full size (about {megapixels * 20 / 1000:.1f} GB "
                         "of memory); the mask is as large")
        if frames > 1:
            notes.append(f"{frames} frames (an animated or multi-page file): only the first is segmented")
    with warnings.catch_warnings():           # said above, in our words, instead of Pillow's
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return read_image(path, upright=True)[0], notes


def image_files(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """The image files named by `inputs`: files as given, folders searched (not recursively) by suffix, broken
    links and link loops included (reading them reports them by name, instead of passing them over)."""
    found = []
    for item in map(Path, inputs):
        if item.is_dir():
            found += sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())
        else:
            found.append(item)
    return found


def expert_masks(images: list[Path], folder: str | os.PathLike) -> dict[Path, Path]:
    """The expert mask in `folder` of each image that has one, matched by name as `ulvm prepare` matches a
    custom dataset's: the image's stem plus the suffix that matches the most ("", "_lesion" as PH2,
    "_segmentation" as ISIC, "_mask", ...)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UlvmError(f"{folder}: no such folder of expert masks")
    inputs = set(images)
    masks = {p.stem: p for p in image_files([folder]) if p not in inputs}          # not the images themselves
    try:
        suffix = detect_mask_suffix({p.stem for p in images}, list(masks), folder)
    except DataError:
        raise DataError(f"{folder}: no mask's name is an input image's name plus one of the suffixes "
                        f"{', '.join(repr(s) for s in KNOWN_MASK_SUFFIXES)}") from None
    return {image: masks[image.stem + suffix] for image in images if image.stem + suffix in masks}


@dataclass
class PredictReport:
    written: list[Path] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)     # input -> why it was not predicted
    skipped: dict[str, str] = field(default_factory=dict)    # input -> why it is not a photo to predict
    warnings: dict[str, str] = field(default_factory=dict)   # input (predicted) -> what to know about it
    counts: dict[str, list[int]] = field(default_factory=dict)   # input -> TP, FP, FN, TN against its expert mask
    unscored: dict[str, str] = field(default_factory=dict)   # input (predicted) -> why it has no score
    seconds: float = 0.0                                       # reading, predicting and writing, all inputs
    device: str = ""                                           # where the model ran
    package: dict[str, str] | None = None                      # a .pt2 package's metadata (`load_pt2`)

    def agreement(self) -> dict:
        """How the masks agree with the expert masks: the paper's pooled metrics over every scored pixel,
        the mean per-image DSC, and each image's DSC."""
        if not self.counts:
            return {"images": 0}
        counts = np.array(list(self.counts.values()))
        dsc = per_image_metrics(counts)["dsc"]
        return {"images": len(counts), "pooled": pooled_metrics(counts), "mean_dsc": float(dsc.mean()),
                "per_image_dsc": {Path(name).stem: round(float(d), 6) for name, d in zip(self.counts, dsc)}}


OUTPUTS_RECORD = ".ulvm-predict.json"     # in an --out folder: the files `predict_files` wrote, and their SHA-256
OUTPUT_SUFFIXES = ("_mask", "_overlay")   # what `predict_files` adds to an image's stem


class OutputFolder:
    """An --out folder of `predict_files`, and which of its files ulvm wrote: a file is replaced only if the
    record (`OUTPUTS_RECORD`, rewritten atomically after every batch) lists it with its present content. Any
    other existing `<stem>_mask.png` is left alone, and its image reported as failed."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        if (self.folder.exists() or self.folder.is_symlink()) and not self.folder.is_dir():
            raise UlvmError(f"{self.folder}: exists and is not a folder; give a folder to write into")
        self.record = self.folder / OUTPUTS_RECORD
        self.files: dict[str, str] = {}
        if self.record.exists():
            try:
                self.files = dict(json.loads(self.record.read_text(encoding="utf-8"))["files"])
            except (OSError, ValueError, KeyError, TypeError) as error:
                raise UlvmError(f"{self.record}: not a readable record of the files ulvm predict wrote ({error}); "
                                "move it away, or choose another --out") from None

    def replaceable(self, name: str) -> bool:
        """Whether `name` is free, or a file this record says ulvm wrote and nobody changed since."""
        path = self.folder / name
        if not (path.exists() or path.is_symlink()):
            return True
        if path.is_symlink() or not path.is_file() or name not in self.files:
            return False
        return hashlib.sha256(path.read_bytes()).hexdigest() == self.files[name]

    def write(self, name: str, data: bytes) -> Path:
        try:
            path = atomic_write_bytes(self.folder / name, data)
        except OSError as error:
            raise UlvmError(f"{self.folder / name}: cannot write ({error.strerror or error}); the masks "
                            "written before it are complete") from None
        self.files[name] = hashlib.sha256(data).hexdigest()
        return path

    def save(self) -> None:
        atomic_write_json(self.record, {"made_by": "ulvm predict", "files": self.files})


def _not_a_photo(path: Path, out: OutputFolder) -> str | None:
    """Why an input is not segmented: a file ulvm predict wrote, or, in the --out folder itself, a file
    named like a mask (the user's expert masks beside their photos)."""
    if path.parent.resolve() == out.folder.resolve() and path.name in out.files:
        return f"written by ulvm predict (listed in {out.record})"
    if path.parent.resolve() == out.folder.resolve():
        for suffix in (*OUTPUT_SUFFIXES, *KNOWN_MASK_SUFFIXES):
            if suffix and path.stem.endswith(suffix):
                return f"named like a mask ({suffix!r}), in the --out folder: not segmented as a photo"
    return None


def pixel_batches(pixels: list[int], batch_size: int, max_pixels: int = PIXELS_PER_BATCH):
    """Consecutive slices of at most `batch_size` items and, unless one item alone is larger, `max_pixels`."""
    start, total = 0, 0
    for i, count in enumerate(pixels):
        if i > start and (i - start == batch_size or total + count > max_pixels):
            yield slice(start, i)
            start, total = i, 0
        total += count
    if start < len(pixels):
        yield slice(start, len(pixels))


def predict_files(inputs, out_dir: str | os.PathLike, weights="isic2017", *, overlay_images: bool = False,
                  threshold: float = 0.5, device: str = "auto", backend: str = "auto", batch_size: int = 8,
                  progress: bool = True, truth: str | os.PathLike | None = None,
                  trust_package: bool = False) -> PredictReport:
    """Write `OUT/<stem>_mask.png` (0/255, original size) and with `overlay_images` `OUT/<stem>_overlay.png`
    for every image in `inputs`. Unreadable inputs, and inputs whose output would replace a file ulvm did not
    write (`OutputFolder`), are reported in `failed` and skipped; files named like masks in OUT itself, and
    ulvm's own outputs, in `skipped`. Each file is written atomically, so nothing is half-written. With
    `truth`, a folder of expert masks (`expert_masks`), each mask is also scored against its expert mask
    (`PredictReport.agreement`)."""
    started = time.perf_counter()
    check_settings(threshold, batch_size)
    out = OutputFolder(out_dir)
    report = PredictReport()
    files = []
    for path in image_files(inputs):
        why = _not_a_photo(path, out)
        if why:
            report.skipped[str(path)] = why
        else:
            files.append(path)
    if not files:
        raise UlvmError(f"no images found in {', '.join(map(str, inputs))} (suffixes: "
                        f"{', '.join(IMAGE_SUFFIXES)}" + (f"; {len(report.skipped)} skipped as masks or outputs"
                                                          if report.skipped else "") + ")")
    names = [f.stem.casefold() for f in files]       # case-insensitive disks (macOS, Windows) mix up a.png, A.png
    duplicates = sorted({f.stem for f, n in zip(files, names) if names.count(n) > 1})
    if duplicates:
        raise UlvmError(f"several inputs share the name {duplicates[0]!r} (letter case aside): their masks would "
                        "overwrite each other")
    experts = expert_masks(files, truth) if truth is not None else {}
    writable_folder(out.folder)                      # created, and checked writable, before the work
    device = _device_for(weights, device)
    model = load_weights(weights, device, backend, trust_package)
    size = getattr(getattr(model, "config", None), "input_size", 256)
    report.device, report.package = str(device), getattr(model, "metadata", None)
    pixels = [header[0] * header[1] if (header := photo_size(path)) else 0 for path in files]
    with progress_bar(total=len(files), disable=not progress, unit="img", desc="predict") as bar:
        for part in pixel_batches(pixels, batch_size):
            readable = [(path, rgb) for path in files[part] if (rgb := _read_input(path, out, overlay_images, report))
                        is not None]
            if readable:
                probs = probabilities(model, [rgb for _, rgb in readable], size, device)
                for (path, rgb), prob in zip(readable, probs):
                    predicted = prob >= threshold
                    mask = png_bytes(predicted.astype(np.uint8) * 255)
                    report.written.append(out.write(f"{path.stem}_mask.png", mask))
                    if overlay_images:
                        shown = png_bytes(overlay(rgb, predicted))
                        report.written.append(out.write(f"{path.stem}_overlay.png", shown))
                    if truth is not None:
                        _score(report, path, predicted, experts.get(path), truth)
                out.save()
            bar.update(part.stop - part.start)
    report.seconds = time.perf_counter() - started
    return report


def _read_input(path: Path, out: OutputFolder, overlay_images: bool, report: PredictReport) -> np.ndarray | None:
    """An input's pixels, or None with why not in `report.failed` (unreadable; a file of the user's in the way)."""
    for name in [f"{path.stem}_mask.png"] + ([f"{path.stem}_overlay.png"] if overlay_images else []):
        if not out.replaceable(name):
            report.failed[str(path)] = (f"{out.folder / name} exists and ulvm predict did not write it (or it was "
                                        "changed since): not replaced; move it away or choose another --out")
            return None
    try:
        rgb, notes = read_photo(path)
    except (DataError, OSError) as error:
        report.failed[str(path)] = str(error)
        return None
    if notes:
        report.warnings[str(path)] = "; ".join(notes)
    return rgb


def _score(report: PredictReport, image: Path, predicted: np.ndarray, expert: Path | None, folder) -> None:
    if expert is None:
        report.unscored[str(image)] = f"no expert mask for it in {folder}"
        return
    try:                            # checked as `ulvm prepare` checks a mask: its image's size, values 0/255
        mask = read_mask(expert, (predicted.shape[1], predicted.shape[0]))[0] > 127
    except (DataError, OSError) as error:
        report.unscored[str(image)] = str(error)
        return
    as_batch = [torch.from_numpy(m[None, None].astype(np.float32)) for m in (predicted, mask)]
    report.counts[str(image)] = confusion_counts(*as_batch)[0].tolist()
