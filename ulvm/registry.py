"""Which models exist, and the one place a config becomes a network: `build_model(config, backend)`.

Every model of the book is registered here alike: UltraLight VM-UNet ("ultralight", the default of
`Config.model`), the baselines of the comparison chapter (`ulvm.baselines`) and the Mamba baselines with PVM
layers in place of their Mamba layers (`ulvm.baselines.pvm_variants`). The scan backend is a run-time
setting (`ulvm.config.RunSettings.backend`), not part of the protocol: the same weights run on every backend.
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

from .baselines import BASELINES, build
from .baselines.pvm_variants import PVM_VARIANTS
from .config import Config
from .errors import UlvmError
from .model import UltraLightVMUNet
from .ssm.backends import check_name


def _ultralight(config: Config, backend: str) -> nn.Module:
    return UltraLightVMUNet(num_classes=config.num_classes, input_channels=config.input_channels,
                            c_list=config.c_list, split_att=config.split_att, bridge=config.bridge,
                            parallel=config.parallel, backend=backend, width=config.width)


def _baseline(name: str) -> Callable[[Config, str], nn.Module]:
    def build_baseline(config: Config, backend: str) -> nn.Module:
        return build(name, num_classes=config.num_classes, input_channels=config.input_channels, backend=backend)
    return build_baseline


def _pvm_variant(name: str) -> Callable[[Config, str], nn.Module]:
    def build_variant(config: Config, backend: str) -> nn.Module:
        return PVM_VARIANTS[name](num_classes=config.num_classes, input_channels=config.input_channels,
                                  backend=backend)
    return build_variant


MODELS: dict[str, Callable[[Config, str], nn.Module]] = {
    "ultralight": _ultralight, **{name: _baseline(name) for name in BASELINES},
    **{name: _pvm_variant(name) for name in PVM_VARIANTS}}


def known() -> list[str]:
    """The names `Config.model` may take."""
    return list(MODELS)


def build_model(config: Config, backend: str = "auto") -> nn.Module:
    """The network a config describes (random weights, seeded by the caller), in training mode."""
    check_name(backend)
    if config.model not in MODELS:
        raise UlvmError(f"unknown model {config.model!r}; known models: {', '.join(known())}")
    return MODELS[config.model](config, backend)
