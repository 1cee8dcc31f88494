"""Figures and tables shared by several notebooks of the book (presentation only, no new numbers).

Every figure a notebook shows is also written to `figures/generated/` by `save_figure`, so the batch run
(`ulvm reproduce`) leaves the book's figures as PNG files beside the executed notebooks. Recorded
results of real runs (e.g. `book/results/ph2_cv/test_ph2/*.json`, committed by whoever ran them on a GPU) are read
by `load_recorded_runs`, which the ablation and paper-tables chapters use.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt

from .io import atomic_write_bytes

STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "font.size": 10,
}


def use_book_style() -> None:
    """One look for every figure of the book."""
    plt.rcParams.update(STYLE)


def save_figure(fig, name: str, folder: str | os.PathLike) -> Path:
    """Write `fig` as `folder/name.png` (atomically) and return the path; the notebook still shows it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return atomic_write_bytes(Path(folder) / f"{name}.png", buffer.getvalue())


# ---- numbers reported by the paper: quoted, never computed (the book labels them "paper") ------------
# PVM-layer settings (README table and the paper's ablation on ISIC2017): parameters in millions as
# printed there, and the ISIC2017 DSC of each single run.
PAPER_PVM_SETTINGS = {
    1: {"params (M)": 0.136, "DSC ISIC2017": 0.9069},
    2: {"params (M)": 0.070, "DSC ISIC2017": 0.9073},
    4: {"params (M)": 0.049, "DSC ISIC2017": 0.9091},
}
# UltraLight VM-UNet as published: 0.049M parameters, 0.060 GFLOPs (thop), a 229.1 KB weight file.
PAPER_COMPLEXITY = {"params (M)": 0.049, "GFLOPs": 0.060, "weight file (KB)": 229.1}
# The UltraLight VM-UNet row of the journal version's Table 1 (pooled-pixel metrics, one run each).
PAPER_RESULTS = {
    "ISIC2017": {"dsc": 0.9091, "iou": 0.8334, "acc": 0.9646, "se": 0.9053, "sp": 0.9790},
    "ISIC2018": {"dsc": 0.8940, "iou": 0.8056, "acc": 0.9558, "se": 0.8680, "sp": 0.9781},
    "PH2": {"dsc": 0.9265, "iou": 0.8631, "acc": 0.9521, "se": 0.9345, "sp": 0.9606},
}
METRIC_NAMES = {"dsc": "DSC", "iou": "IoU", "acc": "ACC", "se": "SE", "sp": "SP", "precision": "precision"}


# ---- results of runs: one row per run, whatever produced it ------------------------------------------


def configuration_name(config: dict) -> str:
    """How the book names a model configuration: "×4", "×1", "×4 no bridge"."""
    name = f"×{config.get('parallel', 4)}"
    return name if config.get("bridge", True) else f"{name} no bridge"


def runs_table(results: list[dict]) -> "pd.DataFrame":
    """Results dicts (`ulvm.evaluate.evaluate` format) -> one row per run: configuration, seed, fold,
    the pooled metrics, the per-image DSC list, device and wall time."""
    import pandas as pd

    rows = []
    for result in results:
        config, machine = result.get("config", {}), result.get("machine", {})
        rows.append({
            "configuration": configuration_name(config),
            "parallel": config.get("parallel"), "bridge": config.get("bridge", True),
            "seed": config.get("seed"), "fold": result.get("fold"),
            **{METRIC_NAMES[k]: v for k, v in result.get("pooled", {}).items() if k in METRIC_NAMES},
            "per-image DSC": result.get("per_image", {}).get("dsc", []),
            "device": machine.get("gpu") or machine.get("device"),
            "train time (s)": result.get("train_time_s"),
            "source": result.get("source", ""),
        })
    return pd.DataFrame(rows)


def read_json_folder(folder: str | os.PathLike) -> dict[str, dict]:
    """Every `*.json` under `folder` (recursively), parsed, keyed by its path relative to `folder`; empty
    when the folder is missing. Used for results recorded on other machines (`book/results/...`)."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    return {str(path.relative_to(folder)): json.loads(path.read_text(encoding="utf-8"))
            for path in sorted(folder.rglob("*.json"))}


def load_recorded_runs(folder: str | os.PathLike) -> "pd.DataFrame":
    """Every `*.json` result under `folder` (e.g. `book/results/ph2_cv/test_ph2/`) as `runs_table` rows; an empty
    table when the folder is missing or empty (the notebook then says "not recorded yet")."""
    return runs_table([{"source": name, **result} for name, result in read_json_folder(folder).items()])


def summary_table(runs: "pd.DataFrame", metrics=("DSC", "IoU", "ACC", "SE", "SP")) -> "pd.DataFrame":
    """Mean ± std of each pooled metric per configuration (over seeds and folds), with the run count.
    Rows in the paper's order: ×1, ×2, ×4, then variants without the bridge."""
    grouped = runs.groupby("configuration", sort=False)
    table = grouped[list(metrics)].agg(lambda v: f"{v.mean():.4f} ± {v.std(ddof=1):.4f}" if len(v) > 1
                                       else f"{v.mean():.4f}")
    table.insert(0, "runs", grouped.size())
    order = runs.drop_duplicates("configuration").sort_values(["bridge", "parallel"], ascending=[False, True])
    return table.loc[list(order["configuration"])]


