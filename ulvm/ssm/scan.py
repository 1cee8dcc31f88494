"""The selective scan (Mamba's S6 layer): one interface, three swappable backends.

Paper: Gu & Dao, "Mamba" (2023), Algorithm 2; the book explains it in `notebooks/01_ssm_theory.ipynb`.

Glossary (code name -> paper symbol), shapes as in mamba-ssm's `selective_scan_fn`:

    u       x_t, the input sequence             (batch, D, L)   D = d_inner channels, L = sequence length
    delta   Δ_t, the input-dependent step size  (batch, D, L)
    A       A, the (diagonal, real) state matrix (D, N)         N = d_state, the SSM state size
    B, C    B_t, C_t, input-dependent            (batch, N, L), or grouped (batch, G, N, L): channel d reads
            group d // (D/G), as in mamba-ssm. VMamba's SS2D runs its K = 4 scan directions as one call so:
            u (batch, K·D, L), A (K·D, N), B, C (batch, K, N, L).
    D       D, the skip connection               (D,)
    z       the gate, y <- y * silu(z)           (batch, D, L)
    x       h_t, the hidden state                (batch, D, N)

For every channel d and state n independently the scan computes (zero-order hold for A, Euler for B,
exactly as mamba-ssm does):

    Ā_t = exp(Δ_t A)        B̄_t = Δ_t B_t        h_t = Ā_t h_{t-1} + B̄_t u_t        y_t = C_t h_t + D u_t

Backends (each one object in `ulvm.ssm.backends`, which alone decides what runs):
    "reference"  the recurrence above, one time step at a time: the code the book quotes. Twin of
                 mamba-ssm's `selective_scan_ref` (mamba_ssm/ops/selective_scan_interface.py).
    "parallel"   the same recurrence as an associative scan (log2 L vectorised steps), with a hand-written
                 backward that is the same scan run backwards in time. Fast on CPU and GPU.
    "chunked"    a chunked closed form of plain tensor ops (Mamba-2's SSD algorithm), exportable to ONNX
                 (`ulvm.ssm.chunked_scan`, `ulvm.deploy.export`).
    "triton"     the whole scan (bias, softplus, discretisation, C h, D u, gate) as ONE fused Triton kernel
                 forward and one backward (`ulvm.ssm.triton_scan`); CUDA tensors, fp32. Our GPU default.
    "cuda"       mamba-ssm's fused CUDA kernel `selective_scan_fn`, when it imports and tensors are on CUDA.
    "auto"       on CUDA tensors "triton" where Triton imports, else "cuda" where mamba-ssm imports;
                 everywhere else "parallel". Logs its choice once.
"""
from __future__ import annotations

import torch

from .backends import resolve


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   backend: str = "auto") -> torch.Tensor:
    """y = SelectiveScan(u; Δ, A, B, C) + D u, gated by silu(z). Same semantics as mamba-ssm's `selective_scan_fn`.

    Shapes: u, delta, z (batch, D, L); A (D, N); B, C (batch, N, L) or grouped (batch, G, N, L) with G dividing
    D (every backend but "cpp" takes groups); D, delta_bias (D,). Returns (batch, D, L)
    in u's dtype. The pure-PyTorch backends compute in fp32 (fp64 inputs: in fp64), like mamba-ssm's kernel.
    """
    return resolve(backend, u).selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
