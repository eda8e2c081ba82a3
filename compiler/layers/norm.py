"""BatchNorm, Scale, Bias and SSD's Normalize: per-channel affine work."""
from __future__ import annotations

from ..errors import NetcError
from .base import Layer, Ops, Param, numel, register


@register
class BatchNorm(Layer):
    """Caffe's BatchNorm has no affine part (a Scale layer follows); its three blobs are stored
    statistics: mean, variance and the moving-average factor, counted as buffers (2C + 1)."""
    type = "BatchNorm"
    aliases = ("BN",)
    messages = ("batch_norm_param",)
    params = (
        Param("use_global_stats", "bool", None),
        Param("moving_average_fraction", "float", 0.999),
        Param("eps", "float", 1e-5, positive=True),
        Param("affine", "bool", False, doc="netc extension: a learnable scale and bias (C each)"),
    )
    family = "norm"
    short = "bn"
    elementwise = True

    def shapes(self, ins, a, loc):
        if len(ins[0]) < 2:
            raise NetcError("BatchNorm needs a channel axis", loc)
        return [ins[0]]

    def param_shapes(self, ins, a):
        c = ins[0][1]
        return {"weight": (c,), "bias": (c,)} if a["affine"] else {}

    def buffer_shapes(self, ins, a):
        c = ins[0][1]
        return {"mean": (c,), "var": (c,), "moving_average_factor": (1,)}

    def ops(self, ins, outs, a):
        n = numel(outs[0])
        return Ops(add=n * (2 if a["affine"] else 1), div=n, mul=n if a["affine"] else 0)


class _ChannelAffine(Layer):
    family = "norm"
    elementwise = True
    max_inputs = 2

    def normalize(self, a, loc):
        if a["axis"] != 1 or a["num_axes"] != 1:
            raise NetcError(f"{self.type}: only axis 1, num_axes 1 (per channel) is supported", loc)
        return a

    def shapes(self, ins, a, loc):
        if len(ins[0]) < 2:
            raise NetcError(f"{self.type} needs a channel axis", loc)
        if len(ins) == 2 and ins[1] != (ins[0][1],) and ins[1] != ins[0][:2]:
            raise NetcError(f"{self.type}: second input must hold one value per channel "
                            f"({ins[0][1]}), got {list(ins[1])}", loc)
        return [ins[0]]


@register
class Scale(_ChannelAffine):
    type = "Scale"
    messages = ("scale_param",)
    params = (Param("axis", default=1, min=None), Param("num_axes", default=1, min=None),
              Param("bias_term", "bool", False))
    short = "scale"

    def param_shapes(self, ins, a):
        c = ins[0][1]
        shapes = {} if len(ins) == 2 else {"weight": (c,)}
        if a["bias_term"]:
            shapes["bias"] = (c,)
        return shapes

    def ops(self, ins, outs, a):
        n = numel(outs[0])
        return Ops(mul=n, add=n if a["bias_term"] else 0)


@register
class Bias(_ChannelAffine):
    type = "Bias"
    messages = ("bias_param",)
    params = (Param("axis", default=1, min=None), Param("num_axes", default=1, min=None))
    short = "bias"

    def param_shapes(self, ins, a):
        return {} if len(ins) == 2 else {"bias": (ins[0][1],)}

    def ops(self, ins, outs, a):
        return Ops(add=numel(outs[0]))


@register
class Normalize(Layer):
    """SSD's L2 normalization across channels with a learned per-channel scale."""
    type = "Normalize"
    messages = ("norm_param",)
    params = (Param("across_spatial", "bool", True), Param("channel_shared", "bool", True),
              Param("eps", "float", 1e-10, positive=True))
    ignored = ("scale_filler",)
    family = "norm"
    short = "l2norm"

    def param_shapes(self, ins, a):
        return {"weight": (1,) if a["channel_shared"] else (ins[0][1],)}

    def ops(self, ins, outs, a):
        n = numel(outs[0])
        positions = n // ins[0][1] if len(ins[0]) > 1 else 1
        return Ops(mul=2 * n, add=n, div=n, exp=positions)
