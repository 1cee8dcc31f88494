"""`ulvm bench`: whole-model speed, side by side in ONE process, with a correctness check for every path.

Times, on whatever device is present, UltraLight VM-UNet (×4, 256², fp32) for inference at batch 1 and 8
and for one training step at batch 8 (forward + BCE-Dice + backward + AdamW), for every available
selective-scan path:

    official (4 calls, mamba-ssm fused)   the official model's structure (one Mamba call per PVM chunk) with
                        mamba-ssm's fused kernels: the official code as it runs (CUDA, baseline)
    official (4 calls, reference scan)    the same structure with the sequential scan, twin of mamba-ssm's
                        selective_scan_ref: the official pure-PyTorch fallback (CPU, inference only, baseline)
    mamba-ssm fused     our structure (the 4 chunks in one call), backend "cuda", use_fast_path=True (baseline)
    mamba-ssm unfused   backend "cuda", use_fast_path=False (baseline)
    reference           our sequential scan (pure PyTorch; CPU: inference only)
    parallel            our associative scan (pure PyTorch)
    chunked             the exportable chunked scan (pure PyTorch, `ulvm.ssm.chunked_scan`)
    parallel + graph    the same, recorded once and replayed as a CUDA graph (CUDA only)
    triton              our fused Triton scan: one kernel per scan forward, one backward (CUDA only)
    triton + graph      the same, replayed as a CUDA graph (CUDA only)
    triton + compile + graph   the model through torch.compile (default mode: Inductor fuses the norms,
                        activations and copies around the scan, which stays one opaque custom op), then
                        replayed as a CUDA graph (CUDA only; compiling takes minutes)

Every path's batch-1 output is compared with an fp64 run of the reference backend on the same weights and
input (relative L2 error); a path above `MAX_REL_ERROR` is marked as not counted. Ratios are against
the FASTEST baseline (official and mamba-ssm paths) measured in this process, per column, never a slow
one. Numbers depend on the machine: the JSON records it. `ulvm bench --device cpu --onnx` adds the
deployment rows of `ulvm.deploy.export.cpu_benchmark` (ONNX Runtime fp32 / INT8, batch 1) in the same process.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import partial

import torch

from ..config import Config
from ..engine.graphs import GraphedTrainStep, capture_cuda_graph
from ..engine.losses import loss_weights
from ..engine.optim import build_optimizer
from ..engine.train import train_step
from ..model import PVMLayer, UltraLightVMUNet
from ..registry import build_model, known
from ..runtime import provenance, resolve_device, time_ms
from ..ssm import REGISTRY, Mamba
from ..ssm.cuda_kernels import has_causal_conv1d

MAX_REL_ERROR = 1e-4     # fp32 tolerance of the benchmark: a path further from fp64 than this is not counted


@dataclass
class BenchPath:
    name: str
    backend: str
    fast_path: bool = True
    graph: bool = False
    train: bool = True
    compile: bool = False
    official: bool = False      # the official structure: one Mamba call per PVM chunk (PVMLayer.batch_chunks)
    baseline: bool = False      # an implementation we compare against (ratios: vs the fastest of these)


def available_paths(device: torch.device) -> list[BenchPath]:
    paths = []
    if device.type == "cuda" and not REGISTRY["cuda"].why_unavailable():
        if has_causal_conv1d():
            paths.append(BenchPath("official (4 calls, mamba-ssm fused)", "cuda", official=True, baseline=True))
            paths.append(BenchPath("mamba-ssm fused", "cuda", fast_path=True, baseline=True))
        paths.append(BenchPath("mamba-ssm unfused", "cuda", fast_path=False, baseline=True))
    if device.type == "cpu":   # where mamba-ssm has no kernels, the official model runs selective_scan_ref
        paths.append(BenchPath("official (4 calls, reference scan)", "reference", train=False, official=True,
                               baseline=True))
    paths.append(BenchPath("reference", "reference", train=device.type == "cuda"))
    paths.append(BenchPath("parallel", "parallel"))
    paths.append(BenchPath("chunked", "chunked"))
    if device.type == "cuda":
        paths.append(BenchPath("parallel + graph", "parallel", graph=True))
        if not REGISTRY["triton"].why_unavailable():
            paths += [BenchPath("triton", "triton"), BenchPath("triton + graph", "triton", graph=True),
                      BenchPath("triton + compile + graph", "triton", graph=True, compile=True)]
    return paths


def _configure(model: UltraLightVMUNet, path: BenchPath) -> UltraLightVMUNet:
    model.set_backend(path.backend)
    for module in model.modules():
        if isinstance(module, Mamba):
            module.use_fast_path = path.fast_path
        if isinstance(module, PVMLayer):
            module.batch_chunks = not path.official
    return model


def _inference_fn(model, x, graph: bool):
    def forward():
        with torch.no_grad():
            return model(x)
    return capture_cuda_graph(forward) if graph else forward


def _train_fn(model, x, y, graph: bool):
    """One training step of `ulvm.engine.train` with the paper's optimizer and loss, eager or as a CUDA graph."""
    config = Config()
    optimizer, _ = build_optimizer(model, config, capturable=graph)
    step = partial(train_step, model, optimizer, weights=loss_weights(config))
    if graph:
        graphed = GraphedTrainStep(step, model, optimizer, x, y)
        return lambda: graphed(x, y)
    return lambda: step(x, y)


