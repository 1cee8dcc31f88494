"""Statistics over runs: which differences between configurations are more than noise, and whether a
fresh build agrees with the book's record.

Two units of replication, kept apart:
- **the trained model (seed)**: `welch_test` on each run's pooled DSC, and `hierarchical_bootstrap`
  over seeds, then images. These answer "is configuration A better than B?": a new draw of the training
  noise is a new seed, so claims about configurations are made with these (`seed_level_table`).
- **the test image**: `paired_comparison` (Wilcoxon signed-rank over the images of one set of trained
  models). It says whether *these* models differ on *these* images, not whether the configurations do.

`this_build_table` sets a fresh build's runs beside the book's record of the same configuration, with a
verdict per row (the rule is in its docstring and stated in the Results chapters).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import UlvmError
from .records import mean_std, paper_order

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

POINT = 0.01   # one "DSC point": the book writes every DSC difference in points (0.0056 DSC = 0.56 points)


# ---- the seed as the unit -----------------------------------------------------------------------------


def per_seed(runs: pd.DataFrame, configuration: str, metric: str = "DSC") -> np.ndarray:
    """One value per run (seed, fold) of `configuration`: its pooled `metric`."""
    import numpy as np

    if not len(runs):
        return np.zeros(0)
    return runs.loc[runs["configuration"] == configuration, metric].to_numpy(dtype=float)


def welch_test(a, b, level: float = 0.95) -> dict:
    """Welch's t-test of mean(a) - mean(b), each value one trained model (e.g. its pooled DSC): the
    difference, its `level` confidence interval (Welch-Satterthwaite degrees of freedom) and the two-sided
    p-value. With fewer than two values in a group the interval and p are NaN (no spread to test with)."""
    import numpy as np
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    result = {"runs": (len(a), len(b)), "mean a": a.mean() if len(a) else np.nan,
              "mean b": b.mean() if len(b) else np.nan}
    result["difference"] = result["mean a"] - result["mean b"]
    if len(a) < 2 or len(b) < 2:
        return {**result, "low": np.nan, "high": np.nan, "p": np.nan}
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = np.sqrt(va + vb)
    if se == 0:
        same = result["difference"] == 0
        return {**result, "low": result["difference"], "high": result["difference"], "p": 1.0 if same else 0.0}
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = stats.t.ppf(0.5 + level / 2, dof) * se
    p = 2 * stats.t.sf(abs(result["difference"]) / se, dof)
    return {**result, "low": result["difference"] - half, "high": result["difference"] + half, "p": float(p)}


def hierarchical_bootstrap(a, b, replicates: int = 4000, level: float = 0.95, seed: int = 0,
                           resample_seeds: bool = True) -> dict:
    """Bootstrap of the difference in mean per-image DSC between two configurations, over seeds, then
    images: each replicate draws each configuration's seeds with replacement, then the test images with
    replacement (the same images for both: they were tested on the same set), and takes the difference of
    the means. `a`, `b`: (seeds, images) per-image DSC, images in the same order. With
    `resample_seeds=False` only the images are resampled: the uncertainty of one draw of trained models,
    which is narrower whenever the seeds disagree.

    Returns the observed difference and the percentile interval at `level`."""
    import numpy as np

    a, b = np.atleast_2d(np.asarray(a, dtype=float)), np.atleast_2d(np.asarray(b, dtype=float))
    if a.shape[1] != b.shape[1]:
        raise UlvmError(f"hierarchical bootstrap: {a.shape[1]} and {b.shape[1]} test images; both "
                        "configurations must be tested on the same images")
    rng = np.random.default_rng(seed)
    images = a.shape[1]
    image_weights = rng.multinomial(images, np.full(images, 1 / images), size=replicates) / images

    def seed_weights(runs):
        if not resample_seeds:
            return np.full((replicates, len(runs)), 1 / len(runs))
        return rng.multinomial(len(runs), np.full(len(runs), 1 / len(runs)), size=replicates) / len(runs)

    # (replicates, seeds) @ (seeds, images) -> each replicate's seed-averaged per-image DSC
    difference = seed_weights(a) @ a - seed_weights(b) @ b
    replicated = (difference * image_weights).sum(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(replicated, [tail, 1 - tail])
    return {"difference": float(a.mean() - b.mean()), "low": float(low), "high": float(high)}


def per_image_matrix(runs: pd.DataFrame, configuration: str) -> np.ndarray:
    """(runs, images) per-image DSC of `configuration`, rows in seed order; runs tested on other images
    (their per-image ids differ) are refused."""
    import numpy as np

    chosen = runs[runs["configuration"] == configuration].sort_values("seed")
    ids = [tuple(i) for i in chosen["per-image ids"]] if "per-image ids" in chosen else []
    if len(set(ids)) > 1:
        raise UlvmError(f"{configuration}: its runs were not tested on the same images in the same order")
    return np.asarray([list(d) for d in chosen["per-image DSC"]], dtype=float)


def seed_level_table(recorded: dict[str, pd.DataFrame], first: str, others, level: float = 0.95,
                     seed: int = 0) -> pd.DataFrame:
    """`first` against each of `others`, per dataset of `recorded` (name -> runs table), the trained model
    as the unit. One row per (dataset, other): the runs of each, their mean pooled DSC, the difference
    first minus other in DSC points, Welch's interval and p over the runs' pooled DSC, that p times the
    number of rows (Bonferroni, capped at 1), the hierarchical bootstrap interval (seeds, then images) of
    the difference in mean per-image DSC, in points, which tests say so, and the verdict.

    The rule: a difference is called ("first better" / "other better") only when both tests find it:
    Welch's Bonferroni p below 1 - `level` and the bootstrap interval excluding 0; otherwise "no evidence
    of a difference" (which does not mean equal), with "found by" naming the one test that alone did."""
    import pandas as pd

    rows = []
    for dataset, runs in recorded.items():
        for other in others:
            a, b = per_seed(runs, first), per_seed(runs, other)
            if not len(a) or not len(b):
                continue
            welch = welch_test(a, b, level)
            boot = hierarchical_bootstrap(per_image_matrix(runs, first), per_image_matrix(runs, other),
                                          level=level, seed=seed)
            rows.append({"dataset": dataset, "other": other, f"runs {first}": len(a), "runs other": len(b),
                         f"DSC {first}": welch["mean a"], "DSC other": welch["mean b"],
                         "difference (points)": welch["difference"] / POINT,
                         "Welch CI low": welch["low"] / POINT, "Welch CI high": welch["high"] / POINT,
                         "Welch p": welch["p"],
                         "bootstrap CI low": boot["low"] / POINT, "bootstrap CI high": boot["high"] / POINT})
    table = pd.DataFrame(rows)
    if not len(table):
        return table
    table["Bonferroni p"] = (table["Welch p"] * len(table)).clip(upper=1.0)
    welch_finds = table["Bonferroni p"] < 1 - level
    boot_finds = (table["bootstrap CI low"] > 0) | (table["bootstrap CI high"] < 0)
    table["found by"] = [{(True, True): "both", (True, False): "Welch only", (False, True): "bootstrap only",
                          (False, False): "neither"}[pair] for pair in zip(welch_finds, boot_finds)]
    table["verdict"] = [(f"{first} better" if difference > 0 else f"{other} better") if found == "both"
                        else "no evidence of a difference"
                        for difference, found in zip(table["difference (points)"], table["found by"])]
    return table


