"""The selective scan as two Triton kernels (forward, backward): the one place that imports triton.

Imported only by `ulvm.ssm.triton_scan` when the "triton" backend runs. Notation as in `ulvm.ssm.scan`
(u, Δ, A, B, C, D, z; h the state, N = d_state, L = tokens). One program handles one (sequence b,
channel d) row and walks along L in chunks of BLOCK_L steps; inside a chunk the recurrence

    h_t = Ā_t h_{t-1} + B̄_t u_t,   Ā_t = exp(Δ_t A),   B̄_t u_t = Δ_t B_t u_t

is solved for all N states and BLOCK_L steps at once with `tl.associative_scan` over the pairs
(Ā_t, B̄_t u_t), and the state at the chunk's end is carried into the next chunk. Everything between the
raw Δ and the gated output (bias, softplus, discretisation, C_t h_t, D u_t, silu(z)) happens in registers:
one kernel where the pure-PyTorch parallel scan runs ~180 ops. Twin of mamba-ssm's `selective_scan_fwd_kernel` /
`selective_scan_bwd_kernel` (csrc/selective_scan), which also carry chunk states and recompute h in the
backward; theirs runs 32-128 threads along L per row, these run one row per program with L in registers.
"""
import triton
import triton.language as tl


@triton.jit
def _compose(a_first, b_first, a_then, b_then):
    # the step h -> a h + b, composed: "(a1, b1) then (a2, b2)" = (a2 a1, a2 b1 + b2)
    return a_first * a_then, a_then * b_first + b_then


@triton.jit
def _step_size(delta_ptr, offsets, mask, bias, SOFTPLUS: tl.constexpr):
    """Δ = softplus(delta + bias) (mamba-ssm's threshold 20), 0 outside the sequence. Returns (Δ, delta + bias)."""
    raw = tl.load(delta_ptr + offsets, mask=mask, other=0.0) + bias
    if SOFTPLUS:
        # log(1 + e^x), written so that it loses nothing far below 0 either (log1p(e^x) ~ e^x there)
        dt = tl.where(raw > 20.0, raw, tl.where(raw < -15.0, tl.exp(raw), tl.log(1.0 + tl.exp(raw))))
    else:
        dt = raw
    return tl.where(mask, dt, 0.0), raw


@triton.jit
def _states(u, dt, A, B, h_before):
    """h_t for every state and step of one chunk, (BLOCK_N, BLOCK_L), given h just before the chunk."""
    a = tl.exp(dt[None, :] * A[:, None])                      # Ā_t
    bu = (dt * u)[None, :] * B                                # B̄_t u_t
    decay, h_local = tl.associative_scan((a, bu), axis=1, combine_fn=_compose)
    return h_local + decay * h_before[:, None], bu            # h_t = (Ā_t...Ā_first) h_before + local part


@triton.jit
def _row(row, A_ptr, D_ptr, bias_ptr, n_channels, group_channels, length, n_state,
         HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr):
    """What one program (row = b * D + d) needs: offsets, state indices and its channel's A, bias and D.
    B and C are (batch, G, N, L) with G = D / group_channels ((batch, N, L) is G = 1): row // group_channels
    is the (b, g) pair whose B and C the row reads."""
    seq = row.to(tl.int64) * length                           # row's offset in u, Δ, z, y   (batch, D, L)
    bc = (row // group_channels).to(tl.int64) * n_state * length   # its (b, g) offset in B, C  (batch, G, N, L)
    d = row % n_channels
    n = tl.arange(0, BLOCK_N)
    n_ok = n < n_state                                        # N padded to a power of two
    A = tl.load(A_ptr + d * n_state + n, mask=n_ok, other=0.0)   # (N,); A = 0 on padding: Ā = 1, B = 0
    bias = 0.0
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d)
    skip = 0.0
    if HAS_D:
        skip = tl.load(D_ptr + d)
    return seq, bc, n, n_ok, A, bias, skip


@triton.jit
def selective_scan_fwd(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, y_ptr, states_ptr,
                       n_channels, group_channels, length, n_state, n_chunks,
                       HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                       SOFTPLUS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr):
    row = tl.program_id(0)
    seq, bc, n, n_ok, A, bias, skip = _row(row, A_ptr, D_ptr, bias_ptr, n_channels, group_channels, length,
                                           n_state, HAS_D, HAS_BIAS, BLOCK_N)
    steps = tl.arange(0, BLOCK_L)
    h = tl.zeros([BLOCK_N], dtype=tl.float32)                              # h_{-1} = 0
    for chunk in range(0, n_chunks):
        # the state entering this chunk: all the backward needs to recompute h inside it
        tl.store(states_ptr + (row * n_chunks + chunk) * BLOCK_N + n, h)
        t = chunk * BLOCK_L + steps
        t_ok = t < length
        nt, nt_ok = n[:, None] * length + t[None, :], n_ok[:, None] & t_ok[None, :]
        u = tl.load(u_ptr + seq + t, mask=t_ok, other=0.0)
        dt, _ = _step_size(delta_ptr + seq, t, t_ok, bias, SOFTPLUS)      # Δ_t = 0 past L: h passes through
        B = tl.load(B_ptr + bc + nt, mask=nt_ok, other=0.0)                # (N, BLOCK_L)
        C = tl.load(C_ptr + bc + nt, mask=nt_ok, other=0.0)
        hs, _ = _states(u, dt, A, B, h)
        y = tl.sum(hs * C, axis=0)                                         # y_t = C_t h_t
        if HAS_D:
            y += skip * u
        if HAS_Z:
            z = tl.load(z_ptr + seq + t, mask=t_ok, other=0.0)
            y = y * z * tl.sigmoid(z)
        tl.store(y_ptr + seq + t, y, mask=t_ok)
        h = tl.sum(tl.where(steps[None, :] == BLOCK_L - 1, hs, 0.0), axis=1)   # h at the chunk's last step


