"""The selective scan (Mamba's S6 layer): one interface, three swappable backends.

Paper: Gu & Dao, "Mamba" (2023), Algorithm 2; the book explains it in `notebooks/01_ssm_theory.ipynb`.

Glossary (code name -> paper symbol), shapes as in mamba-ssm's `selective_scan_fn`:

    u       x_t, the input sequence             (batch, D, L)   D = d_inner channels, L = sequence length
    delta   Δ_t, the input-dependent step size  (batch, D, L)
    A       A, the (diagonal, real) state matrix (D, N)         N = d_state, the SSM state size
    B, C    B_t, C_t, input-dependent            (batch, N, L)
    D       D, the skip connection               (D,)
    z       the gate, y <- y * silu(z)           (batch, D, L)
    x       h_t, the hidden state                (batch, D, N)

For every channel d and state n independently the scan computes (zero-order hold for A, Euler for B,
exactly as mamba-ssm does):

    Ā_t = exp(Δ_t A)        B̄_t = Δ_t B_t        h_t = Ā_t h_{t-1} + B̄_t u_t        y_t = C_t h_t + D u_t

Backends:
    "reference"  the recurrence above, one time step at a time: the code the book quotes. Twin of
                 mamba-ssm's `selective_scan_ref` (mamba_ssm/ops/selective_scan_interface.py).
    "parallel"   the same recurrence as an associative scan (log2 L vectorised steps), with a hand-written
                 backward that is the same scan run backwards in time. Fast on CPU and GPU.
    "chunked"    a chunked closed form of plain tensor ops (Mamba-2's SSD algorithm), exportable to ONNX
                 (`ulvm.ssm.chunked_scan`, `ulvm.export`).
    "triton"     the whole scan (bias, softplus, discretisation, C h, D u, gate) as ONE fused Triton kernel
                 forward and one backward (`ulvm.ssm.triton_scan`); CUDA tensors, fp32. Our GPU default.
    "cuda"       mamba-ssm's fused CUDA kernel `selective_scan_fn`, when it imports and tensors are on CUDA.
    "auto"       on CUDA tensors "triton" where Triton imports, else "cuda" where mamba-ssm imports;
                 everywhere else "parallel". Logs its choice once.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from ..errors import BackendUnavailable
from . import cuda_kernels, triton_scan
from .chunked_scan import scan_chunked

log = logging.getLogger(__name__)

BACKENDS = ("reference", "parallel", "chunked", "triton", "cuda")
_announced: set[tuple[str, str]] = set()


def resolve_backend(backend: str, tensor: torch.Tensor) -> str:
    """Turn "auto" into a concrete backend for `tensor`'s device; refuse "triton"/"cuda" where they cannot run."""
    if backend == "auto":
        chosen = "parallel"
        if tensor.is_cuda and tensor.dtype != torch.float64:       # both GPU kernels compute in fp32
            if not triton_scan.why_unavailable(tensor):
                chosen = "triton"
            elif cuda_kernels.available():
                chosen = "cuda"
        key = (tensor.device.type, chosen)
        if key not in _announced:
            _announced.add(key)
            why = "" if chosen == "triton" or not tensor.is_cuda else \
                f" (triton: {triton_scan.why_unavailable(tensor)})"
            log.info("selective scan: backend 'auto' chose %r on %s%s", chosen, tensor.device.type, why)
        return chosen
    unavailable = {"cuda": cuda_kernels.why_unavailable, "triton": triton_scan.why_unavailable}
    if backend in unavailable:
        reason = unavailable[backend](tensor)
        if reason:
            raise BackendUnavailable(f"selective-scan backend {backend!r} cannot run: {reason}")
        return backend
    if backend not in BACKENDS:
        raise ValueError(f"unknown selective-scan backend {backend!r}; choose one of {BACKENDS + ('auto',)}")
    return backend


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   backend: str = "auto") -> torch.Tensor:
    """y = SelectiveScan(u; Δ, A, B, C) + D u, gated by silu(z). Same semantics as mamba-ssm's `selective_scan_fn`.

    Shapes: u, delta, z (batch, D, L); A (D, N); B, C (batch, N, L); D, delta_bias (D,). Returns (batch, D, L)
    in u's dtype. The pure-PyTorch backends compute in fp32 (fp64 inputs: in fp64), like mamba-ssm's kernel.
    """
    backend = resolve_backend(backend, u)
    if backend == "cuda":
        return cuda_kernels.selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    _check_shapes(u, delta, A, B, C)
    if backend == "triton":
        return triton_scan.selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    dtype_in = u.dtype
    work = torch.promote_types(dtype_in, torch.float32)   # fp16/bf16 -> fp32 as the kernel; fp64 stays fp64
    u, delta = u.to(work), delta.to(work)
    if delta_bias is not None:
        delta = delta + delta_bias[:, None].to(work)
    if delta_softplus:
        delta = F.softplus(delta)
    scan = {"reference": scan_reference, "chunked": scan_chunked}.get(backend, scan_parallel)
    y = scan(u, delta, A.to(work), B.to(work), C.to(work))         # (batch, D, L)
    if D is not None:
        y = y + u * D[:, None].to(work)
    if z is not None:
        y = y * F.silu(z.to(work))
    return y.to(dtype_in)


