"""VM-UNet: Vision Mamba UNet (Ruan & Xiang 2024, arXiv 2402.02491), built on VMamba's 2-D selective scan.

Official code: github.com/JCruan519/VM-UNet, `models/vmunet/vmunet.py` (class `VMUNet`) and
`models/vmunet/vmamba.py` (`VSSM`, `VSSLayer`, `VSSLayer_up`, `VSSBlock`, `SS2D`, `PatchEmbed2D`,
`PatchMerging2D`, `PatchExpand2D`, `Final_PatchExpand2D`); the ISIC configuration of
`configs/config_setting.py`: depths (2, 2, 2, 2), depths_decoder (2, 2, 2, 1), drop_path_rate 0.2.
Authors' report (theirs, not ours): 27.43 M parameters and 4.11 GFLOPs at 256×256. Ours: 27,427,561
parameters and 4.112 thop GFLOPs. thop counts nothing of the selective scans (functions, not modules) nor of
the einsum projections, exactly as with the official code; `ulvm.complexity.gflops(method="full")` adds
Mamba blocks' work only, so for VM-UNet it equals the thop number. Checked once against the official `VSSM`
(built outside this repository with stand-ins for its unavailable imports and the same scan function): same
parameter names and shapes, identical outputs on a non-square input.

Glossary:
    SS2D     2-D selective scan: the image is read as four token sequences (row by row, column by column,
             and both reversed), each runs its own selective scan (own Δ, B, C projections, A and D), the four
             outputs are put back in row order and summed.
    VSS block  x + DropPath(SS2D(LayerNorm(x))) on channels-last maps (B, H, W, C).
    patch merging / expanding   2x2 space-to-depth + LayerNorm + Linear (C -> 2C, H/2) and its inverse
             (Linear C -> 2C, depth-to-space to C/2 channels at 2H, LayerNorm).

    stage           module                                        resolution   channels
    patch_embed     Conv 4x4 stride 4 + LayerNorm                  H/4          96      -> skip 0
    layers[0..3]    VSS blocks ×(2, 2, 2, 2), patch merging after 0-2   H/4..H/32   96, 192, 384, 768
                    (skips 1-3 are the inputs of layers 1-3)
    layers_up[0]    VSS blocks ×2                                  H/32         768
    layers_up[1-3]  (+ skip) patch expanding, VSS blocks ×(2, 2, 1)   H/16..H/4  384, 192, 96
    final_up        Linear 96 -> 384, depth-to-space ×4, LayerNorm  H           24
    final_conv      Conv1x1 (+ sigmoid)                            H            num_classes

Scan: `ulvm.ssm.selective_scan` with `backend=` passed through (reference, parallel, chunked, triton, cuda;
not "cpp", which takes no groups). SS2D's four directions are ONE grouped call, as in the official code
(`selective_scan_fn` with K = 4 groups): u (B, 4·E, L), A (4·E, N) and B, C (B, 4, N, L), each direction's
E channels reading their own B and C; each direction's arithmetic is that of a scan of its own.

Module and parameter names are the official ones (the wrapper's `vmunet.` prefix included), so an official
checkpoint loads with strict=True; the official init is kept too (truncated-normal Linear, LayerNorm 1/0,
Mamba's Δ/A/D init, PyTorch defaults for the convolutions and x_proj). Deviations: (1) the official ISIC
runs start the encoder and decoder from ImageNet-pretrained VMamba-S weights (vmamba_small_e238_ema.pth);
nothing here downloads them, so from-scratch training is the default (`VMUNet.load_from` is not
reproduced). (2) The official wrapper repeats a 1-channel input to 3 channels; ours builds the patch embedding
for `input_channels` instead.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ssm import selective_scan
from ._blocks import ScanBackendSwitch


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero a whole sample's residual branch with probability p, scale survivors by 1/(1-p)."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - p)
    return x * keep / (1 - p)


def _dt_bias(d_inner: int, dt_min: float = 0.001, dt_max: float = 0.1, floor: float = 1e-4) -> torch.Tensor:
    """softplus⁻¹(dt) with dt log-uniform in [dt_min, dt_max]: so that Δ = softplus(bias) starts there (Mamba)."""
    dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))


class SS2D(nn.Module):
    """(B, H, W, d_model) -> (B, H, W, d_model). Twin of the official `SS2D` (forward_corev0); E = expand·d_model,
    R = dt_rank, N = d_state, K = 4 directions, L = H·W.

        x, z = in_proj(x)                       (B, H, W, E) each
        x = SiLU(depthwise conv3x3(x))          (B, E, H, W)
        xs = the 4 orderings of x               (B, K, E, L)
        Δ', B, C = x_proj_weight[k] · xs[k]     (R, N, N per token);  Δ = dt_projs_weight[k] · Δ'
        y = selective_scan(xs, Δ, A, B, C, D, Δ-bias, softplus)   one call, K groups: y_k back in row order, summed
        out = out_proj(LayerNorm(y) · SiLU(z))
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 3, expand: int = 2, dt_rank="auto",
                 backend: str = "auto"):
        super().__init__()
        self.d_model, self.d_state = d_model, d_state
        self.d_inner = e = int(expand * d_model)
        self.dt_rank = r = math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank
        self.backend = backend
        k = 4
        self.in_proj = nn.Linear(d_model, 2 * e, bias=False)
        self.conv2d = nn.Conv2d(e, e, d_conv, padding=(d_conv - 1) // 2, groups=e, bias=True)
        bound = e ** -0.5                         # nn.Linear's default init, as the official per-direction Linears
        self.x_proj_weight = nn.Parameter(torch.empty(k, r + 2 * d_state, e).uniform_(-bound, bound))
        self.dt_projs_weight = nn.Parameter(torch.empty(k, e, r).uniform_(-r ** -0.5, r ** -0.5))
        self.dt_projs_bias = nn.Parameter(torch.stack([_dt_bias(e) for _ in range(k)]))       # (K, E)
        self.A_logs = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(k * e, 1))
        self.Ds = nn.Parameter(torch.ones(k * e))                                              # (K·E,)
        self.A_logs._no_weight_decay = self.Ds._no_weight_decay = True
        self.out_norm = nn.LayerNorm(e)
        self.out_proj = nn.Linear(e, d_model, bias=False)

    def scan_2d(self, x: torch.Tensor) -> torch.Tensor:
        """(B, E, H, W) -> (B, E, L): the four directional scans as ONE grouped selective scan (K = 4 groups
        of E channels, each group its own B, C, A, D and Δ-bias), each mapped back to row order, summed."""
        b, e, h, w = x.shape
        length, n, k = h * w, self.d_state, 4
        rows, cols = x.reshape(b, e, length), x.transpose(2, 3).reshape(b, e, length)
        xs = torch.stack([rows, cols, rows.flip(-1), cols.flip(-1)], dim=1)                    # (B, K, E, L)
        x_dbl = torch.einsum("bkel,kce->bkcl", xs, self.x_proj_weight)                       # (B, K, R+2N, L)
        dts, Bs, Cs = torch.split(x_dbl, [self.dt_rank, n, n], dim=2)                        # Bs, Cs (B, K, N, L)
        dts = torch.einsum("bkrl,ker->bkel", dts, self.dt_projs_weight)                      # (B, K, E, L)
        ys = selective_scan(xs.view(b, k * e, length), dts.reshape(b, k * e, length),
                            -torch.exp(self.A_logs.float()), Bs, Cs, self.Ds.float(),        # A (K·E, N), D (K·E,)
                            delta_bias=self.dt_projs_bias.float().view(-1), delta_softplus=True,
                            backend=self.backend).view(b, k, e, length)                      # (B, K, E, L)

        def from_cols(y):                      # column-order sequence -> row order
            return y.view(b, e, w, h).transpose(2, 3).reshape(b, e, length)
        return ys[:, 0] + ys[:, 2].flip(-1) + from_cols(ys[:, 1]) + from_cols(ys[:, 3].flip(-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        x, z = self.in_proj(x).chunk(2, dim=-1)                                               # (B, H, W, E)
        x = F.silu(self.conv2d(x.permute(0, 3, 1, 2).contiguous()))                           # (B, E, H, W)
        y = self.scan_2d(x).transpose(1, 2).reshape(b, h, w, -1)                              # (B, H, W, E)
        return self.out_proj(self.out_norm(y) * F.silu(z))


class VSSBlock(nn.Module):
    """x + DropPath(SS2D(LayerNorm(x))) on (B, H, W, C). Twin of the official `VSSBlock`."""

    def __init__(self, hidden_dim: int, drop_path: float = 0.0, d_state: int = 16, backend: str = "auto"):
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden_dim)
        self.self_attention = SS2D(hidden_dim, d_state=d_state, backend=backend)
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + drop_path(self.self_attention(self.ln_1(x)), self.drop_path, self.training)


class PatchEmbed2D(nn.Module):
    """(B, C_in, H, W) -> (B, H/4, W/4, C) by a 4x4 stride-4 conv, then LayerNorm."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int = 4):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class PatchMerging2D(nn.Module):
    """(B, H, W, C) -> (B, H/2, W/2, 2C): the four pixels of each 2x2 cell side by side (order (0,0), (1,0),
    (0,1), (1,1)), LayerNorm(4C), Linear 4C -> 2C without bias."""

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class PatchExpand(nn.Module):
    """(B, H, W, C) -> (B, s·H, s·W, C/s): Linear C -> s·C without bias, depth-to-space by s (channel index
    = (row offset · s + column offset) · C/s² + c), LayerNorm. Twin of `PatchExpand2D` (s = 2, built with
    dim = C/2) and `Final_PatchExpand2D` (s = 4)."""

    def __init__(self, dim: int, scale: int):
        super().__init__()
        self.scale = scale
        self.expand = nn.Linear(dim, scale * dim, bias=False)
        self.norm = nn.LayerNorm(dim // scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        s = self.scale
        x = self.expand(x).view(b, h, w, s, s, c // s).permute(0, 1, 3, 2, 4, 5).reshape(b, h * s, w * s, c // s)
        return self.norm(x)


class VSSLayer(nn.Module):
    """VSS blocks, then (encoder) patch merging; or (decoder, `upsample`) patch expanding, then VSS blocks.
    Twin of `VSSLayer` / `VSSLayer_up` (names blocks, downsample, upsample)."""

    def __init__(self, dim: int, drop_paths, downsample: bool = False, upsample: bool = False,
                 backend: str = "auto"):
        super().__init__()
        self.blocks = nn.ModuleList(VSSBlock(dim, p, backend=backend) for p in drop_paths)
        if downsample:
            self.downsample = PatchMerging2D(dim)
        if upsample:
            self.upsample = PatchExpand(2 * dim, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "upsample"):
            x = self.upsample(x)
        for block in self.blocks:
            x = block(x)
        return self.downsample(x) if hasattr(self, "downsample") else x


def _vmamba_init_(module: nn.Module) -> None:
    """The official `VSSM._init_weights`: Linear truncated normal (std 0.02) with bias 0, LayerNorm 1 / 0."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class VSSM(nn.Module):
    """The U-shaped net of VM-UNet: (B, C_in, H, W) -> (B, num_classes, H, W) logits. Twin of `VSSM`."""

    def __init__(self, in_chans: int = 3, num_classes: int = 1, depths=(2, 2, 2, 2), depths_decoder=(2, 2, 2, 1),
                 dims=(96, 192, 384, 768), drop_path_rate: float = 0.2, backend: str = "auto"):
        super().__init__()
        dims_decoder = dims[::-1]
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        rates_decoder = torch.linspace(0, drop_path_rate, sum(depths_decoder)).tolist()[::-1]
        self.patch_embed = PatchEmbed2D(in_chans, dims[0])
        self.layers = nn.ModuleList(
            VSSLayer(dims[i], rates[sum(depths[:i]):sum(depths[:i + 1])], downsample=i < len(depths) - 1,
                     backend=backend) for i in range(len(depths)))
        self.layers_up = nn.ModuleList(
            VSSLayer(dims_decoder[i], rates_decoder[sum(depths_decoder[:i]):sum(depths_decoder[:i + 1])],
                     upsample=i > 0, backend=backend) for i in range(len(depths_decoder)))
        self.final_up = PatchExpand(dims_decoder[-1], 4)
        self.final_conv = nn.Conv2d(dims_decoder[-1] // 4, num_classes, 1)
        self.apply(_vmamba_init_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)                                  # (B, H/4, W/4, 96)
        skips = []
        for layer in self.layers:                                # skips: inputs of layers 0..3
            skips.append(x)
            x = layer(x)                                         # ends at (B, H/32, W/32, 768)
        for i, layer in enumerate(self.layers_up):
            x = layer(x if i == 0 else x + skips[-i])            # + 768 @H/32, 384 @H/16, 192 @H/8
        x = self.final_up(x).permute(0, 3, 1, 2)                 # (B, 24, H, W)
        return self.final_conv(x)


class VMUNet(ScanBackendSwitch, nn.Module):
    """VM-UNet with the official wrapper's interface: sigmoid probabilities for one class, logits otherwise."""

    def __init__(self, num_classes: int = 1, input_channels: int = 3, depths=(2, 2, 2, 2),
                 depths_decoder=(2, 2, 2, 1), drop_path_rate: float = 0.2, backend: str = "auto"):
        super().__init__()
        self.num_classes = num_classes
        self.vmunet = VSSM(input_channels, num_classes, depths, depths_decoder, drop_path_rate=drop_path_rate,
                           backend=backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W), H and W multiples of 32 -> (B, num_classes, H, W)."""
        logits = self.vmunet(x)
        return torch.sigmoid(logits) if self.num_classes == 1 else logits
