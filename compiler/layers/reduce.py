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

    def backward(self, dys, xs, ys, a, p, rule):
        import numpy as np
        x = xs[0]
        ax = self._axis(x.shape, a)
        rows = x.reshape(*x.shape[:ax], -1)
        g = (dys[0] * np.float32(a["coeff"])).reshape(*x.shape[:ax], 1)
        d = {"SUM": np.ones_like(rows), "ASUM": np.sign(rows), "SUMSQ": 2 * rows,
             "MEAN": np.full_like(rows, 1 / max(rows.shape[-1], 1))}[a["operation"]]
        return [(g * d).reshape(x.shape)]

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

    def backward(self, dys, xs, ys, a, p, rule):
        """c = r - mean(r), y = c / (s + eps), s = sqrt(mean(c^2)): dc = dy / (s + eps) -
        c sum(dy c) / ((s + eps)^2 m s), then dr = dc - mean(dc)."""
        import numpy as np
        x = xs[0].astype(np.float64)
        shape = (x.shape[0], -1) if a["across_channels"] else (x.shape[0], x.shape[1], -1)
        r, dy = x.reshape(shape), dys[0].astype(np.float64).reshape(shape)
        dc = dy
        if a["normalize_variance"]:
            c = r - r.mean(-1, keepdims=True)
            m = c.shape[-1]
            s = np.sqrt((c * c).mean(-1, keepdims=True))
            e = s + a["eps"]
            safe = np.where(s > 0, s, 1.0)
            dc = dy / e - np.where(s > 0, c * (dy * c).sum(-1, keepdims=True) / (e * e * m * safe), 0.0)
        dr = dc - dc.mean(-1, keepdims=True)
        return [dr.reshape(x.shape).astype(np.float32)]

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


def _rank(torch, rows):
    """Each row's indices by value, largest first, ties to the larger index (Caffe's order)."""
    flipped = torch.argsort(rows.flip(1), dim=1, descending=True, stable=True)
    return rows.shape[1] - 1 - flipped


