"""Small pieces of SSM theory the book computes with (`notebooks/01_ssm_theory.ipynb`).

A continuous linear time-invariant (LTI) state space model  h'(t) = A h(t) + B u(t),  y(t) = C h(t)  is
discretised with step Δ by zero-order hold (ZOH, S4/Mamba eq. 4):

    Ā = exp(ΔA)        B̄ = (ΔA)⁻¹ (exp(ΔA) − I) ΔB        (Mamba simplifies B̄ ≈ ΔB)

For an LTI model the recurrence h_k = Ā h_{k-1} + B̄ u_k, y_k = C h_k equals a causal convolution
y = K * u with kernel K_k = C Ā^k B̄. All functions take a diagonal A as a vector (N,), as S4D and Mamba do.
"""
from __future__ import annotations

import torch


def zoh_discretize(A: torch.Tensor, B: torch.Tensor, delta: float | torch.Tensor):
    """Exact ZOH for diagonal A (N,) and B (N,): returns (Ā, B̄), both (N,)."""
    dA = delta * A
    A_bar = torch.exp(dA)
    B_bar = (A_bar - 1) / A * B          # (ΔA)⁻¹(exp(ΔA) − I)ΔB, elementwise for a diagonal A
    return A_bar, B_bar


def euler_B(B: torch.Tensor, delta: float | torch.Tensor) -> torch.Tensor:
    """Mamba's simplification B̄ ≈ ΔB (first-order in Δ; exact ZOH differs by O(Δ²))."""
    return delta * B


def lti_recurrence(A_bar, B_bar, C, u: torch.Tensor) -> torch.Tensor:
    """y_k = C h_k with h_k = Ā h_{k-1} + B̄ u_k, one step at a time. u: (L,) -> y: (L,)."""
    h = torch.zeros_like(A_bar)
    ys = []
    for u_k in u:
        h = A_bar * h + B_bar * u_k
        ys.append((C * h).sum())
    return torch.stack(ys)


def lti_kernel(A_bar, B_bar, C, length: int) -> torch.Tensor:
    """The convolution kernel K_k = C Ā^k B̄ for k = 0..length-1, shape (length,)."""
    powers = A_bar[None, :] ** torch.arange(length, dtype=A_bar.dtype)[:, None]    # (L, N): Ā^k
    return (powers * (C * B_bar)[None, :]).sum(-1)


def causal_convolution(u: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """y_k = Σ_{j≤k} K_j u_{k-j} (the LTI model as a convolution). u, kernel: (L,) -> (L,)."""
    length = u.shape[0]
    y = torch.nn.functional.conv1d(u.view(1, 1, -1), kernel.flip(0).view(1, 1, -1), padding=length - 1)
    return y.view(-1)[:length]
