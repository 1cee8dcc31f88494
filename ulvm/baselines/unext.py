"""UNeXt-S, the small UNeXt (Valanarasu & Patel, "UNeXt: MLP-based Rapid Medical Image Segmentation Network",
MICCAI 2022, arXiv 2203.04967).

Official code: github.com/jeya-maria-jose/UNeXt-pytorch, `archs.py`, class `UNext_S` (channels 8, 16, 32 in
the conv stages, 64 and 128 in the tokenized-MLP stages; UNext, the full model, has 16, 32, 128, 160, 256).
Authors' report (theirs, not ours): UNeXt-S 0.32 M parameters and 0.10 GFLOPs (the UNeXt paper's channel
study). Ours: 253,561 parameters and 0.104 thop GFLOPs.
The official `UNext_S` class itself has 253,561 parameters too, so the paper's 0.32 M must count another
configuration; `tests/test_baselines.py` pins our exact count (and checks the GFLOPs against 0.10).
Checked once against the official class (built outside this repository with stand-ins for its
unavailable imports): same parameter names and shapes, and with its weights loaded (strict) ours gives
identical outputs.

    stage        module                                          resolution   channels
    encoder1-3   Conv3x3 + BatchNorm + max-pool + ReLU            H/2..H/8     8, 16, 32    -> t1, t2, t3
    stage 4      patch_embed3 (Conv3x3 s2 + LN), block1, norm3    H/16         64           -> t4
    bottleneck   patch_embed4 (Conv3x3 s2 + LN), block2, norm4    H/32         128
    decoder1     Conv3x3 + BN + up×2 + ReLU, + t4, dblock1, dnorm3   H/16      64
    decoder2     Conv3x3 + BN + up×2 + ReLU, + t3, dblock2, dnorm4   H/8       32
    decoder3-4   Conv3x3 + BN + up×2 + ReLU, + t2 / + t1          H/4, H/2     16, 8
    decoder5     Conv3x3 + up×2 + ReLU; final Conv1x1 (+ sigmoid)  H          8 -> num_classes

Glossary: "tokenized MLP block" = official `shiftedBlock` = `TokenizedMLPBlock`: x + ShiftedMLP(LN(x)) on
the tokens of a feature map. `ShiftedMLP` (official `shiftmlp`): shift the channel groups along the height,
Linear, depthwise 3x3 conv, GELU, shift along the width, Linear. A "shift" cuts the C channels into 5
groups and moves group g by g-2 pixels (zeros enter, nothing wraps). Up-sampling is bilinear with
align_corners False (F.interpolate's default, as in the official code). Weight init as the official code:
truncated-normal Linear / fan-out-normal Conv2d in the tokenized stages, PyTorch defaults elsewhere.

Deviations: the official forward returns logits; ours applies the sigmoid (the interface of every model
here). The official class ignores `input_channels` (its first conv always takes 3); ours uses it.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..model.ultralight import official_init_


def shift_groups(tokens: torch.Tensor, height: int, width: int, dim: int, groups: int = 5) -> torch.Tensor:
    """(B, N = H·W, C) tokens -> the same tokens with channel group g shifted by g - groups//2 pixels along
    `dim` (2: height, 3: width) of the (B, C, H, W) map, zero-filled (the official pad-roll-crop)."""
    b, n, c = tokens.shape
    pad = groups // 2
    x = F.pad(tokens.transpose(1, 2).reshape(b, c, height, width), (pad, pad, pad, pad))
    x = torch.cat([torch.roll(chunk, shift, dim) for chunk, shift in zip(torch.chunk(x, groups, 1),
                                                                          range(-pad, pad + 1))], dim=1)
    x = x[:, :, pad:pad + height, pad:pad + width]
    return x.reshape(b, c, n).transpose(1, 2)


class DWConv(nn.Module):
    """Depthwise 3x3 conv (with bias) on (B, N, C) tokens of an H×W map. Twin of the official `DWConv`."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        b, n, c = x.shape
        return self.dwconv(x.transpose(1, 2).view(b, c, height, width)).flatten(2).transpose(1, 2)


