"""ulvm: UltraLight VM-UNet (Wu et al., arXiv 2403.20035) in pure PyTorch, with its reproduction book.

The public API the notebooks use is re-exported here; see the README's "How the code is organised".
"""
from .model import PVMLayer, SC_Att_Bridge, UltraLightVMUNet
from .ssm import Mamba, selective_scan

__version__ = "0.1.0"

__all__ = ["Mamba", "PVMLayer", "SC_Att_Bridge", "UltraLightVMUNet", "__version__", "selective_scan"]
