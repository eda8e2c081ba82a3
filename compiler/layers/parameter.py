"""Parameter: BVLC's parameter_layer.hpp, a learned blob of `shape` as a layer's only output (no
input): how Caffe nets feed a learned tensor to layers that take blobs, such as a two-input
Scale or Eltwise. Its batch is not the network's: the shape stays as written."""
from __future__ import annotations

from ..errors import NetcError
from .base import Layer, Param, fmt_shape, numel, register


@register
class Parameter(Layer):
    type = "Parameter"
    cost = "none: its values are weights"
    messages = ("parameter_param",)
    params = (Param("shape", "shape"),)
    family = "data"
    short = "param"
    min_inputs = max_inputs = 0

    def normalize(self, a, loc):
        if not a["shape"] or any(d <= 0 for d in a["shape"]):
            raise NetcError(f"Parameter needs a shape of positive sizes, got {fmt_shape(a['shape'] or ())}", loc)
        return a

    def shapes(self, ins, a, loc):
        return [tuple(a["shape"])]

    def param_shapes(self, ins, a):
        return {"weight": tuple(a["shape"])}

    def caffe_blobs(self, a):
        return ["weight"]

    def reference(self, torch, xs, a, p, node):
        return [p("weight").clone()]

    def onnx(self, b, n, d, ins):
        return b.node("Identity", [b.weight(n, "weight")], name=n)

    def lower_cpu(self, lo, n):
        lo.step([n], [f"np.copyto({lo.view((n, 0))}, {lo.param(lo.w[f'{n}.weight'])})"])
        return [n]

    def lower_cuda(self, lo, n):
        from ..codegen.cuda_kit import i, ux
        size = numel(lo.g.nodes[n]["shapes"][0])
        w = lo.param_offset(lo.w[f"{n}.weight"])
        return lo.step([n], [lo.elementwise("parameter", f"A[{lo.out_at((n, 0))}] = P[{ux(i(w), 'i')}]", size)])
