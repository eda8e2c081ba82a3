"""Layers that join or split tensors: Eltwise, Concat, Slice, Split, ShuffleChannel.

Kernels: the copies are numpy copies of bound views on the CPU and strided copy kernels on CUDA
(where a Concat skips producers that wrote straight into its buffer).
"""
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
    epilogue_merge = True
    cost = "SUM: (inputs - 1) adds per element, plus a multiply per coefficient != 1; PROD: (inputs - 1) multiplies; MAX: (inputs - 1) comparisons"

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

    def brief(self, a):
        return a["operation"]

    def onnx(self, b, n, d, ins):
        a = d["attrs"]
        if a["operation"] == "PROD":        # Mul takes two inputs: a chain
            y = ins[0]
            for x in ins[1:]:
                y = b.node("Mul", [y, x], name=n)[0]
            return [y]
        if a["coeff"] and any(c != 1 for c in a["coeff"]):
            ins = [x if c == 1 else b.node("Mul", [x, b.const(f"{n}_coeff", c)], name=n)[0]
                   for x, c in zip(ins, a["coeff"])]
        return b.node("Sum" if a["operation"] == "SUM" else "Max", ins, name=n)

    def backward(self, dys, xs, ys, a, p, rule):
        """SUM: coeff times dy; PROD: dy times the other inputs; MAX: dy to the first input
        holding the maximum (eltwise_layer.cpp's mask)."""
        import numpy as np
        dy = dys[0]
        if a["operation"] == "SUM":
            return [np.float32(c) * dy for c in (a["coeff"] or (1.0,) * len(xs))]
        if a["operation"] == "PROD":
            out = []
            for k in range(len(xs)):
                g = dy
                for j, v in enumerate(xs):
                    if j != k:
                        g = g * v
                out.append(g)
            return out
        best = np.zeros(xs[0].shape, np.int64)
        top = xs[0]
        for k, v in enumerate(xs[1:], 1):
            best = np.where(v > top, k, best)
            top = np.maximum(top, v)
        return [dy * (best == k) for k in range(len(xs))]

    def reference(self, torch, xs, a, p, node):
        if a["operation"] == "SUM":
            coeff = a["coeff"] or (1.0,) * len(xs)
            return [sum(c * v for c, v in zip(coeff, xs))]
        y = xs[0]
        for v in xs[1:]:
            y = y * v if a["operation"] == "PROD" else torch.maximum(y, v)
        return [y]

    @staticmethod
    def combine(a: dict, terms: list[str], f32) -> list[str]:
        """Statements leaving the Eltwise of `terms` (source expressions, one per input) in `v`;
        `f32` spells a float32 constant for the target. Also the epilogue of a convolution
        that absorbed the Eltwise (Convolution._epilogue)."""
        if a["operation"] == "SUM":
            coeff = a["coeff"] or (1.0,) * len(terms)
            return ["v = " + " + ".join(t if c == 1 else f"{f32(c)} * {t}" for t, c in zip(terms, coeff))]
        if a["operation"] == "PROD":
            return ["v = " + " * ".join(terms)]
        return [f"v = {terms[0]}"] + [f"v = max(v, {t})" for t in terms[1:]]

    def lower_cpu(self, lo, n):
        from ..codegen.cpu_kit import f32, i
        d, a, xs, _ = lo.io(n)
        size, k_in = numel(xs), len(d["inputs"])
        extra, _, acts = lo.absorb(n, fold=False)
        out = (extra or [n])[-1]
        xs_ = [lo.view(src, (size,)) for src in d["inputs"]]
        y = lo.view((out, 0), (size,))
        lines = self.combine(a, [f"x{j}[j]" for j in range(k_in)], f32)
        args = ", ".join(f"x{j}" for j in range(k_in))
        k = lo.kernel("eltwise", f"""
            def NAME(y, {args}):
                for j in prange({i(size)}):
ACTS
                    y[j] = v
            """, size * k_in * 2, lines + acts)
        lo.step([n, *extra], [f"{k}({y}, {', '.join(xs_)})"])
        return [n, *extra]

    def lower_cuda(self, lo, n):
        from ..codegen.cuda_kit import f32, i, ux
        d, a, xs, _ = lo.io(n)
        size = numel(xs)
        extra, _, acts, out = lo.fused(n, fold=False)
        xs_ = [f"A[{ux(i(lo.addr(src)), 'i')}]" for src in d["inputs"]]
        lines = self.combine(a, xs_, f32)
        body = "\n".join(lines + ["ACTS", f"A[{lo.out_at(out)}] = v"])
        return lo.step([n, *extra], [lo.elementwise("eltwise", body, size, acts)])


