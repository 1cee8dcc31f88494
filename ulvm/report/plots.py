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
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt

from ..errors import UlvmError
from ..io import atomic_write_bytes
from ..paper import PAPER_RESULTS

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


METRIC_NAMES = {"dsc": "DSC", "iou": "IoU", "acc": "ACC", "se": "SE", "sp": "SP", "precision": "precision"}

# How the book writes each model of the comparison chapter (`ulvm.baselines` names; "ultralight" and its
# recorded configuration "×4" are the paper's model).
MODEL_LABELS = {"ultralight": "UltraLight VM-UNet ×4", "×4": "UltraLight VM-UNet ×4", "unet": "U-Net",
                "unext_s": "UNeXt-S", "malunet": "MALUNet", "egeunet": "EGE-UNet", "vmunet": "VM-UNet",
                "lightmunet": "LightM-UNet"}


# ---- results of runs: one row per run, whatever produced it ------------------------------------------


def configuration_name(config: dict) -> str:
    """How the book names a model configuration: "×4", "×1", "×4 no bridge", or a baseline's name."""
    if config.get("model", "ultralight") != "ultralight":
        return config["model"]
    name = f"×{config.get('parallel', 4)}"
    return name if config.get("bridge", True) else f"{name} no bridge"


def runs_table(results: list[dict]) -> pd.DataFrame:
    """Results dicts (`ulvm.engine.evaluate.evaluate` format) -> one row per run: configuration, seed, fold,
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
            "per-image ids": result.get("per_image", {}).get("ids", []),
            "validation DSC": result.get("history", {}).get("val_dsc", []),
            "DSC CI95": tuple(result["dsc_ci95"]) if result.get("dsc_ci95") else None,
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


def load_recorded_runs(folder: str | os.PathLike) -> pd.DataFrame:
    """Every `*.json` result under `folder` (e.g. `book/results/ph2_cv/test_ph2/`) as `runs_table` rows; an empty
    table when the folder is missing or empty (the notebook then says "not recorded yet")."""
    return runs_table([{"source": name, **result} for name, result in read_json_folder(folder).items()])


def _mean_std(values) -> str:
    """"mean ± std" (ddof=1) of a metric over runs, as the book prints it; the value alone for one run."""
    return f"{values.mean():.4f}" if len(values) == 1 else f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"


def summary_table(runs: pd.DataFrame, metrics=("DSC", "IoU", "ACC", "SE", "SP")) -> pd.DataFrame:
    """Mean ± std of each pooled metric per configuration (over seeds and folds), with the run count.
    Rows in the paper's order: ×1, ×2, ×4, then variants without the bridge."""
    grouped = runs.groupby("configuration", sort=False)
    table = grouped[list(metrics)].agg(_mean_std)
    table.insert(0, "runs", grouped.size())
    order = runs.drop_duplicates("configuration").sort_values(["bridge", "parallel"], ascending=[False, True])
    return table.loc[list(order["configuration"])]


def paired_per_image(runs: pd.DataFrame, first: str, second: str):
    """The per-image DSC of two configurations over the images they were both tested on (same seed and
    fold), as two aligned arrays (empty when they share no run).

    Where both configurations ran several seeds, each image's DSC is first averaged over their shared
    seeds, so every test image counts once. Runs whose per-image ids differ are refused."""
    import numpy as np

    keyed = {(name, seed, fold): np.asarray(dsc) for name, seed, fold, dsc in
             runs[["configuration", "seed", "fold", "per-image DSC"]].itertuples(index=False)}
    ids = ({(name, seed, fold): list(image_ids) for name, seed, fold, image_ids in
            runs[["configuration", "seed", "fold", "per-image ids"]].itertuples(index=False)}
           if "per-image ids" in runs else {})
    by_fold: dict = {}                       # fold -> ([first's per-image DSC per seed], [second's ...])
    for (name, seed, fold), dsc in keyed.items():
        if name == first and (second, seed, fold) in keyed:
            mine, theirs = ids.get((name, seed, fold)), ids.get((second, seed, fold))
            if mine and theirs and mine != theirs:
                raise UlvmError(f"{first} and {second} (seed {seed}, fold {fold}) were not tested on the same "
                                "images in the same order: their per-image ids differ")
            pair = by_fold.setdefault(fold, ([], []))
            pair[0].append(dsc)
            pair[1].append(keyed[(second, seed, fold)])
    if not by_fold:
        return np.zeros(0), np.zeros(0)
    a = np.concatenate([np.mean(seeds, axis=0) for seeds, _ in by_fold.values()])
    b = np.concatenate([np.mean(seeds, axis=0) for _, seeds in by_fold.values()])
    return a, b


