"""mamba-ssm's CUDA kernels, when they can be used. The one place that imports mamba_ssm / causal_conv1d.

mamba-ssm cannot even be imported without its compiled CUDA extension, so the import is attempted once,
and the reason for a failure is kept to explain it (never swallowed silently).
"""
from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=None)
def _import() -> tuple[dict, str]:
    """Returns ({name: function}, "") or ({}, reason)."""
    try:
        from mamba_ssm.ops.selective_scan_interface import mamba_inner_fn, selective_scan_fn
    except (ImportError, OSError) as error:
        return {}, f"mamba-ssm is not importable ({type(error).__name__}: {error})"
    functions = {"selective_scan_fn": selective_scan_fn, "mamba_inner_fn": mamba_inner_fn}
    try:
        from causal_conv1d import causal_conv1d_fn
        functions["causal_conv1d_fn"] = causal_conv1d_fn
    except (ImportError, OSError):
        pass  # optional: without it mamba-ssm (and we) use nn.Conv1d and the unfused path
    return functions, ""


def available() -> bool:
    return not _import()[1] and torch.cuda.is_available()


def has_causal_conv1d() -> bool:
    return "causal_conv1d_fn" in _import()[0]


def why_unavailable(tensor: torch.Tensor | None = None) -> str:
    """Empty string if the CUDA kernels can run on `tensor`, else the reason in words."""
    reason = _import()[1]
    if reason:
        return reason
    if not torch.cuda.is_available():
        return "torch sees no CUDA GPU"
    if tensor is not None and not tensor.is_cuda:
        return f"tensors are on {tensor.device}, the CUDA kernels need them on a GPU"
    return ""


def selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    return _import()[0]["selective_scan_fn"](u, delta, A, B, C, D, z=z, delta_bias=delta_bias,
                                             delta_softplus=delta_softplus)


def mamba_inner_fn(*args, **kwargs):
    return _import()[0]["mamba_inner_fn"](*args, **kwargs)


def causal_conv1d_fn(*args, **kwargs):
    return _import()[0]["causal_conv1d_fn"](*args, **kwargs)
