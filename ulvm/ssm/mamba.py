"""The Mamba block in pure PyTorch, parameter-for-parameter compatible with mamba-ssm.

Twin of `mamba_ssm.modules.mamba_simple.Mamba` (mamba-ssm 2.x): same parameter names and shapes, same
initialisation, same forward math (its "slow path"), so a state dict saved from mamba-ssm's `Mamba`
loads here with `strict=True` and gives the same output. The selective scan inside is pluggable
(`backend=`, see `ulvm.ssm.scan`); with backend "cuda" the block calls mamba-ssm's fused kernels exactly as
mamba-ssm does. The book walks through it in `notebooks/02_mamba_block.ipynb` (its parameters:
`02_mamba_parameters.ipynb`).

Data flow for one block (B = batch, L = tokens, E = d_inner = expand * d_model, N = d_state, R = dt_rank):

    tokens (B, L, d_model) --in_proj--> x, z (B, E, L) each
    x --causal depthwise conv1d (width d_conv)--> SiLU --x_proj--> Δ' (R), B (N), C (N) per token
    Δ = softplus(dt_proj(Δ'))   (the bias of dt_proj is added inside the scan, as mamba-ssm does)
    y = selective_scan(x, Δ, A = -exp(A_log), B, C, D) * silu(z) --out_proj--> (B, L, d_model)
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .backends import resolve


class Mamba(nn.Module):
    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | str = "auto", dt_min: float = 0.001, dt_max: float = 0.1,
                 dt_init: str = "random", dt_scale: float = 1.0, dt_init_floor: float = 1e-4,
                 conv_bias: bool = True, bias: bool = False, use_fast_path: bool = True,
                 backend: str = "auto", device=None, dtype=None):
        factory = {"device": device, "dtype": dtype}
        super().__init__()
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank
        self.use_fast_path = use_fast_path     # only meaningful with backend "cuda": mamba-ssm's fused kernel
        self.backend = backend
        # Optional: called as scan_recorder(delta=Δ, gate=SiLU(z)), both (batch, E, L), on every forward
        # (`ulvm.model.explain`); None costs nothing. While set, mamba-ssm's fused block is not used (it
        # never exposes Δ).
        self.scan_recorder = None

        self.in_proj = nn.Linear(d_model, self.d_inner * 2, bias=bias, **factory)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, kernel_size=d_conv, groups=self.d_inner,
                                padding=d_conv - 1, bias=conv_bias, **factory)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **factory)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **factory)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)

        # Δ projection: weights keep the variance of Δ' at init; the bias is softplus^{-1}(dt) with dt
        # log-uniform in [dt_min, dt_max], so that at init Δ = softplus(bias) spans the time scales.
        dt_init_std = self.dt_rank ** -0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, dt_init_std)
        elif dt_init == "random":
            nn.init.uniform_(self.dt_proj.weight, -dt_init_std, dt_init_std)
        else:
            raise ValueError(f"dt_init must be 'constant' or 'random', not {dt_init!r}")
        dt = torch.exp(torch.rand(self.d_inner, **factory) * (math.log(dt_max) - math.log(dt_min))
                       + math.log(dt_min)).clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))   # inverse of softplus
        self.dt_proj.bias._no_reinit = True

        # S4D-real initialisation: A = -(1, 2, ..., N) for every channel, stored as log(-A) so A stays < 0.
        A = torch.arange(1, d_state + 1, dtype=torch.float32, device=device).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))                            # (E, N)
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner, device=device))     # (E,)
        self.D._no_weight_decay = True

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(batch, L, d_model) -> (batch, L, d_model)."""
        batch, length, _ = hidden_states.shape
        # in_proj as mamba-ssm computes it: one matmul, laid out so that each channel's sequence is contiguous
        xz = (self.in_proj.weight @ hidden_states.reshape(batch * length, -1).t())    # (2E, batch·L)
        xz = xz.view(-1, batch, length).transpose(0, 1)                   # (batch, 2E, L)
        if self.in_proj.bias is not None:
            xz = xz + self.in_proj.bias[:, None]
        A = -torch.exp(self.A_log.float())                                # (E, N), always < 0
        backend = resolve(self.backend, hidden_states)
        if backend.fused_block is not None and self.scan_recorder is None:   # mamba-ssm's fused block, when it can
            fused = backend.fused_block(self, xz, A)
            if fused is not None:
                return fused

        x, z = xz.chunk(2, dim=1)                                         # (batch, E, L) each
        fused_conv = backend.conv_silu(x, self.conv1d.weight, self.conv1d.bias) if backend.conv_silu else None
        x = fused_conv if fused_conv is not None else F.silu(self.conv1d(x)[..., :length])  # causal: drop look-ahead
        x_dbl = self.x_proj(x.transpose(1, 2))                            # (batch, L, R + 2N)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = self.dt_proj.weight @ dt.transpose(1, 2)                  # (batch, E, L), bias added in the scan
        if self.scan_recorder is not None:
            self.scan_recorder(delta=F.softplus(delta + self.dt_proj.bias[:, None].float()), gate=F.silu(z))
        # B and C as (batch, N, L) views of x_dbl: each backend lays them out as its kernel reads them
        y = backend.selective_scan(x, delta, A, B.transpose(1, 2), C.transpose(1, 2),
                                   self.D.float(), z=z, delta_bias=self.dt_proj.bias.float(),
                                   delta_softplus=True)                   # (batch, E, L)
        return self.out_proj(y.transpose(1, 2))                           # (batch, L, d_model)
