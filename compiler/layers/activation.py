"""Pointwise layers: same shape out as in, may run in place, a few ops per element.

Each says what it computes once, as statements on a float32 local `v` in a target's dialect
(`activation`); the kernels (`lower_cpu`, `lower_cuda`) are one shared loop over them, and the
producers' epilogues run the same statements when an activation is fused. PReLU reads a
per-channel slope, so it has kernels of its own and does not fuse.
"""
from __future__ import annotations

from .base import Layer, Ops, Param, numel, register


class _Pointwise(Layer):
    family = "activation"
    elementwise = True
    per_element = Ops()  # counts for one element

    def ops(self, ins, outs, a):
        n = numel(outs[0])
        e = self.element_ops(a)
        return Ops(comp=e.comp * n, add=e.add * n, mul=e.mul * n, div=e.div * n, exp=e.exp * n)

    def element_ops(self, a) -> Ops:
        return self.per_element

    def backward(self, dys, xs, ys, a, p, rule):
        d = self.derivative(xs[0], ys[0], a)
        return None if d is None else [dys[0] * d]

    def derivative(self, x, y, a):
        """dy/dx per element (numpy arrays of the forward's input and output); None: no rule."""
        return None

    @property
    def cost(self) -> str:
        e = self.per_element
        parts = [f"{v} {one if v == 1 else many}" for one, many, v in (
            ("comparison", "comparisons", e.comp), ("add", "adds", e.add), ("multiply", "multiplies", e.mul),
            ("divide", "divides", e.div), ("exp", "exps", e.exp)) if v]
        return "per element: " + (", ".join(parts) or "none (identity)")

    def onnx(self, b, n, d, ins):
        return [self.onnx_op(b, n, d["attrs"], ins[0])]

    def onnx_op(self, b, n, a, x) -> str:
        """The one value computing this layer of `x` (subclasses: ONNX ops)."""
        raise NotImplementedError

    def lower_cpu(self, lo, n):
        from ..codegen.cpu_kit import i
        d = lo.g.nodes[n]
        extra, _, acts = lo.absorb(n, fold=False)
        acts = lo.act_lines(n) + acts
        out = (extra or [n])[-1]
        size = numel(d["shapes"][0])
        x, y = lo.view(d["inputs"][0], (size,)), lo.view((out, 0), (size,))
        if not acts:
            same = lo.prog.views[lo.prog.view_of[d["inputs"][0]]][0] == \
                lo.prog.views[lo.prog.view_of[(out, 0)]][0]
            lo.step([n, *extra], [] if same else [f"np.copyto({y}, {x})"])
            return [n, *extra]
        k = lo.kernel(d["type"].lower(), f"""
            def NAME(x, y):
                for j in prange({i(size)}):
                    v = x[j]
ACTS
                    y[j] = v
            """, size * 4, acts)
        lo.step([n, *extra], [f"{k}({x}, {y})"])
        return [n, *extra]

    def lower_cuda(self, lo, n):
        from ..codegen.cuda_kit import i, ux
        d = lo.g.nodes[n]
        extra, _, acts, out = lo.fused(n, fold=False)
        acts = lo.act_lines(n) + acts
        size = numel(d["shapes"][0])
        x_off, y_at = lo.addr(d["inputs"][0]), lo.out_at(out)
        if not acts and ux(i(x_off), "i") == y_at:
            return lo.step([n, *extra], [])
        body = f"v = A[{ux(i(x_off), 'i')}]\nACTS\nA[{y_at}] = v"
        return lo.step([n, *extra], [lo.elementwise(d["type"].lower(), body, size, acts)])


