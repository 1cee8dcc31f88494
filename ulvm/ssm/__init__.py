"""State space models: the selective scan (one interface, swappable backends), the Mamba block, and the
small pieces of SSM theory the book's first chapters compute with."""
from . import theory
from .backends import BACKENDS, REGISTRY, ScanBackend, resolve
from .mamba import Mamba
from .pytorch_scan import associative_scan
from .scan import selective_scan

__all__ = ["BACKENDS", "REGISTRY", "Mamba", "ScanBackend", "associative_scan", "resolve", "selective_scan", "theory"]
