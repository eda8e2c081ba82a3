"""SPP: spatial pyramid pooling (spp_layer.cpp, He et al. 2014). Level l pools the map into
2^l x 2^l bins: kernel ceil(H / bins), stride the kernel, pad (kernel * bins - H + 1) / 2, with
Caffe's pooling rules (ceil rounding, the clip rule, AVE counting padding up to H + pad); each
level is flattened and the levels concatenated: [N, C * (1 + 4 + 16 + ...)]. With one level
the output is that pooling's [N, C, 1, 1], as Caffe leaves it."""
from __future__ import annotations

import math

from ..errors import NetcError
from .base import Layer, Ops, Param, numel, register, require_4d
from .pool import POOL_METHODS, Pooling, pooled_size


@register
class SPP(Layer):
    type = "SPP"
    cost = "per level: as its Pooling (MAX: a comparison per window element; AVE: an add, and a divide per bin)"
    messages = ("spp_param",)
    params = (Param("pyramid_height", positive=True), Param("pool", "enum", "MAX", choices=POOL_METHODS))
    family = "pool"
    short = "spp"

    def normalize(self, a, loc):
        if a["pyramid_height"] is None:
            raise NetcError('SPP needs "pyramid_height"', loc)
        if a["pool"] == "STOCHASTIC":
            raise NetcError("SPP with STOCHASTIC pooling has no inference form", loc)
        return a

    def levels(self, shape, a) -> list[tuple]:
        """Per level: ((kh, kw), (ph, pw), (oh, ow)) as spp_layer.cpp sets its poolings up."""
        out = []
        for level in range(a["pyramid_height"]):
            bins = 2 ** level
            k = [math.ceil(size / bins) for size in shape[2:]]
            p = [(kk * bins - size + 1) // 2 for kk, size in zip(k, shape[2:])]
            o = [pooled_size(size, kk, kk, pp, True, any(p)) for size, kk, pp in zip(shape[2:], k, p)]
            out.append((tuple(k), tuple(p), tuple(o)))
        return out

    def shapes(self, ins, a, loc):
        require_4d(self, ins[0], loc)
        n, c = ins[0][:2]
        levels = self.levels(ins[0], a)
        if len(levels) == 1:
            return [(n, c, *levels[0][2])]
        return [(n, c * sum(o[0] * o[1] for _, _, o in levels))]

    def ops(self, ins, outs, a):
        n, c = ins[0][:2]
        window = sum(n * c * o[0] * o[1] * k[0] * k[1] for k, _, o in self.levels(ins[0], a))
        bins = sum(n * c * o[0] * o[1] for _, _, o in self.levels(ins[0], a))
        return Ops(comp=window) if a["pool"] == "MAX" else Ops(add=window, div=bins)

    def _windows(self, shape, a):
        """Per level and bin: (level offset, oh, ow, hs, he, ws, we, divisor) in Caffe's terms."""
        (_, _, H, W) = shape
        offset = 0
        for (kh, kw), (ph, pw), (OH, OW) in self.levels(shape, a):
            yield offset, kh, kw, ph, pw, OH, OW
            offset += OH * OW

    def reference(self, torch, xs, a, p, node):
        x = xs[0]
        N, C, H, W = x.shape
        parts = []
        for _, kh, kw, ph, pw, OH, OW in self._windows(tuple(x.shape), a):
            y = torch.empty((N, C, OH, OW), dtype=x.dtype)
            for oh in range(OH):
                for ow in range(OW):
                    hs, ws = oh * kh - ph, ow * kw - pw
                    he, we = min(hs + kh, H + ph), min(ws + kw, W + pw)
                    win = x[:, :, max(hs, 0):min(he, H), max(ws, 0):min(we, W)]
                    if win.numel() == 0:      # a bin wholly in the padding: Caffe's initial values
                        y[:, :, oh, ow] = -3.4028234663852886e38 if a["pool"] == "MAX" else 0.0
                    else:
                        y[:, :, oh, ow] = (win.amax((2, 3)) if a["pool"] == "MAX"
                                           else win.sum((2, 3)) / ((he - hs) * (we - ws)))
            parts.append(y)
        if len(parts) == 1:
            return parts
        return [torch.cat([t.reshape(N, -1) for t in parts], 1)]

    def onnx(self, b, n, d, ins):
        shape = d["in_shapes"][0]
        outs = []
        for level, (_, kh, kw, ph, pw, OH, OW) in enumerate(self._windows(shape, d["attrs"])):
            pool = {**d, "tops": [n], "shapes": [(*shape[:2], OH, OW)],
                    "attrs": {"pool": d["attrs"]["pool"], "kernel": (kh, kw), "stride": (kh, kw), "pad": (ph, pw),
                              "global_pooling": False, "round_mode": "CEIL"}}
            y = Pooling().onnx(b, f"{n}/level{level}", pool, ins)[0]
            outs.append(y)
        if len(outs) == 1:
            return outs
        flat = [b.node("Flatten", [y], name=n, axis=1)[0] for y in outs]
        return b.node("Concat", flat, name=n, axis=1)

    def lower_cpu(self, lo, n):
        from ..codegen.cpu_kit import i
        d, a = lo.g.nodes[n], lo.g.nodes[n]["attrs"]
        N, C, H, W = d["in_shapes"][0]
        total = numel(d["shapes"][0][1:]) // C
        x, y = lo.view(d["inputs"][0], (N * C, H, W)), lo.view((n, 0), (N, C * total))
        lines = []
        for off, kh, kw, ph, pw, OH, OW in self._windows((N, C, H, W), a):
            init, acc = (("m = np.float32(-3.4028234663852886e38)", "m = max(m, x[r, ih, iw])") if a["pool"] == "MAX"
                         else ("m = Z", "m += x[r, ih, iw]"))
            fin = "m" if a["pool"] == "MAX" else "m / np.float32((he - hs) * (we - ws))"
            k = lo.kernel("spp", f"""
                def NAME(x, y):
                    for r in prange({i(N * C)}):
                        n = r // {i(C)}
                        c = r % {i(C)}
                        for oh in range({i(OH)}):
                            hs = oh * {i(kh)} - {i(ph)}
                            he = min(hs + {i(kh)}, {i(H + ph)})
                            for ow in range({i(OW)}):
                                ws = ow * {i(kw)} - {i(pw)}
                                we = min(ws + {i(kw)}, {i(W + pw)})
                                {init}
                                for ih in range(max(hs, 0), min(he, {i(H)})):
                                    for iw in range(max(ws, 0), min(we, {i(W)})):
                                        {acc}
                                y[n, {i(off * C)} + c * {i(OH * OW)} + oh * {i(OW)} + ow] = {fin}
                """, N * C * OH * OW * kh * kw)
            lines.append(f"{k}({x}, {y})")
        lo.step([n], lines)
        return [n]

    def lower_cuda(self, lo, n):
        from ..codegen.cuda_kit import ZERO, i, split_index, ux
        d, a = lo.g.nodes[n], lo.g.nodes[n]["attrs"]
        N, C, H, W = d["in_shapes"][0]
        total = numel(d["shapes"][0][1:]) // C
        src, dst = lo.addr(d["inputs"][0]), lo.addr((n, 0))
        launches = []
        for off, kh, kw, ph, pw, OH, OW in self._windows((N, C, H, W), a):
            x = f"A[{ux(i(src), f'(n * {i(C)} + c) * {i(H * W)}', f'ih * {i(W)} + iw')}]"
            init, acc = (("m = float32(-3.4028234663852886e38)", f"m = max(m, {x})") if a["pool"] == "MAX"
                         else (f"m = {ZERO}", f"m += {x}"))
            fin = "m" if a["pool"] == "MAX" else "m / float32((he - hs) * (we - ws))"
            body = "\n".join(split_index("i", [("n", N), ("c", C), ("oh", OH), ("ow", OW)]) + [
                f"hs = oh * {i(kh)} - {i(ph)}", f"he = min(hs + {i(kh)}, {i(H + ph)})",
                f"ws = ow * {i(kw)} - {i(pw)}", f"we = min(ws + {i(kw)}, {i(W + pw)})", init,
                f"for ih in range(max(hs, 0), min(he, {i(H)})):",
                f"    for iw in range(max(ws, 0), min(we, {i(W)})):",
                f"        {acc}",
                f"A[{ux(i(dst), f'n * {i(C * total)}', f'{i(off * C)} + c * {i(OH * OW)} + oh * {i(OW)} + ow')}] = {fin}"])
            launches.append(lo.elementwise("spp", body, N * C * OH * OW))
        return lo.step([n], launches)
