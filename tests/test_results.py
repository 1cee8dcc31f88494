"""The results room (`ulvm.report.results`): records as tables, seed-level statistics, verdicts of a fresh
build against the book's record, and the claims scorecard."""
import numpy as np
import pandas as pd
import pytest
from conftest import REPO

from ulvm.report.results import paired_comparison

RESULTS = REPO / "book" / "results"


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

    from ulvm.report.results import load_recorded_runs, summary_table

    recorded = load_recorded_runs(REPO / "book" / "results" / "ph2_cv" / "test_ph2")
    table = summary_table(recorded)
    assert list(table.index) == ["×1", "×2", "×4", "×4 no bridge"]
    assert table["runs"].sum() == len(recorded)


def test_table1_puts_ours_beside_the_papers_numbers():
    from conftest import REPO

    from ulvm.paper import PAPER_RESULTS
    from ulvm.report.book import recorded_runs
    from ulvm.report.results import seed_statistics, table1

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

    from ulvm.report.book import recorded_runs
    from ulvm.report.results import seed_spread, transfer_matrix

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
    from ulvm.report.results import best_median_worst

    picks = best_median_worst(["a", "b", "c", "d", "e"], [0.5, 0.9, 0.1, 0.7, 0.3])
    assert picks == {"best": ("b", 0.9), "median": ("a", 0.5), "worst": ("c", 0.1)}


def test_the_papers_numbers_live_in_their_own_module():
    import ulvm.report.plots
    import ulvm.report.results
    from ulvm.paper import pvm_dsc_range

    for room in (ulvm.report.plots, ulvm.report.results):                # one home for the paper's numbers
        assert not hasattr(room, "PAPER_PVM_SETTINGS")
    assert pvm_dsc_range() == pytest.approx(0.9091 - 0.9069)


def _recorded_comparison():
    """The comparison chapter's records: ×4 (5 seeds) and the four finished baselines (3 seeds), per test set."""
    from conftest import REPO

    from ulvm.report.book import recorded_runs

    results = REPO / "book" / "results"
    recorded = {}
    for name, tested in (("ISIC2017", "isic2017"), ("PH2", "ph2")):
        ours = recorded_runs("isic2017", tested, results)
        recorded[name] = pd.concat([ours[ours["configuration"] == "×4"], recorded_runs("baselines", tested, results)])
    return recorded


def test_paired_comparison_refuses_runs_tested_on_different_images():
    from ulvm.errors import UlvmError

    runs = pd.DataFrame([{"configuration": name, "seed": 1, "fold": None, "per-image DSC": [0.9, 0.8],
                          "per-image ids": ids} for name, ids in (("a", ["x", "y"]), ("b", ["y", "x"]))])
    with pytest.raises(UlvmError, match="not tested on the same images"):
        paired_comparison(runs, "a", "b")


def test_model_comparison_table_puts_cost_and_both_test_sets_side_by_side():
    from ulvm.report.results import MODEL_LABELS, model_comparison_table

    recorded = _recorded_comparison()
    costs = pd.DataFrame({"params": [49_457, 1_000, 2_000]}, index=["ultralight", "malunet", "vmunet"])
    table = model_comparison_table(costs, recorded)
    assert list(table.index) == [MODEL_LABELS[m] for m in costs.index]
    assert table[("cost", "params")].tolist() == [49_457, 1_000, 2_000]
    x4 = recorded["ISIC2017"].query("configuration == '×4'")["DSC"]
    assert table.loc["UltraLight VM-UNet ×4", ("ISIC2017", "DSC")] == f"{x4.mean():.4f} ± {x4.std():.4f}"
    assert table.loc["UltraLight VM-UNet ×4", ("ISIC2017", "runs")] == 5
    assert table.loc["MALUNet", ("PH2", "runs")] == 3
    assert table.loc["VM-UNet", ("PH2", "SE")] == "not trained"     # no records: said, not invented
    assert {top for top, _ in table.columns} == {"cost", "ISIC2017", "PH2"}


def test_paired_table_pairs_each_model_on_shared_seeds_and_corrects_for_the_number_of_tests():
    from ulvm.report.results import paired_table

    recorded = _recorded_comparison()
    table = paired_table(recorded, "×4", ["malunet", "unet", "vmunet"])
    assert len(table) == 4                                          # no vmunet records: no row
    assert set(table["images"]) == {600, 200}
    assert (table["seeds"] == "42, 43, 44").all()                   # ×4's seeds 45 and 46 have no partner
    assert (table["Bonferroni p"] == (4 * table["Wilcoxon p"]).clip(upper=1)).all()
    row = table.set_index(["dataset", "model"]).loc[("ISIC2017", "malunet")]
    assert row["difference"] == pytest.approx(row["mean DSC ×4"] - row["mean DSC model"])