@register
class Concat(Layer):
    type = "Concat"
    cost = "no arithmetic: a copy of each input"
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

    def concat_axis(self, a):
        return a["axis"]

    def onnx(self, b, n, d, ins):
        return b.node("Concat", ins, name=n, axis=int(d["attrs"]["axis"]) % len(d["shapes"][0]))

    def backward(self, dys, xs, ys, a, p, rule):
        import numpy as np
        ax = a["axis"] % xs[0].ndim
        return np.split(dys[0], np.cumsum([x.shape[ax] for x in xs])[:-1], axis=ax)

    def reference(self, torch, xs, a, p, node):
        return [torch.cat(xs, a["axis"])]

    def lower_cpu(self, lo, n):
        d, a, _, ys = lo.io(n)
        O, CT, I = lo.outer_axis_inner(ys, a["axis"])
        y = lo.view((n, 0), (O, CT, I))
        lines, c0 = [], 0
        for src, s in zip(d["inputs"], d["in_shapes"]):
            c = s[a["axis"] % len(s)]
            dst = lo.bind(f"{y}[:, {c0}:{c0 + c}]")
            lines.append(f"np.copyto({dst}, {lo.view(src, (O, c, I))})")
            c0 += c
        lo.step([n], lines)

    def lower_cuda(self, lo, n):
        d, a, _, ys = lo.io(n)
        O, CT, I = lo.outer_axis_inner(ys, a["axis"])
        y_off = lo.addr((n, 0))
        launches, c0 = [], 0
        for src, s in zip(d["inputs"], d["in_shapes"]):
            c = s[a["axis"] % len(s)]
            if src not in lo.redirect or src in lo.unstrided:   # else the producer wrote its slice
                launches.append(lo.copy((O, c * I), lo.addr(src), (c * I, 1), y_off + c0 * I, (CT * I, 1)))
            c0 += c
        return lo.step([n], launches)


@register
class Slice(Layer):
    type = "Slice"
    cost = "no arithmetic: a copy into each output"
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

    def onnx(self, b, n, d, ins):
        import numpy as np
        ax = d["attrs"]["axis"] % len(d["in_shapes"][0])
        sizes = b.const(f"{n}_sizes", [s[ax] for s in d["shapes"]], np.int64)
        return b.node("Split", [ins[0], sizes], len(d["shapes"]), name=n, axis=ax)

    def backward(self, dys, xs, ys, a, p, rule):
        import numpy as np
        ax = a["axis"] % xs[0].ndim
        return [np.concatenate([d if d is not None else np.zeros_like(y) for d, y in zip(dys, ys)], axis=ax)]

    def reference(self, torch, xs, a, p, node):
        ax = a["axis"] % xs[0].dim()
        return list(torch.split(xs[0], [s[ax] for s in node["shapes"]], ax))

    def lower_cpu(self, lo, n):
        d, a, xs, _ = lo.io(n)
        O, CT, I = lo.outer_axis_inner(xs, a["axis"])
        x = lo.view(d["inputs"][0], (O, CT, I))
        lines, c0 = [], 0
        for port, s in enumerate(d["shapes"]):
            c = s[a["axis"] % len(s)]
            src = lo.bind(f"{x}[:, {c0}:{c0 + c}]")
            lines.append(f"np.copyto({lo.view((n, port), (O, c, I))}, {src})")
            c0 += c
        lo.step([n], lines)

    def lower_cuda(self, lo, n):
        d, a, xs, _ = lo.io(n)
        O, CT, I = lo.outer_axis_inner(xs, a["axis"])
        x_off = lo.addr(d["inputs"][0])
        launches, c0 = [], 0
        for port, s in enumerate(d["shapes"]):
            c = s[a["axis"] % len(s)]
            launches.append(lo.copy((O, c * I), x_off + c0 * I, (CT * I, 1), lo.addr((n, port)), (c * I, 1)))
            c0 += c
        return lo.step([n], launches)


