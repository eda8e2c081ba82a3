"""BatchNorm, Scale, Bias and SSD's Normalize: per-channel affine work.

BatchNorm, Scale and Bias share one kernel per target (`_AffineKernels`); it runs only when
fusion could not fold them into the convolution or InnerProduct before them.
"""
from __future__ import annotations

from ..errors import NetcError
from .base import Layer, Ops, Param, numel, register


class _AffineKernels(Layer):
    """Base of BatchNorm, Scale and Bias: their one kernel per target, y = x * mul + add with
    (mul, add) from BatchNorm's statistics, Scale's or Bias's blobs, or a second input."""

    def lower_cpu(self, lo, n):
        """BatchNorm/Scale/Bias not folded into a conv: y = x * mul[n, c] + add[n, c]."""
        import numpy as np
        from ..codegen.cpu_kit import i
        d, a, xs, _ = lo.io(n)
        N, C, S = lo.nc_s(xs)
        ma = lo.affine(n)
        if ma is not None:
            extra, more, acts = lo.absorb(n, fold=True)
            if more is not None:
                ma = (ma[0] * more[0], ma[1] * more[0] + more[1])
            mul, add = lo.param(ma[0].reshape(1, C)), lo.param(ma[1].reshape(1, C))
            mn = an = 0
        else:
            extra, _, acts = lo.absorb(n, fold=False)
            other = d["inputs"][1]
            per_n = d["in_shapes"][1] == (N, C) and N > 1
            blob = lo.view(other, (N if per_n else 1, C))
            if d["type"] == "Scale":
                mul, mn = blob, int(per_n)
                add = lo.param((lo.w[f"{n}.bias"] if d["attrs"]["bias_term"] else np.zeros(C)).reshape(1, C))
                an = 0
            else:
                mul, mn, add, an = lo.param(np.ones((1, C))), 0, blob, int(per_n)
        out = (extra or [n])[-1]
        x, y = lo.view(d["inputs"][0], (N, C, S)), lo.view((out, 0), (N, C, S))
        k = lo.kernel("affine", f"""
            def NAME(x, m, a, y):
                for r in prange({i(N * C)}):
                    n = r // {i(C)}
                    c = r % {i(C)}
                    mc = m[n * {i(mn)}, c]
                    ac = a[n * {i(an)}, c]
                    for j in range({i(S)}):
                        v = x[n, c, j] * mc + ac
ACTS
                        y[n, c, j] = v
            """, N * C * S * 2, acts)
        lo.step([n, *extra], [f"{k}({x}, {mul}, {add}, {y})"])
        return [n, *extra]

    def lower_cuda(self, lo, n):
        """BatchNorm/Scale/Bias not folded into a conv: y = x * mul[n, c] + add[n, c]."""
        import numpy as np
        from ..codegen.cuda_kit import ONE, i, split_index, ux
        d, a, xs, _ = lo.io(n)
        N, C, S = lo.nc_s(xs)
        ma = lo.affine(n)
        if ma is not None:
            extra, more, acts, out = lo.fused(n, fold=True)
            if more is not None:
                ma = (ma[0] * more[0], ma[1] * more[0] + more[1])
            mul, add = f"P[{ux(i(lo.param_offset(ma[0])), 'c')}]", f"P[{ux(i(lo.param_offset(ma[1])), 'c')}]"
        else:
            extra, _, acts, out = lo.fused(n, fold=False)
            other = d["inputs"][1]
            per_n = d["in_shapes"][1] == (N, C) and N > 1
            blob = f"A[{ux(i(lo.addr(other)), f'n * {i(C)} + c' if per_n else 'c')}]"
            if d["type"] == "Scale":
                bias = lo.w[f"{n}.bias"] if d["attrs"]["bias_term"] else np.zeros(C)
                mul, add = blob, f"P[{ux(i(lo.param_offset(bias)), 'c')}]"
            else:
                mul, add = ONE, blob
        x_off = lo.addr(d["inputs"][0])
        body = "\n".join(split_index("i", [("n", N), ("c", C), ("_", S)]) + [
            f"v = A[{ux(i(x_off), 'i')}] * {mul} + {add}", "ACTS", f"A[{lo.out_at(out)}] = v"])
        return lo.step([n, *extra], [lo.elementwise("affine", body, N * C * S, acts)])


@register
class BatchNorm(_AffineKernels):
    """Caffe's BatchNorm has no affine part (a Scale layer follows); its three blobs are stored
    statistics: mean, variance and the moving-average factor, counted as buffers (2C + 1)."""
    type = "BatchNorm"
    cost = "per element: 1 add + 1 divide (+ 1 multiply + 1 add with affine)"
    aliases = ("BN",)
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

    def reference(self, torch, xs, a, p, node):
        f = p("moving_average_factor", torch.ones(1))[0]
        f = 1 / f if f != 0 else 1
        return [torch.nn.functional.batch_norm(
            xs[0], p("mean") * f, p("var") * f, p("weight") if a["affine"] else None,
            p("bias") if a["affine"] else None, False, 0.0, a["eps"])]


class _ChannelAffine(_AffineKernels):
    family = "norm"
    elementwise = True
    max_inputs = 2

    def normalize(self, a, loc):
        if a["axis"] != 1 or a["num_axes"] != 1:
            raise NetcError(f"{self.type}: only axis 1, num_axes 1 (per channel) is supported", loc)
        return a

    def shapes(self, ins, a, loc):
        if len(ins[0]) < 2:
            raise NetcError(f"{self.type} needs a channel axis", loc)
        if len(ins) == 2 and ins[1] != (ins[0][1],) and ins[1] != ins[0][:2]:
            raise NetcError(f"{self.type}: second input must hold one value per channel "
                            f"({ins[0][1]}), got {list(ins[1])}", loc)
        return [ins[0]]

    def reference(self, torch, xs, a, p, node):
        x = xs[0]
        shape = (x.shape[0] if len(xs) == 2 and xs[1].dim() == 2 else 1, x.shape[1]) + (1,) * (x.dim() - 2)
        if self.type == "Scale":
            m = (xs[1] if len(xs) == 2 else p("weight")).reshape(shape)
            b = p("bias").reshape((1,) + shape[1:]) if a["bias_term"] else 0
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
        c = ins[0][1]
        shapes = {} if len(ins) == 2 else {"weight": (c,)}
        if a["bias_term"]:
            shapes["bias"] = (c,)
        return shapes

    def ops(self, ins, outs, a):
        n = numel(outs[0])
        return Ops(mul=n, add=n if a["bias_term"] else 0)

    def affine(self, name, a, channels, w):
        import numpy as np
        return w[f"{name}.weight"].astype(np.float64), (w[f"{name}.bias"] if a["bias_term"] else np.zeros(channels))


@register
class Bias(_ChannelAffine):
    type = "Bias"
    cost = "per element: 1 add"
    messages = ("bias_param",)
    params = (Param("axis", default=1, min=None), Param("num_axes", default=1, min=None))
    short = "bias"

    def param_shapes(self, ins, a):
        return {} if len(ins) == 2 else {"bias": (ins[0][1],)}

    def ops(self, ins, outs, a):
        return Ops(add=numel(outs[0]))

    def affine(self, name, a, channels, w):
        import numpy as np
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
