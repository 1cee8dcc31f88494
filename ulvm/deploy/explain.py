"""What the PVM layers look at, for your own image and over a test split: `ulvm explain`.

    maps = explain_image("photo.jpg", weights="isic2017")       # Δ, gate and Seg-Grad-CAM per PVM stage
    explain_files("photo.jpg", "maps/")                         # the same as PNGs: what `ulvm explain` writes
    delta_border_contrast(model, "data/prepared/isic2017")      # is Δ larger on the expert border? (with a CI)

The maps come from the hooks of `ulvm.model.explain`. An image is read and normalised as `ulvm predict` reads
it (`ulvm.deploy.prediction`); the maps are resized to the image's own size, so they lie on the photo.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data.dataset import paper_normalize, split_statistics
from ..data.prepare import png_bytes
from ..data.tensors import batches, load_data
from ..errors import UlvmError
from ..io import atomic_write_bytes, atomic_write_json
from ..model.explain import PVM_STAGES, explain, on_image_grid
from .prediction import as_rgb, load_weights

MAP_KINDS = ("delta", "gate", "gradcam")
MANIFEST_FORMAT = "ulvm-explain/1"


def explainable(model: torch.nn.Module, source: str) -> torch.nn.Module:
    """`model` if it has the PVM stages the hooks read, else a clear error naming where it came from."""
    if not all(hasattr(model, stage) for stage in PVM_STAGES) or not hasattr(model, "final"):
        raise UlvmError(f"{source}: not an UltraLight VM-UNet in eager PyTorch (a compiled .pt2 package or "
                        "another model has no PVM layers to explain)")
    return model


def explain_image(image, weights="isic2017", device: str = "cpu", backend: str = "auto") -> dict:
    """Δ, gate and Seg-Grad-CAM maps of every PVM stage for one image (a path, PIL image or array).

    Returns {"image": (H, W, 3) uint8, "probability": (H, W), "stages": {stage: {"delta": (p, H, W),
    "gate": (p, H, W), "gradcam": (H, W)}}}, float32 NumPy arrays at the image's own size."""
    name = str(image) if isinstance(image, (str, os.PathLike)) else "image"
    model = explainable(load_weights(weights, device, backend), str(weights))
    rgb = as_rgb(image, name)
    size = getattr(getattr(model, "config", None), "input_size", 256)
    small = np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR))[None]       # (1, S, S, 3)
    batch = torch.from_numpy(paper_normalize(small, 0.0, 1.0)).permute(0, 3, 1, 2).to(device)   # as `predict`
    result = explain(model, batch)
    shape = rgb.shape[:2]
    probability = F.interpolate(result["probability"].float().cpu(), size=shape, mode="bilinear",
                                align_corners=False)[0, 0]
    stages = {stage: {kind: on_image_grid(maps[kind][0].cpu(), shape).numpy() for kind in MAP_KINDS}
              for stage, maps in result["stages"].items()}
    return {"image": rgb, "probability": probability.numpy(), "stages": stages}


def _grey(values: np.ndarray, low: float, high: float) -> np.ndarray:
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return np.clip(scaled * 255.0 + 0.5, 0, 255).astype(np.uint8)


def map_images(explanation: dict) -> dict[str, tuple[np.ndarray, float, float]]:
    """File suffix -> (8-bit grey image, value at black, value at white): per stage one Δ and one gate image
    with the p chunks side by side (one shared scale, so chunks compare), and one Grad-CAM image."""
    images = {}
    for stage, maps in explanation["stages"].items():
        for kind in MAP_KINDS:
            values = maps[kind]
            tiled = np.concatenate(list(values), axis=1) if values.ndim == 3 else values   # (H, p·W) or (H, W)
            low, high = float(tiled.min()), float(tiled.max())
            images[f"{stage}_{kind}"] = (_grey(tiled, low, high), low, high)
    return images


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _ours(manifest_path: Path) -> dict[str, str]:
    """The files (name -> SHA-256) an earlier `ulvm explain` wrote beside this manifest; {} if it is not ours."""
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("format") == MANIFEST_FORMAT and isinstance(manifest.get("files"), dict):
            return {str(name): str(digest) for name, digest in manifest["files"].items()}
    except (OSError, ValueError, AttributeError):
        pass
    return {}


def explain_files(image: str | os.PathLike, out_dir: str | os.PathLike, weights="isic2017", device: str = "cpu",
                  backend: str = "auto") -> list[Path]:
    """Write OUT/<stem>_<stage>_{delta,gate,gradcam}.png (8-bit grey, at the image's size) and
    OUT/<stem>_explain.json (each map's value range, so the grey levels read back as values, and each file's
    SHA-256). A file already there is replaced only if an earlier `ulvm explain` wrote it unchanged (its
    manifest says so); anything else is refused, naming the file, before anything is written."""
    image, out_dir = Path(image), Path(out_dir)
    if not image.is_file():
        raise UlvmError(f"{image}: no such image file")
    if out_dir.exists() and not out_dir.is_dir():
        raise UlvmError(f"{out_dir}: exists and is not a folder")
    manifest_path = out_dir / f"{image.stem}_explain.json"
    ours = _ours(manifest_path)
    if manifest_path.exists() and not ours:
        raise UlvmError(f"{manifest_path}: exists and was not written by ulvm explain; not overwritten")
    explanation = explain_image(image, weights, device, backend)
    images = map_images(explanation)
    targets = {suffix: out_dir / f"{image.stem}_{suffix}.png" for suffix in images}
    for path in targets.values():
        if path.exists() and ours.get(path.name) != _sha256(path):
            raise UlvmError(f"{path}: exists and was not written by ulvm explain (or was changed since); "
                            "not overwritten")
    written, files = [], {}
    for suffix, (grey, _, _) in images.items():
        data = png_bytes(grey)
        written.append(atomic_write_bytes(targets[suffix], data))
        files[targets[suffix].name] = hashlib.sha256(data).hexdigest()
    ranges = {f"{image.stem}_{suffix}.png": {"black": low, "white": high} for suffix, (_, low, high) in images.items()}
    atomic_write_json(manifest_path, {
        "format": MANIFEST_FORMAT, "image": str(image), "weights": str(weights), "stages": list(PVM_STAGES),
        "lesion_fraction": float((explanation["probability"] >= 0.5).mean()),
        "maps": "delta: the scan's step Δ averaged over channels, PVM chunks side by side; gate: SiLU(z) "
                "likewise; gradcam: Seg-Grad-CAM of the lesion output",
        "ranges": ranges, "files": files})
    return [*written, manifest_path]


