"""MALUNet: a Multi-Attention and Light-weight UNet (Ruan, Xiang, Xie, Liu & Fu, BIBM 2022, arXiv 2211.01784).

Official code: github.com/JCruan519/MALUNet, `models/malunet.py` (class `MALUNet`), default config
c_list = (8, 16, 24, 32, 48, 64), split_att "fc", bridge on.
Authors' report (theirs, not ours): 0.175 M parameters and 0.083 GFLOPs at 256×256 (abstract: "a 44x and
166x reduction" against their U-Net). Ours: 177,943 parameters (1.7% above theirs) and 0.083 thop GFLOPs.
Checked once against the official class (built outside this repository with stand-ins for its
unavailable imports): same parameter names and shapes, and with its weights loaded (strict) ours gives
identical outputs.

Glossary (paper name = official class = ours):
    DGA  Dilated Gated Attention        = DilatedGatedAttention   = `DilatedGatedAttention`
    GAU  its gated attention unit        = GatedAttentionUnit      = `GatedAttentionUnit`
    IEA  Inverted External Attention     = EAblock                 = `InvertedExternalAttention`
    SAB / CAB  spatial / channel attention bridges = SC_Att_Bridge = `ulvm.model.SC_Att_Bridge` (the same
         class UltraLight VM-UNet inherited; reused, not rewritten)
The skeleton (encoder1-6, decoder1-5, GroupNorms, final) is `_blocks.SixStageUNet`. Deep stages: encoder4-6
= IEA then DGA; decoder1-3 = DGA then IEA.

Deviation from the official code (one): in `EAblock` the official line `linear_1.weight.data =
linear_0.weight.data.permute(1, 0, 2)` makes the two memory units ALIASES of one storage while they stay two
parameters (both counted, each with its own optimiser state, both updates landing on the same memory). Here
they are two independent parameters that START equal (M_v = M_kᵀ, drawn as the official init finally draws
the shared storage: normal with std sqrt(2 / C)); the paper describes two memory units. Aliased parameters
would race under the fused multi-tensor AdamW and CUDA graph our trainer uses. The parameter count is
unchanged.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..model.bridge import SC_Att_Bridge
from ._blocks import CHANNELS, SixStageUNet


class DepthwiseSeparableConv(nn.Module):
    """Depthwise k×k conv, GroupNorm(4), pointwise 1x1: (B, C_in, H, W) -> (B, C_out, H, W).
    Twin of the official `DepthWiseConv2d` (names conv1, norm_layer, conv2)."""

    def __init__(self, dim_in: int, dim_out: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(dim_in, dim_in, kernel_size, padding=padding, groups=dim_in)
        self.norm_layer = nn.GroupNorm(4, dim_in)
        self.conv2 = nn.Conv2d(dim_in, dim_out, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.norm_layer(self.conv1(x)))


class GatedAttentionUnit(nn.Module):
    """GAU: out = GELU(DWConv3(σ(DWConv3(x)) · GELU(DWConv5(x)))) + Conv1x1(x). Twin of `GatedAttentionUnit`."""

    def __init__(self, in_c: int, out_c: int, kernel_size: int = 3):
        super().__init__()
        self.w1 = nn.Sequential(DepthwiseSeparableConv(in_c, in_c, kernel_size, kernel_size // 2), nn.Sigmoid())
        self.w2 = nn.Sequential(DepthwiseSeparableConv(in_c, in_c, kernel_size + 2, (kernel_size + 2) // 2),
                                nn.GELU())
        self.wo = nn.Sequential(DepthwiseSeparableConv(in_c, out_c, kernel_size), nn.GELU())
        self.cw = nn.Conv2d(in_c, out_c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wo(self.w1(x) * self.w2(x)) + self.cw(x)


class DilatedGatedAttention(nn.Module):
    """DGA: four channel quarters through depthwise 3x3 convs with dilations (7, 5, 2, 1), GroupNorm, 1x1,
    GELU, then the GAU. (B, C_in, H, W) -> (B, C_out, H, W). Twin of `DilatedGatedAttention`."""

    def __init__(self, in_c: int, out_c: int, k_size: int = 3, dilations=(7, 5, 2, 1)):
        super().__init__()
        quarter = in_c // 4
        for i, d in enumerate(dilations):                  # mda0..mda3; "same" padding for a dilated kernel
            padding = (k_size + (k_size - 1) * (d - 1)) // 2
            self.add_module(f"mda{i}", nn.Conv2d(quarter, quarter, k_size, padding=padding, dilation=d, groups=quarter))
        self.norm_layer = nn.GroupNorm(4, in_c)
        self.conv = nn.Conv2d(in_c, in_c, 1)
        self.gau = GatedAttentionUnit(in_c, out_c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        quarters = [getattr(self, f"mda{i}")(q) for i, q in enumerate(torch.chunk(x, 4, dim=1))]
        return self.gau(F.gelu(self.conv(self.norm_layer(torch.cat(quarters, dim=1)))))


class InvertedExternalAttention(nn.Module):
    """IEA (external attention with an "inverted", 4× wider memory): two learned memories M_k (4C×C) and
    M_v (C×4C) shared by all images of the dataset. (B, C, H, W) -> (B, C, H, W). Twin of `EAblock`.

        x' = Conv1x1(x) as tokens (B, C, N = H·W)
        attn = double-normalise(M_k x')      softmax over the N tokens, then divide by the sum over the 4C slots
        out = GELU(GN(Conv1x1(M_v attn)) + x)
    """

    def __init__(self, in_c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_c, in_c, 1)
        self.k = in_c * 4
        self.linear_0 = nn.Conv1d(in_c, self.k, 1, bias=False)    # M_k
        self.linear_1 = nn.Conv1d(self.k, in_c, 1, bias=False)    # M_v
        self.conv2 = nn.Conv2d(in_c, in_c, 1, bias=False)
        self.norm_layer = nn.GroupNorm(4, in_c)

    def tie_memories_(self) -> None:
        """Start M_k = M_vᵀ (after the official init drew M_v; see the module docstring)."""
        with torch.no_grad():
            self.linear_0.weight.copy_(self.linear_1.weight.permute(1, 0, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        attn = self.linear_0(self.conv1(x).view(b, c, h * w))           # (B, 4C, N)
        attn = F.softmax(attn, dim=-1)
        attn = attn / (1e-9 + attn.sum(dim=1, keepdim=True))
        out = self.linear_1(attn).view(b, c, h, w)                      # (B, C, H, W)
        return F.gelu(self.norm_layer(self.conv2(out)) + x)


class MALUNet(SixStageUNet):
    def __init__(self, num_classes: int = 1, input_channels: int = 3, c_list=CHANNELS, split_att: str = "fc",
                 bridge: bool = True):
        super().__init__(num_classes, input_channels, c_list,
                         deep_encoder=lambda cin, cout: nn.Sequential(InvertedExternalAttention(cin),
                                                                      DilatedGatedAttention(cin, cout)),
                         deep_decoder=lambda cin, cout: nn.Sequential(DilatedGatedAttention(cin, cout),
                                                                      InvertedExternalAttention(cout)))
        self.bridge = bridge
        if bridge:
            self.scab = SC_Att_Bridge(self.c_list, split_att)
        self.init_official_()
        for module in self.modules():
            if isinstance(module, InvertedExternalAttention):
                module.tie_memories_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W), H and W multiples of 32 -> (B, num_classes, H, W) probabilities."""
        out, skips = self.encode(x)                          # out = t5: (B, c4, H/32, W/32)
        if self.bridge:
            skips = list(self.scab(*skips))
        out = F.gelu(self.encoder6(out))                     # (B, c5, H/32, W/32)
        for stage in range(1, 6):                            # adds t5, t4, t3, t2, t1
            out = self.decoder_stage(stage, out) + skips[5 - stage]
        return self.head(out)