# ---- this build beside the book's record ---------------------------------------------------------------


def consistency(record, fresh, family_level: float = 0.95, tests: int = 1) -> dict:
    """Is the mean of `fresh` (one value per run of this build) consistent with `record` (the book's
    runs of the same configuration), given the spread over seeds?

    The rule: with two runs or more on each side, Welch's t-interval of mean(fresh) - mean(record) at
    level 1 - (1 - family_level) / tests (Bonferroni over the rows of one table) must contain 0; with a
    single fresh run, it must lie inside the record's prediction interval for one new run at that level,
    mean ± t(n - 1) · sd · sqrt(1 + 1/n). Returns the difference, the interval and "consistent"."""
    import numpy as np
    from scipy import stats

    record, fresh = np.asarray(record, dtype=float), np.asarray(fresh, dtype=float)
    level = 1 - (1 - family_level) / tests
    if len(record) < 2 or not len(fresh):
        return {"difference": np.nan, "low": np.nan, "high": np.nan, "consistent": None, "level": level}
    if len(fresh) >= 2:
        welch = welch_test(fresh, record, level)
        low, high, difference = welch["low"], welch["high"], welch["difference"]
    else:
        n, difference = len(record), fresh[0] - record.mean()
        half = stats.t.ppf(0.5 + level / 2, n - 1) * record.std(ddof=1) * np.sqrt(1 + 1 / n)
        low, high = difference - half, difference + half
    return {"difference": difference, "low": low, "high": high, "consistent": bool(low <= 0 <= high),
            "level": level}


