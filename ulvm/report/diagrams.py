"""Diagrams of the model drawn from the model itself: no box, width or shape is typed by hand.

    mamba_block_diagram   one Mamba block, its tensors labelled with the block's own sizes
    stage_shapes          C×H×W and tokens of every stage, recorded by forward hooks on one image
    architecture_diagram  the U-shaped network from `stage_shapes`: conv / PVM stages, the bridge
    token_receptive_field which input pixels one output pixel of a PVM stage depends on (autograd)

Chapters 02 (the Mamba block) and 03 (the network) show them.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from ..model import PVMLayer
from ..ssm import Mamba

COLOURS = {"linear": "#cfe2f3", "conv": "#fce5cd", "scan": "#d9ead3", "gate": "#ead1dc", "io": "#eeeeee",
           "pvm": "#d9ead3", "bridge": "#fff2cc"}


def _box(ax, x, y, text, colour, width=2.6, height=0.62):
    """A rounded box centred on (x, y) with `text`; returns its centre."""
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height,
                                boxstyle="round,pad=0.02,rounding_size=0.08", fc=colour, ec="#444444", lw=0.8))
    ax.text(x, y, text, ha="center", va="center", fontsize=8.5)
    return x, y


def _arrow(ax, start, end, text=None, height=0.62):
    (x0, y0), (x1, y1) = start, end
    dy = height / 2 if y1 != y0 else 0
    sign = -1 if y1 < y0 else 1
    ax.add_patch(FancyArrowPatch((x0, y0 + sign * dy), (x1, y1 - sign * dy), arrowstyle="-|>",
                                 mutation_scale=10, lw=0.8, color="#444444"))
    if text:
        ax.text((x0 + x1) / 2 + 0.1, (y0 + y1) / 2, text, fontsize=7.5, color="#555555", va="center")


def mamba_block_diagram(block: Mamba) -> plt.Figure:
    """One Mamba block as boxes and arrows, every size read from `block` (d, E, N, R, conv width)."""
    d, inner, state, rank, width = block.d_model, block.d_inner, block.d_state, block.dt_rank, block.d_conv
    fig, ax = plt.subplots(figsize=(7.2, 6.4))
    tokens = _box(ax, 0, 8, f"tokens  (B, L, d = {d})", COLOURS["io"], width=3.2)
    in_proj = _box(ax, 0, 7, f"in_proj  {d} → 2E = {2 * inner}", COLOURS["linear"], width=3.2)
    conv = _box(ax, -1.8, 5.8, f"causal conv1d, width {width}\nper channel, + SiLU", COLOURS["conv"])
    x_proj = _box(ax, -1.8, 4.6, f"x_proj  E = {inner} → R+2N = {rank + 2 * state}", COLOURS["linear"],
                  width=3.2)
    dt_proj = _box(ax, -3.5, 3.4, f"dt_proj  R = {rank} → E = {inner}\n+ softplus: Δ (B, E, L)",
                   COLOURS["linear"], width=2.9)
    shared = _box(ax, -0.4, 3.4, f"B_t, C_t  (B, N = {state}, L)\nshared by all E channels",
                  COLOURS["linear"])
    scan = _box(ax, -1.8, 2.2, "selective scan, A = -exp(A_log) (E, N)\ny = scan(x, Δ, A, B, C) + D·x",
                COLOURS["scan"], width=4.4)
    gate = _box(ax, 2.3, 3.4, f"z  (B, E = {inner}, L)\nSiLU(z)", COLOURS["gate"])
    product = _box(ax, 0, 1.0, "y · SiLU(z)", COLOURS["gate"], width=2.0)
    out = _box(ax, 0, 0, f"out_proj  E = {inner} → d = {d}:  (B, L, {d})", COLOURS["linear"], width=3.6)
    _arrow(ax, tokens, in_proj)
    _arrow(ax, in_proj, conv, "x (B, E, L)")
    _arrow(ax, conv, x_proj)
    _arrow(ax, x_proj, dt_proj, "Δ' (R)")
    _arrow(ax, x_proj, shared)
    _arrow(ax, dt_proj, scan)
    _arrow(ax, shared, scan)
    ax.add_patch(FancyArrowPatch((-3.1, 5.8), (-3.75, 2.2), arrowstyle="-|>", mutation_scale=10, lw=0.8,
                                 color="#444444", connectionstyle="arc3,rad=0.45"))
    ax.text(-5.0, 4.6, "x (B, E, L)", fontsize=7.5, color="#555555")
    _arrow(ax, in_proj, gate, "z")
    _arrow(ax, scan, product)
    _arrow(ax, gate, product)
    _arrow(ax, product, out)
    ax.set_xlim(-5.2, 4.2)
    ax.set_ylim(-0.6, 8.6)
    ax.axis("off")
    return fig


def stage_shapes(model: torch.nn.Module, size: int = 256) -> list[dict]:
    """Run one `size`² image through `model` and record every stage's output shape with forward hooks.

    One row per top-level child that produces a 4-D map (encoder1..6, decoder1..5, final), in call order:
    stage name, kind ("conv" or "PVM"), channels C, height H, width W, and the tokens L = H·W a PVM stage's
    Mamba scans (the map its layer sees, before the stage's pooling or upsampling)."""
    rows, handles = [], []

    def record(name, module):
        kind = "PVM" if any(isinstance(m, PVMLayer) for m in module.modules()) else "conv"

        def hook(_module, inputs, output):
            if torch.is_tensor(output) and output.dim() == 4:
                _, channels, height, width = output.shape
                rows.append({"stage": name, "kind": kind, "C_in": inputs[0].shape[1], "C": channels,
                             "H": height, "W": width, "tokens": height * width if kind == "PVM" else None})
        return hook

    for name, module in model.named_children():
        if name.startswith(("encoder", "decoder")) or name == "final":
            handles.append(module.register_forward_hook(record(name, module)))
    try:
        with torch.no_grad():
            model(torch.rand(1, 3, size, size) * 255)
    finally:
        for handle in handles:
            handle.remove()
    return rows


def architecture_diagram(rows: list[dict], bridge: bool = True) -> plt.Figure:
    """The U-shaped network from `stage_shapes` rows: encoders down the left, decoders up the right.

    Each box says what its stage computes (C_in → C at H×W; PVM stages also the tokens their Mamba scans);
    green boxes are PVM stages, orange ones convolutions; the yellow band is the attention bridge on the
    five skip connections (if the model has one)."""
    encoders = [r for r in rows if r["stage"].startswith("encoder")]
    decoders = [r for r in rows if r["stage"].startswith("decoder")]
    final = [r for r in rows if r["stage"] == "final"]

    def label(r):
        text = f"{r['stage']}  ({r['kind']})\n{r['C_in']} → {r['C']} ch at {r['H']}×{r['W']}"
        return text + (f"\nL = {r['tokens']:,} tokens" if r["tokens"] else "")

    fig, ax = plt.subplots(figsize=(9.5, 6.6))
    colour = {"PVM": COLOURS["pvm"], "conv": COLOURS["conv"]}
    centres = {}
    for i, r in enumerate(encoders):
        centres[r["stage"]] = _box(ax, -3.2 + 0.35 * i, 6 - i, label(r), colour[r["kind"]], width=3.0, height=0.8)
    for i, r in enumerate(decoders):                          # decoder1 sits beside encoder6, at the bottom
        centres[r["stage"]] = _box(ax, 3.2 - 0.35 * i, 1 + i, label(r), colour[r["kind"]], width=3.0, height=0.8)
    for upper, lower in zip(encoders, encoders[1:]):
        _arrow(ax, centres[upper["stage"]], centres[lower["stage"]], "pool", height=0.8)
    for lower, upper in zip(decoders, decoders[1:]):
        _arrow(ax, centres[lower["stage"]], centres[upper["stage"]], "up ×2", height=0.8)
    ax.add_patch(FancyArrowPatch((centres["encoder6"][0] + 1.5, 1), (centres["decoder1"][0] - 1.5, 1),
                                 arrowstyle="-|>", mutation_scale=10, lw=0.8, color="#444444"))
    # the five skips t1..t5 (encoder1..5 after pooling) go through the bridge to decoder5..1
    for i in range(min(5, len(decoders))):   # t_(i+1) is added to the output of decoder(5 - i)
        (x0, y0), (x1, y1) = centres[encoders[i]["stage"]], centres[decoders[-1 - i]["stage"]]
        ax.plot([x0 + 1.5, x1 - 1.5], [y0, y1], color="#999999", lw=0.8, ls="--", zorder=0)
    if bridge:
        ax.add_patch(FancyBboxPatch((-0.55, 1.55), 1.1, 4.9, boxstyle="round,pad=0.02", fc=COLOURS["bridge"],
                                    ec="#444444", lw=0.8, zorder=1))
        ax.text(0, 4.0, "attention\nbridge\n(scab)\non the\n5 skips\nt1 … t5", ha="center", va="center",
                fontsize=8, zorder=2)
    if final:
        r, top = final[0], centres[decoders[-1]["stage"]]
        end = _box(ax, top[0], top[1] + 1.1, f"final 1×1 conv → {r['C']} ch\nup ×2, sigmoid: probabilities",
                   COLOURS["io"], width=3.0, height=0.7)
        _arrow(ax, top, end, "up ×2", height=0.75)
    ax.set_xlim(-5.2, 5.2)
    ax.set_ylim(0.4, 7.0)
    ax.axis("off")
    return fig


def token_receptive_field(layer: torch.nn.Module, channels: int, height: int, width: int,
                          pixel: tuple[int, int]) -> torch.Tensor:
    """|∂ output[pixel] / ∂ input|, summed over channels: which input pixels one output pixel depends on.

    `layer` maps (1, channels, height, width) to a map of the same height and width (a PVM stage);
    returns a (height, width) tensor. A causal scan in row-major order gives exact zeros after `pixel`.
    """
    x = torch.randn(1, channels, height, width, requires_grad=True)
    row, column = pixel
    layer(x)[0, :, row, column].sum().backward()
    return x.grad[0].abs().sum(dim=0)
