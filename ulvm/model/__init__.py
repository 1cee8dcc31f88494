"""UltraLight VM-UNet and its two new layers: the PVM layer and the attention bridge (a config becomes a
network in `ulvm.registry.build_model`)."""
from .bridge import SC_Att_Bridge
from .pvm import PVMLayer
from .ultralight import PAPER_CHANNELS, UltraLightVMUNet, official_init_, scale_channels

__all__ = ["PAPER_CHANNELS", "PVMLayer", "SC_Att_Bridge", "UltraLightVMUNet", "official_init_", "scale_channels"]
