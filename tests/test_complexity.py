"""Complexity the paper's way (thop) and in full."""
import pytest

from ulvm.complexity import gflops, gflops_breakdown, pvm_settings_table, weight_file_kb
from ulvm.model import UltraLightVMUNet


def test_pvm_table_reproduces_the_papers_counts():
    rows = {row["setting"]: row for row in pvm_settings_table()}
    assert [rows[s]["params"] for s in ("x1", "x2", "x4")] == [136_269, 69_589, 49_457]
    for row in rows.values():
        assert round(row["gflops_thop"], 3) == 0.060                # the paper's 0.060 GFLOPs, all settings
        assert row["gflops_full"] > row["gflops_thop"]
    assert rows["x1"]["gflops_full"] > rows["x2"]["gflops_full"] > rows["x4"]["gflops_full"]
    # a float32 state dict: 4 bytes a parameter plus the container (paper: 229.1 KB for x4)
    assert 49_457 * 4 / 1024 < rows["x4"]["weight_kb"] < 250


def test_full_count_adds_mamba_work_the_fused_kernel_hides():
    parts = gflops_breakdown(UltraLightVMUNet())
    # what thop reports on an unfused Mamba (projections + conv) brings it to ~0.066
    assert parts["thop"] + parts["mamba_projections"] + parts["mamba_conv1d"] == pytest.approx(0.0666, abs=5e-4)
    assert parts["full"] == pytest.approx(sum(v for k, v in parts.items() if k != "full"))
    # scan: 9·B·L·D·N summed over the six PVM layers (4 chunks each, batch 1)
    tokens_x_inner = 4 * (1024 * 12 + 256 * 16 + 64 * 24 + 64 * 32 + 64 * 24 + 256 * 16)
    assert parts["mamba_scan"] == pytest.approx(9 * tokens_x_inner * 16 / 1e9)


def test_profiling_leaves_the_model_untouched_and_rejects_unknown_methods():
    model = UltraLightVMUNet()
    before = set(model.state_dict())
    gflops(model, method="full")
    assert set(model.state_dict()) == before                          # no thop buffers left behind
    assert weight_file_kb(model) > 0
    with pytest.raises(ValueError, match="method must be"):
        gflops(model, method="fvcore")
