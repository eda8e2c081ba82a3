"""Layers that only move or relabel data: Flatten, Reshape, Permute, Crop, Softmax.

Flatten and Reshape are views (no kernel); Permute and Crop copy; Softmax has the only
reduction kernels here (a block per row on CUDA when rows are long).
"""
from __future__ import annotations

from ..errors import NetcError, SoftShapeError
from .base import Layer, Ops, Param, fmt_shape, numel, register
from .merge import _axis


def onnx_reshape(b, n, d, x) -> list[str]:
    """Reshape to the analyzed shape; with a symbolic batch its first size is 0 (copied), which
    needs the batch to stay the first axis."""
    import numpy as np
    target = [int(v) for v in d["shapes"][0]]
    if b.dynamic:
        if not target or target[0] != d["in_shapes"][0][0]:
            raise NetcError(f'layer "{n}" ({d["type"]}) moves the batch axis: export it without --dynamic-batch',
                            d["loc"])
        target[0] = 0
    return b.node("Reshape", [x, b.const(f"{n}_shape", target, np.int64)], name=n)


@register
class Flatten(Layer):
    type = "Flatten"
    cost = "none: a view of its input"
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

    def onnx(self, b, n, d, ins):
        return onnx_reshape(b, n, d, ins[0])

    def backward(self, dys, xs, ys, a, p, rule):
        return [dys[0].reshape(xs[0].shape)]

    def reference(self, torch, xs, a, p, node):
        return [xs[0].reshape(node["shapes"][0])]


@register
class Reshape(Layer):
    type = "Reshape"
    cost = "none: a view of its input"
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

    def onnx(self, b, n, d, ins):
        return onnx_reshape(b, n, d, ins[0])

    def backward(self, dys, xs, ys, a, p, rule):
        return [dys[0].reshape(xs[0].shape)]

    def reference(self, torch, xs, a, p, node):
        return [xs[0].reshape(node["shapes"][0])]


@register
class Permute(Layer):
    type = "Permute"
    cost = "no arithmetic: a permuting copy"
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

    def onnx(self, b, n, d, ins):
        order = list(d["attrs"]["order"])
        order += [i for i in range(len(d["in_shapes"][0])) if i not in order]
        if b.dynamic and order[0] != 0:
            raise NetcError(f'layer "{n}" (Permute) moves the batch axis: export it without --dynamic-batch', d["loc"])
        return b.node("Transpose", [ins[0]], name=n, perm=[int(o) for o in order])

    def backward(self, dys, xs, ys, a, p, rule):
        import numpy as np
        order = list(a["order"]) + [i for i in range(xs[0].ndim) if i not in a["order"]]
        return [np.ascontiguousarray(dys[0].transpose(np.argsort(order)))]

    def reference(self, torch, xs, a, p, node):
        order = list(a["order"]) + [i for i in range(xs[0].dim()) if i not in a["order"]]
        return [xs[0].permute(order)]

    def lower_cpu(self, lo, n):
        d, a, xs, _ = lo.io(n)
        order = list(a["order"]) + [k for k in range(len(xs)) if k not in a["order"]]
        src = lo.bind(f"{lo.view(d['inputs'][0])}.transpose({tuple(int(o) for o in order)!r})")
        lo.step([n], [f"np.copyto({lo.view((n, 0))}, {src})"])

    def lower_cuda(self, lo, n):
        d, a, xs, ys = lo.io(n)
        order = list(a["order"]) + [k for k in range(len(xs)) if k not in a["order"]]
        st = lo.strides(xs)
        return lo.step([n], [lo.copy(ys, lo.addr(d["inputs"][0]), [st[o] for o in order],
                                         lo.addr((n, 0)), lo.strides(ys))])


