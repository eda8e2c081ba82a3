"""netc: read a network (Caffe .prototxt, native .net or ONNX), analyze it, draw it, run it."""
from .compiler.network import Network, load


def __getattr__(name):
    """`netc.Predictor` without importing the runtime for a plain `import netc`."""
    if name == "Predictor":
        from .runtime.predict import Predictor
        return Predictor
    raise AttributeError(f"module 'netc' has no attribute {name!r}")


__all__ = ["Network", "load", "Predictor"]
__version__ = "0.1.0"
