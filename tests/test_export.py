"""ONNX export of the whole network (scan backend "chunked"), ONNX Runtime parity, a fresh-process load with no
ulvm import, INT8 quantisation. Skipped where onnx / onnxruntime are not installed (the `export` extra)."""
import copy
import subprocess
import sys

import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from ulvm.deploy import export  # noqa: E402
from ulvm.model import UltraLightVMUNet  # noqa: E402

torch.set_num_threads(1)
SIZE = 96          # scan lengths 144, 36, 9: chunks that need padding, at every level


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = export.amplify_mamba_(UltraLightVMUNet(backend="parallel"))   # the scan shows in the output
    path = export.export_onnx(model, tmp_path_factory.mktemp("onnx") / "ulvm.onnx", size=SIZE)
    return model, path


def test_export_is_a_valid_onnx_file_and_leaves_the_model_alone(exported):
    model, path = exported
    onnx.checker.check_model(onnx.load(str(path)))
    assert all(m.mamba.backend == "parallel" for m in model.modules() if hasattr(m, "mamba"))
    assert not list(path.parent.glob(".*.tmp"))                      # written atomically, nothing left over


def test_onnx_runtime_matches_pytorch(exported):
    model, path = exported
    assert export.deployed_parity(model, path, n=2) <= export.MAX_PARITY_ERROR


def test_loads_in_a_fresh_process_without_ulvm(exported):
    _, path = exported
    script = (
        "import sys, numpy as np, onnxruntime as ort\n"
        f"s = ort.InferenceSession({str(path)!r}, providers=['CPUExecutionProvider'])\n"
        f"x = np.random.default_rng(0).uniform(0, 255, (2, 3, {SIZE}, {SIZE})).astype(np.float32)\n"
        "y = s.run(None, {'image': x})[0]\n"
        "assert 'ulvm' not in sys.modules and 'torch' not in sys.modules\n"
        f"assert y.shape == (2, 1, {SIZE}, {SIZE}) and ((y > 0) & (y < 1)).all(), y.shape\n"
        "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd="/", timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_int8_dynamic_quantisation_runs_and_stays_close(exported, tmp_path):
    _, path = exported
    int8 = export.quantize_int8(path, tmp_path / "int8.onnx", method="dynamic")
    diff = export.int8_difference(path, int8, n=1)
    assert diff["mean_abs_diff"] < 0.05 and diff["mask_disagreement"] < 0.05, diff
    from ulvm.io import current_umask
    assert int8.stat().st_mode & 0o777 == 0o666 & ~current_umask()     # written like every ulvm file
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_bad_quantisation_method_is_a_clear_error(exported, tmp_path):
    _, path = exported
    with pytest.raises(ValueError, match="method must be 'static' or 'dynamic'"):
        export.quantize_int8(path, tmp_path / "x.onnx", method="float4")
    assert not list(tmp_path.iterdir())


def test_cpu_benchmark_times_every_deployment_path_in_one_process(tmp_path):
    """The rows of `ulvm bench --onnx` (eager parallel / chunked, ONNX Runtime fp32 / INT8), each checked against
    eager parallel on the same input; `--compile` reaches the torch.compile row (not compiled here: minutes)."""
    torch.manual_seed(0)
    model = export.amplify_mamba_(UltraLightVMUNet(backend="parallel"))
    rows = export.cpu_benchmark(model, size=SIZE, repeats=1, warmup=0, threads=1, workdir=tmp_path,
                                progress=lambda line: None)
    by_path = {row["path"]: row for row in rows}
    cpp = ["torch eager cpp"] if export.fastest_cpu_backend() == "cpp" else []     # where the operator builds
    assert list(by_path) == ["torch eager parallel", "torch eager chunked", *cpp, "onnxruntime fp32",
                             "onnxruntime int8 static", "onnxruntime int8 dynamic"]
    for path in ("torch eager chunked", *cpp, "onnxruntime fp32"):
        assert by_path[path]["rel_error"] <= export.MAX_PARITY_ERROR, by_path[path]
    assert all(row["ms"] > 0 for row in rows)

    from ulvm.cli import build_parser
    args = build_parser().parse_args(["bench", "--device", "cpu", "--onnx", "--compile"])
    assert args.onnx and args.compile


def test_cpu_benchmark_compile_adds_the_compiled_row(tmp_path, monkeypatch):
    """`compile=True` times `compile_for_cpu`'s model beside eager (an uncompiled stand-in here: minutes saved)."""
    compiled = []

    def stand_in(model, example, backend):
        compiled.append(backend)
        return copy.deepcopy(model).set_backend(backend)

    monkeypatch.setattr(export, "compile_for_cpu", stand_in)
    monkeypatch.setattr(export, "fastest_cpu_backend", lambda: "chunked")      # as where "cpp" cannot be built
    torch.manual_seed(0)
    rows = export.cpu_benchmark(UltraLightVMUNet(backend="parallel"), size=32, repeats=1, warmup=0, threads=1,
                                workdir=tmp_path, compile=True, progress=lambda line: None)
    assert [row["path"] for row in rows][:3] == ["torch eager parallel", "torch eager chunked", "torch.compile chunked"]
    assert compiled == ["chunked"]


def test_compile_for_cpu_computes_what_the_model_computes():
    """Inductor with `CPU_INDUCTOR_OPTIONS` (C++ wrapper included) on a tiny network: ~30 s, not minutes."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.GELU()).eval()
    x = torch.rand(1, 3, 8, 8)
    compiled = export.compile_for_cpu(model, x)
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), rtol=1e-5, atol=1e-6)
