"""Deploying UltraLight VM-UNet: ONNX export, ONNX Runtime sessions, INT8 quantisation, a CPU benchmark.

The selective scan is the one part of the network that does not export as is (in-place slice writes and a
custom autograd Function in "parallel", custom kernels in "triton"/"cuda"). `export_onnx` switches every
Mamba block of a copy of the model to the "chunked" backend (`ulvm.ssm.chunked_scan`: plain tensor ops),
and traces it with PyTorch's TorchScript-based exporter (`torch.onnx.export(..., dynamo=False)`): with a
fixed input size the Python loops of the scan unroll into an ordinary static graph. (The dynamo exporter,
torch 2.13's default, needs the extra package `onnxscript`; the TorchScript one needs nothing beyond onnx.)

The file's contract, usable with nothing but onnxruntime and NumPy:

    input  "image"  float32 (B, 3, H, W), RGB in the paper's 0..255 range (no normalisation), H = W = `size`
    output "prob"   float32 (B, 1, H, W), sigmoid probabilities; the mask is prob > 0.5

The batch dimension is dynamic; the spatial size is fixed at export (the scan is unrolled for L = H·W/64 ...).
Needs the `export` extra: `pip install "ulvm[export]"` (onnx, onnxruntime).

The .pt2 package compiled ahead of time for the CPU (`ulvm export --format pt2`) is `ulvm.deploy.package`;
`deployed_runner`, `deployed_parity`, `deployed_pooled_metrics` and `cpu_benchmark` take both forms.
"""
from __future__ import annotations

import copy
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..errors import UlvmError
from ..io import atomic_file, atomic_write_bytes
from ..runtime import interleaved_ms
from .package import (
    PT2_FORMAT,
    _cpu_copy,
    _images,
    compile_for_cpu,
    export_pt2,
    fastest_cpu_backend,
    load_pt2,
    pt2_metadata,
)

DEFAULT_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "image", "prob"
MAX_PARITY_ERROR = 1e-4          # ONNX Runtime vs PyTorch, fp32, max |Δ| / max |y|


def export_onnx(model: torch.nn.Module, path: str | os.PathLike, size: int = 256, opset: int | None = None) -> Path:
    """Write `model` (unchanged; a CPU fp32 copy is exported) as ONNX for (B, 3, size, size) inputs; returns the path.

    Written atomically: a reader never sees a half-written file.
    """
    export_model = _cpu_copy(model, "chunked")
    example = torch.rand(1, 3, size, size) * 255
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")   # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(export_model, (example,), buffer, dynamo=False, opset_version=opset or DEFAULT_OPSET,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                          do_constant_folding=True)
    return atomic_write_bytes(path, buffer.getvalue())


def ort_session(path: str | os.PathLike, threads: int = 2):
    """An ONNX Runtime CPU session with `threads` intra-op threads and every graph optimisation.

    Spinning is off: with spinning, an idle pool thread busy-waits for work, which on a small machine shared
    with other processes steals the core the other thread needs (2-3x slower per op on our 2-core box).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])



def _input_size(session) -> int:
    return int(session.get_inputs()[0].shape[-1])


def deployed_runner(path: str | os.PathLike, threads: int = 2):
    """A deployed file as a NumPy function of (B, 3, S, S) float32 images, and its S: a .pt2 package
    (`load_pt2`) or an ONNX file (an ONNX Runtime session with `threads` threads)."""
    if Path(path).suffix == ".pt2":
        package = load_pt2(path)

        def run(images: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return package(torch.from_numpy(images)).numpy()
        return run, package.config.input_size
    session = ort_session(path, threads)
    return (lambda images: session.run(None, {INPUT_NAME: images})[0]), _input_size(session)


def deployed_parity(model: torch.nn.Module, path: str | os.PathLike, n: int = 2, seed: int = 0,
                    backend: str = "parallel") -> float:
    """Max relative error of a deployed file (ONNX in ONNX Runtime, or .pt2) against PyTorch (`model` with
    `backend`, fp32) on n random images, one at a time.

    Relative error = max |y_file - y_torch| / max |y_torch| over all images. Target: <= MAX_PARITY_ERROR.
    """
    run, size = deployed_runner(path)
    reference = _cpu_copy(model, backend)
    x = _images(n, size, seed)
    with torch.no_grad():
        expected = reference(x).numpy()
    got = np.concatenate([run(image[None].numpy()) for image in x])
    return float(np.abs(got - expected).max() / np.abs(expected).max())


class _CalibrationReader:
    """onnxruntime.quantization's CalibrationDataReader protocol over a list of (1, 3, H, W) float32 arrays."""

    def __init__(self, images):
        self._images = iter(images)

    def get_next(self):
        image = next(self._images, None)
        return None if image is None else {INPUT_NAME: image}


