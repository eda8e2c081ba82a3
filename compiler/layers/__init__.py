"""Every layer type netc knows, one module per family; importing this registers them all."""
from . import activation, conv, data, detection, fc, merge, norm, pool, reshape  # noqa: F401
from .base import REGISTRY, Enum, Field, Layer, Ops, Param, lookup, numel

__all__ = ["REGISTRY", "Enum", "Field", "Layer", "Ops", "Param", "lookup", "numel"]