@register
class ReLU(_Pointwise):
    type = "ReLU"
    cost = "per element: 1 comparison (+ 1 multiply with a negative slope)"
    aliases = ("RELU",)
    messages = ("relu_param",)
    params = (Param("negative_slope", "float", 0.0, min=None),)
    short = "relu"

    def backward(self, dys, xs, ys, a, p, rule):
        """The rules of the visualization papers: backprop (f > 0) R (a leak passes slope R),
        deconvnet (R > 0) R, guided backpropagation (f > 0) (R > 0) R."""
        import numpy as np
        dy, x = dys[0], xs[0]
        if rule == "deconvnet":
            return [np.maximum(dy, 0)]
        if rule == "guided":
            return [dy * ((x > 0) & (dy > 0))]
        s = a["negative_slope"]
        return [np.where(x > 0, dy, dy * np.float32(s))]

    def element_ops(self, a):
        return Ops(comp=1, mul=1 if a["negative_slope"] else 0)

    def activation(self, a, k):
        s = a["negative_slope"]
        return [f"v = v if v > {k.zero} else {k.zero}"] if s == 0 else [f"v = v if v > {k.zero} else v * {k.f32(s)}"]

    def reference(self, torch, xs, a, p, node):
        return [torch.nn.functional.leaky_relu(xs[0], a["negative_slope"])]

    def onnx_op(self, b, n, a, x):
        if a["negative_slope"]:
            return b.node("LeakyRelu", [x], name=n, alpha=float(a["negative_slope"]))[0]
        return b.node("Relu", [x], name=n)[0]


@register
class PReLU(_Pointwise):
    type = "PReLU"
    messages = ("prelu_param",)
    params = (Param("channel_shared", "bool", False),)
    short = "prelu"
    per_element = Ops(comp=1, mul=1)

    def param_shapes(self, ins, a):
        return {"weight": (1,) if a["channel_shared"] else (ins[0][1],)}

    def backward(self, dys, xs, ys, a, p, rule):
        import numpy as np
        x, w = xs[0], p("weight")
        slope = w.reshape((1, -1) + (1,) * (x.ndim - 2)) if w.size > 1 else w.reshape(())
        return [np.where(x > 0, dys[0], dys[0] * slope)]

    def reference(self, torch, xs, a, p, node):
        return [torch.nn.functional.prelu(xs[0], p("weight"))]

    def init_range(self, blob, shape, a):
        return 0.05, 0.3

    def onnx_op(self, b, n, a, x):
        slope = b.w[f"{n}.weight"]
        return b.node("PRelu", [x, b.weight(n, "weight", slope.reshape(-1, 1, 1) if slope.size > 1 else slope)],
                      name=n)[0]

    def lower_cpu(self, lo, n):
        import numpy as np
        from ..codegen.cpu_kit import i
        d, a, xs, _ = lo.io(n)
        N, C, S = lo.nc_s(xs)
        wv = lo.w[f"{n}.weight"]
        w = lo.param(np.broadcast_to(wv, (C,)))
        extra, _, acts = lo.absorb(n, fold=False)
        out = (extra or [n])[-1]
        x, y = lo.view(d["inputs"][0], (N, C, S)), lo.view((out, 0), (N, C, S))
        k = lo.kernel("prelu", f"""
            def NAME(x, w, y):
                for r in prange({i(N * C)}):
                    n = r // {i(C)}
                    c = r % {i(C)}
                    s = w[c]
                    for j in range({i(S)}):
                        v = x[n, c, j]
                        v = v if v > Z else v * s
ACTS
                        y[n, c, j] = v
            """, N * C * S * 2, acts)
        lo.step([n, *extra], [f"{k}({x}, {w}, {y})"])
        return [n, *extra]

    def lower_cuda(self, lo, n):
        import numpy as np
        from ..codegen.cuda_kit import ZERO, i, split_index, ux
        d, a, xs, _ = lo.io(n)
        N, C, S = lo.nc_s(xs)
        w_off = lo.param_offset(np.broadcast_to(lo.w[f"{n}.weight"], (C,)))
        extra, _, acts, out = lo.fused(n, fold=False)
        x_off = lo.addr(d["inputs"][0])
        body = "\n".join(split_index("i", [("_", N), ("c", C), ("_", S)]) + [
            f"v = A[{ux(i(x_off), 'i')}]", f"v = v if v > {ZERO} else v * P[{ux(i(w_off), 'c')}]",
            "ACTS", f"A[{lo.out_at(out)}] = v"])
        return lo.step([n, *extra], [lo.elementwise("prelu", body, N * C * S, acts)])


