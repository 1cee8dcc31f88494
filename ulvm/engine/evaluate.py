"""Testing a trained model the paper's way, plus the per-image view and a confidence interval.

`evaluate(run_dir_or_model, data)` predicts every image of a split (by default the test split, with the
model of `best.pt` — lowest validation loss, the paper's selection) and computes, with `ulvm.metrics`:

* the paper's numbers: ONE confusion matrix pooled over every pixel of the split, prediction >= 0.5 and
  soft ground truth >= 0.5 -> DSC, IoU, ACC, SE, SP, precision (UltraLight VM-UNet §4.1, Table 1);
* per-image DSC and IoU (their distribution shows what pooling hides: small lesions that are missed);
* a seeded bootstrap 95% confidence interval of the pooled DSC, resampling images.

External validation (the paper trains on ISIC and tests on PH2) is the same call with another prepared
dataset: the test split of that dataset is normalised with its own statistics, as the paper does.
`write_results` stores the dict as JSON next to the run (atomically) with the exact config, the data
manifest hash, the code version and the machine. Metrics are computed at the model's input size
(`Config.input_size`; the prepared size for the paper profile). The book's evaluation chapter reads these
files.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import Config, RunSettings
from ..data.prepare import png_bytes
from ..data.tensors import load_data, pixel_hashes, split_tensors
from ..errors import RunError
from ..io import atomic_directory, atomic_write_bytes, atomic_write_json
from ..metrics import COUNT_NAMES, GT_THRESHOLD, bootstrap_ci, confusion_counts, per_image_metrics, pooled_metrics
from ..runtime import provenance, resolve_device
from .checkpoint import model_from_checkpoint, read_run_checkpoint
from .inference import overlay, predict_batches
from .runs import RunFolder

CI_LEVEL = 0.95


def evaluate(run_dir_or_model, data, *, split: str = "test", fold: int | None = None,
             settings: RunSettings | None = None, bootstrap: int = 1000, config: Config | None = None,
             save_predictions: str | Path | bool | None = None) -> dict[str, Any]:
    """Metrics of a run folder's `best.pt` (or of a model with `config`) on one split of `data`.

    `fold`: the cross-validation fold of `data`; by default the run's own fold when `data` is the data the
    run was trained on, else none. `bootstrap`: replicates for the DSC CI (0 = skip).
    `save_predictions`: a folder to write prediction masks and overlays into (PNG); `True` = the run
    folder's `predictions_<data>_<split>[_fold<k>]/`, named like the results file.
    """
    started = time.perf_counter()
    settings = settings or RunSettings()
    device = resolve_device(settings.device)
    prepared = load_data(data)
    run_info: dict[str, Any] = {}
    if isinstance(run_dir_or_model, torch.nn.Module):
        model, config = run_dir_or_model.to(device).eval(), config or Config()
    else:
        run_dir = Path(run_dir_or_model)
        checkpoint = read_run_checkpoint(run_dir / "best.pt")
        model, config = model_from_checkpoint(checkpoint, source=str(run_dir / "best.pt"), backend=settings.backend)
        model = model.to(device)
        same_data = checkpoint["data"]["content_hash"] == prepared.content_hash
        run_info = {"run_dir": str(run_dir), "checkpoint": "best.pt", "best_epoch": checkpoint["epoch"],
                    "trained_on": checkpoint["data"], "external": not same_data}
        if fold is None and same_data:
            fold = config.fold
    eval_config = config.replace(fold=fold)
    if save_predictions is True:
        if not run_info:
            raise RunError("evaluate: save_predictions=True needs a run folder; give a folder to write into")
        save_predictions = RunFolder(run_dir).predictions_path(prepared.root, split, fold)
    elif save_predictions is False:
        save_predictions = None

    images, masks, ids = split_tensors(prepared, split, eval_config, device)
    if run_info:
        run_info["seen_in_training"] = _seen_in_training(checkpoint["data"], prepared, split, ids, run_dir)
    counts, kept = [], []
    for part, probs in predict_batches(model, images, settings.eval_batch_size):
        counts.append(confusion_counts(probs, masks[part], config.threshold))       # (batch, 4) on device
        if save_predictions is not None:
            kept.append(probs.cpu())
    counts = torch.cat(counts).cpu()                                                 # (n, 4)
    if save_predictions is not None:
        shown, _, _ = split_tensors(prepared, split, eval_config, torch.device("cpu"), normalize=False)
        write_predictions(save_predictions, ids, shown, masks.cpu(), torch.cat(kept), config.threshold)

    per_image = per_image_metrics(counts)
    results: dict[str, Any] = {
        "split": split, "fold": fold, "n_images": len(ids), "threshold": config.threshold,
        "image_size": config.input_size,
        "pooled": pooled_metrics(counts),
        "confusion": dict(zip(COUNT_NAMES, counts.sum(dim=0).tolist())),
        "per_image": {"ids": list(ids), "dsc": per_image["dsc"].tolist(), "iou": per_image["iou"].tolist()},
        "per_image_summary": {f"{name}_{stat}": float(fn(values)) for name, values in per_image.items()
                              for stat, fn in (("mean", np.mean), ("median", np.median), ("std", np.std))},
        "data": {"root": str(prepared.root), "manifest_hash": prepared.manifest_hash,
                 "content_hash": prepared.content_hash, "content_scheme": prepared.content_scheme,
                 "split_sha256": prepared.split_sha256(split, fold)},
        "config": config.to_dict(),
        **provenance(device),
        **run_info,
    }
    if bootstrap:
        low, high = bootstrap_ci(counts, "dsc", n_boot=bootstrap, level=CI_LEVEL, seed=config.seed)
        results["dsc_ci95"] = [low, high]
        results["bootstrap"] = {"replicates": bootstrap, "level": CI_LEVEL, "seed": config.seed,
                                "unit": "image", "statistic": "pooled dsc"}
    results["eval_time_s"] = time.perf_counter() - started
    return results


def _seen_in_training(trained_on: dict[str, Any], prepared, split: str, ids: list[str], run_dir: Path) -> int | None:
    """How many images of the split the run trained or was selected on; a test split with any is refused.

    Checkpoints record the training and validation images (`seen_images`: id -> pixel hash), so an image is
    recognised by its pixels, whatever it is called. Older ones record only the data's hashes: then only
    the case that hides a leak best is caught, the run's own data folder prepared again with other splits
    (None: unknown)."""
    if "seen_images" not in trained_on:
        same_folder = Path(trained_on["root"]).resolve() == Path(prepared.root).resolve()
        if split == "test" and same_folder and trained_on["content_hash"] != prepared.content_hash:
            raise RunError(f"{prepared.root} was prepared again since {run_dir} trained on it (content "
                           f"{trained_on['content_hash'][:12]}, now {prepared.content_hash[:12]}), and this run's "
                           "checkpoint does not record which images it trained on: its test split may hold training "
                           "images. Test on the data as it was prepared, or train the run again")
        return None
    seen_pixels = set(trained_on["seen_images"].values())
    seen = sorted(key for key, digest in pixel_hashes(prepared, ids).items() if digest in seen_pixels)
    if split == "test" and seen:
        raise RunError(f"{prepared.root}: {len(seen)} of the {len(ids)} test images were training or validation "
                       f"images of {run_dir} (e.g. {seen[0]}): its DSC would not be a test. Test on data the run "
                       "did not train on (the dataset as it was prepared for the run, or another one)")
    return len(seen)


def results_path(run_dir: str | Path, results: dict[str, Any]) -> Path:
    """Where `results` go in a run folder (`RunFolder.results_path`: one file per data set and split)."""
    return RunFolder(run_dir).results_path(results["data"]["root"], results["split"], results.get("fold"))


def write_results(results: dict[str, Any], run_dir: str | Path | None = None) -> Path:
    """Write `results` atomically next to the run (`results_path`); returns the file written.

    Refuses to replace the results of ANOTHER dataset whose folder has the same name (same file name,
    other content hash): that would silently lose them."""
    run_dir = run_dir if run_dir is not None else results.get("run_dir")
    if run_dir is None:
        raise RunError("write_results: no run folder given and the results do not come from a run")
    path = results_path(run_dir, results)
    if path.is_file():
        try:
            earlier = json.loads(path.read_text(encoding="utf-8"))["data"]
        except (ValueError, KeyError, TypeError):
            earlier = None
        if earlier is not None and earlier.get("content_hash") != results["data"]["content_hash"]:
            raise RunError(f"{path} holds the results of another dataset with the same folder name "
                           f"({earlier.get('root')}, content {str(earlier.get('content_hash'))[:12]}; now "
                           f"{results['data']['root']}, content {results['data']['content_hash'][:12]}); "
                           "rename one dataset folder, or move that file away, to keep both")
    return atomic_write_json(path, results)


def summary_line(results: dict[str, Any]) -> str:
    """One line for the terminal: the paper's five metrics, the CI and the per-image mean DSC."""
    p = results["pooled"]
    text = (f"{results['split']} ({results['n_images']} images): DSC {p['dsc']:.4f}  IoU {p['iou']:.4f}  "
            f"ACC {p['acc']:.4f}  SE {p['se']:.4f}  SP {p['sp']:.4f}")
    if "dsc_ci95" in results:
        text += f"  (DSC 95% CI {results['dsc_ci95'][0]:.4f}-{results['dsc_ci95'][1]:.4f})"
    return text + f"  per-image DSC mean {results['per_image_summary']['dsc_mean']:.4f}"


def write_predictions(folder: str | Path, ids: list[str], images: torch.Tensor, masks: torch.Tensor,
                      probs: torch.Tensor, threshold: float) -> Path:
    """PNG per image: `<id>_pred.png` (mask 0/255 at the threshold) and `<id>_overlay.png`.

    `images` `(n, 3, S, S)` in 0..255 (the prepared pixels at the input size), `masks` `(n, 1, S, S)` the
    soft ground truth as scored, `probs` `(n, 1, S, S)`. The overlay outlines the ground truth the metrics
    counted (mask >= 0.5) in green and the prediction in red.
    """
    pictures = images.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()   # (n, S, S, 3)
    truths = masks[:, 0].numpy() >= GT_THRESHOLD                                         # (n, S, S) bool
    predictions = probs[:, 0].numpy() >= threshold                                       # (n, S, S) bool
    with atomic_directory(folder, overwrite=True) as tmp:
        for image_id, picture, truth, predicted in zip(ids, pictures, truths, predictions):
            for suffix, array in (("pred", predicted.astype(np.uint8) * 255),
                                  ("overlay", overlay(picture, predicted, truth))):
                atomic_write_bytes(tmp / f"{image_id}_{suffix}.png", png_bytes(array))
    return Path(folder)
