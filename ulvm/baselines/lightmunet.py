"""LightM-UNet: Mamba Assists in Lightweight UNet (Liao, Zhu, Li, Yang, Zeng & Li 2024, arXiv 2403.05246), 2-D.

Official code: github.com/MrBlankness/LightM-UNet, `lightm-unet/nnunetv2/nets/LightMUNet.py` (class
`LightMUNet`, built on MONAI blocks and mamba-ssm's `Mamba`), configured by
`nnunetv2/training/nnUNetTrainer/nnUNetTrainerLightMUNet.py`: init_filters 32, blocks_down (1, 2, 2, 4),
blocks_up (1, 1, 1), GroupNorm(8), ReLU, non-trainable (bilinear) up-sampling, spatial_dims = the nnU-Net
patch's dimensionality: 3-D for LiTS, 2-D for the chest X-rays. This is the 2-D network (Conv2d, max-pool 2,
bilinear ×2), with our `ulvm.ssm.Mamba` (d_state 16, d_conv 4, expand 2) whose scan takes `backend=`: one
selective-scan call per MambaLayer (its H·W tokens in row order, one sequence per image), which on a GPU is
the Triton kernel, a program per 4 channels that share B and C (`ulvm.ssm.triton_scan`).
Authors' report (theirs, not ours): 1.87 M parameters (the LightM-UNet paper's LiTS table; the README says
"1M"). Ours: 5,011,732 parameters, 2.13 thop GFLOPs (Mamba invisible to thop) and 16.9 "full" GFLOPs at
256×256. The gap is not 2-D against 3-D: 98.5% of the parameters are in the 21 MambaLayers (8 of them at 256
channels, 0.50 M each), whose size does not depend on the spatial dimensions, and every layer above is
transcribed from the official classes at the trainer's configuration. No init_filters reproduces 1.87 M
(16 gives 1.34 M, 24 gives 2.89 M), so the reported count must come from another configuration or counter;
`tests/test_baselines.py` pins our exact count. (MONAI is not installed here, so the official class itself
was not run; the other five models were checked against their official classes.)

    stage          module                                             resolution   channels
    convInit       depthwise 3x3 + pointwise 1x1 (no bias)            H            32
    down 0         ResMamba ×1                                        H            32
    down 1-3       MambaLayer C -> 2C + max-pool 2, ResMamba ×(2, 2, 4)   H/2..H/8   64, 128, 256
    up 0-2         Conv1x1 2C -> C (no bias) + bilinear ×2, + skip, ResUp ×1   H/4..H   128, 64, 32
    conv_final     GroupNorm, ReLU, depthwise 1x1 + pointwise 1x1 (bias) (+ sigmoid)   H   num_classes

Glossary: MambaLayer (official name) = tokens t of the map, y = Mamba(LN(t)) + s·t, out = Linear(LN(y)) with
the SAME LayerNorm twice and a learned scalar s (`skip_scale`); note the skip adds the UN-normalised tokens,
unlike UltraLight VM-UNet's PVM layer, which adds the normalised ones. ResMamba (official `ResMambaBlock`) =
x + MambaLayer(ReLU(GN(MambaLayer(ReLU(GN(x)))))). ResUp (official `ResUpBlock`) = ReLU(GN(DWConv3x3(ReLU(GN(x)))
+ s·x)). Names follow the official modules (MONAI's `Convolution` wrapper adds `.conv` to a conv's key).

Deviations: the official nnU-Net run has one output channel per class including background (2 for one
lesion class) and trains with softmax; ours has `num_classes` = 1 output and a sigmoid, like every model here
(33 parameters fewer). nnU-Net's own data pipeline, deep-supervision-free trainer, Adam (lr 1e-4) and
gradient clipping are not part of the model and are not reproduced here. Init: PyTorch's defaults for the
convolutions, LayerNorms and Linears (the official trainer applies none), Mamba's own init.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ssm import Mamba
from ._blocks import ScanBackendSwitch


class _Conv(nn.Module):
    """A bare convolution under the name `conv` (MONAI's `Convolution(conv_only=True)`, for the official keys)."""

    def __init__(self, cin: int, cout: int, kernel_size: int, bias: bool = False, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2, bias=bias, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def dw_separable(cin: int, cout: int, kernel_size: int = 3, bias: bool = False) -> nn.Sequential:
    """Depthwise k×k then pointwise 1x1: (B, C_in, H, W) -> (B, C_out, H, W). Official `get_dwconv_layer`."""
    return nn.Sequential(_Conv(cin, cin, kernel_size, bias, groups=cin), _Conv(cin, cout, 1, bias))


class MambaLayer(nn.Module):
    """(B, C_in, H, W) -> (B, C_out, H, W); the H·W pixels in row order are the Mamba's tokens."""

    def __init__(self, input_dim: int, output_dim: int, backend: str = "auto"):
        super().__init__()
        self.output_dim = output_dim
        self.norm = nn.LayerNorm(input_dim)
        self.mamba = Mamba(d_model=input_dim, d_state=16, d_conv=4, expand=2, backend=backend)
        self.proj = nn.Linear(input_dim, output_dim)
        self.skip_scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.float().reshape(b, c, h * w).transpose(1, 2)                 # (B, L, C_in)
        mixed = self.mamba(self.norm(tokens)) + self.skip_scale * tokens
        out = self.proj(self.norm(mixed))                                       # (B, L, C_out)
        return out.transpose(1, 2).reshape(b, self.output_dim, h, w)


class ResMambaBlock(nn.Module):
    def __init__(self, channels: int, groups: int = 8, backend: str = "auto"):
        super().__init__()
        self.norm1, self.norm2 = nn.GroupNorm(groups, channels), nn.GroupNorm(groups, channels)
        self.conv1 = MambaLayer(channels, channels, backend)
        self.conv2 = MambaLayer(channels, channels, backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        return self.conv2(F.relu(self.norm2(out))) + x


class ResUpBlock(nn.Module):
    def __init__(self, channels: int, groups: int = 8):
        super().__init__()
        self.norm1, self.norm2 = nn.GroupNorm(groups, channels), nn.GroupNorm(groups, channels)
        self.conv = dw_separable(channels, channels, 3)
        self.skip_scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm2(self.conv(F.relu(self.norm1(x))) + self.skip_scale * x))


class LightMUNet(ScanBackendSwitch, nn.Module):
    def __init__(self, num_classes: int = 1, input_channels: int = 3, init_filters: int = 32,
                 blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), groups: int = 8, backend: str = "auto"):
        super().__init__()
        f = init_filters
        self.convInit = dw_separable(input_channels, f)
        self.down_layers = nn.ModuleList()
        for i, count in enumerate(blocks_down):                  # channels f·2^i; levels 1.. halve the size
            width = f * 2 ** i
            entry = (nn.Sequential(MambaLayer(width // 2, width, backend), nn.MaxPool2d(2)) if i
                     else nn.Identity())
            blocks = [ResMambaBlock(width, groups, backend) for _ in range(count)]
            self.down_layers.append(nn.Sequential(entry, *blocks))
        self.up_samples, self.up_layers = nn.ModuleList(), nn.ModuleList()
        for i, count in enumerate(blocks_up):
            width = f * 2 ** (len(blocks_up) - i)                # 256, 128, 64 -> halved
            self.up_samples.append(nn.Sequential(_Conv(width, width // 2, 1),
                                                 nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)))
            self.up_layers.append(nn.Sequential(*[ResUpBlock(width // 2, groups) for _ in range(count)]))
        self.conv_final = nn.Sequential(nn.GroupNorm(groups, f), nn.ReLU(),
                                        dw_separable(f, num_classes, kernel_size=1, bias=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W), H and W multiples of 8 -> (B, num_classes, H, W) probabilities."""
        out = self.convInit(x)                                   # (B, f, H, W)
        skips = []
        for down in self.down_layers:                            # (B, f·2^i, H/2^i, W/2^i)
            out = down(out)
            skips.append(out)
        for i, (up, layer) in enumerate(zip(self.up_samples, self.up_layers)):
            out = layer(up(out) + skips[-2 - i])                 # + the skip one level up
        return torch.sigmoid(self.conv_final(out))