def quantize_int8(fp32_path: str | os.PathLike, out_path: str | os.PathLike, calibration_images=None,
                  method: str = "static") -> Path:
    """INT8 model from the fp32 ONNX file; returns `out_path` (written atomically).

    method "static": weights AND activations in int8 (QDQ format, per-channel weights), the activation
        ranges calibrated on `calibration_images` ((N, 3, H, W) 0..255 floats: use real training images;
        None: 8 random images, fine to check the mechanics, not for accuracy);
    method "dynamic": int8 weights of MatMul/Gemm only, activations quantised on the fly per call.
    Which one to use is measured by `cpu_benchmark` (rows "onnxruntime int8 static/dynamic"; our timings are
    in book/results/bench/NOTES.md). On our CPU neither beat fp32: the network's work is elementwise (the
    unrolled scan, norms, activations), its matmuls and convs are tiny, so the added (de)quantisation costs
    more than int8 arithmetic saves. Deploy fp32 unless a measurement on the target says otherwise.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    if method not in ("static", "dynamic"):
        raise ValueError(f"method must be 'static' or 'dynamic', not {method!r}")
    if method == "static" and calibration_images is None:
        import onnx
        size = int(onnx.load(str(fp32_path)).graph.input[0].type.tensor_type.shape.dim[-1].dim_value)
        calibration_images = _images(8, size, seed=1)
    quiet = logging.getLogger().level   # the quantiser logs every tensor, and warns about each int64 shape tensor
    logging.getLogger().setLevel(logging.ERROR)    # it leaves unquantised (harmless), printing whole protos
    try:
        with atomic_file(out_path) as tmp:
            if method == "dynamic":
                quantize_dynamic(str(fp32_path), str(tmp), weight_type=QuantType.QInt8)
            else:
                images = [np.asarray(image, dtype=np.float32)[None] for image in calibration_images]
                quantize_static(str(fp32_path), str(tmp), _CalibrationReader(images), quant_format=QuantFormat.QDQ,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                                calibrate_method=CalibrationMethod.MinMax)
    finally:
        logging.getLogger().setLevel(quiet)
    return Path(out_path)


def int8_difference(fp32_path, int8_path, n: int = 4, seed: int = 0) -> dict:
    """How far the INT8 model's output is from the fp32 one on n random images: mean and max |Δprob|, and
    the fraction of pixels whose mask (prob > 0.5) differs. (A DSC change needs real images and weights.)"""
    fp32, int8 = ort_session(fp32_path), ort_session(int8_path)
    diffs, disagree = [], []
    for image in _images(n, _input_size(fp32), seed):
        feed = {INPUT_NAME: image[None].numpy()}
        a, b = fp32.run(None, feed)[0], int8.run(None, feed)[0]
        diffs.append(np.abs(a - b))
        disagree.append(((a > 0.5) != (b > 0.5)).mean())
    diffs = np.concatenate([d.ravel() for d in diffs])
    return {"mean_abs_diff": float(diffs.mean()), "max_abs_diff": float(diffs.max()),
            "mask_disagreement": float(np.mean(disagree))}


def amplify_mamba_(model: torch.nn.Module, factor: float = 300.0) -> torch.nn.Module:
    """Scale every Mamba block's out_proj by `factor`, in place; returns the model. For checks with untrained
    weights only: with the official init a Mamba branch's output is ~1e-4 of its input and the network output
    moves by ~1e-4 without it, so an error in the scan would not show in the network's output (fp32 rounds it
    away); amplified, it does."""
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "out_proj") and hasattr(module, "A_log"):
                module.out_proj.weight.mul_(factor)
    return model


def check_export_target(path: str | os.PathLike) -> Path:
    """`path` may be written by an export: a new file name, or a file an earlier export wrote (a .pt2 with our
    metadata, an ONNX file with our input and output names); never a folder or another file of the user's."""
    path = Path(path)
    if path.is_dir():
        raise UlvmError(f"{path}: is a folder; give the file name to export to (e.g. {path / 'ulvm.onnx'})")
    if path.exists() or path.is_symlink():
        try:
            if path.suffix == ".pt2":
                ours = pt2_metadata(path).get("format") == PT2_FORMAT
            else:
                import onnx
                graph = onnx.load(str(path), load_external_data=False).graph
                ours = ([i.name for i in graph.input], [o.name for o in graph.output]) == ([INPUT_NAME], [OUTPUT_NAME])
        except Exception:            # not ONNX, not a package, unreadable: not ours
            ours = False
        if path.is_symlink() or not ours:
            raise UlvmError(f"{path}: exists and is not a file ulvm export wrote: not replaced; choose another --out")
    return path

