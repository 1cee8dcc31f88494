"""EGE-UNet: an Efficient Group Enhanced UNet (Ruan, Xie, Gao, Liu & Fu, MICCAI 2023, arXiv 2307.08473).

Official code: github.com/JCruan519/EGE-UNet, `EGE-UNet/models/egeunet.py` (class `EGEUNet`), default config
c_list = (8, 16, 24, 32, 48, 64), bridge on, gt_ds (deep supervision) on.
Authors' report (theirs, not ours): 0.053 M parameters ("50KB") and 0.072 GFLOPs at 256×256.
Ours: 53,374 parameters and 0.072 thop GFLOPs. Checked once against the official class (built outside this
repository with stand-ins for its unavailable imports): same parameter names and shapes, and with its weights
loaded (strict) ours gives identical outputs.

Glossary (paper name = official class = ours):
    GHPA  Group multi-axis Hadamard Product Attention = Grouped_multi_axis_Hadamard_Product_Attention = `GHPA`
    GAB   Group Aggregation Bridge                     = group_aggregation_bridge = `GroupAggregationBridge`
    GT    the "ground-truth" deep-supervision heads gt_conv1..5 (1x1 convs to one channel)
The skeleton (encoder1-6, decoder1-5, GroupNorms, final) is `_blocks.SixStageUNet`; encoder4-6 and
decoder1-3 are one GHPA each.

Deep supervision: the GT heads are part of the architecture, not only of the loss: each head's mask
(pre-sigmoid) is an input of that stage's GAB, so the heads are always built and always run. What is
optional is RETURNING their outputs: `deep_supervision=False` (the default, the interface every model here
shares) returns only the final probability map; `deep_supervision=True` returns what the official training
forward returns, `((gt5, gt4, gt3, gt2, gt1), final)`, every map upsampled to H×W and passed through a sigmoid,
for a loss like the official GT_BceDiceLoss. The official `gt_ds=False` branch calls the GAB without a mask
and cannot run, so it is not offered.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._blocks import CHANNELS, SixStageUNet


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) or (B, C, L) tensor at every position (ConvNeXt's
    "channels_first" LayerNorm, eps 1e-6). Twin of the official `LayerNorm(data_format="channels_first")`."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return self.weight.view(shape) * (x - mean) / torch.sqrt(var + self.eps) + self.bias.view(shape)


def _depthwise_pointwise(channels: int, conv=nn.Conv2d) -> nn.Sequential:
    """Depthwise k3 conv, GELU, pointwise 1x1: the small net that turns a learned weight map into the Hadamard
    factor (conv = nn.Conv1d for the 1-D maps of the zx and zy axes)."""
    return nn.Sequential(conv(channels, channels, 3, padding=1, groups=channels), nn.GELU(),
                         conv(channels, channels, 1))


class GHPA(nn.Module):
    """GHPA: split C_in into four quarters (C' = C_in/4) and multiply three of them elementwise by a learned map,
    each along two of the three axes (channel c, height h, width w); the fourth is a depthwise conv.
    (B, C_in, H, W) -> (B, C_out, H, W). Parameter shapes and names are the official ones.

        x1 · Φ(P_xy)   P_xy (1, C', 8, 8) resized to (H, W)  -> a (C', H, W) map       ("xy" plane)
        x2 · Φ(P_zx)   P_zx (1, 1, C', 8) resized to (C', H) -> a (C', H) map, broadcast over W   ("zx")
        x3 · Φ(P_zy)   P_zy (1, 1, C', 8) resized to (C', W) -> a (C', W) map, broadcast over H   ("zy")
        x4 -> Conv1x1, GELU, DWConv3
    then LayerNorm and DWConv3 + GELU + Conv1x1 to C_out. Φ = depthwise conv, GELU, pointwise conv; the learned
    maps start at 1 and are resized bilinearly (align_corners) so any input size works.
    (The official code permutes x2 and x3 to multiply; broadcasting the (C', H) / (C', W) maps is the same.)
    """

    def __init__(self, dim_in: int, dim_out: int, x: int = 8, y: int = 8):
        super().__init__()
        c = dim_in // 4
        self.params_xy = nn.Parameter(torch.ones(1, c, x, y))
        self.conv_xy = _depthwise_pointwise(c)
        self.params_zx = nn.Parameter(torch.ones(1, 1, c, x))
        self.conv_zx = _depthwise_pointwise(c, nn.Conv1d)
        self.params_zy = nn.Parameter(torch.ones(1, 1, c, y))
        self.conv_zy = _depthwise_pointwise(c, nn.Conv1d)
        self.dw = nn.Sequential(nn.Conv2d(c, c, 1), nn.GELU(), nn.Conv2d(c, c, 3, padding=1, groups=c))
        self.norm1 = ChannelLayerNorm(dim_in)
        self.norm2 = ChannelLayerNorm(dim_in)
        self.ldw = nn.Sequential(nn.Conv2d(dim_in, dim_in, 3, padding=1, groups=dim_in), nn.GELU(),
                                 nn.Conv2d(dim_in, dim_out, 1))

    @staticmethod
    def _resized(params: torch.Tensor, size) -> torch.Tensor:
        return F.interpolate(params, size=size, mode="bilinear", align_corners=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2, x3, x4 = torch.chunk(self.norm1(x), 4, dim=1)               # (B, C', H, W) each
        c, h, w = x1.shape[1:]
        x1 = x1 * self.conv_xy(self._resized(self.params_xy, (h, w)))        # × (1, C', H, W)
        x2 = x2 * self.conv_zx(self._resized(self.params_zx, (c, h))[0]).unsqueeze(-1)   # × (1, C', H, 1)
        x3 = x3 * self.conv_zy(self._resized(self.params_zy, (c, w))[0]).unsqueeze(-2)   # × (1, C', 1, W)
        x4 = self.dw(x4)
        return self.ldw(self.norm2(torch.cat([x1, x2, x3, x4], dim=1)))


class GroupAggregationBridge(nn.Module):
    """GAB: fuse the deeper skip x_h, this stage's skip x_l and this stage's GT mask m.
    x_h (B, C_h, h, w) -> 1x1 conv to C_l, bilinear resize to x_l's (H, W); then four groups
    g_i = [x_h quarter i, x_l quarter i, m] (C_l/2 + 1 channels) each through LayerNorm and a depthwise 3x3
    conv with dilation (1, 2, 5, 7)[i]; concat (2·C_l + 4) -> LayerNorm -> 1x1 conv -> (B, C_l, H, W).
    Twin of `group_aggregation_bridge` (names pre_project, g0..g3, tail_conv)."""

    def __init__(self, dim_xh: int, dim_xl: int, k_size: int = 3, dilations=(1, 2, 5, 7)):
        super().__init__()
        self.pre_project = nn.Conv2d(dim_xh, dim_xl, 1)
        group = dim_xl // 2 + 1
        for i, d in enumerate(dilations):
            self.add_module(f"g{i}", nn.Sequential(
                ChannelLayerNorm(group),
                nn.Conv2d(group, group, k_size, padding=(k_size + (k_size - 1) * (d - 1)) // 2, dilation=d,
                          groups=group)))
        self.tail_conv = nn.Sequential(ChannelLayerNorm(dim_xl * 2 + 4), nn.Conv2d(dim_xl * 2 + 4, dim_xl, 1))

    def forward(self, xh: torch.Tensor, xl: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        xh = F.interpolate(self.pre_project(xh), size=xl.shape[2:], mode="bilinear", align_corners=True)
        groups = [getattr(self, f"g{i}")(torch.cat((h, low, mask), dim=1))
                  for i, (h, low) in enumerate(zip(torch.chunk(xh, 4, dim=1), torch.chunk(xl, 4, dim=1)))]
        return self.tail_conv(torch.cat(groups, dim=1))


def _one_ghpa(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(GHPA(cin, cout))          # in a Sequential as officially: keys "encoder4.0. ..."


class EGEUNet(SixStageUNet):
    def __init__(self, num_classes: int = 1, input_channels: int = 3, c_list=CHANNELS,
                 deep_supervision: bool = False):
        super().__init__(num_classes, input_channels, c_list, deep_encoder=_one_ghpa, deep_decoder=_one_ghpa)
        c = self.c_list
        self.deep_supervision = deep_supervision
        for i in range(1, 6):     # GAB1..GAB5 (x_h from stage i+1, x_l at stage i); gt_conv1..5 on c4..c0
            self.add_module(f"GAB{i}", GroupAggregationBridge(c[i], c[i - 1]))
            self.add_module(f"gt_conv{i}", nn.Sequential(nn.Conv2d(c[5 - i], 1, 1)))
        self.init_official_()

    def forward(self, x: torch.Tensor):
        """(B, C_in, H, W), H and W multiples of 32 -> (B, num_classes, H, W) probabilities
        (with deep_supervision: ((five (B, 1, H, W) side maps, deepest first), final))."""
        out, skips = self.encode(x)                          # skips t1..t5
        deeper = F.gelu(self.encoder6(out))                  # t6: (B, c5, H/32, W/32)
        out, side = deeper, []
        for stage in range(1, 6):                            # level 5 (H/32) up to level 1 (H/2)
            level = 6 - stage
            out = self.decoder_stage(stage, out)             # (B, c[level-1], H/2^level, W/2^level)
            mask = getattr(self, f"gt_conv{stage}")(out)     # (B, 1, ...), pre-sigmoid
            deeper = getattr(self, f"GAB{level}")(deeper, skips[level - 1], mask)   # the bridged skip
            out = out + deeper
            side.append(mask)
        final = self.head(out)
        if not self.deep_supervision:
            return final
        size = final.shape[2:]
        return tuple(torch.sigmoid(F.interpolate(m, size=size, mode="bilinear", align_corners=True))
                     for m in side), final

