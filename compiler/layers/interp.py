"""Interp: bilinear resizing, the fork layer of DeepLab, PSPNet and the residual attention nets.

Output size (interp_layer.cpp), from the input cropped by pad_beg/pad_end (zero or negative):
`height`/`width` given; or `zoom_factor` z: H' = H + (H - 1)(z - 1); or `shrink_factor` s:
H' = (H - 1) / s + 1; both: shrink, then zoom; or a second bottom's spatial size. Values are
Caffe's caffe_cpu_interp2, corner-aligned (PyTorch's align_corners=True): output row y reads
input row y * (H - 1) / (H' - 1) and the next, weighted by the fraction.
"""
from __future__ import annotations

from fractions import Fraction

from ..errors import NetcError
from .base import Layer, Ops, Param, fmt_shape, numel, register, require_4d


def _tables(size_in: int, size_out: int, start: int):
    """Per output index: (first source index, second, weight of the second), in float32 as
    Caffe computes them (a float32 ratio times the index)."""
    import numpy as np
    ratio = np.float32(size_in - 1) / np.float32(size_out - 1) if size_out > 1 else np.float32(0)
    pos = (ratio * np.arange(size_out, dtype=np.float32)).astype(np.float32)
    lo = np.floor(pos).astype(np.int64)
    hi = lo + (lo < size_in - 1)
    return (lo + start).astype(np.float64), (hi + start).astype(np.float64), (pos - lo).astype(np.float64)