def scan_reference(u, delta, A, B, C) -> torch.Tensor:
    """The selective scan one time step at a time (cf. mamba-ssm's `selective_scan_ref`).

    Iterating over `unbind` views (not indexing a precomputed (batch, D, L, N) tensor with [:, :, t]) keeps
    the backward linear in L: each step's gradient touches only that step's slice.
    """
    batch, d_inner, _ = u.shape
    h = u.new_zeros(batch, d_inner, A.shape[1])                        # h_0 = 0          (batch, D, N)
    ys = []
    for u_t, delta_t, B_t, C_t in zip(u.unbind(2), delta.unbind(2), B.unbind(2), C.unbind(2)):
        A_bar = torch.exp(delta_t[:, :, None] * A)                    # Ā_t = exp(Δ_t A)  (batch, D, N)
        B_bar_u = (delta_t * u_t)[:, :, None] * B_t[:, None, :]       # B̄_t u_t = Δ_t B_t u_t
        h = A_bar * h + B_bar_u                                       # h_t = Ā_t h_{t-1} + B̄_t u_t
        ys.append(torch.einsum("bdn,bn->bd", h, C_t))                 # y_t = C_t h_t     (batch, D)
    return torch.stack(ys, dim=2)                                     # (batch, D, L)


def scan_parallel(u, delta, A, B, C) -> torch.Tensor:
    """The same scan with every time step at once: build (Ā_t, B̄_t u_t) for all t, then solve
    h_t = Ā_t h_{t-1} + B̄_t u_t with an associative scan."""
    A_bar = (delta.unsqueeze(-1) * A[:, None, :]).exp_()                          # (batch, D, L, N)
    B_bar_u = (delta * u).unsqueeze(-1) * B.transpose(1, 2).unsqueeze(1)          # (batch, D, L, N)
    h = LinearRecurrence.apply(A_bar, B_bar_u)                                    # (batch, D, L, N)
    return (h * C.transpose(1, 2).unsqueeze(1)).sum(-1)                           # y_t = C_t h_t


