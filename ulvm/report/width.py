"""How small can it get: the width study's records, its summary, its rule and its figures (chapter 11).

The runs are `book/grids/width.yaml` (widths 1/8, 1/4, 1/2 and 2, PVM ×1 and ×4, seeds 42-44, the paper's
protocol on ISIC2017, each also tested on PH2), recorded in `book/results/width/test_<set>/`. Width 1 is the
same protocol and the same seeds as `book/grids/isic2017.yaml`'s p1/p4 runs, so it is read from
`book/results/isic2017/test_<set>/` (seeds 42-44 only, as every other width has).
"""
from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..paper import PAPER_PVM_SETTINGS
from .book import resolve
from .results import read_json_folder

SEEDS = (42, 43, 44)
WIDTHS = (0.125, 0.25, 0.5, 1.0, 2.0)      # book/grids/width.yaml's widths, and width 1 from the ISIC2017 grid

# Single published points, each labelled as its authors' (not ours). DSC on ISIC2017, one run each.
PUBLISHED_POINTS = [
    {"label": "paper ×4 (one run)", "params": PAPER_PVM_SETTINGS[4]["params (M)"] * 1e6,
     "dsc": PAPER_PVM_SETTINGS[4]["DSC ISIC2017"]},
    {"label": "paper ×1 (one run)", "params": PAPER_PVM_SETTINGS[1]["params (M)"] * 1e6,
     "dsc": PAPER_PVM_SETTINGS[1]["DSC ISIC2017"]},
    {"label": "public replication, half width (one run)", "params": 14.6e3, "dsc": 0.9010},
    {"label": "public replication, quarter width (one run)", "params": 5.6e3, "dsc": 0.8976},
]
# Claimed sizes with no ISIC2017 DSC we can place on the curve: drawn as marks on the parameter axis.
CLAIMED_SIZES = [
    {"label": "UltraLBM-UNet (arXiv 2512.21584, claimed)", "params": 34e3},
    {"label": "UltraLBM-UNet distilled (claimed)", "params": 11e3},
]


def width_runs(results: str | os.PathLike = "book/results") -> pd.DataFrame:
    """One row per recorded run and test set of the width study: test_set, width, parallel, seed, DSC, source.
    Only bridge-on UltraLight VM-UNet runs of the paper profile with seeds 42-44; empty when nothing is recorded."""
    root = resolve(results)
    rows = []
    for folder, from_isic_grid in ((root / "width", False), (root / "isic2017", True)):
        for name, record in read_json_folder(folder).items():
            config = record.get("config", {})
            width = float(config.get("width", 1.0))
            if (config.get("model", "ultralight") != "ultralight" or not config.get("bridge", True)
                    or config.get("profile_name") != "paper" or config.get("seed") not in SEEDS
                    or (from_isic_grid and width != 1.0)):
                continue
            rows.append({"test_set": name.split("/")[0].removeprefix("test_"), "width": width,
                         "parallel": config.get("parallel"), "seed": config["seed"],
                         "DSC": record["pooled"]["dsc"], "source": f"{folder.name}/{name}"})
    columns = ["test_set", "width", "parallel", "seed", "DSC", "source"]
    return pd.DataFrame(rows, columns=columns).sort_values(["test_set", "parallel", "width", "seed"],
                                                           ignore_index=True)


def width_summary(runs: pd.DataFrame, costs: pd.DataFrame) -> pd.DataFrame:
    """Per test set, PVM setting and width: params, runs, mean, std (ddof 1), min and max DSC over seeds.
    `costs`: `ulvm.complexity.width_table` rows (width, parallel, params, ...)."""
    grouped = runs.groupby(["test_set", "parallel", "width"])["DSC"]
    summary = grouped.agg(runs="count", mean="mean", std="std", low="min", high="max").reset_index()
    params = costs.set_index(["width", "parallel"])["params"]
    summary["params"] = [int(params.get((w, p), -1)) for w, p in zip(summary["width"], summary["parallel"])]
    return summary


def smallest_width_within_spread(runs: pd.DataFrame, test_set: str = "isic2017", parallel: int = 4,
                                 reference: tuple[float, int] = (1.0, 4), widths=WIDTHS) -> dict | None:
    """The smallest width (at PVM ×`parallel`) whose mean DSC over seeds is at least the lowest seed DSC of the
    reference model (width 1, ×4: the paper's model), i.e. lies within its seed spread or above it.
    None unless the reference and every one of `widths` are recorded with all 3 seeds."""
    data = runs[runs["test_set"] == test_set]
    ref = data[(data["width"] == reference[0]) & (data["parallel"] == reference[1])]["DSC"]
    series = data[data["parallel"] == parallel].groupby("width")["DSC"].agg(["mean", "count"])
    complete = all(series["count"].get(width, 0) >= len(SEEDS) for width in widths)
    if len(ref) < len(SEEDS) or not complete:
        return None
    within = series[series["mean"] >= ref.min()]
    if within.empty:
        return {"width": None, "reference_low": float(ref.min()), "reference_high": float(ref.max())}
    width = float(within.index.min())
    return {"width": width, "mean_dsc": float(series.loc[width, "mean"]), "reference_low": float(ref.min()),
            "reference_high": float(ref.max())}


