"""Your own images in, lesion masks out: `ulvm.predict` and `ulvm predict`.

    masks = ulvm.predict(["a.jpg", pil_image, array], weights="isic2017")      # (H, W) uint8 0/255 each
    ulvm predict photos/ --weights isic2017 --out masks/ --overlay            # the same from the shell

Each image is read as `ulvm prepare` reads it (any size; RGB, grey, RGBA, 16-bit: `ulvm.data.checks`),
resized to the model's input (bilinear, as the paper's preparation), normalised the paper's way
(per-image min-max to 0..255: the paper's per-split z-score changes nothing after it), segmented, and the
probability map is resized back to the image's ORIGINAL size (bilinear) before thresholding, so the mask
lies on the photo. Weights: a shipped name (`ulvm.deploy.pretrained`), a run folder or its `best.pt`, a weights
file, an official UltraLight VM-UNet `.pth` (a plain state dict of the ×4 model), or a `.pt2` package of
`ulvm export --format pt2` (the fastest on a CPU; CPU only).
"""
from __future__ import annotations

import os
import time
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
from ..io import atomic_write_bytes
from ..metrics import confusion_counts, per_image_metrics, pooled_metrics
from ..progress import progress_bar
from ..registry import build_model
from ..runtime import resolve_device
from .pretrained import available, load_pretrained


def load_weights(weights: str | os.PathLike | torch.nn.Module = "isic2017", device: str = "cpu",
                 backend: str = "auto") -> torch.nn.Module:
    """A model in eval mode from a shipped name, a run folder, a checkpoint / weights file, an official .pth,
    or a .pt2 package (`ulvm.deploy.export.load_pt2`)."""
    if isinstance(weights, torch.nn.Module):
        return weights.to(device).eval()
    if str(weights) in available():
        return load_pretrained(str(weights), device, backend)
    path = Path(weights)
    if path.suffix == ".pt2":         # compiled ahead of time by `ulvm export --format pt2`: CPU only
        from .export import load_pt2

        if backend != "auto":
            raise UlvmError(f"{path}: the scan is compiled into the package ({backend!r} cannot be chosen)")
        return load_pt2(path).to(device)
    if path.is_dir():
        path = path / "best.pt"
    if not path.is_file():
        raise UlvmError(f"{weights}: no such weights file or run folder, and not a shipped model "
                        f"(shipped: {', '.join(available())})")
    checkpoint = read_checkpoint(path)
    if isinstance(checkpoint, dict) and "config" in checkpoint:
        model, _ = model_from_checkpoint(checkpoint, source=str(path), backend=backend)
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
        return read_image(image, upright=True)[0]
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


def predict(images, weights="isic2017", *, threshold: float = 0.5, device: str = "auto", backend: str = "auto",
            batch_size: int = 8, size: int | None = None) -> list[np.ndarray]:
    """Lesion masks `(H, W)` uint8 (0 or 255) at each input's original size.

    `images`: one image or a list of paths, PIL images and arrays. `weights`: see `load_weights` (or a
    model). `size`: the model's input size (default: the weights' training size, 256 for the paper).
    """
    single = isinstance(images, (str, os.PathLike, Image.Image, np.ndarray))
    items = [images] if single else list(images)
    device = _device_for(weights, device)
    model = load_weights(weights, device, backend)
    size = size or getattr(getattr(model, "config", None), "input_size", 256)
    rgb = [as_rgb(item, str(item) if isinstance(item, (str, os.PathLike)) else f"image {i}")
           for i, item in enumerate(items)]
    masks = []
    for part in batches(len(rgb), batch_size):
        masks += [(p >= threshold).astype(np.uint8) * 255 for p in probabilities(model, rgb[part], size, device)]
    return masks[0] if single else masks


def image_files(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """The image files named by `inputs`: files as given, folders searched (not recursively) by suffix."""
    found = []
    for item in map(Path, inputs):
        if item.is_dir():
            found += sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
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
    failed: dict[str, str] = field(default_factory=dict)     # input -> why it was skipped
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


def predict_files(inputs, out_dir: str | os.PathLike, weights="isic2017", *, overlay_images: bool = False,
                  threshold: float = 0.5, device: str = "auto", backend: str = "auto", batch_size: int = 8,
                  progress: bool = True, truth: str | os.PathLike | None = None) -> PredictReport:
    """Write `OUT/<stem>_mask.png` (0/255, original size) and with `overlay_images` `OUT/<stem>_overlay.png`
    for every image in `inputs`. Unreadable inputs are reported in the result and skipped; each file is
    written atomically, so nothing is half-written. With `truth`, a folder of expert masks (`expert_masks`),
    each mask is also scored against its expert mask (`PredictReport.agreement`)."""
    started = time.perf_counter()
    files = image_files(inputs)
    if not files:
        raise UlvmError(f"no images found in {', '.join(map(str, inputs))} (suffixes: {', '.join(IMAGE_SUFFIXES)})")
    stems = [f.stem for f in files]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise UlvmError(f"several inputs share the name {duplicates[0]!r}: their masks would overwrite each other")
    experts = expert_masks(files, truth) if truth is not None else {}
    device = _device_for(weights, device)
    model = load_weights(weights, device, backend)
    size = getattr(getattr(model, "config", None), "input_size", 256)
    out_dir, report = Path(out_dir), PredictReport(device=str(device), package=getattr(model, "metadata", None))
    with progress_bar(total=len(files), disable=not progress, unit="img", desc="predict") as bar:
        for part in batches(len(files), batch_size):
            readable = []
            for path in files[part]:
                try:
                    readable.append((path, as_rgb(path)))
                except (DataError, OSError) as error:
                    report.failed[str(path)] = str(error)
            for (path, rgb), prob in zip(readable, probabilities(model, [r for _, r in readable], size, device)):
                predicted = prob >= threshold
                report.written.append(atomic_write_bytes(out_dir / f"{path.stem}_mask.png",
                                                         png_bytes(predicted.astype(np.uint8) * 255)))
                if overlay_images:
                    report.written.append(atomic_write_bytes(out_dir / f"{path.stem}_overlay.png",
                                                             png_bytes(overlay(rgb, predicted))))
                if truth is not None:
                    _score(report, path, predicted, experts.get(path), truth)
            bar.update(part.stop - part.start)
    report.seconds = time.perf_counter() - started
    return report


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
