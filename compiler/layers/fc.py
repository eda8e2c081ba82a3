"""InnerProduct: a matmul over the input flattened from `axis` on (C,H,W order).

Kernels: numpy sgemm plus a bias/activation pass on the CPU, codegen/cuda_gemm.py's fc kernel on
CUDA.
"""
from __future__ import annotations

from ..errors import NetcError
from .base import Layer, Ops, Param, numel, register


@register
class InnerProduct(Layer):
    type = "InnerProduct"
    cost = "MACs: output elements x inputs per row; + 1 add per output with a bias"
    aliases = ("INNER_PRODUCT", "Linear", "FullyConnected")
    messages = ("inner_product_param",)
    params = (
        Param("num_output", positive=True),
        Param("bias_term", "bool", True),
        Param("axis", default=1, min=None),
        Param("transpose", "bool", False),
    )
    family = "fc"
    short = "fc"

    def normalize(self, a, loc):
        if a["num_output"] is None:
            raise NetcError('InnerProduct needs "num_output"', loc)
        return a

    def _axis(self, shape, a, loc=None):
        ax = a["axis"] % len(shape) if len(shape) else 0
        return ax

    def shapes(self, ins, a, loc):
        if len(ins[0]) < 1:
            raise NetcError("InnerProduct needs an input with at least one axis", loc)
        ax = self._axis(ins[0], a)
        return [tuple(ins[0][:ax]) + (a["num_output"],)]

    def fan_in(self, shape, a):
        return numel(shape[self._axis(shape, a):])

    def param_shapes(self, ins, a):
        k = self.fan_in(ins[0], a)
        w = (k, a["num_output"]) if a["transpose"] else (a["num_output"], k)
        return {"weight": w, **({"bias": (a["num_output"],)} if a["bias_term"] else {})}

    def onnx(self, b, n, d, ins):
        """Flatten from `axis`, then Gemm ([out, in] weights: transB) or, for transpose, MatMul;
        an axis past the batch gets its leading axes back with a Reshape."""
        a, x_shape, y_shape = d["attrs"], d["in_shapes"][0], d["shapes"][0]
        ax = self._axis(x_shape, a)
        flat = b.node("Flatten", [ins[0]], name=n, axis=ax)[0]
        if ax == 1 and not a["transpose"]:
            args = [flat, b.weight(n, "weight")] + ([b.weight(n, "bias")] if a["bias_term"] else [])
            return b.node("Gemm", args, name=n, transB=1)
        w = b.w[f"{n}.weight"]
        y = b.node("MatMul", [flat, b.weight(n, "weight", w if a["transpose"] else w.T)], name=n)[0]
        if a["bias_term"]:
            y = b.node("Add", [y, b.weight(n, "bias")], name=n)[0]
        if ax == 1:
            return [y]
        import numpy as np
        shape = [-1, *y_shape[1:ax], a["num_output"]]      # -1: the batch, whatever it is
        return b.node("Reshape", [y, b.const(f"{n}_shape", shape, np.int64)], name=n)

    def ops(self, ins, outs, a):
        return Ops(macc=numel(outs[0]) * self.fan_in(ins[0], a),
                   add=numel(outs[0]) if a["bias_term"] else 0)

    def window(self, ins, a):
        if len(ins[0]) == 4:
            return ((ins[0][2], 1, 0), (ins[0][3], 1, 0))
        return None

    def init_range(self, blob, shape, a):
        """He's uniform range (variance 2 / fan_in, torch's kaiming_uniform_) for the weights."""
        if blob != "weight":
            return super().init_range(blob, shape, a)
        fan_in = shape[0] if a.get("transpose") else numel(shape[1:])
        hi = (6.0 / max(fan_in, 1)) ** 0.5
        return -hi, hi

    def brief(self, a):
        return f"\u00d7{a['num_output']}"

    def backward(self, dys, xs, ys, a, p, rule):
        x = xs[0]
        w = p("weight")
        w = w.T if a["transpose"] else w          # [out, in]
        dy = dys[0].reshape(-1, w.shape[0])
        return [(dy @ w).reshape(x.shape)]

    def reference(self, torch, xs, a, p, node):
        xf = xs[0].flatten(a["axis"] % xs[0].dim())
        wt = p("weight").T if a["transpose"] else p("weight")
        return [xf @ wt.T + (p("bias") if a["bias_term"] else 0)]

    def lower_cpu(self, lo, n):
        import numpy as np
        d, a, xs, ys = lo.io(n)
        O = a["num_output"]
        K = self.fan_in(xs, a)
        R = numel(ys) // O
        wt = lo.w[f"{n}.weight"]   # float32 (VGG's fc6 is 400 MB): no float64 copy unless folded
        if a["transpose"]:
            wt = wt.T                                   # -> (O, K)
        b = lo.w[f"{n}.bias"].astype(np.float64) if a["bias_term"] else np.zeros(O)
        per_channel = len(ys) == 2  # folding needs the output's axis 1 to be num_output
        extra, mul_add, acts = lo.absorb(n, fold=per_channel)
        if mul_add is not None:
            wt, b = wt * mul_add[0][:, None], b * mul_add[0] + mul_add[1]
        out = (extra or [n])[-1]
        bias = lo.param(b)
        if R == 1:
            w, x, y = lo.param(wt), lo.view(d["inputs"][0], (K,)), lo.view((out, 0), (O,))
            lines = [f"np.matmul({w}, {x}, out={y})"]
        else:
            w, x, y = lo.param(wt.T), lo.view(d["inputs"][0], (R, K)), lo.view((out, 0), (R, O))
            lines = [f"np.matmul({x}, {w}, out={y})"]
        lines.append(self._row_bias(lo, lo.view((out, 0), (R, O)), R, O, bias, acts))
        lo.step([n, *extra], lines)
        return [n, *extra]

    def _row_bias(self, lo, y, R, O, bias, acts):
        from ..codegen.cpu_kit import i
        k = lo.kernel("rowbias", f"""
            def NAME(y, b):
                for j in prange({i(O)}):
                    for r in range({i(R)}):
                        v = y[r, j] + b[j]
ACTS
                        y[r, j] = v
            """, R * O * 8, acts)
        return f"{k}({y}, {bias})"

    def lower_cuda(self, lo, n):
        from ..codegen import cuda_gemm as gemm
        import numpy as np
        d, a, xs, ys = lo.io(n)
        O = a["num_output"]
        K = self.fan_in(xs, a)
        R = numel(ys) // O
        wt = lo.w[f"{n}.weight"].astype(np.float64)
        if a["transpose"]:
            wt = wt.T                                   # -> (O, K)
        b = lo.w[f"{n}.bias"].astype(np.float64) if a["bias_term"] else np.zeros(O)
        extra, mul_add, acts, out = lo.fused(n, fold=len(ys) == 2)
        if mul_add is not None:
            wt, b = wt * mul_add[0][:, None], b * mul_add[0] + mul_add[1]
        x_off, y_off, b_off = lo.addr(d["inputs"][0]), lo.addr(out), lo.param_offset(b)
        w_off = lo.param_offset(gemm.pack_fc_weights(wt.astype(np.float32)))
        ks = gemm.fc_kernel("NAME", R, K, O, x_off, w_off, b_off, y_off, acts,
                            tile=lo.gemm_tile(gemm.fc_problem(R, K, O), n))
        return lo.step([n, *extra], [lo.gemm_launch("fc", ks)])