def paired_comparison(runs: pd.DataFrame, first: str, second: str) -> dict:
    """Paired comparison of two configurations over the images they were both tested on (same seed and
    fold; `paired_per_image`, each image once, averaged over the shared seeds): mean per-image DSC
    difference and the Wilcoxon signed-rank test (scipy)."""
    return _paired_statistics(*paired_per_image(runs, first, second), first, second)


def _paired_statistics(a, b, first: str, second: str) -> dict:
    """`paired_comparison`'s numbers for two aligned per-image DSC arrays."""
    import numpy as np
    from scipy.stats import wilcoxon

    if not len(a):
        return {"pairs": 0}
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


# ---- the Results part: Table 1, seed spread, transfer matrix ----------------------------------------


def seed_statistics(runs: pd.DataFrame, configuration: str = "×4",
                    metrics=("DSC", "IoU", "ACC", "SE", "SP")) -> pd.DataFrame:
    """Mean, std (ddof=1), min, max and count over the runs (seeds) of one configuration, per metric."""
    chosen = runs.loc[runs["configuration"] == configuration, list(metrics)]
    return chosen.agg(["mean", "std", "min", "max", "count"]).T


def table1(recorded: dict[str, pd.DataFrame], configuration: str = "×4", seed: int = 42,
           metrics=("DSC", "IoU", "ACC", "SE", "SP")) -> pd.DataFrame:
    """The paper's Table 1 rows beside ours, per dataset of `recorded` (name -> runs table, e.g.
    {"ISIC2017": ..., "PH2": ...}): the paper's single run, our mean ± std over the seeds of
    `configuration`, and our run of `seed` with the 95% bootstrap CI of its DSC."""
    import pandas as pd

    rows = []
    for dataset, runs in recorded.items():
        paper = PAPER_RESULTS[dataset]
        rows.append({"dataset": dataset, "source": "paper (one run)",
                     **{METRIC_NAMES[k]: f"{v:.4f}" for k, v in paper.items() if METRIC_NAMES[k] in metrics}})
        if runs.empty:
            rows.append({"dataset": dataset, "source": "ours", "DSC": "not recorded"})
            continue
        stats = seed_statistics(runs, configuration, metrics)
        rows.append({"dataset": dataset, "source": f"ours, mean ± std over {int(stats['count'].iloc[0])} seeds",
                     **{m: f"{stats.loc[m, 'mean']:.4f} ± {stats.loc[m, 'std']:.4f}" for m in metrics}})
        run = runs[(runs["configuration"] == configuration) & (runs["seed"] == seed)].iloc[0]
        low, high = run["DSC CI95"]
        rows.append({"dataset": dataset, "source": f"ours, seed {seed} (DSC 95% CI over images)",
                     **{m: f"{run[m]:.4f}" for m in metrics}})
        rows[-1]["DSC"] += f" [{low:.4f}, {high:.4f}]"
    return pd.DataFrame(rows).set_index(["dataset", "source"]).fillna("")


def seed_spread(runs: pd.DataFrame) -> pd.DataFrame:
    """Pooled DSC per configuration over its seeds: runs, mean, std, min, max and range (max - min)."""
    grouped = runs.groupby("configuration", sort=False)["DSC"]
    table = grouped.agg(["count", "mean", "std", "min", "max"])
    table["range"] = table["max"] - table["min"]
    order = runs.drop_duplicates("configuration").sort_values(["bridge", "parallel"], ascending=[False, True])
    return table.loc[list(order["configuration"])]


