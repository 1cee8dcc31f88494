"""PVM as a drop-in layer: the Mamba baselines with their Mamba layers replaced by UltraLight VM-UNet's PVM layer.

The official UltraLight VM-UNet README says the PVM layer "can be very simply embedded into any model to reduce
the overall parameters". These models test that claim: each is the baseline, built as it is, then every Mamba
layer is swapped for a `ulvm.model.PVMLayer` with `parallel` = 2 or 4 (module surgery after construction, so
the baselines' own files stay untouched).

* LightM-UNet (`lightmunet_pvm2`, `lightmunet_pvm4`): every `MambaLayer` (LN -> Mamba + skip -> LN -> Linear,
  one full-width Mamba) becomes a PVM layer of the same input and output widths (LN -> p chunks through ONE
  shared Mamba of width C/p + skip -> LN -> Linear). The only other change is the PVM layer's skip, which adds
  the normalised tokens (LightM-UNet's adds the raw ones).
* VM-UNet (`vmunet_pvm2`, `vmunet_pvm4`): every `SS2D` (the four-direction 2-D scan) becomes a PVM layer on the
  same channels-last map. This changes more than the width: the PVM layer scans the tokens in one direction
  (row order) where SS2D scans four, so the variant also tests whether the four directions matter.

Parameters and GFLOPs before and after: `ulvm profile --models lightmunet lightmunet_pvm2 ...` or
`ulvm.complexity.comparison_table`; the training grid: `book/grids/pvm_dropin.yaml`.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from ..model import PVMLayer
from .lightmunet import LightMUNet, MambaLayer
from .vmunet import SS2D, VMUNet


def replace_modules(model: nn.Module, kind: type, make: Callable[[nn.Module], nn.Module]) -> int:
    """Replace every sub-module of type `kind` by `make(old)`, in place; returns how many were replaced."""
    targets = [(name, module) for name, module in model.named_modules() if isinstance(module, kind)]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, make(module))
    return len(targets)


class ChannelsLastPVM(nn.Module):
    """A PVM layer on a channels-last map, where VM-UNet's SS2D sits: (B, H, W, C) -> (B, H, W, C)."""

    def __init__(self, channels: int, parallel: int, backend: str = "auto"):
        super().__init__()
        self.pvm = PVMLayer(channels, channels, parallel=parallel, backend=backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pvm(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class LightMUNetPVM(LightMUNet):
    """LightM-UNet with every MambaLayer replaced by a PVM layer of `parallel` chunks (a subclass sets it)."""
    parallel = 4

    def __init__(self, num_classes: int = 1, input_channels: int = 3, backend: str = "auto", **kwargs):
        super().__init__(num_classes=num_classes, input_channels=input_channels, backend=backend, **kwargs)
        replace_modules(self, MambaLayer, lambda old: PVMLayer(old.norm.normalized_shape[0], old.output_dim,
                                                               parallel=self.parallel, backend=backend))


class LightMUNetPVM2(LightMUNetPVM):
    parallel = 2


class LightMUNetPVM4(LightMUNetPVM):
    parallel = 4


class VMUNetPVM(VMUNet):
    """VM-UNet with every SS2D replaced by a channels-last PVM layer of `parallel` chunks."""
    parallel = 4

    def __init__(self, num_classes: int = 1, input_channels: int = 3, backend: str = "auto", **kwargs):
        super().__init__(num_classes=num_classes, input_channels=input_channels, backend=backend, **kwargs)
        replace_modules(self, SS2D, lambda old: ChannelsLastPVM(old.d_model, self.parallel, backend))


class VMUNetPVM2(VMUNetPVM):
    parallel = 2


class VMUNetPVM4(VMUNetPVM):
    parallel = 4


PVM_VARIANTS: dict[str, type[nn.Module]] = {
    "lightmunet_pvm2": LightMUNetPVM2, "lightmunet_pvm4": LightMUNetPVM4,
    "vmunet_pvm2": VMUNetPVM2, "vmunet_pvm4": VMUNetPVM4,
}