@register
class ELU(_Pointwise):
    type = "ELU"
    messages = ("elu_param",)
    params = (Param("alpha", "float", 1.0, min=None),)
    short = "elu"
    per_element = Ops(comp=1, exp=1, add=1, mul=1)

    def derivative(self, x, y, a):
        import numpy as np
        return np.where(x > 0, np.float32(1), y + np.float32(a["alpha"]))

    def activation(self, a, k):
        return [f"v = v if v > {k.zero} else {k.f32(a['alpha'])} * ({k.math}.exp(v) - {k.one})"]

    def reference(self, torch, xs, a, p, node):
        return [torch.nn.functional.elu(xs[0], a["alpha"])]

    def onnx_op(self, b, n, a, x):
        return b.node("Elu", [x], name=n, alpha=float(a["alpha"]))[0]


@register
class Sigmoid(_Pointwise):
    type = "Sigmoid"
    aliases = ("SIGMOID",)
    messages = ("sigmoid_param",)
    short = "sigmoid"
    per_element = Ops(exp=1, add=1, div=1)

    def derivative(self, x, y, a):
        return y * (1 - y)

    def activation(self, a, k):
        return [f"v = {k.one} / ({k.one} + {k.logistic_exp}(-v))"]

    def reference(self, torch, xs, a, p, node):
        return [torch.sigmoid(xs[0])]

    def onnx_op(self, b, n, a, x):
        return b.node("Sigmoid", [x], name=n)[0]


@register
class HardSigmoid(_Pointwise):
    """ONNX's HardSigmoid, max(0, min(1, alpha x + beta)): MobileNetV3's gate (alpha 1/6)."""
    type = "HardSigmoid"
    messages = ("hard_sigmoid_param",)
    params = (Param("alpha", "float", 0.2, min=None), Param("beta", "float", 0.5, min=None))
    short = "hsigmoid"
    per_element = Ops(mul=1, add=1, comp=2)

    def derivative(self, x, y, a):
        import numpy as np
        t = x * np.float32(a["alpha"]) + np.float32(a["beta"])
        return ((t > 0) & (t < 1)) * np.float32(a["alpha"])

    def activation(self, a, k):
        return [f"v = min(max(v * {k.f32(a['alpha'])} + {k.f32(a['beta'])}, {k.zero}), {k.one})"]

    def reference(self, torch, xs, a, p, node):
        return [(xs[0] * a["alpha"] + a["beta"]).clamp(0, 1)]

    def onnx_op(self, b, n, a, x):
        return b.node("HardSigmoid", [x], name=n, alpha=float(a["alpha"]), beta=float(a["beta"]))[0]


@register
class HardSwish(_Pointwise):
    """x * HardSigmoid(x) with alpha 1/6, beta 1/2 (ONNX HardSwish, MobileNetV3)."""
    type = "HardSwish"
    short = "hswish"
    per_element = Ops(mul=2, add=1, comp=2)

    def derivative(self, x, y, a):
        import numpy as np
        return np.where(x < -3, np.float32(0), np.where(x > 3, np.float32(1), x / 3 + np.float32(0.5)))

    def activation(self, a, k):
        return [f"v = v * min(max(v * {k.f32(1 / 6)} + {k.f32(0.5)}, {k.zero}), {k.one})"]

    def reference(self, torch, xs, a, p, node):
        return [torch.nn.functional.hardswish(xs[0])]

    def onnx_op(self, b, n, a, x):
        return b.node("HardSwish", [x], name=n)[0]


