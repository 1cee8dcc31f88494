"""ONNX export of the whole network (scan backend "chunked"), ONNX Runtime parity, a fresh-process load with no
ulvm import, INT8 quantisation. Skipped where onnx / onnxruntime are not installed (the `export` extra)."""
import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ulvm.errors import UlvmError

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from ulvm.deploy import export, package  # noqa: E402
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
    cpp = ["torch eager cpp"] if package.fastest_cpu_backend() == "cpp" else []     # where the operator builds
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
    compiled = package.compile_for_cpu(model, x)
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), rtol=1e-5, atol=1e-6)


# --- issue 30: a .pt2 package is code; an export never replaces a file of the user's ----------------------


def test_a_pt2_package_this_user_did_not_build_is_not_loaded_unless_trusted(tmp_path, capsys):
    """A package runs its shared library when loaded: one from elsewhere is refused before anything of it
    is read, named, with the way to trust it; trusting it records its digest."""
    import json

    from PIL import Image

    from ulvm.cli import main
    from ulvm.deploy.package import load_pt2
    from ulvm.deploy.trust import trust_file

    evil = tmp_path / "evil.pt2"
    evil.write_bytes(b"PK\x03\x04 a package from someone else")
    with pytest.raises(UlvmError, match=r"evil.pt2: not loaded: a .pt2 package is compiled code .*--trust-package"):
        load_pt2(evil)
    Image.new("RGB", (64, 64)).save(tmp_path / "photo.png")
    assert main(["predict", str(tmp_path / "photo.png"), "--weights", str(evil), "--out", str(tmp_path / "out")]) == 2
    assert "not loaded: a .pt2 package is compiled code" in capsys.readouterr().err
    with pytest.raises(UlvmError, match="evil.pt2: not a readable .pt2 package"):    # trusted: read further
        load_pt2(evil, trust=True)
    assert str(evil.resolve()) in json.loads(trust_file().read_text())["packages"].values()
    with pytest.raises(UlvmError, match="not a readable .pt2 package"):                 # now in the list
        load_pt2(evil)
    evil.write_bytes(b"PK\x03\x04 the same package, its library swapped")
    with pytest.raises(UlvmError, match="not loaded: a .pt2 package is compiled code"):
        load_pt2(evil)


def test_the_trust_list_follows_xdg_cache_home(tmp_path, monkeypatch):
    from ulvm.deploy.trust import trust_file

    monkeypatch.delenv("ULVM_TRUSTED_PACKAGES")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert trust_file() == tmp_path / "ulvm" / "trusted_packages.json"


def test_a_package_that_fails_to_load_leaves_no_extracted_folder(tmp_path, monkeypatch):
    import os
    import tempfile

    import torch

    from ulvm.deploy.package import _load_package

    made = []

    def extract_then_fail(path):            # as AOTInductor's loader: extract into the temporary folder, then fail
        made.append(Path(tempfile.mkdtemp()))
        (made[-1] / "model.so").write_bytes(b"swapped")
        raise RuntimeError("dlopen failed")

    monkeypatch.setattr(torch._inductor, "aoti_load_package", extract_then_fail)
    tmpdir = os.environ.get("TMPDIR")
    with pytest.raises(UlvmError, match=r"x.pt2: cannot load this .pt2 package \(RuntimeError: dlopen failed\)"):
        _load_package(tmp_path / "x.pt2")
    assert made and not made[0].exists() and not made[0].parent.exists()
    assert os.environ.get("TMPDIR") == tmpdir and tempfile.gettempdir() != str(made[0].parent)


@pytest.mark.parametrize("flags, message", [
    (["--out", "{tmp}"], "is a folder; give the file name to export to"),
    (["--out", "{tmp}/notes.txt"], "notes.txt: exists and is not a file ulvm export wrote: not replaced"),
    (["--out", "{tmp}/m.onnx", "--size", "100"], "--size 100: must be a positive multiple of 32"),
    (["--out", "{tmp}/m.onnx", "--size", "0"], "--size 0: must be"),
    (["--out", "{tmp}/m.onnx", "--size", "-32"], "--size -32: must be"),
    (["--out", "{tmp}/m.onnx", "--evaluate", "{tmp}/nowhere"], "nowhere: not a prepared dataset"),
    (["--out", "{tmp}/m.onnx", "--evaluate", "{tmp}", "--report", "{tmp}"], "is a folder; give a file name")])
def test_export_refuses_what_it_cannot_do_before_writing_anything(tmp_path, capsys, flags, message):
    from ulvm.cli import main

    (tmp_path / "notes.txt").write_text("my notes")
    assert main(["export", *[flag.format(tmp=tmp_path) for flag in flags]]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert (tmp_path / "notes.txt").read_text() == "my notes"


def test_export_defaults_to_the_weights_size_and_replaces_only_its_own_exports(tmp_path):
    import onnx

    from ulvm.cli import main
    from ulvm.config import Config
    from ulvm.engine.checkpoint import save_checkpoint
    from ulvm.registry import build_model

    config = Config(input_size=64)
    save_checkpoint(tmp_path / "w.pt", model=build_model(config).state_dict(), config=config.to_dict())
    out = tmp_path / "m.onnx"
    assert main(["export", "--weights", str(tmp_path / "w.pt"), "--out", str(out)]) == 0
    assert onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim[-1].dim_value == 64
    assert main(["export", "--weights", str(tmp_path / "w.pt"), "--out", str(out), "--size", "32"]) == 0  # ours