@register
class Embed(Layer):
    """BVLC's Embed (embed_layer.cpp): each input value is a row index into a learned
    [input_dim, num_output] table; the output appends num_output to the input's shape. An index
    outside [0, input_dim) gives NaN (Caffe stops on it), never a read outside the table."""
    type = "Embed"
    cost = "no multiplies: one row copied (+ 1 add per output with a bias)"
    messages = ("embed_param",)
    params = (Param("num_output", positive=True), Param("input_dim", positive=True),
              Param("bias_term", "bool", True))
    family = "fc"
    short = "embed"

    def normalize(self, a, loc):
        if a["num_output"] is None or a["input_dim"] is None:
            raise NetcError('Embed needs "num_output" and "input_dim"', loc)
        return a

    def shapes(self, ins, a, loc):
        return [(*ins[0], a["num_output"])]

    def param_shapes(self, ins, a):
        return {"weight": (a["input_dim"], a["num_output"]), **({"bias": (a["num_output"],)} if a["bias_term"] else {})}

    def ops(self, ins, outs, a):
        return Ops(add=numel(outs[0]) if a["bias_term"] else 0)

    def init_range(self, blob, shape, a):
        return (-0.5, 0.5) if blob == "weight" else super().init_range(blob, shape, a)

    def reference(self, torch, xs, a, p, node):
        y = p("weight")[xs[0].long()]
        return [y + p("bias") if a["bias_term"] else y]

    def onnx(self, b, n, d, ins):
        index = b.node("Cast", ins, name=n, to=7)[0]            # int64
        y = b.node("Gather", [b.weight(n, "weight"), index], name=n, axis=0)[0]
        return b.node("Add", [y, b.weight(n, "bias")], name=n) if d["attrs"]["bias_term"] else [y]

    def _bias(self, lo, n, a):
        import numpy as np
        return lo.w[f"{n}.bias"] if a["bias_term"] else np.zeros(a["num_output"], np.float32)

    def lower_cpu(self, lo, n):
        from ..codegen.cpu_kit import i
        d, a = lo.g.nodes[n], lo.g.nodes[n]["attrs"]
        m, k, o = numel(d["in_shapes"][0]), a["input_dim"], a["num_output"]
        x, y = lo.view(d["inputs"][0], (m,)), lo.view((n, 0), (m, o))
        w, bias = lo.param(lo.w[f"{n}.weight"]), lo.param(self._bias(lo, n, a))
        kern = lo.kernel("embed", f"""
            def NAME(x, w, b, y):
                for r in prange({i(m)}):
                    v = x[r]
                    if v >= 0 and v < {i(k)}:
                        row = int(v)
                        for j in range({i(o)}):
                            y[r, j] = w[row, j] + b[j]
                    else:
                        for j in range({i(o)}):
                            y[r, j] = np.float32(np.nan)
            """, m * o)
        lo.step([n], [f"{kern}({x}, {w}, {bias}, {y})"])
        return [n]

    def lower_cuda(self, lo, n):
        from ..codegen.cuda_kit import i, udiv, umod, ux
        d, a = lo.g.nodes[n], lo.g.nodes[n]["attrs"]
        m, k, o = numel(d["in_shapes"][0]), a["input_dim"], a["num_output"]
        src = lo.addr(d["inputs"][0])
        w, bias = lo.param_offset(lo.w[f"{n}.weight"]), lo.param_offset(self._bias(lo, n, a))
        body = "\n".join([
            f"v = A[{ux(i(src), udiv('i', i(o)))}]",
            f"j = {umod('i', i(o))}",
            f"if v >= 0 and v < {i(k)}:",
            f"    A[{lo.out_at((n, 0))}] = P[{ux(i(w), f'int32(v) * {i(o)}', 'j')}] + P[{ux(i(bias), 'j')}]",
            "else:",
            f"    A[{lo.out_at((n, 0))}] = float32(math.nan)"])
        return lo.step([n], [lo.elementwise("embed", body, m * o)])
