"""`--deterministic`: the deterministic forms of the code that adds with atomics on a GPU (checked here on the CPU
against the forms they replace), and `ulvm determinism`, which trains a config twice per mode and compares."""
import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")        # before the Triton kernels are first imported

from helpers import make_inputs, run_scan, write_tiny_prepared  # noqa: E402
from ulvm.cli import main  # noqa: E402
from ulvm.model.ultralight import bilinear_matrix  # noqa: E402
from ulvm.ssm import triton_scan  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("height,width", [(1, 1), (2, 3), (8, 8), (5, 16)])
def test_upsampling_as_two_matrix_products_is_the_official_bilinear_interpolation(height, width):
    x = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(height * width))
    expected = F.interpolate(x, scale_factor=(2, 2), mode="bilinear", align_corners=True)
    by_matrices = bilinear_matrix(height, 2 * height, x) @ x @ bilinear_matrix(width, 2 * width, x).T
    torch.testing.assert_close(by_matrices, expected, rtol=1e-6, atol=1e-6)


@pytest.fixture
def deterministic():
    saved = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(saved)


@pytest.mark.skipif(bool(triton_scan.why_unavailable()), reason=f"needs triton: {triton_scan.why_unavailable()}")
def test_the_triton_backward_summed_per_channel_equals_the_atomic_one(monkeypatch, request):
    if not torch.cuda.is_available():
        monkeypatch.setattr(triton_scan, "BLOCK_L", 32)          # several chunks, the last one partial
    inputs = make_inputs(2, 3, 80, seed=5)
    if torch.cuda.is_available():
        inputs = {name: tensor.cuda() for name, tensor in inputs.items()}
    y_atomic, atomic = run_scan("triton", inputs)
    request.getfixturevalue("deterministic")
    y_rows, per_row = run_scan("triton", inputs)
    again = run_scan("triton", inputs)[1]
    assert torch.equal(y_rows, y_atomic)
    for name in atomic:
        torch.testing.assert_close(per_row[name], atomic[name], rtol=1e-5, atol=1e-5, msg=f"grad of {name}")
        assert torch.equal(per_row[name], again[name]), name


def test_ulvm_determinism_trains_each_mode_twice_and_compares_the_weights(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    data = write_tiny_prepared(tmp_path / "tiny")
    out = tmp_path / "determinism.json"
    assert main(["determinism", "--data", str(data), "--out", str(out), "--runs", str(tmp_path / "runs"),
                 "--epochs", "2", "--profile", "quick", "--device", "cpu", "--threads", "1",
                 "--set", "input_size=32", "--set", "batch_size=4", "--set", "max_images=null"]) == 0
    record = json.loads(out.read_text())
    for mode in ("deterministic", "default"):                      # on a CPU both modes repeat exactly
        entry = record[mode]
        assert entry["identical"] and entry["largest_weight_difference"] == 0.0
        assert len(set(entry["weights_sha256"])) == 1 and [len(run) for run in entry["epoch_time_s"]] == [2, 2]
    assert record["deterministic_epoch_time_ratio"] > 0 and record["code_version"]
    assert "deterministic bit-identical weights: yes" in capsys.readouterr().out
