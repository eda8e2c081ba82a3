"""Convolution, its depthwise spelling and Deconvolution (Caffe semantics, 2-D).

Kernels: CPU im2col/1x1 + sgemm, Winograd F(4x4, 3x3) (transforms from codegen/cpu_kit.py) or a
depthwise numba loop; CUDA the implicit-GEMM generator of codegen/cuda_gemm.py or a depthwise
template. ConvolutionDepthwise inherits Convolution's.
"""
from __future__ import annotations

from ..errors import NetcError, SoftShapeError
from .base import (Layer, Ops, Param, fmt_shape, numel, register, require_4d, spatial_pair,
                   write_pair)

CONV_PARAMS = (
    Param("num_output", positive=True),
    Param("bias_term", "bool", True),
    Param("kernel_size", repeated=True, positive=True),
    Param("kernel_h", positive=True), Param("kernel_w", positive=True),
    Param("stride", repeated=True, positive=True),
    Param("stride_h", positive=True), Param("stride_w", positive=True),
    Param("pad", repeated=True), Param("pad_h"), Param("pad_w"),
    Param("dilation", repeated=True, positive=True),
    Param("group", default=1, positive=True),
    Param("axis", default=1, min=None),
    Param("force_nd_im2col", "bool", False),
)


class _ConvBase(Layer):
    kernels = True
    messages = ("convolution_param",)
    params = CONV_PARAMS
    family = "conv"

    def normalize(self, a, loc):
        if a["num_output"] is None:
            raise NetcError(f'{self.type} needs "num_output"', loc)
        if a["axis"] != 1:
            raise NetcError(f"{self.type}: only axis 1 (channels) is supported", loc)
        return {
            "num_output": a["num_output"],
            "kernel": spatial_pair(a, "kernel_size", loc, None, h="kernel_h", w="kernel_w"),
            "stride": spatial_pair(a, "stride", loc, 1, h="stride_h", w="stride_w"),
            "pad": spatial_pair(a, "pad", loc, 0, h="pad_h", w="pad_w"),
            "dilation": spatial_pair(a, "dilation", loc, 1, h="dilation_h", w="dilation_w"),
            "group": a["group"],
            "bias_term": a["bias_term"],
        }

    def written_params(self, a):
        out = [("num_output", a["num_output"])]
        if not a["bias_term"]:
            out.append(("bias_term", False))
        k = a["kernel"]
        out += [("kernel_size", k[0])] if k[0] == k[1] else [("kernel_h", k[0]), ("kernel_w", k[1])]
        out += write_pair("stride", "stride_h", "stride_w", a["stride"], 1)
        out += write_pair("pad", "pad_h", "pad_w", a["pad"], 0)
        d = a["dilation"]
        if d != (1, 1):
            out.append(("dilation", d[0] if d[0] == d[1] else list(d)))
        if a["group"] != 1:
            out.append(("group", a["group"]))
        return out

    def groups(self, cin, a):
        return a["group"]

    def check_groups(self, cin, a, loc):
        g = self.groups(cin, a)
        if cin % g:
            raise NetcError(f"{self.type}: input channels {cin} not divisible by group {g}", loc)
        if a["num_output"] % g:
            raise NetcError(f"{self.type}: num_output {a['num_output']} not divisible by group {g}", loc)
        return g

    def window(self, ins, a):
        k = [d * (kk - 1) + 1 for kk, d in zip(a["kernel"], a["dilation"])]
        return tuple(zip(k, a["stride"], a["pad"]))

    def onnx(self, b, n, d, ins):
        a = d["attrs"]
        op = "ConvTranspose" if self.type == "Deconvolution" else "Conv"
        group = a["group"] if op == "ConvTranspose" else self.groups(d["in_shapes"][0][1], a)
        args = [ins[0], b.weight(n, "weight")] + ([b.weight(n, "bias")] if a["bias_term"] else [])
        (ph, pw) = a["pad"]
        return b.node(op, args, name=n, kernel_shape=list(a["kernel"]), strides=list(a["stride"]),
                      pads=[ph, pw, ph, pw], dilations=list(a["dilation"]), group=int(group))

    def init_range(self, blob, shape, a):
        """He's uniform range (variance 2 / fan_in, torch's kaiming_uniform_) for the weights."""
        if blob != "weight":
            return super().init_range(blob, shape, a)
        fan_in = numel(shape[1:])
        hi = (6.0 / max(fan_in, 1)) ** 0.5
        return -hi, hi

    def brief(self, a):
        k, s = a["kernel"], a["stride"]
        out = f"{k[0]}x{k[1]}"
        out += "" if s == (1, 1) else f"/{s[0]}" if s[0] == s[1] else f"/{s[0]}x{s[1]}"
        out += f" \u00d7{a['num_output']}"
        if a.get("group", 1) != 1:
            out += f" g{a['group']}"
        return out


