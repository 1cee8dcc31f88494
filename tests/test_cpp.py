"""ulvm's C++ operators (`ulvm.cpp`): the direct convolution against F.conv2d (fp64 and fp32), its refusals,
its shape under torch.export, and its swap into the model; the group norm against F.group_norm in both layouts,
and its swap. The scan has its own tests
(test_cpu_scan.py). Skipped where the library cannot be built (the first test in a fresh environment builds it,
~1 minute)."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ulvm import cpp
from ulvm.model import UltraLightVMUNet

torch.set_num_threads(1)


@pytest.fixture(scope="module", autouse=True)
def built():
    reason = cpp.why_unavailable()
    if reason:
        pytest.skip(f"ulvm's C++ operators unavailable here: {reason}")


def conv(x, weight, bias, padding, dilation):
    return torch.ops.ulvm.conv2d_direct(x, weight, bias, padding, dilation)


@pytest.mark.parametrize(("channels", "outputs", "kernel", "padding", "dilation", "size"), [
    (2, 1, (7, 7), (9, 9), (3, 3), (16, 16)),     # the bridge's convolution
    (2, 1, (7, 7), (9, 9), (3, 3), (5, 8)),       # a map smaller than the kernel's reach: most taps in the padding
    (3, 8, (3, 3), (1, 1), (1, 1), (12, 10)),     # the first 3→8
    (8, 1, (1, 1), (0, 0), (1, 1), (12, 10)),     # the final 1×1
    (3, 2, (3, 5), (0, 2), (1, 2), (9, 11)),      # no padding along one side: a smaller output
    (1, 3, (3, 3), (4, 1), (1, 1), (6, 7)),       # padding beyond the kernel's reach: a larger output
])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_conv2d_in_float64(channels, outputs, kernel, padding, dilation, size, bias):
    x = torch.randn(3, channels, *size, dtype=torch.float64)
    weight = torch.randn(outputs, channels, *kernel, dtype=torch.float64)
    b = torch.randn(outputs, dtype=torch.float64) if bias else None
    expected = F.conv2d(x, weight, b, padding=padding, dilation=dilation)
    got = conv(x, weight, b, padding, dilation)
    assert got.shape == expected.shape and got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_float32_on_a_strided_input():
    """A channels-last view is read as the values it holds (copied to rows first); fp32 to rounding."""
    x = torch.randn(2, 40, 33, 2).permute(0, 3, 1, 2)                 # (2, 2, 40, 33), not contiguous
    weight, bias = torch.randn(3, 2, 7, 7), torch.randn(3)
    assert not x.is_contiguous()
    torch.testing.assert_close(conv(x, weight, bias, (9, 9), (3, 3)),
                               F.conv2d(x, weight, bias, padding=9, dilation=3), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("x", "weight", "bias", "padding", "message"), [
    (torch.randn(1, 3, 8, 8), torch.randn(1, 2, 3, 3), None, (1, 1), r"weight \(O, C, KH, KW\)"),  # channels differ
    (torch.randn(1, 2, 8, 8), torch.randn(2, 2, 3, 3), torch.randn(1), (1, 1), "a bias value per output channel"),
    (torch.randn(1, 2, 2, 2), torch.randn(1, 2, 5, 5), None, (0, 0), "larger than the padded input"),
    (torch.randn(1, 2, 8, 8), torch.randn(1, 2, 3, 3), None, (-1, 1), "padding"),
])
def test_refuses_what_it_does_not_compute(x, weight, bias, padding, message):
    with pytest.raises(RuntimeError, match=message):
        conv(x, weight, bias, padding, (1, 1))


def test_traced_with_a_dynamic_batch():
    """Its fake gives torch.export the output's shape: one call in the exported graph, any batch."""
    layer = cpp.direct_convolutions_(nn.Sequential(nn.Conv2d(2, 1, 7, padding=9, dilation=3)))
    program = torch.export.export(layer, (torch.randn(2, 2, 12, 12),),
                                  dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    calls = [node for node in program.graph.nodes if node.target is torch.ops.ulvm.conv2d_direct.default]
    x = torch.randn(5, 2, 12, 12)
    assert len(calls) == 1
    torch.testing.assert_close(program.module()(x), layer(x))


def test_swapped_into_the_model_with_the_same_output():
    model = UltraLightVMUNet().double().eval()
    swapped = cpp.direct_convolutions_(copy.deepcopy(model))
    direct = [name for name, layer in swapped.named_modules() if isinstance(layer, cpp.DirectConv2d)]
    assert direct == ["scab.satt.shared_conv2d.0", "final"]        # the bridge's 2→1 7×7 and the 1×1 to the mask
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(swapped(x), model(x), rtol=1e-10, atol=1e-10)
    assert swapped.state_dict().keys() == model.state_dict().keys()


def test_other_convolutions_are_left_alone():
    layers = nn.Sequential(nn.Conv2d(2, 1, 3, stride=2), nn.Conv2d(2, 1, 3, padding="same"), nn.Conv2d(3, 8, 3),
                           nn.Conv2d(2, 2, 3, groups=2), nn.Conv2d(2, 1, 3, padding_mode="reflect"),
                           nn.ConvTranspose2d(2, 1, 3))
    cpp.direct_convolutions_(layers)
    assert not any(isinstance(layer, cpp.DirectConv2d) for layer in layers)


@pytest.mark.parametrize(("shape", "groups"), [((2, 8, 16, 12), 4),     # the first stage: groups of 2 channels
                                               ((1, 48, 4, 4), 4),      # the deepest stage
                                               ((3, 6, 5, 7), 3), ((2, 5, 3, 3), 1)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("affine", [True, False])
def test_group_norm_matches_F_group_norm_in_its_layout(shape, groups, layout, affine):
    x = (torch.randn(shape, dtype=torch.float64) * 3 + 1).contiguous(memory_format=layout)
    weight, bias = (torch.randn(shape[1], dtype=torch.float64) for _ in range(2)) if affine else (None, None)
    out = torch.ops.ulvm.group_norm(x, groups, weight, bias, 1e-5)
    torch.testing.assert_close(out, F.group_norm(x, groups, weight, bias, 1e-5), rtol=1e-12, atol=1e-12)
    assert out.is_contiguous(memory_format=layout)
    weight32, bias32 = (weight.float(), bias.float()) if affine else (None, None)
    single = torch.ops.ulvm.group_norm(x.float(), groups, weight32, bias32, 1e-5)
    torch.testing.assert_close(single, F.group_norm(x, groups, weight, bias, 1e-5).float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_group_norm_keeps_the_variance_of_maps_with_a_large_mean(layout):
    # sums of squares around zero would cancel to nothing here (ATen's own channels-last kernel returns NaN)
    x = (1e6 + 1e-2 * torch.randn(2, 8, 16, 12, dtype=torch.float64)).contiguous(memory_format=layout)
    out = torch.ops.ulvm.group_norm(x, 4, None, None, 0.0)
    torch.testing.assert_close(out, F.group_norm(x.contiguous(), 4, None, None, 0.0), rtol=1e-6, atol=1e-6)


def test_group_norm_result_does_not_depend_on_the_thread_count():
    x = torch.randn(1, 8, 256, 256).contiguous(memory_format=torch.channels_last)   # large enough to be split
    weight, bias = torch.randn(8), torch.randn(8)
    one = torch.ops.ulvm.group_norm(x, 4, weight, bias, 1e-5)
    torch.set_num_threads(2)
    try:
        two = torch.ops.ulvm.group_norm(x, 4, weight, bias, 1e-5)
    finally:
        torch.set_num_threads(1)
    assert torch.equal(one, two)


def test_group_norm_of_other_strides_comes_out_channels_last():
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64).transpose(2, 3)       # neither NCHW nor channels-last
    out = torch.ops.ulvm.group_norm(x, 4, None, None, 1e-5)
    torch.testing.assert_close(out, F.group_norm(x, 4), rtol=1e-12, atol=1e-12)
    assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(("x", "groups", "weight", "message"), [
    (torch.randn(2, 8, 4), 4, None, "x \\(b, C, H, W\\)"),
    (torch.randn(1, 8, 0, 4), 4, None, "x has no pixels"),
    (torch.randn(1, 6, 4, 4), 4, None, "6 channels in 4 groups"),
    (torch.randn(1, 8, 4, 4), 4, torch.ones(4), "a weight and a bias value per channel"),
])
def test_group_norm_refuses_what_it_does_not_compute(x, groups, weight, message):
    with pytest.raises(RuntimeError, match=message):
        torch.ops.ulvm.group_norm(x, groups, weight, None, 1e-5)


def test_group_norms_swapped_into_the_model_with_the_same_output():
    model = UltraLightVMUNet().double().eval()
    swapped = cpp.direct_group_norms_(copy.deepcopy(model))
    assert sum(isinstance(layer, cpp.DirectGroupNorm) for layer in swapped.modules()) == 10   # ebn1-5, dbn1-5
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(swapped(x), model(x), rtol=1e-10, atol=1e-10)
        channels_last = copy.deepcopy(swapped).to(memory_format=torch.channels_last)
        torch.testing.assert_close(channels_last(x.contiguous(memory_format=torch.channels_last)), model(x),
                                   rtol=1e-10, atol=1e-10)
    assert swapped.state_dict().keys() == model.state_dict().keys()
