"""The selective scan as two Triton kernels (forward, backward): the one place that imports triton.

Imported only by `ulvm.ssm.triton_scan` when the "triton" backend runs. Notation as in `ulvm.ssm.scan`
(u, Δ, A, B, C, D, z; h the state, N = d_state, L = tokens). One program handles BLOCK_D neighbouring
(sequence b, channel d) rows that read the same B and C and walks along L in chunks of BLOCK_L steps;
inside a chunk the recurrence

    h_t = Ā_t h_{t-1} + B̄_t u_t,   Ā_t = exp(Δ_t A),   B̄_t u_t = Δ_t B_t u_t

is solved for all BLOCK_D channels, N states and BLOCK_L steps at once with `tl.associative_scan` over the
pairs (Ā_t, B̄_t u_t), and the state at the chunk's end is carried into the next chunk. B and C are loaded
once for the BLOCK_D channels, and the backward sums their dB and dC contributions before its atomic adds.
Everything between the raw Δ and the gated output (bias, softplus, discretisation, C_t h_t, D u_t, silu(z))
happens in registers: one kernel where the pure-PyTorch parallel scan runs ~180 ops. Twin of mamba-ssm's
`selective_scan_fwd_kernel` / `selective_scan_bwd_kernel` (csrc/selective_scan), which also carry chunk
states and recompute h in the backward; theirs runs 32-128 threads along L per row, these run BLOCK_D rows
per program with L in registers.
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
    """h_t for every channel, state and step of one chunk, (BLOCK_D, BLOCK_N, BLOCK_L), given h just before
    the chunk (BLOCK_D, BLOCK_N); u, dt (BLOCK_D, BLOCK_L), A (BLOCK_D, BLOCK_N), B (BLOCK_N, BLOCK_L)."""
    a = tl.exp(dt[:, None, :] * A[:, :, None])                # Ā_t
    bu = (dt * u)[:, None, :] * B[None, :, :]                 # B̄_t u_t
    decay, h_local = tl.associative_scan((a, bu), axis=2, combine_fn=_compose)
    return h_local + decay * h_before[:, :, None], bu         # h_t = (Ā_t...Ā_first) h_before + local part


@triton.jit
def _rows(program, A_ptr, D_ptr, bias_ptr, n_channels, group_channels, length, n_state,
          HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """What one program needs for its BLOCK_D rows (row = b * D + d; BLOCK_D divides D / G): the rows, their
    offsets, state indices, and their channels' A, bias and D. B and C are (batch, G, N, L) with
    G = D / group_channels ((batch, N, L) is G = 1): row // group_channels is the (b, g) pair they read."""
    row = program * BLOCK_D + tl.arange(0, BLOCK_D)
    seq = row.to(tl.int64) * length                           # the rows' offsets in u, Δ, z, y  (batch, D, L)
    bc = ((program * BLOCK_D) // group_channels).to(tl.int64) * n_state * length   # (b, g) in B, C  (batch, G, N, L)
    d = row % n_channels
    n = tl.arange(0, BLOCK_N)
    n_ok = n < n_state                                        # N padded to a power of two
    A = tl.load(A_ptr + d[:, None] * n_state + n[None, :], mask=n_ok[None, :], other=0.0)  # (BLOCK_D, N);
    bias = tl.zeros([BLOCK_D], dtype=tl.float32)                                             # A = 0 on padding
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d)
    skip = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_D:
        skip = tl.load(D_ptr + d)
    return row, seq, bc, n, n_ok, A, bias, skip


