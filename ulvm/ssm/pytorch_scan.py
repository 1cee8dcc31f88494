"""The pure-PyTorch selective scans: backends "reference" and "parallel" (see `ulvm.ssm.scan` for the
glossary and `ulvm.ssm.backends` for how a backend is chosen).

`pytorch_selective_scan(core, ...)` does what every backend does around the recurrence — the Δ bias and
softplus, the D·u skip and the silu(z) gate, in fp32 (fp64 stays fp64) — and `core` solves
h_t = Ā_t h_{t-1} + B̄_t u_t, y_t = C_t h_t: `scan_reference` one step at a time, `scan_parallel` as an
associative scan. The cores take any leading dimensions: u, Δ (..., D, L), A (..., D, N), B, C (..., N, L),
so grouped B and C (batch, G, N, L) reach them as u (batch, G, D/G, L) and A (G, D/G, N), without copies.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def pytorch_selective_scan(core, u, delta, A, B, C, D=None, z=None, delta_bias=None,
                           delta_softplus=False) -> torch.Tensor:
    """`selective_scan` semantics around a recurrence `core(u, delta, A, B, C) -> y` (batch, D, L)."""
    check_shapes(u, delta, A, B, C)
    dtype_in = u.dtype
    work = torch.promote_types(dtype_in, torch.float32)   # fp16/bf16 -> fp32 as the kernel; fp64 stays fp64
    u, delta = u.to(work), delta.to(work)
    if delta_bias is not None:
        delta = delta + delta_bias[:, None].to(work)
    if delta_softplus:
        delta = F.softplus(delta)
    batch, d_inner, length = u.shape
    if B.dim() == 4:                       # grouped: channel d of the G·(D/G) uses B[:, d // (D/G)]
        groups = B.shape[1]
        y = core(u.view(batch, groups, -1, length), delta.view(batch, groups, -1, length),
                 A.to(work).view(groups, -1, A.shape[1]), B.to(work), C.to(work)).reshape(batch, d_inner, length)
    else:
        y = core(u, delta, A.to(work), B.to(work), C.to(work))      # (batch, D, L)
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
    h = u.new_zeros(*u.shape[:-1], A.shape[-1])                       # h_0 = 0          (batch, D, N)
    ys = []
    for u_t, delta_t, B_t, C_t in zip(u.unbind(-1), delta.unbind(-1), B.unbind(-1), C.unbind(-1)):
        A_bar = torch.exp(delta_t[..., None] * A)                     # Ā_t = exp(Δ_t A)  (batch, D, N)
        B_bar_u = (delta_t * u_t)[..., None] * B_t[..., None, :]      # B̄_t u_t = Δ_t B_t u_t
        h = A_bar * h + B_bar_u                                       # h_t = Ā_t h_{t-1} + B̄_t u_t
        ys.append((h * C_t[..., None, :]).sum(-1))                    # y_t = C_t h_t     (batch, D)
    return torch.stack(ys, dim=-1)                                    # (batch, D, L)


def scan_parallel(u, delta, A, B, C) -> torch.Tensor:
    """The same scan with every time step at once: build (Ā_t, B̄_t u_t) for all t, then solve
    h_t = Ā_t h_{t-1} + B̄_t u_t with an associative scan."""
    A_bar = (delta.unsqueeze(-1) * A.unsqueeze(-2)).exp_()                        # (batch, D, L, N)
    B_bar_u = (delta * u).unsqueeze(-1) * B.transpose(-1, -2).unsqueeze(-3)       # (batch, D, L, N)
    h = LinearRecurrence.apply(A_bar, B_bar_u)                                    # (batch, D, L, N)
    return (h * C.transpose(-1, -2).unsqueeze(-3)).sum(-1)                        # y_t = C_t h_t


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


def check_shapes(u, delta, A, B, C) -> None:
    """Refuses shapes that `selective_scan` does not take: B and C are (batch, N, L), or grouped
    (batch, G, N, L) with G dividing D (channels d·D/G .. (d+1)·D/G - 1 read group d, as mamba-ssm's)."""
    batch, d_inner, length = u.shape
    d_state = A.shape[1]
    groups = B.shape[1] if B.dim() == 4 else None
    bc_shape = (batch, d_state, length) if groups is None else (batch, groups, d_state, length)
    expected = {"delta": (delta, (batch, d_inner, length)), "A": (A, (d_inner, d_state)),
                "B": (B, bc_shape), "C": (C, bc_shape)}
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"selective_scan: {name} has shape {tuple(tensor.shape)}, expected {shape} "
                             f"(u is (batch={batch}, D={d_inner}, L={length}), N={d_state}); "
                             "this interface takes input-dependent B and C of shape (batch, N, L) or, "
                             "grouped, (batch, G, N, L)")
    if groups is not None and (groups < 1 or d_inner % groups):
        raise ValueError(f"selective_scan: {groups} groups of B and C do not divide the D={d_inner} channels")
    if A.is_complex():
        raise ValueError("selective_scan: complex A is not supported (Mamba uses real A)")
