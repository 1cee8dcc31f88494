"""The Spatial-Channel Attention Bridge (SC_Att_Bridge) on the skip connections (paper §3.3).

Twin of `Channel_Att_Bridge`, `Spatial_Att_Bridge` and `SC_Att_Bridge` in the official
`models/UltraLight_VM_UNet.py` (inherited from MALUNet). It takes the five encoder skip features
t1..t5 (channels c_list[0..4], each at its own resolution) and re-weights them twice:

    s_i = σ(conv7x7,dil3([mean_c t_i, max_c t_i]))      spatial attention, one conv shared by all stages
    u_i = s_i·t_i + t_i                                  spatially re-weighted skip, with its residual
    c_i = σ(Linear_i(conv1d_k3(concat_j avgpool(u_j))))  channel attention from ONE descriptor of all stages
    out_i = c_i·u_i + s_i·t_i                            (the official residual is s_i·t_i, not u_i)

The channel branch mixes information across stages: every stage's weights see every stage's pooled features.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class Channel_Att_Bridge(nn.Module):  # noqa: N801 - official name, kept for state-dict compatibility
    def __init__(self, c_list, split_att: str = "fc"):
        super().__init__()
        if split_att not in ("fc", "conv"):
            raise ValueError(f"split_att must be 'fc' or 'conv', not {split_att!r}")
        stages = c_list[:-1]                          # t1..t5 channels
        total = sum(stages)
        self.split_att = split_att
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.get_all_att = nn.Conv1d(1, 1, kernel_size=3, padding=1, bias=False)
        for i, channels in enumerate(stages, start=1):
            layer = nn.Linear(total, channels) if split_att == "fc" else nn.Conv1d(total, channels, 1)
            self.add_module(f"att{i}", layer)
        self.sigmoid = nn.Sigmoid()

    def forward(self, *skips):
        pooled = torch.cat([self._pool(t) for t in skips], dim=1)               # (B, ΣC, 1, 1)
        att = self.get_all_att(pooled.squeeze(-1).transpose(-1, -2))            # (B, 1, ΣC)
        if self.split_att != "fc":
            att = att.transpose(-1, -2)                                         # (B, ΣC, 1)
        weights = []
        for i, t in enumerate(skips, start=1):
            w = self.sigmoid(getattr(self, f"att{i}")(att))                     # (B, 1, C_i) or (B, C_i, 1)
            if self.split_att == "fc":
                w = w.transpose(-1, -2)
            weights.append(w.unsqueeze(-1).expand_as(t))                        # (B, C_i, H_i, W_i)
        return weights


    def _pool(self, t: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, 1, 1), the mean of each map. CUDA's AdaptiveAvgPool2d backward has no
        deterministic form: under `torch.use_deterministic_algorithms` on CUDA a plain mean (its backward is a
        broadcast) stands in."""
        if t.is_cuda and torch.are_deterministic_algorithms_enabled():
            return t.mean(dim=(2, 3), keepdim=True)
        return self.avgpool(t)


class Spatial_Att_Bridge(nn.Module):  # noqa: N801
    def __init__(self):
        super().__init__()
        self.shared_conv2d = nn.Sequential(nn.Conv2d(2, 1, 7, stride=1, padding=9, dilation=3), nn.Sigmoid())

    def forward(self, *skips):
        maps = []
        for t in skips:
            mean_c = t.mean(dim=1, keepdim=True)                                # (B, 1, H, W)
            max_c = t.amax(dim=1, keepdim=True)
            maps.append(self.shared_conv2d(torch.cat([mean_c, max_c], dim=1)))
        return maps


class SC_Att_Bridge(nn.Module):  # noqa: N801
    def __init__(self, c_list, split_att: str = "fc"):
        super().__init__()
        self.catt = Channel_Att_Bridge(c_list, split_att=split_att)
        self.satt = Spatial_Att_Bridge()

    def forward(self, *skips):
        spatially_weighted = [s * t for t, s in zip(skips, self.satt(*skips))]          # s_i·t_i
        with_residual = [st + t for st, t in zip(spatially_weighted, skips)]             # u_i
        channel_weights = self.catt(*with_residual)                                      # c_i
        return tuple(c * u + st for c, u, st in zip(channel_weights, with_residual, spatially_weighted))
