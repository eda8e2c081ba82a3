"""Axpy: the SENet authors' fork layer, y = a * x + b with a per-(image, channel) gate a.

SE-ResNet's prototxts (hujie-frank/SENet) end each block with
`Axpy <- gate [N, C, 1, 1], residual x [N, C, H, W], shortcut b [N, C, H, W]`: the
squeeze-and-excitation scaling and the residual add in one layer (axpy_layer.cpp).
"""
from __future__ import annotations

from ..errors import NetcError
from .base import Layer, Ops, fmt_shape, numel, register


@register
class Axpy(Layer):
    type = "Axpy"
    cost = "per element: 1 multiply, 1 add"
    family = "merge"
    short = "axpy"
    min_inputs = max_inputs = 3

    def shapes(self, ins, a, loc):
        gate, x, b = ins
        if len(x) < 2 or x != b:
            raise NetcError(f"Axpy: x {fmt_shape(x)} and b {fmt_shape(b)} must have the same shape", loc)
        if tuple(gate[:2]) != tuple(x[:2]) or numel(gate) != x[0] * x[1]:
            raise NetcError(f"Axpy: the gate {fmt_shape(gate)} must hold one value per image and channel "
                            f"of {fmt_shape(x)} ([N, C, 1, 1])", loc)
        return [x]

    def ops(self, ins, outs, a):
        n = numel(outs[0])
        return Ops(mul=n, add=n)

    def onnx(self, b, n, d, ins):
        gate, x, shortcut = ins
        return b.node("Add", [b.node("Mul", [gate, x], name=n)[0], shortcut], name=n)

    def backward(self, dys, xs, ys, a, p, rule):
        gate, x, _ = xs
        dy = dys[0]
        g = gate.reshape(x.shape[0], x.shape[1], *([1] * (x.ndim - 2)))
        return [(dy * x).sum(axis=tuple(range(2, x.ndim))).reshape(gate.shape), dy * g, dy]

    def reference(self, torch, xs, a, p, node):
        gate, x, b = xs
        return [gate.reshape(x.shape[0], x.shape[1], *([1] * (x.dim() - 2))) * x + b]

    def lower_cpu(self, lo, n):
        from ..codegen.cpu_kit import i
        d = lo.g.nodes[n]
        N, C, S = lo.nc_s(d["shapes"][0])
        extra, _, acts = lo.absorb(n, fold=False)
        out = (extra or [n])[-1]
        g = lo.view(d["inputs"][0], (N, C))
        x, b = (lo.view(k, (N, C, S)) for k in d["inputs"][1:])
        y = lo.view((out, 0), (N, C, S))
        k = lo.kernel("axpy", f"""
            def NAME(g, x, b, y):
                for r in prange({i(N * C)}):
                    n = r // {i(C)}
                    c = r % {i(C)}
                    s = g[n, c]
                    for j in range({i(S)}):
                        v = s * x[n, c, j] + b[n, c, j]
ACTS
                        y[n, c, j] = v
            """, N * C * S * 2, acts)
        lo.step([n, *extra], [f"{k}({g}, {x}, {b}, {y})"])
        return [n, *extra]

    def lower_cuda(self, lo, n):
        from ..codegen.cuda_kit import i, udiv, ux
        d = lo.g.nodes[n]
        N, C, S = lo.nc_s(d["shapes"][0])
        extra, _, acts, out = lo.fused(n, fold=False)
        g, x, b = (lo.addr(k) for k in d["inputs"])
        body = "\n".join([
            f"v = A[{ux(i(g), udiv('i', i(S)))}] * A[{ux(i(x), 'i')}] + A[{ux(i(b), 'i')}]",
            "ACTS", f"A[{lo.out_at(out)}] = v"])
        return lo.step([n, *extra], [lo.elementwise("axpy", body, N * C * S, acts)])
