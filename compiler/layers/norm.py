"""BatchNorm, Scale, Bias and SSD's Normalize: per-channel affine work.

BatchNorm, Scale and Bias share one kernel per target (`_AffineKernels`); it runs only when
fusion could not fold them into the convolution or InnerProduct before them.
"""
from __future__ import annotations

from ..errors import NetcError
from .base import Layer, Ops, Param, fmt_shape, numel, register


class _AffineKernels(Layer):
    """Base of BatchNorm, Scale and Bias: their one kernel per target, y = x * mul + add, over x
    seen as [outer, D, inner] with mul and add of D values each: per channel from BatchNorm's
    statistics or per-channel blobs (folded into a producer where one fuses), else Caffe's
    axis/num_axes broadcast of a blob or of a second input (SE nets: [N, C] at axis 0)."""

    def unfolded(self, lo, n):
        """(outer, D, inner, mul, add) for the kernel: mul/add ("param", D floats) or ("blob", key)."""
        import numpy as np
        d, a = lo.g.nodes[n], lo.g.nodes[n]["attrs"]
        x = d["in_shapes"][0]
        axis, span = self.broadcast(d["in_shapes"], a)
        outer, D, inner = numel(x[:axis]), numel(x[axis:axis + span]), numel(x[axis + span:])
        ones, zeros = ("param", np.ones(D)), ("param", np.zeros(D))
        given = ("blob", d["inputs"][1]) if len(d["inputs"]) == 2 else None
        if self.type == "Scale":
            mul = given or ("param", lo.w[f"{n}.weight"].reshape(D))
            add = ("param", lo.w[f"{n}.bias"].reshape(D)) if a["bias_term"] else zeros
        else:
            mul, add = ones, given or ("param", lo.w[f"{n}.bias"].reshape(D))
        return outer, D, inner, mul, add

    def lower_cpu(self, lo, n):
        from ..codegen.cpu_kit import i
        d, a, xs, _ = lo.io(n)
        ma = lo.affine(n)
        if ma is not None:
            O, D, I = lo.nc_s(xs)
            extra, more, acts = lo.absorb(n, fold=True)
            if more is not None:
                ma = (ma[0] * more[0], ma[1] * more[0] + more[1])
            mul, add = lo.param(ma[0].reshape(1, D)), lo.param(ma[1].reshape(1, D))
        else:
            extra, _, acts = lo.absorb(n, fold=False)
            O, D, I, msrc, asrc = self.unfolded(lo, n)
            mul, add = (lo.view(src, (1, D)) if kind == "blob" else lo.param(src.reshape(1, D))
                        for kind, src in (msrc, asrc))
        out = (extra or [n])[-1]
        x, y = lo.view(d["inputs"][0], (O, D, I)), lo.view((out, 0), (O, D, I))
        k = lo.kernel("affine", f"""
            def NAME(x, m, a, y):
                for r in prange({i(O * D)}):
                    n = r // {i(D)}
                    c = r % {i(D)}
                    mc = m[0, c]
                    ac = a[0, c]
                    for j in range({i(I)}):
                        v = x[n, c, j] * mc + ac
ACTS
                        y[n, c, j] = v
            """, O * D * I * 2, acts)
        lo.step([n, *extra], [f"{k}({x}, {mul}, {add}, {y})"])
        return [n, *extra]

    def lower_cuda(self, lo, n):
        from ..codegen.cuda_kit import i, split_index, ux
        d, a, xs, _ = lo.io(n)
        ma = lo.affine(n)
        if ma is not None:
            O, D, I = lo.nc_s(xs)
            extra, more, acts, out = lo.fused(n, fold=True)
            if more is not None:
                ma = (ma[0] * more[0], ma[1] * more[0] + more[1])
            mul, add = f"P[{ux(i(lo.param_offset(ma[0])), 'c')}]", f"P[{ux(i(lo.param_offset(ma[1])), 'c')}]"
        else:
            extra, _, acts, out = lo.fused(n, fold=False)
            O, D, I, msrc, asrc = self.unfolded(lo, n)
            mul, add = (f"A[{ux(i(lo.addr(src)), 'c')}]" if kind == "blob" else
                        f"P[{ux(i(lo.param_offset(src)), 'c')}]" for kind, src in (msrc, asrc))
        x_off = lo.addr(d["inputs"][0])
        body = "\n".join(split_index("i", [("n", O), ("c", D), ("_", I)]) + [
            f"v = A[{ux(i(x_off), 'i')}] * {mul} + {add}", "ACTS", f"A[{lo.out_at(out)}] = v"])
        return lo.step([n, *extra], [lo.elementwise("affine", body, O * D * I, acts)])

    def broadcast(self, ins, a) -> tuple[int, int]:
        """(first axis, number of axes) that mul and add run along: the channel axis here."""
        return 1, 1


