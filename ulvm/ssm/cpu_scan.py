"""Backend "cpp": the selective scan as one fused C++ loop, for inference on a CPU (`cpu_kernel.cpp`).

The fastest CPU scan we have: ~2 ms for the six scans of a 256² image on 2 cores, against ~25 ms eager
for "parallel" or "chunked" and ~7 ms for "chunked" under torch.compile (`book/results/bench/NOTES.md`).
It is a real PyTorch operator, `torch.ops.ulvm.selective_scan`, so torch.compile keeps it as one call in
its compiled graph (`ulvm.export.compile_for_cpu`).

Forward only (no backward: train with "parallel"), CPU tensors. It is compiled from source the first time
it is used in a Python environment (~1 minute; PyTorch's `cpp_extension` needs a C++ compiler and ninja,
and caches the build under ~/.cache/torch_extensions, or TORCH_EXTENSIONS_DIR). Where it cannot be built,
`why_unavailable` says why and callers fall back to "chunked". Built for the CPU's vector instructions as
PyTorch reports them, which are part of the build's name, so machines sharing a home folder do not share a
build that one of them cannot run.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from . import pytorch_scan

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("cpu_kernel.cpp")
# the vector instruction sets torch itself dispatches to, as compiler flags
_ARCH_FLAGS = {"AVX512": ["-mavx512f", "-mavx512dq", "-mavx512vl", "-mavx512bw", "-mavx2", "-mfma"],
               "AVX2": ["-mavx2", "-mfma"]}
_built: list[str] = []     # once tried: [""] when loaded, else [why not] (a list, not functools.cache: torch.compile
                           # reads it as a constant where it would trace into a cached function's wrapper)


def _build() -> str:
    """Compile and load the operator; "" when loaded, else why it could not be."""
    try:
        from torch.utils.cpp_extension import load
    except ImportError as error:                     # it imports setuptools, which an environment may lack
        return f"torch.utils.cpp_extension is not importable ({error})"
    capability = torch.backends.cpu.get_cpu_capability()
    flags = ["-O3", "-ffast-math", "-fopenmp", *_ARCH_FLAGS.get(capability, [])]
    log.info("loading the C++ selective scan (backend 'cpp', %s); its first use compiles it, about a minute",
             capability)
    try:
        load(name=f"ulvm_cpu_scan_{capability.lower()}", sources=[str(SOURCE)], extra_cflags=flags,
             extra_ldflags=["-fopenmp"], is_python_module=False, verbose=False)
    except Exception as error:                       # no compiler, no ninja, a failing build: say which
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return f"its C++ build failed ({type(error).__name__}: {first_line})"
    torch.library.register_fake("ulvm::selective_scan")(_output_like_u)
    return ""


def _output_like_u(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """The operator's output without running it, for torch.compile's tracing."""
    return torch.empty_like(u, memory_format=torch.contiguous_format)


def why_unavailable(tensor: torch.Tensor | None = None) -> str:
    """"" when the C++ scan can run on `tensor` (the Mamba block's input), else why not."""
    if tensor is not None and tensor.device.type != "cpu":
        return f"a CPU kernel: the tensors are on {tensor.device.type}"
    if tensor is not None and tensor.requires_grad and torch.is_grad_enabled():
        return "forward only, and this call needs gradients: train with 'parallel'"
    if not _built:
        _built.append(_build())
    return _built[0]


def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False) -> torch.Tensor:
    """`selective_scan` semantics (`ulvm.ssm.scan`); computes in fp32 (fp64 stays fp64), returns u's dtype."""
    pytorch_scan.check_shapes(u, delta, A, B, C)       # the operator is loaded by `why_unavailable`
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
