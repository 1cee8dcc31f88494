"""Result tables shared by the notebooks (`ulvm.plots`)."""
import numpy as np
import pandas as pd
import pytest

from ulvm.plots import paired_comparison


def test_paired_comparison_counts_each_test_image_once():
    """Two seeds of both configurations on one fold of 6 images: 6 pairs (seed-averaged), not 12."""
    rng = np.random.default_rng(0)
    rows = []
    for name, shift in (("x1", 0.01), ("x4", 0.0)):
        for seed in (1, 2):
            rows.append({"configuration": name, "seed": seed, "fold": 0,
                         "per-image DSC": list(0.9 + shift + 0.01 * rng.standard_normal(6))})
    rows.append({"configuration": "x1", "seed": 3, "fold": 0, "per-image DSC": [0.0] * 6})   # no x4 twin
    runs = pd.DataFrame(rows)
    result = paired_comparison(runs, "x1", "x4")
    per_seed = {(r["configuration"], r["seed"]): np.array(r["per-image DSC"]) for r in rows}
    expected = ((per_seed["x1", 1] + per_seed["x1", 2]) / 2 - (per_seed["x4", 1] + per_seed["x4", 2]) / 2).mean()
    assert result["pairs"] == 6
    assert result["mean difference"] == pytest.approx(expected)
    assert paired_comparison(runs, "x1", "x2") == {"pairs": 0}


def test_summary_table_rows_follow_the_papers_order():
    from conftest import REPO

    from ulvm.plots import load_recorded_runs, summary_table

    recorded = load_recorded_runs(REPO / "book" / "results" / "ph2_cv" / "test_ph2")
    table = summary_table(recorded)
    assert list(table.index) == ["×1", "×2", "×4", "×4 no bridge"]
    assert table["runs"].sum() == len(recorded)


def test_table1_puts_ours_beside_the_papers_numbers():
    from conftest import REPO

    from ulvm.book import recorded_runs
    from ulvm.paper import PAPER_RESULTS
    from ulvm.plots import seed_statistics, table1

    recorded = {"ISIC2017": recorded_runs("isic2017", "isic2017", REPO / "book" / "results"),
                "PH2": recorded_runs("isic2017", "ph2", REPO / "book" / "results")}
    table = table1(recorded)
    assert table.loc[("ISIC2017", "paper (one run)"), "DSC"] == f"{PAPER_RESULTS['ISIC2017']['dsc']:.4f}"
    stats = seed_statistics(recorded["ISIC2017"]).loc["DSC"]
    assert stats["count"] == 5    # the paper's model, five seeds
    ours = table.loc[("ISIC2017", "ours, mean ± std over 5 seeds"), "DSC"]
    assert ours == f"{stats['mean']:.4f} ± {stats['std']:.4f}"
    seed42 = table.loc[("PH2", "ours, seed 42 (DSC 95% CI over images)"), "DSC"]
    assert seed42.count("[") == 1 and seed42.endswith("]")


def test_transfer_matrix_and_seed_spread():
    from conftest import REPO

    from ulvm.book import recorded_runs
    from ulvm.plots import seed_spread, transfer_matrix

    results = REPO / "book" / "results"
    isic = recorded_runs("isic2017", "isic2017", results)
    cells = {("ISIC2017", "ISIC2017"): isic, ("ISIC2017", "PH2"): recorded_runs("isic2017", "ph2", results),
             ("PH2 fold 0", "PH2"): recorded_runs("ph2_fold0", "ph2", results),
             ("PH2 fold 0", "ISIC2017"): recorded_runs("ph2_fold0", "isic2017", results)}
    dsc, labels = transfer_matrix(cells)
    assert dsc.shape == (2, 2) and labels.loc["PH2 fold 0", "PH2"].endswith("(n=40)")
    assert dsc.loc["ISIC2017", "ISIC2017"] > dsc.loc["PH2 fold 0", "ISIC2017"]   # in-domain beats transfer
    spread = seed_spread(isic)
    assert list(spread.index) == ["×1", "×2", "×4", "×4 no bridge"]
    assert spread.loc["×4", "count"] == 5 and (spread["range"] >= 0).all()


def test_best_median_worst_picks_by_dsc():
    from ulvm.plots import best_median_worst

    picks = best_median_worst(["a", "b", "c", "d", "e"], [0.5, 0.9, 0.1, 0.7, 0.3])
    assert picks == {"best": ("b", 0.9), "median": ("a", 0.5), "worst": ("c", 0.1)}


def test_the_papers_numbers_live_in_their_own_module():
    import ulvm.plots
    from ulvm.paper import pvm_dsc_range

    assert not hasattr(ulvm.plots, "PAPER_PVM_SETTINGS")      # one home for the paper's numbers
    assert pvm_dsc_range() == pytest.approx(0.9091 - 0.9069)