@register
class BatchNorm(_AffineKernels):
    """Caffe's BatchNorm has no affine part (a Scale layer follows); its three blobs are stored
    statistics: mean, variance and the moving-average factor, counted as buffers (2C + 1)."""
    type = "BatchNorm"
    cost = "per element: 1 add + 1 divide (+ 1 multiply + 1 add with affine)"
    messages = ("batch_norm_param",)
    params = (
        Param("use_global_stats", "bool", None),
        Param("moving_average_fraction", "float", 0.999),
        Param("eps", "float", 1e-5, positive=True),
        Param("affine", "bool", False, doc="netc extension: a learnable scale and bias (C each)"),
    )
    family = "norm"
    short = "bn"
    elementwise = True

    def shapes(self, ins, a, loc):
        if len(ins[0]) < 2:
            raise NetcError("BatchNorm needs a channel axis", loc)
        return [ins[0]]

    def param_shapes(self, ins, a):
        c = ins[0][1]
        return {"weight": (c,), "bias": (c,)} if a["affine"] else {}

    def buffer_shapes(self, ins, a):
        c = ins[0][1]
        return {"mean": (c,), "var": (c,), "moving_average_factor": (1,)}

    required_buffers = ("mean", "var")

    def caffe_blobs(self, a):
        return ["mean", "var", "moving_average_factor", "weight", "bias"]

    def optional_blobs(self, a):
        return {"moving_average_factor": (1,)}   # Caffe's scale on mean and var; 1 if absent

    def ops(self, ins, outs, a):
        n = numel(outs[0])
        return Ops(add=n * (2 if a["affine"] else 1), div=n, mul=n if a["affine"] else 0)

    def affine(self, name, a, channels, w):
        import numpy as np
        f = w.get(f"{name}.moving_average_factor", np.ones(1))[0]
        f = 1.0 / f if f != 0 else 1.0
        mul = 1.0 / np.sqrt(w[f"{name}.var"].astype(np.float64) * f + a["eps"])
        add = -w[f"{name}.mean"].astype(np.float64) * f * mul
        if a["affine"]:
            mul, add = mul * w[f"{name}.weight"], add * w[f"{name}.weight"] + w[f"{name}.bias"]
        return mul, add

    def onnx(self, b, n, d, ins):
        import numpy as np
        a, w, c = d["attrs"], b.w, d["in_shapes"][0][1]
        f = w.get(f"{n}.moving_average_factor", np.ones(1))[0]
        f = 1.0 / f if f != 0 else 1.0      # Caffe stores the statistics times this factor
        scale = w[f"{n}.weight"] if a["affine"] else np.ones(c, np.float32)
        bias = w[f"{n}.bias"] if a["affine"] else np.zeros(c, np.float32)
        return b.node("BatchNormalization", [ins[0], b.weight(n, "weight", scale), b.weight(n, "bias", bias),
                                             b.weight(n, "mean", w[f"{n}.mean"] * f), b.weight(n, "var", w[f"{n}.var"] * f)],
                      name=n, epsilon=float(a["eps"]))

    def backward(self, dys, xs, ys, a, p, rule):
        """Inference normalizes with stored statistics: per channel, dy times weight / std."""
        import numpy as np
        f = float(np.asarray(p("moving_average_factor", np.ones(1))).reshape(-1)[0])
        f = 1.0 / f if f != 0 else 1.0
        m = 1.0 / np.sqrt(p("var") * f + a["eps"])
        if a["affine"]:
            m = m * p("weight")
        shape = (1, -1) + (1,) * (xs[0].ndim - 2)
        return [dys[0] * m.astype(np.float32).reshape(shape)]

    def reference(self, torch, xs, a, p, node):
        f = p("moving_average_factor", torch.ones(1))[0]
        f = 1 / f if f != 0 else 1
        return [torch.nn.functional.batch_norm(
            xs[0], p("mean") * f, p("var") * f, p("weight") if a["affine"] else None,
            p("bias") if a["affine"] else None, False, 0.0, a["eps"])]


