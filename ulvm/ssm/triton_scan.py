"""The "triton" backend of the selective scan: one fused kernel forward, one backward (`triton_kernels`).

Why: this model's scans are tiny (D = 12-32 channels, N = 16, L = 64-1024 tokens). The pure-PyTorch
parallel scan runs ~180 small ATen ops per call (counted on CPU, views included: 1,626 ops per model
forward, 544 with each of its 6 scans as one op), and mamba-ssm's kernel spends 32-128 threads on each
row; at this size launch count and latency, not arithmetic, set the time. Here one program per BLOCK_D
(b, d) rows of one B and C keeps their N x BLOCK_L tiles of states in registers and walks L in chunks
(see `triton_kernels`); summing dB and dC over those rows before the atomic adds divides the backward's
atomic adds, BLOCK_D rows of one sequence contending for each address, by BLOCK_D.

Same semantics and arguments as `ulvm.ssm.scan.selective_scan` / mamba-ssm's `selective_scan_fn`. It
computes in fp32 (inputs of lower precision are cast, as mamba-ssm's kernel does; fp64 is refused rather
than silently rounded). Runs on CUDA tensors; with TRITON_INTERPRET=1 set before the first use, Triton's
interpreter runs the same kernels on CPU tensors (slowly): that is how the CPU test suite checks them.
"""
import importlib
import os
from typing import Optional

import torch
from torch import Tensor

BLOCK_L = 128        # steps per chunk: the N x BLOCK_L tile of each channel lives in registers
BLOCK_D = 4          # channels per program at most (those of one B and C: their dB, dC summed before atomics)
NUM_WARPS = 4        # per channel of a program


_loaded: dict = {}     # a plain dict, not functools.lru_cache: torch.compile reads it without a graph break


def _kernels():
    """Returns (module, "") or (None, reason). Triton is optional: imported on first use only."""
    if "kernels" not in _loaded:
        try:
            _loaded["kernels"] = importlib.import_module("ulvm.ssm.triton_kernels"), ""
        except ImportError as error:
            _loaded["kernels"] = None, f"triton is not importable ({type(error).__name__}: {error})"
        # read with the kernels: Triton decided at their import whether to interpret them
        _loaded["interpreting"] = os.environ.get("TRITON_INTERPRET", "0") == "1"
    return _loaded["kernels"]


def interpreting() -> bool:
    _kernels()
    return _loaded["interpreting"]


def why_unavailable(tensor: Optional[Tensor] = None) -> str:
    """Empty string if the Triton kernels can run on `tensor`, else the reason in words."""
    reason = _kernels()[1]
    if reason:
        return reason
    if tensor is not None and tensor.dtype == torch.float64:
        return "the Triton kernels compute in fp32; use 'parallel' or 'reference' for fp64"
    if interpreting():
        return ""
    if not torch.cuda.is_available():
        return "torch sees no CUDA GPU (set TRITON_INTERPRET=1 to run the kernels interpreted on the CPU)"
    if tensor is not None and not tensor.is_cuda:
        return f"tensors are on {tensor.device}, the Triton kernels need them on a GPU"
    return ""


