"""torchvision's model definitions as test oracles, exported to ONNX by torch.

The torchvision wheel is a CUDA build: its C ops cannot load beside the CPU torch, and its
import fails while registering fake kernels for them (torchvision::nms ...). The models are
pure Python, so those registrations are let fail quietly during the import.
"""
from __future__ import annotations

import warnings


def models():
    import torch
    register_fake = torch.library.register_fake

    def tolerant(*args, **kwargs):
        decorate = register_fake(*args, **kwargs)

        def apply(fn):
            try:
                return decorate(fn)
            except RuntimeError:        # "operator torchvision::nms does not exist"
                return fn
        return apply
    torch.library.register_fake = tolerant
    try:
        import torchvision.models
    finally:
        torch.library.register_fake = register_fake
    return torchvision.models


def build(name: str):
    """The model in eval mode with seeded random weights (googlenet without its training-only
    auxiliary heads, as torchvision's published count has it)."""
    import torch
    m = models()
    torch.manual_seed(0)
    kwargs = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    return getattr(m, name)(weights=None, **kwargs).eval()


def published(name: str) -> dict:
    """torchvision's own table for the default weights: num_params, _ops (GFLOPS, which are
    GMACs, at 224x224)."""
    return models().get_model_weights(name).DEFAULT.meta


def export(model, path, size=64, dynamic=True, opset=17):
    """torch.onnx's TorchScript exporter with BatchNorm kept (TrainingMode.PRESERVE on an eval
    model), input "image" and output "logits"; batch, height and width symbolic if `dynamic`."""
    import torch
    x = torch.randn(1, 3, size, size)
    axes = {"image": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False, training=torch.onnx.TrainingMode.PRESERVE,
                          opset_version=opset, input_names=["image"], output_names=["logits"], dynamic_axes=axes)
    return path