@register
class Crop(Layer):
    type = "Crop"
    no_gradient_inputs = (1,)     # the second input only gives the output size
    cost = "no arithmetic: a copy of the window"
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

    def onnx(self, b, n, d, ins):
        import numpy as np
        a, x, y = d["attrs"], d["in_shapes"][0], d["shapes"][0]
        ax, offs = a["axis"] % len(x), list(a["offset"])
        axes = list(range(ax, len(x)))
        starts = [offs[0] if len(offs) == 1 else offs[i - ax] if offs else 0 for i in axes]
        ends = [s + y[i] for s, i in zip(starts, axes)]
        return b.node("Slice", [ins[0], b.const(f"{n}_starts", starts, np.int64), b.const(f"{n}_ends", ends, np.int64),
                                b.const(f"{n}_axes", axes, np.int64)], name=n)

    def backward(self, dys, xs, ys, a, p, rule):
        import numpy as np
        x, ref = xs
        ax, offs = a["axis"] % x.ndim, list(a["offset"])
        index = [slice(None)] * x.ndim
        for i in range(ax, x.ndim):
            o = offs[0] if len(offs) == 1 else offs[i - ax] if offs else 0
            index[i] = slice(o, o + ref.shape[i])
        dx = np.zeros_like(x)
        dx[tuple(index)] = dys[0]
        return [dx, None]

    def reference(self, torch, xs, a, p, node):
        x, ref = xs
        ax, offs = a["axis"] % x.dim(), list(a["offset"])
        for i in range(ax, x.dim()):
            o = offs[0] if len(offs) == 1 else offs[i - ax] if offs else 0
            x = x.narrow(i, o, ref.shape[i])
        return [x]

    def lower_cpu(self, lo, n):
        d, a, xs, ys = lo.io(n)
        ax = a["axis"] % len(xs)
        offs = list(a["offset"])
        sl = []
        for k in range(len(xs)):
            off = 0 if k < ax else (offs[0] if len(offs) == 1 else offs[k - ax] if offs else 0)
            sl.append(f"{int(off)}:{int(off + ys[k])}")
        src = lo.bind(f"{lo.view(d['inputs'][0])}[{', '.join(sl)}]")
        lo.step([n], [f"np.copyto({lo.view((n, 0))}, {src})"])

    def lower_cuda(self, lo, n):
        d, a, xs, ys = lo.io(n)
        ax = a["axis"] % len(xs)
        offs = list(a["offset"])
        st = lo.strides(xs)
        base = lo.addr(d["inputs"][0])
        for k in range(ax, len(xs)):
            base += (offs[0] if len(offs) == 1 else offs[k - ax] if offs else 0) * st[k]
        return lo.step([n], [lo.copy(ys, base, st, lo.addr((n, 0)), lo.strides(ys))])