def cpu_benchmark(model: torch.nn.Module | None = None, size: int = 256, repeats: int = 20, warmup: int = 3,
                  threads: int = 2, workdir: str | os.PathLike | None = None, compile: bool = False,
                  progress=print) -> list[dict]:
    """Batch-1 CPU inference, side by side in ONE process: eager "parallel", eager "chunked", eager "cpp"
    (where it builds), (torch.compile with "chunked" and with "cpp", AOTInductor with "cpp"), ONNX Runtime
    fp32, INT8 static and INT8 dynamic. Returns one row a path: {"path", "ms" (median of `repeats` rounds
    after `warmup` calls), "rel_error" (vs eager "parallel", max |Δ| / max |y|)}. Every path is built first,
    then timed in rounds that visit each path once in a shuffled order (`ulvm.runtime.interleaved_ms`): our
    shared 2-core box changes speed by up to 25% within a minute, so paths timed one after the other would
    be timed at different speeds.

    torch uses `threads` threads (torch.set_num_threads, restored after), ONNX Runtime `threads` intra-op
    threads. `compile=True` (`ulvm bench --onnx --compile`) adds the torch.compile rows (`compile_for_cpu`)
    and AOTInductor with "cpp" (`export_pt2`: what `ulvm export --format pt2` writes): Inductor compiles the
    unrolled "chunked" scan in ~3 minutes on our 2 cores, hence off by default. ONNX and .pt2 files go to
    `workdir` (default: a temporary directory, removed after).
    """
    from ..model import UltraLightVMUNet

    if model is None:
        torch.manual_seed(0)
        model = amplify_mamba_(UltraLightVMUNet(backend="parallel"))   # random weights where the scan matters
    model = copy.deepcopy(model).cpu().float().eval()
    x = _images(1, size, seed=0)
    paths: dict[str, Callable[[], np.ndarray]] = {}
    rows: list[dict] = []
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)
    tmp = tempfile.TemporaryDirectory() if workdir is None else None
    directory = Path(tmp.name if tmp else workdir)
    try:
        with torch.no_grad():
            expected = model.set_backend("parallel")(x).numpy()

            def add(name, fn):
                paths[name] = fn
                rows.append({"path": name, "rel_error": float(np.abs(fn() - expected).max() / np.abs(expected).max())})
                progress(f"{name:<28} built, rel. error {rows[-1]['rel_error']:.1e}")

            add("torch eager parallel", lambda: model.set_backend("parallel")(x).numpy())
            backends = ["chunked"] + (["cpp"] if fastest_cpu_backend() == "cpp" else [])
            for backend in backends:
                eager = _cpu_copy(model, backend)
                add(f"torch eager {backend}", lambda m=eager: m(x).numpy())
            for backend in backends if compile else []:
                compiled = compile_for_cpu(model, x, backend)
                add(f"torch.compile {backend}", lambda m=compiled: m(x).numpy())
            if compile and "cpp" in backends:
                ahead = load_pt2(export_pt2(model, directory / "ulvm_cpp.pt2", size, "cpp"))
                add("AOTInductor cpp", lambda: ahead(x).numpy())
            fp32 = export_onnx(model, directory / "ulvm_fp32.onnx", size=size)
            feed = {INPUT_NAME: x.numpy()}
            session = ort_session(fp32, threads)
            add("onnxruntime fp32", lambda: session.run(None, feed)[0])
            for method in ("static", "dynamic"):
                int8 = quantize_int8(fp32, directory / f"ulvm_int8_{method}.onnx", method=method)
                session_int8 = ort_session(int8, threads)
                add(f"onnxruntime int8 {method}", lambda s=session_int8: s.run(None, feed)[0])
                rows[-1].update(int8_difference(fp32, int8, n=2))
            timed = interleaved_ms(paths, repeats, warmup)
        for row in rows:
            row["ms"] = timed[row["path"]]
            progress(f"{row['path']:<28} {row['ms']:8.2f} ms   rel. error {row['rel_error']:.1e}")
    finally:
        torch.set_num_threads(threads_before)
        if tmp:
            tmp.cleanup()
    return rows


def deployed_pooled_metrics(path: str | os.PathLike, data, split: str = "test", threads: int = 2,
                            batch_size: int = 8) -> dict[str, float]:
    """The paper's pooled metrics of a deployed file (ONNX or .pt2) on a split of a prepared dataset
    (normalised the paper's way at the file's input size): how much INT8 quantisation, or compiling ahead
    of time, changes the DSC, measured on real images."""
    from ..config import Config
    from ..data.tensors import batches, load_data, split_tensors
    from ..metrics import confusion_counts, pooled_metrics

    run, size = deployed_runner(path, threads)
    config = Config(input_size=size)
    images, masks, _ = split_tensors(load_data(data), split, config, torch.device("cpu"))
    counts = [confusion_counts(torch.from_numpy(run(images[part].numpy())), masks[part], config.threshold)
              for part in batches(images.shape[0], batch_size)]
    return pooled_metrics(torch.cat(counts))
