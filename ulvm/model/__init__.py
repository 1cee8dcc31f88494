"""The networks: the PVM layer, the attention bridge, UltraLight VM-UNet, and `build_model` (a config ->
a network, UltraLight VM-UNet or a baseline of the comparison)."""
from .bridge import SC_Att_Bridge
from .factory import build_model
from .pvm import PVMLayer
from .ultralight import PAPER_CHANNELS, UltraLightVMUNet, official_init_

__all__ = ["PAPER_CHANNELS", "PVMLayer", "SC_Att_Bridge", "UltraLightVMUNet", "build_model", "official_init_"]
