"""Layers that join or split tensors: Eltwise, Concat, Slice, Split, ShuffleChannel."""
from __future__ import annotations

from ..errors import NetcError
from .base import Layer, Ops, Param, fmt_shape, numel, register


def _axis(axis: int, rank: int, layer: str, loc) -> int:
    if not -rank <= axis < rank:
        raise NetcError(f"{layer}: axis {axis} out of range for a {rank}-D input", loc)
    return axis % rank


@register
class Eltwise(Layer):
    type = "Eltwise"
    aliases = ("ELTWISE", "Add")
    messages = ("eltwise_param",)
    params = (Param("operation", "enum", "SUM", choices=("PROD", "SUM", "MAX")),
              Param("coeff", "float", repeated=True, min=None),
              Param("stable_prod_grad", "bool", True))
    family = "merge"
    short = "add"
    min_inputs, max_inputs = 2, None

    def shapes(self, ins, a, loc):
        for s in ins[1:]:
            if s != ins[0]:
                raise NetcError(f"Eltwise inputs must have the same shape: {fmt_shape(ins[0])} vs {fmt_shape(s)}", loc)
        if a["coeff"] and (a["operation"] != "SUM" or len(a["coeff"]) != len(ins)):
            raise NetcError("Eltwise coeff needs operation SUM and one value per input", loc)
        return [ins[0]]

    def ops(self, ins, outs, a):
        n, k = numel(outs[0]), len(ins)
        if a["operation"] == "SUM":
            scaled = sum(1 for c in a["coeff"] if c != 1)
            return Ops(add=n * (k - 1), mul=n * scaled)
        if a["operation"] == "PROD":
            return Ops(mul=n * (k - 1))
        return Ops(comp=n * (k - 1))


@register
class Concat(Layer):
    type = "Concat"
    aliases = ("CONCAT",)
    messages = ("concat_param",)
    params = (Param("axis", default=1, min=None), Param("concat_dim"))
    family = "merge"
    short = "concat"
    min_inputs, max_inputs = 1, None

    def normalize(self, a, loc):
        return {"axis": a["concat_dim"] if a["concat_dim"] is not None else a["axis"]}

    def shapes(self, ins, a, loc):
        ax = _axis(a["axis"], len(ins[0]), "Concat", loc)
        for s in ins[1:]:
            if len(s) != len(ins[0]) or any(x != y for i, (x, y) in enumerate(zip(s, ins[0])) if i != ax):
                raise NetcError(f"Concat inputs must match except on axis {ax}: "
                                f"{fmt_shape(ins[0])} vs {fmt_shape(s)}", loc)
        out = list(ins[0])
        out[ax] = sum(s[ax] for s in ins)
        return [tuple(out)]


@register
class Slice(Layer):
    type = "Slice"
    aliases = ("SLICE",)
    messages = ("slice_param",)
    params = (Param("axis", default=1, min=None), Param("slice_dim"), Param("slice_point", repeated=True))
    family = "merge"
    short = "slice"
    outputs = None

    def normalize(self, a, loc):
        return {"axis": a["slice_dim"] if a["slice_dim"] is not None else a["axis"],
                "slice_point": a["slice_point"]}

    def multi_shapes(self, ins, a, loc, ntops):
        ax = _axis(a["axis"], len(ins[0]), "Slice", loc)
        size = ins[0][ax]
        points = list(a["slice_point"])
        if points:
            if len(points) != ntops - 1:
                raise NetcError(f"Slice has {len(points)} slice_point(s) but {ntops} tops (need tops - 1)", loc)
            if points != sorted(points) or points[0] <= 0 or points[-1] >= size:
                raise NetcError(f"Slice points {points} must increase strictly inside (0, {size})", loc)
        else:
            if size % ntops:
                raise NetcError(f"Slice: axis size {size} does not split evenly into {ntops} tops", loc)
            points = [size // ntops * i for i in range(1, ntops)]
        bounds = [0, *points, size]
        return [tuple(ins[0][:ax]) + (hi - lo,) + tuple(ins[0][ax + 1:]) for lo, hi in zip(bounds, bounds[1:])]


@register
class Split(Layer):
    type = "Split"
    aliases = ("SPLIT",)
    family = "merge"
    short = "split"
    outputs = None

    def multi_shapes(self, ins, a, loc, ntops):
        return [ins[0]] * ntops


@register
class ShuffleChannel(Layer):
    type = "ShuffleChannel"
    messages = ("shuffle_channel_param",)
    params = (Param("group", default=1, positive=True),)
    family = "merge"
    short = "shuffle"

    def shapes(self, ins, a, loc):
        if len(ins[0]) < 2 or ins[0][1] % a["group"]:
            raise NetcError(f"ShuffleChannel: channels of {fmt_shape(ins[0])} not divisible by group {a['group']}", loc)
        return [ins[0]]