def reference_output(model: UltraLightVMUNet, x: torch.Tensor) -> torch.Tensor:
    """The fp64 reference: the sequential scan in float64, on the CPU, same weights and input."""
    ref = copy.deepcopy(model).cpu().double().set_backend("reference").eval()
    with torch.no_grad():
        return ref(x.cpu().double())


def rel_l2(y: torch.Tensor, ref: torch.Tensor) -> float:
    y = y.detach().cpu().double()
    return float((y - ref).norm() / ref.norm())


def run_benchmark(device: str = "auto", size: int = 256, repeats: int = 20, seed: int = 0,
                  paths: list[str] | None = None, progress=print) -> dict:
    device = resolve_device(device)
    # Let cuDNN time its algorithms once per shape (for every path alike): its default choice for the
    # backward of the bridge's 7x7 dilated 2->1 conv is a slow one, a large share of a training step.
    torch.backends.cudnn.benchmark = True
    # fp32 means fp32 for every path: no TF32 tensor cores in cuDNN either (PyTorch allows them there by
    # default; after torch.compile moved convs to channels-last they cost 1e-3 relative error).
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(seed)
    base = UltraLightVMUNet(backend="parallel").to(device).eval()
    x1 = torch.rand(1, 3, size, size, device=device) * 255
    x8 = torch.rand(8, 3, size, size, device=device) * 255
    y8 = (torch.rand(8, 1, size, size, device=device) > 0.5).float()
    ref = reference_output(base, x1)

    rows, failed = [], []
    for path in available_paths(device):
        if paths and path.name not in paths:
            continue
        model = _configure(copy.deepcopy(base), path)
        runner = torch.compile(model, dynamic=False) if path.compile else model
        slow = path.backend == "reference"
        reps = max(3, repeats // 5) if slow else repeats
        row = {"path": path.name}
        try:
            infer_b1 = _inference_fn(runner, x1, path.graph)
            row["rel_l2_error"] = rel_l2(infer_b1(), ref)      # the output of the path as timed (graph too)
            row["counted"] = row["rel_l2_error"] <= MAX_REL_ERROR
            row["infer_b1_ms"] = time_ms(infer_b1, device, reps)
            row["infer_b8_ms"] = time_ms(_inference_fn(runner, x8, path.graph), device, reps)
            if path.train:
                model.train()
                row["train_b8_ms"] = time_ms(_train_fn(runner, x8, y8, path.graph), device, reps)
        except Exception as error:  # noqa: BLE001 - a toolchain failure (compiler, kernel build) ends this path only
            failed.append({"path": path.name, "error": f"{type(error).__name__}: {str(error)[:500]}"})
            progress(f"{path.name}: failed: {failed[-1]['error']}")
            continue
        row["baseline"] = path.baseline
        rows.append(row)
        progress(format_row(row))
    fastest = {}   # per column: the fastest baseline of this process (else the first row timed), the ratios' base
    for key in ("infer_b1_ms", "infer_b8_ms", "train_b8_ms"):
        timed = [row for row in rows if key in row]
        candidates = [row for row in timed if row["baseline"] and row["counted"]] or timed[:1]
        if candidates:
            best = min(candidates, key=lambda row: row[key])
            fastest[key] = best["path"]
            for row in timed:
                row[key.replace("_ms", "_speedup")] = best[key] / row[key]
    return {**provenance(device), "size": size, "repeats": repeats,
            "fastest_baseline": fastest,
            "max_rel_error": MAX_REL_ERROR, "rows": rows, "failed": failed}


def format_row(row: dict) -> str:
    cells = [f"{row['path']:<36}"]
    for key in ("infer_b1_ms", "infer_b8_ms", "train_b8_ms"):
        cells.append(f"{row[key]:9.2f}" if key in row else f"{'-':>9}")
    cells.append(f"{row['rel_l2_error']:9.1e}{'' if row['counted'] else ' (not counted)'}")
    return " | ".join(cells)


def format_table(result: dict) -> str:
    machine = result["machine"]
    where = machine.get("gpu") or f"{machine['cpu']} ({machine['cpu_threads']} threads)"
    lines = [f"UltraLight VM-UNet x4, {result['size']}², fp32, torch {machine['torch']}, on {where}",
             f"{'path':<36} | {'infer b1':>9} | {'infer b8':>9} | {'train b8':>9} | rel. error (ms; error vs fp64)"]
    lines += [format_row(row) for row in result["rows"]]
    if "fastest_baseline" in result:
        against = ", ".join(f"{key.removesuffix('_ms')}: {path!r}" for key, path in result["fastest_baseline"].items())
        lines.append(f"speed-up vs the fastest baseline measured in this process ({against}):")
    else:   # records written before the ratios were taken against the fastest baseline
        lines.append(f"speed-up vs {result['baseline']!r} (the first path), measured in this process:")
    for row in result["rows"]:
        ratios = [f"{row[k]:.1f}x" if k in row else "-"
                  for k in ("infer_b1_speedup", "infer_b8_speedup", "train_b8_speedup")]
        lines.append(f"  {row['path']:<36} " + "  ".join(ratios))
    lines += [f"failed: {row['path']}: {row['error']}" for row in result.get("failed", [])]
    return "\n".join(lines)


def compare_models(device: str = "auto", names=None, size: int = 256, repeats: int = 5, train: bool = True,
                   graph: bool | None = None, inference_batches=(1, 8), progress=print) -> dict:
    """Every model of the comparison chapter timed side by side in ONE process, the way `run_benchmark`
    times the scan paths: inference at batch 1 and 8 and a training step at batch 8 (the paper's AdamW and
    loss), each model with backend "auto" and, on CUDA (`graph` default), replayed as a CUDA graph — the
    same engine treatment for every model (`inference_batches`: which batch sizes, at most 8). Ratios are
    against UltraLight VM-UNet."""
    device = resolve_device(device)
    graph = device.type == "cuda" if graph is None else graph
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    x1 = torch.rand(1, 3, size, size, device=device) * 255
    x8 = torch.rand(8, 3, size, size, device=device) * 255
    y8 = (torch.rand(8, 1, size, size, device=device) > 0.5).float()
    rows = []
    for name in names or known():
        torch.manual_seed(0)
        model = build_model(Config(model=name)).to(device).eval()
        row = {"model": name}
        for batch in inference_batches:
            x = x1 if batch == 1 else x8[:batch]
            row[f"infer_b{batch}_ms"] = time_ms(_inference_fn(model, x, graph), device, repeats)
        if train:
            model.train()
            row["train_b8_ms"] = time_ms(_train_fn(model, x8, y8, graph), device, repeats)
        rows.append(row)
        progress(f"{name:<12} " + "  ".join(f"{key} {value:9.2f}" for key, value in row.items() if key != "model"))
    ours = rows[0]
    for row in rows:
        for key in ("infer_b1_ms", "infer_b8_ms", "train_b8_ms"):
            if key in row and key in ours:
                row[key.replace("_ms", "_vs_ultralight")] = row[key] / ours[key]
    return {**provenance(device), "size": size, "repeats": repeats, "graph": graph, "rows": rows}
