"""Figures and tables shared by several notebooks of the book (presentation only, no new numbers).

Every figure a notebook shows is also written to `figures/generated/` by `save_figure`, so the batch run
(`ulvm reproduce`) leaves the book's figures as PNG files beside the executed notebooks. Recorded
results of real runs (e.g. `book/results/ph2_cv/*.json`, committed by whoever ran them on a GPU) are read
by `load_recorded_runs`, which the ablation and paper-tables chapters use.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt

from .io import atomic_write_bytes

STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "font.size": 10,
}


def use_book_style() -> None:
    """One look for every figure of the book."""
    plt.rcParams.update(STYLE)


def save_figure(fig, name: str, folder: str | os.PathLike) -> Path:
    """Write `fig` as `folder/name.png` (atomically) and return the path; the notebook still shows it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return atomic_write_bytes(Path(folder) / f"{name}.png", buffer.getvalue())