@register
class SELU(_Pointwise):
    """gamma * (x if x > 0 else alpha * (exp(x) - 1)): ONNX's Selu, self-normalizing nets."""
    type = "SELU"
    messages = ("selu_param",)
    params = (Param("alpha", "float", 1.67326319217681884765625, positive=True),
              Param("gamma", "float", 1.05070102214813232421875, positive=True))
    short = "selu"
    per_element = Ops(comp=1, exp=1, add=1, mul=2)

    def derivative(self, x, y, a):
        import numpy as np
        return np.where(x > 0, np.float32(a["gamma"]), y + np.float32(a["gamma"] * a["alpha"]))

    def activation(self, a, k):
        al, ga = k.f32(a["alpha"]), k.f32(a["gamma"])
        return [f"v = {ga} * v if v > {k.zero} else {ga} * ({al} * ({k.math}.exp(v) - {k.one}))"]

    def reference(self, torch, xs, a, p, node):
        x = xs[0]
        return [a["gamma"] * torch.where(x > 0, x, a["alpha"] * (torch.exp(x) - 1))]

    def onnx_op(self, b, n, a, x):
        return b.node("Selu", [x], name=n, alpha=float(a["alpha"]), gamma=float(a["gamma"]))[0]


@register
class TanH(_Pointwise):
    type = "TanH"
    aliases = ("TANH", "Tanh")
    messages = ("tanh_param",)
    short = "tanh"
    per_element = Ops(exp=2, add=2, div=1)

    def derivative(self, x, y, a):
        return 1 - y * y

    def activation(self, a, k):
        return [f"v = {k.math}.tanh(v)"]

    def reference(self, torch, xs, a, p, node):
        return [torch.tanh(xs[0])]

    def onnx_op(self, b, n, a, x):
        return b.node("Tanh", [x], name=n)[0]


@register
class AbsVal(_Pointwise):
    type = "AbsVal"
    aliases = ("ABSVAL",)
    short = "abs"
    per_element = Ops(comp=1)

    def derivative(self, x, y, a):
        import numpy as np
        return np.sign(x)

    def activation(self, a, k):
        return ["v = abs(v)"]

    def reference(self, torch, xs, a, p, node):
        return [xs[0].abs()]

    def onnx_op(self, b, n, a, x):
        return b.node("Abs", [x], name=n)[0]


@register
class BNLL(_Pointwise):
    type = "BNLL"
    short = "bnll"
    per_element = Ops(exp=2, add=1)

    def derivative(self, x, y, a):
        import numpy as np
        return 1 / (1 + np.exp(-x))

    def activation(self, a, k):
        m, z = k.math, k.zero
        return [f"v = v + {m}.log1p({m}.exp(-v)) if v > {z} else {m}.log1p({m}.exp(v))"]

    def reference(self, torch, xs, a, p, node):
        return [torch.nn.functional.softplus(xs[0])]

    def onnx_op(self, b, n, a, x):
        return b.node("Softplus", [x], name=n)[0]


@register
class Clip(_Pointwise):
    """Caffe 1.0's Clip; ReLU6 is Clip(min=0, max=6)."""
    type = "Clip"
    aliases = ("ReLU6",)
    messages = ("clip_param",)
    params = (Param("min", "float", 0.0, min=None), Param("max", "float", 6.0, min=None))
    short = "clip"
    per_element = Ops(comp=2)

    def derivative(self, x, y, a):
        return ((x >= a["min"]) & (x <= a["max"])).astype(x.dtype)

    def written_params(self, a):
        return [("min", a["min"]), ("max", a["max"])]   # BVLC's clip_param requires both

    def activation(self, a, k):
        return [f"v = min(max(v, {k.f32(a['min'])}), {k.f32(a['max'])})"]

    def reference(self, torch, xs, a, p, node):
        return [xs[0].clamp(a["min"], a["max"])]

    def onnx_op(self, b, n, a, x):
        return b.node("Clip", [x, b.const(f"{n}_min", a["min"]), b.const(f"{n}_max", a["max"])], name=n)[0]