@triton.jit
def selective_scan_fwd(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, y_ptr, states_ptr,
                       n_channels, group_channels, length, n_state, n_chunks,
                       HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                       SOFTPLUS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
                       BLOCK_D: tl.constexpr):
    row, seq, bc, n, n_ok, A, bias, skip = _rows(tl.program_id(0), A_ptr, D_ptr, bias_ptr, n_channels,
                                                 group_channels, length, n_state, HAS_D, HAS_BIAS, BLOCK_N, BLOCK_D)
    steps = tl.arange(0, BLOCK_L)
    h = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)                     # h_{-1} = 0
    for chunk in range(0, n_chunks):
        # the state entering this chunk: all the backward needs to recompute h inside it
        tl.store(states_ptr + (row[:, None] * n_chunks + chunk) * BLOCK_N + n[None, :], h)
        t = chunk * BLOCK_L + steps
        t_ok = t < length
        nt, nt_ok = n[:, None] * length + t[None, :], n_ok[:, None] & t_ok[None, :]
        dl, dl_ok = seq[:, None] + t[None, :], (row[:, None] >= 0) & t_ok[None, :]   # (BLOCK_D, BLOCK_L)
        u = tl.load(u_ptr + dl, mask=dl_ok, other=0.0)
        dt, _ = _step_size(delta_ptr, dl, dl_ok, bias[:, None], SOFTPLUS)  # Δ_t = 0 past L: h passes through
        B = tl.load(B_ptr + bc + nt, mask=nt_ok, other=0.0)                # (N, BLOCK_L), shared by the rows
        C = tl.load(C_ptr + bc + nt, mask=nt_ok, other=0.0)
        hs, _ = _states(u, dt, A, B, h)
        y = tl.sum(hs * C[None, :, :], axis=1)                             # y_t = C_t h_t  (BLOCK_D, BLOCK_L)
        if HAS_D:
            y += skip[:, None] * u
        if HAS_Z:
            z = tl.load(z_ptr + dl, mask=dl_ok, other=0.0)
            y = y * z * tl.sigmoid(z)
        tl.store(y_ptr + dl, y, mask=dl_ok)
        h = tl.sum(tl.where(steps[None, None, :] == BLOCK_L - 1, hs, 0.0), axis=2)   # h at the chunk's last step