def _launch_shape(length: int, d_state: int) -> tuple[int, int, int]:
    block_n = 1 << max(d_state - 1, 0).bit_length()              # next power of two
    block_l = min(BLOCK_L, 1 << max(length - 1, 0).bit_length())
    return block_n, block_l, -(-length // block_l)


def _channels_per_program(group_channels: int) -> int:
    """The largest power of two <= BLOCK_D that divides the channels of a group: a program's rows share B, C."""
    block_d = 1
    while block_d * 2 <= BLOCK_D and group_channels % (block_d * 2) == 0:
        block_d *= 2
    return block_d


# The two kernels as PyTorch custom operators: autograd connects them, and torch.compile treats each as
# one opaque call (it does not trace into Triton launches). Inputs: contiguous fp32 on one device; B and C
# (batch, N, L) or grouped (batch, G, N, L), as `ulvm.ssm.scan.selective_scan` takes them.

@torch.library.custom_op("ulvm::selective_scan_fwd", mutates_args=())
def scan_forward(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                 z: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool) -> tuple[Tensor, Tensor]:
    """Returns y (batch, D, L) and the state entering each chunk (batch·D, L/BLOCK_L, N): all the backward
    keeps besides the inputs (it recomputes h chunk by chunk, as mamba-ssm does)."""
    batch, d_inner, length = u.shape
    d_state = A.shape[1]
    block_n, block_l, n_chunks = _launch_shape(length, d_state)
    group_channels = _group_channels(u, B)
    block_d = _channels_per_program(group_channels)
    y = torch.empty_like(u)
    states = u.new_empty(batch * d_inner, n_chunks, block_n)
    _kernels()[0].selective_scan_fwd[(batch * d_inner // block_d,)](
        u, delta, A, B, C, _or(D, u), _or(z, u), _or(delta_bias, u), y, states,
        d_inner, group_channels, length, d_state, n_chunks,
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
        SOFTPLUS=delta_softplus, BLOCK_N=block_n, BLOCK_L=block_l, BLOCK_D=block_d, num_warps=NUM_WARPS * block_d)
    return y, states


@scan_forward.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    batch, d_inner, length = u.shape
    block_n, _, n_chunks = _launch_shape(length, A.shape[1])
    return torch.empty_like(u), u.new_empty(batch * d_inner, n_chunks, block_n)


@torch.library.custom_op("ulvm::selective_scan_bwd", mutates_args=())
def scan_backward(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                  z: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool, states: Tensor,
                  dy: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients (u, Δ, A, B, C, D, z, delta_bias); an empty tensor for an argument that was None."""
    batch, d_inner, length = u.shape
    d_state = A.shape[1]
    block_n, block_l, n_chunks = _launch_shape(length, d_state)
    du, ddelta = torch.empty_like(u), torch.empty_like(delta)
    dz = torch.empty_like(z) if z is not None else u.new_empty(0)
    group_channels = _group_channels(u, B)
    block_d = _channels_per_program(group_channels)
    programs = batch * d_inner // block_d
    # dB, dC sum over the channels: with atomics in the kernel, or (deterministic) one part per program,
    # summed here in a fixed order
    per_program = torch.are_deterministic_algorithms_enabled()
    if per_program:
        dB, dC = B.new_zeros(programs, d_state, length), C.new_zeros(programs, d_state, length)
    else:
        dB, dC = torch.zeros_like(B), torch.zeros_like(C)
    dA_rows = u.new_empty(batch * d_inner, block_n)
    dD_rows = u.new_empty(batch * d_inner)
    _kernels()[0].selective_scan_bwd[(programs,)](
        u, delta, A, B, C, _or(D, u), _or(z, u), _or(delta_bias, u), states, dy,
        du, ddelta, dA_rows, dB, dC, dD_rows, dz if z is not None else du,
        d_inner, group_channels, length, d_state, n_chunks,
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
        SOFTPLUS=delta_softplus, PER_PROGRAM=per_program, BLOCK_N=block_n, BLOCK_L=block_l, BLOCK_D=block_d,
        num_warps=NUM_WARPS * block_d)
    if per_program:                                             # (programs, N, L) -> B's shape
        groups = d_inner // group_channels
        dB = dB.view(batch, groups, group_channels // block_d, d_state, length).sum(2).view(B.shape)
        dC = dC.view(batch, groups, group_channels // block_d, d_state, length).sum(2).view(C.shape)
    dA = dA_rows.view(batch, d_inner, block_n).sum(0)[:, :d_state].contiguous()
    dD = dD_rows.view(batch, d_inner).sum(0) if D is not None else u.new_empty(0)
    d_bias = ddelta.sum((0, 2)) if delta_bias is not None else u.new_empty(0)
    return du, ddelta, dA, dB, dC, dD, dz, d_bias


@scan_backward.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, states, dy):
    def like(t):
        return torch.empty_like(t) if t is not None else u.new_empty(0)
    return (torch.empty_like(u), torch.empty_like(delta), torch.empty_like(A), torch.empty_like(B),
            torch.empty_like(C), like(D), like(z), like(delta_bias))


def _group_channels(u: Tensor, B: Tensor) -> int:
    """Channels per group of B and C: (batch, G, N, L) serves D / G channels each; (batch, N, L) all D."""
    return u.shape[1] // (B.shape[1] if B.dim() == 4 else 1)


def _or(tensor, stand_in):
    """A pointer for a kernel argument that its HAS_* flag switches off."""
    return stand_in if tensor is None else tensor


def _setup_context(ctx, inputs, output):
    *tensors, ctx.delta_softplus = inputs
    ctx.save_for_backward(*tensors, output[1])


def _backward(ctx, dy, _d_states):
    u, delta, A, B, C, D, z, delta_bias, states = ctx.saved_tensors
    du, ddelta, dA, dB, dC, dD, dz, d_bias = scan_backward(u, delta, A, B, C, D, z, delta_bias,
                                                           ctx.delta_softplus, states, dy.contiguous())
    return (du, ddelta, dA, dB, dC, dD if D is not None else None, dz if z is not None else None,
            d_bias if delta_bias is not None else None, None)


scan_forward.register_autograd(_backward, setup_context=_setup_context)


def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The fused scan on fp32 copies of the inputs (a no-op for contiguous fp32); output in u's dtype."""
    def fp32(t):
        return None if t is None else t.float().contiguous()
    y, _ = scan_forward(fp32(u), fp32(delta), fp32(A), fp32(B), fp32(C), fp32(D), fp32(z), fp32(delta_bias),
                        bool(delta_softplus))
    return y.to(u.dtype)
