"""Upsample: nearest-neighbour enlargement, the Caffe fork layer of YOLOv3 and segmentation ports.

`upsample_param { scale: 2 }` (or `scale_h` / `scale_w`) multiplies the spatial size;
`upsample_h` / `upsample_w` give the output size instead. Output pixel (y, x) copies input pixel
(y * H // OH, x * W // OW): for an integer scale s that is (y // s, x // s), PyTorch's
`interpolate(mode="nearest")`.
"""
from __future__ import annotations

from fractions import Fraction

from ..errors import NetcError
from .base import Layer, Param, register, require_4d


@register
class Upsample(Layer):
    type = "Upsample"
    messages = ("upsample_param",)
    params = (Param("scale", default=2, positive=True), Param("scale_h", positive=True),
              Param("scale_w", positive=True), Param("upsample_h", positive=True),
              Param("upsample_w", positive=True))
    family = "shape"
    short = "upsample"
    cost = "no arithmetic: one copy per output element"

    def normalize(self, a, loc):
        if (a["upsample_h"] is None) != (a["upsample_w"] is None):
            raise NetcError('"upsample_h" and "upsample_w" must be given together', loc)
        if (a["scale_h"] is None) != (a["scale_w"] is None):
            raise NetcError('"scale_h" and "scale_w" must be given together', loc)
        return a

    def out_hw(self, shape, a) -> tuple[int, int]:
        if a["upsample_h"] is not None:
            return a["upsample_h"], a["upsample_w"]
        sh, sw = (a["scale_h"], a["scale_w"]) if a["scale_h"] is not None else (a["scale"], a["scale"])
        return shape[2] * sh, shape[3] * sw

    def shapes(self, ins, a, loc):
        require_4d(self, ins[0], loc)
        oh, ow = self.out_hw(ins[0], a)
        return [(*ins[0][:2], oh, ow)]

    def receptive(self, rf, ins, a):
        """Each output pixel copies one input pixel: the size stays, the jump shrinks by the
        scale (fractional when the output size is not a multiple of the input's)."""
        out = self.out_hw(ins[0], a)
        return [(r, j * Fraction(size, o)) for (r, j), size, o in zip(rf, ins[0][2:], out)]

    def brief(self, a):
        if a["upsample_h"] is not None:
            return f"nearest \u2192{a['upsample_h']}x{a['upsample_w']}"
        if a["scale_h"] is not None and a["scale_h"] != a["scale_w"]:
            return f"nearest \u00d7{a['scale_h']}x{a['scale_w']}"
        return f"nearest \u00d7{a['scale_h'] or a['scale']}"

    def reference(self, torch, xs, a, p, node):
        return [torch.nn.functional.interpolate(xs[0], size=tuple(node["shapes"][0][2:]), mode="nearest")]

    def lower_cpu(self, lo, n):
        from ..codegen.cpu_kit import i
        d, a, (N, C, H, W), (_, _, OH, OW) = lo.io(n)
        extra, _, acts = lo.absorb(n, fold=False)
        out = (extra or [n])[-1]
        x, y = lo.view(d["inputs"][0], (N * C, H, W)), lo.view((out, 0), (N * C, OH, OW))
        k = lo.kernel("upsample", f"""
            def NAME(x, y):
                for r in prange({i(N * C)}):
                    for oy in range({i(OH)}):
                        iy = oy * {i(H)} // {i(OH)}
                        for ox in range({i(OW)}):
                            v = x[r, iy, ox * {i(W)} // {i(OW)}]
ACTS
                            y[r, oy, ox] = v
            """, N * C * OH * OW, acts)
        lo.step([n, *extra], [f"{k}({x}, {y})"])
        return [n, *extra]

    def lower_cuda(self, lo, n):
        from ..codegen.cuda_kit import i, split_index, udiv, ux
        d, a, (N, C, H, W), (_, _, OH, OW) = lo.io(n)
        extra, _, acts, out = lo.fused(n, fold=False)
        x_off = lo.addr(d["inputs"][0])
        iy, ix_ = udiv(f"oy * {i(H)}", i(OH)), udiv(f"ox * {i(W)}", i(OW))
        body = "\n".join(split_index("i", [("r", N * C), ("oy", OH), ("ox", OW)]) + [
            f"v = A[{ux(i(x_off), f'r * {i(H * W)}', f'{iy} * {i(W)}', ix_)}]",
            "ACTS", f"A[{lo.out_at(out)}] = v"])
        return lo.step([n, *extra], [lo.elementwise("upsample", body, N * C * OH * OW, acts)])