@triton.jit
def selective_scan_bwd(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, states_ptr, dy_ptr,
                       du_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dz_ptr,
                       n_channels, group_channels, length, n_state, n_chunks,
                       HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                       SOFTPLUS: tl.constexpr, PER_PROGRAM: tl.constexpr, BLOCK_N: tl.constexpr,
                       BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr):
    """Chunks from last to first. With g_t = dLoss/dy_t (before the gate: times silu(z_t)), the adjoint
    λ_t = dLoss/dh_t obeys λ_t = C_t g_t + Ā_{t+1} λ_{t+1}: the same scan, reversed in time. Then
    dLoss/d(B̄_t u_t) = λ_t and dLoss/d(Δ_t A) = λ_t Ā_t h_{t-1} = λ_t (h_t - B̄_t u_t) (no h_{t-1} needed).
    dB and dC sum over the channels of a (sequence, group): summed over the program's BLOCK_D channels, then
    atomic adds across programs, as in mamba-ssm, whose order varies from run to run; with PER_PROGRAM each
    program writes its own (N, L) part instead (dB_ptr, dC_ptr then hold one part per program) and the caller
    sums them in a fixed order: deterministic. dA and dD are written per row and summed over the batch by the
    caller."""
    row, seq, bc, n, n_ok, A, bias, skip = _rows(tl.program_id(0), A_ptr, D_ptr, bias_ptr, n_channels,
                                                 group_channels, length, n_state, HAS_D, HAS_BIAS, BLOCK_N, BLOCK_D)
    steps = tl.arange(0, BLOCK_L)
    lam_after = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)   # λ at the first step of the chunk after this one
    dA = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    dD = tl.zeros([BLOCK_D, BLOCK_L], dtype=tl.float32)
    for i in range(0, n_chunks):
        chunk = n_chunks - 1 - i
        t = chunk * BLOCK_L + steps
        t_ok = t < length
        nt, nt_ok = n[:, None] * length + t[None, :], n_ok[:, None] & t_ok[None, :]
        dl, dl_ok = seq[:, None] + t[None, :], (row[:, None] >= 0) & t_ok[None, :]   # (BLOCK_D, BLOCK_L)
        u = tl.load(u_ptr + dl, mask=dl_ok, other=0.0)
        dt, raw = _step_size(delta_ptr, dl, dl_ok, bias[:, None], SOFTPLUS)
        B = tl.load(B_ptr + bc + nt, mask=nt_ok, other=0.0)
        C = tl.load(C_ptr + bc + nt, mask=nt_ok, other=0.0)
        h_before = tl.load(states_ptr + (row[:, None] * n_chunks + chunk) * BLOCK_N + n[None, :])
        hs, bu = _states(u, dt, A, B, h_before)                           # recomputed h_t (D, N, BLOCK_L)

        g = tl.load(dy_ptr + dl, mask=dl_ok, other=0.0)                   # dLoss/dy_t
        if HAS_Z:
            z = tl.load(z_ptr + dl, mask=dl_ok, other=0.0)
            gate = tl.sigmoid(z)
            y_ungated = tl.sum(hs * C[None, :, :], axis=1) + skip[:, None] * u
            tl.store(dz_ptr + dl, g * y_ungated * gate * (1.0 + z * (1.0 - gate)), mask=dl_ok)
            g = g * z * gate                                              # through y = y_ungated · silu(z)

        next_ok = (row[:, None] >= 0) & (t[None, :] + 1 < length)
        dt_next, _ = _step_size(delta_ptr, dl + 1, next_ok, bias[:, None], SOFTPLUS)
        # Ā_{t+1}, 0 at the end
        a_next = tl.where(next_ok[:, None, :], tl.exp(dt_next[:, None, :] * A[:, :, None]), 0.0)
        growth, lam_local = tl.associative_scan((a_next, g[:, None, :] * C[None, :, :]), axis=2,
                                                combine_fn=_compose, reverse=True)
        lam = lam_local + growth * lam_after[:, :, None]                   # λ_t (D, N, BLOCK_L)
        lam_after = tl.sum(tl.where(steps[None, None, :] == 0, lam, 0.0), axis=2)

        dC_part = tl.sum(g[:, None, :] * hs, axis=0)                      # dLoss/dC_t = Σ_d g_t h_t
        dB_part = tl.sum(lam * (dt * u)[:, None, :], axis=0)              # dLoss/dB_t = Σ_d λ_t Δ_t u_t
        if PER_PROGRAM:                                                    # this program's part, summed later
            part = tl.program_id(0).to(tl.int64) * n_state * length
            tl.store(dC_ptr + part + nt, dC_part, mask=nt_ok)
            tl.store(dB_ptr + part + nt, dB_part, mask=nt_ok)
        else:
            tl.atomic_add(dC_ptr + bc + nt, dC_part, mask=nt_ok)
            tl.atomic_add(dB_ptr + bc + nt, dB_part, mask=nt_ok)
        lam_B = tl.sum(lam * B[None, :, :], axis=1)                        # Σ_n λ_t B_t   (D, BLOCK_L)
        lam_a_h = lam * (hs - bu)                                          # λ_t Ā_t h_{t-1}
        d_dt = tl.sum(lam_a_h * A[:, :, None], axis=1) + lam_B * u        # dLoss/dΔ_t
        dA += tl.sum(lam_a_h * dt[:, None, :], axis=2)
        dD += g * u
        if SOFTPLUS:
            d_dt = d_dt * tl.sigmoid(raw)
        tl.store(du_ptr + dl, lam_B * dt + g * skip[:, None], mask=dl_ok)
        tl.store(ddelta_ptr + dl, d_dt, mask=dl_ok)
    tl.store(dA_ptr + row[:, None] * BLOCK_N + n[None, :], dA)
    tl.store(dD_ptr + row, tl.sum(dD, axis=1))
