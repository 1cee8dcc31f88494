"""UltraLight VM-UNet (Wu et al. 2024, §3.1, Fig. 2): a 6-stage U-shaped net with PVM layers in its deep stages.

Twin of `UltraLight_VM_UNet` in the official `models/UltraLight_VM_UNet.py`: same modules, same state-dict
keys (an official checkpoint loads with `strict=True`), same forward pass and the same initialisation.
With the default channels (8, 16, 24, 32, 48, 64) and `parallel` = 1 / 2 / 4 it has 136,269 / 69,589 /
49,457 parameters (the paper's PVM-layer table). `width` scales every stage (`scale_channels`; the book's
"How small can it get" chapter). Walkthrough: `notebooks/03_pvm_layer.ipynb`.

    stage        module            resolution (256² input)   channels
    encoder1-3   Conv3x3 + GN + max-pool + GELU   128², 64², 32²    8, 16, 24
    encoder4-5   PVM + GN + max-pool + GELU       16², 8²           32, 48
    encoder6     PVM + GELU                       8²                64
    bridge       SC_Att_Bridge on the 5 skips t1..t5
    decoder1-3   PVM + GN (+ bilinear up) + GELU, + skip        8², 16², 32²    48, 32, 24
    decoder4-5   Conv3x3 + GN + bilinear up + GELU, + skip      64², 128²       16, 8
    final        Conv1x1 + bilinear up + sigmoid                256²            num_classes

`mixer="conv"` builds the same U-Net with 3x3 convolutions in place of every PVM layer: the plain baseline
of the paper's plug-and-play claim (replacing convolutions by PVM layers), compared in chapter 03.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .bridge import SC_Att_Bridge
from .pvm import PVMLayer

PAPER_CHANNELS = (8, 16, 24, 32, 48, 64)
CHANNEL_MULTIPLE = 4   # GroupNorm's 4 groups and the largest PVM split (parallel 4) both divide every stage


def scale_channels(channels=PAPER_CHANNELS, width: float = 1.0) -> tuple[int, ...]:
    """The six stage widths of a model `width` times as wide: each `c · width` rounded to the nearest multiple
    of 4 (halves round up), and at least 4.

    Why 4: every stage feeds a GroupNorm of 4 groups and a PVM layer splits its channels into 1, 2 or 4
    chunks, so a multiple of 4 works for every PVM setting, and ×1, ×2 and ×4 of one width have the same
    stages. Width 1 returns the channels unchanged (the paper's model and every checkpoint of it); width 1/8
    of the paper's (8, 16, 24, 32, 48, 64) gives (4, 4, 4, 4, 8, 8), width 1/4 (4, 4, 8, 8, 12, 16).
    """
    if width <= 0:
        raise ValueError(f"width must be > 0, not {width!r}")
    return tuple(max(CHANNEL_MULTIPLE, CHANNEL_MULTIPLE * math.floor(c * width / CHANNEL_MULTIPLE + 0.5))
                 for c in channels)


def _up2(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, 2H, 2W), bilinear with aligned corners (the official `F.interpolate` call).

    CUDA's backward of `F.interpolate` adds into the input gradient with atomics, in a varying order, and has
    no deterministic form: under `torch.use_deterministic_algorithms` on CUDA the same map runs as two matrix
    products instead (`bilinear_matrix`), whose backward is deterministic.
    """
    if x.is_cuda and torch.are_deterministic_algorithms_enabled():
        rows = bilinear_matrix(x.shape[-2], 2 * x.shape[-2], x)                    # (2H, H)
        cols = bilinear_matrix(x.shape[-1], 2 * x.shape[-1], x)                    # (2W, W)
        return rows @ x @ cols.transpose(0, 1)                                     # (B, C, 2H, 2W)
    return F.interpolate(x, scale_factor=(2, 2), mode="bilinear", align_corners=True)


def bilinear_matrix(n_in: int, n_out: int, like: torch.Tensor) -> torch.Tensor:
    """(n_out, n_in): 1-D bilinear interpolation with aligned corners as a matrix. Output i samples the input at
    p_i = i (n_in - 1) / (n_out - 1), and input k weighs max(0, 1 - |p_i - k|) (the hat function)."""
    scale = (n_in - 1) / max(n_out - 1, 1)
    positions = torch.arange(n_out, device=like.device, dtype=like.dtype) * scale
    inputs = torch.arange(n_in, device=like.device, dtype=like.dtype)
    return (1 - (positions[:, None] - inputs[None, :]).abs()).clamp_min(0)


def official_init_(module: nn.Module) -> None:
    """The official `_init_weights`, applied to every sub-module (use with `model.apply`).

    Linear: truncated normal (std 0.02), bias 0; Conv1d: normal(0, sqrt(2 / (k·C_out))); Conv2d: fan-out
    normal, bias 0. Note what this does to the Mamba blocks: `dt_proj` is an nn.Linear, so the careful
    Mamba init of Δ (bias = softplus⁻¹ of a log-uniform dt in [0.001, 0.1]) is overwritten with bias 0,
    i.e. Δ starts at softplus(0) ≈ 0.69 for every channel; `in_proj`/`x_proj`/`out_proj` and the causal
    conv are re-drawn too. `A_log` and `D` (plain Parameters) keep Mamba's S4D-real init.
    """
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)   # same as timm's trunc_normal_ (bounds ±2, absolute)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv1d):
        fan_out = module.kernel_size[0] * module.out_channels
        module.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        module.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            module.bias.data.zero_()


