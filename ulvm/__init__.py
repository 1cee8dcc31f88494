"""ulvm: UltraLight VM-UNet (Wu et al., arXiv 2403.20035) in pure PyTorch, with its reproduction book.

The public API, loaded on first use (so `import ulvm` and `ulvm --help` do not load torch):

    ulvm.UltraLightVMUNet, ulvm.PVMLayer, ulvm.SC_Att_Bridge     the network and its two new layers
    ulvm.Mamba, ulvm.selective_scan                              the SSM pieces
    ulvm.load_pretrained("isic2017")                             the shipped trained model
    ulvm.predict(images, weights="isic2017")                     masks for your own images

See the README's "How the code is organised".
"""
from importlib import import_module

__version__ = "0.1.0"

_API = {
    "UltraLightVMUNet": "ulvm.model", "PVMLayer": "ulvm.model", "SC_Att_Bridge": "ulvm.model",
    "Mamba": "ulvm.ssm", "selective_scan": "ulvm.ssm",
    "load_pretrained": "ulvm.deploy.pretrained", "predict": "ulvm.deploy.prediction",
}
__all__ = [*_API, "__version__"]


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'ulvm' has no attribute {name!r}")
