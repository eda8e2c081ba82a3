"""Tile: BVLC's tile_layer.cpp, the input repeated `tiles` times along `axis`.

Output [..., tiles * D, ...]: for each index before `axis`, the block from `axis` on copied
`tiles` times in a row (numpy's np.tile along one axis).
"""
from __future__ import annotations

from ..errors import NetcError
from .base import Layer, Param, fmt_shape, numel, register


@register
class Tile(Layer):
    type = "Tile"
    cost = "no arithmetic: one copy per output element"
    messages = ("tile_param",)
    params = (Param("axis", default=1, min=None), Param("tiles", positive=True))
    family = "shape"
    short = "tile"

    def normalize(self, a, loc):
        if a["tiles"] is None:
            raise NetcError('Tile needs "tiles"', loc)
        return a

    def _split(self, shape, a):
        ax = a["axis"] % len(shape)
        return ax, numel(shape[:ax]), numel(shape[ax:])

    def shapes(self, ins, a, loc):
        s = ins[0]
        if not -len(s) <= a["axis"] < len(s):
            raise NetcError(f"Tile: axis {a['axis']} out of range for {fmt_shape(s)}", loc)
        ax = a["axis"] % len(s)
        return [(*s[:ax], s[ax] * a["tiles"], *s[ax + 1:])]

    def brief(self, a):
        return f"\u00d7{a['tiles']} on axis {a['axis']}"

    def backward(self, dys, xs, ys, a, p, rule):
        x = xs[0]
        ax = a["axis"] % x.ndim
        return [dys[0].reshape(*x.shape[:ax], a["tiles"], -1).sum(axis=ax).reshape(x.shape)]

    def reference(self, torch, xs, a, p, node):
        x = xs[0]
        ax = a["axis"] % x.dim()
        outer = x.reshape(*x.shape[:ax], 1, -1).repeat(*([1] * ax), a["tiles"], 1)
        return [outer.reshape(node["shapes"][0])]

    def onnx(self, b, n, d, ins):
        import numpy as np
        s, a = d["in_shapes"][0], d["attrs"]
        ax, outer, inner = self._split(s, a)
        flat = b.node("Reshape", [ins[0], b.const(f"{n}_rows", [*s[:ax], 1, inner], np.int64)], name=n)[0]
        tiled = b.node("Tile", [flat, b.const(f"{n}_repeats", [1] * ax + [a["tiles"], 1], np.int64)], name=n)[0]
        return b.node("Reshape", [tiled, b.const(f"{n}_shape", list(d["shapes"][0]), np.int64)], name=n)

    def lower_cpu(self, lo, n):
        d, a = lo.g.nodes[n], lo.g.nodes[n]["attrs"]
        _, outer, inner = self._split(d["in_shapes"][0], a)
        x = lo.view(d["inputs"][0], (outer, 1, inner))
        y = lo.view((n, 0), (outer, a["tiles"], inner))
        lo.step([n], [f"np.copyto({y}, {x})"])     # broadcasts the block over the tiles
        return [n]

    def lower_cuda(self, lo, n):
        from ..codegen.cuda_kit import i, udiv, umod, ux
        d, a = lo.g.nodes[n], lo.g.nodes[n]["attrs"]
        _, outer, inner = self._split(d["in_shapes"][0], a)
        src = lo.addr(d["inputs"][0])
        row = udiv("i", i(a["tiles"] * inner))
        body = f"A[{lo.out_at((n, 0))}] = A[{ux(i(src), f'{row} * {i(inner)}', umod('i', i(inner)))}]"
        return lo.step([n], [lo.elementwise("tile", body, outer * a["tiles"] * inner)])
