"""Convolution, its depthwise spelling and Deconvolution (Caffe semantics, 2-D)."""
from __future__ import annotations

from ..errors import NetcError
from .base import (Layer, Ops, Param, fmt_shape, numel, register, require_4d, spatial_pair,
                   write_pair)

CONV_PARAMS = (
    Param("num_output", positive=True),
    Param("bias_term", "bool", True),
    Param("kernel_size", repeated=True, positive=True),
    Param("kernel_h", positive=True), Param("kernel_w", positive=True),
    Param("stride", repeated=True, positive=True),
    Param("stride_h", positive=True), Param("stride_w", positive=True),
    Param("pad", repeated=True), Param("pad_h"), Param("pad_w"),
    Param("dilation", repeated=True, positive=True),
    Param("group", default=1, positive=True),
    Param("axis", default=1, min=None),
    Param("force_nd_im2col", "bool", False),
)


class _ConvBase(Layer):
    messages = ("convolution_param",)
    params = CONV_PARAMS
    family = "conv"

    def normalize(self, a, loc):
        if a["num_output"] is None:
            raise NetcError(f'{self.type} needs "num_output"', loc)
        if a["axis"] != 1:
            raise NetcError(f"{self.type}: only axis 1 (channels) is supported", loc)
        return {
            "num_output": a["num_output"],
            "kernel": spatial_pair(a, "kernel_size", loc, None, h="kernel_h", w="kernel_w"),
            "stride": spatial_pair(a, "stride", loc, 1, h="stride_h", w="stride_w"),
            "pad": spatial_pair(a, "pad", loc, 0, h="pad_h", w="pad_w"),
            "dilation": spatial_pair(a, "dilation", loc, 1, h="dilation_h", w="dilation_w"),
            "group": a["group"],
            "bias_term": a["bias_term"],
        }

    def written_params(self, a):
        out = [("num_output", a["num_output"])]
        if not a["bias_term"]:
            out.append(("bias_term", False))
        k = a["kernel"]
        out += [("kernel_size", k[0])] if k[0] == k[1] else [("kernel_h", k[0]), ("kernel_w", k[1])]
        out += write_pair("stride", "stride_h", "stride_w", a["stride"], 1)
        out += write_pair("pad", "pad_h", "pad_w", a["pad"], 0)
        d = a["dilation"]
        if d != (1, 1):
            out.append(("dilation", d[0] if d[0] == d[1] else list(d)))
        if a["group"] != 1:
            out.append(("group", a["group"]))
        return out

    def groups(self, cin, a):
        return a["group"]

    def check_groups(self, cin, a, loc):
        g = self.groups(cin, a)
        if cin % g:
            raise NetcError(f"{self.type}: input channels {cin} not divisible by group {g}", loc)
        if a["num_output"] % g:
            raise NetcError(f"{self.type}: num_output {a['num_output']} not divisible by group {g}", loc)
        return g

    def window(self, ins, a):
        k = [d * (kk - 1) + 1 for kk, d in zip(a["kernel"], a["dilation"])]
        return tuple(zip(k, a["stride"], a["pad"]))


@register
class Convolution(_ConvBase):
    type = "Convolution"
    aliases = ("CONVOLUTION", "Conv")
    short = "conv"

    def shapes(self, ins, a, loc):
        require_4d(self, ins[0], loc)
        n, c, h, w = ins[0]
        self.check_groups(c, a, loc)
        out = []
        for size, k, s, p, d in zip((h, w), a["kernel"], a["stride"], a["pad"], a["dilation"]):
            extent = d * (k - 1) + 1
            o = (size + 2 * p - extent) // s + 1
            if o < 1:
                raise NetcError(f"{self.type}: kernel extent {extent} (pad {p}) is larger than "
                                f"its input {fmt_shape(ins[0])}", loc)
            out.append(o)
        return [(n, a["num_output"], out[0], out[1])]

    def param_shapes(self, ins, a):
        cin = ins[0][1]
        shapes = {"weight": (a["num_output"], cin // self.groups(cin, a), *a["kernel"])}
        if a["bias_term"]:
            shapes["bias"] = (a["num_output"],)
        return shapes

    def ops(self, ins, outs, a):
        cin = ins[0][1]
        macc = numel(outs[0]) * (cin // self.groups(cin, a)) * a["kernel"][0] * a["kernel"][1]
        return Ops(macc=macc, add=numel(outs[0]) if a["bias_term"] else 0)


@register
class ConvolutionDepthwise(Convolution):
    """The depthwise layer of MobileNet/ShuffleNet Caffe forks: group is the input channel count."""
    type = "ConvolutionDepthwise"
    aliases = ("DepthwiseConvolution",)
    short = "dwconv"

    def groups(self, cin, a):
        return cin


@register
class Deconvolution(_ConvBase):
    type = "Deconvolution"
    aliases = ("DECONVOLUTION", "ConvTranspose")
    short = "deconv"

    def shapes(self, ins, a, loc):
        require_4d(self, ins[0], loc)
        n, c, h, w = ins[0]
        self.check_groups(c, a, loc)
        out = []
        for size, k, s, p, d in zip((h, w), a["kernel"], a["stride"], a["pad"], a["dilation"]):
            o = s * (size - 1) + d * (k - 1) + 1 - 2 * p
            if o < 1:
                raise NetcError(f"{self.type}: pad {p} leaves no output for input {fmt_shape(ins[0])}", loc)
            out.append(o)
        return [(n, a["num_output"], out[0], out[1])]

    def param_shapes(self, ins, a):
        cin = ins[0][1]
        shapes = {"weight": (cin, a["num_output"] // a["group"], *a["kernel"])}
        if a["bias_term"]:
            shapes["bias"] = (a["num_output"],)
        return shapes

    def ops(self, ins, outs, a):
        macc = numel(ins[0]) * (a["num_output"] // a["group"]) * a["kernel"][0] * a["kernel"][1]
        return Ops(macc=macc, add=numel(outs[0]) if a["bias_term"] else 0)

    def window(self, ins, a):
        return None  # handled specially by the receptive-field pass