@register
class BN(_AffineKernels):
    """The `BN` layer of the Caffe forks behind PSPNet, Attention-56 (yjxiong's: bn_param with
    slope_filler, bias_filler, frozen, momentum, eps; blobs slope, bias, mean, variance, each
    [1, C, 1, 1]; test phase normalizes with the stored statistics) and SegNet/ENet
    (caffe-segnet's: bn_param with scale_filler, shift_filler, bn_mode; blobs scale and shift;
    INFERENCE: y = scale * x + shift, the statistics folded in; LEARN normalizes with the
    batch's own statistics even at test time). Which fork wrote it shows in its fields."""
    type = "BN"
    cost = "per element: 1 multiply + 1 add (the statistics fold into a per-channel affine)"
    messages = ("bn_param",)
    params = (
        Param("slope_filler", "msg"), Param("bias_filler", "msg"), Param("frozen", "bool", False),
        Param("momentum", "float", 0.9), Param("eps", "float", 1e-5, positive=True),
        Param("scale_filler", "msg"), Param("shift_filler", "msg"),
        Param("bn_mode", "enum", None, choices=("LEARN", "INFERENCE")),
    )
    ignored = ("engine",)
    family = "norm"
    short = "bn"
    elementwise = True

    def normalize(self, a, loc):
        segnet = any(a[k] is not None for k in ("scale_filler", "shift_filler", "bn_mode"))
        pspnet = a["slope_filler"] is not None or a["bias_filler"] is not None
        if segnet and pspnet:
            raise NetcError("BN mixes two forks' fields (slope/bias_filler and scale/shift_filler, bn_mode)", loc)
        return {"fork": "segnet" if segnet else "pspnet", "eps": a["eps"],
                "learn": segnet and a["bn_mode"] != "INFERENCE"}

    def written_params(self, a):
        if a["fork"] == "segnet":
            return [("bn_mode", "LEARN" if a["learn"] else "INFERENCE")]
        return [("eps", a["eps"])] if a["eps"] != 1e-5 else []

    def shapes(self, ins, a, loc):
        if len(ins[0]) < 2:
            raise NetcError("BN needs a channel axis", loc)
        return [ins[0]]

    def param_shapes(self, ins, a):
        c = ins[0][1]
        return {"weight": (c,), "bias": (c,)}

    def buffer_shapes(self, ins, a):
        c = ins[0][1]
        return {"mean": (c,), "var": (c,)} if a["fork"] == "pspnet" else {}

    required_buffers = ("mean", "var")   # the PSPNet fork's; SegNet's BN has none

    def caffe_blobs(self, a):
        return ["weight", "bias", "mean", "var"]

    def ops(self, ins, outs, a):
        n = numel(outs[0])
        return Ops(mul=n, add=n) if not a["learn"] else Ops(mul=2 * n, add=3 * n, div=n)

    def affine(self, name, a, channels, w):
        import numpy as np
        if a["learn"]:
            return None
        mul, add = w[f"{name}.weight"].astype(np.float64), w[f"{name}.bias"].astype(np.float64)
        if a["fork"] == "pspnet":
            inv = 1.0 / np.sqrt(w[f"{name}.var"].astype(np.float64) + a["eps"])
            mul, add = mul * inv, add - mul * inv * w[f"{name}.mean"]
        return mul, add

    def lower_cpu(self, lo, n):
        self._refuse_learn(lo, n)
        return super().lower_cpu(lo, n)

    def lower_cuda(self, lo, n):
        self._refuse_learn(lo, n)
        return super().lower_cuda(lo, n)

    def _refuse_learn(self, lo, n):
        d = lo.g.nodes[n]
        if d["attrs"]["learn"]:
            raise NetcError("BN in LEARN mode normalizes with each batch's own statistics; netc runs SegNet's "
                            "BN with bn_mode: INFERENCE (its statistics folded into scale and shift)", d["loc"])

    def onnx(self, b, n, d, ins):
        a = d["attrs"]
        if a["learn"]:
            raise NetcError("BN in LEARN mode normalizes with each batch's own statistics: no fixed ONNX form", d["loc"])
        if a["fork"] == "pspnet":
            return b.node("BatchNormalization", [ins[0], b.weight(n, "weight"), b.weight(n, "bias"),
                                                 b.weight(n, "mean"), b.weight(n, "var")], name=n, epsilon=float(a["eps"]))
        shape = (-1,) + (1,) * (len(d["in_shapes"][0]) - 2)
        y = b.node("Mul", [ins[0], b.weight(n, "weight", b.w[f"{n}.weight"].reshape(shape))], name=n)[0]
        return b.node("Add", [y, b.weight(n, "bias", b.w[f"{n}.bias"].reshape(shape))], name=n)

    def backward(self, dys, xs, ys, a, p, rule):
        import numpy as np
        if a["learn"]:
            return None                       # batch statistics: not an inference layer
        shape = (1, -1) + (1,) * (xs[0].ndim - 2)
        m = p("weight").reshape(shape)
        if a["fork"] == "pspnet":
            m = m / np.sqrt(p("var").reshape(shape) + np.float32(a["eps"]))
        return [dys[0] * m]

    def reference(self, torch, xs, a, p, node):
        shape = (1, -1) + (1,) * (xs[0].dim() - 2)
        y = xs[0]
        if a["fork"] == "pspnet":
            y = (y - p("mean").reshape(shape)) / torch.sqrt(p("var").reshape(shape) + a["eps"])
        return [y * p("weight").reshape(shape) + p("bias").reshape(shape)]


