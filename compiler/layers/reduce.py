"""Per-row statistics of BVLC Caffe: Reduction (reduction_layer.cpp) and MVN (mvn_layer.cpp).

Reduction folds every axis from `axis` on into one number per leading index: SUM, ASUM (sum of
absolute values), SUMSQ or MEAN, times `coeff`; the output has the leading axes only (a scalar
for axis 0). MVN subtracts each image's (or each image-channel's) mean and, with
normalize_variance, divides by its standard deviation plus eps (Caffe adds eps to the square
root).
"""
from __future__ import annotations

from ..errors import NetcError
from .base import Layer, Ops, Param, fmt_shape, numel, register

OPS = ("SUM", "ASUM", "SUMSQ", "MEAN")


@register
class Reduction(Layer):
    type = "Reduction"
    cost = "per input element: 1 add (ASUM: + 1 comparison, SUMSQ: + 1 multiply); + 1 multiply per output"
    messages = ("reduction_param",)
    params = (Param("operation", "enum", "SUM", choices=OPS, base=1), Param("axis", default=0, min=None),
              Param("coeff", "float", 1.0, min=None))
    family = "other"
    short = "reduce"

    def _axis(self, shape, a, loc=None):
        if not -len(shape) <= a["axis"] < max(len(shape), 1):
            raise NetcError(f"Reduction: axis {a['axis']} out of range for {fmt_shape(shape)}", loc)
        return a["axis"] % len(shape) if shape else 0

    def shapes(self, ins, a, loc):
        return [tuple(ins[0][:self._axis(ins[0], a, loc)])]

    def ops(self, ins, outs, a):
        n = numel(ins[0])
        extra = {"ASUM": Ops(comp=n), "SUMSQ": Ops(mul=n)}.get(a["operation"], Ops())
        return Ops(add=n, comp=extra.comp, mul=extra.mul + numel(outs[0]))

    def brief(self, a):
        return a["operation"]

    def reference(self, torch, xs, a, p, node):
        x = xs[0]
        ax = self._axis(tuple(x.shape), a)
        rows = x.reshape(*x.shape[:ax], -1)
        op = a["operation"]
        v = {"SUM": rows, "ASUM": rows.abs(), "SUMSQ": rows * rows, "MEAN": rows}[op]
        y = v.mean(-1) if op == "MEAN" else v.sum(-1)
        return [(y * a["coeff"]).reshape(node["shapes"][0])]

    def onnx(self, b, n, d, ins):
        import numpy as np
        s, a = d["in_shapes"][0], d["attrs"]
        ax = self._axis(s, a)
        rows = b.node("Reshape", [ins[0], b.const(f"{n}_rows", [*s[:ax], -1], np.int64)], name=n)[0]
        if a["operation"] == "ASUM":
            rows = b.node("Abs", [rows], name=n)[0]
        elif a["operation"] == "SUMSQ":
            rows = b.node("Mul", [rows, rows], name=n)[0]
        op = "ReduceMean" if a["operation"] == "MEAN" else "ReduceSum"
        axes = b.const(f"{n}_axes", [ax], np.int64)
        y = (b.node(op, [rows, axes], name=n, keepdims=0) if op == "ReduceSum" or b.opset >= 18 else
             b.node(op, [rows], name=n, axes=[ax], keepdims=0))[0]
        return b.node("Mul", [y, b.const(f"{n}_coeff", a["coeff"])], name=n)

    def _rows(self, d):
        s = d["in_shapes"][0]
        ax = self._axis(s, d["attrs"])
        return numel(s[:ax]), numel(s[ax:])

    def _term(self, a) -> str:
        return {"SUM": "v", "MEAN": "v", "ASUM": "abs(v)", "SUMSQ": "v * v"}[a["operation"]]

    def _factor(self, a, inner) -> float:
        return a["coeff"] / inner if a["operation"] == "MEAN" else a["coeff"]

    def lower_cpu(self, lo, n):
        from ..codegen.cpu_kit import f32, i
        d, a = lo.g.nodes[n], lo.g.nodes[n]["attrs"]
        rows, inner = self._rows(d)
        x, y = lo.view(d["inputs"][0], (rows, inner)), lo.view((n, 0), (rows,))
        k = lo.kernel("reduce", f"""
            def NAME(x, y):
                for r in prange({i(rows)}):
                    s = np.float64(0.0)
                    for j in range({i(inner)}):
                        v = x[r, j]
                        s += {self._term(a)}
                    y[r] = np.float32(s * {f32(self._factor(a, inner))})
            """, rows * inner)
        lo.step([n], [f"{k}({x}, {y})"])
        return [n]

    def lower_cuda(self, lo, n):
        from ..codegen.cuda_kit import i, ux
        d, a = lo.g.nodes[n], lo.g.nodes[n]["attrs"]
        rows, inner = self._rows(d)
        src = lo.addr(d["inputs"][0])
        body = "\n".join([
            "s = float32(0.0)",
            f"for j in range({i(inner)}):",
            f"    v = A[{ux(i(src), f'i * {i(inner)}', 'j')}]",
            f"    s += {self._term(a)}",
            f"A[{lo.out_at((n, 0))}] = s * float32({self._factor(a, inner)!r})"])
        return lo.step([n], [lo.elementwise("reduce", body, rows)])


