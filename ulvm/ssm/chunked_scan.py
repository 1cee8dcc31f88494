"""The selective scan as a chunked closed form of plain tensor ops: exportable to ONNX, fast on a CPU.

Why another backend: the "parallel" backend writes into slices of a tensor in place (the Blelloch scan) and
has a hand-written autograd Function; the "triton"/"cuda" backends are custom kernels. None of them export
to ONNX. This one is made only of elementwise ops, reductions, pads, reshapes and stacks, so
`torch.onnx.export` traces it into an ordinary graph (`ulvm.deploy.export`), and autograd differentiates it as is.

Twins: the chunk structure is Mamba-2's SSD "chunked" scan (Dao & Gu 2024, §6; `ssd_minimal_discrete` in
mamba_ssm/modules/ssd_minimal.py and the `chunk_state` / `state_passing` / `chunk_scan` kernels: each chunk's
end state, passed from chunk to chunk, then every step of a chunk), adapted to Mamba-1's diagonal A (one
decay per channel AND state, where Mamba-2 has one scalar per head), which is why a chunk is solved by
stepping through it rather than by SSD's (T, T) matrix (see the end of this docstring). The semantics
are those of mamba-ssm's `selective_scan_ref` (and our "reference" backend, `ulvm.ssm.scan`).

Glossary (as in `ulvm.ssm.scan`; T = chunk length, K = number of chunks = ceil(L / T)):

    u       x_t, the input sequence                  (batch, D, L)
    delta   Δ_t, the step size                       (batch, D, L)
    A       the diagonal state matrix, A < 0         (D, N)
    B, C    B_t, C_t                                 (batch, N, L)
    a_t     Ā_t = exp(Δ_t A), the decay of a step    (batch, D, N, K, 1)   step t of every chunk at once
    v_t     B̄_t u_t = Δ_t u_t B_t                    (batch, D, N, K, 1)
    P_t     Π_{r ≤ t, same chunk} Ā_r                (batch, D, N, K, 1)   decay from the chunk's start
    h_t     the state                                (batch, D, N, K, 1)

The maths. Unrolling h_t = Ā_t h_{t-1} + B̄_t u_t from the state h_0 at the start of a chunk:

    h_t = P_t h_0  +  Σ_{s ≤ t} (Π_{r=s+1..t} Ā_r) B̄_s u_s
          (from earlier chunks)  (within the chunk, from a zero start)

Within a chunk (T unrolled steps): h_t = Ā_t h_{t-1} + B̄_t u_t from h = 0, and P_t = Ā_t P_{t-1}, each step
computed for all K chunks at once (one (batch, D, N, K, 1) tensor op). It works in linear space: Ā ∈ [0, 1],
products only shrink, no logarithm or division, as stable as the reference.

Across chunks: each chunk's end state from a zero start, h_end_k, and its total decay Λ_k = P_{T-1} obey
the SAME recurrence one level up, H_k = Λ_k H_{k-1} + h_end_k, so the same function solves it on the K
chunk-end states (chunks of chunks, depth log_T L); then the state entering chunk k, H_{k-1}, decays into
every step: h_t += P_t H_{k-1}. Finally y_t = C_t · h_t. With a fixed L every loop unrolls at export into a
static graph of ~T log_T(L) steps.

Why steps, not one tensor. Every step is its own (batch, D, N, K, 1) tensor, built from a slice of the small
(batch, D, L) / (batch, N, L) inputs, and y_t = C_t · h_t is taken step by step; no state-sized
(D·N values per token) tensor is ever sliced, stacked or transposed. ONNX Runtime copies every slice and
every stack, so on the L = 1024 layer this halved the exported scan's time against the same arithmetic on
one (batch, D, L, N) tensor (unbind, stack, pad and slice of that tensor: ~40% of its bytes written).

Why not Mamba-2's SSD form ("segment sums"): it replaces the T steps of a chunk by a (T, T) matrix
exp(S_t - S_s) of cumulative log decays S (masked to -inf above the diagonal before the exponential, so
nothing overflows), which Mamba-2 shares across the state and head dims and turns into matmuls. Mamba-1's A
has one value per channel AND state, so here it is a (T, T, N) tensor per channel and chunk, T times the
work and the bytes of the recurrence: much slower in ONNX Runtime on the L = 1024 layer, as measured.
(Factoring exp(S_t - S_s) = exp(S_t) exp(-S_s) into a cumulative sum is no way out: exp(-S_s) overflows fp32
as soon as a chunk decays by e^88, within a few steps with Δ A ~ -11.)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_CHUNK_SIZE = 8


def steps(x: torch.Tensor, chunk_size: int, pad_value: float = 0.0) -> tuple[torch.Tensor, ...]:
    """(..., L) -> T tensors (..., K, 1): step t of every chunk of T = min(chunk_size, L) steps (at least 2;
    the last chunk padded with `pad_value`). The trailing 1 keeps a split without a squeeze (in ONNX: one
    Split node, no Squeeze per step)."""
    length = x.shape[-1]
    T = max(2, min(chunk_size, length))
    K = (length + T - 1) // T          # ceil; not -(-L // T): the exporter traces // as a truncating Div
    if K * T != length:
        x = F.pad(x, (0, K * T - length), value=pad_value)
    return x.reshape(*x.shape[:-1], K, T).split(1, dim=-1)


def from_steps(x: list[torch.Tensor], length: int) -> torch.Tensor:
    """T tensors (..., K, 1) -> (..., L): the inverse of `steps`, dropping the padding."""
    x = torch.cat(x, dim=-1).flatten(-2)                                  # (..., K·T)
    return x if x.shape[-1] == length else x[..., :length]


def chunked_states(a: list[torch.Tensor], v: list[torch.Tensor], chunk_size: int = DEFAULT_CHUNK_SIZE
                   ) -> list[torch.Tensor]:
    """All states of h_t = a_t h_{t-1} + v_t (h = 0 before the first step), the T steps of K chunks given as
    `steps` (lists of T tensors (..., K, 1), a_t ∈ [0, 1]); returns the T states h_t (..., K, 1).

    One level of chunking, then the same function on the K chunk-end states (chunks of chunks, cut with
    `chunk_size`), so the depth is log_T(L) and the graph has O(T log_T L) nodes whatever L is.
    """
    h, P = [v[0]], [a[0]]                                   # h from a zero state; P_t = Π_{r≤t} a_r
    for a_t, v_t in zip(a[1:], v[1:]):
        h.append(a_t * h[-1] + v_t)
        P.append(a_t * P[-1])
    K = h[0].shape[-2]
    if K > 1:
        # across chunks: H_k = Λ_k H_{k-1} + h_end_k with Λ_k = P_{T-1}, the same recurrence on the K chunk
        # ends (the padding of their last chunk: Λ = 1 and h_end = 0, the state just carries on)
        ends = chunked_states(steps(P[-1].flatten(-2), chunk_size, 1.0), steps(h[-1].flatten(-2), chunk_size),
                              chunk_size)
        H = from_steps(ends, K)                             # H_k                              (..., K)
        h_start = F.pad(H[..., :-1], (1, 0)).unsqueeze(-1)  # H_{k-1}, zero before chunk 0      (..., K, 1)
        h = [h_t + P_t * h_start for h_t, P_t in zip(h, P)]
    return h


def scan_chunked(u, delta, A, B, C, chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    """y_t = C_t h_t with h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t, h_{-1} = 0: the bare scan, (batch, D, L).

    Δ is the final step size (bias and softplus already applied), as for `scan_reference`. The padding of
    the last chunk has Δ = 0: Ā = 1 and B̄u = 0, the state just carries on (and is dropped at the end).
    """
    A = A[..., None, None]                                                # (D, N, 1, 1)
    a = [torch.exp(delta_t * A) for delta_t in steps(delta.unsqueeze(-2), chunk_size)]  # Ā_t (b, D, N, K, 1)
    v = [x_t * B_t for x_t, B_t in zip(steps((delta * u).unsqueeze(-2), chunk_size),    # B̄_t u_t = Δ_t u_t B_t
                                       steps(B.unsqueeze(-3), chunk_size))]
    h = chunked_states(a, v, chunk_size)                                  # h_t               (b, D, N, K, 1)
    y = [(h_t * C_t).sum(-3) for h_t, C_t in zip(h, steps(C.unsqueeze(-3), chunk_size))]  # C_t h_t (b, D, K, 1)
    return from_steps(y, u.shape[-1])                                     # (b, D, L)
