"""The book's figures (`ulvm.report.plots`): drawing only, from the results room's tables."""
import pytest


def test_seed_strip_plot_draws_one_dot_per_seed_and_the_papers_stars():
    from conftest import REPO

    from ulvm.report.book import recorded_runs
    from ulvm.report.plots import seed_strip_plot

    isic = recorded_runs("isic2017", "isic2017", REPO / "book" / "results")
    fig = seed_strip_plot(isic, "ISIC2017", paper={"×1": 0.9069, "×2": 0.9073, "×4": 0.9091})
    ax = fig.axes[0]
    dots = [line for line in ax.lines if line.get_marker() == "o"]
    assert sum(len(line.get_xdata()) for line in dots) == len(isic) == 14
    assert [t.get_text() for t in ax.get_xticklabels()] == ["×1", "×2", "×4", "×4 no bridge"]
    assert sum(line.get_marker() == "*" for line in ax.lines) == 3
    plt_close(fig)


def test_params_vs_dsc_figure_draws_one_point_per_recorded_model():
    from test_results import _recorded_comparison

    from ulvm.report.plots import params_vs_dsc_figure
    from ulvm.report.results import seed_means

    recorded = _recorded_comparison()
    fig = params_vs_dsc_figure({"ultralight": 49_457, "malunet": 175_000, "vmunet": 27e6}, recorded)
    assert len(fig.axes) == 2 and all(ax.get_xscale() == "log" for ax in fig.axes)
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts == ["UltraLight VM-UNet ×4 (5)", "MALUNet (3)"]       # VM-UNet has no test records
    assert not fig.axes[0].texts                                        # no label beside a point
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


def test_throughput_table_keeps_measured_rows_and_counts_gpus():
    from ulvm.report.plots import throughput_figure
    from ulvm.report.results import throughput_table
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
    import pandas as pd

    from ulvm.report.plots import throughput_figure

    table = pd.DataFrame({"record": "r", "MPS": "on", "K": [1, 2, 4, 8, 14, 16, 24, 32],
                          "images / s": [1000, 1900, 3500, 5000, 5600, 5800, 6000, 6100]})
    labels = [tick.get_text() for tick in throughput_figure(table).axes[0].get_xticklabels()]
    assert labels == ["1", "2", "4", "8", "14", "", "24", "32"]   # 16 sits too close to 14 on a log axis
