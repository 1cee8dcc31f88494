"""The Parallel Vision Mamba (PVM) layer — the paper's key idea (Wu et al. 2024, §3.2, Fig. 3).

Twin of `PVMLayer` in the official `models/UltraLight_VM_UNet.py`. A Mamba block's parameters grow
with the square of its width (~6·d_model², see `ulvm.complexity.mamba_param_formula`). The PVM layer splits
the C input channels into `parallel` chunks of C/parallel channels and runs ONE shared Mamba of width
C/parallel on every chunk, so the Mamba costs ~1/parallel² of a full-width one; with parallel = 4 the Mamba
parameters drop by 1 - 1/16 = 93.75%. The book computes this in `notebooks/03_pvm_layer.ipynb`.

    tokens = LayerNorm(flatten(x))                                  (B, L=H·W, C)
    chunk_i = tokens[..., i·C/p:(i+1)·C/p]                          p chunks of (B, L, C/p)
    out_i = Mamba(chunk_i) + skip_scale · chunk_i                   the SAME Mamba and skip_scale for all i
    out = Linear(LayerNorm(concat_i out_i))                         the SAME LayerNorm as before the Mamba
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..ssm import Mamba


class PVMLayer(nn.Module):
    def __init__(self, input_dim: int, output_dim: int, d_state: int = 16, d_conv: int = 4,
                 expand: int = 2, parallel: int = 4, backend: str = "auto"):
        super().__init__()
        if input_dim % parallel:
            raise ValueError(f"PVMLayer: input_dim={input_dim} is not divisible by parallel={parallel}")
        self.input_dim, self.output_dim, self.parallel = input_dim, output_dim, parallel
        self.norm = nn.LayerNorm(input_dim)
        self.mamba = Mamba(d_model=input_dim // parallel, d_state=d_state, d_conv=d_conv, expand=expand,
                           backend=backend)
        self.proj = nn.Linear(input_dim, output_dim)
        self.skip_scale = nn.Parameter(torch.ones(1))
        # True: the p chunks as ONE Mamba call on p·B sequences (ours); False: one call per chunk, as the
        # official forward does (same result; `ulvm bench` times both).
        self.batch_chunks = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H, W)."""
        if x.dtype == torch.float16:   # as the official layer: the scan runs in fp32
            x = x.float()
        batch, channels, *spatial = x.shape
        p, width = self.parallel, channels // self.parallel
        tokens = self.norm(x.flatten(2).transpose(1, 2))                       # (B, L, C)
        length = tokens.shape[1]
        if self.batch_chunks:
            # The p chunks share every weight, so run them as ONE Mamba call on a batch of p·B sequences
            # (the official code loops over chunks; same result, p times fewer kernel launches).
            chunks = tokens.view(batch, length, p, width).permute(2, 0, 1, 3).reshape(p * batch, length, width)
            mixed = self.mamba(chunks) + self.skip_scale * chunks               # (p·B, L, C/p)
            mixed = mixed.view(p, batch, length, width).permute(1, 2, 0, 3).reshape(batch, length, channels)
        else:                                                                   # the official loop
            mixed = torch.cat([self.mamba(chunk) + self.skip_scale * chunk
                               for chunk in torch.chunk(tokens, p, dim=2)], dim=2)   # (B, L, C)
        out = self.proj(self.norm(mixed))                                       # (B, L, C_out)
        return out.transpose(1, 2).reshape(batch, self.output_dim, *spatial)
