"""Result tables shared by the notebooks (`ulvm.report.plots`)."""
import numpy as np
import pandas as pd
import pytest

from ulvm.report.plots import paired_comparison


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

    from ulvm.report.plots import load_recorded_runs, summary_table

    recorded = load_recorded_runs(REPO / "book" / "results" / "ph2_cv" / "test_ph2")
    table = summary_table(recorded)
    assert list(table.index) == ["×1", "×2", "×4", "×4 no bridge"]
    assert table["runs"].sum() == len(recorded)


def test_table1_puts_ours_beside_the_papers_numbers():
    from conftest import REPO

    from ulvm.paper import PAPER_RESULTS
    from ulvm.report.book import recorded_runs
    from ulvm.report.plots import seed_statistics, table1

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
    from ulvm.report.plots import seed_spread, transfer_matrix

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
    from ulvm.report.plots import best_median_worst

    picks = best_median_worst(["a", "b", "c", "d", "e"], [0.5, 0.9, 0.1, 0.7, 0.3])
    assert picks == {"best": ("b", 0.9), "median": ("a", 0.5), "worst": ("c", 0.1)}


def test_the_papers_numbers_live_in_their_own_module():
    import ulvm.report.plots
    from ulvm.paper import pvm_dsc_range

    assert not hasattr(ulvm.report.plots, "PAPER_PVM_SETTINGS")      # one home for the paper's numbers
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
    from ulvm.report.plots import MODEL_LABELS, model_comparison_table

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
    from ulvm.report.plots import paired_table

    recorded = _recorded_comparison()
    table = paired_table(recorded, "×4", ["malunet", "unet", "vmunet"])
    assert len(table) == 4                                          # no vmunet records: no row
    assert set(table["images"]) == {600, 200}
    assert (table["seeds"] == "42, 43, 44").all()                   # ×4's seeds 45 and 46 have no partner
    assert (table["Bonferroni p"] == (4 * table["Wilcoxon p"]).clip(upper=1)).all()
    row = table.set_index(["dataset", "model"]).loc[("ISIC2017", "malunet")]
    assert row["difference"] == pytest.approx(row["mean DSC ×4"] - row["mean DSC model"])


def test_params_vs_dsc_figure_draws_one_point_per_recorded_model():
    from ulvm.report.plots import params_vs_dsc_figure, seed_means

    recorded = _recorded_comparison()
    fig = params_vs_dsc_figure({"ultralight": 49_457, "malunet": 175_000, "vmunet": 27e6}, recorded)
    assert len(fig.axes) == 2 and all(ax.get_xscale() == "log" for ax in fig.axes)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["UltraLight VM-UNet ×4 (5)", "MALUNet (3)"]       # VM-UNet has no test records
    means = seed_means(recorded["ISIC2017"])
    assert means.loc["×4", "count"] == 5 and means.loc["malunet", "mean"] > 0.8
    plt_close(fig)


def test_plot_validation_curves_one_legend_entry_per_model():
    import matplotlib.pyplot as plt

    from ulvm.report.plots import plot_validation_curves

    fig, ax = plt.subplots()
    plot_validation_curves({"ours": [[0.5, 0.6], [0.55, 0.7]], "other": [[0.4, 0.8, 0.9]]}, ax, highlight="ours")
    assert [t.get_text() for t in ax.legend().get_texts()] == ["ours", "other"]
    assert len(ax.lines) == 3 and ax.lines[0].get_color() == "black"
    plt_close(fig)


def plt_close(fig):
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_paired_per_image_averages_shared_seeds_and_paired_table_reports_the_share_of_wins():
    from ulvm.report.plots import paired_per_image, paired_table

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


def test_throughput_table_keeps_measured_rows_and_counts_gpus():
    from ulvm.report.plots import throughput_figure, throughput_table
    from ulvm.sweeps.throughput import grid_minutes

    record = {"gpus": [0, 1], "code_version": "abc1234", "rows": [
        {"mps": "off", "k": 1, "images_per_s": 100.0, "epochs_per_min": 4.8, "mean_epoch_s": 12.5, "speedup": 1.0},
        {"mps": "off", "k": 4, "images_per_s": 300.0, "epochs_per_min": 14.4, "mean_epoch_s": 16.7, "speedup": 3.0},
        {"mps": "on", "unavailable": "nvidia-cuda-mps-control not found"}]}
    table = throughput_table({"two": record, "one": {**record, "gpus": []}})
    assert len(table) == 4 and set(table["MPS"]) == {"off"}            # the unavailable mode has no row
    assert table.loc[table["record"] == "two", "runs per GPU"].tolist() == [0.5, 2.0]
    assert table.loc[table["record"] == "one", "GPUs"].tolist() == [1, 1]
    assert set(table["runs per process"]) == {1}                        # records from before --together
    fig = throughput_figure(table, goal=6)
    assert len(fig.axes[0].lines) == 4                                  # two curves, two goal lines
    assert grid_minutes(14.4, runs=14, epochs=250) == pytest.approx(14 * 250 / 14.4)


def test_throughput_figure_does_not_merge_neighbouring_tick_labels():
    from ulvm.report.plots import throughput_figure

    table = pd.DataFrame({"record": "r", "MPS": "on", "K": [1, 2, 4, 8, 14, 16, 24, 32],
                          "images / s": [1000, 1900, 3500, 5000, 5600, 5800, 6000, 6100]})
    labels = [tick.get_text() for tick in throughput_figure(table).axes[0].get_xticklabels()]
    assert labels == ["1", "2", "4", "8", "14", "", "24", "32"]   # 16 sits too close to 14 on a log axis