@register
class MVN(Layer):
    type = "MVN"
    cost = "per element: 2 adds, 1 multiply (+ 1 multiply and 1 divide with normalize_variance); 1 square root per row"
    messages = ("mvn_param",)
    params = (Param("normalize_variance", "bool", True), Param("across_channels", "bool", False),
              Param("eps", "float", 1e-9, positive=True))
    family = "norm"
    short = "mvn"

    def shapes(self, ins, a, loc):
        if len(ins[0]) < 2:
            raise NetcError(f"MVN needs an (N, C, ...) input, got {fmt_shape(ins[0])}", loc)
        return [ins[0]]

    def ops(self, ins, outs, a):
        n = numel(outs[0])
        return Ops(add=2 * n, mul=n * (2 if a["normalize_variance"] else 1), div=n if a["normalize_variance"] else 0)

    def _rows(self, shape, a):
        rows = shape[0] if a["across_channels"] else shape[0] * shape[1]
        return rows, numel(shape) // rows

    def reference(self, torch, xs, a, p, node):
        x = xs[0]
        rows = x.reshape(x.shape[0], -1) if a["across_channels"] else x.reshape(x.shape[0], x.shape[1], -1)
        y = rows - rows.mean(-1, keepdim=True)
        if a["normalize_variance"]:
            y = y / ((y * y).mean(-1, keepdim=True).sqrt() + a["eps"])
        return [y.reshape(x.shape)]

    def onnx(self, b, n, d, ins):
        import numpy as np
        s, a = d["in_shapes"][0], d["attrs"]
        rows, inner = self._rows(s, a)
        flat = b.node("Reshape", [ins[0], b.const(f"{n}_rows", [rows, inner], np.int64)], name=n)[0]
        axes = b.const(f"{n}_axes", [1], np.int64)

        def mean(v):
            return (b.node("ReduceMean", [v, axes], name=n, keepdims=1) if b.opset >= 18 else
                    b.node("ReduceMean", [v], name=n, axes=[1], keepdims=1))[0]
        y = b.node("Sub", [flat, mean(flat)], name=n)[0]
        if a["normalize_variance"]:
            std = b.node("Sqrt", [mean(b.node("Mul", [y, y], name=n)[0])], name=n)[0]
            y = b.node("Div", [y, b.node("Add", [std, b.const(f"{n}_eps", a["eps"])], name=n)[0]], name=n)[0]
        return b.node("Reshape", [y, b.const(f"{n}_shape", list(s), np.int64)], name=n)

    def lower_cpu(self, lo, n):
        from ..codegen.cpu_kit import i
        d, a = lo.g.nodes[n], lo.g.nodes[n]["attrs"]
        rows, inner = self._rows(d["in_shapes"][0], a)
        x, y = lo.view(d["inputs"][0], (rows, inner)), lo.view((n, 0), (rows, inner))
        scale = (f"v = np.float32(1.0) / np.float32(np.sqrt(q / {i(inner)}) + {float(a['eps'])!r})"
                 if a["normalize_variance"] else "v = np.float32(1.0)")
        k = lo.kernel("mvn", f"""
            def NAME(x, y):
                for r in prange({i(rows)}):
                    s = np.float64(0.0)
                    for j in range({i(inner)}):
                        s += x[r, j]
                    m = np.float32(s / {i(inner)})
                    q = np.float64(0.0)
                    for j in range({i(inner)}):
                        t = x[r, j] - m
                        q += t * t
                    {scale}
                    for j in range({i(inner)}):
                        y[r, j] = (x[r, j] - m) * v
            """, rows * inner * 3)
        lo.step([n], [f"{k}({x}, {y})"])
        return [n]

    def lower_cuda(self, lo, n):
        from ..codegen.cuda_kit import i, ux
        d, a = lo.g.nodes[n], lo.g.nodes[n]["attrs"]
        rows, inner = self._rows(d["in_shapes"][0], a)
        src, dst = lo.addr(d["inputs"][0]), lo.addr((n, 0))

        def at(base):
            return f"A[{ux(i(base), f'i * {i(inner)}', 'j')}]"
        body = "\n".join([
            "s = float32(0.0)", f"for j in range({i(inner)}):", f"    s += {at(src)}",
            f"m = s / float32({inner})", "q = float32(0.0)",
            f"for j in range({i(inner)}):", f"    t = {at(src)} - m", "    q += t * t",
            (f"v = float32(1.0) / (math.sqrt(q / float32({inner})) + float32({float(a['eps'])!r}))"
             if a["normalize_variance"] else "v = float32(1.0)"),
            f"for j in range({i(inner)}):", f"    {at(dst)} = ({at(src)} - m) * v"])
        return lo.step([n], [lo.elementwise("mvn", body, rows)])