@triton.jit
def selective_scan_bwd(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, states_ptr, dy_ptr,
                       du_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dz_ptr,
                       n_channels, group_channels, length, n_state, n_chunks,
                       HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                       SOFTPLUS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr):
    """Chunks from last to first. With g_t = dLoss/dy_t (before the gate: times silu(z_t)), the adjoint
    λ_t = dLoss/dh_t obeys λ_t = C_t g_t + Ā_{t+1} λ_{t+1}: the same scan, reversed in time. Then
    dLoss/d(B̄_t u_t) = λ_t and dLoss/d(Δ_t A) = λ_t Ā_t h_{t-1} = λ_t (h_t - B̄_t u_t) (no h_{t-1} needed).
    dB and dC sum over the channels of a (sequence, group): atomic adds, as in mamba-ssm. dA and dD are written
    per row and summed over the batch by the caller."""
    row = tl.program_id(0)
    seq, bc, n, n_ok, A, bias, skip = _row(row, A_ptr, D_ptr, bias_ptr, n_channels, group_channels, length,
                                           n_state, HAS_D, HAS_BIAS, BLOCK_N)
    steps = tl.arange(0, BLOCK_L)
    lam_after = tl.zeros([BLOCK_N], dtype=tl.float32)     # λ at the first step of the chunk after this one
    dA = tl.zeros([BLOCK_N], dtype=tl.float32)
    dD = tl.zeros([BLOCK_L], dtype=tl.float32)
    for i in range(0, n_chunks):
        chunk = n_chunks - 1 - i
        t = chunk * BLOCK_L + steps
        t_ok = t < length
        nt, nt_ok = n[:, None] * length + t[None, :], n_ok[:, None] & t_ok[None, :]
        u = tl.load(u_ptr + seq + t, mask=t_ok, other=0.0)
        dt, raw = _step_size(delta_ptr + seq, t, t_ok, bias, SOFTPLUS)
        B = tl.load(B_ptr + bc + nt, mask=nt_ok, other=0.0)
        C = tl.load(C_ptr + bc + nt, mask=nt_ok, other=0.0)
        h_before = tl.load(states_ptr + (row * n_chunks + chunk) * BLOCK_N + n)
        hs, bu = _states(u, dt, A, B, h_before)                           # recomputed h_t (N, BLOCK_L)

        g = tl.load(dy_ptr + seq + t, mask=t_ok, other=0.0)               # dLoss/dy_t
        if HAS_Z:
            z = tl.load(z_ptr + seq + t, mask=t_ok, other=0.0)
            gate = tl.sigmoid(z)
            y_ungated = tl.sum(hs * C, axis=0) + skip * u
            tl.store(dz_ptr + seq + t, g * y_ungated * gate * (1.0 + z * (1.0 - gate)), mask=t_ok)
            g = g * z * gate                                              # through y = y_ungated · silu(z)

        t_next_ok = t + 1 < length
        dt_next, _ = _step_size(delta_ptr + seq, t + 1, t_next_ok, bias, SOFTPLUS)
        a_next = tl.where(t_next_ok[None, :], tl.exp(dt_next[None, :] * A[:, None]), 0.0)   # Ā_{t+1}, 0 at the end
        growth, lam_local = tl.associative_scan((a_next, g[None, :] * C), axis=1, combine_fn=_compose,
                                                reverse=True)
        lam = lam_local + growth * lam_after[:, None]                      # λ_t (N, BLOCK_L)
        lam_after = tl.sum(tl.where(steps[None, :] == 0, lam, 0.0), axis=1)

        tl.atomic_add(dC_ptr + bc + nt, g[None, :] * hs, mask=nt_ok)     # dLoss/dC_t = g_t h_t
        tl.atomic_add(dB_ptr + bc + nt, lam * (dt * u)[None, :], mask=nt_ok)   # dLoss/dB_t = λ_t Δ_t u_t
        lam_B = tl.sum(lam * B, axis=0)                                    # Σ_n λ_t B_t
        lam_a_h = lam * (hs - bu)                                          # λ_t Ā_t h_{t-1}
        d_dt = tl.sum(lam_a_h * A[:, None], axis=0) + lam_B * u           # dLoss/dΔ_t
        dA += tl.sum(lam_a_h * dt[None, :], axis=1)
        dD += g * u
        if SOFTPLUS:
            d_dt = d_dt * tl.sigmoid(raw)
        tl.store(du_ptr + seq + t, lam_B * dt + g * skip, mask=t_ok)
        tl.store(ddelta_ptr + seq + t, d_dt, mask=t_ok)
    tl.store(dA_ptr + row * BLOCK_N + n, dA)
    tl.store(dD_ptr + row, tl.sum(dD, axis=0))