class ShiftedMLP(nn.Module):
    """(B, N, C) -> (B, N, C): shift along H, fc1, DWConv, GELU, shift along W, fc2. Twin of `shiftmlp`
    (mlp_ratio 1 and dropout 0 as `UNext_S` builds it)."""

    def __init__(self, dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, dim)
        self.dwconv = DWConv(dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        x = self.act(self.dwconv(self.fc1(shift_groups(x, height, width, dim=2)), height, width))
        return self.fc2(shift_groups(x, height, width, dim=3))


class TokenizedMLPBlock(nn.Module):
    """x + ShiftedMLP(LayerNorm(x)) on (B, N, C) tokens. Twin of `shiftedBlock` (drop-path 0: identity)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = ShiftedMLP(dim)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return x + self.mlp(self.norm2(x), height, width)


class OverlapPatchEmbed(nn.Module):
    """Conv3x3 stride 2 then LayerNorm: (B, C_in, H, W) -> ((B, H/2·W/2, C_out) tokens, H/2, W/2).
    Twin of the official `OverlapPatchEmbed` with patch_size 3, stride 2."""

    def __init__(self, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=3, stride=2, padding=1)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor):
        x = self.proj(x)
        _, _, height, width = x.shape
        return self.norm(x.flatten(2).transpose(1, 2)), height, width


def _tokens_to_map(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, H·W, C) -> (B, C, H, W)."""
    return tokens.reshape(tokens.shape[0], height, width, -1).permute(0, 3, 1, 2).contiguous()


def _up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear")


class UNeXtS(nn.Module):
    def __init__(self, num_classes: int = 1, input_channels: int = 3, embed_dims=(32, 64, 128)):
        super().__init__()
        c3, c4, c5 = embed_dims                                     # 32, 64, 128
        self.encoder1 = nn.Conv2d(input_channels, 8, 3, stride=1, padding=1)
        self.encoder2 = nn.Conv2d(8, 16, 3, stride=1, padding=1)
        self.encoder3 = nn.Conv2d(16, c3, 3, stride=1, padding=1)
        self.ebn1, self.ebn2, self.ebn3 = nn.BatchNorm2d(8), nn.BatchNorm2d(16), nn.BatchNorm2d(c3)
        self.norm3, self.norm4 = nn.LayerNorm(c4), nn.LayerNorm(c5)
        self.dnorm3, self.dnorm4 = nn.LayerNorm(c4), nn.LayerNorm(c3)
        # one block each, in a ModuleList as in the official code (state-dict keys "block1.0. ...")
        self.block1 = nn.ModuleList([TokenizedMLPBlock(c4)])
        self.block2 = nn.ModuleList([TokenizedMLPBlock(c5)])
        self.dblock1 = nn.ModuleList([TokenizedMLPBlock(c4)])
        self.dblock2 = nn.ModuleList([TokenizedMLPBlock(c3)])
        self.patch_embed3 = OverlapPatchEmbed(c3, c4)
        self.patch_embed4 = OverlapPatchEmbed(c4, c5)
        self.decoder1 = nn.Conv2d(c5, c4, 3, stride=1, padding=1)
        self.decoder2 = nn.Conv2d(c4, c3, 3, stride=1, padding=1)
        self.decoder3 = nn.Conv2d(c3, 16, 3, stride=1, padding=1)
        self.decoder4 = nn.Conv2d(16, 8, 3, stride=1, padding=1)
        self.decoder5 = nn.Conv2d(8, 8, 3, stride=1, padding=1)
        self.dbn1, self.dbn2, self.dbn3, self.dbn4 = (nn.BatchNorm2d(c4), nn.BatchNorm2d(c3), nn.BatchNorm2d(16),
                                                      nn.BatchNorm2d(8))
        self.final = nn.Conv2d(8, num_classes, kernel_size=1)
        for part in (self.block1, self.block2, self.dblock1, self.dblock2, self.patch_embed3, self.patch_embed4):
            part.apply(official_init_)   # the official classes init themselves; the top-level convs keep defaults

    @staticmethod
    def _mlp_stage(blocks: nn.ModuleList, norm: nn.LayerNorm, tokens: torch.Tensor, height: int, width: int):
        for block in blocks:
            tokens = block(tokens, height, width)
        return _tokens_to_map(norm(tokens), height, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W), H and W multiples of 32 -> (B, num_classes, H, W) probabilities."""
        out = F.relu(F.max_pool2d(self.ebn1(self.encoder1(x)), 2, 2))
        t1 = out                                                            # (B, 8, H/2, W/2)
        out = F.relu(F.max_pool2d(self.ebn2(self.encoder2(out)), 2, 2))
        t2 = out                                                            # (B, 16, H/4, W/4)
        out = F.relu(F.max_pool2d(self.ebn3(self.encoder3(out)), 2, 2))
        t3 = out                                                            # (B, 32, H/8, W/8)
        t4 = self._mlp_stage(self.block1, self.norm3, *self.patch_embed3(out))     # (B, 64, H/16, W/16)
        out = self._mlp_stage(self.block2, self.norm4, *self.patch_embed4(t4))     # (B, 128, H/32, W/32)

        out = F.relu(_up2(self.dbn1(self.decoder1(out)))) + t4              # (B, 64, H/16, W/16)
        out = self._mlp_stage(self.dblock1, self.dnorm3, out.flatten(2).transpose(1, 2), *out.shape[2:])
        out = F.relu(_up2(self.dbn2(self.decoder2(out)))) + t3              # (B, 32, H/8, W/8)
        out = self._mlp_stage(self.dblock2, self.dnorm4, out.flatten(2).transpose(1, 2), *out.shape[2:])
        out = F.relu(_up2(self.dbn3(self.decoder3(out)))) + t2              # (B, 16, H/4, W/4)
        out = F.relu(_up2(self.dbn4(self.decoder4(out)))) + t1              # (B, 8, H/2, W/2)
        out = F.relu(_up2(self.decoder5(out)))                              # (B, 8, H, W)
        return torch.sigmoid(self.final(out))