# --- over a test split --------------------------------------------------------------------------------

def test_images(data, ids=None, split: str = "test") -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """(ids, model inputs (N, 3, S, S) normalised with the split's statistics as evaluation does, expert masks
    (N, 1, S, S) in {0, 1}) of a prepared dataset's split, or of the images `ids` of it."""
    prepared = load_data(data)
    rows = prepared.indices(split)
    mean, std = split_statistics(prepared.images, rows)
    if ids is not None:
        row_of = {prepared.ids[i]: i for i in rows}
        missing = [image_id for image_id in ids if image_id not in row_of]
        if missing:
            raise UlvmError(f"{data}: no image {missing[0]!r} in its {split} split")
        rows = [row_of[image_id] for image_id in ids]
    images = torch.from_numpy(paper_normalize(prepared.images[rows], mean, std)).permute(0, 3, 1, 2).contiguous()
    masks = torch.from_numpy(prepared.masks[rows] >= 128).float()[:, None]
    return [prepared.ids[i] for i in rows], images, masks


def explain_split_images(model: torch.nn.Module, data, ids, split: str = "test") -> list[dict]:
    """The maps of some images of a prepared split (e.g. the best, median and worst of a record), each as
    {"id", "image": (S, S, 3) uint8, "truth": (S, S) uint8, "stages": maps at S×S as in `explain_image`}."""
    explainable(model, type(model).__name__)
    prepared = load_data(data)
    ids, images, masks = test_images(data, ids, split)
    row_of = {image_id: i for i, image_id in enumerate(prepared.ids)}
    result = explain(model, images.to(next(model.parameters()).device))
    size = tuple(images.shape[-2:])
    return [{"id": image_id, "image": prepared.images[row_of[image_id]], "truth": prepared.masks[row_of[image_id]],
             "stages": {stage: {kind: on_image_grid(maps[kind][i].cpu(), size).numpy() for kind in MAP_KINDS}
                        for stage, maps in result["stages"].items()}}
            for i, image_id in enumerate(ids)]


def border_band(masks: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """The tokens of an h×w stage grid that the expert border runs through: the cell of each token holds
    lesion and non-lesion pixels both. masks (N, 1, H, W) in {0, 1} -> (N, h, w) bool."""
    fraction = F.adaptive_avg_pool2d(masks.float(), grid)[:, 0]                  # lesion share of each cell
    return (fraction > 0) & (fraction < 1)


def delta_border_contrast(model: torch.nn.Module, data, split: str = "test", batch_size: int = 8,
                          n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict[str, dict]:
    """Per PVM stage: is the scan's Δ larger on the expert border than elsewhere, over a whole split?

    For each image, the ratio of the mean Δ (over channels and chunks) on the border tokens (`border_band`) to
    the mean Δ on all other tokens; images without a border at a stage's grid are left out. Returned per
    stage: the mean ratio over images, its percentile bootstrap CI (images resampled), the number of images,
    and the spread of Δ over one image's tokens (std / mean, averaged over images) to size the contrast by."""
    explainable(model, type(model).__name__)
    _, images, masks = test_images(data, split=split)
    ratios: dict[str, list[float]] = {stage: [] for stage in PVM_STAGES}
    spreads: dict[str, list[float]] = {stage: [] for stage in PVM_STAGES}
    device = next(model.parameters()).device
    for part in batches(len(images), batch_size):
        result = explain(model, images[part].to(device))
        for stage, maps in result["stages"].items():
            delta = maps["delta"].mean(dim=1).cpu()                              # (n, h, w)
            band = border_band(masks[part], tuple(delta.shape[-2:]))
            for values, on_border in zip(delta, band):
                if on_border.any() and (~on_border).any():
                    ratios[stage].append(float(values[on_border].mean() / values[~on_border].mean()))
                spreads[stage].append(float(values.std() / values.mean()))
    rng = np.random.default_rng(seed)
    summary = {}
    for stage, values in ratios.items():
        values = np.asarray(values)
        if not len(values):
            raise UlvmError(f"{data}: no {split} image has an expert border at {stage}'s grid")
        means = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)
        tail = (1 - level) / 2 * 100
        summary[stage] = {"ratio": float(values.mean()), "ci": tuple(np.percentile(means, [tail, 100 - tail])),
                          "images": int(len(values)), "delta_spread": float(np.mean(spreads[stage]))}
    return summary
