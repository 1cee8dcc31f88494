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
