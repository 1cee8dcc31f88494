"""The selective scan as a chunked closed form of plain tensor ops: exportable to ONNX, fast on a CPU.

Why another backend: the "parallel" backend writes into slices of a tensor in place (the Blelloch scan) and
has a hand-written autograd Function; the "triton"/"cuda" backends are custom kernels. None of them export
to ONNX. This one is made only of elementwise ops, cumulative sums, reductions, pads and reshapes, so
`torch.onnx.export` traces it into an ordinary graph (`ulvm.export`), and autograd differentiates it as is.

Twins: the algorithm is Mamba-2's SSD "chunked" scan (Dao & Gu 2024, §6; `ssd_minimal_discrete` in
mamba_ssm/modules/ssd_minimal.py and the `chunk_scan` / `chunk_state` / `state_passing` kernels), adapted
to Mamba-1's diagonal A (one decay per channel AND state, where Mamba-2 has one scalar per head). The
semantics are those of mamba-ssm's `selective_scan_ref` (and our "reference" backend, `ulvm.ssm.scan`).

Glossary (as in `ulvm.ssm.scan`; T = chunk length, K = number of chunks = ceil(L / T)):

    u       x_t, the input sequence                  (batch, D, L)
    delta   Δ_t, the step size                       (batch, D, L)
    A       the diagonal state matrix, A < 0         (D, N)
    B, C    B_t, C_t                                 (batch, N, L)
    dA      Δ_t A = log Ā_t, the log decay of a step (batch, D, K, T, N)
    S       S_t = Σ_{r ≤ t, same chunk} Δ_r A        (batch, D, K, T, N)   cumulative log decay in a chunk
    x       Δ_t u_t, so that B̄_t u_t = B_t x_t       (batch, D, K, T)
    h       h_t, the state                           (batch, D, L, N)   (computed for all t, then C_t · h_t)

The maths. Unrolling h_t = Ā_t h_{t-1} + B_t x_t from the state h_0 at the start of a chunk:

    h_t = exp(S_t) h_0 + Σ_{s ≤ t} exp(S_t - S_s) B_s x_s          (Π_{r=s+1..t} Ā_r = exp(S_t - S_s))
    y_t = C_t h_t = Σ_n C_tn exp(S_tn) h_0n  +  Σ_{s ≤ t} [Σ_n C_tn B_sn exp(S_tn - S_sn)] x_s
          \\_____ from earlier chunks ____/     \\_____ within the chunk: a T×T matrix times x ______/

Factoring exp(S_t - S_s) = exp(S_t) · exp(-S_s) would turn the inner sum into a cumulative sum, but
exp(-S_s) overflows as soon as the chunk decays by more than e^88 (fp32), which Mamba reaches within a few
steps (Δ A ~ -11 with the official init). So `intra="segsum"` forms the "segment sums" S_t - S_s for every
pair (t, s) of a chunk, masks s > t to -inf and only then exponentiates: every factor is exp(≤ 0) ∈ [0, 1],
nothing overflows, strong decay just underflows to 0 (Mamba-2's `segsum` trick).

Mamba-1 is not Mamba-2, though: its A has one value per channel AND state (Mamba-2: one scalar per head),
so the segment sums are a (T, T, N) tensor per channel and chunk, T times the work of a recurrence, where
Mamba-2 shares one (T, T) matrix across the state and head dims and turns the rest into matmuls. Measured
(ONNX Runtime, 2 CPU threads, the L = 1024 layer) the SSD form is 5-20x slower than solving each chunk by
T unrolled steps h_t = Ā_t h_{t-1} + B̄_t u_t, each step vectorised over all K chunks at once. That is
`intra="recurrence"`, the default; it works in linear space (Ā ∈ [0, 1]: products only shrink) and also
needs no division, so it is as stable as the reference.

Across chunks (both modes): each chunk's end state from a zero start, h_end_k, and its total decay
Λ_k = S_{T-1} (Π Ā over the chunk) obey the SAME recurrence one level up, H_k = exp(Λ_k) H_{k-1} + h_end_k,
so the same function solves it on the K chunk-end states (chunks of chunks, depth log_T L); then the state
entering chunk k, H_{k-1}, decays into every position: h_t += exp(S_t) H_{k-1}. Finally y_t = C_t · h_t.
With a fixed L every loop unrolls at export into a static graph of ~T log_T(L) steps.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_CHUNK_SIZE = 16
INTRA = ("recurrence", "segsum")


def _causal_mask(size: int, device) -> torch.Tensor:
    """(size, size, 1) bool, True where s ≤ t (row t, column s): the pairs that contribute."""
    return torch.ones(size, size, dtype=torch.bool, device=device).tril().unsqueeze(-1)


def segment_decay(S: torch.Tensor) -> torch.Tensor:
    """exp(S_t - S_s) for s ≤ t, else 0, from cumulative log decays S (..., T, N) -> (..., T, T, N) [t, s, n].

    The difference is masked to -inf BEFORE the exponential: every factor is exp(≤ 0), nothing overflows.
    """
    diff = S.unsqueeze(-2) - S.unsqueeze(-3)                                # [..., t, s, n] = S_t - S_s
    return diff.masked_fill(~_causal_mask(S.shape[-2], S.device), float("-inf")).exp()


def chunked_states(log_a: torch.Tensor, v: torch.Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE,
                   intra: str = "recurrence") -> torch.Tensor:
    """All states of h_t = exp(log_a_t) h_{t-1} + v_t (h_{-1} = 0) along dim -2: (..., L, N) -> (..., L, N).

    One level of chunking, then the same function on the K chunk-end states (chunks of chunks), so the
    depth is log_T(L) and the graph has O(T log_T L) nodes whatever L is. `intra` solves one chunk:
        "segsum"      h_t = Σ_{s ≤ t} exp(S_t - S_s) v_s with the (T, T, N) masked segment sums (SSD form)
        "recurrence"  T unrolled steps h_t = Ā_t h_{t-1} + v_t, each on all chunks at once (in linear
                      space: Ā = exp(log_a) ∈ [0, 1], products only shrink, so no logs are needed)
    """
    if intra == "recurrence":
        return _states_recurrence(log_a.exp(), v, chunk_size)
    if intra == "segsum":
        return _states_segsum(log_a, v, chunk_size)
    raise ValueError(f"intra must be one of {INTRA}, not {intra!r}")


def _chunks(x: torch.Tensor, chunk_size: int, pad_value: float):
    """(..., L, N) -> (..., K, T, N), padding the time axis to K·T with `pad_value`."""
    *lead, length, d_state = x.shape
    T = max(2, min(chunk_size, length))
    K = -(-length // T)
    if K * T != length:
        x = F.pad(x, (0, 0, 0, K * T - length), value=pad_value)
    return x.reshape(*lead, K, T, d_state)


def _unchunk(x: torch.Tensor, length: int) -> torch.Tensor:
    """(..., K, T, N) -> (..., L, N), dropping the padding."""
    *lead, K, T, d_state = x.shape
    return x.reshape(*lead, K * T, d_state)[..., :length, :]


def _states_segsum(log_a, v, chunk_size):
    length = log_a.shape[-2]
    if length == 1:
        return v
    # padding: log Ā = 0 and v = 0, the state just carries on; the padded rows are dropped at the end
    log_a, v = _chunks(log_a, chunk_size, 0.0), _chunks(v, chunk_size, 0.0)  # (..., K, T, N)
    S = log_a.cumsum(-2)                                                     # S_t in its chunk
    h = (segment_decay(S) * v.unsqueeze(-3)).sum(-2)                         # 1. Σ_{s≤t} exp(S_t - S_s) v_s
    if h.shape[-3] > 1:
        # 2. across chunks: the chunk-end states H_k obey the same recurrence one level up,
        #    H_k = exp(Λ_k) H_{k-1} + h_end_k, with Λ_k = S_{T-1} the chunk's total log decay
        H = _states_segsum(S[..., -1, :], h[..., -1, :], chunk_size)         # (..., K, N)
        h_start = F.pad(H[..., :-1, :], (0, 0, 1, 0))                        # H_{k-1}, zero before chunk 0
        h = h + S.exp() * h_start.unsqueeze(-2)                              # 3. h_t += exp(S_t) h_start
    return _unchunk(h, length)


def _states_recurrence(a, v, chunk_size):
    length = a.shape[-2]
    if length == 1:
        return v
    a, v = _chunks(a, chunk_size, 1.0), _chunks(v, chunk_size, 0.0)          # Ā = 1, v = 0 on the padding
    a_t, v_t = a.unbind(-2), v.unbind(-2)                                    # T tensors (..., K, N)
    h, P = [v_t[0]], [a_t[0]]                                                # h from a zero state; P_t = Π_{r≤t} Ā_r
    for t in range(1, len(a_t)):
        h.append(a_t[t] * h[-1] + v_t[t])
        P.append(a_t[t] * P[-1])
    h = torch.stack(h, dim=-2)                                               # (..., K, T, N)
    if h.shape[-3] > 1:
        H = _states_recurrence(P[-1], h[..., -1, :], chunk_size)             # chunk-end states (..., K, N)
        h_start = F.pad(H[..., :-1, :], (0, 0, 1, 0))
        h = h + torch.stack(P, dim=-2) * h_start.unsqueeze(-2)               # h_t += P_t h_start
    return _unchunk(h, length)


def scan_chunked(u, delta, A, B, C, chunk_size: int = DEFAULT_CHUNK_SIZE, intra: str = "recurrence") -> torch.Tensor:
    """y_t = C_t h_t with h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t, h_{-1} = 0: the bare scan, (batch, D, L).

    Δ is the final step size (bias and softplus already applied), as for `scan_reference`.
    """
    log_a = delta.unsqueeze(-1) * A[:, None, :]                              # Δ_t A = log Ā_t  (b, D, L, N)
    v = (delta * u).unsqueeze(-1) * B.transpose(1, 2).unsqueeze(1)           # B̄_t u_t        (b, D, L, N)
    h = chunked_states(log_a, v, chunk_size, intra)                          # h_t             (b, D, L, N)
    return (h * C.transpose(1, 2).unsqueeze(1)).sum(-1)                      # y_t = C_t h_t   (b, D, L)