def transfer_matrix(cells: dict[tuple[str, str], pd.DataFrame], configuration: str = "×4",
                    seed: int = 42) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Trained on (rows) x tested on (columns): the pooled DSC of the run of `configuration` and `seed` in
    each cell's runs table. Returns (numbers, labels "DSC [95% CI]")."""
    import pandas as pd

    values, labels = {}, {}
    for (trained, tested), runs in cells.items():
        chosen = runs[(runs["configuration"] == configuration) & (runs["seed"] == seed)]
        if chosen.empty:
            continue
        run = chosen.iloc[0]
        values.setdefault(tested, {})[trained] = run["DSC"]
        low, high = run["DSC CI95"] or (float("nan"), float("nan"))
        n = len(run["per-image DSC"])
        labels.setdefault(tested, {})[trained] = f"{run['DSC']:.4f} [{low:.4f}, {high:.4f}] (n={n})"
    return pd.DataFrame(values), pd.DataFrame(labels).fillna("—")


def dsc_box_plot(runs: pd.DataFrame, title: str, ax=None):
    """Pooled DSC of every run, one box per configuration (paper order), each seed a dot."""
    import numpy as np

    order = list(seed_spread(runs).index)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3))
    data = [runs.loc[runs["configuration"] == name, "DSC"].to_numpy() for name in order]
    ax.boxplot(data, tick_labels=order)
    for i, values in enumerate(data, start=1):
        ax.plot(np.full(len(values), i) + np.linspace(-0.08, 0.08, len(values)), values, "o", ms=4, alpha=0.7)
    ax.set_ylabel("pooled DSC per run")
    ax.set_title(title)
    return ax.figure


# ---- real test images: best, median and worst of a run ---------------------------------------------