def associative_scan(a: torch.Tensor, b: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Solve h_t = a_t h_{t-1} + b_t (h_{-1} = 0) along dim -2 with a work-efficient (Blelloch) scan.

    The pairs (a_t, b_t) compose associatively: "(a1, b1) then (a2, b2)" = (a2 a1, a2 b1 + b2). An up-sweep
    combines neighbouring blocks of 1, 2, 4, ... steps; a down-sweep hands each block the prefix before it:
    2 log2(L) vectorised steps touching ~2L elements in all (a Hillis-Steele scan touches L log2 L).
    With Mamba's A < 0 every a_t = exp(Δ_t A) lies in (0, 1]: products only shrink towards 0, never
    overflow, unlike "divide by the cumulative decay" cumsum tricks.
    `a` is never modified; `b` becomes h when `inplace` (and L is a power of two), else it is copied.
    """
    *lead, length, d_state = a.shape
    padded = 1 << max(length - 1, 0).bit_length()          # next power of two; a zero tail changes nothing
    if padded != length:
        a, b = F.pad(a, (0, 0, 0, padded - length)), F.pad(b, (0, 0, 0, padded - length))
    elif not inplace:
        b = b.clone()

    def blocks(x, size, per_block):  # the time axis as blocks of `size` steps: (..., blocks, per_block, N)
        return x.view(*lead, padded // size, per_block, d_state)

    # products[span]: the product of a over each block of `span` steps, (..., L/span, N)
    products, span = {1: a}, 1
    while span < padded:                                    # up-sweep: each block end gets its block's total
        h2, a2 = blocks(b, 2 * span, 2 * span), blocks(products[span], 2 * span, 2)
        h2[..., 2 * span - 1, :] += a2[..., 1, :] * h2[..., span - 1, :]
        if 2 * span < padded:
            products[2 * span] = a2[..., 0, :] * a2[..., 1, :]
        span *= 2
    span = padded // 4
    while span >= 1:                                        # down-sweep: the prefix into each block's middle
        h2, a2 = blocks(b, 2 * span, 2 * span), blocks(products[span], 2 * span, 2)
        h2[..., 1:, span - 1, :] += a2[..., 1:, 0, :] * h2[..., :-1, 2 * span - 1, :]
        span //= 2
    return b[..., :length, :]


class LinearRecurrence(torch.autograd.Function):
    """h = associative_scan(a, b), with its exact gradient computed by the same scan backwards in time.

    With g_t = dLoss/dh_t, the adjoint λ_t = g_t + a_{t+1} λ_{t+1} is again a first-order recurrence
    (reversed); then dLoss/db_t = λ_t and dLoss/da_t = λ_t h_{t-1}. Memory: a and h only, not log2 L levels.
    `b` is overwritten with h (pass a temporary): one less (batch, D, L, N) tensor in memory.
    """

    @staticmethod
    def forward(ctx, a, b):
        h = associative_scan(a, b, inplace=True)
        if h.data_ptr() == b.data_ptr():
            ctx.mark_dirty(b)
            h = b
        ctx.save_for_backward(a, h)
        return h

    @staticmethod
    def backward(ctx, grad_h):
        a, h = ctx.saved_tensors
        a_next = F.pad(a[..., 1:, :], (0, 0, 0, 1))                  # a_{t+1}, with a_L = 0
        adjoint = associative_scan(a_next.flip(-2), grad_h.flip(-2), inplace=True).flip(-2)
        h_prev = F.pad(h[..., :-1, :], (0, 0, 1, 0))                 # h_{t-1}, with h_{-1} = 0
        return adjoint * h_prev, adjoint


def _check_shapes(u, delta, A, B, C) -> None:
    batch, d_inner, length = u.shape
    d_state = A.shape[1]
    expected = {"delta": (delta, (batch, d_inner, length)), "A": (A, (d_inner, d_state)),
                "B": (B, (batch, d_state, length)), "C": (C, (batch, d_state, length))}
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"selective_scan: {name} has shape {tuple(tensor.shape)}, expected {shape} "
                             f"(u is (batch={batch}, D={d_inner}, L={length}), N={d_state}); "
                             "this interface takes input-dependent B and C of shape (batch, N, L)")
    if A.is_complex():
        raise ValueError("selective_scan: complex A is not supported (Mamba uses real A)")
