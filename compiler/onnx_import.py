"""An ONNX model as the IR: each node becomes the netc layer that computes it, its initializers
(and Constant nodes) the layer's weights, so `analyze`, `draw`, `report`, `run` and `export` work
on it as on a Caffe file.

This first cut takes the operators of the CNNs netc's own export writes and of plain
PyTorch/Keras exports: Conv, ConvTranspose, BatchNormalization, the pointwise activations,
MaxPool/AveragePool/GlobalAveragePool/GlobalMaxPool, Gemm, MatMul with a constant matrix,
Flatten, Reshape with a constant shape, Transpose, Concat, Split, Softmax, Add/Sum/Mul/Max
(same shapes, a per-channel constant, or a squeeze-and-excitation gate [N, C, 1, 1]), Dropout,
Identity, LRN and nearest Resize. What it cannot express exactly is a located error naming the
node (file:node-index) and why; nothing in the file is executed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import Loc, NetcError
from .layers.base import Enum, Field
from .spec import LayerSpec, ModelSpec

MAX_ONNX_BYTES = 2 * 1024 ** 3     # protobuf's own limit for one message


class _Importer:
    def __init__(self, model, path: str):
        from onnx import numpy_helper
        self.path, self.g = path, model.graph
        self.const = {t.name: numpy_helper.to_array(t) for t in self.g.initializer}
        self.layers: list[LayerSpec] = []
        self.weights: dict[str, np.ndarray] = {}
        self.k = 0
        self.known = {}                      # value -> static shape, from onnx's shape inference
        try:
            from onnx import shape_inference
            inferred = shape_inference.infer_shapes(model).graph
            for v in [*inferred.value_info, *inferred.input, *inferred.output]:
                dims = v.type.tensor_type.shape.dim
                if dims and all(d.HasField("dim_value") for d in dims):
                    self.known[v.name] = tuple(d.dim_value for d in dims)
        except Exception:  # noqa: BLE001 - shapes are a help for pooling pads, not a requirement
            pass

    def loc(self) -> Loc:
        return Loc(self.path, self.k + 1, 1)

    def fail(self, node, why: str) -> NetcError:
        return NetcError(f'ONNX node {self.k} ({node.op_type} "{node.name or node.output[0]}"): {why}', self.loc())

    def add(self, node, type_: str, bottoms, fields: dict, weights: dict | None = None, tops=None) -> str:
        name = node.name or node.output[0]
        name = name if all(ls.name != name for ls in self.layers) else f"{name}_{self.k}"
        loc = self.loc()
        spec = LayerSpec(name, type_, list(bottoms), list(tops or node.output[:1]),
                         [Field(k, v, loc) for k, v in fields.items()], loc, loc)
        self.layers.append(spec)
        for blob, value in (weights or {}).items():
            self.weights[f"{name}.{blob}"] = np.asarray(value, np.float32)
        return name

    def attrs(self, node) -> dict:
        from onnx import helper
        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def is_const(self, name: str) -> bool:
        return name in self.const

    # ---- the walk ---------------------------------------------------------------------------
    def run(self, input_shapes: dict) -> ModelSpec:
        inits = set(self.const)
        for value in self.g.input:
            if value.name in inits:
                continue
            dims = []
            for k, d in enumerate(value.type.tensor_type.shape.dim):
                if d.HasField("dim_value") and d.dim_value > 0:
                    dims.append(d.dim_value)
                elif k == 0:
                    dims.append(1)                      # a symbolic batch: --batch sets it
                elif value.name in input_shapes:
                    dims.append(input_shapes[value.name][k])
                else:
                    raise NetcError(f'ONNX input "{value.name}" has an unknown size on axis {k} '
                                    f'({d.dim_param or "unnamed"}): give it with --input-shape '
                                    f'{value.name}=NxCxHxW', Loc(self.path, 1, 1))
            shape = list(input_shapes.get(value.name, dims))
            self.layers.append(LayerSpec(value.name, "Input", [], [value.name],
                                         [Field("shape", shape, Loc(self.path, 1, 1))], Loc(self.path, 1, 1)))
        for self.k, node in enumerate(self.g.node):
            handler = getattr(self, f"op_{node.op_type}", None)
            if handler is None or node.domain not in ("", "ai.onnx"):
                raise self.fail(node, "netc does not import this operator yet")
            handler(node)
        return ModelSpec(self.g.name or Path(self.path).stem, self.layers, self.path, "", "onnx")

    # ---- operators -------------------------------------------------------------------------
    def op_Constant(self, node):
        from onnx import numpy_helper
        a = {x.name: x for x in node.attribute}
        if "value" not in a:
            raise self.fail(node, "only tensor-valued Constant nodes are read")
        self.const[node.output[0]] = numpy_helper.to_array(a["value"].t)

    def _conv(self, node, transposed: bool):
        a = self.attrs(node)
        w = self.const.get(node.input[1])
        if w is None or w.ndim != 4:
            raise self.fail(node, "the weights must be a 4-D initializer (2-D convolution)")
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if pads[:2] != pads[2:]:
            raise self.fail(node, f"asymmetric pads {pads}: Caffe's convolution pads both sides alike")
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise self.fail(node, "auto_pad is not imported yet; export with explicit pads")
        if transposed and any(a.get("output_padding", [0, 0])):
            raise self.fail(node, "output_padding has no Caffe Deconvolution equivalent")
        group = a.get("group", 1)
        kh, kw = w.shape[2:]
        (sh, sw), (dh, dw) = a.get("strides", [1, 1]), a.get("dilations", [1, 1])
        bias = len(node.input) > 2 and node.input[2] != ""
        out = w.shape[1] * group if transposed else w.shape[0]
        fields = {"num_output": out, "kernel_h": kh, "kernel_w": kw, "stride_h": sh, "stride_w": sw,
                  "pad_h": pads[0], "pad_w": pads[1], "dilation": [dh] if dh == dw else [dh, dw], "group": group,
                  "bias_term": bias}
        weights = {"weight": w, **({"bias": self.const[node.input[2]]} if bias else {})}
        self.add(node, "Deconvolution" if transposed else "Convolution", node.input[:1], fields, weights)

    def op_Conv(self, node):
        self._conv(node, False)

    def op_ConvTranspose(self, node):
        self._conv(node, True)

    def op_BatchNormalization(self, node):
        a = self.attrs(node)
        x, scale, bias, mean, var = node.input[:5]
        if not all(self.is_const(v) for v in (scale, bias, mean, var)):
            raise self.fail(node, "scale, bias, mean and variance must be initializers")
        self.add(node, "BatchNorm", [x], {"eps": float(a.get("epsilon", 1e-5)), "affine": True},
                 {"weight": self.const[scale], "bias": self.const[bias], "mean": self.const[mean],
                  "var": self.const[var]})

    def _pointwise(self, node, type_, **fields):
        self.add(node, type_, node.input[:1], fields)

    def op_Relu(self, node):
        self._pointwise(node, "ReLU")

    def op_LeakyRelu(self, node):
        self._pointwise(node, "ReLU", negative_slope=float(self.attrs(node).get("alpha", 0.01)))

    def op_Sigmoid(self, node):
        self._pointwise(node, "Sigmoid")

    def op_Tanh(self, node):
        self._pointwise(node, "TanH")

    def op_Elu(self, node):
        self._pointwise(node, "ELU", alpha=float(self.attrs(node).get("alpha", 1.0)))

    def op_Softplus(self, node):
        self._pointwise(node, "BNLL")

    def op_Abs(self, node):
        self._pointwise(node, "AbsVal")

    def op_Clip(self, node):
        a = self.attrs(node)
        lo, hi = a.get("min", -3.4e38), a.get("max", 3.4e38)
        for k, name in ((1, "min"), (2, "max")):
            if len(node.input) > k and node.input[k]:
                if not self.is_const(node.input[k]):
                    raise self.fail(node, f"its {name} must be a constant")
                value = float(self.const[node.input[k]])
                lo, hi = (value, hi) if k == 1 else (lo, value)
        self._pointwise(node, "Clip", min=float(lo), max=float(hi))

    def op_PRelu(self, node):
        slope = self.const.get(node.input[1])
        if slope is None:
            raise self.fail(node, "the slope must be an initializer")
        self.add(node, "PReLU", node.input[:1], {"channel_shared": slope.size == 1},
                 {"weight": slope.reshape(-1)})

    def op_Dropout(self, node):
        """An identity layer (runs in place), so the value keeps its name (often a graph output)."""
        self.add(node, "Dropout", node.input[:1], {})

    op_Identity = op_Dropout

    def _pool(self, node, method: str):
        a = self.attrs(node)
        kh, kw = a["kernel_shape"]
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if any(d != 1 for d in a.get("dilations", [1, 1])):
            raise self.fail(node, "dilated pooling has no Caffe equivalent")
        if method == "AVE" and any(pads) and not a.get("count_include_pad", 0):
            raise self.fail(node, "AveragePool without count_include_pad divides by the valid count; "
                                  "Caffe's divisor counts the padding")
        sh, sw = a.get("strides", [1, 1])
        mode = "CEIL" if a.get("ceil_mode") else "FLOOR"
        if pads[:2] != pads[2:]:
            mode = self._pool_mode(node, method, (kh, kw), (sh, sw), pads)
        self.add(node, "Pooling", node.input[:1],
                 {"pool": Enum(method), "kernel_h": kh, "kernel_w": kw, "stride_h": sh, "stride_w": sw,
                  "pad_h": pads[0], "pad_w": pads[1], "round_mode": Enum(mode)})

    def _pool_mode(self, node, method, kernel, stride, pads) -> str:
        """Caffe pads both sides alike; a MaxPool padded otherwise at the end takes the same
        windows as a Caffe pooling padded `begin` on both sides when the window count agrees
        (windows start alike, padding never wins a max, Caffe clips a window to the input): the
        rounding that gives that count, else an error."""
        from .layers.pool import pooled_size
        x, y = self.known.get(node.input[0]), self.known.get(node.output[0])
        if method != "MAX" or x is None or y is None:
            raise self.fail(node, f"pads {pads} differ at the end: netc imports that for MaxPool of known shapes")
        for mode in ("FLOOR", "CEIL"):
            got = [pooled_size(size, k, s, p, mode == "CEIL", any(pads[:2]))
                   for size, k, s, p in zip(x[2:], kernel, stride, pads[:2])]
            if tuple(got) == tuple(y[2:]):
                return mode
        raise self.fail(node, f"pads {pads} give {list(y[2:])} windows, which no Caffe pooling padded "
                              f"{pads[:2]} gives")

    def op_MaxPool(self, node):
        if len(node.output) > 1 and node.output[1]:
            raise self.fail(node, "MaxPool's Indices output is not imported")
        self._pool(node, "MAX")

    def op_AveragePool(self, node):
        self._pool(node, "AVE")

    def op_GlobalAveragePool(self, node):
        self.add(node, "Pooling", node.input[:1], {"pool": Enum("AVE"), "global_pooling": True})

    def op_GlobalMaxPool(self, node):
        self.add(node, "Pooling", node.input[:1], {"pool": Enum("MAX"), "global_pooling": True})

    def op_Flatten(self, node):
        self.add(node, "Flatten", node.input[:1], {"axis": int(self.attrs(node).get("axis", 1))})

    def op_Gemm(self, node):
        a = self.attrs(node)
        w = self.const.get(node.input[1])
        if w is None or a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
            raise self.fail(node, "netc imports Gemm as InnerProduct: B constant, no transA, alpha = beta = 1")
        w = w if a.get("transB", 0) else w.T
        bias = len(node.input) > 2 and node.input[2] != ""
        if bias and not self.is_const(node.input[2]):
            raise self.fail(node, "the bias C must be a constant")
        weights = {"weight": w}
        if bias:
            c = self.const[node.input[2]].reshape(-1)
            if c.size not in (1, w.shape[0]):
                raise self.fail(node, f"a bias C of {c.size} values for {w.shape[0]} outputs")
            weights["bias"] = np.broadcast_to(c, (w.shape[0],))
        self.add(node, "InnerProduct", node.input[:1], {"num_output": w.shape[0], "bias_term": bias}, weights)

    def op_MatMul(self, node):
        w = self.const.get(node.input[1])
        if w is None or w.ndim != 2:
            raise self.fail(node, "netc imports MatMul with a constant 2-D matrix (a fully connected layer)")
        self.add(node, "InnerProduct", node.input[:1], {"num_output": w.shape[1], "bias_term": False, "axis": -1},
                 {"weight": w.T})

    def op_Reshape(self, node):
        shape = self.const.get(node.input[1])
        if shape is None:
            raise self.fail(node, "the shape must be a constant (fold the exporter's shape arithmetic first)")
        if self.attrs(node).get("allowzero", 0):
            raise self.fail(node, "allowzero=1 has no Caffe equivalent")
        self.add(node, "Reshape", node.input[:1], {"shape": [int(v) for v in shape]})

    def op_Transpose(self, node):
        self.add(node, "Permute", node.input[:1], {"order": [int(v) for v in self.attrs(node)["perm"]]})

    def op_Concat(self, node):
        self.add(node, "Concat", [v for v in node.input if v], {"axis": int(self.attrs(node)["axis"])})

    def op_Softmax(self, node):
        self.add(node, "Softmax", node.input[:1], {"axis": int(self.attrs(node).get("axis", -1))})

    def op_LRN(self, node):
        a = self.attrs(node)
        self.add(node, "LRN", node.input[:1], {"local_size": int(a["size"]), "alpha": float(a.get("alpha", 1e-4)),
                                               "beta": float(a.get("beta", 0.75)), "k": float(a.get("bias", 1.0))})

    def op_Resize(self, node):
        a = self.attrs(node)
        mode = a.get("mode", b"nearest")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        sizes = self.const.get(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        if mode != "nearest" or sizes is None:
            raise self.fail(node, "netc imports nearest Resize to constant sizes (Caffe's Upsample)")
        self.add(node, "Upsample", node.input[:1], {"upsample_h": int(sizes[2]), "upsample_w": int(sizes[3])})

    def _binary(self, node, eltwise: str):
        x, y = node.input[:2]
        if self.is_const(y) or self.is_const(x):
            value, other = (self.const[y], x) if self.is_const(y) else (self.const[x], y)
            flat = value.reshape(-1)
            # numpy broadcasting: a [C] constant would line up with the last axis, not the channels
            per_channel = (value.ndim == 3 and value.size == value.shape[0]
                           or value.ndim == 4 and value.shape[0] == 1 and value.size == value.shape[1])
            if eltwise not in ("SUM", "PROD") or not per_channel:
                raise self.fail(node, "a constant operand is imported per channel only ([C, 1, 1] or [1, C, 1, 1])")
            if eltwise == "SUM":
                self.add(node, "Bias", [other], {}, {"bias": flat})
            else:
                self.add(node, "Scale", [other], {"bias_term": False}, {"weight": flat})
            return
        self.add(node, "Eltwise", [x, y], {"operation": Enum(eltwise)})

    def op_Add(self, node):
        self._binary(node, "SUM")

    def op_Mul(self, node):
        self._binary(node, "PROD")

    def op_Max(self, node):
        self.add(node, "Eltwise", list(node.input), {"operation": Enum("MAX")})

    def op_Sum(self, node):
        self.add(node, "Eltwise", list(node.input), {"operation": Enum("SUM")})


def load_onnx(path: Path, input_shapes: dict | None = None):
    """(ModelSpec, weights) of an .onnx file, read with the onnx package (never executed)."""
    try:
        import onnx
    except ImportError:
        raise NetcError('reading ONNX needs the onnx package, which netc installs: pip install "."') from None
    size = path.stat().st_size
    if size > MAX_ONNX_BYTES:
        raise NetcError(f"{path} is {size:,} bytes; ONNX files over 2 GiB keep their weights outside, "
                        "which netc does not read yet")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - a DecodeError or an OSError: the file is not ONNX
        raise NetcError(f"cannot read {path} as ONNX: {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}") from None
    imp = _Importer(model, str(path))
    spec = imp.run(input_shapes or {})
    return spec, imp.weights
