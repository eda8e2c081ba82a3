"""Every layer type netc knows, one module per family; importing this package registers them
all (every module in it is imported, so a new layer module needs no entry here)."""
import importlib as _importlib
import pkgutil as _pkgutil

from .base import REGISTRY, Enum, Field, Layer, Ops, Param, lookup, numel

for _m in sorted(m.name for m in _pkgutil.iter_modules(__path__)):
    if _m != "base":
        _importlib.import_module(f"{__name__}.{_m}")

__all__ = ["REGISTRY", "Enum", "Field", "Layer", "Ops", "Param", "lookup", "numel"]
