"""Records of runs as tables: one row per run, summaries over seeds, Table 1, the transfer matrix, the
comparison table and the throughput table.

A record is one `ulvm.engine.evaluate.evaluate` result written as JSON (the book's are committed under
`book/results/`, a fresh build's under its `results_root`, in the same layout). Nothing here draws.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ...paper import PAPER_RESULTS

if TYPE_CHECKING:
    import pandas as pd

METRIC_NAMES = {"dsc": "DSC", "iou": "IoU", "acc": "ACC", "se": "SE", "sp": "SP", "precision": "precision"}

# How the book writes each model of the comparison chapter (`ulvm.baselines` names; "ultralight" and its
# recorded configuration "×4" are the paper's model).
MODEL_LABELS = {"ultralight": "UltraLight VM-UNet ×4", "×4": "UltraLight VM-UNet ×4", "unet": "U-Net",
                "unext_s": "UNeXt-S", "malunet": "MALUNet", "egeunet": "EGE-UNet", "vmunet": "VM-UNet",
                "lightmunet": "LightM-UNet"}


def configuration_name(config: dict) -> str:
    """How the book names a model configuration: "×4", "×1", "×4 no bridge", or a baseline's name."""
    if config.get("model", "ultralight") != "ultralight":
        return config["model"]
    name = f"×{config.get('parallel', 4)}"
    return name if config.get("bridge", True) else f"{name} no bridge"


def runs_table(results: list[dict]) -> pd.DataFrame:
    """Results dicts (`ulvm.engine.evaluate.evaluate` format) -> one row per run: configuration, seed, fold,
    the pooled metrics, the per-image DSC list, the training profile and data hash (what makes two sets of
    runs comparable), device and wall time."""
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
            "profile": config.get("profile_name"),
            "data hash": result.get("data", {}).get("content_hash"),
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
    """Every `*.json` result under `folder` (e.g. `book/results/ph2_cv/test_ph2/`) as `runs_table` rows; an
    empty table when the folder is missing or empty (the notebook then says "not recorded yet")."""
    return runs_table([{"source": name, **result} for name, result in read_json_folder(folder).items()])


def mean_std(values) -> str:
    """"mean ± std" (ddof=1) of a metric over runs, as the book prints it; the value alone for one run."""
    return f"{values.mean():.4f}" if len(values) == 1 else f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"


def paper_order(runs: pd.DataFrame) -> list[str]:
    """The configurations of `runs` in the paper's order: ×1, ×2, ×4, then variants without the bridge,
    then the baselines in the order they first appear."""
    order = runs.drop_duplicates("configuration").sort_values(["bridge", "parallel"], ascending=[False, True])
    return list(order["configuration"])


def summary_table(runs: pd.DataFrame, metrics=("DSC", "IoU", "ACC", "SE", "SP")) -> pd.DataFrame:
    """Mean ± std of each pooled metric per configuration (over seeds and folds), with the run count,
    rows in the paper's order."""
    grouped = runs.groupby("configuration", sort=False)
    table = grouped[list(metrics)].agg(mean_std)
    table.insert(0, "runs", grouped.size())
    return table.loc[paper_order(runs)]


def seed_statistics(runs: pd.DataFrame, configuration: str = "×4",
                    metrics=("DSC", "IoU", "ACC", "SE", "SP")) -> pd.DataFrame:
    """Mean, std (ddof=1), min, max and count over the runs (seeds) of one configuration, per metric."""
    chosen = runs.loc[runs["configuration"] == configuration, list(metrics)]
    return chosen.agg(["mean", "std", "min", "max", "count"]).T


def seed_spread(runs: pd.DataFrame) -> pd.DataFrame:
    """Pooled DSC per configuration over its seeds: runs, mean, std, min, max and range (max - min)."""
    grouped = runs.groupby("configuration", sort=False)["DSC"]
    table = grouped.agg(["count", "mean", "std", "min", "max"])
    table["range"] = table["max"] - table["min"]
    return table.loc[paper_order(runs)]


def seed_means(runs: pd.DataFrame, metric: str = "DSC") -> pd.DataFrame:
    """Per configuration: the number of runs, the mean and the standard deviation (ddof=1) of a pooled
    metric over them."""
    return runs.groupby("configuration", sort=False)[metric].agg(["count", "mean", "std"])


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
        chosen = runs[(runs["configuration"] == configuration) & (runs["seed"] == seed)]
        if chosen.empty or not chosen["DSC CI95"].iloc[0]:
            continue
        run = chosen.iloc[0]
        low, high = run["DSC CI95"]
        rows.append({"dataset": dataset, "source": f"ours, seed {seed} (DSC 95% CI over images)",
                     **{m: f"{run[m]:.4f}" for m in metrics}})
        rows[-1]["DSC"] += f" [{low:.4f}, {high:.4f}]"
    return pd.DataFrame(rows).set_index(["dataset", "source"]).fillna("")


def transfer_matrix(cells: dict[tuple[str, str], pd.DataFrame], configuration: str = "×4",
                    seed: int = 42) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Trained on (rows) x tested on (columns): the pooled DSC of the run of `configuration` and `seed` in
    each cell's runs table. Returns (numbers, labels "DSC [95% CI]")."""
    import pandas as pd

    values, labels = {}, {}
    for (trained, tested), runs in cells.items():
        chosen = runs[(runs["configuration"] == configuration) & (runs["seed"] == seed)] if len(runs) else runs
        if chosen.empty:
            continue
        run = chosen.iloc[0]
        values.setdefault(tested, {})[trained] = run["DSC"]
        low, high = run["DSC CI95"] or (float("nan"), float("nan"))
        n = len(run["per-image DSC"])
        labels.setdefault(tested, {})[trained] = f"{run['DSC']:.4f} [{low:.4f}, {high:.4f}] (n={n})"
    return pd.DataFrame(values), pd.DataFrame(labels).fillna("—")


def best_median_worst(ids, dsc) -> dict[str, tuple[str, float]]:
    """The images with the highest, the median and the lowest per-image DSC: kind -> (id, DSC)."""
    import numpy as np

    order = np.argsort(np.asarray(dsc), kind="stable")
    picks = {"best": order[-1], "median": order[len(order) // 2], "worst": order[0]}
    return {kind: (ids[i], float(dsc[i])) for kind, i in picks.items()}


def configuration_of(model: str, ours: str, reference: str) -> str:
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
            chosen = runs[runs["configuration"] == configuration_of(model, ours, reference)] if len(runs) else runs
            runs_column[model] = len(chosen)
            for metric in metrics:
                metric_columns[metric][model] = mean_std(chosen[metric]) if len(chosen) else missing
        columns[(dataset, "runs")] = pd.Series(runs_column)
        columns.update({(dataset, metric): pd.Series(values) for metric, values in metric_columns.items()})
    table = pd.DataFrame(columns, index=costs.index)
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    return table.rename(index=lambda model: MODEL_LABELS.get(model, model))


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
