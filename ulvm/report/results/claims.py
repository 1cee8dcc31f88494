"""The paper's claims checked against the records: a scorecard with one verdict per claim, and the
arithmetic that tests the paper's own numbers for consistency.

The scorecard's rules: counts (parameters, GFLOPs) must match the paper's printed precision; a reported
single run (the paper's DSC) is "reproduced" when it lies inside our seeds' prediction interval for one
new run (`statistics.consistency`, the rule a fresh build is judged by); a claim about configurations
("×4 is as good as ×1", "better than the baselines") takes the seed-level verdict of
`statistics.seed_level_table`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ...paper import PAPER_PVM_SETTINGS, PAPER_RESULTS
from .records import MODEL_LABELS
from .statistics import consistency, per_seed

if TYPE_CHECKING:
    import pandas as pd

PASS, FAIL, OPEN = "✓", "✗", "–"


def dsc_from_precision_recall(precision: float, recall: float) -> float:
    """The DSC (F1) that a pooled precision and recall imply: 2PR / (P + R)."""
    return 2 * precision * recall / (precision + recall)


def implied_by_acc_se_sp(acc: float, se: float, sp: float) -> dict:
    """What pooled ACC, SE and SP imply for the rest of the confusion matrix: the lesion share of the
    pixels p (ACC = p·SE + (1 - p)·SP), the precision p·SE / (p·SE + (1 - p)(1 - SP)) and the DSC."""
    lesion = (sp - acc) / (sp - se)
    precision = lesion * se / (lesion * se + (1 - lesion) * (1 - sp))
    return {"lesion share": lesion, "precision": precision, "DSC": dsc_from_precision_recall(precision, se)}


def _single_run_claim(claim: str, dataset: str, runs: pd.DataFrame) -> dict:
    """The paper's one DSC on `dataset` against our ×4 seeds: reproduced when inside their prediction
    interval for one new run."""
    ours, paper = per_seed(runs, "×4"), PAPER_RESULTS[dataset]["dsc"]
    verdict = consistency(ours, [paper])
    sds = (paper - ours.mean()) / ours.std(ddof=1)
    return {"claim": claim, "paper": f"{paper:.4f} (one run)",
            "ours": f"{ours.mean():.4f} ± {ours.std(ddof=1):.4f} ({len(ours)} seeds)",
            "verdict": PASS if verdict["consistent"] else FAIL,
            "why": f"the paper's run is {sds:+.1f} of our seed SDs from our mean, "
                   f"{'inside' if verdict['consistent'] else 'outside'} the 95% prediction interval of one run"}


def _configuration_claim(claim: str, paper: str, rows: pd.DataFrame, supported: str) -> dict:
    """A claim about configurations from `seed_level_table` rows: ✓ when every row's verdict is
    `supported`, ✗ when one says the opposite, else open (no difference detectable with these seeds)."""
    verdicts = list(rows["verdict"])
    shown = "; ".join(
        f"×4 minus {MODEL_LABELS.get(other, other)}: "
        + ", ".join(f"{r['dataset']} {r['difference (points)']:+.2f}" for _, r in group.iterrows())
        for other, group in rows.groupby("other", sort=False)) + " DSC points"
    if all(v == supported for v in verdicts):
        mark = PASS
    elif any(v not in (supported, "no evidence of a difference") for v in verdicts):
        mark = FAIL
    else:
        mark = OPEN
    return {"claim": claim, "paper": paper, "ours": shown, "verdict": mark,
            "why": ", ".join(sorted(set(verdicts))) + " at the seed level (Welch and the hierarchical "
                   "bootstrap must agree)"}


def scorecard(complexity: list[dict], isic: pd.DataFrame, ph2: pd.DataFrame, ablation: pd.DataFrame,
              comparison: pd.DataFrame, bridge_params: int) -> pd.DataFrame:
    """One row per claim of the paper: claim, the paper's number, ours, verdict (✓, ✗ or – for open) and
    why. `complexity`: `ulvm.complexity.pvm_settings_table()` rows; `isic`, `ph2`: the ×4 records tested on
    each; `ablation`: `seed_level_table` rows of "×4" against "×1" and "×4 no bridge" on ISIC2017 and PH2;
    `comparison`: its rows of "×4" against each baseline; `bridge_params`: the attention bridge's
    parameter count."""
    import pandas as pd

    params = {row["parallel"]: row["params"] for row in complexity}
    thop = {row["parallel"]: row["gflops_thop"] for row in complexity}
    full = {row["parallel"]: row["gflops_full"] for row in complexity}
    exact = all(round(params[p] / 1e6, 3) == PAPER_PVM_SETTINGS[p]["params (M)"] for p in PAPER_PVM_SETTINGS)
    same_flops = all(round(thop[p], 3) == PAPER_PVM_SETTINGS[p]["GFLOPs"] for p in PAPER_PVM_SETTINGS)
    rows = [
        {"claim": "parameters of ×1 / ×2 / ×4", "verdict": PASS if exact else FAIL,
         "paper": " / ".join(f"{PAPER_PVM_SETTINGS[p]['params (M)']:.3f}M" for p in (1, 2, 4)),
         "ours": " / ".join(f"{params[p]:,}" for p in (1, 2, 4)), "why": "exact at the paper's precision"
         if exact else "differs at the paper's precision"},
        {"claim": "GFLOPs of ×1 / ×2 / ×4", "verdict": PASS if same_flops else FAIL,
         "paper": " / ".join(f"{PAPER_PVM_SETTINGS[p]['GFLOPs']:.3f}" for p in (1, 2, 4)),
         "ours": " / ".join(f"{thop[p]:.3f}" for p in (1, 2, 4)) + " (thop); "
                 + " / ".join(f"{full[p]:.3f}" for p in (1, 2, 4)) + " (full)",
         "why": "as thop counts, which does not see inside Mamba; the full count is higher"},
        _single_run_claim("DSC on ISIC2017 (Table 1)", "ISIC2017", isic),
        _single_run_claim("DSC on PH2, external (Table 1)", "PH2", ph2),
        _configuration_claim("×4 at least as good as ×1 (the PVM ablation)",
                             f"{PAPER_PVM_SETTINGS[4]['DSC ISIC2017']:.4f} vs "
                             f"{PAPER_PVM_SETTINGS[1]['DSC ISIC2017']:.4f}",
                             ablation[ablation["other"] == "×1"], "×4 better"),
        _configuration_claim("outperforms the lightweight baselines", "ranked first in its comparison",
                             comparison, "×4 better"),
        _configuration_claim(f"the attention bridge ({bridge_params:,} parameters) helps",
                             "part of the final model", ablation[ablation["other"] == "×4 no bridge"],
                             "×4 better"),
    ]
    return pd.DataFrame(rows)[["claim", "paper", "ours", "verdict", "why"]]