@register
class Split(Layer):
    type = "Split"
    cost = "no arithmetic: a copy per output"
    aliases = ("SPLIT",)
    family = "merge"
    short = "split"
    outputs = None
    own_buffer = True    # one kernel writes every copy

    def multi_shapes(self, ins, a, loc, ntops):
        return [ins[0]] * ntops

    def onnx(self, b, n, d, ins):
        return [b.node("Identity", [ins[0]], name=n)[0] for _ in d["tops"]]

    def backward(self, dys, xs, ys, a, p, rule):
        got = [d for d in dys if d is not None]
        return [sum(got[1:], got[0].copy())]

    def reference(self, torch, xs, a, p, node):
        return [xs[0].clone() for _ in node["tops"]]

    def lower_cpu(self, lo, n):
        d = lo.g.nodes[n]
        x = lo.view(d["inputs"][0])
        lo.step([n], [f"np.copyto({lo.view((n, p))}, {x})" for p in range(len(d["shapes"]))])

    def lower_cuda(self, lo, n):
        from ..codegen.cuda_kit import i, ux
        d = lo.g.nodes[n]
        x_off = lo.addr(d["inputs"][0])
        outs = sorted({lo.addr((n, p)) for p in range(len(d["shapes"]))} - {x_off})
        if not outs:
            return lo.step([n], [])
        body = "\n".join([f"v = A[{ux(i(x_off), 'i')}]"] + [f"A[{ux(i(o), 'i')}] = v" for o in outs])
        return lo.step([n], [lo.elementwise("split", body, numel(d["shapes"][0]))])


@register
class ShuffleChannel(Layer):
    type = "ShuffleChannel"
    cost = "no arithmetic: a permuting copy"
    messages = ("shuffle_channel_param",)
    params = (Param("group", default=1, positive=True),)
    family = "merge"
    short = "shuffle"

    def shapes(self, ins, a, loc):
        if len(ins[0]) < 2 or ins[0][1] % a["group"]:
            raise NetcError(f"ShuffleChannel: channels of {fmt_shape(ins[0])} not divisible by group {a['group']}", loc)
        return [ins[0]]

    def onnx(self, b, n, d, ins):
        import numpy as np
        shape, g = d["in_shapes"][0], d["attrs"]["group"]
        split = b.node("Reshape", [ins[0], b.const(f"{n}_groups", [0, g, shape[1] // g, -1], np.int64)], name=n)[0]
        swapped = b.node("Transpose", [split], name=n, perm=[0, 2, 1, 3])[0]
        return b.node("Reshape", [swapped, b.const(f"{n}_shape", [0, *shape[1:]], np.int64)], name=n)

    def backward(self, dys, xs, ys, a, p, rule):
        dy, gp = dys[0], a["group"]
        n, c = dy.shape[:2]
        return [dy.reshape(n, c // gp, gp, -1).transpose(0, 2, 1, 3).reshape(dy.shape)]

    def reference(self, torch, xs, a, p, node):
        x, gp = xs[0], a["group"]
        return [x.reshape(x.shape[0], gp, x.shape[1] // gp, -1).transpose(1, 2).reshape(x.shape)]

    def lower_cpu(self, lo, n):
        d, a, xs, _ = lo.io(n)
        N, C, S = lo.nc_s(xs)
        g = a["group"]
        src = lo.bind(f"{lo.view(d['inputs'][0], (N, g, C // g, S))}.transpose((0, 2, 1, 3))")
        lo.step([n], [f"np.copyto({lo.view((n, 0), (N, C // g, g, S))}, {src})"])

    def lower_cuda(self, lo, n):
        d, a, xs, _ = lo.io(n)
        N, C, S = lo.nc_s(xs)
        g = a["group"]
        # output viewed as (N, C/g, g, S) reads input viewed as (N, g, C/g, S)
        return lo.step([n], [lo.copy((N, C // g, g, S), lo.addr(d["inputs"][0]), (C * S, S, C // g * S, 1),
                                         lo.addr((n, 0)), lo.strides((N, C // g, g, S)))])
