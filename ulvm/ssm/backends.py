"""Every selective-scan backend as one object, and the one place that decides which runs.

A `ScanBackend` says what it is (name), whether it can run on given tensors (`why_unavailable`: "" when
it can, else the reason in words), the scan itself (`selective_scan` semantics, see `ulvm.ssm.scan`), an
optional fused Mamba block and fused causal conv (mamba-ssm's kernels; for "cpp", shifted adds that
torch.compile fuses), whether a CUDA graph may record it, and the dtypes it computes in. `Mamba.forward`,
the training loop, the benchmarks and `set_backend` ask this module; nothing else decides. Importing it
imports no kernel: `cuda_kernels`, `triton_scan` and `cpu_scan` load mamba-ssm, Triton and our C++
operator only when first used.

    resolve("auto", tensor)   -> the backend "auto" picks for tensor (logged once per device and choice)
    resolve("triton", tensor) -> that backend, or BackendUnavailable saying why it cannot run
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch

from ..errors import BackendUnavailable
from . import chunked_scan, cpu_scan, cuda_kernels, pytorch_scan, triton_scan

log = logging.getLogger(__name__)


def _always(tensor: torch.Tensor | None = None) -> str:
    return ""


def _triton_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    pytorch_scan.check_shapes(u, delta, A, B, C)
    return triton_scan.selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


def _mamba_inner(mamba, xz: torch.Tensor, A: torch.Tensor) -> torch.Tensor | None:
    """mamba-ssm's fused Mamba block (conv, projections, scan, gate, out_proj in one autograd function),
    when the block asks for it (`use_fast_path`) and causal-conv1d is installed; else None."""
    if not (mamba.use_fast_path and cuda_kernels.has_causal_conv1d()):
        return None
    return cuda_kernels.mamba_inner_fn(
        xz, mamba.conv1d.weight, mamba.conv1d.bias, mamba.x_proj.weight, mamba.dt_proj.weight,
        mamba.out_proj.weight, mamba.out_proj.bias, A, None, None, mamba.D.float(),
        delta_bias=mamba.dt_proj.bias.float(), delta_softplus=True)


def _causal_conv_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor | None:
    """causal-conv1d's fused depthwise causal conv + SiLU, when installed; else None."""
    if not cuda_kernels.has_causal_conv1d():
        return None
    return cuda_kernels.causal_conv1d_fn(x, weight.squeeze(1), bias, activation="silu")


@dataclass(frozen=True)
class ScanBackend:
    name: str
    summary: str
    selective_scan: Callable[..., torch.Tensor]
    why_unavailable: Callable[[torch.Tensor | None], str] = _always
    graph_safe: bool = True                 # may be recorded in a CUDA graph (tested under capture)
    dtypes: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16, torch.float32, torch.float64)  # inputs taken
    fused_block: Callable | None = None     # (mamba, xz, A) -> output or None (then the unfused path)
    conv_silu: Callable | None = None       # (x, weight, bias) -> silu(causal conv) or None


_GPU_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)   # both GPU kernels compute in fp32

REGISTRY: dict[str, ScanBackend] = {backend.name: backend for backend in (
    ScanBackend("reference", "one time step at a time (twin of mamba-ssm's selective_scan_ref)",
                partial(pytorch_scan.pytorch_selective_scan, pytorch_scan.scan_reference)),
    ScanBackend("parallel", "associative scan in pure PyTorch, hand-written backward",
                partial(pytorch_scan.pytorch_selective_scan, pytorch_scan.scan_parallel)),
    ScanBackend("chunked", "chunked closed form of plain tensor ops, exportable to ONNX (ulvm.deploy.export)",
                partial(pytorch_scan.pytorch_selective_scan, chunked_scan.scan_chunked)),
    ScanBackend("cpp", "our fused C++ loop for CPU inference, forward only, built on first use",
                cpu_scan.selective_scan_fn, cpu_scan.why_unavailable, graph_safe=False,
                conv_silu=cpu_scan.causal_conv_silu),
    ScanBackend("triton", "our fused Triton kernel, one launch forward and one backward",
                _triton_scan, triton_scan.why_unavailable, dtypes=_GPU_KERNEL_DTYPES),
    ScanBackend("cuda", "mamba-ssm's fused CUDA kernels (selective_scan_fn, mamba_inner_fn)",
                lambda *args, **kwargs: cuda_kernels.selective_scan_fn(*args, **kwargs),
                cuda_kernels.why_unavailable, graph_safe=False, dtypes=_GPU_KERNEL_DTYPES,
                fused_block=_mamba_inner, conv_silu=_causal_conv_silu),
)}
BACKENDS = tuple(REGISTRY)
# What "auto" tries on CUDA tensors, in order; everywhere else (and for fp64) it takes "parallel".
AUTO_ON_CUDA = ("triton", "cuda")
_announced: set[tuple[str, str]] = set()


def check_name(name: str) -> str:
    if name != "auto" and name not in REGISTRY:
        raise BackendUnavailable(f"unknown selective-scan backend {name!r}; choose one of {('auto',) + BACKENDS}")
    return name


def resolve(name: str, tensor: torch.Tensor) -> ScanBackend:
    """The backend `name` for `tensor` ("auto": the fastest that can run on it); refuses one that cannot run."""
    if check_name(name) != "auto":
        backend = REGISTRY[name]
        reason = backend.why_unavailable(tensor)
        if reason:
            raise BackendUnavailable(f"selective-scan backend {name!r} cannot run: {reason}")
        return backend
    reasons = {}
    chosen = REGISTRY["parallel"]
    if tensor.is_cuda:
        for candidate in AUTO_ON_CUDA:
            backend = REGISTRY[candidate]
            reasons[candidate] = (f"takes no {tensor.dtype} tensors" if tensor.dtype not in backend.dtypes
                                  else backend.why_unavailable(tensor))
            if not reasons[candidate]:
                chosen = backend
                break
    key = (tensor.device.type, chosen.name)
    if key not in _announced:
        _announced.add(key)
        why = "".join(f" ({name}: {reason})" for name, reason in reasons.items() if reason)
        log.info("selective scan: backend 'auto' chose %r on %s%s", chosen.name, tensor.device.type, why)
    return chosen
