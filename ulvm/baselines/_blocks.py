"""Pieces shared by more than one baseline.

`SixStageUNet` is the U-shaped skeleton that MALUNet (2022) introduced and EGE-UNet (2023) and UltraLight
VM-UNet (2024) kept: six stages with channels c = (8, 16, 24, 32, 48, 64), plain 3x3 convolutions in the
three shallow stages and a model-specific block in the three deep ones. Only the deep blocks and what is
added to each decoder stage (the skip) differ between the models; the rest is written once here.

    stage        module                                   resolution (H×W input)   channels
    encoder1-3   Conv3x3 + GroupNorm(4) + max-pool + GELU  H/2, H/4, H/8            c0, c1, c2   -> t1, t2, t3
    encoder4-5   deep block + GroupNorm(4) + max-pool + GELU  H/16, H/32            c3, c4       -> t4, t5
    encoder6     deep block + GELU                         H/32                     c5
    decoder1     deep block + GroupNorm(4) + GELU          H/32                     c4    (+ skip 5)
    decoder2-3   deep block + GroupNorm(4) + up×2 + GELU   H/16, H/8                c3, c2 (+ skips 4, 3)
    decoder4-5   Conv3x3 + GroupNorm(4) + up×2 + GELU      H/4, H/2                 c1, c0 (+ skips 2, 1)
    final        Conv1x1 + up×2 (+ sigmoid)                H                        num_classes

Module names (encoder1..6, ebn1..5, decoder1..5, dbn1..5, final) are the official ones, so the state-dict
keys match the official checkpoints'.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..model.ultralight import official_init_

CHANNELS = (8, 16, 24, 32, 48, 64)


def up2(x: torch.Tensor, align_corners: bool = True) -> torch.Tensor:
    """Bilinear ×2 upsampling: (B, C, H, W) -> (B, C, 2H, 2W)."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=align_corners)


def conv3x3(cin: int, cout: int) -> nn.Sequential:
    """The shallow-stage block: one 3x3 convolution (wrapped in Sequential as in the official code: key `.0.`)."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=1, padding=1))


class ScanBackendSwitch:
    """Mixin for the Mamba-based baselines: `set_backend` switches every selective scan inside (each `Mamba`
    and `SS2D` keeps its backend in a `backend` attribute), weights unchanged."""

    def set_backend(self, backend: str):
        for module in self.modules():
            if module is not self and hasattr(module, "backend"):
                module.backend = backend
        return self


class SixStageUNet(nn.Module):
    """Skeleton of MALUNet / EGE-UNet. `deep_encoder(cin, cout)` builds encoder4-6, `deep_decoder(cin, cout)`
    decoder1-3; subclasses add their own bridge and call `encode`, `decoder_stage` and `head` in `forward`."""

    def __init__(self, num_classes: int, input_channels: int, c_list,
                 deep_encoder: Callable[[int, int], nn.Module], deep_decoder: Callable[[int, int], nn.Module]):
        super().__init__()
        c = list(c_list)
        if len(c) != 6:
            raise ValueError(f"c_list needs 6 channel counts (one per stage), got {c_list!r}")
        self.c_list = c
        self.encoder1, self.encoder2, self.encoder3 = conv3x3(input_channels, c[0]), conv3x3(c[0], c[1]), \
            conv3x3(c[1], c[2])
        self.encoder4, self.encoder5, self.encoder6 = deep_encoder(c[2], c[3]), deep_encoder(c[3], c[4]), \
            deep_encoder(c[4], c[5])
        self.decoder1, self.decoder2, self.decoder3 = deep_decoder(c[5], c[4]), deep_decoder(c[4], c[3]), \
            deep_decoder(c[3], c[2])
        self.decoder4, self.decoder5 = conv3x3(c[2], c[1]), conv3x3(c[1], c[0])
        for i, channels in enumerate(c[:5], start=1):            # ebn1..ebn5: c0..c4
            self.add_module(f"ebn{i}", nn.GroupNorm(4, channels))
        for i, channels in enumerate(reversed(c[:5]), start=1):  # dbn1..dbn5: c4..c0
            self.add_module(f"dbn{i}", nn.GroupNorm(4, channels))
        self.final = nn.Conv2d(c[0], num_classes, kernel_size=1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, C_in, H, W) -> (t5, [t1..t5]) with t_i: (B, c[i-1], H/2^i, W/2^i); encoder6 is left to the caller
        (MALUNet runs its bridge on t1..t5 first)."""
        skips, out = [], x
        for i in range(1, 6):
            encoder, norm = getattr(self, f"encoder{i}"), getattr(self, f"ebn{i}")
            out = F.gelu(F.max_pool2d(norm(encoder(out)), 2, 2))
            skips.append(out)
        return out, skips

    def decoder_stage(self, stage: int, x: torch.Tensor) -> torch.Tensor:
        """Decoder `stage` (1..5) before its skip is added: GELU(up×2(GN(decoder(x)))), no upsampling at stage 1.
        Output: (B, c[5-stage], H/2^(6-stage), W/2^(6-stage))."""
        out = getattr(self, f"dbn{stage}")(getattr(self, f"decoder{stage}")(x))
        return F.gelu(out if stage == 1 else up2(out))

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """(B, c0, H/2, W/2) -> (B, num_classes, H, W) probabilities."""
        return torch.sigmoid(up2(self.final(x)))

    def init_official_(self) -> None:
        """The official `_init_weights` of MALUNet / EGE-UNet (the same as UltraLight VM-UNet's)."""
        self.apply(official_init_)