def best_median_worst(ids, dsc) -> dict[str, tuple[str, float]]:
    """The images with the highest, the median and the lowest per-image DSC: kind -> (id, DSC)."""
    import numpy as np

    order = np.argsort(np.asarray(dsc), kind="stable")
    picks = {"best": order[-1], "median": order[len(order) // 2], "worst": order[0]}
    return {kind: (ids[i], float(dsc[i])) for kind, i in picks.items()}


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


def _configuration_of(model: str, ours: str, reference: str) -> str:
    """The configuration name under which a model's runs are recorded (ours: `reference`, e.g. "×4")."""
    return reference if model == ours else model


def model_comparison_table(costs: pd.DataFrame, recorded: dict[str, pd.DataFrame],
                           metrics=("DSC", "IoU", "SE", "SP"), ours: str = "ultralight",
                           reference: str = "×4", missing: str = "not trained") -> pd.DataFrame:
    """One row per model of `costs` (indexed by model name, `ours` for UltraLight VM-UNet): its cost
    columns as given, then per dataset of `recorded` (name -> runs table holding `reference` and the
    baselines, e.g. {"ISIC2017": ..., "PH2": ...}) the number of runs and each pooled metric as
    "mean ± std" over the runs (seeds). A model without runs in a dataset shows `missing`.

    Columns are two-level: ("cost", column) and (dataset, "runs" | metric); rows are labelled with
    `MODEL_LABELS`."""
    import pandas as pd

    columns = {("cost", column): costs[column] for column in costs.columns}
    for dataset, runs in recorded.items():
        runs_column, metric_columns = {}, {metric: {} for metric in metrics}
        for model in costs.index:
            chosen = runs[runs["configuration"] == _configuration_of(model, ours, reference)] if len(runs) else runs
            runs_column[model] = len(chosen)
            for metric in metrics:
                metric_columns[metric][model] = _mean_std(chosen[metric]) if len(chosen) else missing
        columns[(dataset, "runs")] = pd.Series(runs_column)
        columns.update({(dataset, metric): pd.Series(values) for metric, values in metric_columns.items()})
    table = pd.DataFrame(columns, index=costs.index)
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    return table.rename(index=lambda model: MODEL_LABELS.get(model, model))


def seed_means(runs: pd.DataFrame, metric: str = "DSC") -> pd.DataFrame:
    """Per configuration: the number of runs, the mean and the standard deviation (ddof=1) of a pooled
    metric over them."""
    return runs.groupby("configuration", sort=False)[metric].agg(["count", "mean", "std"])


def params_vs_dsc_figure(params: dict, recorded: dict[str, pd.DataFrame], ours: str = "ultralight",
                         reference: str = "×4", metric: str = "DSC", width: float = 5.2):
    """Parameters (log axis) against the pooled `metric`, one panel per dataset of `recorded`: one point per
    model (mean over its seeds, error bar one standard deviation), UltraLight VM-UNet (`ours`) highlighted.
    `params`: model name -> parameter count; models without runs in a dataset are left out of its panel.
    Returns the figure."""
    fig, axes = plt.subplots(1, len(recorded), figsize=(width * len(recorded), 3.6), squeeze=False)
    for ax, (dataset, runs) in zip(axes.flat, recorded.items()):
        stats = seed_means(runs, metric) if len(runs) else None
        for model, count in params.items():
            name = _configuration_of(model, ours, reference)
            if stats is None or name not in stats.index:
                continue
            row = stats.loc[name]
            mine = model == ours
            ax.errorbar(count, row["mean"], yerr=0 if row["count"] < 2 else row["std"], capsize=3,
                        fmt="*" if mine else "o", ms=13 if mine else 6, color="#d62728" if mine else "#1f77b4",
                        zorder=3 if mine else 2)
            ax.annotate(f"{MODEL_LABELS.get(model, model)} ({int(row['count'])})", (count, row["mean"]),
                        textcoords="offset points", xytext=(8, -14) if mine else (6, 4), fontsize=8,
                        fontweight="bold" if mine else "normal", color="#d62728" if mine else "black")
        ax.set_xscale("log")
        ax.set(xlabel="parameters (log scale)", ylabel=f"pooled {metric}, mean ± std over seeds", title=dataset)
        ax.margins(x=0.25, y=0.2)
    fig.tight_layout()
    return fig


def paired_table(recorded: dict[str, pd.DataFrame], first: str, others) -> pd.DataFrame:
    """`paired_comparison`'s numbers for `first` against each of `others` (each pair of per-image DSC arrays
    built once), per dataset of `recorded` (name -> runs table): one row per (dataset, model) with the number
    of test images, the shared seeds, both mean per-image DSC, their mean and median difference (first minus
    other), the share of images on which `first` is better, the Wilcoxon p-value and that p-value multiplied
    by the number of tests in the table (Bonferroni, capped at 1)."""
    import numpy as np
    import pandas as pd

    rows = []
    for dataset, runs in recorded.items():
        for other in others:
            a, b = paired_per_image(runs, first, other)
            result = _paired_statistics(a, b, first, other)
            if not result["pairs"]:
                continue
            seeds = sorted(set(runs.loc[runs["configuration"] == first, "seed"])
                           & set(runs.loc[runs["configuration"] == other, "seed"]))
            rows.append({"dataset": dataset, "model": other, "images": result["pairs"],
                         "seeds": ", ".join(map(str, seeds)),
                         f"mean DSC {first}": result[f"mean DSC {first}"],
                         "mean DSC model": result[f"mean DSC {other}"],
                         "difference": result["mean difference"], "median difference": float(np.median(a - b)),
                         f"{first} better on": float(np.mean(a > b)), "Wilcoxon p": result["Wilcoxon p"]})
    table = pd.DataFrame(rows)
    if len(table):
        table["Bonferroni p"] = (table["Wilcoxon p"] * len(table)).clip(upper=1.0)
    return table


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


def throughput_table(records: dict[str, dict]) -> pd.DataFrame:
    """One row per measured (record, MPS mode, K) of `ulvm throughput` records (name -> JSON): the GPUs the
    runs were spread over, how many shared a process (`--together`; 1 in records from before it), whether
    the runs compiled their step (`--compile`), aggregate images/s and ISIC2017 epochs/min, each run's epoch
    time, and the speed-up over K = 1 of the same record and mode. Rows of a mode that could not be measured,
    and of a K whose runs failed, are left out."""
    import pandas as pd

    rows = []
    for name, record in records.items():
        gpus = len(record.get("gpus") or [0])
        for row in record["rows"]:
            if "images_per_s" in row:
                rows.append({"record": name, "GPUs": gpus, "MPS": row["mps"], "K": row["k"],
                             "runs per GPU": row["k"] / gpus, "runs per process": row.get("runs_per_process", 1),
                             "compiled step": bool(record.get("compile", False)),
                             "images / s": row["images_per_s"], "epochs / min": row["epochs_per_min"],
                             "s an epoch, each run": row["mean_epoch_s"], "speed-up vs K=1": row["speedup"],
                             "code": record["code_version"]})
    return pd.DataFrame(rows)


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