def test_paired_per_image_averages_shared_seeds_and_paired_table_reports_the_share_of_wins():
    from ulvm.report.results import paired_per_image, paired_table

    runs = pd.DataFrame([{"configuration": name, "seed": seed, "fold": None, "per-image DSC": dsc,
                          "per-image ids": ["i", "j", "k"]}
                         for name, seed, dsc in (("a", 1, [0.9, 0.5, 0.7]), ("a", 2, [0.7, 0.5, 0.9]),
                                                 ("a", 3, [0.0, 0.0, 0.0]),          # no partner: left out
                                                 ("b", 1, [0.7, 0.6, 0.7]), ("b", 2, [0.7, 0.6, 0.7]))])
    a, b = paired_per_image(runs, "a", "b")
    assert a.tolist() == pytest.approx([0.8, 0.5, 0.8]) and b.tolist() == pytest.approx([0.7, 0.6, 0.7])
    assert paired_per_image(runs, "a", "c")[0].size == 0
    row = paired_table({"set": runs}, "a", ["b"]).iloc[0]
    assert row["a better on"] == pytest.approx(2 / 3) and row["median difference"] == pytest.approx(0.1)
    assert row["seeds"] == "1, 2" and row["images"] == 3



# ---- the trained model (seed) as the unit ---------------------------------------------------------------


def _runs(groups: dict[str, np.ndarray]) -> pd.DataFrame:
    """A runs table from configuration -> (seeds, images) per-image DSC; pooled DSC = the per-image mean."""
    return pd.DataFrame([{"configuration": name, "seed": seed, "fold": None, "DSC": float(row.mean()),
                          "per-image DSC": list(row), "per-image ids": [f"i{k}" for k in range(len(row))]}
                         for name, matrix in groups.items() for seed, row in enumerate(matrix)])


def _draw(rng, seeds, images=200, shift=0.0, seed_sd=0.004, image_sd=0.08):
    """Per-image DSC of `seeds` trained models on the same images: image difficulty + a per-seed offset."""
    difficulty = np.random.default_rng(99).normal(0.88, image_sd, images)   # the same images for everyone
    return difficulty + shift + rng.normal(0, seed_sd, (seeds, 1)) + rng.normal(0, 0.01, (seeds, images))


def test_welch_identical_groups_contain_zero_and_a_shift_is_detected():
    from ulvm.report.results import welch_test

    same = welch_test([0.90, 0.901, 0.899], [0.90, 0.901, 0.899])
    assert same["difference"] == 0 and same["low"] < 0 < same["high"] and same["p"] == pytest.approx(1)
    shifted = welch_test([0.91, 0.912, 0.909, 0.911], [0.90, 0.901, 0.899])
    assert shifted["p"] < 0.01 and shifted["low"] > 0
    assert np.isnan(welch_test([0.9], [0.9, 0.91])["p"])                  # one run: no spread to test with
    # the book's records: ×1 against ×4 on ISIC2017 (3 and 5 seeds) is not a detectable difference
    from ulvm.report.book import recorded_runs
    from ulvm.report.results import per_seed

    isic = recorded_runs("isic2017", "isic2017", RESULTS)
    assert welch_test(per_seed(isic, "×1"), per_seed(isic, "×4"))["p"] > 0.05


def test_hierarchical_bootstrap_is_wider_than_images_only_when_seeds_vary():
    from ulvm.report.results import hierarchical_bootstrap

    rng = np.random.default_rng(0)
    a, b = _draw(rng, 3, seed_sd=0.006), _draw(rng, 3, seed_sd=0.006)
    both = hierarchical_bootstrap(a, b)
    images_only = hierarchical_bootstrap(a, b, resample_seeds=False)
    assert both["high"] - both["low"] > 1.3 * (images_only["high"] - images_only["low"])
    same = hierarchical_bootstrap(a, a)
    assert same["low"] <= 0 <= same["high"]
    shifted = hierarchical_bootstrap(_draw(rng, 5, shift=0.03), _draw(rng, 5))
    assert shifted["low"] > 0
    from ulvm.errors import UlvmError

    with pytest.raises(UlvmError, match="same images"):
        hierarchical_bootstrap(a, b[:, :10])


def test_seed_level_table_calls_a_difference_only_when_both_tests_find_it():
    from ulvm.report.results import seed_level_table

    rng = np.random.default_rng(1)
    runs = _runs({"ours": _draw(rng, 5), "same": _draw(rng, 3), "worse": _draw(rng, 3, shift=-0.04)})
    table = seed_level_table({"set": runs}, "ours", ["same", "worse"]).set_index("other")
    assert table.loc["same", "verdict"] == "no evidence of a difference"
    assert table.loc["worse", "verdict"] == "ours better" and table.loc["worse", "found by"] == "both"
    means = runs.groupby("configuration")["DSC"].mean()
    assert table.loc["worse", "difference (points)"] == pytest.approx(100 * (means["ours"] - means["worse"]))
    assert (table["Bonferroni p"] == (2 * table["Welch p"]).clip(upper=1)).all()