def comparable(record: pd.DataFrame, fresh: pd.DataFrame) -> str:
    """"" when `fresh` runs can be compared with `record` (same training profile and same test data),
    else why not, in words."""
    def values(runs, column):
        return set(runs[column].dropna()) if column in runs and len(runs) else set()

    reasons = []
    if values(fresh, "profile") and values(fresh, "profile") != values(record, "profile"):
        reasons.append(f"profile {', '.join(sorted(values(fresh, 'profile')))} against the record's "
                       f"{', '.join(sorted(values(record, 'profile')))}")
    if values(fresh, "data hash") and values(fresh, "data hash") != values(record, "data hash"):
        reasons.append("other test data (content hash)")
    return "; ".join(reasons)


def this_build_table(recorded: dict[str, tuple[pd.DataFrame, pd.DataFrame]], configurations=None,
                     metric: str = "DSC", family_level: float = 0.95) -> pd.DataFrame:
    """This build's runs beside the book's record, one row per (dataset, configuration) of the record:
    `recorded` maps a dataset name to (the book's runs, this build's runs). Columns: the runs and mean ±
    std of each side, the difference this build minus the record in DSC points, its interval and the
    verdict ("✓ consistent", "✗ inconsistent", "not run", or "not comparable: why"), by `consistency`
    with Bonferroni over the rows of the table."""
    import numpy as np
    import pandas as pd

    rows = []
    for dataset, (record, fresh) in recorded.items():
        names = [c for c in paper_order(record) if configurations is None or c in configurations]
        rows += [(dataset, name, per_seed(record, name, metric), per_seed(fresh, name, metric),
                  comparable(record, fresh)) for name in names]
    table = []
    for dataset, name, book, mine, why_not in rows:
        verdict = consistency(book, mine, family_level, tests=len(rows))
        if not len(mine):
            label = "not run"
        elif why_not:
            label = f"not comparable: {why_not}"
        elif verdict["consistent"] is None:
            label = "no spread in the record"
        else:
            label = "✓ consistent" if verdict["consistent"] else "✗ inconsistent"
        table.append({"dataset": dataset, "configuration": name, "record runs": len(book),
                      f"record {metric}": mean_std(book), "this build runs": len(mine),
                      f"this build {metric}": mean_std(mine) if len(mine) else "—",
                      "difference (points)": np.nan if why_not else verdict["difference"] / POINT,
                      "interval (points)": _interval(verdict) if len(mine) and not why_not else "—",
                      "verdict": label})
    return pd.DataFrame(table)


def _interval(verdict: dict) -> str:
    import math

    if math.isnan(verdict["low"]):
        return "—"
    return f"[{verdict['low'] / POINT:+.2f}, {verdict['high'] / POINT:+.2f}]"


# ---- the test image as the unit ------------------------------------------------------------------------


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
    difference and the Wilcoxon signed-rank test (scipy). The unit is the image: it compares these
    trained models, not the configurations (`seed_level_table` does)."""
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


def paired_table(recorded: dict[str, pd.DataFrame], first: str, others) -> pd.DataFrame:
    """`paired_comparison`'s numbers for `first` against each of `others`, per dataset of `recorded` (name
    -> runs table): one row per (dataset, model) with the number of test images, the shared seeds, both
    mean per-image DSC, their mean and median difference (first minus other), the share of images on which
    `first` is better, the Wilcoxon p-value and that p-value multiplied by the number of tests in the table
    (Bonferroni, capped at 1)."""
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