@register
class Power(_Pointwise):
    """(shift + scale * x) ^ power."""
    type = "Power"
    cost = "per element: 1 multiply if scale != 1, 1 add if shift != 0, 1 power if power != 1"
    aliases = ("POWER",)
    messages = ("power_param",)
    params = (Param("power", "float", 1.0, min=None), Param("scale", "float", 1.0, min=None),
              Param("shift", "float", 0.0, min=None))
    short = "power"

    def derivative(self, x, y, a):
        import numpy as np
        pw, sc, sh = a["power"], a["scale"], a["shift"]
        if pw == 1:
            return np.full_like(x, sc)
        return np.float32(pw * sc) * np.power(sh + sc * x, np.float32(pw - 1))

    def element_ops(self, a):
        return Ops(mul=1 if a["scale"] != 1 else 0, add=1 if a["shift"] else 0,
                   exp=1 if a["power"] != 1 else 0)

    def activation(self, a, k):
        p, sc, sh = a["power"], a["scale"], a["shift"]
        lines = [] if sc == 1 else [f"v = v * {k.f32(sc)}"]
        lines += [] if sh == 0 else [f"v = v + {k.f32(sh)}"]
        if p == 2:
            lines.append("v = v * v")
        elif p != 1:
            lines.append("v = " + k.power.format(p=k.f32(p)))
        return lines

    def reference(self, torch, xs, a, p, node):
        return [(a["shift"] + a["scale"] * xs[0]) ** a["power"]]

    def onnx_op(self, b, n, a, x):
        y = x
        if a["scale"] != 1:
            y = b.node("Mul", [y, b.const(f"{n}_scale", a["scale"])], name=n)[0]
        if a["shift"]:
            y = b.node("Add", [y, b.const(f"{n}_shift", a["shift"])], name=n)[0]
        if a["power"] != 1:
            y = b.node("Pow", [y, b.const(f"{n}_power", a["power"])], name=n)[0]
        return y if y != x else b.node("Identity", [x], name=n)[0]


@register
class Dropout(_Pointwise):
    """Identity at inference (Caffe scales during training)."""
    type = "Dropout"
    aliases = ("DROPOUT",)
    messages = ("dropout_param",)
    params = (Param("dropout_ratio", "float", 0.5), Param("scale_train", "bool", True))
    short = "drop"
    family = "activation"

    def backward(self, dys, xs, ys, a, p, rule):
        return [dys[0]]          # inference: the identity

    def activation(self, a, k):
        return []

    def reference(self, torch, xs, a, p, node):
        return [xs[0].clone()]

    def onnx_op(self, b, n, a, x):
        return b.node("Identity", [x], name=n)[0]


@register
class Swish(_Pointwise):
    """y = x * sigmoid(beta * x), the Caffe fork layer (`swish_param { beta }`); SiLU at beta 1."""
    type = "Swish"
    cost = "per element: 1 exp, 1 add, 1 divide (+ 1 multiply if beta != 1)"
    messages = ("swish_param",)
    params = (Param("beta", "float", 1.0, min=None),)
    short = "swish"

    def derivative(self, x, y, a):
        import numpy as np
        s = 1 / (1 + np.exp(-np.float32(a["beta"]) * x))
        return s + np.float32(a["beta"]) * x * s * (1 - s)

    def element_ops(self, a):
        return Ops(mul=1 if a["beta"] != 1 else 0, exp=1, add=1, div=1)

    def activation(self, a, k):
        bx = "v" if a["beta"] == 1 else f"({k.f32(a['beta'])} * v)"
        return [f"v = v / ({k.one} + {k.logistic_exp}(-{bx}))"]

    def reference(self, torch, xs, a, p, node):
        return [xs[0] * torch.sigmoid(a["beta"] * xs[0])]

    def onnx_op(self, b, n, a, x):
        bx = x if a["beta"] == 1 else b.node("Mul", [x, b.const(f"{n}_beta", a["beta"])], name=n)[0]
        return b.node("Mul", [x, b.node("Sigmoid", [bx], name=n)[0]], name=n)[0]


def _log_of_base(base: float) -> float:
    """Caffe's base -1 means e (exp_layer.cpp, log_layer.cpp)."""
    import math
    return 1.0 if base == -1 else math.log(base)


