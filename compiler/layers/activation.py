"""Pointwise layers: same shape out as in, may run in place, a few ops per element."""
from __future__ import annotations

from .base import Layer, Ops, Param, numel, register


class _Pointwise(Layer):
    family = "activation"
    elementwise = True
    per_element = Ops()  # counts for one element

    def ops(self, ins, outs, a):
        n = numel(outs[0])
        e = self.element_ops(a)
        return Ops(comp=e.comp * n, add=e.add * n, mul=e.mul * n, div=e.div * n, exp=e.exp * n)

    def element_ops(self, a) -> Ops:
        return self.per_element


@register
class ReLU(_Pointwise):
    type = "ReLU"
    aliases = ("RELU",)
    messages = ("relu_param",)
    params = (Param("negative_slope", "float", 0.0, min=None),)
    short = "relu"

    def element_ops(self, a):
        return Ops(comp=1, mul=1 if a["negative_slope"] else 0)


@register
class PReLU(_Pointwise):
    type = "PReLU"
    messages = ("prelu_param",)
    params = (Param("channel_shared", "bool", False),)
    short = "prelu"
    per_element = Ops(comp=1, mul=1)

    def param_shapes(self, ins, a):
        return {"weight": (1,) if a["channel_shared"] else (ins[0][1],)}


@register
class ELU(_Pointwise):
    type = "ELU"
    messages = ("elu_param",)
    params = (Param("alpha", "float", 1.0, min=None),)
    short = "elu"
    per_element = Ops(comp=1, exp=1, add=1, mul=1)


@register
class Sigmoid(_Pointwise):
    type = "Sigmoid"
    aliases = ("SIGMOID",)
    messages = ("sigmoid_param",)
    short = "sigmoid"
    per_element = Ops(exp=1, add=1, div=1)


@register
class TanH(_Pointwise):
    type = "TanH"
    aliases = ("TANH", "Tanh")
    messages = ("tanh_param",)
    short = "tanh"
    per_element = Ops(exp=2, add=2, div=1)


@register
class AbsVal(_Pointwise):
    type = "AbsVal"
    aliases = ("ABSVAL",)
    short = "abs"
    per_element = Ops(comp=1)


@register
class BNLL(_Pointwise):
    type = "BNLL"
    short = "bnll"
    per_element = Ops(exp=2, add=1)


@register
class Clip(_Pointwise):
    """Caffe 1.0's Clip; ReLU6 is Clip(min=0, max=6)."""
    type = "Clip"
    aliases = ("ReLU6",)
    messages = ("clip_param",)
    params = (Param("min", "float", 0.0, min=None), Param("max", "float", 6.0, min=None))
    short = "clip"
    per_element = Ops(comp=2)


@register
class Power(_Pointwise):
    """(shift + scale * x) ^ power."""
    type = "Power"
    aliases = ("POWER",)
    messages = ("power_param",)
    params = (Param("power", "float", 1.0, min=None), Param("scale", "float", 1.0, min=None),
              Param("shift", "float", 0.0, min=None))
    short = "power"

    def element_ops(self, a):
        return Ops(mul=1 if a["scale"] != 1 else 0, add=1 if a["shift"] else 0,
                   exp=1 if a["power"] != 1 else 0)


@register
class Dropout(_Pointwise):
    """Identity at inference (Caffe scales during training)."""
    type = "Dropout"
    aliases = ("DROPOUT",)
    messages = ("dropout_param",)
    params = (Param("dropout_ratio", "float", 0.5), Param("scale_train", "bool", True))
    short = "drop"
    family = "activation"
