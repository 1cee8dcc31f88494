"""State space models: the selective scan (one interface, swappable backends), the Mamba block, and the
small pieces of SSM theory the book's first chapters compute with."""
from . import theory
from .mamba import Mamba
from .scan import BACKENDS, associative_scan, resolve_backend, selective_scan

__all__ = ["BACKENDS", "Mamba", "associative_scan", "resolve_backend", "selective_scan", "theory"]