@register
class Convolution(_ConvBase):
    type = "Convolution"
    feature_conv = True
    cost = "MACs: output elements x (input channels / group) x kh x kw; + 1 add per output with a bias"
    aliases = ("CONVOLUTION", "Conv")
    short = "conv"

    def backward(self, dys, xs, ys, a, p, rule):
        """dx per image and group: the kernels transposed times dy (sgemm), summed back over the
        windows (col2im)."""
        import numpy as np
        from ..codegen.grad_kit import col2im, grouped_one_back
        x, dy, w = xs[0], dys[0], p("weight")
        N, C, H, W = x.shape
        _, O, OH, OW = dy.shape
        G = self.groups(C, a)
        CG, OG = C // G, O // G
        (KH, KW), (SH, SW), (PH, PW), (DH, DW) = a["kernel"], a["stride"], a["pad"], a["dilation"]
        if CG == 1 and G > 1:
            return [grouped_one_back(np.ascontiguousarray(dy), np.ascontiguousarray(w, np.float32), C, H, W,
                                     SH, SW, PH, PW, DH, DW)]
        dx = np.empty_like(x)
        pointwise = (KH, KW, SH, SW, PH, PW) == (1, 1, 1, 1, 0, 0)      # 1x1: the columns are dx itself
        for g in range(G):
            wt = w[g * OG:(g + 1) * OG].reshape(OG, -1).T      # a transposed view: sgemm reads it as it is
            for n in range(N):
                cols = wt @ dy[n, g * OG:(g + 1) * OG].reshape(OG, OH * OW)
                dx[n, g * CG:(g + 1) * CG] = cols.reshape(CG, H, W) if pointwise else \
                    col2im(cols, CG, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW)
        return [dx]

    def shapes(self, ins, a, loc):
        require_4d(self, ins[0], loc)
        n, c, h, w = ins[0]
        self.check_groups(c, a, loc)
        out, beyond = [], False
        for size, k, s, p, d in zip((h, w), a["kernel"], a["stride"], a["pad"], a["dilation"]):
            extent = d * (k - 1) + 1
            span = size + 2 * p - extent
            o = (span // s if span >= 0 else -(-span // s)) + 1   # C++ division truncates toward 0
            if o < 1:
                raise NetcError(f"{self.type}: kernel extent {extent} (pad {p}) is larger than "
                                f"its input {fmt_shape(ins[0])}", loc)
            beyond |= span < 0
            out.append(o)
        if beyond:
            raise SoftShapeError(f"{self.type}: kernel {a['kernel'][0]}x{a['kernel'][1]} is larger than its "
                                 f"padded input {fmt_shape(ins[0])}", loc, [(n, a["num_output"], out[0], out[1])],
                                 caffe_accepts=True)
        return [(n, a["num_output"], out[0], out[1])]

    def param_shapes(self, ins, a):
        cin = ins[0][1]
        shapes = {"weight": (a["num_output"], cin // self.groups(cin, a), *a["kernel"])}
        if a["bias_term"]:
            shapes["bias"] = (a["num_output"],)
        return shapes

    def ops(self, ins, outs, a):
        cin = ins[0][1]
        macc = numel(outs[0]) * (cin // self.groups(cin, a)) * a["kernel"][0] * a["kernel"][1]
        return Ops(macc=macc, add=numel(outs[0]) if a["bias_term"] else 0)

    def reference(self, torch, xs, a, p, node):
        x = xs[0]
        return [torch.nn.functional.conv2d(x, p("weight"), p("bias") if a["bias_term"] else None, a["stride"],
                                           a["pad"], a["dilation"], self.groups(x.shape[1], a))]

    def _epilogue(self, lo, y3: str, shape3, bias: str, acts: list[str], merge=None) -> str:
        """Bias per channel (axis 1 of y3) plus fused activations, one pass over the output; with
        `merge` (Lowering.absorb_merge) also the Eltwise after the layer and its activations,
        written to the Eltwise's output."""
        from ..codegen.cpu_kit import f32, i
        from .merge import Eltwise
        nb_, c, l = shape3
        args, call, out, lines = "y, b", f"{y3}, {bias}", "y", list(acts)
        if merge is not None:
            nodes, operands, attrs, merge_acts = merge
            others = [lo.view(src, shape3) for src in operands if src is not None]
            names = iter(f"x{k}" for k in range(len(others)))
            terms = ["v" if src is None else f"{next(names)}[n, ch, j]" for src in operands]
            lines += Eltwise.combine(attrs, terms, f32) + merge_acts
            args += ", o, " + ", ".join(f"x{k}" for k in range(len(others)))
            call += f", {lo.view((nodes[-1], 0), shape3)}, " + ", ".join(others)
            out = "o"
        k = lo.kernel("epi" if merge is None else "epi_merge", f"""
            def NAME({args}):
                for r in prange({i(nb_ * c)}):
                    n = r // {i(c)}
                    ch = r % {i(c)}
                    bc = b[ch]
                    for j in range({i(l)}):
                        v = y[n, ch, j] + bc
ACTS
                        {out}[n, ch, j] = v
            """, nb_ * c * l * (1 if merge is None else len(merge[1]) + 1), lines)
        return f"{k}({call})"

    def lower_cpu(self, lo, n):
        import numpy as np
        from ..codegen.cpu_kit import i, winograd_pays
        d, a, (N, C, H, W), (_, CO, OH, OW) = lo.io(n)
        G = C if d["type"] == "ConvolutionDepthwise" else a["group"]
        KH, KW = a["kernel"]
        (SH, SW), (PH, PW), (DH, DW) = a["stride"], a["pad"], a["dilation"]
        wt = lo.w[f"{n}.weight"]   # float32; float64 only when folding rescales it
        b = lo.w[f"{n}.bias"].astype(np.float64) if a["bias_term"] else np.zeros(CO)
        extra, mul_add, acts = lo.absorb(n, fold=True)
        if mul_add is not None:
            wt = wt * mul_add[0][:, None, None, None]
            b = b * mul_add[0] + mul_add[1]
        out = (extra or [n])[-1]
        x = lo.view(d["inputs"][0])
        bias = lo.param(b)
        if G == C == CO and G > 1:
            y = lo.view((out, 0))
            w = lo.param(wt.reshape(C, KH, KW))
            k = lo.kernel("dwconv", f"""
                def NAME(x, w, b, y):
                    for r in prange({i(N * C)}):
                        n = r // {i(C)}
                        c = r % {i(C)}
                        for oh in range({i(OH)}):
                            for ow in range({i(OW)}):
                                v = b[c]
                                for kh in range({i(KH)}):
                                    ih = oh * {i(SH)} - {i(PH)} + kh * {i(DH)}
                                    if ih >= 0 and ih < {i(H)}:
                                        for kw in range({i(KW)}):
                                            iw = ow * {i(SW)} - {i(PW)} + kw * {i(DW)}
                                            if iw >= 0 and iw < {i(W)}:
                                                v += x[n, c, ih, iw] * w[c, kh, kw]
ACTS
                                y[n, c, oh, ow] = v
                """, N * CO * OH * OW * KH * KW, acts)
            lo.step([n, *extra], [f"{k}({x}, {w}, {bias}, {y})"])
            return [n, *extra]
        if winograd_pays(G, C, CO, (KH, KW), (SH, SW), (DH, DW), N * -(-OH // 4) * -(-OW // 4)):
            lo.step([n, *extra], self._winograd(lo, d, wt, bias, (out, 0), acts))
            return [n, *extra]
        CG, OG, K = C // G, CO // G, C // G * KH * KW
        L = OH * OW
        w = lo.param(wt.reshape(G, OG, K) if G > 1 else wt.reshape(CO, K))
        yg = lo.view((out, 0), (N, G, OG, L) if G > 1 else (N, CO, L))
        y3 = lo.view((out, 0), (N, CO, L))
        lines = ["for n in range(%d):" % N]
        if (KH, KW, SH, SW, PH, PW) == (1, 1, 1, 1, 0, 0):
            xg = lo.view(d["inputs"][0], (N, G, CG, H * W) if G > 1 else (N, C, H * W))
            lines.append(f"    np.matmul({w}, {xg}[n], out={yg}[n])")
        else:
            x3 = lo.view(d["inputs"][0], (N, C, H, W))
            col = lo.scratch_view((C * KH * KW, L))
            colg = lo.scratch_view((G, K, L)) if G > 1 else col
            k, xp = self._im2col(lo, (C, H, W), (KH, KW), (SH, SW), (PH, PW), (DH, DW), (OH, OW))
            args = f"{x3}[n]" if xp is None else f"{x3}[n], {xp}"
            lines += [f"    {k}({args}, {col})", f"    np.matmul({w}, {colg}, out={yg}[n])"]
        merge = lo.absorb_merge(out)
        lines.append(self._epilogue(lo, y3, (N, CO, L), bias, acts, merge))
        nodes = [n, *extra, *(merge[0] if merge else [])]
        lo.step(nodes, lines)
        return nodes

    def _im2col(self, lo, chw, kernel, stride, pad, dilation, out_hw):
        """(kernel, padded-copy view or None): col [C*KH*KW, OH*OW] for one image. With padding,
        the input is first copied into a zero-bordered scratch image so the gather has constant
        trip counts and no bounds tests (4-5x faster than clipping each row: ResNet-50's stem
        1.56 -> 0.28 ms, a 7x7x512 3x3 layer 0.36 -> 0.07 ms); without, it reads x directly."""
        from ..codegen.cpu_kit import i
        (C, H, W), (KH, KW), (SH, SW), (PH, PW), (DH, DW), (OH, OW) = chw, kernel, stride, pad, dilation, out_hw
        gather = f"""
                for r in prange({i(C * KH * KW)}):
                    c = r // {i(KH * KW)}
                    kh = (r // {i(KW)}) % {i(KH)}
                    kw = r % {i(KW)}
                    for oh in range({i(OH)}):
                        for ow in range({i(OW)}):
                            col[r, oh * {i(OW)} + ow] = src[c, oh * {i(SH)} + kh * {i(DH)}, ow * {i(SW)} + kw * {i(DW)}]"""
        if (PH, PW) == (0, 0):
            return lo.kernel("im2col", "def NAME(src, col):" + gather, C * KH * KW * OH * OW), None
        HP, WP = H + 2 * PH, W + 2 * PW
        xp = lo.scratch_view((C, HP, WP), C * KH * KW * OH * OW)
        k = lo.kernel("im2col", f"""
            def NAME(x, src, col):
                for c in prange({i(C)}):
                    for h in range({i(PH)}):
                        for w in range({i(WP)}):
                            src[c, h, w] = Z
                            src[c, {i(HP - 1)} - h, w] = Z
                    for h in range({i(H)}):
                        for w in range({i(PW)}):
                            src[c, {i(PH)} + h, w] = Z
                            src[c, {i(PH)} + h, {i(WP - 1)} - w] = Z
                        for w in range({i(W)}):
                            src[c, {i(PH)} + h, {i(PW)} + w] = x[c, h, w]""" + gather, C * KH * KW * OH * OW)
        return k, xp

    def _winograd(self, lo, d, wt, bias, out_key, acts) -> list[str]:
        """3x3 stride-1 convolution as Winograd F(4x4, 3x3): 36 batched sgemms [CO, C] x [C, T]
        over all tiles T of all images, between a numba input transform (6x6 tiles, stride 4,
        zero padding) and a numba output transform with bias and activations fused."""
        import numpy as np
        from ..codegen.cpu_kit import WINOGRAD_POINTS, winograd_matrices
        (N, C, H, W), (_, CO, OH, OW) = d["in_shapes"][0], d["shapes"][0]
        PH, PW = d["attrs"]["pad"]
        TH, TW = -(-OH // 4), -(-OW // 4)
        T = N * TH * TW
        AT, G, BT = (np.array(m, dtype=np.float64) for m in winograd_matrices(WINOGRAD_POINTS))
        # U = G g G^T per (co, c) as one sgemm with kron(G, G) (36 x 9): two tensordots with
        # their transposed copies took seconds of VGG-16's warm start
        lo.allot(0, transient=4 * (36 + 9) * CO * C)  # u and its float32 operand, before they exist
        kron = np.kron(G, G).astype(np.float32)
        u = (kron @ wt.astype(np.float32, copy=False).reshape(CO * C, 9).T).reshape(36, CO, C)
        x, y = lo.view(d["inputs"][0], (N * C, H, W)), lo.view(out_key, (N * CO, OH, OW))
        # channel-major [C, 36, T]: each channel's 36 planes are one contiguous block. Point-major
        # [36, C, T] put the planes C*T*4 bytes apart, a multiple of 4 KiB at 256 channels x 16
        # tiles (ResNet-50's 14x14 layers), so an element and its 35 siblings shared one 8-way
        # L1 set: both transforms ran 2-2.5x slower. sgemm reads the strided views as fast.
        v = lo.scratch_view((C, 36, T))
        m = lo.scratch_view((CO, 36, T), 36 * C * T)
        vk, mk = lo.bind(f"{v}.transpose(1, 0, 2)", "s"), lo.bind(f"{m}.transpose(1, 0, 2)", "s")
        kin = self._winograd_input(lo, BT, (N, C, H, W), (PH, PW), (TH, TW))
        kout = self._winograd_output(lo, AT, (N, CO, OH, OW), (TH, TW), acts)
        return [f"{kin}({x}, {v})", f"np.matmul({lo.param(u)}, {vk}, out={mk})", f"{kout}({m}, {bias}, {y})"]

    def _winograd_input(self, lo, BT, shape, pad, tiles) -> str:
        """x [N*C, H, W] -> v [C, 36, T]: per channel and tile row, the 6 padded input rows, their
        vertical transform (vectorized along the row), then the horizontal one per tile."""
        from ..codegen.cpu_kit import i, indent, lincomb
        (N, C, H, W), (PH, PW), (TH, TW) = shape, pad, tiles
        WP = 4 * TW + 2
        dl, ql = [f"d{j}" for j in range(6)], [f"q{j}" for j in range(6)]
        rows = indent([f"Q[{k}, w] = {lincomb(BT[k], dl)}" for k in range(6)], 28)
        cols = indent([f"v[c, i * 6 + {k}, t] = {lincomb(BT[k], ql)}" for k in range(6)], 32)
        kin = lo.kernel("wino_in", f"""
            def NAME(x, v):
                for r in prange({i(N * C)}):
                    n = r // {i(C)}
                    c = r % {i(C)}
                    P = np.zeros((6, {i(WP)}), np.float32)
                    Q = np.empty((6, {i(WP)}), np.float32)
                    for th in range({i(TH)}):
                        for j in range(6):
                            h = th * 4 - {i(PH)} + j
                            if h >= 0 and h < {i(H)}:
                                for w in range({i(W)}):
                                    P[j, {i(PW)} + w] = x[r, h, w]
                            else:
                                for w in range({i(WP)}):
                                    P[j, w] = Z
                        for w in range({i(WP)}):
                            {"; ".join(f"d{j} = P[{j}, w]" for j in range(6))}
{rows}
                        for i in range(6):
                            for tw in range({i(TW)}):
                                {"; ".join(f"q{j} = Q[i, tw * 4 + {j}]" for j in range(6))}
                                t = (n * {i(TH)} + th) * {i(TW)} + tw
{cols}
            """, N * C * H * W * 40)
        return kin

    def _winograd_output(self, lo, AT, shape, tiles, acts) -> str:
        """m [CO, 36, T] -> y [N*CO, OH, OW]: per output channel, the horizontal transform of
        every tile in one loop over all T tiles (R[i, 4t + q]: tile rows end to end, so row th
        of the output is R[:, 4*TW*th + w]), then the vertical one along whole output rows
        with bias and activations; rows and columns past OH, OW are never written. A loop over
        all tiles vectorizes where one over a row of tiles (14 at 56x56) ran scalar: 2x faster.
        Channels go in groups of 16, R allocated once per group."""
        from ..codegen.cpu_kit import i, indent, lincomb
        (N, CO, OH, OW), (TH, TW) = shape, tiles
        TT, R_ = TH * TW, N * CO
        ml = [f"m[co, i * 6 + {j}, t0 + t]" for j in range(6)]
        rl = [f"R[{j}, th * {i(4 * TW)} + w]" for j in range(6)]
        rcols = indent([f"R[i, t * 4 + {q}] = {lincomb(AT[q], ml)}" for q in range(4)], 32)
        outs = "\n".join(f"""
                            if th * 4 + {p} < {i(OH)}:
                                for w in range({i(OW)}):
                                    v = {lincomb(AT[p], rl)} + bc
ACTS
                                    y[r, th * 4 + {p}, w] = v""" for p in range(4))
        kout = lo.kernel("wino_out", f"""
            def NAME(m, b, y):
                for g in prange({i(-(-R_ // 16))}):
                    R = np.empty((6, {i(4 * TT)}), np.float32)
                    for r in range(g * 16, min(g * 16 + 16, {i(R_)})):
                        n = r // {i(CO)}
                        co = r % {i(CO)}
                        bc = b[co]
                        t0 = n * {i(TT)}
                        for i in range(6):
                            for t in range({i(TT)}):
{rcols}
                        for th in range({i(TH)}):{outs}
            """, N * CO * OH * OW * 20, acts)
        return kout

    def lower_cuda(self, lo, n):
        import textwrap
        from ..codegen import cuda_gemm as gemm
        import numpy as np
        from ..codegen.cuda_kit import i, ix, split_index, udiv, ux
        d, a, (N, C, H, W), (_, CO, OH, OW) = lo.io(n)
        G = C if d["type"] == "ConvolutionDepthwise" else a["group"]
        KH, KW = a["kernel"]
        (SH, SW), (PH, PW), (DH, DW) = a["stride"], a["pad"], a["dilation"]
        wt = lo.w[f"{n}.weight"].astype(np.float64)
        b = lo.w[f"{n}.bias"].astype(np.float64) if a["bias_term"] else np.zeros(CO)
        extra, mul_add, acts, out = lo.fused(n, fold=True)
        if mul_add is not None:
            wt = wt * mul_add[0][:, None, None, None]
            b = b * mul_add[0] + mul_add[1]
        x_off, b_off = lo.addr(d["inputs"][0]), lo.param_offset(b)
        CG, OG = C // G, CO // G
        if CG > 1:
            geom = gemm.ConvGeometry(N, C, H, W, CO, OH, OW, KH, KW, SH, SW, PH, PW, DH, DW, G)
            tile = gemm.conv_tile(geom, lo.gemm_tile(gemm.conv_problem(geom), n))
            w_off = lo.param_offset(gemm.pack_conv_weights(wt.astype(np.float32), geom, tile))
            merge, epilogue = lo.absorb_merge(out[0], d["inputs"][0]), list(acts)
            if merge is not None:    # the residual add: each output reads its operands' element
                from ..codegen.cuda_kit import f32
                from .merge import Eltwise
                nodes, operands, attrs, merge_acts = merge
                # e: the output element's NCHW index (gemm.conv_kernel), the operands' too
                terms = ["v" if src is None else f"A[{ux(i(lo.addr(src)), 'e')}]" for src in operands]
                epilogue += Eltwise.combine(attrs, terms, f32) + merge_acts
                extra, out = extra + nodes, (nodes[-1], 0)
            y_off, y_stride = lo.out_stride(out)
            ks = gemm.conv_kernel("NAME", geom, x_off, w_off, b_off, y_off, epilogue, y_image_stride=y_stride,
                                  tile=tile)
            return lo.step([n, *extra], [lo.gemm_launch("conv", ks)])
        # depthwise (one input channel per group: no reduction worth a GEMM tile); constant
        # trip counts: the compiler unrolls the window
        w_off = lo.param_offset(wt)
        g = "co" if OG == 1 else udiv("co", i(OG))
        body = "\n".join(split_index("i", [("n", N), ("co", CO), ("oh", OH), ("ow", OW)])) + textwrap.dedent(f"""
            v = P[{ux(i(b_off), "co")}]
            xc = {ix(f"{i(x_off)} + (n * {i(C)} + {g}) * {i(H * W)}")}
            wc = {ix(f"{i(w_off)} + co * {i(KH * KW)}")}
            for kh in range({ix(i(KH))}):
                ih = {ix(f"oh * {i(SH)} - {i(PH)} + kh * {i(DH)}")}
                if ih >= 0 and ih < {i(H)}:
                    for kw in range({ix(i(KW))}):
                        iw = {ix(f"ow * {i(SW)} - {i(PW)} + kw * {i(DW)}")}
                        if iw >= 0 and iw < {i(W)}:
                            v += A[{ux("xc", f"ih * {i(W)} + iw")}] * P[{ux("wc", f"kh * {i(KW)} + kw")}]
            ACTS
            A[{lo.out_at(out)}] = v
        """)
        return lo.step([n, *extra], [lo.elementwise("dwconv", body, N * CO * OH * OW, acts)])


@register
class ConvolutionDepthwise(Convolution):
    """The depthwise layer of MobileNet/ShuffleNet Caffe forks: group is the input channel count."""
    type = "ConvolutionDepthwise"
    cost = "MACs: output elements x kh x kw (group = channels); + 1 add per output with a bias"
    aliases = ("DepthwiseConvolution",)
    short = "dwconv"

    def groups(self, cin, a):
        return cin


@register
class Deconvolution(_ConvBase):
    type = "Deconvolution"

    def backward(self, dys, xs, ys, a, p, rule):
        """dx = the convolution of dy by the same kernels (im2col of dy, then sgemm)."""
        import numpy as np
        from ..codegen.grad_kit import im2col
        x, dy, w = xs[0], dys[0], p("weight")
        N, C, H, W = x.shape
        O = dy.shape[1]
        G = a["group"]
        CG, OG = C // G, O // G
        (KH, KW), (SH, SW), (PH, PW), (DH, DW) = a["kernel"], a["stride"], a["pad"], a["dilation"]
        dx = np.empty_like(x)
        for g in range(G):
            wg = np.ascontiguousarray(w[g * CG:(g + 1) * CG].reshape(CG, -1))
            for n in range(N):
                cols = im2col(np.ascontiguousarray(dy[n, g * OG:(g + 1) * OG]), KH, KW, SH, SW, PH, PW, DH, DW, H, W)
                dx[n, g * CG:(g + 1) * CG] = (wg @ cols).reshape(CG, H, W)
        return [dx]
    cost = "MACs: input elements x (num_output / group) x kh x kw; + 1 add per output with a bias"
    aliases = ("DECONVOLUTION", "ConvTranspose")
    short = "deconv"

    def shapes(self, ins, a, loc):
        require_4d(self, ins[0], loc)
        n, c, h, w = ins[0]
        self.check_groups(c, a, loc)
        out = []
        for size, k, s, p, d in zip((h, w), a["kernel"], a["stride"], a["pad"], a["dilation"]):
            o = s * (size - 1) + d * (k - 1) + 1 - 2 * p
            if o < 1:
                raise NetcError(f"{self.type}: pad {p} leaves no output for input {fmt_shape(ins[0])}", loc)
            out.append(o)
        return [(n, a["num_output"], out[0], out[1])]

    def param_shapes(self, ins, a):
        cin = ins[0][1]
        shapes = {"weight": (cin, a["num_output"] // a["group"], *a["kernel"])}
        if a["bias_term"]:
            shapes["bias"] = (a["num_output"],)
        return shapes

    def ops(self, ins, outs, a):
        macc = numel(ins[0]) * (a["num_output"] // a["group"]) * a["kernel"][0] * a["kernel"][1]
        return Ops(macc=macc, add=numel(outs[0]) if a["bias_term"] else 0)

    def window(self, ins, a):
        return None

    def receptive(self, rf, ins, a):
        """An output pixel sees ceil(extent / stride) input pixels per axis, and the jump
        divides by the stride (so it may be fractional)."""
        from math import ceil
        out = []
        for (r, j), k, s, dil in zip(rf, a["kernel"], a["stride"], a["dilation"]):
            extent = dil * (k - 1) + 1
            out.append((r + (ceil(extent / s) - 1) * j, j / s))
        return out

    def reference(self, torch, xs, a, p, node):
        return [torch.nn.functional.conv_transpose2d(
            xs[0], p("weight"), p("bias") if a["bias_term"] else None, a["stride"], a["pad"], 0,
            a["group"], a["dilation"])]

    def lower_cpu(self, lo, n):
        import numpy as np
        from ..codegen.cpu_kit import i
        d, a, (N, C, H, W), (_, CO, OH, OW) = lo.io(n)
        G = a["group"]
        KH, KW = a["kernel"]
        (SH, SW), (PH, PW), (DH, DW) = a["stride"], a["pad"], a["dilation"]
        CG, OG = C // G, CO // G
        M = OG * KH * KW
        wt = lo.w[f"{n}.weight"].reshape(G, CG, M).transpose(0, 2, 1)  # (G, M, CG)
        b = lo.w[f"{n}.bias"] if a["bias_term"] else np.zeros(CO)
        extra, _, acts = lo.absorb(n, fold=False)
        out = (extra or [n])[-1]
        w, bias = lo.param(wt), lo.param(b)
        xg = lo.view(d["inputs"][0], (N, G, CG, H * W))
        col = lo.scratch_view((G, M, H * W))
        col2 = lo.scratch_view((CO * KH * KW, H * W))
        y = lo.view((out, 0))
        k = lo.kernel("col2im", f"""
            def NAME(col, b, y):
                for c in prange({i(CO)}):
                    for oh in range({i(OH)}):
                        for ow in range({i(OW)}):
                            y[c, oh, ow] = Z
                    for kh in range({i(KH)}):
                        for kw in range({i(KW)}):
                            r = (c * {i(KH)} + kh) * {i(KW)} + kw
                            for ih in range({i(H)}):
                                oh = ih * {i(SH)} - {i(PH)} + kh * {i(DH)}
                                if oh >= 0 and oh < {i(OH)}:
                                    for iw in range({i(W)}):
                                        ow = iw * {i(SW)} - {i(PW)} + kw * {i(DW)}
                                        if ow >= 0 and ow < {i(OW)}:
                                            y[c, oh, ow] += col[r, ih * {i(W)} + iw]
                    for oh in range({i(OH)}):
                        for ow in range({i(OW)}):
                            v = y[c, oh, ow] + b[c]
ACTS
                            y[c, oh, ow] = v
            """, CO * KH * KW * H * W, acts)
        lo.step([n, *extra], [f"for n in range({N}):", f"    np.matmul({w}, {xg}[n], out={col})",
                                f"    {k}({col2}, {bias}, {y}[n])"])
        return [n, *extra]

    def lower_cuda(self, lo, n):
        """Direct gather: each output sums the inputs whose stride-scattered window covers it."""
        import numpy as np
        from ..codegen.cuda_kit import i, ix, split_index, udiv, umod, ux
        d, a, (N, C, H, W), (_, CO, OH, OW) = lo.io(n)
        G = a["group"]
        KH, KW = a["kernel"]
        (SH, SW), (PH, PW), (DH, DW) = a["stride"], a["pad"], a["dilation"]
        CG, OG = C // G, CO // G
        b = lo.w[f"{n}.bias"] if a["bias_term"] else np.zeros(CO)
        extra, _, acts, out = lo.fused(n, fold=False)
        x_off, y_off = lo.addr(d["inputs"][0]), lo.addr(out)
        w_off, b_off = lo.param_offset(lo.w[f"{n}.weight"]), lo.param_offset(b)   # (C, OG, KH, KW)
        def taps(o, p, k, dil, s, size, v):
            """Loop over the taps k whose o + pad - k * dil lands on the stride inside the input;
            binds i<v>. With no dilation only every s-th tap can, so only those are visited."""
            if dil == 1 and s > 1:
                return [f"for k{v} in range({umod(f'{o} + {i(p)}', i(s))}, {ix(i(k))}, {ix(i(s))}):",
                        f"    t{v} = {ix(f'{o} + {i(p)} - k{v}')}",
                        f"    if t{v} >= 0:",
                        f"        i{v} = {udiv(f't{v}', i(s))}",
                        f"        if i{v} < {i(size)}:"]
            cond = f"t{v} >= 0" + (f" and {umod(f't{v}', i(s))} == 0" if s > 1 else "")
            quot = udiv(f"t{v}", i(s)) if s > 1 else f"t{v}"
            return [f"for k{v} in range({ix(i(k))}):", f"    t{v} = {ix(f'{o} + {i(p)} - k{v} * {i(dil)}')}",
                    f"    if {cond}:", f"        i{v} = {quot}", f"        if i{v} < {i(size)}:"]

        def nest(headers: list[list[str]], body: list[str]) -> list[str]:
            """Each header's last line opens the block the next header (then the body) goes in."""
            out, depth = [], 0
            for lines in headers + [body]:
                out += [" " * depth + l for l in lines]
                last = lines[-1]
                depth += len(last) - len(last.lstrip()) + 4
            return out

        loops = nest([taps("oh", PH, KH, DH, SH, H, "h"), taps("ow", PW, KW, DW, SW, W, "w"),
                      [f"for ci in range({ix(i(CG))}):"]],
                     [f"c = {ix(f'g * {i(CG)} + ci')}",
                      f"v += A[{ux(f'{i(x_off)} + n * {i(C * H * W)}', f'(c * {i(H)} + ih) * {i(W)} + iw')}] * "
                      f"P[{ux(i(w_off), f'((c * {i(OG)} + oc) * {i(KH)} + kh) * {i(KW)} + kw')}]"])
        body = "\n".join(split_index("i", [("n", N), ("co", CO), ("oh", OH), ("ow", OW)]) + [
            f"g = {udiv('co', i(OG))}", f"oc = {umod('co', i(OG))}", f"v = P[{ux(i(b_off), 'co')}]", *loops,
            "ACTS", f"A[{ux(i(y_off), 'i')}] = v"])
        return lo.step([n, *extra], [lo.elementwise("deconv", body, N * CO * OH * OW, acts)])
