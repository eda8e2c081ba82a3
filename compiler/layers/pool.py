"""Pooling with Caffe's rounding: ceil by default, and the clip rule that drops a last window
starting inside the padding. LRN lives here too: both slide a window, neither has weights.

Kernels: one numba loop nest (CPU) and one thread per output (CUDA) per layer.
"""
from __future__ import annotations

from ..errors import NetcError, SoftShapeError
from .base import Layer, Ops, Param, fmt_shape, numel, register, require_4d, write_pair

POOL_METHODS = ("MAX", "AVE", "STOCHASTIC")


def pooled_size(size: int, k: int, s: int, p: int, ceil: bool, any_pad: bool | None = None) -> int:
    """Caffe PoolingLayer::Reshape, in exact integer arithmetic. The clip rule runs on both axes
    when either has padding (`if (pad_h_ || pad_w_)`), each with its own pad: `any_pad`."""
    span = size + 2 * p - k
    out = (-(-span // s) if ceil else span // s) + 1
    if (p if any_pad is None else any_pad) and (out - 1) * s >= size + p:
        out -= 1  # the last window would start in the padding: Caffe clips it
    return out


def spatial_pads(size: int, k: int, s: int, p: int, out: int) -> tuple[int, int]:
    """(begin, end) padding for which floor-mode pooling gives Caffe's `out` windows: the end
    pad reaches the last window's end (Caffe's ceil-mode overhang), never below zero."""
    return p, max(0, (out - 1) * s + k - size - p)


@register
class Pooling(Layer):
    type = "Pooling"
    cost = "MAX: kh x kw comparisons per output; AVE: kh x kw adds + 1 divide per output"
    aliases = ("POOLING", "Pool")
    messages = ("pooling_param",)
    params = (
        Param("pool", "enum", "MAX", choices=POOL_METHODS),
        Param("kernel_size", positive=True), Param("kernel_h", positive=True), Param("kernel_w", positive=True),
        Param("stride", default=1, positive=True), Param("stride_h", positive=True), Param("stride_w", positive=True),
        Param("pad", default=0), Param("pad_h"), Param("pad_w"),
        Param("global_pooling", "bool", False),
        Param("round_mode", "enum", "CEIL", choices=("CEIL", "FLOOR")),
        Param("exclude_pad", "bool", False,
              doc="netc: AVE divides by the taps inside the input (ONNX count_include_pad=0, Keras)"),
    )
    family = "pool"
    short = "pool"
    optional_outputs = 1     # MAX pooling's second top: where each max came from (SegNet, ENet)
    # DenseNet/DPN/WRN ports were made with a Caffe fork that spells round_mode this way
    respelled = {"ceil_mode": ("round_mode", {"true": "CEIL", "false": "FLOOR"})}

    def normalize(self, a, loc):
        def pair(name, h, w):
            if a[h] is not None or a[w] is not None:
                if a[h] is None or a[w] is None:
                    raise NetcError(f'"{h}" and "{w}" must be given together', loc)
                return (a[h], a[w])
            return None if a[name] is None else (a[name], a[name])

        kernel = pair("kernel_size", "kernel_h", "kernel_w")
        if a["global_pooling"]:
            if kernel is not None:
                raise NetcError("global_pooling takes its kernel from the input: drop kernel_size", loc)
        elif kernel is None:
            raise NetcError('Pooling needs "kernel_size" (or global_pooling: true)', loc)
        stride, pad = pair("stride", "stride_h", "stride_w"), pair("pad", "pad_h", "pad_w")
        if kernel is not None:
            for p, k in zip(pad, kernel):
                if p >= k:
                    raise NetcError(f"Pooling pad {p} must be smaller than the kernel {k}", loc)
        return {"pool": a["pool"], "kernel": kernel, "stride": stride, "pad": pad,
                "global_pooling": a["global_pooling"], "round_mode": a["round_mode"],
                "exclude_pad": bool(a["exclude_pad"]) and a["pool"] == "AVE" and any(pad or ())}

    def written_params(self, a):
        out = [("pool", a["pool"])]
        if a["global_pooling"]:
            out.append(("global_pooling", True))
        else:
            k = a["kernel"]
            out += [("kernel_size", k[0])] if k[0] == k[1] else [("kernel_h", k[0]), ("kernel_w", k[1])]
        out += write_pair("stride", "stride_h", "stride_w", a["stride"], 1)
        out += write_pair("pad", "pad_h", "pad_w", a["pad"], 0)
        if a["round_mode"] != "CEIL":
            out.append(("round_mode", a["round_mode"]))
        if a.get("exclude_pad"):
            out.append(("exclude_pad", True))
        return out

    def geometry(self, shape, a):
        """(kernel, stride, pad) actually used for this input."""
        if a["global_pooling"]:
            return (shape[2], shape[3]), (1, 1), (0, 0)
        return a["kernel"], a["stride"], a["pad"]

    def shapes(self, ins, a, loc):
        require_4d(self, ins[0], loc)
        n, c, h, w = ins[0]
        kernel, stride, pad = self.geometry(ins[0], a)
        out = [pooled_size(size, k, s, p, a["round_mode"] == "CEIL", any(pad))
               for size, k, s, p in zip((h, w), kernel, stride, pad)]
        if min(out) < 1:
            raise NetcError(f"Pooling kernel {kernel[0]}x{kernel[1]} leaves no output of its input "
                            f"{fmt_shape(ins[0])}", loc)
        y = (n, c, out[0], out[1])
        if any(size + 2 * p < k for size, k, p in zip((h, w), kernel, pad)):
            raise SoftShapeError(f"Pooling kernel {kernel[0]}x{kernel[1]} is larger than its input "
                                 f"{fmt_shape(ins[0])}", loc, [y, y], caffe_accepts=True)
        return [y, y]    # the output, and the mask a second top may ask for

    def check_outputs(self, ntops, a, loc):
        if ntops == 2 and a["pool"] != "MAX":
            raise NetcError(f"only MAX pooling has a second top (the argmax mask); this one is {a['pool']}", loc)

    def ops(self, ins, outs, a):
        kernel, _, _ = self.geometry(ins[0], a)
        window = numel(outs[0]) * kernel[0] * kernel[1]
        if a["pool"] == "MAX":
            return Ops(comp=window)
        return Ops(add=window, div=numel(outs[0]))

    def window(self, ins, a):
        kernel, stride, pad = self.geometry(ins[0], a)
        return tuple(zip(kernel, stride, pad))

    def brief(self, a):
        if a["global_pooling"]:
            return f"global {a['pool']}"
        k, s = a["kernel"], a["stride"]
        return f"{a['pool']} {k[0]}x{k[1]}" + (f"/{s[0]}" if s[0] != 1 else "")

    def onnx(self, b, n, d, ins):
        """MaxPool/AveragePool with Caffe's window count and divisor: floor mode with the end pad
        reaching Caffe's last (ceil-mode) window; AVE pads by `pad` explicitly first, so the
        divisor counts padding up to H + pad and never beyond, as pooling_layer.cpp does."""
        import numpy as np
        a, (N, C, H, W), (_, _, OH, OW) = d["attrs"], d["in_shapes"][0], d["shapes"][0]
        if len(d["tops"]) == 2:
            raise NetcError(f'layer "{n}": MAX pooling\'s mask top has no ONNX equivalent netc writes '
                            "(MaxPool's Indices count across channels)", d["loc"])
        if a["pool"] == "STOCHASTIC":
            raise NetcError(f'layer "{n}": STOCHASTIC pooling has no ONNX form', d["loc"])
        (KH, KW), (SH, SW), (PH, PW) = self.geometry((N, C, H, W), a)
        (hb, he), (wb, we) = spatial_pads(H, KH, SH, PH, OH), spatial_pads(W, KW, SW, PW, OW)
        if a["global_pooling"]:
            return b.node("GlobalMaxPool" if a["pool"] == "MAX" else "GlobalAveragePool", ins, name=n)
        if a["pool"] == "MAX":
            if max(hb, he) < KH and max(wb, we) < KW:
                return b.node("MaxPool", ins, name=n, kernel_shape=[KH, KW], strides=[SH, SW], pads=[hb, wb, he, we])
            # ONNX wants pads smaller than the kernel (SPP's finest levels are not): pad with the
            # lowest float first, the value a window wholly in Caffe's padding keeps
            lowest = b.const(f"{n}_lowest", -3.4028234663852886e38)
            x = b.node("Pad", [ins[0], b.const(f"{n}_pads", [0, 0, hb, wb, 0, 0, he, we], np.int64), lowest], name=n)[0]
            return b.node("MaxPool", [x], name=n, kernel_shape=[KH, KW], strides=[SH, SW])
        x = ins[0]
        if a.get("exclude_pad"):    # ONNX's own divisor: the taps inside the input
            return b.node("AveragePool", [x], name=n, kernel_shape=[KH, KW], strides=[SH, SW],
                          pads=[hb, wb, he, we], count_include_pad=0)
        pre = [min(PH, he), min(PW, we)]
        if PH or PW:
            x = b.node("Pad", [x, b.const(f"{n}_pads", [0, 0, PH, PW, 0, 0, pre[0], pre[1]], np.int64)], name=n)[0]
        return b.node("AveragePool", [x], name=n, kernel_shape=[KH, KW], strides=[SH, SW],
                      pads=[0, 0, he - pre[0], we - pre[1]], count_include_pad=0)

    def backward(self, dys, xs, ys, a, p, rule):
        """MAX: to the first largest input of each window (Caffe's routing); AVE: spread by the
        forward's divisor."""
        from ..codegen.grad_kit import ave_pool_back, max_pool_back
        if len(dys) > 1 and dys[1] is not None:
            return None                       # the mask top carries indices, not values
        x, dy = xs[0], dys[0]
        N, C, H, W = x.shape
        (KH, KW), (SH, SW), (PH, PW) = self.geometry(x.shape, a)
        dy3 = dy.reshape(N * C, *dy.shape[2:])
        if a["pool"] == "MAX":
            dx = max_pool_back(x.reshape(N * C, H, W), dy3, KH, KW, SH, SW, PH, PW)
        elif a["pool"] == "AVE":
            dx = ave_pool_back(dy3, H, W, KH, KW, SH, SW, PH, PW, bool(a.get("exclude_pad")))
        else:
            return None
        return [dx.reshape(x.shape)]

    def reference(self, torch, xs, a, p, node):
        F, x = torch.nn.functional, xs[0]
        k, s, pad = (x.shape[2:], (1, 1), (0, 0)) if a["global_pooling"] else (a["kernel"], a["stride"], a["pad"])
        ceil = a["round_mode"] == "CEIL"
        if a["pool"] == "MAX" and len(node["tops"]) == 2:   # torch's indices are Caffe's h * W + w
            y, where = F.max_pool2d(x, k, s, pad, ceil_mode=ceil, return_indices=True)
            return [y, where.to(x.dtype)]
        if a["pool"] == "MAX":
            return [F.max_pool2d(x, k, s, pad, ceil_mode=ceil)]
        return [F.avg_pool2d(x, k, s, pad, ceil_mode=ceil, count_include_pad=not a.get("exclude_pad"))]

    def _masked_cpu(self, lo, n, shape, out_hw, kernel, stride, pad):
        """MAX pooling with its mask top: the first largest input's index h * W + w in its plane
        (pooling_layer.cpp: strictly greater replaces), clipped windows throughout."""
        from ..codegen.cpu_kit import i
        d = lo.g.nodes[n]
        (R, H, W), (OH, OW), (KH, KW), (SH, SW), (PH, PW) = shape, out_hw, kernel, stride, pad
        x, y = lo.view(d["inputs"][0], (R, H, W)), lo.view((n, 0), (R, OH, OW))
        mask = lo.view((n, 1), (R, OH, OW))
        k = lo.kernel("maxmask", f"""
            def NAME(x, y, mask):
                for r in prange({i(R)}):
                    for oh in range({i(OH)}):
                        h0 = max(oh * {i(SH)} - {i(PH)}, 0)
                        h1 = min(oh * {i(SH)} - {i(PH)} + {i(KH)}, {i(H)})
                        for ow in range({i(OW)}):
                            w0 = max(ow * {i(SW)} - {i(PW)}, 0)
                            w1 = min(ow * {i(SW)} - {i(PW)} + {i(KW)}, {i(W)})
                            m = np.float32(-3.4028234663852886e38)
                            at = -1
                            for ih in range(h0, h1):
                                for iw in range(w0, w1):
                                    if x[r, ih, iw] > m:
                                        m = x[r, ih, iw]
                                        at = ih * {i(W)} + iw
                            y[r, oh, ow] = m
                            mask[r, oh, ow] = at
            """, R * OH * OW * KH * KW)
        lo.step([n], [f"{k}({x}, {y}, {mask})"])

    def lower_cpu(self, lo, n):
        from ..codegen.cpu_kit import i
        d, a, (N, C, H, W), (_, _, OH, OW) = lo.io(n)
        (KH, KW), (SH, SW), (PH, PW) = self.geometry((N, C, H, W), a)
        if len(d["tops"]) == 2:
            return self._masked_cpu(lo, n, (N * C, H, W), (OH, OW), (KH, KW), (SH, SW), (PH, PW))
        x, y = lo.view(d["inputs"][0], (N * C, H, W)), lo.view((n, 0), (N * C, OH, OW))
        if a["pool"] == "MAX" and (PH or PW):
            return lo.step([n], [f"{self._max_padded(lo, (N * C, H, W), (OH, OW), (KH, KW), (SH, SW), (PH, PW))}({x}, {y})"])
        if a["pool"] == "MAX":
            init, acc, fin = "m = np.float32(-3.4028234663852886e38)", "m = max(m, x[r, IH, IW])", "m"
            fin_full = "m"
        elif a["pool"] == "AVE":
            init, acc = "m = Z", "m += x[r, IH, IW]"
            fin = ("m / np.float32((h1 - h0) * (min(we, W) - max(ws, 0)))".replace("W)", f"{i(W)})")
                   if a.get("exclude_pad") else "m / np.float32((he - hs) * (we - ws))")
            fin_full = f"m / np.float32({i(KH * KW)})"
        else:
            raise NetcError(f'layer "{n}": STOCHASTIC pooling has no inference kernel', d["loc"])
        # windows wholly inside the input (most of them) get constant trip counts; the border
        # ones (padding, Caffe's ceil-mode last window) the clipped loops
        owa = -(-PW // SW)
        owb = max(min((W + PW - KW) // SW + 1, OW), owa)
        clipped = f"""
                            ws = ow * {i(SW)} - {i(PW)}
                            we = min(ws + {i(KW)}, {i(W + PW)})
                            {init}
                            for ih in range(h0, h1):
                                for iw in range(max(ws, 0), min(we, {i(W)})):
                                    {acc.replace("IH", "ih").replace("IW", "iw")}
                            y[r, oh, ow] = {fin}"""
        k = lo.kernel("pool", f"""
            def NAME(x, y):
                for r in prange({i(N * C)}):
                    for oh in range({i(OH)}):
                        hs = oh * {i(SH)} - {i(PH)}
                        he = min(hs + {i(KH)}, {i(H + PH)})
                        h0 = max(hs, 0)
                        h1 = min(he, {i(H)})
                        full = h0 == hs and h1 == hs + {i(KH)}
                        a0 = {i(owa)} if full else {i(OW)}
                        a1 = {i(owb)} if full else {i(OW)}
                        for ow in range(a0, a1):
                            ws = ow * {i(SW)} - {i(PW)}
                            {init}
                            for ih in range({i(KH)}):
                                for iw in range({i(KW)}):
                                    {acc.replace("IH", "hs + ih").replace("IW", "ws + iw")}
                            y[r, oh, ow] = {fin_full}
                        for ow in range(a0):{clipped}
                        for ow in range(a1, {i(OW)}):{clipped}
            """, N * C * OH * OW * KH * KW)
        lo.step([n], [f"{k}({x}, {y})"])

    def _max_padded(self, lo, shape, out_hw, kernel, stride, pad) -> str:
        """Padded MAX pooling (GoogLeNet's 3x3 stride-1 branch pools) on a copy of each channel
        bordered with -FLT_MAX out to the last window's edge: padding and Caffe's ceil-mode
        overhang never win a max, as in Caffe's clipped loops, and every window has constant
        trip counts (2-2.5x faster on 7x7-28x28 maps; without padding the copy costs more than
        it saves, so the clipped kernel stays). Channels go in groups of 16, one scratch plane
        allocated per group."""
        from ..codegen.cpu_kit import i
        (R, H, W), (OH, OW), (KH, KW), (SH, SW), (PH, PW) = shape, out_hw, kernel, stride, pad
        HP, WP = (OH - 1) * SH + KH, (OW - 1) * SW + KW
        WC = max(min(W, WP - PW), 0)           # input columns some window reads
        return lo.kernel("maxpool", f"""
            def NAME(x, y):
                for g in prange({i(-(-R // 16))}):
                    xp = np.empty(({i(HP)}, {i(WP)}), np.float32)
                    for r in range(g * 16, min(g * 16 + 16, {i(R)})):
                        for h in range({i(HP)}):
                            ih = h - {i(PH)}
                            if ih < 0 or ih >= {i(H)}:
                                for w in range({i(WP)}):
                                    xp[h, w] = LOWEST
                            else:
                                for w in range({i(PW)}):
                                    xp[h, w] = LOWEST
                                for w in range({i(WC)}):
                                    xp[h, {i(PW)} + w] = x[r, ih, w]
                                for w in range({i(PW + WC)}, {i(WP)}):
                                    xp[h, w] = LOWEST
                        for oh in range({i(OH)}):
                            for ow in range({i(OW)}):
                                m = xp[oh * {i(SH)}, ow * {i(SW)}]
                                for kh in range({i(KH)}):
                                    for kw in range({i(KW)}):
                                        m = max(m, xp[oh * {i(SH)} + kh, ow * {i(SW)} + kw])
                                y[r, oh, ow] = m
            """.replace("LOWEST", "np.float32(-3.4028234663852886e38)"), R * OH * OW * KH * KW)

    def lower_cuda(self, lo, n):
        import textwrap
        from ..codegen.cuda_kit import ZERO, i, ix, split_index, ux
        d, a, (N, C, H, W), (_, _, OH, OW) = lo.io(n)
        (KH, KW), (SH, SW), (PH, PW) = self.geometry((N, C, H, W), a)
        x_off, y_at = lo.addr(d["inputs"][0]), lo.out_at((n, 0))
        x = f"A[{ux('xr', f'ih * {i(W)} + iw')}]"
        masked = len(d["tops"]) == 2
        if masked:   # the first largest input's index h * W + w in its plane, as pooling_layer.cpp
            init = "m = float32(-3.4028234663852886e38); at = -1"
            acc = f"at = ih * {i(W)} + iw if {x} > m else at; m = max(m, {x})"
            fin = f"m; A[{lo.out_at((n, 1))}] = float32(at)"
        elif a["pool"] == "MAX":
            init, acc, fin = "m = float32(-3.4028234663852886e38)", f"m = max(m, {x})", "m"
        elif a["pool"] == "AVE":
            init, acc = f"m = {ZERO}", f"m += {x}"
            if a.get("exclude_pad"):
                fin = (f"m / float32({ix('(min(hs + ' + i(KH) + ', ' + i(H) + ') - max(hs, 0)) * (min(ws + ' + i(KW) + ', ' + i(W) + ') - max(ws, 0))')})")
            else:
                fin = (f"m / float32({ix('(min(hs + ' + i(KH) + ', ' + i(H + PH) + ') - hs) * (min(ws + ' + i(KW) + ', ' + i(W + PW) + ') - ws)')})")
        else:
            raise NetcError(f'layer "{n}": STOCHASTIC pooling has no inference kernel', d["loc"])

        def inside(v, o, s, p, k, size):
            """The bounds test of tap i<v>, without the halves no window can fail."""
            tests = ([f"i{v} >= 0"] if p > 0 else []) + ([f"i{v} < {i(size)}"] if (o - 1) * s - p + k > size else [])
            return " and ".join(tests) or "True"
        # constant trip counts (the compiler unrolls small windows); a tap outside the input is
        # skipped, the AVE divisor counts the padding inside H + pad as Caffe does
        body = "\n".join(split_index("i", [("r", N * C), ("oh", OH), ("ow", OW)])) + "\n" + textwrap.dedent(f"""
            hs = {ix(f"oh * {i(SH)} - {i(PH)}")}
            ws = {ix(f"ow * {i(SW)} - {i(PW)}")}
            xr = {ix(f"{i(x_off)} + r * {i(H * W)}")}
            {init}
            for kh in range({ix(i(KH))}):
                ih = {ix("hs + kh")}
                if {inside("h", OH, SH, PH, KH, H)}:
                    for kw in range({ix(i(KW))}):
                        iw = {ix("ws + kw")}
                        if {inside("w", OW, SW, PW, KW, W)}:
                            {acc}
            A[{y_at}] = {fin}""")
        return lo.step([n], [lo.elementwise("pool", body, N * C * OH * OW)])


@register
class LRN(Layer):
    type = "LRN"
    cost = "per element: size (size^2 within a channel) + 1 multiplies and adds, 1 power, 1 divide"
    messages = ("lrn_param",)
    params = (
        Param("local_size", default=5, positive=True),
        Param("alpha", "float", 1.0), Param("beta", "float", 0.75), Param("k", "float", 1.0),
        Param("norm_region", "enum", "ACROSS_CHANNELS", choices=("ACROSS_CHANNELS", "WITHIN_CHANNEL")),
    )
    family = "norm"
    short = "norm"

    def normalize(self, a, loc):
        if a["local_size"] % 2 == 0:
            raise NetcError(f"LRN local_size must be odd, got {a['local_size']}", loc)
        return a

    def shapes(self, ins, a, loc):
        require_4d(self, ins[0], loc)
        return [ins[0]]

    def ops(self, ins, outs, a):
        n = numel(outs[0])
        size = a["local_size"] if a["norm_region"] == "ACROSS_CHANNELS" else a["local_size"] ** 2
        # square and sum the window, scale+offset, power, divide
        return Ops(mul=n * size + n, add=n * size + n, exp=n, div=n)

    def window(self, ins, a):
        if a["norm_region"] == "WITHIN_CHANNEL":
            s = a["local_size"]
            return ((s, 1, s // 2), (s, 1, s // 2))
        return None

    def onnx(self, b, n, d, ins):
        a, size = d["attrs"], d["attrs"]["local_size"]
        if a["norm_region"] == "ACROSS_CHANNELS":
            return b.node("LRN", ins, name=n, size=size, alpha=float(a["alpha"]), beta=float(a["beta"]),
                          bias=float(a["k"]))
        # lrn_layer.cpp's WITHIN_CHANNEL: x * (1 + alpha * mean of x^2 over the padded window)^-beta
        x, pad = ins[0], (size - 1) // 2
        sq = b.node("Mul", [x, x], name=n)[0]
        avg = b.node("AveragePool", [sq], name=n, kernel_shape=[size, size], strides=[1, 1],
                     pads=[pad, pad, size - 1 - pad, size - 1 - pad], count_include_pad=1)[0]
        base = b.node("Add", [b.node("Mul", [avg, b.const(f"{n}_alpha", a["alpha"])], name=n)[0],
                              b.const(f"{n}_one", 1.0)], name=n)[0]
        return b.node("Mul", [x, b.node("Pow", [base, b.const(f"{n}_beta", -a["beta"])], name=n)[0]], name=n)

    def backward(self, dys, xs, ys, a, p, rule):
        """Across channels (lrn_layer.cpp's backward): dx = dy s^-beta - 2 alpha beta / n x
        sum over the window of dy y / s, s = k + alpha / n sum of x^2 over the window."""
        import numpy as np
        if a["norm_region"] != "ACROSS_CHANNELS":
            return None
        x, y, dy = xs[0].astype(np.float64), ys[0].astype(np.float64), dys[0].astype(np.float64)
        n, half = a["local_size"], (a["local_size"] - 1) // 2

        def window_sum(v):
            c = np.cumsum(np.pad(v, ((0, 0), (half + 1, half), (0, 0), (0, 0))), axis=1)
            return c[:, n:] - c[:, :-n]
        s = a["k"] + a["alpha"] / n * window_sum(x * x)
        dx = dy * s ** -a["beta"] - 2 * a["alpha"] * a["beta"] / n * x * window_sum(dy * y / s)
        return [dx.astype(np.float32)]

    def reference(self, torch, xs, a, p, node):
        F, x, size = torch.nn.functional, xs[0], a["local_size"]
        if a["norm_region"] == "ACROSS_CHANNELS":
            return [F.local_response_norm(x, size, a["alpha"], a["beta"], a["k"])]
        avg = F.avg_pool2d(x * x, size, 1, (size - 1) // 2, count_include_pad=True)
        return [x * (1 + a["alpha"] * avg) ** -a["beta"]]

    def lower_cpu(self, lo, n):
        from ..codegen.cpu_kit import i, neg_power
        d, a, (N, C, H, W), _ = lo.io(n)
        size, beta = a["local_size"], a["beta"]
        pre = (size - 1) // 2
        if a["norm_region"] == "ACROSS_CHANNELS":
            x, y = lo.view(d["inputs"][0], (N, C, H * W)), lo.view((n, 0), (N, C, H * W))
            k = lo.kernel("lrn", f"""
                def NAME(x, y):
                    for r in prange({i(N * C)}):
                        n = r // {i(C)}
                        c = r % {i(C)}
                        s = np.zeros({i(H * W)}, np.float32)
                        for cc in range(max(c - {i(pre)}, 0), min(c - {i(pre)} + {i(size)}, {i(C)})):
                            for j in range({i(H * W)}):
                                t = x[n, cc, j]
                                s[j] += t * t
                        for j in range({i(H * W)}):
                            u = np.float32({a['k']!r}) + np.float32({a['alpha'] / size!r}) * s[j]
                            y[n, c, j] = x[n, c, j] * {neg_power("u", beta)}
                """, N * C * H * W * size)
        else:
            x, y = lo.view(d["inputs"][0], (N * C, H, W)), lo.view((n, 0), (N * C, H, W))
            k = lo.kernel("lrnwc", f"""
                def NAME(x, y):
                    for r in prange({i(N * C)}):
                        for h in range({i(H)}):
                            for w in range({i(W)}):
                                s = Z
                                for ih in range(max(h - {i(pre)}, 0), min(h - {i(pre)} + {i(size)}, {i(H)})):
                                    for iw in range(max(w - {i(pre)}, 0), min(w - {i(pre)} + {i(size)}, {i(W)})):
                                        t = x[r, ih, iw]
                                        s += t * t
                                u = ONE + np.float32({a['alpha'] / size ** 2!r}) * s
                                y[r, h, w] = x[r, h, w] * {neg_power("u", beta)}
                """, N * C * H * W * size * size)
        lo.step([n], [f"{k}({x}, {y})"])

    def lower_cuda(self, lo, n):
        import textwrap
        from ..codegen.cuda_kit import ONE, ZERO, f32, i, ix, split_index, ux
        d, a, (N, C, H, W), _ = lo.io(n)
        size, beta = a["local_size"], a["beta"]
        pre = (size - 1) // 2
        x_off, y_at = lo.addr(d["inputs"][0]), lo.out_at((n, 0))
        if a["norm_region"] == "ACROSS_CHANNELS":
            body = "\n".join(split_index("i", [("n", N), ("c", C), ("j", H * W)])) + "\n" + textwrap.dedent(f"""
                s = {ZERO}
                for k in range({ix(i(size))}):
                    cc = {ix(f"c - {i(pre)} + k")}
                    if cc >= 0 and cc < {i(C)}:
                        t = A[{ux(f"{i(x_off)} + n * {i(C * H * W)} + j", f"cc * {i(H * W)}")}]
                        s += t * t
                A[{y_at}] = A[{ux(i(x_off), "i")}] * math.pow({f32(a['k'])} + {f32(a['alpha'] / size)} * s, {f32(-beta)})""")
            kind = "lrn"
        else:
            body = "\n".join(split_index("i", [("r", N * C), ("h", H), ("w", W)])) + "\n" + textwrap.dedent(f"""
                s = {ZERO}
                for kh in range({ix(i(size))}):
                    ih = {ix(f"h - {i(pre)} + kh")}
                    if ih >= 0 and ih < {i(H)}:
                        for kw in range({ix(i(size))}):
                            iw = {ix(f"w - {i(pre)} + kw")}
                            if iw >= 0 and iw < {i(W)}:
                                t = A[{ux(f"{i(x_off)} + r * {i(H * W)}", f"ih * {i(W)} + iw")}]
                                s += t * t
                A[{y_at}] = A[{ux(i(x_off), "i")}] * math.pow({ONE} + {f32(a['alpha'] / size ** 2)} * s, {f32(-beta)})""")
            kind = "lrnwc"
        return lo.step([n], [lo.elementwise(kind, body, N * C * H * W)])