class _ChannelAffine(_AffineKernels):
    """Scale and Bias: Caffe's scale_layer.cpp / bias_layer.cpp broadcast. The blob (learned, or
    the second input) spans `num_axes` axes of the input from `axis` (negative: from the end;
    num_axes -1: to the end); with a second input, its own shape says how many."""
    family = "norm"
    elementwise = True
    max_inputs = 2

    def normalize(self, a, loc):
        if a["num_axes"] < -1:
            raise NetcError(f"{self.type}: num_axes must be -1 (all remaining) or more, got {a['num_axes']}", loc)
        return a

    def broadcast(self, ins, a) -> tuple[int, int]:
        nd = len(ins[0])
        axis = a["axis"] + nd if a["axis"] < 0 else a["axis"]
        if len(ins) == 2:
            return axis, len(ins[1])
        return axis, (nd - axis if a["num_axes"] == -1 else a["num_axes"])

    def blob_shape(self, ins, a) -> tuple:
        axis, span = self.broadcast(ins, a)
        return tuple(ins[0][axis:axis + span])

    def shapes(self, ins, a, loc):
        nd = len(ins[0])
        axis, span = self.broadcast(ins, a)
        if not 0 <= axis < max(nd, 1) or axis + span > nd:
            raise NetcError(f"{self.type}: axis {a['axis']} with {span} axes does not fit the input "
                            f"{fmt_shape(ins[0])}", loc)
        if len(ins) == 2 and tuple(ins[1]) != tuple(ins[0][axis:axis + span]):
            raise NetcError(f"{self.type}: the second input {fmt_shape(ins[1])} must match the first's axes "
                            f"{axis}..{axis + span - 1} {fmt_shape(ins[0][axis:axis + span])} (scale_param axis)", loc)
        return [ins[0]]

    def per_channel(self, a) -> bool:
        return a["axis"] == 1 and a["num_axes"] == 1

    def onnx(self, b, n, d, ins):
        """Mul / Add with the blob shaped to broadcast from `axis` (a second input reshaped so;
        its batch copied with 0 when it starts at the batch axis)."""
        import numpy as np
        a, x = d["attrs"], d["in_shapes"][0]
        axis, span = self.broadcast(d["in_shapes"], a)
        shape = list(x[axis:axis + span]) + [1] * (len(x) - axis - span)
        if len(ins) == 2:
            target = [0 if (k == 0 and axis == 0 and b.dynamic) else v for k, v in enumerate(shape)]
            given = b.node("Reshape", [ins[1], b.const(f"{n}_shape", target, np.int64)], name=n)[0]
        y = ins[0]
        if self.type == "Scale":
            y = b.node("Mul", [y, given if len(ins) == 2 else b.weight(n, "weight", b.w[f"{n}.weight"].reshape(shape))],
                       name=n)[0]
            if a["bias_term"]:
                y = b.node("Add", [y, b.weight(n, "bias", b.w[f"{n}.bias"].reshape(shape))], name=n)[0]
            return [y]
        return b.node("Add", [y, given if len(ins) == 2 else b.weight(n, "bias", b.w[f"{n}.bias"].reshape(shape))],
                      name=n)

    def backward(self, dys, xs, ys, a, p, rule):
        """dy times the blob (Scale) or dy (Bias); a second input's gradient sums over the axes
        it was broadcast along."""
        x, dy = xs[0], dys[0]
        axis, span = self.broadcast([t.shape for t in xs], a)
        shape = (1,) * axis + tuple(x.shape[axis:axis + span]) + (1,) * (x.ndim - axis - span)
        other = tuple(k for k in range(x.ndim) if not axis <= k < axis + span)
        if self.type == "Bias":
            return [dy] + ([dy.sum(axis=other).reshape(xs[1].shape)] if len(xs) == 2 else [])
        m = (xs[1] if len(xs) == 2 else p("weight")).reshape(shape)
        return [dy * m] + ([(dy * x).sum(axis=other).reshape(xs[1].shape)] if len(xs) == 2 else [])

    def reference(self, torch, xs, a, p, node):
        x = xs[0]
        axis, span = self.broadcast([tuple(t.shape) for t in xs], a)
        shape = (1,) * axis + tuple(x.shape[axis:axis + span]) + (1,) * (x.dim() - axis - span)
        if self.type == "Scale":
            m = (xs[1] if len(xs) == 2 else p("weight")).reshape(shape)
            b = p("bias").reshape(shape) if a["bias_term"] else 0
        else:
            m, b = 1, (xs[1] if len(xs) == 2 else p("bias")).reshape(shape)
        return [x * m + b]


