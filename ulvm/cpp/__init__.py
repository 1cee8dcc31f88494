"""ulvm's C++ operators for CPU inference, `torch.ops.ulvm.*`: one library built from the sources here.

* `selective_scan.cpp`: the selective scan as one fused loop (backend "cpp", `ulvm.ssm.cpu_scan`).
* `conv2d.cpp`: a convolution as a direct loop, for few output channels (`direct_convolutions_` swaps it in).
* `group_norm.cpp`: group normalisation, NCHW or channels-last (`direct_group_norms_` swaps it in).

They are real PyTorch operators, so torch.compile and AOTInductor keep each as one call in the code they
generate (`ulvm.deploy.package`), and a .pt2 package calls them by name: `ulvm.deploy.package.load_pt2`
loads the library first.
Forward only, CPU tensors, fp32 and fp64.

The library is compiled from source the first time it is used in a Python environment (~1 minute; PyTorch's
`cpp_extension` needs a C++ compiler and ninja, and caches the build under ~/.cache/torch_extensions, or
TORCH_EXTENSIONS_DIR). Where it cannot be built, `why_unavailable` says why and callers fall back to plain
PyTorch. Built for the CPU's vector instructions as PyTorch reports them, which are part of the build's
name, so machines sharing a home folder do not share a build that one of them cannot run.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn as nn

log = logging.getLogger(__name__)

SOURCES = sorted(str(path) for path in Path(__file__).parent.glob("*.cpp"))
# the vector instruction sets torch itself dispatches to, as compiler flags
_ARCH_FLAGS = {"AVX512": ["-mavx512f", "-mavx512dq", "-mavx512vl", "-mavx512bw", "-mavx2", "-mfma"],
               "AVX2": ["-mavx2", "-mfma"]}
_built: list[str] = []     # once tried: [""] when loaded, else [why not] (a list, not functools.cache: torch.compile
                           # reads it as a constant where it would trace into a cached function's wrapper)


def _build() -> str:
    """Compile and load the library; "" when loaded, else why it could not be."""
    try:
        from torch.utils.cpp_extension import load
    except ImportError as error:                     # it imports setuptools, which an environment may lack
        return f"torch.utils.cpp_extension is not importable ({error})"
    capability = torch.backends.cpu.get_cpu_capability()
    flags = ["-O3", "-ffast-math", "-fopenmp", *_ARCH_FLAGS.get(capability, [])]
    log.info("loading ulvm's C++ operators (%s); their first use compiles them, about a minute", capability)
    try:
        load(name=f"ulvm_cpp_{capability.lower()}", sources=SOURCES, extra_cflags=flags,
             extra_ldflags=["-fopenmp"], is_python_module=False, verbose=False)
    except Exception as error:                       # no compiler, no ninja, a failing build: say which
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return f"its C++ build failed ({type(error).__name__}: {first_line})"
    torch.library.register_fake("ulvm::selective_scan")(_scan_output)
    torch.library.register_fake("ulvm::conv2d_direct")(_conv_output)
    torch.library.register_fake("ulvm::group_norm")(_group_norm_output)
    return ""


def why_unavailable() -> str:
    """"" when the operators are loaded (building them the first time), else why they cannot be."""
    if not _built:
        _built.append(_build())
    return _built[0]


# The operators' outputs without running them, for torch.compile's and torch.export's tracing.
def _scan_output(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    return torch.empty_like(u, memory_format=torch.contiguous_format)


def _conv_output(x, weight, bias, padding, dilation):
    size = [x.shape[i] + 2 * padding[i - 2] - dilation[i - 2] * (weight.shape[i] - 1) for i in (2, 3)]
    return x.new_empty((x.shape[0], weight.shape[0], *size))


def _group_norm_output(x, groups, weight, bias, eps):       # NCHW stays NCHW; any other strides: channels-last
    return torch.empty_like(x, memory_format=torch.contiguous_format if x.is_contiguous() else torch.channels_last)


class DirectConv2d(nn.Conv2d):
    """An `nn.Conv2d` (stride 1, groups 1, zero padding) computed by the direct loop of `conv2d.cpp`
    (`torch.ops.ulvm.conv2d_direct`); same parameters, same output as the layer it replaces. Inference only:
    the operator has no backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.ulvm.conv2d_direct(x, self.weight, self.bias, self.padding, self.dilation)


# oneDNN computes output channels in blocks of 8 floats (AVX2): with fewer, the direct loop is faster at every
# such layer of the model; with 8 or more, at none (book/results/bench/NOTES.md)
FEW_OUTPUTS = 8


def _replaceable(layer: nn.Module) -> bool:
    return (type(layer) is nn.Conv2d and layer.out_channels < FEW_OUTPUTS and layer.groups == 1
            and layer.stride == (1, 1) and layer.padding_mode == "zeros"
            and not isinstance(layer.padding, str))


def _swap_layers_(model: nn.Module, direct_twin) -> nn.Module:
    """Put `direct_twin(layer)` in the place of every layer of `model` for which it returns a module (built on
    the meta device), sharing the layer's weight and bias; in place, returns `model`."""
    for parent in list(model.modules()):
        for name, layer in list(parent.named_children()):
            direct = direct_twin(layer)
            if direct is not None:
                direct.weight, direct.bias = layer.weight, layer.bias
                setattr(parent, name, direct)
    return model


def _direct_conv(layer: nn.Module) -> DirectConv2d | None:
    if not _replaceable(layer):
        return None
    return DirectConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, padding=layer.padding,
                        dilation=layer.dilation, bias=layer.bias is not None, device="meta")


def direct_convolutions_(model: nn.Module) -> nn.Module:
    """Swap every `nn.Conv2d` of `model` with fewer than `FEW_OUTPUTS` output channels (stride 1, groups 1,
    numeric zero padding) for a `DirectConv2d` sharing its parameters, in place; returns `model`. In
    UltraLight VM-UNet: the bridge's shared 2→1 7×7 and the final 1×1 to the mask. Call `why_unavailable()`
    first."""
    return _swap_layers_(model, _direct_conv)


class DirectGroupNorm(nn.GroupNorm):
    """An `nn.GroupNorm` of (b, C, H, W) maps computed by `group_norm.cpp` (`torch.ops.ulvm.group_norm`), in the
    layout it is given; same parameters, same output as the layer it replaces. Inference only: the operator has
    no backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.ulvm.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


def _direct_group_norm(layer: nn.Module) -> DirectGroupNorm | None:
    if type(layer) is not nn.GroupNorm:
        return None
    return DirectGroupNorm(layer.num_groups, layer.num_channels, layer.eps, layer.affine, device="meta")


def direct_group_norms_(model: nn.Module) -> nn.Module:
    """Swap every `nn.GroupNorm` of `model` for a `DirectGroupNorm` sharing its parameters, in place; returns
    `model`. In UltraLight VM-UNet: the ten norms after the encoder and decoder stages, all of 4-D maps. Call
    `why_unavailable()` first."""
    return _swap_layers_(model, _direct_group_norm)
