"""InnerProduct: a matmul over the input flattened from `axis` on (C,H,W order)."""
from __future__ import annotations

from ..errors import NetcError
from .base import Layer, Ops, Param, numel, register


@register
class InnerProduct(Layer):
    type = "InnerProduct"
    aliases = ("INNER_PRODUCT", "Linear", "FullyConnected")
    messages = ("inner_product_param",)
    params = (
        Param("num_output", positive=True),
        Param("bias_term", "bool", True),
        Param("axis", default=1, min=None),
        Param("transpose", "bool", False),
    )
    family = "fc"
    short = "fc"

    def normalize(self, a, loc):
        if a["num_output"] is None:
            raise NetcError('InnerProduct needs "num_output"', loc)
        return a

    def _axis(self, shape, a, loc=None):
        ax = a["axis"] % len(shape) if len(shape) else 0
        return ax

    def shapes(self, ins, a, loc):
        if len(ins[0]) < 1:
            raise NetcError("InnerProduct needs an input with at least one axis", loc)
        ax = self._axis(ins[0], a)
        return [tuple(ins[0][:ax]) + (a["num_output"],)]

    def fan_in(self, shape, a):
        return numel(shape[self._axis(shape, a):])

    def param_shapes(self, ins, a):
        k = self.fan_in(ins[0], a)
        w = (k, a["num_output"]) if a["transpose"] else (a["num_output"], k)
        return {"weight": w, **({"bias": (a["num_output"],)} if a["bias_term"] else {})}

    def ops(self, ins, outs, a):
        return Ops(macc=numel(outs[0]) * self.fan_in(ins[0], a),
                   add=numel(outs[0]) if a["bias_term"] else 0)

    def window(self, ins, a):
        if len(ins[0]) == 4:
            return ((ins[0][2], 1, 0), (ins[0][3], 1, 0))
        return None
