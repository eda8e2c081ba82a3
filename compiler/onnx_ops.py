"""The ONNX operators netc imports: one method per op type (`op_<OpType>`), each adding the
netc layers that compute the node. The importer (onnx_import) supplies the walk and the helpers
these use: add, attrs, constant, ints, shape, known, fail."""
from __future__ import annotations

import numpy as np

from .layers.base import Enum


def text(v) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


class Operators:
    # ---- operators: convolution and normalization ------------------------------------------
    def _conv(self, node, transposed: bool):
        a = self.attrs(node)
        w = self.const.get(node.input[1])
        if w is None or w.ndim != 4:
            raise self.fail(node, "the weights must be a 4-D constant (2-D convolution)")
        kh, kw = w.shape[2:]
        (sh, sw), (dh, dw) = a.get("strides", [1, 1]), a.get("dilations", [1, 1])
        pads = list(a.get("pads", [0, 0, 0, 0]))
        auto = text(a.get("auto_pad", "NOTSET"))
        if auto in ("SAME_UPPER", "SAME_LOWER") and not transposed:
            pads = self._same_pads(node, (kh, kw), (sh, sw), (dh, dw), auto)
        elif auto not in ("NOTSET", "VALID"):
            raise self.fail(node, f"auto_pad {auto} is not imported for ConvTranspose; export with explicit pads")
        if pads[:2] != pads[2:]:
            raise self.fail(node, f"asymmetric pads {pads} (top, left, bottom, right): Caffe's convolution "
                                  "pads both sides alike")
        if transposed and any(a.get("output_padding", [0, 0])):
            raise self.fail(node, "output_padding has no Caffe Deconvolution equivalent")
        group = a.get("group", 1)
        bias = len(node.input) > 2 and node.input[2] != ""
        b = self.constant(node, 2, "bias") if bias else None
        out = w.shape[1] * group if transposed else w.shape[0]
        fields = {"num_output": out, "kernel_h": kh, "kernel_w": kw, "stride_h": sh, "stride_w": sw,
                  "pad_h": pads[0], "pad_w": pads[1], "dilation": [dh] if dh == dw else [dh, dw], "group": group,
                  "bias_term": bias}
        weights = {"weight": w, **({"bias": b} if bias else {})}
        self.add(node, "Deconvolution" if transposed else "Convolution", node.input[:1], fields, weights)

    def _same_pads(self, node, kernel, stride, dilation, auto) -> list[int]:
        hw = self.shape(node, node.input[0])[2:]
        pads = []
        for size, k, s, d in zip(hw, kernel, stride, dilation):
            out = -(-size // s)
            pads.append(max(0, (out - 1) * s + (k - 1) * d + 1 - size))
        lo = [p // 2 if auto == "SAME_UPPER" else p - p // 2 for p in pads]
        return lo + [p - q for p, q in zip(pads, lo)]

    def op_Conv(self, node):
        self._conv(node, False)

    def op_ConvTranspose(self, node):
        self._conv(node, True)

    def op_BatchNormalization(self, node):
        a = self.attrs(node)
        if not a.get("spatial", 1):
            raise self.fail(node, "spatial=0 (per-element statistics) has no Caffe equivalent")
        x, scale, bias, mean, var = node.input[:5]
        if not all(self.is_const(v) for v in (scale, bias, mean, var)):
            raise self.fail(node, "scale, bias, mean and variance must be constants")
        stats = {"mean": self.const[mean], "var": self.const[var]}
        if self.caffe_pair(node):
            self.add(node, "BatchNorm", [x], {"eps": float(a.get("epsilon", 1e-5))}, stats)
            return
        self.add(node, "BatchNorm", [x], {"eps": float(a.get("epsilon", 1e-5)), "affine": True},
                 {"weight": self.const[scale], "bias": self.const[bias], **stats})

    def caffe_pair(self, node) -> bool:
        """Caffe's BatchNorm + Scale as exported: a BatchNormalization with unit scale and zero
        bias whose one reader is a Mul by per-channel constants. It is imported without affine
        parameters (the Mul is the Scale), so the round trip counts what the prototxt counts."""
        scale, bias = self.const[node.input[1]], self.const[node.input[2]]
        if not (np.all(scale == 1) and np.all(bias == 0)):
            return False
        readers = [self.g.node[k] for k in self.readers.get(node.output[0], [])]
        return (len(readers) == 1 and readers[0].op_type == "Mul"
                and any(v in self.const and self.const[v].size == scale.size > 1 for v in readers[0].input))

    def op_LRN(self, node):
        a = self.attrs(node)
        self.add(node, "LRN", node.input[:1], {"local_size": int(a["size"]), "alpha": float(a.get("alpha", 1e-4)),
                                               "beta": float(a.get("beta", 0.75)), "k": float(a.get("bias", 1.0))})

    # ---- pointwise --------------------------------------------------------------------------
    def _pointwise(self, node, type_, **fields):
        self.add(node, type_, node.input[:1], fields)

    def op_Relu(self, node):
        self._pointwise(node, "ReLU")

    def op_LeakyRelu(self, node):
        self._pointwise(node, "ReLU", negative_slope=float(self.attrs(node).get("alpha", 0.01)))

    def op_Sigmoid(self, node):
        product = self.silu_product(node)
        if product is None:
            self._pointwise(node, "Sigmoid")
            return
        k, mul = product
        self.absorbed.add(k)
        self.add(mul, "Swish", node.input[:1], {})

    def silu_product(self, node):
        """(index, node) of the Mul that makes x * Sigmoid(x) (torch's SiLU as exported) when it
        is the Sigmoid's one reader and the Sigmoid's value goes nowhere else: one Swish, which
        fuses into the convolution before it, instead of two passes (EfficientNet has 49)."""
        out = node.output[0]
        readers = self.readers.get(out, [])
        if len(readers) != 1 or out in {v.name for v in self.g.output}:
            return None
        mul = self.g.node[readers[0]]
        if mul.op_type != "Mul" or sorted(mul.input) != sorted([node.input[0], out]):
            return None
        return readers[0], mul

    def op_HardSigmoid(self, node):
        a = self.attrs(node)
        self._pointwise(node, "HardSigmoid", alpha=float(a.get("alpha", 0.2)), beta=float(a.get("beta", 0.5)))

    def op_HardSwish(self, node):
        self._pointwise(node, "HardSwish")

    def op_Tanh(self, node):
        self._pointwise(node, "TanH")

    def op_Elu(self, node):
        self._pointwise(node, "ELU", alpha=float(self.attrs(node).get("alpha", 1.0)))

    def op_Selu(self, node):
        a = self.attrs(node)
        self._pointwise(node, "SELU", alpha=float(a.get("alpha", 1.67326319217681884765625)),
                        gamma=float(a.get("gamma", 1.05070102214813232421875)))

    def op_Softplus(self, node):
        self._pointwise(node, "BNLL")

    def op_Abs(self, node):
        self._pointwise(node, "AbsVal")

    def op_Exp(self, node):
        self._pointwise(node, "Exp")

    def op_Log(self, node):
        self._pointwise(node, "Log")

    def op_Sqrt(self, node):
        self._pointwise(node, "Power", power=0.5)

    def op_Reciprocal(self, node):
        self._pointwise(node, "Power", power=-1.0)

    def op_Neg(self, node):
        self._pointwise(node, "Power", scale=-1.0)

    def op_Pow(self, node):
        p = self.constant(node, 1, "exponent")
        if p.size != 1:
            raise self.fail(node, "netc imports Pow with one constant exponent")
        self._pointwise(node, "Power", power=float(p.reshape(-1)[0]))

    def op_Clip(self, node):
        a = self.attrs(node)
        lo, hi = a.get("min", -3.4e38), a.get("max", 3.4e38)
        for k, what in ((1, "min"), (2, "max")):
            v = self.constant(node, k, what)
            if v is not None:
                lo, hi = (float(v.reshape(-1)[0]), hi) if k == 1 else (lo, float(v.reshape(-1)[0]))
        self._pointwise(node, "Clip", min=float(lo), max=float(hi))

    def op_PRelu(self, node):
        slope = self.constant(node, 1, "slope")
        x = self.known.get(node.input[0])
        if slope.size != 1 and (x is None or len(x) < 2 or slope.size != x[1]
                                or slope.ndim >= 1 and slope.shape[0] != x[1] and slope.ndim == len(x) - 1):
            raise self.fail(node, f"a slope of shape {list(slope.shape)}: netc imports one slope or one per channel")
        self.add(node, "PReLU", node.input[:1], {"channel_shared": slope.size == 1}, {"weight": slope.reshape(-1)})

    def op_Dropout(self, node):
        """An identity layer (runs in place), so the value keeps its name (often a graph output)."""
        self.add(node, "Dropout", node.input[:1], {})

    op_Identity = op_Dropout

    # ---- pooling and reductions ------------------------------------------------------------
    def _pool(self, node, method: str):
        a = self.attrs(node)
        if len(a["kernel_shape"]) != 2:
            raise self.fail(node, f"{len(a['kernel_shape'])}-D pooling: netc pools 2-D")
        kh, kw = a["kernel_shape"]
        sh, sw = a.get("strides", [1, 1])
        pads = list(a.get("pads", [0, 0, 0, 0]))
        auto = text(a.get("auto_pad", "NOTSET"))
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            pads = self._same_pads(node, (kh, kw), (sh, sw), (1, 1), auto)
        if any(d != 1 for d in a.get("dilations", [1, 1])):
            raise self.fail(node, "dilated pooling has no Caffe equivalent")
        exclude = method == "AVE" and any(pads) and not a.get("count_include_pad", 0)
        mode = "CEIL" if a.get("ceil_mode") else "FLOOR"
        if pads[:2] != pads[2:] or mode == "CEIL":
            mode = self._pool_mode(node, method, (kh, kw), (sh, sw), pads, mode, exclude)
        self.add(node, "Pooling", node.input[:1],
                 {"pool": Enum(method), "kernel_h": kh, "kernel_w": kw, "stride_h": sh, "stride_w": sw,
                  "pad_h": pads[0], "pad_w": pads[1], "round_mode": Enum(mode), "exclude_pad": exclude})

    def _pool_mode(self, node, method, kernel, stride, pads, mode, exclude=False) -> str:
        """Caffe pads both sides alike and clips a window to the input; ONNX may pad the end
        more, and its ceil_mode drops a last window that starts in the end padding. A MaxPool
        (padding never wins a max), or an AveragePool dividing by the taps inside the input,
        takes the same windows as a Caffe pooling padded `begin` on both sides when the window
        count agrees: the rounding that gives ONNX's count."""
        from .layers.pool import pooled_size
        x = self.shape(node, node.input[0])
        if method != "MAX" and pads[:2] != pads[2:] and not exclude:
            raise self.fail(node, f"AveragePool pads {pads} differ at the end and count the padding: "
                                  "Caffe pads both sides alike")
        want = [_onnx_pooled(size, k, s, lo, hi, mode == "CEIL")
                for size, k, s, lo, hi in zip(x[2:], kernel, stride, pads[:2], pads[2:])]
        for mode_ in (mode, "CEIL" if mode == "FLOOR" else "FLOOR"):
            got = [pooled_size(size, k, s, p, mode_ == "CEIL", any(pads[:2]))
                   for size, k, s, p in zip(x[2:], kernel, stride, pads[:2])]
            if got == want:
                return mode_
        raise self.fail(node, f"pads {pads} give {want} windows, which no Caffe pooling padded "
                              f"{pads[:2]} gives")

    def op_MaxPool(self, node):
        if len(node.output) > 1 and node.output[1]:
            raise self.fail(node, "MaxPool's Indices output is not imported")
        if self.attrs(node).get("storage_order", 0):
            raise self.fail(node, "storage_order=1 (column-major indices) is not imported")
        self._pool(node, "MAX")

    def op_AveragePool(self, node):
        self._pool(node, "AVE")

    def op_GlobalAveragePool(self, node):
        self.add(node, "Pooling", node.input[:1], {"pool": Enum("AVE"), "global_pooling": True})

    def op_GlobalMaxPool(self, node):
        self.add(node, "Pooling", node.input[:1], {"pool": Enum("MAX"), "global_pooling": True})

    def _reduce(self, node, operation: str):
        x = self.shape(node, node.input[0])
        axes = self.ints(node, "axes", 1, 18 if node.op_type != "ReduceSum" else 13, "axes")
        keep = self.attrs(node).get("keepdims", 1)
        axes = sorted({v % len(x) for v in (axes if axes is not None else range(len(x)))})
        if axes != list(range(axes[0], len(x))):
            raise self.fail(node, f"netc reduces the trailing axes (Caffe's Reduction), not {axes} of {list(x)}")
        if keep and axes == [2, 3] and len(x) == 4 and operation in ("MEAN", "MAX"):
            pool = "AVE" if operation == "MEAN" else "MAX"
            self.add(node, "Pooling", node.input[:1], {"pool": Enum(pool), "global_pooling": True})
            return
        if operation == "MAX":
            raise self.fail(node, "netc takes ReduceMax over the spatial axes of NCHW only (global max pooling)")
        if axes[0] == 0:
            raise self.fail(node, "a reduction over the batch axis")
        if not keep:
            self.add(node, "Reduction", node.input[:1], {"operation": Enum(operation), "axis": axes[0]})
            return
        flat = node.output[0] + "/reduced"
        self.add(node, "Reduction", node.input[:1], {"operation": Enum(operation), "axis": axes[0]}, tops=[flat])
        self.add(node, "Reshape", [flat], {"shape": [0] * axes[0] + [1] * len(axes)}, suffix="/keepdims")

    def op_ReduceMean(self, node):
        self._reduce(node, "MEAN")

    def op_ReduceSum(self, node):
        self._reduce(node, "SUM")

    def op_ReduceMax(self, node):
        self._reduce(node, "MAX")

    # ---- fully connected -------------------------------------------------------------------
    def op_Gemm(self, node):
        a = self.attrs(node)
        w = self.constant(node, 1, "matrix B")
        if a.get("transA", 0):
            raise self.fail(node, "transA=1 transposes the activations, which a fully connected layer does not")
        w = (w if a.get("transB", 0) else w.T) * np.float32(a.get("alpha", 1.0))
        bias = len(node.input) > 2 and node.input[2] != ""
        weights = {"weight": w}
        if bias:
            c = self.constant(node, 2, "bias C").reshape(-1) * np.float32(a.get("beta", 1.0))
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

    # ---- shapes ------------------------------------------------------------------------------
    def _reshape_to(self, node, target: list[int], batch: bool):
        """Reshape to `target`, its first size written 0 (copied) when it is the batch, so
        `--batch` resizes it: a size folded from the batch, or (exporters fold shapes at the
        file's batch into literals) the input's own first size."""
        target = list(target)
        x = self.known.get(node.input[0])
        if target and (batch or x and target[0] == x[0]):
            target[0] = 0
        self.add(node, "Reshape", node.input[:1], {"shape": target})

    def op_Reshape(self, node):
        shape = self.constant(node, 1, "shape")
        if self.attrs(node).get("allowzero", 0) and 0 in shape:
            raise self.fail(node, "allowzero=1 with a 0 size has no Caffe equivalent")
        mask = self.mask.get(node.input[1])
        self._reshape_to(node, [int(v) for v in shape], mask is not None and bool(mask.reshape(-1)[:1].any()))

    def op_Squeeze(self, node):
        x = self.shape(node, node.input[0])
        axes = self.ints(node, "axes", 1, 13, "axes")
        axes = {v % len(x) for v in axes} if axes is not None else {k for k, d in enumerate(x) if d == 1}
        if any(x[k] != 1 for k in axes):
            raise self.fail(node, f"it squeezes axes {sorted(axes)} of {list(x)}, which are not all 1")
        self._reshape_to(node, [d for k, d in enumerate(x) if k not in axes], 0 not in axes)

    def op_Unsqueeze(self, node):
        x = list(self.shape(node, node.input[0]))
        axes = self.ints(node, "axes", 1, 13, "axes")
        rank = len(x) + len(axes)
        for ax in sorted(v % rank for v in axes):
            x.insert(ax, 1)
        self._reshape_to(node, x, 0 not in {v % rank for v in axes})

    def op_Flatten(self, node):
        self.add(node, "Flatten", node.input[:1], {"axis": int(self.attrs(node).get("axis", 1))})

    def op_Transpose(self, node):
        a = self.attrs(node)
        perm = a.get("perm") or list(reversed(range(len(self.shape(node, node.input[0])))))
        self.add(node, "Permute", node.input[:1], {"order": [int(v) for v in perm]})

    def op_Concat(self, node):
        self.add(node, "Concat", [v for v in node.input if v], {"axis": int(self.attrs(node)["axis"])})

    def _pieces(self, node, axis: int, bounds: list[tuple[int, int]], tops: list[str]):
        """A Caffe Slice of node.input[0] on `axis` into contiguous `bounds`; pieces nobody asked
        for go to a Silence layer."""
        size = self.shape(node, node.input[0])[axis]
        pieces, spare, at = [], [], 0       # (start, top) covering the whole axis
        for (lo, hi), top in [*zip(bounds, tops), ((size, size), None)]:
            if lo > at:
                spare.append(f"{node.output[0]}/unused{len(pieces)}")
                pieces.append((at, spare[-1]))
            if top is not None:
                pieces.append((lo, top))
            at = hi
        points, names = [lo for lo, _ in pieces[1:]], [top for _, top in pieces]
        if len(names) == 1:
            self.add(node, "Dropout", node.input[:1], {}, tops=names)
            return
        self.add(node, "Slice", node.input[:1], {"axis": axis, "slice_point": points}, tops=names)
        if spare:
            self.add(node, "Silence", spare, {}, tops=[], suffix="/silence")

    def op_Slice(self, node):
        x = self.shape(node, node.input[0])
        if self.opset < 10:
            a = self.attrs(node)
            starts, ends, axes, steps = a["starts"], a["ends"], a.get("axes"), None
        else:
            starts, ends = self.ints(node, "", 1, 0, "starts"), self.ints(node, "", 2, 0, "ends")
            axes, steps = self.ints(node, "", 3, 0, "axes"), self.ints(node, "", 4, 0, "steps")
        axes = list(range(len(starts))) if axes is None else [v % len(x) for v in axes]
        cut = [(ax, *slice(s, e, st).indices(x[ax])) for ax, s, e, st in
               zip(axes, starts, ends, steps or [1] * len(axes))]
        cut = [c for c in cut if (c[1], c[2], c[3]) != (0, x[c[0]], 1)]
        if not cut:
            self.add(node, "Dropout", node.input[:1], {})
            return
        if len(cut) > 1 or cut[0][3] != 1 or cut[0][0] == 0:
            raise self.fail(node, "netc imports a Slice of one non-batch axis with step 1 (Caffe's Slice)")
        ax, lo, hi, _ = cut[0]
        if hi <= lo:
            raise self.fail(node, f"an empty slice [{lo}:{hi}] of axis {ax}")
        self._pieces(node, ax, [(lo, hi)], [node.output[0]])

    def op_Split(self, node):
        x = self.shape(node, node.input[0])
        axis = int(self.attrs(node).get("axis", 0)) % len(x)
        sizes = self.ints(node, "split", 1, 13, "split sizes")
        if sizes is None:
            n = len(node.output)
            sizes = [-(-x[axis] // n)] * (n - 1)
            sizes.append(x[axis] - sum(sizes))
        if axis == 0 or sum(sizes) != x[axis] or any(s <= 0 for s in sizes):
            raise self.fail(node, f"a split of axis {axis} into {sizes} of {list(x)}")
        bounds, at = [], 0
        for s in sizes:
            bounds.append((at, at + s))
            at += s
        self._pieces(node, axis, bounds, [o or f"{node.output[0]}/unused{k}" for k, o in enumerate(node.output)])

    def op_Softmax(self, node, log: bool = False):
        axis = int(self.attrs(node).get("axis", -1 if self.opset >= 13 else 1))
        x = self.shape(node, node.input[0]) if self.opset < 13 else None
        tops = [node.output[0] + "/softmax"] if log else None
        if x is not None and int(np.prod(x[axis % len(x) + 1:])) != 1:
            # before opset 13 the softmax runs over everything from `axis` on, flattened
            flat, soft = node.output[0] + "/flat", node.output[0] + "/flat_softmax"
            self.add(node, "Flatten", node.input[:1], {"axis": axis % len(x)}, tops=[flat], suffix="/flatten")
            self.add(node, "Softmax", [flat], {"axis": axis % len(x)}, tops=[soft], suffix="/softmax")
            self.add(node, "Reshape", [soft], {"shape": [0, *x[1:]]}, tops=tops)
        else:
            self.add(node, "Softmax", node.input[:1], {"axis": axis}, tops=tops)
        if log:
            self.add(node, "Log", tops, {}, suffix="/log")

    def op_LogSoftmax(self, node):
        self.op_Softmax(node, log=True)

    def _resize(self, node, mode: str, coords: str, scales, sizes):
        x = self.shape(node, node.input[0])
        y = self.known.get(node.output[0])
        if y is None and sizes is not None:
            y = tuple(int(v) for v in sizes)
        if y is None and scales is not None:
            y = tuple(int(np.floor(d * float(s))) for d, s in zip(x, scales))
        if y is None or len(x) != 4 or tuple(y[:2]) != tuple(x[:2]):
            raise self.fail(node, "netc resizes the spatial axes of an NCHW value")
        if mode == "nearest":
            integer = all(o % i == 0 for o, i in zip(y[2:], x[2:]))
            if coords in ("asymmetric", "half_pixel", "pytorch_half_pixel") and (integer or coords == "asymmetric"):
                self.add(node, "Upsample", node.input[:1], {"upsample_h": int(y[2]), "upsample_w": int(y[3])})
                return
        elif mode in ("linear", "bilinear") and coords == "align_corners":
            self.add(node, "Interp", node.input[:1], {"height": int(y[2]), "width": int(y[3])})
            return
        raise self.fail(node, f"{mode} Resize with coordinate_transformation_mode {coords} to {list(y[2:])} "
                              f"from {list(x[2:])}: netc imports nearest (Upsample) and align_corners linear (Interp)")

    def op_Resize(self, node):
        a = self.attrs(node)
        mode = text(a.get("mode", "nearest"))
        coords = text(a.get("coordinate_transformation_mode", "half_pixel" if self.opset >= 11 else "asymmetric"))
        if mode == "nearest" and self.opset >= 11 and text(a.get("nearest_mode", "round_prefer_floor")) == "ceil":
            raise self.fail(node, "nearest_mode ceil is not imported")
        scales = self.constant(node, 1 if self.opset < 11 else 2, "scales")
        sizes = self.constant(node, 3, "sizes") if self.opset >= 11 else None
        self._resize(node, mode, coords, None if scales is None or scales.size == 0 else scales,
                     None if sizes is None or sizes.size == 0 else sizes)

    def op_Upsample(self, node):
        a = self.attrs(node)
        scales = a.get("scales") if self.opset < 9 else self.constant(node, 1, "scales")
        self._resize(node, text(a.get("mode", "nearest")), "asymmetric", scales, None)

    # ---- arithmetic --------------------------------------------------------------------------
    def _channel_gate(self, node, x: str, gate: str, type_: str):
        """[N, C, H, W] with a [N, C, 1, 1] activation: Caffe's two-input Scale (or Bias) over
        axis 0 of the gate flattened to [N, C]."""
        flat = gate + "/flat"
        self.add(node, "Flatten", [gate], {"axis": 1}, tops=[flat], suffix="/gate")
        self.add(node, type_, [x, flat], {"axis": 0})

    def _binary(self, node, op: str):
        x, y = node.input[:2]
        if self.is_const(y) or self.is_const(x):
            return self._with_constant(node, op, x, y)
        sx, sy = self.known.get(x), self.known.get(y)
        if sx is not None and sy is not None and sx != sy:
            big, small = (x, y) if len(sx) >= len(sy) and all(b >= s for b, s in zip(sx, sy)) else (y, x)
            sb, ss = self.known[big], self.known[small]
            if len(sb) == len(ss) == 4 and tuple(ss) == (sb[0], sb[1], 1, 1) and op in ("Mul", "Add"):
                return self._channel_gate(node, big, small, "Scale" if op == "Mul" else "Bias")
            raise self.fail(node, f"{op} of {list(sx)} and {list(sy)}: netc broadcasts a [N, C, 1, 1] "
                                  "activation over [N, C, H, W] only")
        if op == "Sub":
            return self.add(node, "Eltwise", [x, y], {"operation": Enum("SUM"), "coeff": [1.0, -1.0]})
        if op == "Div":
            raise self.fail(node, "a division of two activations has no Caffe layer")
        self.add(node, "Eltwise", [x, y], {"operation": Enum({"Add": "SUM", "Mul": "PROD"}[op])})

    def _with_constant(self, node, op, x, y):
        first = self.is_const(x)
        value, other = (self.const[x], y) if first else (self.const[y], x)
        value = value.astype(np.float32)
        if op == "Div" and first or op == "Sub" and first and value.size != 1:
            raise self.fail(node, f"a constant {'divided by' if op == 'Div' else 'minus'} an activation")
        if value.size == 1:
            c = float(value.reshape(-1)[0])
            fields = {"Add": {"shift": c}, "Mul": {"scale": c}, "Div": {"scale": 1.0 / c} if c else None,
                      "Sub": {"scale": -1.0, "shift": c} if first else {"shift": -c}}[op]
            if fields is None:
                raise self.fail(node, "a division by the constant 0")
            return self.add(node, "Power", [other], fields)
        s = self.known.get(other)
        # numpy broadcasting: a [C] constant lines up with the last axis, not the channels
        per_channel = (s is not None and len(s) >= 3 and value.size == s[1]
                       and (value.ndim == len(s) - 1 and value.shape[0] == s[1]
                            or value.ndim == len(s) and value.shape[0] == 1 and value.shape[1] == s[1]))
        if not per_channel:
            raise self.fail(node, f"a constant operand of shape {list(value.shape)}: netc imports one value "
                                  "or one per channel ([C, 1, 1] or [1, C, 1, 1])")
        flat = value.reshape(-1)
        if op in ("Add", "Sub"):
            return self.add(node, "Bias", [other], {}, {"bias": flat if op == "Add" else -flat})
        return self.add(node, "Scale", [other], {"bias_term": False},
                        {"weight": flat if op == "Mul" else 1.0 / flat})

    def op_Add(self, node):
        self._binary(node, "Add")

    def op_Sub(self, node):
        self._binary(node, "Sub")

    def op_Mul(self, node):
        self._binary(node, "Mul")

    def op_Div(self, node):
        self._binary(node, "Div")

    def _many(self, node, operation: str):
        if any(self.is_const(v) for v in node.input):
            raise self.fail(node, f"{node.op_type} of an activation and a constant is not imported")
        shapes = {self.known.get(v) for v in node.input}
        if len(shapes) > 1:
            raise self.fail(node, f"{node.op_type} of different shapes {sorted(map(str, shapes))}")
        if len(node.input) == 1:
            return self.add(node, "Dropout", node.input[:1], {})
        self.add(node, "Eltwise", list(node.input), {"operation": Enum(operation)})

    def op_Max(self, node):
        self._many(node, "MAX")

    def op_Sum(self, node):
        self._many(node, "SUM")


def _onnx_pooled(size, k, s, lo, hi, ceil) -> int:
    """ONNX's pooled size (onnx/defs/nn: a ceil_mode window starting in the end padding is dropped)."""
    span = size + lo + hi - k
    out = (-(-span // s) if ceil else span // s) + 1
    return out - 1 if ceil and (out - 1) * s >= size + lo else out
