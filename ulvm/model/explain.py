"""What the PVM layers look at: per stage, the scan's step Δ, the gate SiLU(z) and a Seg-Grad-CAM.

For every PVM stage of an `UltraLightVMUNet` (encoder4-6, decoder1-3), one forward pass records:

* **Δ** (`delta`, (B, p, h, w)): the selective scan's input-dependent step, softplus(dt_proj(Δ') + bias),
  averaged over the Mamba's E channels, one map per PVM chunk on the stage's h×w token grid. A large Δ makes
  the state forget what it held (exp(Δ·A) → 0) and take in the current token; a small Δ lets the token pass.
  It is read where the Mamba computes it (`ulvm.ssm.Mamba.scan_recorder`), not recomputed.
* **gate** (`gate`, (B, p, h, w)): SiLU(z), the multiplicative gate on the scan's output, averaged the same way.
* **Seg-Grad-CAM** (`gradcam`, (B, h, w)): Grad-CAM for segmentation (Vinogradova, Dibrov & Myers 2020,
  arXiv 2002.11434): the target is the sum of the lesion logits over the pixels the model calls lesion
  (all pixels when it calls none), each stage's channels are weighted by the spatial mean of the target's
  gradient, and the map is ReLU(Σ_k α_k·A_k) on the stage's output grid.

What a blank image shows: the network is not translation-invariant (zero padding at the borders, a scan that
runs in row order), so even a constant image gives maps with structure, at the borders, along the first
row, and, for the trained model, wherever it has learned to expect lesions; `tests/test_explain.py` checks
that the encoder stages' Grad-CAM of a constant image is flat away from the borders.

Tokens are the pixels in row order (`ulvm.model.pvm`), so a (B, L) row per chunk reshapes to (B, h, w).
The image-to-PNG path for a user's photo is `ulvm.deploy.explain`.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from .pvm import PVMLayer

PVM_STAGES = ("encoder4", "encoder5", "encoder6", "decoder1", "decoder2", "decoder3")


def pvm_layer(model: torch.nn.Module, stage: str) -> PVMLayer:
    """The PVM layer of a stage (the official layout wraps it in an nn.Sequential)."""
    layer = getattr(model, stage)[0]
    if not isinstance(layer, PVMLayer):
        raise TypeError(f"{stage} of {type(model).__name__} holds no PVM layer")
    return layer


@contextmanager
def recording(model: torch.nn.Module) -> Iterator[dict[str, dict]]:
    """While open, every forward records each PVM stage's Δ and gate rows and its output shape; the hooks are
    removed on exit. Yields {stage: {"delta": [...], "gate": [...], "shape": (B, C, h, w)}}."""
    records: dict[str, dict] = {}
    handles = []
    for stage in PVM_STAGES:
        layer = pvm_layer(model, stage)
        record = records[stage] = {"delta": [], "gate": [], "shape": None}

        def keep(delta, gate, record=record):                   # (n, E, L): n = B, or p·B chunk-major
            record["delta"].append(delta.detach().float().mean(dim=1))
            record["gate"].append(gate.detach().float().mean(dim=1))

        def shape(module, inputs, output, record=record):
            record["shape"] = tuple(output.shape)

        layer.mamba.scan_recorder = keep
        handles.append(layer.register_forward_hook(shape))
    try:
        yield records
    finally:
        for stage in PVM_STAGES:
            pvm_layer(model, stage).mamba.scan_recorder = None
        for handle in handles:
            handle.remove()


def _chunk_maps(rows: list[torch.Tensor], parallel: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Recorded (n, L) rows -> (B, p, h, w). One batched call gives (p·B, L) in chunk-major order, the
    official per-chunk loop gives p calls of (B, L): concatenated, both are chunk-major."""
    batch, _, h, w = shape
    stacked = torch.cat(rows, dim=0)                             # (p·B, L)
    return stacked.view(parallel, batch, h, w).transpose(0, 1)   # (B, p, h, w)


def seg_grad_cam(activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """Grad-CAM of one stage: ReLU(Σ_k α_k·A_k) with α_k the spatial mean of the target's gradient on
    channel k. activation, gradient (B, C, h, w) -> (B, h, w)."""
    weights = gradient.mean(dim=(2, 3), keepdim=True)                        # α_k: (B, C, 1, 1)
    return F.relu((weights * activation).sum(dim=1))


def explain(model: torch.nn.Module, images: torch.Tensor, region: str = "lesion") -> dict:
    """Δ, gate and Seg-Grad-CAM maps of every PVM stage for a batch of model inputs (B, 3, H, W).

    `region`: the pixels whose lesion logits Seg-Grad-CAM explains: "lesion" (those the model calls lesion; all
    of them where it calls none) or "all".

    Returns {"probability": (B, 1, H, W), "lesion": (B, 1, H, W) bool, "stages": {stage: {"delta": (B, p, h, w),
    "gate": (B, p, h, w), "gradcam": (B, h, w)}}}; the model's weights and gradients are left untouched.
    """
    if region not in ("lesion", "all"):
        raise ValueError(f"region must be 'lesion' or 'all', not {region!r}")
    activations: dict[str, torch.Tensor] = {}
    logits: list[torch.Tensor] = []
    handles = [getattr(model, stage).register_forward_hook(
        lambda module, inputs, output, stage=stage: activations.__setitem__(stage, output)) for stage in PVM_STAGES]
    handles.append(model.final.register_forward_hook(lambda module, inputs, output: logits.append(output)))
    try:
        with torch.enable_grad(), recording(model) as records:
            probability = model(images)                                      # (B, 1, H, W)
            logit = logits[0][:, 0]                                          # (B, H/2, W/2), before the up-sampling
            inside = (logit >= 0).float().flatten(1)                         # the pixels called lesion
            chosen = torch.where(inside.sum(1, keepdim=True) > 0, inside, 1.0) if region == "lesion" else 1.0
            target = (logit.flatten(1) * chosen).sum()                       # Seg-Grad-CAM's y over its region M
            stages = [activations[stage] for stage in PVM_STAGES]
            gradients = torch.autograd.grad(target, stages)
    finally:
        for handle in handles:
            handle.remove()
    maps = {}
    for stage, activation, gradient in zip(PVM_STAGES, stages, gradients):
        record, parallel = records[stage], pvm_layer(model, stage).parallel
        maps[stage] = {"delta": _chunk_maps(record["delta"], parallel, record["shape"]),
                       "gate": _chunk_maps(record["gate"], parallel, record["shape"]),
                       "gradcam": seg_grad_cam(activation, gradient).detach()}          # (B, h, w)
    return {"probability": probability.detach(), "lesion": probability.detach() >= 0.5, "stages": maps}


def on_image_grid(stage_map: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A (..., h, w) stage map bilinearly resized to the image's (H, W), for display beside the image."""
    lead = stage_map.shape[:-2]
    flat = stage_map.reshape(-1, 1, *stage_map.shape[-2:]).float()
    return F.interpolate(flat, size=size, mode="bilinear", align_corners=False).reshape(*lead, *size)