class _BaseShiftScale(_Pointwise):
    """Exp and Log: base, scale, shift as in caffe.proto's ExpParameter / LogParameter."""
    params = (Param("base", "float", -1.0, min=None), Param("scale", "float", 1.0, min=None),
              Param("shift", "float", 0.0, min=None))

    def normalize(self, a, loc):
        from ..errors import NetcError
        if a["base"] != -1 and a["base"] <= 0:
            raise NetcError(f"{self.type}: base must be positive (or -1 for e), got {a['base']}", loc)
        if a["base"] == 1 and self.type == "Log":
            raise NetcError("Log: base 1 has no logarithm", loc)
        return a

    def element_ops(self, a):
        return Ops(mul=1 if a["scale"] != 1 else 0, add=1 if a["shift"] else 0, exp=1)

    def _inner(self, a, k) -> list[str]:
        lines = [] if a["scale"] == 1 else [f"v = v * {k.f32(a['scale'])}"]
        return lines + ([] if a["shift"] == 0 else [f"v = v + {k.f32(a['shift'])}"])

    def _onnx_inner(self, b, n, a, x):
        if a["scale"] != 1:
            x = b.node("Mul", [x, b.const(f"{n}_scale", a["scale"])], name=n)[0]
        if a["shift"]:
            x = b.node("Add", [x, b.const(f"{n}_shift", a["shift"])], name=n)[0]
        return x


@register
class Exp(_BaseShiftScale):
    """y = base ^ (shift + scale * x)."""
    type = "Exp"
    aliases = ("EXP",)
    messages = ("exp_param",)
    short = "exp"

    def derivative(self, x, y, a):
        import numpy as np
        return y * np.float32(_log_of_base(a["base"]) * a["scale"])

    def activation(self, a, k):
        lines = self._inner(a, k)
        ln = _log_of_base(a["base"])
        return lines + [f"v = {k.math}.exp(v)" if ln == 1.0 else f"v = {k.math}.exp(v * {k.f32(ln)})"]

    def reference(self, torch, xs, a, p, node):
        return [torch.exp(_log_of_base(a["base"]) * (a["shift"] + a["scale"] * xs[0]))]

    def onnx_op(self, b, n, a, x):
        x = self._onnx_inner(b, n, a, x)
        ln = _log_of_base(a["base"])
        if ln != 1.0:
            x = b.node("Mul", [x, b.const(f"{n}_ln_base", ln)], name=n)[0]
        return b.node("Exp", [x], name=n)[0]


@register
class Log(_BaseShiftScale):
    """y = log_base(shift + scale * x)."""
    type = "Log"
    messages = ("log_param",)
    short = "log"

    def derivative(self, x, y, a):
        import numpy as np
        return np.float32(a["scale"] / _log_of_base(a["base"])) / (np.float32(a["shift"]) + np.float32(a["scale"]) * x)

    def activation(self, a, k):
        lines = self._inner(a, k)
        ln = _log_of_base(a["base"])
        return lines + [f"v = {k.math}.log(v)" if ln == 1.0 else f"v = {k.math}.log(v) * {k.f32(1.0 / ln)}"]

    def reference(self, torch, xs, a, p, node):
        return [torch.log(a["shift"] + a["scale"] * xs[0]) / _log_of_base(a["base"])]

    def onnx_op(self, b, n, a, x):
        y = b.node("Log", [self._onnx_inner(b, n, a, x)], name=n)[0]
        ln = _log_of_base(a["base"])
        return y if ln == 1.0 else b.node("Div", [y, b.const(f"{n}_ln_base", ln)], name=n)[0]


@register
class Threshold(_Pointwise):
    """y = 1 where x > threshold, else 0 (threshold_layer.cpp)."""
    type = "Threshold"
    aliases = ("THRESHOLD",)
    messages = ("threshold_param",)
    params = (Param("threshold", "float", 0.0, min=None),)
    short = "threshold"
    per_element = Ops(comp=1)

    def derivative(self, x, y, a):
        import numpy as np
        return np.zeros_like(x)      # a step: zero almost everywhere

    def activation(self, a, k):
        return [f"v = {k.one} if v > {k.f32(a['threshold'])} else {k.zero}"]

    def reference(self, torch, xs, a, p, node):
        return [(xs[0] > a["threshold"]).to(xs[0].dtype)]

    def onnx_op(self, b, n, a, x):
        above = b.node("Greater", [x, b.const(f"{n}_threshold", a["threshold"])], name=n)[0]
        return b.node("Cast", [above], name=n, to=1)[0]
