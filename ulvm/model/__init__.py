"""The networks: the PVM layer, the attention bridge, UltraLight VM-UNet and a plain UNet for comparison."""
from .bridge import SC_Att_Bridge
from .pvm import PVMLayer
from .ultralight import PAPER_CHANNELS, UltraLightVMUNet, official_init_

__all__ = ["PAPER_CHANNELS", "PVMLayer", "SC_Att_Bridge", "UltraLightVMUNet", "official_init_"]
