"""Upsample: nearest-neighbour enlargement, the Caffe fork layer of YOLOv3 and segmentation ports,
or with a second input SegNet's (and ENet's) unpooling.

`upsample_param { scale: 2 }` (or `scale_h` / `scale_w`) multiplies the spatial size;
`upsample_h` / `upsample_w` give the output size instead. Output pixel (y, x) copies input pixel
(y * H // OH, x * W // OW): for an integer scale s that is (y // s, x // s), PyTorch's
`interpolate(mode="nearest")`.

With two inputs (caffe-segnet's upsample_layer.cpp) the second is a MAX pooling's mask top:
each input value goes to the output position its mask names (h * W + w in its plane), every
other position is zero; the size is scale x H, less one where pad_out_h / pad_out_w say, or
upsample_h x upsample_w.
"""
from __future__ import annotations

from fractions import Fraction

from ..errors import NetcError
from .base import Layer, Ops, Param, fmt_shape, numel, register, require_4d


def resize(b, n, d, x, **attrs) -> list[str]:
    """ONNX Resize to the analyzed size: `sizes` for a fixed batch, `scales` for a symbolic one."""
    import numpy as np
    (N, C, H, W), (_, _, OH, OW) = d["in_shapes"][0], d["shapes"][0]
    if b.dynamic:
        args = [x, "", b.const(f"{n}_scales", [1, 1, OH / H, OW / W])]
    else:
        args = [x, "", "", b.const(f"{n}_sizes", [N, C, OH, OW], np.int64)]
    return b.node("Resize", args, name=n, **attrs)


@register
class Upsample(Layer):
    type = "Upsample"
    no_gradient_inputs = (1,)     # SegNet's mask: argmax indices
    messages = ("upsample_param",)
    params = (Param("scale", default=2, positive=True), Param("scale_h", positive=True),
              Param("scale_w", positive=True), Param("upsample_h", positive=True),
              Param("upsample_w", positive=True), Param("pad_out_h", "bool", False),
              Param("pad_out_w", "bool", False))
    family = "shape"
    max_inputs = 2
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
        return shape[2] * sh - int(a["pad_out_h"]), shape[3] * sw - int(a["pad_out_w"])

    def shapes(self, ins, a, loc):
        require_4d(self, ins[0], loc)
        if len(ins) == 2 and tuple(ins[1]) != tuple(ins[0]):
            raise NetcError(f"Upsample: the mask {fmt_shape(ins[1])} must have the input's shape {fmt_shape(ins[0])}", loc)
        oh, ow = self.out_hw(ins[0], a)
        return [(*ins[0][:2], oh, ow)]

    def ops(self, ins, outs, a):
        return Ops()

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

    def backward(self, dys, xs, ys, a, p, rule):
        """Nearest: each input pixel sums the outputs copied from it; unpooling: each input
        value reads the output position its mask names (the mask gets no gradient)."""
        import numpy as np
        x, dy = xs[0], dys[0]
        n, c, h, w = x.shape
        oh, ow = dy.shape[2:]
        if len(xs) == 2:
            where = xs[1].reshape(n * c, -1).astype(np.int64)
            return [np.take_along_axis(dy.reshape(n * c, -1), where, 1).reshape(x.shape), None]
        dx = np.zeros((n * c, h, w), np.float32)
        rows, cols = np.arange(oh) * h // oh, np.arange(ow) * w // ow
        np.add.at(dx, (slice(None), rows[:, None], cols[None, :]), dy.reshape(n * c, oh, ow))
        return [dx.reshape(x.shape)]

    def reference(self, torch, xs, a, p, node):
        if len(xs) == 2:
            x, mask = xs
            n, c = x.shape[:2]
            y = torch.zeros((n, c, numel(node["shapes"][0][2:])), dtype=x.dtype)
            y.scatter_(2, mask.reshape(n, c, -1).long(), x.reshape(n, c, -1))
            return [y.reshape(node["shapes"][0])]
        return [torch.nn.functional.interpolate(xs[0], size=tuple(node["shapes"][0][2:]), mode="nearest")]

    def onnx(self, b, n, d, ins):
        """Resize, nearest, Caffe's (y * H // OH): asymmetric coordinates rounded down."""
        if len(ins) == 2:
            raise NetcError(f'layer "{n}": SegNet\'s unpooling (a mask input) has no ONNX form netc writes', d["loc"])
        return resize(b, n, d, ins[0], mode="nearest", coordinate_transformation_mode="asymmetric",
                      nearest_mode="floor")

    def _unpool_cpu(self, lo, n):
        from ..codegen.cpu_kit import i
        d, a, (N, C, H, W), (_, _, OH, OW) = lo.io(n)
        x, mask = (lo.view(k, (N * C, H * W)) for k in d["inputs"])
        y = lo.view((n, 0), (N * C, OH * OW))
        k = lo.kernel("unpool", f"""
            def NAME(x, mask, y):
                for r in prange({i(N * C)}):
                    for j in range({i(OH * OW)}):
                        y[r, j] = Z
                    for j in range({i(H * W)}):
                        at = int(mask[r, j])
                        if at >= 0 and at < {i(OH * OW)}:
                            y[r, at] = x[r, j]
            """, N * C * (H * W + OH * OW))
        lo.step([n], [f"{k}({x}, {mask}, {y})"])
        return [n]

    def _unpool_cuda(self, lo, n):
        from ..codegen.cuda_kit import ZERO, i, udiv, ux
        d, a, (N, C, H, W), (_, _, OH, OW) = lo.io(n)
        x, mask = (lo.addr(k) for k in d["inputs"])
        y = lo.addr((n, 0))
        clear = lo.elementwise("unpool_clear", f"A[{ux(i(y), 'i')}] = {ZERO}", N * C * OH * OW)
        plane = f"{udiv('i', i(H * W))} * {i(OH * OW)}"
        body = "\n".join([f"at = int(A[{ux(i(mask), 'i')}])",
                           f"if at >= 0 and at < {i(OH * OW)}:",
                           f"    A[{ux(i(y), plane, 'at')}] = A[{ux(i(x), 'i')}]"])
        return lo.step([n], [clear, lo.elementwise("unpool", body, N * C * H * W)])

    def lower_cpu(self, lo, n):
        from ..codegen.cpu_kit import i
        if len(lo.g.nodes[n]["inputs"]) == 2:
            return self._unpool_cpu(lo, n)
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
        if len(lo.g.nodes[n]["inputs"]) == 2:
            return self._unpool_cuda(lo, n)
        d, a, (N, C, H, W), (_, _, OH, OW) = lo.io(n)
        extra, _, acts, out = lo.fused(n, fold=False)
        x_off = lo.addr(d["inputs"][0])
        iy, ix_ = udiv(f"oy * {i(H)}", i(OH)), udiv(f"ox * {i(W)}", i(OW))
        body = "\n".join(split_index("i", [("r", N * C), ("oy", OH), ("ox", OW)]) + [
            f"v = A[{ux(i(x_off), f'r * {i(H * W)}', f'{iy} * {i(W)}', ix_)}]",
            "ACTS", f"A[{lo.out_at(out)}] = v"])
        return lo.step([n, *extra], [lo.elementwise("upsample", body, N * C * OH * OW, acts)])