def test_seed_level_verdicts_of_the_books_records():
    """The claims chapters 07, 08 and 10 make: no configuration and no baseline differs from ×4 at the
    seed level on either test set."""
    from ulvm.report.book import recorded_runs
    from ulvm.report.results import seed_level_table

    recorded = {"ISIC2017": recorded_runs("isic2017", "isic2017", RESULTS),
                "PH2": recorded_runs("isic2017", "ph2", RESULTS)}
    ablation = seed_level_table(recorded, "×4", ["×1", "×2", "×4 no bridge"])
    assert len(ablation) == 6 and set(ablation["verdict"]) == {"no evidence of a difference"}
    comparison = seed_level_table(_recorded_comparison(), "×4", ["egeunet", "malunet", "unext_s", "unet"])
    assert len(comparison) == 8 and set(comparison["verdict"]) == {"no evidence of a difference"}


# ---- this build beside the book's record ------------------------------------------------------------


def test_consistency_rule_over_seeds_and_for_a_single_run():
    from ulvm.report.results import consistency

    record = [0.8984, 0.9003, 0.8999, 0.9007, 0.9002]
    assert consistency(record, record)["consistent"]
    assert consistency(record, [0.9000, 0.8990, 0.9010])["consistent"]
    assert not consistency(record, [0.880, 0.881, 0.879])["consistent"]      # 2 points lower: flagged
    single = consistency(record, [0.9091])                                    # the paper's one run
    assert single["consistent"] is False and single["low"] > 0
    assert consistency(record, [0.8995])["consistent"]
    assert consistency([0.9], [0.9])["consistent"] is None                    # no spread in the record
    assert consistency(record, [0.9040], tests=8)["level"] == pytest.approx(1 - 0.05 / 8)


def test_this_build_table_flags_inconsistent_rows_and_says_what_is_not_comparable():
    from ulvm.report.book import recorded_runs
    from ulvm.report.results import this_build_table

    book = recorded_runs("isic2017", "isic2017", RESULTS)
    fresh = book.copy()
    fresh.loc[fresh["configuration"] == "×2", "DSC"] -= 0.03                   # one configuration went wrong
    fresh = fresh[fresh["configuration"] != "×1"]                              # and one was not run
    table = this_build_table({"ISIC2017": (book, fresh)}).set_index("configuration")
    assert table.loc["×4", "verdict"] == "✓ consistent" and table.loc["×2", "verdict"] == "✗ inconsistent"
    assert table.loc["×1", "verdict"] == "not run"
    assert table.loc["×2", "difference (points)"] == pytest.approx(-3.0)
    quick = fresh.assign(profile="quick", **{"data hash": "synthetic"})
    quick_table = this_build_table({"ISIC2017": (book, quick)})
    assert quick_table["verdict"].str.startswith("not comparable: profile quick").sum() == 3
    assert quick_table["difference (points)"].isna().all()       # not judged, not compared


# ---- the paper's claims ---------------------------------------------------------------------------------


def test_the_papers_own_numbers_checked_for_consistency():
    from ulvm.paper import PAPER_RESULTS
    from ulvm.report.results import dsc_from_precision_recall, implied_by_acc_se_sp

    assert dsc_from_precision_recall(0.9481, 0.9053) == pytest.approx(0.9262, abs=1e-4)
    for dataset in ("ISIC2017", "PH2"):
        row = PAPER_RESULTS[dataset]
        implied = implied_by_acc_se_sp(row["acc"], row["se"], row["sp"])
        assert implied["DSC"] == pytest.approx(row["dsc"], abs=1e-3)          # the paper's rows add up


def test_scorecard_from_the_records():
    from ulvm.complexity import pvm_settings_table
    from ulvm.report.book import recorded_runs
    from ulvm.report.results import scorecard, seed_level_table

    isic, ph2 = (recorded_runs("isic2017", tested, RESULTS) for tested in ("isic2017", "ph2"))
    recorded = {"ISIC2017": isic, "PH2": ph2}
    card = scorecard(pvm_settings_table(), isic, ph2, seed_level_table(recorded, "×4", ["×1", "×4 no bridge"]),
                     seed_level_table(_recorded_comparison(), "×4", ["malunet", "unet"]), bridge_params=16_614)
    verdicts = dict(zip(card["claim"], card["verdict"]))
    assert list(verdicts.values())[:4] == ["✓", "✓", "✗", "✗"]
    assert verdicts["outperforms the lightweight baselines"] == "–"
    assert card["ours"].iloc[0] == "136,269 / 69,589 / 49,457"
