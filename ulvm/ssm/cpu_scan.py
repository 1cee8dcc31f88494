"""Backend "cpp": the selective scan as one fused C++ loop, for inference on a CPU (`ulvm/cpp/selective_scan.cpp`).

The fastest CPU scan we have, well ahead of "parallel" or "chunked", eager or under torch.compile (the
timings are in `book/results/bench/NOTES.md`): one loop over the sequence that keeps the state in registers.
It is a real PyTorch operator, `torch.ops.ulvm.selective_scan`, so torch.compile keeps it as one call in
its compiled graph (`ulvm.deploy.package.compile_for_cpu`).

Forward only (no backward: train with "parallel"), CPU tensors. The operator is one of `ulvm.cpp`'s, built
from source the first time it is used in a Python environment (~1 minute, with a C++ compiler and ninja);
where it cannot be built, `why_unavailable` says why and callers fall back to "chunked".
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import cpp
from . import pytorch_scan


def why_unavailable(tensor: torch.Tensor | None = None) -> str:
    """"" when the C++ scan can run on `tensor` (the Mamba block's input), else why not."""
    if tensor is not None and tensor.device.type != "cpu":
        return f"a CPU kernel: the tensors are on {tensor.device.type}"
    if tensor is not None and tensor.requires_grad and torch.is_grad_enabled():
        return "forward only, and this call needs gradients: train with 'parallel'"
    return cpp.why_unavailable()


def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False) -> torch.Tensor:
    """`selective_scan` semantics (`ulvm.ssm.scan`); computes in fp32 (fp64 stays fp64), returns u's dtype."""
    pytorch_scan.check_shapes(u, delta, A, B, C)       # the operator is loaded by `why_unavailable`
    if B.dim() == 4:
        raise ValueError("selective_scan: backend 'cpp' takes B and C of shape (batch, N, L), not grouped "
                         f"{tuple(B.shape)}; use 'parallel' or 'chunked' for a grouped scan (VM-UNet's SS2D)")
    work = torch.promote_types(u.dtype, torch.float32)
    y = torch.ops.ulvm.selective_scan(u.to(work), delta, A, B, C, D, z, delta_bias, delta_softplus)
    return y.to(u.dtype)


def causal_conv_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """silu(Mamba's depthwise causal conv1d) as K shifted multiply-adds of plain tensor ops (the twin of
    causal-conv1d's fused kernel): torch.compile fuses them and the silu into one loop, where `F.conv1d` is
    an external oneDNN call. x (batch, E, L), weight (E, 1, K), bias (E,) -> (batch, E, L)."""
    width, length = weight.shape[-1], x.shape[-1]
    padded = F.pad(x, (width - 1, 0))                     # causal: K - 1 zeros before the first step
    out = sum(weight[:, 0, i, None] * padded[..., i:i + length] for i in range(width))
    return F.silu(out if bias is None else out + bias[:, None])
