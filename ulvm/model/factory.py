"""The one place a config becomes a network: `build_model(config, backend)`.

`Config.model` names the architecture: "ultralight" (UltraLight VM-UNet, the default) or one of the
lightweight baselines of the paper's comparison (`ulvm.baselines.known()`). The scan backend is a
run-time setting (`ulvm.config.RunSettings.backend`), not part of the protocol: the same weights run on
every backend.
"""
from __future__ import annotations

import torch

from ..config import Config
from ..ssm.backends import check_name
from .ultralight import UltraLightVMUNet


def build_model(config: Config, backend: str = "auto") -> torch.nn.Module:
    """The network a config describes (random weights, seeded by the caller), in training mode."""
    check_name(backend)
    if config.model != "ultralight":
        from ..baselines import build

        return build(config.model, num_classes=config.num_classes, input_channels=config.input_channels,
                     backend=backend)
    return UltraLightVMUNet(num_classes=config.num_classes, input_channels=config.input_channels,
                            c_list=config.c_list, split_att=config.split_att, bridge=config.bridge,
                            parallel=config.parallel, backend=backend)