@register
class Scale(_ChannelAffine):
    type = "Scale"
    cost = "per element: 1 multiply (+ 1 add with a bias)"
    messages = ("scale_param",)
    params = (Param("axis", default=1, min=None), Param("num_axes", default=1, min=None),
              Param("bias_term", "bool", False))
    short = "scale"

    def param_shapes(self, ins, a):
        blob = self.blob_shape(ins, a)
        shapes = {} if len(ins) == 2 else {"weight": blob}
        if a["bias_term"]:
            shapes["bias"] = blob
        return shapes

    def ops(self, ins, outs, a):
        n = numel(outs[0])
        return Ops(mul=n, add=n if a["bias_term"] else 0)

    def affine(self, name, a, channels, w):
        import numpy as np
        if not self.per_channel(a):
            return None
        return w[f"{name}.weight"].astype(np.float64), (w[f"{name}.bias"] if a["bias_term"] else np.zeros(channels))


@register
class Bias(_ChannelAffine):
    type = "Bias"
    cost = "per element: 1 add"
    messages = ("bias_param",)
    params = (Param("axis", default=1, min=None), Param("num_axes", default=1, min=None))
    short = "bias"

    def param_shapes(self, ins, a):
        return {} if len(ins) == 2 else {"bias": self.blob_shape(ins, a)}

    def ops(self, ins, outs, a):
        return Ops(add=numel(outs[0]))

    def affine(self, name, a, channels, w):
        import numpy as np
        if not self.per_channel(a):
            return None
        return np.ones(channels), w[f"{name}.bias"].astype(np.float64)


