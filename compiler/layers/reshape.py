"""Layers that only move or relabel data: Flatten, Reshape, Permute, Crop, Softmax."""
from __future__ import annotations

from ..errors import NetcError, SoftShapeError
from .base import Layer, Ops, Param, fmt_shape, numel, register
from .merge import _axis


@register
class Flatten(Layer):
    type = "Flatten"
    aliases = ("FLATTEN",)
    messages = ("flatten_param",)
    params = (Param("axis", default=1, min=None), Param("end_axis", default=-1, min=None))
    family = "shape"
    short = "flatten"

    def shapes(self, ins, a, loc):
        s = ins[0]
        lo = _axis(a["axis"], len(s), "Flatten", loc)
        hi = _axis(a["end_axis"], len(s), "Flatten", loc)
        if hi < lo:
            raise NetcError("Flatten end_axis comes before axis", loc)
        return [tuple(s[:lo]) + (numel(s[lo:hi + 1]),) + tuple(s[hi + 1:])]

    def is_view(self, a):
        return True


@register
class Reshape(Layer):
    type = "Reshape"
    messages = ("reshape_param",)
    params = (Param("shape", "shape"), Param("axis", default=0, min=None), Param("num_axes", default=-1, min=-1))
    family = "shape"
    short = "reshape"

    def normalize(self, a, loc):
        if a["shape"] is None:
            raise NetcError('Reshape needs "shape"', loc)
        if sum(1 for d in a["shape"] if d == -1) > 1 or any(d < -1 for d in a["shape"]):
            raise NetcError("Reshape shape may hold at most one -1 and no other negative size", loc)
        return a

    def shapes(self, ins, a, loc):
        s = ins[0]
        start = a["axis"] if a["axis"] >= 0 else len(s) + 1 + a["axis"]
        end = len(s) if a["num_axes"] == -1 else start + a["num_axes"]
        if not 0 <= start <= end <= len(s):
            raise NetcError(f"Reshape axis/num_axes out of range for {fmt_shape(s)}", loc)
        new = []
        for i, d in enumerate(a["shape"]):
            if d == 0:
                if start + i >= len(s):
                    raise NetcError(f"Reshape dim 0 at {i} copies a dimension {fmt_shape(s)} does not have", loc)
                d = s[start + i]
            new.append(d)
        mid = numel(s[start:end])
        if -1 in new:
            known = numel(d for d in new if d != -1)
            if known == 0 or mid % known:
                raise NetcError(f"Reshape cannot infer -1: {mid} values into {list(a['shape'])}", loc)
            new[new.index(-1)] = mid // known
        if numel(new) != mid:
            raise NetcError(f"Reshape {list(a['shape'])} does not fit {fmt_shape(s)} ({numel(s)} values)", loc)
        return [tuple(s[:start]) + tuple(new) + tuple(s[end:])]

    def is_view(self, a):
        return True


@register
class Permute(Layer):
    type = "Permute"
    messages = ("permute_param",)
    params = (Param("order", repeated=True),)
    family = "shape"
    short = "permute"

    def shapes(self, ins, a, loc):
        s = ins[0]
        order = list(a["order"])
        if len(set(order)) != len(order) or any(o >= len(s) for o in order):
            raise NetcError(f"Permute order {order} is not a permutation of the axes of {fmt_shape(s)}", loc)
        order += [i for i in range(len(s)) if i not in order]
        return [tuple(s[i] for i in order)]


@register
class Crop(Layer):
    type = "Crop"
    aliases = ("CROP",)
    messages = ("crop_param",)
    params = (Param("axis", default=2, min=None), Param("offset", repeated=True))
    family = "shape"
    short = "crop"
    min_inputs = max_inputs = 2

    def shapes(self, ins, a, loc):
        big, ref = ins
        if len(big) != len(ref):
            raise NetcError(f"Crop inputs differ in rank: {fmt_shape(big)} vs {fmt_shape(ref)}", loc)
        ax = _axis(a["axis"], len(big), "Crop", loc)
        offs = list(a["offset"])
        if len(offs) not in (0, 1, len(big) - ax):
            raise NetcError(f"Crop takes 0, 1 or {len(big) - ax} offsets, got {len(offs)}", loc)
        out = tuple(big[:ax]) + tuple(ref[ax:])
        for i in range(ax, len(big)):
            off = offs[0] if len(offs) == 1 else offs[i - ax] if offs else 0
            if ref[i] + off > big[i]:
                raise SoftShapeError(f"Crop: {fmt_shape(ref)} at offset {off} does not fit in "
                                     f"{fmt_shape(big)}", loc, [out])
        return [out]


@register
class Softmax(Layer):
    type = "Softmax"
    aliases = ("SOFTMAX",)
    messages = ("softmax_param",)
    params = (Param("axis", default=1, min=None),)
    family = "activation"
    short = "prob"

    def shapes(self, ins, a, loc):
        _axis(a["axis"], len(ins[0]), "Softmax", loc)
        return [ins[0]]

    def ops(self, ins, outs, a):
        n = numel(outs[0])
        return Ops(comp=n, add=2 * n, exp=n, div=n)  # max, subtract, exp, sum, divide
