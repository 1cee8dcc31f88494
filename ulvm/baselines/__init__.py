"""The lightweight models UltraLight VM-UNet is compared with, rebuilt from their papers and official code.

Every model takes (B, 3, H, W) images and returns (B, 1, H, W) sigmoid probabilities, like
`ulvm.model.UltraLightVMUNet`; H and W multiples of 32. One module per model, each naming its paper, official
repository and file, what it changes and why.

    build("egeunet")          -> an nn.Module (keyword arguments go to the model's constructor)
    known()                   -> the baselines' names (every model of the book: `ulvm.registry.known()`)
    REPORTED[name]            -> the authors' own parameter count and GFLOPs, with where they come from
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

from ..errors import UlvmError
from .egeunet import EGEUNet
from .lightmunet import LightMUNet
from .malunet import MALUNet
from .unet import UNet
from .unext import UNeXtS
from .vmunet import VMUNet

BASELINES: dict[str, Callable[..., nn.Module]] = {
    "unet": UNet,
    "unext_s": UNeXtS,
    "malunet": MALUNet,
    "egeunet": EGEUNet,
    "vmunet": VMUNet,
    "lightmunet": LightMUNet,
}

# The authors' numbers, as THEY report them (params: a count; gflops: thop MACs at 1×3×256×256, in G).
# None where they report none that is comparable.
REPORTED: dict[str, dict] = {
    "unet": {"params": 7.70e6, "gflops": 13.78,
             "source": "MALUNet paper (arXiv 2211.01784) abstract: MALUNet has 44x fewer parameters and 166x fewer "
                       "GFLOPs than its U-Net, i.e. 44 x 0.175 M and 166 x 0.083 G"},
    "unext_s": {"params": 0.32e6, "gflops": 0.10,
                "source": "UNeXt paper (arXiv 2203.04967), UNeXt-S in its channel study"},
    "malunet": {"params": 0.175e6, "gflops": 0.083, "source": "MALUNet paper (arXiv 2211.01784)"},
    "egeunet": {"params": 0.053e6, "gflops": 0.072, "source": "EGE-UNet paper (arXiv 2307.08473)"},
    "vmunet": {"params": 27.43e6, "gflops": 4.11, "source": "VM-UNet paper (arXiv 2402.02491)"},
    "lightmunet": {"params": 1.87e6, "gflops": None,
                   "source": "LightM-UNet paper (arXiv 2403.05246), LiTS table; its GFLOPs are for 3-D volumes"},
}


def known() -> list[str]:
    return list(BASELINES)


def build(name: str, backend: str = "auto", **kwargs) -> nn.Module:
    """The model `name` (one of `known()`), built with `kwargs` (num_classes, input_channels, ...).
    `backend` (the selective-scan backend) reaches the models that have a scan (those with `set_backend`)."""
    if name not in BASELINES:
        raise UlvmError(f"unknown model {name!r}; known models: {', '.join(known())}")
    model = BASELINES[name]
    return model(backend=backend, **kwargs) if hasattr(model, "set_backend") else model(**kwargs)


__all__ = ["EGEUNet", "LightMUNet", "MALUNet", "BASELINES", "REPORTED", "UNeXtS", "UNet", "VMUNet", "build", "known"]