class UltraLightVMUNet(nn.Module):
    def __init__(self, num_classes: int = 1, input_channels: int = 3, c_list=PAPER_CHANNELS,
                 split_att: str = "fc", bridge: bool = True, parallel: int = 4, backend: str = "auto",
                 mixer: str = "pvm", width: float = 1.0):
        super().__init__()
        c = list(c_list) if width == 1 else list(scale_channels(c_list, width))
        if len(c) != 6:
            raise ValueError(f"c_list needs 6 channel counts (one per stage), got {c_list!r}")
        if mixer not in ("pvm", "conv"):
            raise ValueError(f"mixer must be 'pvm' or 'conv', not {mixer!r}")
        self.bridge = bridge

        def conv(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=1, padding=1))

        def pvm(cin, cout):  # mixer "conv": the same U-Net with plain 3x3 convs in the deep stages too
            if mixer == "conv":
                return conv(cin, cout)
            return nn.Sequential(PVMLayer(cin, cout, parallel=parallel, backend=backend))

        self.encoder1, self.encoder2, self.encoder3 = conv(input_channels, c[0]), conv(c[0], c[1]), conv(c[1], c[2])
        self.encoder4, self.encoder5, self.encoder6 = pvm(c[2], c[3]), pvm(c[3], c[4]), pvm(c[4], c[5])
        if bridge:
            self.scab = SC_Att_Bridge(c, split_att)
        self.decoder1, self.decoder2, self.decoder3 = pvm(c[5], c[4]), pvm(c[4], c[3]), pvm(c[3], c[2])
        self.decoder4, self.decoder5 = conv(c[2], c[1]), conv(c[1], c[0])
        for i, channels in enumerate(c[:5], start=1):          # ebn1..ebn5: 8, 16, 24, 32, 48
            self.add_module(f"ebn{i}", nn.GroupNorm(4, channels))
        for i, channels in enumerate(reversed(c[:5]), start=1):  # dbn1..dbn5: 48, 32, 24, 16, 8
            self.add_module(f"dbn{i}", nn.GroupNorm(4, channels))
        self.final = nn.Conv2d(c[0], num_classes, kernel_size=1)
        self.apply(official_init_)

    def set_backend(self, backend: str) -> "UltraLightVMUNet":
        """Switch every Mamba block to another selective-scan backend (weights unchanged)."""
        for module in self.modules():
            if isinstance(module, PVMLayer):
                module.mamba.backend = backend
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) image in the paper's 0..255 range -> (B, num_classes, H, W) probabilities."""
        skips = []
        out = x
        for i in range(1, 6):                                   # t_i: (B, c[i-1], H/2^i, W/2^i)
            encoder, norm = getattr(self, f"encoder{i}"), getattr(self, f"ebn{i}")
            out = F.gelu(F.max_pool2d(norm(encoder(out)), 2, 2))
            skips.append(out)
        if self.bridge:
            skips = list(self.scab(*skips))
        t1, t2, t3, t4, t5 = skips

        out = F.gelu(self.encoder6(out))                                       # (B, c5, H/32, W/32)
        out = F.gelu(self.dbn1(self.decoder1(out))) + t5                       # (B, c4, H/32, W/32)
        out = F.gelu(_up2(self.dbn2(self.decoder2(out)))) + t4                 # (B, c3, H/16, W/16)
        out = F.gelu(_up2(self.dbn3(self.decoder3(out)))) + t3                 # (B, c2, H/8, W/8)
        out = F.gelu(_up2(self.dbn4(self.decoder4(out)))) + t2                 # (B, c1, H/4, W/4)
        out = F.gelu(_up2(self.dbn5(self.decoder5(out)))) + t1                 # (B, c0, H/2, W/2)
        return torch.sigmoid(_up2(self.final(out)))                            # (B, classes, H, W)
