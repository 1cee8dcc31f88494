"""U-Net (Ronneberger, Fischer & Brox, MICCAI 2015, arXiv 1505.04597) as the lightweight-segmentation papers
compare with it: the classic architecture with base width 32 (channels 32, 64, 128, 256, 512), "same" padding.

Official repository: none in PyTorch (the 2015 release is Caffe); MALUNet, EGE-UNet and UltraLight VM-UNet
publish no U-Net code either. Which U-Net: the MALUNet paper (Ruan et al. 2022) says its model has "44x"
fewer parameters and "166x" fewer GFLOPs than its U-Net: with MALUNet's 0.175 M / 0.083 G that is a U-Net of
~7.7 M parameters and ~13.8 GFLOPs at 256×256 (EGE-UNet, by the same authors, compares with the same U-Net).
Of the U-Net family (base width 16 / 32 / 64; transposed-conv or bilinear up-sampling; with or without
BatchNorm) only the classic one with base 32, transposed convolutions and BatchNorm gives that: 7,763,041
parameters and 13.75 thop GFLOPs. Authors' report (theirs, derived as above): 7.7 M parameters, 13.8 GFLOPs.
`base=64` gives the original paper's width (31.0 M parameters, 54.7 GFLOPs).

    stage        module                                         resolution   channels (base b)
    inc          DoubleConv                                     H            b
    down1-4      max-pool 2 + DoubleConv                        H/2..H/16    2b, 4b, 8b, 16b
    up1-4        ConvTranspose 2x2 stride 2, concat skip, DoubleConv   H/8..H    8b, 4b, 2b, b
    outc         Conv1x1 + sigmoid                              H            num_classes
DoubleConv = (Conv3x3 no bias, BatchNorm, ReLU) × 2. Padding 1 keeps sizes, so no cropping of the skips
(the 2015 paper used unpadded convolutions and cropped); H and W must be multiples of 16.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class DoubleConv(nn.Sequential):
    """(Conv3x3, BatchNorm, ReLU) twice: (B, C_in, H, W) -> (B, C_out, H, W)."""

    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    def __init__(self, num_classes: int = 1, input_channels: int = 3, base: int = 32, depth: int = 4):
        super().__init__()
        widths = [base * 2 ** i for i in range(depth + 1)]             # 32, 64, 128, 256, 512
        self.inc = DoubleConv(input_channels, widths[0])
        self.downs = nn.ModuleList(DoubleConv(widths[i], widths[i + 1]) for i in range(depth))
        self.ups = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
                                 for i in reversed(range(depth)))
        self.up_convs = nn.ModuleList(DoubleConv(2 * widths[i], widths[i]) for i in reversed(range(depth)))
        self.outc = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W), H and W multiples of 2^depth -> (B, num_classes, H, W) probabilities."""
        skips = [self.inc(x)]                                           # (B, b, H, W)
        for down in self.downs:
            skips.append(down(nn.functional.max_pool2d(skips[-1], 2)))  # (B, 2^i b, H/2^i, W/2^i)
        out = skips.pop()                                               # bottom: (B, 16b, H/16, W/16)
        for up, conv in zip(self.ups, self.up_convs):
            out = conv(torch.cat([skips.pop(), up(out)], dim=1))        # one level up, half the channels
        return torch.sigmoid(self.outc(out))
