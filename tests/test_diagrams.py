"""The book's diagrams are drawn from the model: shapes recorded by hooks, a causal receptive field."""
import inspect

import torch

from ulvm.model import PVMLayer, UltraLightVMUNet
from ulvm.report.diagrams import architecture_diagram, mamba_block_diagram, stage_shapes, token_receptive_field
from ulvm.ssm import Mamba


def test_stage_shapes_follow_the_model_and_draw():
    model = UltraLightVMUNet(parallel=4, backend="parallel").eval()
    rows = {row["stage"]: row for row in stage_shapes(model, size=64)}
    assert list(rows)[:6] == [f"encoder{i}" for i in range(1, 7)]
    assert rows["encoder1"] == {"stage": "encoder1", "kind": "conv", "C_in": 3, "C": 8, "H": 64, "W": 64,
                                "tokens": None}
    # encoder4's PVM layer works on the map before its pooling: 64 / 8 = 8 pixels a side
    assert (rows["encoder4"]["kind"], rows["encoder4"]["C_in"], rows["encoder4"]["tokens"]) == ("PVM", 24, 64)
    assert rows["decoder1"]["C"] == 48 and rows["final"]["C"] == 1
    assert not any(module._forward_hooks for module in model.modules()), "hooks removed"
    architecture_diagram(list(rows.values()))
    mamba_block_diagram(Mamba(16))


def test_receptive_field_of_a_causal_scan_ends_at_the_pixel():
    torch.manual_seed(0)
    layer = PVMLayer(8, 8, parallel=2, backend="reference")
    field = token_receptive_field(layer, 8, 4, 5, pixel=(2, 1)).flatten()
    token = 2 * 5 + 1
    assert (field[token + 1:] == 0).all() and (field[:token + 1] > 0).all()
    assert (token_receptive_field(layer, 8, 4, 5, pixel=(0, 0)).flatten()[1:] == 0).all()


def test_printed_source_moves_long_trailing_comments_above_their_line():
    from ulvm.report.book import source_for_page

    text = source_for_page(Mamba.forward, width=88)
    assert "    # causal: drop look-ahead\n    x = fused_conv if fused_conv" in text
    code = [line.split("  #")[0].rstrip() for line in text.splitlines() if not line.lstrip().startswith("#")]
    original = [line.split("  #")[0].rstrip() for line in inspect.getsource(Mamba.forward).splitlines()
                if not line.lstrip().startswith("#")]
    assert code == [line[4:] if line.startswith("    ") else line for line in original]   # the code unchanged
