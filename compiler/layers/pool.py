"""Pooling with Caffe's rounding: ceil by default, and the clip rule that drops a last window
starting inside the padding. LRN lives here too: both slide a window, neither has weights."""
from __future__ import annotations

from ..errors import NetcError
from .base import Layer, Ops, Param, fmt_shape, numel, register, require_4d, write_pair

POOL_METHODS = ("MAX", "AVE", "STOCHASTIC")


def pooled_size(size: int, k: int, s: int, p: int, ceil: bool) -> int:
    """Caffe PoolingLayer::Reshape, in exact integer arithmetic."""
    span = size + 2 * p - k
    out = (-(-span // s) if ceil else span // s) + 1
    if p and (out - 1) * s >= size + p:
        out -= 1  # the last window would start in the padding: Caffe clips it
    return out


@register
class Pooling(Layer):
    type = "Pooling"
    aliases = ("POOLING", "Pool")
    messages = ("pooling_param",)
    params = (
        Param("pool", "enum", "MAX", choices=POOL_METHODS),
        Param("kernel_size", positive=True), Param("kernel_h", positive=True), Param("kernel_w", positive=True),
        Param("stride", default=1, positive=True), Param("stride_h", positive=True), Param("stride_w", positive=True),
        Param("pad", default=0), Param("pad_h"), Param("pad_w"),
        Param("global_pooling", "bool", False),
        Param("round_mode", "enum", "CEIL", choices=("CEIL", "FLOOR")),
    )
    family = "pool"
    short = "pool"

    def normalize(self, a, loc):
        def pair(name, h, w):
            if a[h] is not None or a[w] is not None:
                if a[h] is None or a[w] is None:
                    raise NetcError(f'"{h}" and "{w}" must be given together', loc)
                return (a[h], a[w])
            return None if a[name] is None else (a[name], a[name])

        kernel = pair("kernel_size", "kernel_h", "kernel_w")
        if a["global_pooling"]:
            if kernel is not None:
                raise NetcError("global_pooling takes its kernel from the input: drop kernel_size", loc)
        elif kernel is None:
            raise NetcError('Pooling needs "kernel_size" (or global_pooling: true)', loc)
        stride, pad = pair("stride", "stride_h", "stride_w"), pair("pad", "pad_h", "pad_w")
        if kernel is not None:
            for p, k in zip(pad, kernel):
                if p >= k:
                    raise NetcError(f"Pooling pad {p} must be smaller than the kernel {k}", loc)
        return {"pool": a["pool"], "kernel": kernel, "stride": stride, "pad": pad,
                "global_pooling": a["global_pooling"], "round_mode": a["round_mode"]}

    def written_params(self, a):
        out = [("pool", a["pool"])]
        if a["global_pooling"]:
            out.append(("global_pooling", True))
        else:
            k = a["kernel"]
            out += [("kernel_size", k[0])] if k[0] == k[1] else [("kernel_h", k[0]), ("kernel_w", k[1])]
        out += write_pair("stride", "stride_h", "stride_w", a["stride"], 1)
        out += write_pair("pad", "pad_h", "pad_w", a["pad"], 0)
        if a["round_mode"] != "CEIL":
            out.append(("round_mode", a["round_mode"]))
        return out

    def geometry(self, shape, a):
        """(kernel, stride, pad) actually used for this input."""
        if a["global_pooling"]:
            return (shape[2], shape[3]), (1, 1), (0, 0)
        return a["kernel"], a["stride"], a["pad"]

    def shapes(self, ins, a, loc):
        require_4d(self, ins[0], loc)
        n, c, h, w = ins[0]
        kernel, stride, pad = self.geometry(ins[0], a)
        out = []
        for size, k, s, p in zip((h, w), kernel, stride, pad):
            if size + 2 * p < k:
                raise NetcError(f"Pooling kernel {k} is larger than its input {fmt_shape(ins[0])}", loc)
            out.append(pooled_size(size, k, s, p, a["round_mode"] == "CEIL"))
        return [(n, c, out[0], out[1])]

    def ops(self, ins, outs, a):
        kernel, _, _ = self.geometry(ins[0], a)
        window = numel(outs[0]) * kernel[0] * kernel[1]
        if a["pool"] == "MAX":
            return Ops(comp=window)
        return Ops(add=window, div=numel(outs[0]))

    def window(self, ins, a):
        kernel, stride, pad = self.geometry(ins[0], a)
        return tuple(zip(kernel, stride, pad))


@register
class LRN(Layer):
    type = "LRN"
    messages = ("lrn_param",)
    params = (
        Param("local_size", default=5, positive=True),
        Param("alpha", "float", 1.0), Param("beta", "float", 0.75), Param("k", "float", 1.0),
        Param("norm_region", "enum", "ACROSS_CHANNELS", choices=("ACROSS_CHANNELS", "WITHIN_CHANNEL")),
    )
    family = "norm"
    short = "norm"

    def normalize(self, a, loc):
        if a["local_size"] % 2 == 0:
            raise NetcError(f"LRN local_size must be odd, got {a['local_size']}", loc)
        return a

    def shapes(self, ins, a, loc):
        require_4d(self, ins[0], loc)
        return [ins[0]]

    def ops(self, ins, outs, a):
        n = numel(outs[0])
        size = a["local_size"] if a["norm_region"] == "ACROSS_CHANNELS" else a["local_size"] ** 2
        # square and sum the window, scale+offset, power, divide
        return Ops(mul=n * size + n, add=n * size + n, exp=n, div=n)

    def window(self, ins, a):
        if a["norm_region"] == "WITHIN_CHANNEL":
            s = a["local_size"]
            return ((s, 1, s // 2), (s, 1, s // 2))
        return None