def _mark_published(ax) -> None:
    for point in PUBLISHED_POINTS:
        ax.scatter(point["params"], point["dsc"], marker="*", s=90, color="k", zorder=3)
        ax.annotate(point["label"], (point["params"], point["dsc"]), textcoords="offset points", xytext=(5, 4),
                    fontsize=7)
    for claim in CLAIMED_SIZES:
        ax.axvline(claim["params"], color="grey", ls=":", lw=1)
        ax.annotate(claim["label"], (claim["params"], 0.02), xycoords=("data", "axes fraction"), rotation=90,
                    fontsize=7, color="grey", xytext=(3, 0), textcoords="offset points")


def width_curve_figure(summary: pd.DataFrame, runs: pd.DataFrame, test_set: str = "isic2017") -> plt.Figure:
    """DSC against parameters (log axis): per PVM setting, each seed as a dot and the mean ± std over seeds as a
    line; the published single points as black stars, each labelled as its authors'."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for parallel, colour in ((1, "tab:orange"), (4, "tab:blue")):
        rows = summary[(summary["test_set"] == test_set) & (summary["parallel"] == parallel)].sort_values("params")
        if rows.empty:
            continue
        ax.errorbar(rows["params"], rows["mean"], yerr=rows["std"].fillna(0), color=colour, marker="o", capsize=3,
                    label=f"ours ×{parallel}: mean ± std over seeds")
        seeds = runs[(runs["test_set"] == test_set) & (runs["parallel"] == parallel)]
        params = rows.set_index("width")["params"]
        ax.scatter(seeds["width"].map(params), seeds["DSC"], color=colour, s=10, alpha=0.5)
    if test_set == "isic2017":
        _mark_published(ax)
    ax.set_xscale("log")
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel(f"DSC, {test_set} test (pooled)")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def width_cost_figure(costs: pd.DataFrame) -> plt.Figure:
    """Parameters and GFLOPs (thop, the paper's way, and full) against the width, for ×1 and ×4 (log axes)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    for parallel, colour in ((1, "tab:orange"), (4, "tab:blue")):
        rows = costs[costs["parallel"] == parallel].sort_values("width")
        left.plot(rows["width"], rows["params"], marker="o", color=colour, label=f"×{parallel}")
        right.plot(rows["width"], rows["gflops_full"], marker="o", color=colour, label=f"×{parallel}, full")
        right.plot(rows["width"], rows["gflops_thop"], marker="x", ls="--", color=colour, label=f"×{parallel}, thop")
    for point in PUBLISHED_POINTS[2:]:
        left.axhline(point["params"], color="grey", ls=":", lw=1)
    for ax, label in ((left, "parameters"), (right, "GFLOPs at 256²")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width (channel multiplier)")
        ax.set_ylabel(label)
        ax.set_xticks(sorted(costs["width"].unique()), [f"{w:g}" for w in sorted(costs["width"].unique())])
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def explanation_figure(image: np.ndarray, stages: dict, truth: np.ndarray | None = None,
                       kinds=("delta", "gate", "gradcam")) -> plt.Figure:
    """One image's maps (`ulvm.deploy.explain.explain_image`'s "stages", or maps at the image's size): a row per
    PVM stage, a column per kind (Δ and gate averaged over the chunks), the expert outline in green if given."""
    names = list(stages)
    fig, axes = plt.subplots(len(names), len(kinds) + 1, figsize=(1.9 * (len(kinds) + 1), 1.9 * len(names)))
    for row, stage in zip(np.atleast_2d(axes), names):
        row[0].imshow(image)
        row[0].set_ylabel(stage, fontsize=8)
        for ax, kind in zip(row[1:], kinds):
            values = stages[stage][kind]
            ax.imshow(values.mean(axis=0) if values.ndim == 3 else values, cmap="magma")
            if truth is not None:
                ax.contour(truth > 0, levels=[0.5], colors="lime", linewidths=0.6)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, title in zip(np.atleast_2d(axes)[0], ("image", *kinds)):
        ax.set_title({"delta": "Δ (scan step)", "gate": "gate SiLU(z)", "gradcam": "Seg-Grad-CAM"}.get(title, title),
                     fontsize=9)
    fig.tight_layout()
    return fig
