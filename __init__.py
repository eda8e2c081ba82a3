"""netc: read a network (Caffe .prototxt or native .net), analyze it, draw it, run it."""
from .compiler.network import Network, load

__all__ = ["Network", "load"]
__version__ = "0.1.0"