def paired_comparison(runs: "pd.DataFrame", first: str, second: str) -> dict:
    """Paired comparison of two configurations over the images they were both tested on (same seed and
    fold): mean per-image DSC difference and the Wilcoxon signed-rank test (scipy).

    Where both configurations ran several seeds, each image's DSC is first averaged over their shared
    seeds, so every test image counts once (the test assumes independent pairs)."""
    import numpy as np
    from scipy.stats import wilcoxon

    keyed = {(name, seed, fold): np.asarray(dsc) for name, seed, fold, dsc in
             runs[["configuration", "seed", "fold", "per-image DSC"]].itertuples(index=False)}
    by_fold: dict = {}                       # fold -> ([first's per-image DSC per seed], [second's ...])
    for (name, seed, fold), dsc in keyed.items():
        if name == first and (second, seed, fold) in keyed:
            pair = by_fold.setdefault(fold, ([], []))
            pair[0].append(dsc)
            pair[1].append(keyed[(second, seed, fold)])
    if not by_fold:
        return {"pairs": 0}
    a = np.concatenate([np.mean(seeds, axis=0) for seeds, _ in by_fold.values()])
    b = np.concatenate([np.mean(seeds, axis=0) for _, seeds in by_fold.values()])
    difference = a - b
    p_value = wilcoxon(a, b).pvalue if np.any(difference != 0) else 1.0
    return {"pairs": len(a), f"mean DSC {first}": a.mean(), f"mean DSC {second}": b.mean(),
            "mean difference": difference.mean(), "Wilcoxon p": p_value}


# ---- figures ----------------------------------------------------------------------------------------


def show_overlays(images, masks, probs=None, titles=None, threshold: float = 0.5, columns: int = 4):
    """A grid of images with the ground-truth outline (green) and, if given, the predicted one (red).

    images (n, H, W, 3) uint8; masks (n, H, W) in 0..255 or 0..1 (soft masks are cut at `threshold`);
    probs (n, H, W) predicted probabilities. Returns the figure.
    """
    import numpy as np

    n = len(images)
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.6 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(images[i])
        mask = np.asarray(masks[i], dtype=np.float32)
        mask = mask / 255.0 if mask.max() > 1 else mask
        ax.contour(mask, levels=[threshold], colors=["#2ca02c"], linewidths=1.5)
        if probs is not None:
            ax.contour(np.asarray(probs[i], dtype=np.float32), levels=[threshold], colors=["#d62728"],
                       linewidths=1.5)
        if titles is not None:
            ax.set_title(titles[i], fontsize=9)
    fig.tight_layout()
    return fig


def plot_history(history) -> "plt.Figure":
    """Training curves from a run's per-epoch history (`fit(...).history` or log.csv rows): train and
    validation loss, validation DSC, and the learning rate."""
    import pandas as pd

    frame = pd.DataFrame(history)
    fig, axes = plt.subplots(1, 3, figsize=(11, 2.8))
    axes[0].plot(frame["epoch"], frame["train_loss"], "o-", label="train")
    axes[0].plot(frame["epoch"], frame["val_loss"], "s-", label="validation")
    best = frame.loc[frame["val_loss"].idxmin()]
    axes[0].plot(best["epoch"], best["val_loss"], "k*", ms=12, label=f"kept (epoch {int(best['epoch'])})")
    axes[0].set_ylabel("BCE + Dice loss")
    axes[0].legend()
    axes[1].plot(frame["epoch"], frame["val_dsc"], "o-")
    axes[1].set_ylabel("validation DSC")
    axes[2].plot(frame["epoch"], frame["lr"], "o-")
    axes[2].set_ylabel("learning rate")
    for ax in axes:
        ax.set_xlabel("epoch")
    fig.tight_layout()
    return fig


def show_image_files(paths, titles=None, columns: int = 3, size: float = 3.0):
    """A row/grid of PNG files (e.g. the prediction overlays `ulvm test` writes) with titles."""
    from PIL import Image

    paths = list(paths)
    rows = -(-len(paths) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(size * columns, size * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(paths):
            with Image.open(paths[i]) as image:
                ax.imshow(image.convert("RGB"))
            if titles is not None:
                ax.set_title(titles[i], fontsize=9)
    fig.tight_layout()
    return fig
