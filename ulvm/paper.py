"""The paper's own numbers, quoted and never computed: everything the book prints as "paper".

Sources: Wu, Liu, Liang, Chang, "UltraLight VM-UNet: Parallel Vision Mamba Significantly Reduces
Parameters for Skin Lesion Segmentation" (arXiv:2403.20035 and its journal version), and the README of
its official repository (github.com/wurenkai/UltraLight-VM-UNet). Each is a single training run; the
paper reports no seeds, spreads or confidence intervals. Pooled-pixel metrics (one confusion matrix
over all test pixels), as `ulvm.metrics` computes them.
"""
from __future__ import annotations

CITATION = ("R. Wu, Y. Liu, P. Liang, Q. Chang. UltraLight VM-UNet: Parallel Vision Mamba Significantly "
            "Reduces Parameters for Skin Lesion Segmentation. arXiv:2403.20035, 2024.")

# PVM-layer settings (the README table "Different Parallel Vision Mamba settings", the paper's PVM
# ablation on ISIC2017): parameters in millions and GFLOPs as printed (the same 0.060 for every setting),
# and the ISIC2017 test DSC of each single run.
PAPER_PVM_SETTINGS = {
    1: {"params (M)": 0.136, "GFLOPs": 0.060, "DSC ISIC2017": 0.9069},
    2: {"params (M)": 0.070, "GFLOPs": 0.060, "DSC ISIC2017": 0.9073},
    4: {"params (M)": 0.049, "GFLOPs": 0.060, "DSC ISIC2017": 0.9091},
}

# UltraLight VM-UNet as published: 0.049M parameters, 0.060 GFLOPs (thop), a 229.1 KB weight file.
PAPER_COMPLEXITY = {"params (M)": 0.049, "GFLOPs": 0.060, "weight file (KB)": 229.1}

# The UltraLight VM-UNet rows of Table 1 (one run each). ISIC2017 and ISIC2018: trained and tested on
# the paper's split of each (1250/150/600 and 1815/259/520 images); PH2: the ISIC2017 model tested on
# all 200 PH2 images (external validation, no PH2 training).
PAPER_RESULTS = {
    "ISIC2017": {"dsc": 0.9091, "iou": 0.8334, "acc": 0.9646, "se": 0.9053, "sp": 0.9790},
    "ISIC2018": {"dsc": 0.8940, "iou": 0.8056, "acc": 0.9558, "se": 0.8680, "sp": 0.9781},
    "PH2": {"dsc": 0.9265, "iou": 0.8631, "acc": 0.9521, "se": 0.9345, "sp": 0.9606},
}


def pvm_dsc_range() -> float:
    """The largest DSC difference between the paper's ×1, ×2 and ×4 on ISIC2017 (one run each)."""
    values = [row["DSC ISIC2017"] for row in PAPER_PVM_SETTINGS.values()]
    return max(values) - min(values)
