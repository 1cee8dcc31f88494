"""Model complexity the paper's way and in full: parameters, GFLOPs, weight-file size.

The paper (Table "PVM layer") reports 0.049M parameters, 0.060 GFLOPs and a 229.1 KB weight file for
UltraLight VM-UNet. "GFLOPs" there is what `thop.profile` returns on a 1×3×256×256 input: multiply-accumulates
(MACs) of the layers thop knows. thop counts a module by a forward hook, and mamba-ssm's fused Mamba never
calls its Linear / Conv1d sub-modules (it passes their weights to one CUDA kernel), so the paper's number
contains NO Mamba work at all. `gflops(method="full")` adds it: the four projections, the causal conv and
the selective scan (9·B·L·D·N, as counted in mamba-ssm issue #110): ~0.006 G for the projections and
conv (what thop itself reports on an unfused Mamba) and ~0.015 G for the scan. The book compares them in
`notebooks/03_pvm_layer.ipynb`.
"""
from __future__ import annotations

import copy
import io

import torch
import torch.nn as nn

from .ssm import Mamba


def count_params(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def params_by_child(module: nn.Module) -> dict[str, int]:
    """Parameters grouped by the first part of their name: a Mamba block's in_proj, conv1d, ..., A_log, D."""
    counts: dict[str, int] = {}
    for name, parameter in module.named_parameters():
        child = name.split(".")[0]
        counts[child] = counts.get(child, 0) + parameter.numel()
    return counts


def mamba_param_formula(d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2) -> dict[str, int]:
    """Closed-form parameter count of one Mamba block, part by part (E = expand·d_model, R = ceil(d_model/16)).

    in_proj 2E·d + conv1d E·(k+1) + x_proj E·(R+2N) + dt_proj (R·E + E) + A_log E·N + D E + out_proj E·d.
    With expand 2 the two d-by-E projections give 6·d² — the term the PVM layer divides by parallel².
    """
    inner, rank = expand * d_model, -(-d_model // 16)
    parts = {
        "in_proj": d_model * 2 * inner,
        "conv1d": inner * d_conv + inner,
        "x_proj": inner * (rank + 2 * d_state),
        "dt_proj": rank * inner + inner,
        "A_log": inner * d_state,
        "D": inner,
        "out_proj": inner * d_model,
    }
    parts["total"] = sum(parts.values())
    return parts


def mamba_macs(block: Mamba, batch: int, length: int) -> dict[str, int]:
    """Work of one Mamba forward on (batch, length, d_model) tokens, part by part.

    Projections and the conv are multiply-accumulates, as thop counts layers; the scan is mamba-ssm's
    own estimate of 9·B·L·D·N operations (issue #110: discretise Δ·A and Δ·B·u, update the state, read out C).
    """
    d, e, n, r = block.d_model, block.d_inner, block.d_state, block.dt_rank
    tokens = batch * length
    return {
        "projections": tokens * (d * 2 * e + e * (r + 2 * n) + r * e + e * d),   # in, x, dt, out
        "conv1d": tokens * e * block.d_conv,
        "scan": 9 * tokens * e * n,
        "skip_and_gate": 2 * tokens * e,                                          # + D·u, · silu(z)
    }


def _count_nothing(module, inputs, output):
    """thop rule for Mamba the paper's way: the fused kernel hides its work from thop's hooks."""
    module.total_ops += torch.zeros(1, dtype=torch.float64)


def gflops_breakdown(model: nn.Module, input_size: int = 256, in_channels: int = 3) -> dict[str, float]:
    """G-operations of one forward on a 1×C×S×S input: the paper's thop number, then what it leaves out.

    thop runs on a deep copy (it leaves `total_ops` buffers on the modules it profiles); Mamba calls are
    recorded by forward hooks on that copy, so a PVM layer's shared Mamba is counted once per chunk.
    """
    import thop

    probe = copy.deepcopy(model).cpu().float()
    if hasattr(probe, "set_backend"):
        probe.set_backend("parallel")   # counting needs no CUDA; the count does not depend on the backend
    calls = []
    for block in probe.modules():
        if isinstance(block, Mamba):
            block.register_forward_hook(lambda m, inputs, out: calls.append((m, *inputs[0].shape[:2])))
    x = torch.zeros(1, in_channels, input_size, input_size)
    macs, _ = thop.profile(probe, inputs=(x,), custom_ops={Mamba: _count_nothing}, verbose=False)
    parts = {"thop": macs}
    for block, batch, length in calls:
        for name, ops in mamba_macs(block, batch, length).items():
            parts[f"mamba_{name}"] = parts.get(f"mamba_{name}", 0) + ops
    parts["full"] = sum(parts.values())
    return {name: ops / 1e9 for name, ops in parts.items()}


def gflops(model: nn.Module, input_size: int = 256, method: str = "thop", in_channels: int = 3) -> float:
    """GFLOPs as the paper reports them (method "thop": thop's MACs, Mamba blocks invisible) or in full
    (method "full": plus Mamba's projections, conv, scan, skip and gate; see `gflops_breakdown`)."""
    if method not in ("thop", "full"):
        raise ValueError(f"method must be 'thop' or 'full', not {method!r}")
    return gflops_breakdown(model, input_size, in_channels)[method]


def weight_file_kb(model: nn.Module) -> float:
    """Size of the saved state dict (torch.save, the official checkpoints' format) in KB of 1024 bytes."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell() / 1024


def pvm_settings_table(input_size: int = 256, settings=(1, 2, 4)) -> list[dict]:
    """The paper's PVM-layer table, computed: one row per `parallel` setting (×1, ×2, ×4)."""
    from .model import UltraLightVMUNet

    rows = []
    for parallel in settings:
        model = UltraLightVMUNet(parallel=parallel, backend="parallel")
        ops = gflops_breakdown(model, input_size)
        rows.append({"setting": f"x{parallel}", "parallel": parallel, "params": count_params(model),
                     "gflops_thop": ops["thop"], "gflops_full": ops["full"],
                     "weight_kb": weight_file_kb(model)})
    return rows


def width_table(widths=(0.125, 0.25, 0.5, 1.0, 2.0), settings=(1, 4), input_size: int = 256) -> list[dict]:
    """The width study's cost side: one row per (width, PVM setting) with the stage channels
    (`ulvm.model.scale_channels`), params, GFLOPs (thop and full) and weight-file KB."""
    from .model import UltraLightVMUNet, scale_channels

    rows = []
    for width in widths:
        for parallel in settings:
            model = UltraLightVMUNet(parallel=parallel, backend="parallel", width=width)
            ops = gflops_breakdown(model, input_size)
            rows.append({"width": width, "parallel": parallel, "channels": list(scale_channels(width=width)),
                         "params": count_params(model), "gflops_thop": ops["thop"], "gflops_full": ops["full"],
                         "weight_kb": weight_file_kb(model)})
    return rows


def comparison_table(names=None, input_size: int = 256) -> list[dict]:
    """The cost of every model of the comparison chapter, counted the same way: one row per model with our
    params, thop GFLOPs (as the papers count), full GFLOPs (only Mamba blocks add work here; VM-UNet's
    four-direction scan is NOT counted: see `ulvm.baselines.vmunet`) and weight-file KB, beside what the
    authors report (`ulvm.baselines.REPORTED`; UltraLight VM-UNet: `ulvm.paper`; None for the PVM variants of
    `ulvm.baselines.pvm_variants`, which nobody reports)."""
    from .baselines import REPORTED
    from .config import Config
    from .paper import PAPER_COMPLEXITY
    from .registry import build_model, known

    rows = []
    for name in names or known():
        model = build_model(Config(model=name), "parallel")
        ops = gflops_breakdown(model, input_size)
        reported = ({"params": PAPER_COMPLEXITY["params (M)"] * 1e6, "gflops": PAPER_COMPLEXITY["GFLOPs"]}
                    if name == "ultralight" else REPORTED.get(name, {"params": None, "gflops": None}))
        rows.append({"model": name, "params": count_params(model), "gflops_thop": ops["thop"],
                     "gflops_full": ops["full"], "weight_kb": weight_file_kb(model),
                     "reported_params": reported["params"], "reported_gflops": reported["gflops"]})
    return rows