@register
class Normalize(Layer):
    """SSD's L2 normalization across channels with a learned per-channel scale."""
    type = "Normalize"
    cost = "per element: 2 multiplies, 1 add, 1 divide; 1 square root per position"
    messages = ("norm_param",)
    params = (Param("across_spatial", "bool", True), Param("channel_shared", "bool", True),
              Param("eps", "float", 1e-10, positive=True))
    ignored = ("scale_filler",)
    family = "norm"
    short = "l2norm"

    def param_shapes(self, ins, a):
        return {"weight": (1,) if a["channel_shared"] else (ins[0][1],)}

    def ops(self, ins, outs, a):
        n = numel(outs[0])
        positions = n // ins[0][1] if len(ins[0]) > 1 else 1
        return Ops(mul=2 * n, add=n, div=n, exp=positions)

    def onnx(self, b, n, d, ins):
        import numpy as np
        a, x = d["attrs"], ins[0]
        rank = len(d["in_shapes"][0])
        axes = list(range(1, rank)) if a["across_spatial"] else [1]
        sq = b.node("ReduceSum", [b.node("Mul", [x, x], name=n)[0], b.const(f"{n}_axes", axes, np.int64)],
                    name=n, keepdims=1)[0]
        norm = b.node("Sqrt", [b.node("Add", [sq, b.const(f"{n}_eps", a["eps"])], name=n)[0]], name=n)[0]
        w = b.w[f"{n}.weight"]
        w = w.reshape((-1,) + (1,) * (rank - 2)) if w.size > 1 else w
        return b.node("Mul", [b.node("Div", [x, norm], name=n)[0], b.weight(n, "weight", w)], name=n)

    def backward(self, dys, xs, ys, a, p, rule):
        """y = w z, z = x / |x|: dx = (dz - z sum(dz z)) / |x| over the normalized axes."""
        import numpy as np
        x = xs[0].astype(np.float64)
        dims = tuple(range(1, x.ndim)) if a["across_spatial"] else (1,)
        norm = np.sqrt((x * x).sum(dims, keepdims=True) + a["eps"])
        z = x / norm
        dz = dys[0] * p("weight").reshape((1, -1) + (1,) * (x.ndim - 2))
        return [((dz - z * (dz * z).sum(dims, keepdims=True)) / norm).astype(np.float32)]

    def reference(self, torch, xs, a, p, node):
        x = xs[0]
        dims = tuple(range(1, x.dim())) if a["across_spatial"] else (1,)
        norm = torch.sqrt((x * x).sum(dims, keepdim=True) + a["eps"])
        return [x / norm * p("weight").reshape((1, -1) + (1,) * (x.dim() - 2))]

    def lower_cpu(self, lo, n):
        import numpy as np
        from ..codegen.cpu_kit import f32, i
        d, a, xs, _ = lo.io(n)
        N, C, S = lo.nc_s(xs)
        w = lo.param(np.broadcast_to(lo.w[f"{n}.weight"], (C,)))
        x, y = lo.view(d["inputs"][0], (N, C, S)), lo.view((n, 0), (N, C, S))
        eps = f32(a["eps"])
        if a["across_spatial"]:
            k = lo.kernel("l2norm", f"""
                def NAME(x, w, y):
                    for n in prange({i(N)}):
                        s = Z
                        for c in range({i(C)}):
                            for j in range({i(S)}):
                                s += x[n, c, j] * x[n, c, j]
                        inv = ONE / np.sqrt(s + {eps})
                        for c in range({i(C)}):
                            for j in range({i(S)}):
                                y[n, c, j] = x[n, c, j] * inv * w[c]
                """, 0)
        else:
            k = lo.kernel("l2norm", f"""
                def NAME(x, w, y):
                    for n in prange({i(N)}):
                        for j in range({i(S)}):
                            s = Z
                            for c in range({i(C)}):
                                s += x[n, c, j] * x[n, c, j]
                            inv = ONE / np.sqrt(s + {eps})
                            for c in range({i(C)}):
                                y[n, c, j] = x[n, c, j] * inv * w[c]
                """, 0)
        lo.step([n], [f"{k}({x}, {w}, {y})"])

    def lower_cuda(self, lo, n):
        import numpy as np
        from ..codegen.cuda_kit import ONE, ZERO, f32, i, ix, udiv, ux
        from ..codegen.cuda_kit import BLOCK, Launch
        d, a, xs, _ = lo.io(n)
        N, C, S = lo.nc_s(xs)
        w_off = lo.param_offset(np.broadcast_to(lo.w[f"{n}.weight"], (C,)))
        x_off, y_off = lo.addr(d["inputs"][0]), lo.addr((n, 0))
        eps = f32(a["eps"])
        if not a["across_spatial"]:
            body = f"""
                base = {lo.row_base("i", C, S)}
                s = {ZERO}
                for c in range({ix(i(C))}):
                    t = A[{ux(i(x_off), "base", f"c * {i(S)}")}]
                    s += t * t
                inv = {ONE} / math.sqrt(s + {eps})
                for c in range({ix(i(C))}):
                    A[{ux(i(y_off), "base", f"c * {i(S)}")}] = A[{ux(i(x_off), "base", f"c * {i(S)}")}] * inv * P[{ux(i(w_off), "c")}]
            """
            return lo.step([n], [lo.elementwise("l2norm", body, N * S)])
        # across the whole sample: one block per sample, a shared-memory tree reduction
        lines = [
            "@cuda.jit(cache=True)", "def NAME(A, P):",
            f"    part = cuda.shared.array({BLOCK}, float32)",
            "    t = int32(cuda.threadIdx.x)",
            f"    base = {ix(f'{i(x_off)} + int32(cuda.blockIdx.x) * {i(C * S)}')}",
            f"    out = {ix(f'{i(y_off)} + int32(cuda.blockIdx.x) * {i(C * S)}')}",
            f"    s = {ZERO}",
            f"    for e in range(t, {ix(i(C * S))}, {ix(i(BLOCK))}):",
            f"        v = A[{ux('base', 'e')}]",
            "        s += v * v",
            "    part[t] = s",
            "    cuda.syncthreads()",
            *["    " + l for l in lo.tree("part", "{a} + {b}", BLOCK)],
            f"    inv = {ONE} / math.sqrt(part[0] + {eps})",
            f"    for e in range(t, {ix(i(C * S))}, {ix(i(BLOCK))}):",
            f"        A[{ux('out', 'e')}] = A[{ux('base', 'e')}] * inv * P[{ux(i(w_off), udiv('e', i(S)))}]"]
        text = lo.index_math("\n".join(lines) + "\n")
        return lo.step([n], [Launch(lo.register("l2norm", text), (N, 1, 1), (BLOCK, 1, 1), BLOCK * 4)])
