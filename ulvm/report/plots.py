"""Figures shared by several notebooks of the book: drawing only, no new numbers.

Every figure a notebook shows is also written to `figures/generated/` by `save_figure`, so the batch run
(`ulvm reproduce`) leaves the book's figures as PNG files beside the executed notebooks. The numbers they
draw come from `ulvm.report.results` (records, tables, statistics).
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt

from ..io import atomic_write_bytes
from .results import MODEL_LABELS, best_median_worst, configuration_of, paper_order, seed_means

if TYPE_CHECKING:
    import pandas as pd

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


def plot_history(history) -> plt.Figure:
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


# ---- the Results part ------------------------------------------------------------------------------


def seed_strip_plot(runs: pd.DataFrame, title: str, ax=None, metric: str = "DSC", paper: dict | None = None):
    """Pooled `metric` of every run, one column per configuration (paper order), each seed a dot and
    the mean a bar; `paper` (configuration -> value) adds the paper's single runs as black stars. A strip
    plot rather than a box plot: with three to five seeds a box would draw quartiles of almost nothing."""
    import numpy as np

    order = paper_order(runs)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3))
    for i, name in enumerate(order):
        values = runs.loc[runs["configuration"] == name, metric].to_numpy()
        ax.plot(np.full(len(values), i) + np.linspace(-0.1, 0.1, len(values)), values, "o", ms=5,
                alpha=0.8, color="#1f77b4", label="one seed (pooled over the test set)" if i == 0 else None)
        ax.plot([i - 0.2, i + 0.2], [values.mean()] * 2, "-", lw=2, color="#d62728",
                label="mean over seeds" if i == 0 else None)
    for i, name in enumerate(order):
        if paper and name in paper:
            ax.plot(i, paper[name], "k*", ms=10, label="paper (one run)" if name == next(iter(paper)) else None)
    ax.set_xticks(range(len(order)), order)
    ax.set_xlim(-0.6, len(order) - 0.4)
    ax.set_ylabel(f"pooled {metric} per run")
    ax.set_title(title)
    return ax.figure


# ---- real test images: best, median and worst of a run ---------------------------------------------


def best_median_worst_figure(model, data, record: dict, split: str = "test", size: float = 2.4):
    """A 3-column figure of the best, median and worst test images of `record` (per-image DSC of an
    `evaluate` result), each with the expert outline (green) and `model`'s prediction (red).

    `data`: the prepared dataset the record was tested on; images are normalised with the whole split's
    statistics, as evaluation does, so the DSC in each title is the recorded one and is checked against
    the model's prediction here."""
    import numpy as np
    import torch

    from ..data.dataset import paper_normalize, split_statistics
    from ..data.tensors import load_data
    from ..metrics import confusion_counts, pooled_metrics

    prepared = load_data(data)
    chosen = best_median_worst(record["per_image"]["ids"], record["per_image"]["dsc"])
    split_rows = prepared.indices(split)
    mean, std = split_statistics(prepared.images, split_rows)
    row_of = {prepared.ids[i]: i for i in split_rows}
    rows = [row_of[image_id] for image_id, _ in chosen.values()]
    images = torch.from_numpy(paper_normalize(prepared.images[rows], mean, std)).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        probs = model.eval()(images)[:, 0].float()
    masks = torch.from_numpy(prepared.masks[rows]).float().div(255.0)
    measured = [pooled_metrics(confusion_counts(p[None], m[None], 0.5))["dsc"] for p, m in zip(probs, masks)]
    titles = [f"{kind}: DSC {recorded:.3f}" for kind, (_, recorded) in chosen.items()]
    fig = show_overlays(prepared.images[rows], prepared.masks[rows], probs.numpy(), titles=titles, columns=3)
    fig.set_size_inches(size * 3, size + 0.3)
    return fig, {kind: {"id": image_id, "recorded DSC": recorded, "DSC here": float(value)}
                 for (kind, (image_id, recorded)), value in zip(chosen.items(), np.asarray(measured))}


# ---- the comparison with other lightweight models ---------------------------------------------------