@register
class ArgMax(Layer):
    """argmax_layer.cpp: the top_k largest values' indices (or, with out_max_val, their values
    too). Without `axis` over each image's every value, output [N, 1 or 2, top_k, 1...]; with
    it along that axis, the axis' size becoming top_k (values instead of indices when
    out_max_val). Ties go to the larger index, as Caffe's sort of (value, index) pairs does."""
    type = "ArgMax"
    aliases = ("ARGMAX",)
    cost = "top_k comparisons per input element"
    messages = ("argmax_param",)
    params = (Param("out_max_val", "bool", False), Param("top_k", default=1, positive=True), Param("axis", min=None))
    family = "other"
    short = "argmax"

    def _layout(self, shape, a):
        """(rows, length along which to rank, stride between its elements)."""
        if a["axis"] is None:
            return shape[0], numel(shape[1:]), 1
        ax = a["axis"] % len(shape)
        return numel(shape[:ax]) * numel(shape[ax + 1:]), shape[ax], numel(shape[ax + 1:])

    def shapes(self, ins, a, loc):
        s = ins[0]
        if a["axis"] is not None:
            if not -len(s) <= a["axis"] < len(s):
                raise NetcError(f"ArgMax: axis {a['axis']} out of range for {fmt_shape(s)}", loc)
            ax = a["axis"] % len(s)
            if a["top_k"] > s[ax]:
                raise NetcError(f"ArgMax: top_k {a['top_k']} is more than the axis' {s[ax]} values", loc)
            return [(*s[:ax], a["top_k"], *s[ax + 1:])]
        if a["top_k"] > numel(s[1:]):
            raise NetcError(f"ArgMax: top_k {a['top_k']} is more than the {numel(s[1:])} values per image", loc)
        out = [1] * max(3, len(s))
        out[0], out[1], out[2] = s[0], 2 if a["out_max_val"] else 1, a["top_k"]
        return [tuple(out)]

    def ops(self, ins, outs, a):
        return Ops(comp=numel(ins[0]) * a["top_k"])

    def reference(self, torch, xs, a, p, node):
        x = xs[0]
        if a["axis"] is None:
            rows = x.reshape(x.shape[0], -1)
            order = _rank(torch, rows)[:, :a["top_k"]]
            out = order.to(x.dtype)[:, None, :]
            if a["out_max_val"]:
                out = torch.cat([out, torch.gather(rows, 1, order)[:, None, :]], 1)
            return [out.reshape(node["shapes"][0])]
        ax = a["axis"] % x.dim()
        moved = x.movedim(ax, -1)
        flat = moved.reshape(-1, moved.shape[-1])
        order = _rank(torch, flat)[:, :a["top_k"]]
        y = torch.gather(flat, 1, order) if a["out_max_val"] else order.to(x.dtype)
        return [y.reshape(*moved.shape[:-1], a["top_k"]).movedim(-1, ax)]

    def lower_cpu(self, lo, n):
        from ..codegen.cpu_kit import i
        d, a = lo.g.nodes[n], lo.g.nodes[n]["attrs"]
        rows, length, stride = self._layout(d["in_shapes"][0], a)
        k, per_image = a["top_k"], a["axis"] is None
        x, y = lo.view(d["inputs"][0], (numel(d["in_shapes"][0]),)), lo.view((n, 0), (numel(d["shapes"][0]),))
        # row r's element j: rows run over (outer, inner); j steps by the axis' stride
        base = "r * " + i(length) if per_image else f"(r // {i(stride)}) * {i(length * stride)} + r % {i(stride)}"
        write_i = (f"y[r * {i(k * (2 if a['out_max_val'] else 1))} + t] = np.float32(bj)" if per_image else
                   f"y[(r // {i(stride)}) * {i(k * stride)} + t * {i(stride)} + r % {i(stride)}] = "
                   + ("bv" if a["out_max_val"] else "np.float32(bj)"))
        write_v = f"y[r * {i(2 * k)} + {i(k)} + t] = bv" if per_image and a["out_max_val"] else ""
        kern = lo.kernel("argmax", f"""
            def NAME(x, y):
                for r in prange({i(rows)}):
                    b0 = {base}
                    pv = np.float32(np.inf)
                    pj = {i(length)}
                    for t in range({i(k)}):
                        bv = np.float32(-np.inf)
                        bj = -1
                        for j in range({i(length)}):
                            v = x[b0 + j * {i(stride)}]
                            if (v < pv or (v == pv and j < pj)) and (v > bv or (v == bv and j > bj)):
                                bv = v
                                bj = j
                        {write_i}
                        {write_v}
                        pv = bv
                        pj = bj
            """, rows * length * k)
        lo.step([n], [f"{kern}({x}, {y})"])
        return [n]

    def lower_cuda(self, lo, n):
        from ..codegen.cuda_kit import i, ux
        d, a = lo.g.nodes[n], lo.g.nodes[n]["attrs"]
        rows, length, stride = self._layout(d["in_shapes"][0], a)
        k, per_image = a["top_k"], a["axis"] is None
        src, dst = lo.addr(d["inputs"][0]), lo.addr((n, 0))
        base = f"i * {i(length)}" if per_image else f"(i // {i(stride)}) * {i(length * stride)} + i % {i(stride)}"
        width = k * (2 if a["out_max_val"] else 1)      # one image's output values
        if per_image:
            writes = [f"    A[{ux(i(dst), f'i * {i(width)}', 't')}] = float32(bj)"]
        else:
            writes = [f"    A[{ux(i(dst), f'(i // {i(stride)}) * {i(k * stride)} + t * {i(stride)} + i % {i(stride)}')}] = "
                      + ("bv" if a["out_max_val"] else "float32(bj)")]
        if per_image and a["out_max_val"]:
            writes.append(f"    A[{ux(i(dst), f'i * {i(2 * k)} + {i(k)}', 't')}] = bv")
        body = "\n".join([
            f"b0 = {base}", "pv = float32(math.inf)", f"pj = {i(length)}",
            f"for t in range({i(k)}):",
            "    bv = float32(-math.inf)", "    bj = -1",
            f"    for j in range({i(length)}):",
            f"        v = A[{ux(i(src), 'b0', f'j * {i(stride)}')}]",
            "        if (v < pv or (v == pv and j < pj)) and (v > bv or (v == bv and j > bj)):",
            "            bv = v", "            bj = j",
            *writes, "    pv = bv", "    pj = bj"])
        return lo.step([n], [lo.elementwise("argmax", body, rows)])

    def onnx(self, b, n, d, ins):
        """TopK (ties to the smaller index there, to the larger in Caffe: equal values only)."""
        import numpy as np
        s, a = d["in_shapes"][0], d["attrs"]
        k = b.const(f"{n}_k", [a["top_k"]], np.int64)
        if a["axis"] is None:
            rows = b.node("Reshape", [ins[0], b.const(f"{n}_rows", [s[0], -1], np.int64)], name=n)[0]
            values, index = b.node("TopK", [rows, k], 2, name=n, axis=1)
            parts = [b.node("Cast", [index], name=n, to=1)[0]] + ([values] if a["out_max_val"] else [])
            both = b.node("Concat", parts, name=n, axis=1)[0] if len(parts) > 1 else parts[0]
            return b.node("Reshape", [both, b.const(f"{n}_shape", list(d["shapes"][0]), np.int64)], name=n)
        values, index = b.node("TopK", [ins[0], k], 2, name=n, axis=a["axis"] % len(s))
        return [values] if a["out_max_val"] else b.node("Cast", [index], name=n, to=1)