@register
class Softmax(Layer):
    type = "Softmax"
    scores_in = True
    cost = "per element: 1 max, 2 adds, 1 exp, 1 divide"
    aliases = ("SOFTMAX",)
    messages = ("softmax_param",)
    params = (Param("axis", default=1, min=None),)
    family = "activation"
    short = "prob"

    def onnx(self, b, n, d, ins):
        return b.node("Softmax", [ins[0]], name=n, axis=int(d["attrs"]["axis"]) % len(d["shapes"][0]))

    def shapes(self, ins, a, loc):
        _axis(a["axis"], len(ins[0]), "Softmax", loc)
        return [ins[0]]

    def ops(self, ins, outs, a):
        n = numel(outs[0])
        return Ops(comp=n, add=2 * n, exp=n, div=n)  # max, subtract, exp, sum, divide

    def backward(self, dys, xs, ys, a, p, rule):
        y, dy = ys[0], dys[0]
        return [y * (dy - (dy * y).sum(axis=a["axis"], keepdims=True))]

    def reference(self, torch, xs, a, p, node):
        return [torch.nn.functional.softmax(xs[0], a["axis"])]

    def lower_cpu(self, lo, n):
        from ..codegen.cpu_kit import i
        d, a, xs, _ = lo.io(n)
        O, C, I = lo.outer_axis_inner(xs, a["axis"])
        x, y = lo.view(d["inputs"][0], (O, C, I)), lo.view((n, 0), (O, C, I))
        k = lo.kernel("softmax", f"""
            def NAME(x, y):
                for o in prange({i(O)}):
                    for j in range({i(I)}):
                        m = x[o, 0, j]
                        for c in range(1, {i(C)}):
                            m = max(m, x[o, c, j])
                        s = Z
                        for c in range({i(C)}):
                            e = np.exp(x[o, c, j] - m)
                            y[o, c, j] = e
                            s += e
                        s = ONE / s
                        for c in range({i(C)}):
                            y[o, c, j] *= s
            """, O * C * I * 8)
        lo.step([n], [f"{k}({x}, {y})"])

    def lower_cuda(self, lo, n):
        """One thread per row when rows are short (or strided and many); otherwise (a 1000-class output at
        batch 1: one thread would make 3 passes over 1000 values alone) one block per row,
        max and sum found by a shared-memory tree (no warp shuffles: the simulator lacks them)."""
        import math
        from ..codegen import cuda_gemm as gemm
        from ..codegen.cuda_kit import ONE, ZERO, f32, i, ix, ux
        from ..codegen.cuda_kit import BLOCK, Launch, SOFTMAX_BLOCK_MIN
        d, a, xs, _ = lo.io(n)
        O, C, I = lo.outer_axis_inner(xs, a["axis"])
        x_off, y_off = lo.addr(d["inputs"][0]), lo.addr((n, 0))
        rows = O * I
        # rows strided by I > 1: adjacent threads of the simple kernel read adjacent values
        # (coalesced), so a block per row only pays when the rows are too few to fill the GPU
        if C < SOFTMAX_BLOCK_MIN or (I > 1 and rows >= gemm.SMS * 32):
            body = f"""
                base = {lo.row_base("i", C, I)}
                m = A[{ux(i(x_off), "base")}]
                for c in range({ix(1)}, {ix(i(C))}):
                    m = max(m, A[{ux(i(x_off), "base", f"c * {i(I)}")}])
                s = {ZERO}
                for c in range({ix(i(C))}):
                    e = math.exp(A[{ux(i(x_off), "base", f"c * {i(I)}")}] - m)
                    A[{ux(i(y_off), "base", f"c * {i(I)}")}] = e
                    s += e
                s = {ONE} / s
                for c in range({ix(i(C))}):
                    A[{ux(i(y_off), "base", f"c * {i(I)}")}] *= s
            """
            return lo.step([n], [lo.elementwise("softmax", body, rows)])
        T = min(BLOCK, 1 << (C - 1).bit_length())
        at = lambda base: ux(base, f"c * {i(I)}")
        lines = [
            "@cuda.jit(cache=True)", "def NAME(A, P):",
            f"    red = cuda.shared.array({T}, float32)",
            "    t = int32(cuda.threadIdx.x)",
            f"    base = {lo.row_base('int32(cuda.blockIdx.x)', C, I)}",
            f"    xb = {ix(f'{i(x_off)} + base')}",
            f"    yb = {ix(f'{i(y_off)} + base')}",
            f"    m = {f32(-math.inf)}",
            f"    for c in range(t, {ix(i(C))}, {ix(i(T))}):",
            f"        m = max(m, A[{at('xb')}])",
            "    red[t] = m",
            "    cuda.syncthreads()",
            *["    " + l for l in lo.tree("red", "max({a}, {b})", T)],
            "    m = red[0]",
            "    cuda.syncthreads()",          # all have read red[0] before it is overwritten
            f"    s = {ZERO}",
            f"    for c in range(t, {ix(i(C))}, {ix(i(T))}):",
            f"        e = math.exp(A[{at('xb')}] - m)",
            f"        A[{at('yb')}] = e",
            "        s += e",
            "    red[t] = s",
            "    cuda.syncthreads()",
            *["    " + l for l in lo.tree("red", "{a} + {b}", T)],
            f"    s = {ONE} / red[0]",
            f"    for c in range(t, {ix(i(C))}, {ix(i(T))}):",
            f"        A[{at('yb')}] *= s"]
        text = lo.index_math("\n".join(lines) + "\n")
        return lo.step([n], [Launch(lo.register("softmaxrow", text), (rows, 1, 1), (T, 1, 1), T * 4)])