def params_vs_dsc_figure(params: dict, recorded: dict[str, pd.DataFrame], ours: str = "ultralight",
                         reference: str = "×4", metric: str = "DSC", width: float = 5.2):
    """Parameters (log axis) against the pooled `metric`, one panel per dataset of `recorded`: one point per
    model (mean over its seeds, error bar one standard deviation), UltraLight VM-UNet (`ours`) a red star.
    Models are named in one legend under the panels ("name (seeds)"), not beside their points: EGE-UNet
    sits almost on the star. `params`: model name -> parameter count; models without runs in a dataset are
    left out of its panel. Returns the figure."""
    fig, axes = plt.subplots(1, len(recorded), figsize=(width * len(recorded), 3.6), squeeze=False)
    palette = iter(["#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#ff7f0e", "#17becf", "#7f7f7f"])
    colours = {model: "#d62728" if model == ours else next(palette) for model in params}
    legend = {}
    for ax, (dataset, runs) in zip(axes.flat, recorded.items()):
        stats = seed_means(runs, metric) if len(runs) else None
        for model, count in params.items():
            name = configuration_of(model, ours, reference)
            if stats is None or name not in stats.index:
                continue
            row = stats.loc[name]
            mine = model == ours
            handle = ax.errorbar(count, row["mean"], yerr=0 if row["count"] < 2 else row["std"], capsize=3,
                                 fmt="*" if mine else "o", ms=13 if mine else 7, color=colours[model],
                                 zorder=3 if mine else 2)
            legend.setdefault(f"{MODEL_LABELS.get(model, model)} ({int(row['count'])})", handle)
        ax.set_xscale("log")
        ax.set(xlabel="parameters (log scale)", ylabel=f"pooled {metric}, mean ± std over seeds", title=dataset)
        ax.margins(x=0.15, y=0.15)
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=min(len(legend), 5), fontsize=8,
               frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def plot_validation_curves(curves: dict[str, list], ax, highlight: str | None = None, colours=None):
    """Validation-DSC curves on `ax`: `curves` maps a label to a list of runs, each a per-epoch list; one
    colour per label (the `highlight` label black and on top), one legend entry per label."""
    palette = colours or plt.rcParams["axes.prop_cycle"].by_key()["color"]
    others = iter(palette)
    for label, runs in curves.items():
        mine = label == highlight
        colour = "black" if mine else next(others)
        for i, values in enumerate(runs):
            ax.plot(range(1, len(values) + 1), values, lw=1.0 if mine else 0.8, color=colour,
                    alpha=0.8 if mine else 0.7, zorder=3 if mine else 2, label=label if i == 0 else None)
    ax.set(xlabel="epoch", ylabel="validation DSC")
    return ax


# ---- how many runs a GPU holds (`ulvm throughput` records) -------------------------------------------


def throughput_figure(table: pd.DataFrame, goal: float | None = None) -> plt.Figure:
    """Aggregate training images/s against the number of runs at once (log x), one line per record and MPS
    mode; `goal` draws that multiple of each line's K = 1 throughput as a dotted line."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for (name, mode), rows in table.groupby(["record", "MPS"], sort=False):
        line, = ax.plot(rows["K"], rows["images / s"], "o-", label=f"{name}, MPS {mode}")
        single = rows.loc[rows["K"] == 1, "images / s"]
        if goal and not single.empty:
            ax.axhline(goal * single.iloc[0], color=line.get_color(), ls=":", lw=1)
    ax.set(xscale="log", xlabel="runs at once (K)", ylabel="training images / s, all runs")
    ks = sorted(table["K"].unique())
    # on a log axis neighbours such as 14 and 16 would print as one "1416": label a K only when it is at
    # least 25% above the last labelled one (the others keep an unlabelled tick)
    labelled = []
    for k in ks:
        if not labelled or k >= 1.25 * labelled[-1]:
            labelled.append(k)
    ax.set_xticks(ks, [str(k) if k in labelled else "" for k in ks])
    ax.legend(fontsize=8)
    return fig
