"""The width study: the channel multiplier, its rounding rule, the config field, the grid axis and the cost."""
from pathlib import Path

import pytest

from ulvm.complexity import count_params, width_table
from ulvm.config import Config
from ulvm.errors import UlvmError
from ulvm.model import PAPER_CHANNELS, UltraLightVMUNet, scale_channels
from ulvm.registry import build_model
from ulvm.sweeps.grid import load_grid, parse_grid

GRIDS = Path(__file__).resolve().parents[1] / "book" / "grids"


@pytest.mark.parametrize("width, channels", [
    (0.125, (4, 4, 4, 4, 8, 8)),          # 1, 2, 3, 4, 6, 8: up to 4 at least, 6 -> 8 (a half rounds up)
    (0.25, (4, 4, 8, 8, 12, 16)),         # 2, 4, 6, 8, 12, 16
    (0.5, (4, 8, 12, 16, 24, 32)),
    (1.0, PAPER_CHANNELS),
    (2.0, (16, 32, 48, 64, 96, 128)),
    (0.3, (4, 4, 8, 8, 16, 20)),          # 2.4, 4.8, 7.2, 9.6, 14.4, 19.2
])
def test_stage_widths_round_to_multiples_of_four_so_every_split_divides(width, channels):
    scaled = scale_channels(PAPER_CHANNELS, width)
    assert scaled == channels
    assert all(c % 4 == 0 and c >= 4 for c in scaled)
    for parallel in (1, 2, 4):                       # builds: every PVM split and GroupNorm(4) divides
        UltraLightVMUNet(parallel=parallel, width=width, backend="parallel")


def test_width_is_part_of_the_config_and_round_trips_through_yaml(tmp_path):
    config = Config.profile("quick", width=0.125)
    path = tmp_path / "config.yaml"
    config.to_yaml(path)
    again = Config.from_yaml(path)
    assert again == config and again.width == 0.125 and again != Config.profile("quick")
    assert Config.profile("quick", width=2).width == 2.0 and isinstance(Config(width=2).width, float)
    for bad in (0, -0.5, 17):
        with pytest.raises(UlvmError, match=f"width={float(bad)} must be > 0"):
            Config(width=bad)


def test_an_old_config_without_width_loads_as_the_paper_width():
    old = {key: value for key, value in Config().to_dict().items() if key != "width"}
    assert Config.from_dict(old).width == 1.0 and Config.from_dict(old) == Config()


def test_the_shipped_model_loads_unchanged():
    from ulvm.deploy.pretrained import load_pretrained

    model = load_pretrained("isic2017")
    assert count_params(model) == 49_457 and model.config.width == 1.0


def test_params_per_width_grow_with_the_width_and_width_one_is_the_paper_model():
    rows = {(row["width"], row["parallel"]): row for row in width_table((0.25, 0.5, 1.0), input_size=64)}
    assert rows[1.0, 4]["params"] == 49_457 and rows[1.0, 1]["params"] == 136_269
    assert rows[0.25, 4]["params"] < rows[0.5, 4]["params"] < rows[1.0, 4]["params"]
    assert all(rows[w, 4]["params"] < rows[w, 1]["params"] for w in (0.25, 0.5, 1.0))
    assert rows[0.5, 4]["channels"] == [4, 8, 12, 16, 24, 32]
    assert count_params(build_model(Config(width=0.5))) == rows[0.5, 4]["params"]


def test_the_grid_crosses_widths_and_passes_the_width_to_train(tmp_path):
    grid = load_grid(GRIDS / "width.yaml")
    names = [job.name for job in grid.jobs]
    assert len(names) == len(set(names)) == 24 and grid.test_sets() == ["isic2017", "ph2"]
    assert names[:6] == [f"w0.125_p{p}_b1_s{s}" for p in (1, 4) for s in (42, 43, 44)]
    assert {job.config.width for job in grid.jobs} == {0.125, 0.25, 0.5, 2.0}
    command = grid.jobs[0].command(grid.data, tmp_path)
    assert command[command.index("--set") + 1] == "width=0.125" and "--profile" in command
    plain = parse_grid({"name": "g", "data": "d", "width": [1, 0.5]})
    assert [job.name for job in plain.jobs] == ["p4_b1_s42", "w0.5_p4_b1_s42"]          # width 1 keeps its name
    assert "--set" not in plain.jobs[0].command(plain.data, tmp_path)
    with pytest.raises(UlvmError, match="'width' value 0 is not a channel multiplier"):
        parse_grid({"name": "g", "data": "d", "width": [0]})


def test_width_records_summary_and_the_rule(tmp_path):
    """The chapter's reading of the records: width 1 from the ISIC2017 grid, the rule only once all is recorded."""
    import json

    import pandas as pd

    from ulvm.report.width import smallest_width_within_spread, width_runs, width_summary

    def record(folder, name, dsc, **config):
        path = tmp_path / folder / "test_isic2017" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        config = {"profile_name": "paper", "bridge": True, "parallel": 4, **config}
        path.write_text(json.dumps({"config": config, "pooled": {"dsc": dsc}}))

    for seed, dsc in zip((42, 43, 44, 45), (0.900, 0.902, 0.904, 0.95)):       # seed 45: not in the width study
        record("isic2017", f"p4_b1_s{seed}", dsc, seed=seed)                   # an old record: no width field
    record("isic2017", "p4_b0_s42", 0.99, seed=42, bridge=False)               # not a width-study configuration
    widths = {0.25: (0.890, 0.891, 0.892), 0.5: (0.901, 0.899, 0.903)}
    for width, values in widths.items():
        for seed, dsc in zip((42, 43, 44), values):
            record("width", f"w{width:g}_p4_b1_s{seed}", dsc, seed=seed, width=width)
    runs = width_runs(tmp_path)
    assert len(runs) == 9 and set(runs["width"]) == {0.25, 0.5, 1.0} and 45 not in set(runs["seed"])
    costs = pd.DataFrame(width_table((0.25, 0.5, 1.0), settings=(4,), input_size=32))
    summary = width_summary(runs, costs).set_index("width")
    assert summary.loc[1.0, "params"] == 49_457 and summary.loc[0.5, "runs"] == 3
    assert abs(summary.loc[1.0, "mean"] - 0.902) < 1e-9 and summary.loc[1.0, "low"] == 0.900
    rule = smallest_width_within_spread(runs, widths=(0.25, 0.5, 1.0))
    assert rule["width"] == 0.5 and rule["reference_low"] == 0.900          # 0.901 >= 0.900 > 0.891
    assert smallest_width_within_spread(runs) is None                       # widths 1/8 and 2 not recorded yet
    assert width_runs(tmp_path / "nothing").empty