@register
class Interp(Layer):
    type = "Interp"
    no_gradient_inputs = (1,)     # the second input only gives the output size
    cost = "per output element: 4 multiplies, 3 adds (bilinear)"
    messages = ("interp_param",)
    params = (Param("height", positive=True), Param("width", positive=True),
              Param("zoom_factor", positive=True), Param("shrink_factor", positive=True),
              Param("pad_beg", default=0, min=None), Param("pad_end", default=0, min=None))
    family = "shape"
    short = "interp"
    max_inputs = 2

    def normalize(self, a, loc):
        if (a["height"] is None) != (a["width"] is None):
            raise NetcError('Interp: "height" and "width" go together', loc)
        if a["pad_beg"] > 0 or a["pad_end"] > 0:
            raise NetcError("Interp: pad_beg and pad_end crop (zero or negative), as in interp_layer.cpp", loc)
        return a

    def out_hw(self, ins, a, loc=None) -> tuple[int, int]:
        h, w = (s + a["pad_beg"] + a["pad_end"] for s in ins[0][2:])
        if h < 1 or w < 1:
            raise NetcError(f"Interp: pad_beg/pad_end crop all of {fmt_shape(ins[0])}", loc)
        if len(ins) == 2:
            return tuple(ins[1][2:4])
        if a["height"] is not None:
            return a["height"], a["width"]
        if a["shrink_factor"] is not None:
            h, w = (h - 1) // a["shrink_factor"] + 1, (w - 1) // a["shrink_factor"] + 1
        if a["zoom_factor"] is not None:
            h, w = h + (h - 1) * (a["zoom_factor"] - 1), w + (w - 1) * (a["zoom_factor"] - 1)
        if a["shrink_factor"] is None and a["zoom_factor"] is None:
            raise NetcError("Interp needs height and width, zoom_factor, shrink_factor or a second input", loc)
        return h, w

    def shapes(self, ins, a, loc):
        require_4d(self, ins[0], loc)
        if len(ins) == 2 and len(ins[1]) != 4:
            raise NetcError(f"Interp: the second input {fmt_shape(ins[1])} gives the size: it must be 4-D", loc)
        oh, ow = self.out_hw(ins, a, loc)
        return [(*ins[0][:2], oh, ow)]

    def ops(self, ins, outs, a):
        n = numel(outs[0])
        return Ops(mul=4 * n, add=3 * n)

    def receptive(self, rf, ins, a):
        """Two input pixels per axis feed each output pixel: the size grows by one jump; the
        jump scales by the input-to-output ratio (corner-aligned)."""
        out = self.out_hw(ins, a)
        size = [s + a["pad_beg"] + a["pad_end"] for s in ins[0][2:]]
        return [(r + j, j * (Fraction(s - 1, o - 1) if o > 1 else 1)) for (r, j), s, o in zip(rf, size, out)]

    def brief(self, a):
        if a["height"] is not None:
            return f"bilinear \u2192{a['height']}x{a['width']}"
        if a["zoom_factor"] is not None:
            return f"bilinear \u00d7{a['zoom_factor']}"
        return f"bilinear /{a['shrink_factor']}" if a["shrink_factor"] is not None else "bilinear"

    def backward(self, dys, xs, ys, a, p, rule):
        """The forward is R_h x R_w^T per plane (align_corners bilinear weights over the
        cropped input), so dx = R_h^T dy R_w, put back where the crop came from."""
        import numpy as np
        x, dy = xs[0], dys[0]
        H, W = x.shape[2:]
        pb, pe = a["pad_beg"], a["pad_end"]
        hc, wc = H + pb + pe, W + pb + pe

        def weights(size, out):
            r = np.zeros((out, size), np.float32)
            for o in range(out):
                src = o * (size - 1) / (out - 1) if out > 1 else 0.0
                i0 = min(int(np.floor(src)), size - 1)
                i1 = min(i0 + 1, size - 1)
                f = src - i0
                r[o, i0] += 1 - f
                r[o, i1] += f
            return r
        rh, rw = weights(hc, dy.shape[2]), weights(wc, dy.shape[3])
        dx = np.zeros_like(x)
        dx[:, :, -pb:H + pe, -pb:W + pe] = np.matmul(np.matmul(rh.T, dy), rw)
        return [dx]

    def reference(self, torch, xs, a, p, node):
        x = xs[0]
        pb, pe = a["pad_beg"], a["pad_end"]
        x = x[:, :, -pb:x.shape[2] + pe, -pb:x.shape[3] + pe]
        return [torch.nn.functional.interpolate(x, size=tuple(node["shapes"][0][2:]), mode="bilinear",
                                                align_corners=True)]

    def onnx(self, b, n, d, ins):
        import numpy as np
        from .upsample import resize
        a, x = d["attrs"], ins[0]
        pb, pe = a["pad_beg"], a["pad_end"]
        if pb or pe:
            h, w = d["in_shapes"][0][2:]
            x = b.node("Slice", [x, b.const(f"{n}_starts", [-pb, -pb], np.int64),
                                 b.const(f"{n}_ends", [h + pe, w + pe], np.int64), b.const(f"{n}_axes", [2, 3], np.int64)],
                       name=n)[0]
            d = {**d, "in_shapes": [(*d["in_shapes"][0][:2], h + pb + pe, w + pb + pe)]}
        return resize(b, n, d, x, mode="linear", coordinate_transformation_mode="align_corners")

    def _params(self, lo, n):
        d = lo.g.nodes[n]
        (N, C, H, W), (_, _, OH, OW) = d["in_shapes"][0], d["shapes"][0]
        pb, pe = d["attrs"]["pad_beg"], d["attrs"]["pad_end"]
        rows = _tables(H + pb + pe, OH, -pb)
        cols = _tables(W + pb + pe, OW, -pb)
        return (N, C, H, W, OH, OW), rows, cols

    def lower_cpu(self, lo, n):
        from ..codegen.cpu_kit import i
        d = lo.g.nodes[n]
        (N, C, H, W, OH, OW), rows, cols = self._params(lo, n)
        extra, _, acts = lo.absorb(n, fold=False)
        out = (extra or [n])[-1]
        y0, y1, fy = (lo.param(t) for t in rows)
        x0, x1, fx = (lo.param(t) for t in cols)
        x, y = lo.view(d["inputs"][0], (N * C, H, W)), lo.view((out, 0), (N * C, OH, OW))
        k = lo.kernel("interp", f"""
            def NAME(x, y0, y1, fy, x0, x1, fx, y):
                for r in prange({i(N * C)}):
                    for oy in range({i(OH)}):
                        a0 = int(y0[oy])
                        a1 = int(y1[oy])
                        b = fy[oy]
                        for ox in range({i(OW)}):
                            c0 = int(x0[ox])
                            c1 = int(x1[ox])
                            e = fx[ox]
                            v = (ONE - b) * ((ONE - e) * x[r, a0, c0] + e * x[r, a0, c1]) + \\
                                b * ((ONE - e) * x[r, a1, c0] + e * x[r, a1, c1])
ACTS
                            y[r, oy, ox] = v
            """, N * C * OH * OW * 8, acts)
        lo.step([n, *extra], [f"{k}({x}, {y0}, {y1}, {fy}, {x0}, {x1}, {fx}, {y})"])
        return [n, *extra]

    def lower_cuda(self, lo, n):
        from ..codegen.cuda_kit import ONE, i, split_index, ux
        d = lo.g.nodes[n]
        (N, C, H, W, OH, OW), rows, cols = self._params(lo, n)
        extra, _, acts, out = lo.fused(n, fold=False)
        (y0, y1, fy), (x0, x1, fx) = ([lo.param_offset(t) for t in ts] for ts in (rows, cols))
        src = lo.addr(d["inputs"][0])

        def at(row, col):
            return f"A[{ux(i(src), f'r * {i(H * W)}', f'{row} * {i(W)}', col)}]"
        body = "\n".join(split_index("i", [("r", N * C), ("oy", OH), ("ox", OW)]) + [
            f"a0 = int(P[{ux(i(y0), 'oy')}])", f"a1 = int(P[{ux(i(y1), 'oy')}])", f"b = P[{ux(i(fy), 'oy')}]",
            f"c0 = int(P[{ux(i(x0), 'ox')}])", f"c1 = int(P[{ux(i(x1), 'ox')}])", f"e = P[{ux(i(fx), 'ox')}]",
            f"v = ({ONE} - b) * (({ONE} - e) * {at('a0', 'c0')} + e * {at('a0', 'c1')}) + "
            f"b * (({ONE} - e) * {at('a1', 'c0')} + e * {at('a1', 'c1')})",
            "ACTS", f"A[{lo.out_at(out)}] = v"])
        return lo.step([n, *extra], [lo.elementwise("interp", body, N * C * OH * OW, acts)])
