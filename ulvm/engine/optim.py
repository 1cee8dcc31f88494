"""The paper's optimiser and learning-rate schedule: AdamW and CosineAnnealingLR stepped once per epoch.

Values from `ulvm.config.Config` (UltraLight VM-UNet §4.1). `lr_schedule` lists the rate of every epoch
for the training chapter's plot.
"""
from __future__ import annotations

import torch

from ..config import Config
from .graphs import set_capturable


def build_optimizer(model: torch.nn.Module, config: Config, capturable: bool = False):
    """AdamW and CosineAnnealingLR exactly as the paper's config (scheduler stepped once per epoch).

    `capturable`: for a step recorded in a CUDA graph (`ulvm.engine.graphs`): AdamW keeps its step count on the
    GPU, the learning rate is a GPU tensor, which the scheduler updates in place, and the update is
    PyTorch's fused kernel (`ulvm.engine.graphs.set_capturable`).
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=config.betas, eps=config.eps,
                                  weight_decay=config.weight_decay)
    optimizer.param_groups[0]["initial_lr"] = config.lr      # the scheduler's base rate: a float either way
    set_capturable(optimizer, capturable)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.t_max, eta_min=config.eta_min)
    return optimizer, scheduler


def lr_schedule(config: Config) -> list[float]:
    """The learning rate of each epoch (1..epochs), read off a real AdamW + CosineAnnealingLR."""
    optimizer, scheduler = build_optimizer(torch.nn.Linear(1, 1), config)
    rates = []
    for _ in range(config.epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()          # (no gradients: a no-op, but keeps the scheduler's call order honest)
        scheduler.step()
    return rates
