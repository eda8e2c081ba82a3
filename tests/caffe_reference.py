"""An independent reference for Caffe's shape and parameter-count rules (a test oracle).

Written from Caffe's C++ semantics (BVLC master: net.cpp, insert_splits.cpp, upgrade_proto.cpp and
src/caffe/layers/*.cpp LayerSetUp/Reshape) and from the forks whose layers the wild corpus uses
(weiliu89 SSD, DeepLab/PSPNet Interp and BN, SegNet/ENet BN and Upsample, SENet Axpy,
farmingyard ConvolutionDepthwise/ShuffleChannel, FaceBoxes PriorBox). It deliberately shares no code
with netc: it has its own protobuf text-format parser and its own layer rules, and it uses only
the standard library (numpy is not needed).

    reference(path, input_shapes=None) -> [ {name, type, tops, params, buffers, ...}, ... ]

one dict per layer Caffe would instantiate in the TEST phase, in file order (the Input layer that
UpgradeNetInput makes from net-level `input:` fields comes first, as in Caffe). Where Caffe would
CHECK-fail (or protobuf would refuse the text) a CaffeError is raised.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

__all__ = ["CaffeError", "Message", "parse_text", "parse_file", "reference", "V1_TYPES"]


class CaffeError(Exception):
    """What Caffe would report as a CHECK failure / LOG(FATAL) / text-format parse error."""


def _check(cond, msg):
    if not cond:
        raise CaffeError(msg)


# ---------------------------------------------------------------------------------------------
# protobuf text format
# ---------------------------------------------------------------------------------------------

class Scalar:
    """A scalar as written: kind is 'str' (quoted), 'num' or 'ident'."""

    __slots__ = ("kind", "text")

    def __init__(self, kind, text):
        self.kind = kind
        self.text = text

    def __repr__(self):
        return f"Scalar({self.kind}, {self.text!r})"


class Message:
    """An ordered list of (field, value) where value is a Scalar or a Message."""

    def __init__(self):
        self.fields: list[tuple[str, object]] = []

    def add(self, key, value):
        self.fields.append((key, value))

    def all(self, key):
        return [v for k, v in self.fields if k == key]

    def has(self, key):
        return any(k == key for k, _ in self.fields)

    def last(self, key):
        vals = self.all(key)
        return vals[-1] if vals else None

    def msg(self, key):
        """The sub-message `key` (an empty one when absent), several occurrences merged."""
        vals = [v for v in self.all(key) if isinstance(v, Message)]
        if not vals:
            return Message()
        if len(vals) == 1:
            return vals[0]
        merged = Message()
        for v in vals:
            merged.fields.extend(v.fields)
        return merged

    def msgs(self, key):
        return [v for v in self.all(key) if isinstance(v, Message)]

    # typed getters (last occurrence wins, as for a protobuf singular field)
    def int(self, key, default=None):
        v = self.last(key)
        return default if v is None else _to_int(v, key)

    def float(self, key, default=None):
        v = self.last(key)
        return default if v is None else _to_float(v, key)

    def bool(self, key, default=None):
        v = self.last(key)
        return default if v is None else _to_bool(v, key)

    def str(self, key, default=None):
        v = self.last(key)
        if v is None:
            return default
        _check(isinstance(v, Scalar), f"field {key} is a message, expected a scalar")
        return v.text

    def enum(self, key, default=None, numbers=None):
        """An enum field as its name; `numbers` maps enum numbers to names."""
        v = self.last(key)
        if v is None:
            return default
        _check(isinstance(v, Scalar), f"field {key} is a message, expected an enum")
        if v.kind == "num" and numbers is not None:
            n = _to_int(v, key)
            _check(n in numbers, f"unknown enum value {n} for {key}")
            return numbers[n]
        return v.text

    def ints(self, key):
        return [_to_int(v, key) for v in self.all(key)]

    def floats(self, key):
        return [_to_float(v, key) for v in self.all(key)]

    def strs(self, key):
        out = []
        for v in self.all(key):
            _check(isinstance(v, Scalar), f"field {key} is a message, expected a scalar")
            out.append(v.text)
        return out


def _to_int(v, key):
    _check(isinstance(v, Scalar) and v.kind == "num", f"field {key}: expected an integer, got {v!r}")
    t = v.text
    try:
        if re.fullmatch(r"[-+]?0[xX][0-9a-fA-F]+", t):
            return int(t, 16)
        if re.fullmatch(r"[-+]?0[0-7]+", t):
            return int(t, 8)
        return int(t, 10)
    except ValueError:
        raise CaffeError(f"field {key}: expected an integer, got {t!r}") from None


def _to_float(v, key):
    _check(isinstance(v, Scalar), f"field {key}: expected a number, got a message")
    t = v.text
    if v.kind == "ident":
        low = t.lower()
        if low in ("inf", "infinity"):
            return math.inf
        if low in ("-inf", "-infinity"):
            return -math.inf
        if low == "nan":
            return math.nan
        raise CaffeError(f"field {key}: expected a number, got {t!r}")
    _check(v.kind == "num", f"field {key}: expected a number, got {t!r}")
    if t[-1:] in "fF" and not re.fullmatch(r"[-+]?0[xX][0-9a-fA-F]+", t):
        t = t[:-1]
    try:
        if re.fullmatch(r"[-+]?0[xX][0-9a-fA-F]+", t):
            return float(int(t, 16))
        return float(t)
    except ValueError:
        raise CaffeError(f"field {key}: expected a number, got {v.text!r}") from None


def _to_bool(v, key):
    _check(isinstance(v, Scalar), f"field {key}: expected a bool, got a message")
    t = v.text
    if t in ("true", "True", "t", "1"):
        return True
    if t in ("false", "False", "f", "0"):
        return False
    raise CaffeError(f"field {key}: expected true/false, got {t!r}")


_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<num>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?[fF]?))
  | (?P<ident>-?[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[{}<>\[\]:;,])
""", re.VERBOSE)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v",
            "\\": "\\", "'": "'", '"': '"', "?": "?"}


def _unescape(body):
    out = []
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        i += 1
        _check(i < len(body), "string ends in a backslash")
        c = body[i]
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
            i += 1
        elif c in "01234567":
            j = i
            while j < len(body) and j < i + 3 and body[j] in "01234567":
                j += 1
            out.append(chr(int(body[i:j], 8)))
            i = j
        elif c in "xX":
            j = i + 1
            while j < len(body) and j < i + 3 and body[j] in "0123456789abcdefABCDEF":
                j += 1
            _check(j > i + 1, "\\x escape without hex digits")
            out.append(chr(int(body[i + 1:j], 16)))
            i = j
        else:
            raise CaffeError(f"invalid escape sequence \\{c} in string")
    return "".join(out)


def _tokenize(text):
    toks = []
    pos = 0
    line = 1
    n = len(text)
    while pos < n:
        m = _TOKEN.match(text, pos)
        if not m:
            raise CaffeError(f"line {line}: unexpected character {text[pos]!r}")
        kind = m.lastgroup
        s = m.group()
        if kind not in ("ws", "comment"):
            toks.append((kind, s, line))
        line += s.count("\n")
        pos = m.end()
    return toks


class _Parser:
    def __init__(self, text):
        self.toks = _tokenize(text)
        self.i = 0

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else (None, None, None)

    def take(self):
        t = self.peek()
        self.i += 1
        return t

    def expect(self, s):
        kind, text, line = self.take()
        if text != s:
            raise CaffeError(f"line {line}: expected {s!r}, got {text!r}")

    def parse_message(self, close):
        msg = Message()
        while True:
            kind, text, line = self.peek()
            if kind is None:
                if close is None:
                    return msg
                raise CaffeError(f"unexpected end of file: missing {close!r}")
            if kind == "punct" and text == close:
                self.take()
                return msg
            if kind != "ident":
                raise CaffeError(f"line {line}: expected a field name, got {text!r}")
            self.take()
            key = text
            kind, text, line = self.peek()
            if text == ":":
                self.take()
                kind, text, line = self.peek()
                if text in ("{", "<"):
                    self.take()
                    msg.add(key, self.parse_message("}" if text == "{" else ">"))
                elif text == "[":
                    self.take()
                    kind, text, line = self.peek()
                    if text == "]":
                        self.take()
                    else:
                        while True:
                            kind, text, line = self.peek()
                            if text in ("{", "<"):
                                self.take()
                                msg.add(key, self.parse_message("}" if text == "{" else ">"))
                            else:
                                msg.add(key, self.parse_scalar())
                            kind, text, line = self.take()
                            if text == "]":
                                break
                            if text != ",":
                                raise CaffeError(f"line {line}: expected ',' or ']' in a list")
                else:
                    msg.add(key, self.parse_scalar())
            elif text in ("{", "<"):
                self.take()
                msg.add(key, self.parse_message("}" if text == "{" else ">"))
            else:
                raise CaffeError(f"line {line}: expected ':' or '{{' after {key!r}, got {text!r}")
            kind, text, line = self.peek()
            if kind == "punct" and text in (";", ","):
                self.take()

    def parse_scalar(self):
        kind, text, line = self.take()
        if kind == "str":
            parts = [_unescape(text[1:-1])]
            while self.peek()[0] == "str":      # adjacent literals concatenate
                parts.append(_unescape(self.take()[1][1:-1]))
            return Scalar("str", "".join(parts))
        if kind == "num":
            return Scalar("num", text)
        if kind == "ident":
            return Scalar("ident", text)
        raise CaffeError(f"line {line}: expected a value, got {text!r}")


def parse_text(text: str) -> Message:
    return _Parser(text).parse_message(None)


def parse_file(path) -> Message:
    return parse_text(Path(path).read_text(encoding="utf-8", errors="replace"))


# Singular (non-repeated) fields of the messages we read: protobuf's text parser rejects a
# singular field given twice ("Non-repeated field ... is specified multiple times").
_SINGULAR = {
    "layer": {"name", "type", "convolution_param", "pooling_param", "inner_product_param",
              "input_param", "batch_norm_param", "scale_param", "bias_param", "eltwise_param",
              "concat_param", "slice_param", "reshape_param", "flatten_param", "lrn_param",
              "softmax_param", "prelu_param", "permute_param", "crop_param", "interp_param",
              "upsample_param", "bn_param", "prior_box_param", "detection_output_param",
              "normalize_param", "data_param", "transform_param"},
    "convolution_param": {"num_output", "bias_term", "pad_h", "pad_w", "kernel_h", "kernel_w",
                          "stride_h", "stride_w", "group", "axis", "force_nd_im2col"},
    "pooling_param": {"pool", "pad", "pad_h", "pad_w", "kernel_size", "kernel_h", "kernel_w",
                      "stride", "stride_h", "stride_w", "global_pooling", "round_mode"},
    "inner_product_param": {"num_output", "bias_term", "axis", "transpose"},
}


def _check_singular(scope, msg):
    singular = _SINGULAR.get(scope, ())
    seen = set()
    for k, v in msg.fields:
        if k in singular:
            _check(k not in seen, f"Non-repeated field \"{k}\" is specified multiple times.")
            seen.add(k)
        if isinstance(v, Message) and k in _SINGULAR:
            _check_singular(k, v)


# ---------------------------------------------------------------------------------------------
# net-level upgrades (upgrade_proto.cpp) and phase filtering (net.cpp FilterNet)
# ---------------------------------------------------------------------------------------------

V1_TYPES = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution", "DATA": "Data", "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise",
    "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice",
    "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}
# V1LayerParameter.LayerType numbers (caffe.proto), for files that write the number
V1_TYPE_NUMBERS = {
    0: "NONE", 35: "ABSVAL", 1: "ACCURACY", 30: "ARGMAX", 2: "BNLL", 3: "CONCAT",
    37: "CONTRASTIVE_LOSS", 4: "CONVOLUTION", 5: "DATA", 39: "DECONVOLUTION", 6: "DROPOUT",
    32: "DUMMY_DATA", 7: "EUCLIDEAN_LOSS", 25: "ELTWISE", 38: "EXP", 8: "FLATTEN",
    9: "HDF5_DATA", 10: "HDF5_OUTPUT", 28: "HINGE_LOSS", 11: "IM2COL", 12: "IMAGE_DATA",
    13: "INFOGAIN_LOSS", 14: "INNER_PRODUCT", 15: "LRN", 29: "MEMORY_DATA",
    16: "MULTINOMIAL_LOGISTIC_LOSS", 34: "MVN", 17: "POOLING", 26: "POWER", 18: "RELU",
    19: "SIGMOID", 27: "SIGMOID_CROSS_ENTROPY_LOSS", 36: "SILENCE", 20: "SOFTMAX",
    21: "SOFTMAX_LOSS", 22: "SPLIT", 33: "SLICE", 23: "TANH", 24: "WINDOW_DATA", 31: "THRESHOLD",
}

LOSS_TYPES = {"SoftmaxWithLoss", "EuclideanLoss", "HingeLoss", "InfogainLoss",
              "MultinomialLogisticLoss", "SigmoidCrossEntropyLoss", "ContrastiveLoss",
              "SmoothL1Loss", "MultiBoxLoss"}
NON_FORWARD_TYPES = LOSS_TYPES | {"Accuracy", "Silence"}


class Layer:
    """A V2 LayerParameter after upgrade."""

    def __init__(self, name, type_, bottoms, tops, param: Message, synthesized_input=None):
        self.name = name
        self.type = type_
        self.bottoms = bottoms
        self.tops = tops
        self.p = param
        self.input_shapes = synthesized_input   # for the Input layer made by UpgradeNetInput


def _state_meets_rule(rule: Message, phase="TEST", level=0, stages=()):
    if rule.has("phase") and rule.enum("phase", numbers={0: "TRAIN", 1: "TEST"}) != phase:
        return False
    if rule.has("min_level") and level < rule.int("min_level"):
        return False
    if rule.has("max_level") and level > rule.int("max_level"):
        return False
    for s in rule.strs("stage"):
        if s not in stages:
            return False
    for s in rule.strs("not_stage"):
        if s in stages:
            return False
    return True


def _layer_included(lp: Message, layer_name, phase="TEST"):
    inc = lp.msgs("include")
    exc = lp.msgs("exclude")
    _check(not (inc and exc), f"Specify either include rules or exclude rules; not both. "
                               f"(layer {layer_name})")
    included = not inc
    for r in exc:
        if _state_meets_rule(r, phase):
            included = False
    for r in inc:
        if _state_meets_rule(r, phase):
            included = True
    return included


def _upgrade_layers(net: Message):
    """NetParameter -> list of Layer (V1 `layers` upgraded; net-level inputs -> Input layer)."""
    v2 = net.msgs("layer")
    v1 = net.msgs("layers")
    _check(not (v2 and v1), "Both V0/V1 `layers` and V2 `layer` fields are present")
    raw = []
    if v1:
        for lp in v1:
            _check(not lp.has("layer"), "V0 (layers { layer { ... } }) nets are not supported")
            t = lp.enum("type", default="NONE", numbers=V1_TYPE_NUMBERS)
            _check(t in V1_TYPES, f"Unknown V1 layer type {t}")
            raw.append((lp.str("name", ""), V1_TYPES[t], lp))
    else:
        for lp in v2:
            raw.append((lp.str("name", ""), lp.str("type", ""), lp))
    for _, _, lp in raw:
        _check_singular("layer", lp)

    layers = []
    # UpgradeNetInput: net-level input/input_dim/input_shape -> one Input layer named "input"
    inputs = net.strs("input")
    if inputs:
        dims = net.ints("input_dim")
        shapes = net.msgs("input_shape")
        if shapes or dims:
            input_shapes = []
            for i, blob in enumerate(inputs):
                if shapes:
                    _check(i < len(shapes), f"input '{blob}' has no input_shape")
                    input_shapes.append(tuple(shapes[i].ints("dim")))
                else:
                    _check(len(dims) >= 4 * (i + 1),
                           f"input '{blob}' needs 4 input_dim values, {len(dims)} given in all")
                    input_shapes.append(tuple(dims[4 * i:4 * i + 4]))
            layers.append(Layer("input", "Input", [], list(inputs), Message(), input_shapes))
        # else: a bare `input:` (legacy caffemodel) is simply dropped
    for name, type_, lp in raw:
        if not _layer_included(lp, name):
            continue
        layers.append(Layer(name, type_, lp.strs("bottom"), lp.strs("top"), lp))
    return layers


# ---------------------------------------------------------------------------------------------
# blob helpers (blob.hpp)
# ---------------------------------------------------------------------------------------------

def _prod(xs):
    r = 1
    for x in xs:
        r *= x
    return r


def _canon(axis, num_axes, what="axis"):
    _check(-num_axes <= axis < num_axes,
           f"{what} {axis} out of range for {num_axes}-D blob")
    return axis + num_axes if axis < 0 else axis


def _count(shape, start=0, end=None):
    end = len(shape) if end is None else end
    _check(0 <= start <= end <= len(shape), f"count({start}, {end}) out of range for {shape}")
    return _prod(shape[start:end])


def _legacy(shape, index):
    _check(len(shape) <= 4, "Cannot use legacy accessors on Blobs with > 4 axes.")
    _check(-4 <= index < 4, "legacy index out of range")
    if index >= len(shape) or index < -len(shape):
        return 1
    return shape[index]


def _blob(shape):
    shape = tuple(int(d) for d in shape)
    for d in shape:
        _check(d >= 0, f"blob shape {shape} has a negative dimension")
    _check(_prod(shape) <= 2 ** 31 - 1, f"blob size {shape} exceeds INT_MAX")
    return shape


def _cdiv(a, b):
    """C++ integer division (truncates toward zero)."""
    _check(b != 0, "division by zero")
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


# ---------------------------------------------------------------------------------------------
# layer rules
# ---------------------------------------------------------------------------------------------

class _Ctx:
    def __init__(self, layer, bottoms, overrides, options=None):
        self.options = options or {}
        self.layer = layer
        self.p = layer.p
        self.b = bottoms            # list of shapes
        self.overrides = overrides
        self.params = 0
        self.buffers = 0

    def fail(self, msg):
        raise CaffeError(f"layer '{self.layer.name}' ({self.layer.type}): {msg}")

    def check(self, cond, msg):
        if not cond:
            self.fail(msg)

    def nb(self, lo, hi=None):
        n = len(self.b)
        if hi is None:
            hi = lo
        self.check(lo <= n <= (hi if hi >= 0 else n),
                   f"takes {lo}{'' if hi == lo else '+' if hi < 0 else '..%d' % hi} bottom blob(s), "
                   f"got {n}")

    def nt(self, lo, hi=None):
        n = len(self.layer.tops)
        if hi is None:
            hi = lo
        self.check(lo <= n <= (hi if hi >= 0 else n),
                   f"takes {lo}{'' if hi == lo else '+' if hi < 0 else '..%d' % hi} top blob(s), "
                   f"got {n}")


def _spatial_params(c: _Ctx, cp: Message, nsp):
    """kernel/stride/pad/dilation as BaseConvolutionLayer::LayerSetUp reads them."""
    if cp.has("kernel_h") or cp.has("kernel_w"):
        c.check(nsp == 2, "kernel_h & kernel_w can only be used for 2D convolution.")
        c.check(not cp.has("kernel_size"),
                "Either kernel_size or kernel_h/w should be specified; not both.")
        kernel = [cp.int("kernel_h", 0), cp.int("kernel_w", 0)]
    else:
        ks = cp.ints("kernel_size")
        c.check(len(ks) == 1 or len(ks) == nsp,
                f"kernel_size must be specified once, or once per spatial dimension "
                f"(kernel_size specified {len(ks)} times; {nsp} spatial dims).")
        kernel = [ks[0 if len(ks) == 1 else i] for i in range(nsp)]
    for k in kernel:
        c.check(k > 0, "Filter dimensions must be nonzero.")

    def per_axis(name, hname, wname, default, positive):
        if cp.has(hname) or cp.has(wname):
            c.check(nsp == 2, f"{hname} & {wname} can only be used for 2D convolution.")
            c.check(not cp.has(name), f"Either {name} or {hname}/{wname} should be specified; "
                                      "not both.")
            vals = [cp.int(hname, 0), cp.int(wname, 0)]
        else:
            vs = cp.ints(name)
            c.check(len(vs) in (0, 1, nsp),
                    f"{name} must be specified once, or once per spatial dimension "
                    f"({name} specified {len(vs)} times; {nsp} spatial dims).")
            vals = [default if not vs else vs[0 if len(vs) == 1 else i] for i in range(nsp)]
        if positive:
            for v in vals:
                c.check(v > 0, f"{name} dimensions must be nonzero.")
        return vals

    stride = per_axis("stride", "stride_h", "stride_w", 1, True)
    pad = per_axis("pad", "pad_h", "pad_w", 0, False)
    ds = cp.ints("dilation")
    c.check(len(ds) in (0, 1, nsp),
            f"dilation must be specified once, or once per spatial dimension "
            f"(dilation specified {len(ds)} times; {nsp} spatial dims).")
    dilation = [1 if not ds else ds[0 if len(ds) == 1 else i] for i in range(nsp)]
    return kernel, stride, pad, dilation


def _conv(c: _Ctx, deconv=False):
    c.nb(1, -1)
    c.check(len(c.layer.tops) == len(c.b), "Number of bottom and top blobs must be equal.")
    cp = c.p.msg("convolution_param")
    b0 = c.b[0]
    axis = _canon(cp.int("axis", 1), len(b0))
    first_spatial = axis + 1
    nsp = len(b0) - first_spatial
    c.check(nsp >= 0, "no spatial axes")
    kernel, stride, pad, dilation = _spatial_params(c, cp, nsp)
    channels = b0[axis]
    num_output = cp.int("num_output", 0)
    c.check(num_output > 0, "num_output must be positive")
    group = cp.int("group", 1)
    c.check(group > 0 and channels % group == 0, "channels must be a multiple of group")
    c.check(num_output % group == 0, "Number of output should be multiples of group.")
    if deconv:
        wshape = [channels, num_output // group] + kernel
    else:
        wshape = [num_output, channels // group] + kernel
    c.params = _prod(wshape) + (num_output if cp.bool("bias_term", True) else 0)
    for s in c.b:
        c.check(s == b0, "All inputs must have the same shape.")
    out = []
    for i in range(nsp):
        ext = dilation[i] * (kernel[i] - 1) + 1
        h = b0[first_spatial + i]
        if deconv:
            out.append(stride[i] * (h - 1) + ext - 2 * pad[i])
        else:
            out.append(_cdiv(h + 2 * pad[i] - ext, stride[i]) + 1)
    top = _blob(tuple(b0[:axis]) + (num_output,) + tuple(out))
    return [top] * len(c.b)


def _conv_depthwise(c: _Ctx):
    """farmingyard/caffe-mobilenet conv_dw_layer.cpp: output channels = input channels."""
    c.nb(1)
    c.nt(1)
    cp = c.p.msg("convolution_param")
    b0 = c.b[0]

    def two(name, hname, wname, default):
        if cp.has(hname) and cp.has(wname):
            return cp.int(hname), cp.int(wname)
        vs = cp.ints(name)
        if not vs:          # the fork reads index 0 unconditionally; treat absent as default
            return default, default
        return (vs[0], vs[0]) if len(vs) == 1 else (vs[0], vs[1])

    kh, kw = two("kernel_size", "kernel_h", "kernel_w", None)
    c.check(kh is not None, "kernel_size required")
    sh, sw = two("stride", "stride_h", "stride_w", 1)
    ph, pw = two("pad", "pad_h", "pad_w", 0)
    ds = cp.ints("dilation")
    dh, dw = (1, 1) if not ds else ((ds[0], ds[0]) if len(ds) == 1 else (ds[0], ds[1]))
    C = _legacy(b0, 1)
    c.params = C * kh * kw + (C if cp.bool("bias_term", True) else 0)
    H = _legacy(b0, 2)
    W = _legacy(b0, 3)
    oh = (H + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    ow = (W + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    c.check(H + 2 * ph - (dh * (kh - 1) + 1) >= 0 and W + 2 * pw - (dw * (kw - 1) + 1) >= 0,
            "kernel larger than padded input (unsigned arithmetic in the fork)")
    return [_blob((_legacy(b0, 0), C, oh, ow))]


def _pool_out(c, H, W, kh, kw, sh, sw, ph, pw, ceil_round):
    def one(size, k, s, p):
        v = (size + 2 * p - k) / s
        return int(math.ceil(v) if ceil_round else math.floor(v)) + 1

    oh = one(H, kh, sh, ph)
    ow = one(W, kw, sw, pw)
    if ph or pw:
        if (oh - 1) * sh >= H + ph:
            oh -= 1
        if (ow - 1) * sw >= W + pw:
            ow -= 1
        c.check((oh - 1) * sh < H + ph, "pooled height: last pooling starts in the padding")
        c.check((ow - 1) * sw < W + pw, "pooled width: last pooling starts in the padding")
    return oh, ow


def _pooling(c: _Ctx):
    c.nb(1)
    pp = c.p.msg("pooling_param")
    pool = pp.enum("pool", "MAX", numbers={0: "MAX", 1: "AVE", 2: "STOCHASTIC"})
    c.nt(1, 2 if pool == "MAX" else 1)
    b0 = c.b[0]
    glob = pp.bool("global_pooling", False)
    if glob:
        c.check(not (pp.has("kernel_size") or pp.has("kernel_h") or pp.has("kernel_w")),
                "With Global_pooling: true Filter size cannot specified")
    else:
        c.check((not pp.has("kernel_size")) != (not (pp.has("kernel_h") and pp.has("kernel_w"))),
                "Filter size is kernel_size OR kernel_h and kernel_w; not both")
        c.check(pp.has("kernel_size") or (pp.has("kernel_h") and pp.has("kernel_w")),
                "For non-square filters both kernel_h and kernel_w are required.")
    c.check((not pp.has("pad") and pp.has("pad_h") and pp.has("pad_w"))
            or (not pp.has("pad_h") and not pp.has("pad_w")),
            "pad is pad OR pad_h and pad_w are required.")
    c.check((not pp.has("stride") and pp.has("stride_h") and pp.has("stride_w"))
            or (not pp.has("stride_h") and not pp.has("stride_w")),
            "Stride is stride OR stride_h and stride_w are required.")
    c.check(len(b0) == 4, "Input must have 4 axes, corresponding to (num, channels, height, width)")
    N, C, H, W = b0
    if glob:
        kh, kw = H, W
    elif pp.has("kernel_size"):
        kh = kw = pp.int("kernel_size")
    else:
        kh, kw = pp.int("kernel_h"), pp.int("kernel_w")
    c.check(kh > 0 and kw > 0, "Filter dimensions cannot be zero.")
    if pp.has("pad_h"):
        ph, pw = pp.int("pad_h"), pp.int("pad_w")
    else:
        ph = pw = pp.int("pad", 0)
    if pp.has("stride_h"):
        sh, sw = pp.int("stride_h"), pp.int("stride_w")
    else:
        sh = sw = pp.int("stride", 1)
    if glob:
        c.check(ph == 0 and pw == 0 and sh == 1 and sw == 1,
                "With Global_pooling: true; only pad = 0 and stride = 1")
    if ph or pw:
        c.check(pool in ("AVE", "MAX"), "Padding implemented only for average and max pooling.")
        c.check(ph < kh and pw < kw, "pad must be smaller than the kernel")
    c.check(sh > 0 and sw > 0, "stride must be positive")
    round_mode = pp.enum("round_mode", "CEIL", numbers={0: "CEIL", 1: "FLOOR"})
    ceil_round = round_mode == "CEIL"
    if pp.has("ceil_mode"):          # the fork spelling (ceil_mode: false == round_mode: FLOOR)
        ceil_round = pp.bool("ceil_mode")
    oh, ow = _pool_out(c, H, W, kh, kw, sh, sw, ph, pw, ceil_round)
    top = _blob((N, C, oh, ow))
    return [top] * len(c.layer.tops)


def _inner_product(c: _Ctx):
    c.nb(1)
    c.nt(1)
    ip = c.p.msg("inner_product_param")
    b0 = c.b[0]
    n = ip.int("num_output", 0)
    axis = _canon(ip.int("axis", 1), len(b0))
    K = _count(b0, axis)
    c.params = n * K + (n if ip.bool("bias_term", True) else 0)
    return [_blob(tuple(b0[:axis]) + (n,))]


def _same(c: _Ctx, inplace_ok=True):
    c.nb(1)
    c.nt(1)
    if not inplace_ok:
        c.check(c.layer.tops[0] != c.layer.bottoms[0],
                f"{c.layer.type} Layer does not allow in-place computation.")
    return [c.b[0]]


def _lrn(c: _Ctx):
    c.nb(1)
    c.nt(1)
    lp = c.p.msg("lrn_param")
    size = lp.int("local_size", 5)
    c.check(size % 2 == 1, "LRN only supports odd values for local_size")
    c.check(len(c.b[0]) == 4, "Input must have 4 axes, corresponding to (num, channels, height, "
                              "width)")
    return [c.b[0]]


def _prelu(c: _Ctx):
    c.nb(1)
    c.nt(1)
    b0 = c.b[0]
    c.check(len(b0) >= 2, "Number of axes of bottom blob must be >=2.")
    shared = c.p.msg("prelu_param").bool("channel_shared", False)
    c.params = 1 if shared else _legacy(b0, 1)
    return [b0]


def _batch_norm(c: _Ctx):
    c.nb(1)
    c.nt(1)
    b0 = c.b[0]
    C = 1 if len(b0) == 1 else b0[1]
    c.buffers = 2 * C + 1
    return [b0]


def _fork_bn(c: _Ctx):
    """Fork BN: PSPNet/DeepLab-style (slope, bias, mean, var) or SegNet/ENet (scale, shift)."""
    c.nb(1)
    c.nt(1)
    b0 = c.b[0]
    bp = c.p.msg("bn_param")
    segnet = bp.has("scale_filler") or bp.has("shift_filler") or bp.has("bn_mode")
    if segnet:
        C = _legacy(b0, 1)
        c.params = 2 * C
        c.buffers = 0
    else:
        axis = bp.int("axis", 1)
        c.check(axis in (1, 2), "axis_ should be 1 or 2")
        C = _legacy(b0, axis)
        c.params = 2 * C
        c.buffers = 2 * C
    return [b0]


def _scale_like(c: _Ctx, param_name, with_bias_term):
    c.nb(1, 2)
    c.nt(1)
    sp = c.p.msg(param_name)
    b0 = c.b[0]
    total = 0
    if len(c.b) == 1:
        axis = _canon(sp.int("axis", 1), len(b0))
        num_axes = sp.int("num_axes", 1)
        c.check(num_axes >= -1, "num_axes must be non-negative, or -1 to extend to the end of "
                                "bottom[0]")
        if num_axes >= 0:
            c.check(len(b0) >= axis + num_axes,
                    f"{param_name} blob's shape extends past bottom[0]'s shape when applied "
                    f"starting with bottom[0] axis = {axis}")
        end = len(b0) if num_axes == -1 else axis + num_axes
        scale_shape = tuple(b0[axis:end])
        total += _prod(scale_shape)
    else:
        scale_shape = c.b[1]
    # Reshape: match the scale against bottom[0]
    axis = 0 if len(scale_shape) == 0 else _canon(sp.int("axis", 1), len(b0))
    c.check(len(b0) >= axis + len(scale_shape),
            f"scale blob's shape extends past bottom[0]'s shape when applied starting with "
            f"bottom[0] axis = {axis}")
    for i, d in enumerate(scale_shape):
        c.check(b0[axis + i] == d, f"dimension mismatch between bottom[0]->shape({axis + i}) "
                                   f"= {b0[axis + i]} and scale->shape({i}) = {d}")
    if with_bias_term and sp.bool("bias_term", False):
        total += _prod(scale_shape)
    c.params = total
    return [b0]


def _eltwise(c: _Ctx):
    c.nb(2, -1)
    c.nt(1)
    ep = c.p.msg("eltwise_param")
    op = ep.enum("operation", "SUM", numbers={0: "PROD", 1: "SUM", 2: "MAX"})
    coeff = ep.floats("coeff")
    c.check(not coeff or len(coeff) == len(c.b), "Eltwise Layer takes one coefficient per bottom "
                                                  "blob.")
    c.check(not (op == "PROD" and coeff), "Eltwise layer only takes coefficients for summation.")
    for s in c.b[1:]:
        c.check(s == c.b[0], f"bottom[0]: {c.b[0]}, bottom[i]: {s} (Eltwise needs equal shapes)")
    return [c.b[0]]


def _concat(c: _Ctx):
    c.nb(1, -1)
    c.nt(1)
    cp = c.p.msg("concat_param")
    c.check(not (cp.has("axis") and cp.has("concat_dim")),
            "Either axis or concat_dim should be specified; not both.")
    b0 = c.b[0]
    n = len(b0)
    if cp.has("concat_dim"):
        axis = cp.int("concat_dim")
        c.check(0 <= axis < n, "concat_dim out of range.")
    else:
        axis = _canon(cp.int("axis", 1), n)
    top = list(b0)
    for s in c.b[1:]:
        c.check(len(s) == n, "All inputs must have the same #axes.")
        for j in range(n):
            if j != axis:
                c.check(s[j] == top[j], f"All inputs must have the same shape, except at "
                                        f"concat_axis. ({b0} vs {s})")
        top[axis] += s[axis]
    return [_blob(top)]


def _slice(c: _Ctx):
    c.nb(1)
    c.nt(1, -1)
    sp = c.p.msg("slice_param")
    c.check(not (sp.has("axis") and sp.has("slice_dim")),
            "Either axis or slice_dim should be specified; not both.")
    b0 = c.b[0]
    if sp.has("slice_dim"):
        axis = sp.int("slice_dim")
        c.check(0 <= axis < len(b0), "slice_dim out of range.")
    else:
        axis = _canon(sp.int("axis", 1), len(b0))
    dim = b0[axis]
    ntop = len(c.layer.tops)
    points = sp.ints("slice_point")
    if points:
        c.check(len(points) == ntop - 1, "slice_point count must be (number of tops - 1)")
        c.check(ntop <= dim, "more tops than the slice axis has entries")
        prev = 0
        sizes = []
        for p in points:
            c.check(p > prev, "slice_point must be strictly increasing")
            sizes.append(p - prev)
            prev = p
        sizes.append(dim - prev)
    else:
        c.check(dim % ntop == 0, f"Number of top blobs ({ntop}) should evenly divide input slice "
                                 f"axis ({dim})")
        sizes = [dim // ntop] * ntop
    out = []
    for s in sizes:
        t = list(b0)
        t[axis] = s
        out.append(_blob(t))
    return out


def _split(c: _Ctx):
    c.nb(1)
    c.nt(1, -1)
    return [c.b[0]] * len(c.layer.tops)


def _flatten(c: _Ctx):
    c.nb(1)
    c.nt(1)
    c.check(c.layer.tops[0] != c.layer.bottoms[0],
            "Flatten layer does not allow in-place computation.")
    fp = c.p.msg("flatten_param")
    b0 = c.b[0]
    s = _canon(fp.int("axis", 1), len(b0))
    e = _canon(fp.int("end_axis", -1), len(b0))
    return [_blob(tuple(b0[:s]) + (_count(b0, s, e + 1),) + tuple(b0[e + 1:]))]


def _reshape(c: _Ctx):
    c.nb(1)
    c.nt(1)
    c.check(c.layer.tops[0] != c.layer.bottoms[0],
            "Reshape Layer does not allow in-place computation.")
    rp = c.p.msg("reshape_param")
    dims = rp.msg("shape").ints("dim")
    b0 = c.b[0]
    inferred = -1
    copy_axes = []
    constant = 1
    for i, d in enumerate(dims):
        if d == 0:
            copy_axes.append(i)
        elif d == -1:
            c.check(inferred == -1, "new shape contains multiple -1 dims; at most a single (1) "
                                    "value of -1 may be specified")
            inferred = i
        else:
            constant *= d
    a = rp.int("axis", 0)
    start = a if a >= 0 else len(b0) + a + 1
    c.check(0 <= start <= len(b0), f"axis {a} out of range")
    na = rp.int("num_axes", -1)
    c.check(na >= -1, "num_axes must be >= 0, or -1 for all")
    end = len(b0) if na == -1 else start + na
    c.check(end <= len(b0), "end_axis = axis + num_axes is out of range")
    top = list(b0[:start]) + list(dims) + list(b0[end:])
    for i in copy_axes:
        c.check(len(b0) > start + i, "new shape contains a 0, but there was no corresponding "
                                     "bottom axis to copy")
        top[start + i] = b0[start + i]
    count = _prod(b0)
    if inferred >= 0:
        explicit = constant * _count(b0, 0, start) * _count(b0, end)
        for i in copy_axes:
            explicit *= top[start + i]
        c.check(explicit != 0 and count % explicit == 0,
                f"bottom count ({count}) must be divisible by the product of the specified "
                f"dimensions ({explicit})")
        top[start + inferred] = count // explicit
    top = _blob(top)
    c.check(_prod(top) == count, "output count must match input count")
    return [top]


def _permute(c: _Ctx):
    c.nb(1)
    c.nt(1)
    b0 = c.b[0]
    n = len(b0)
    orders = []
    for o in c.p.msg("permute_param").ints("order"):
        c.check(0 <= o < n, "order should be less than the input dimension.")
        c.check(o not in orders, "there are duplicate orders")
        orders.append(o)
    for i in range(n):
        if i not in orders:
            orders.append(i)
    c.check(len(orders) == n, "order count mismatch")
    return [tuple(b0[o] for o in orders)]


def _crop(c: _Ctx):
    c.nb(2)
    c.nt(1)
    cp = c.p.msg("crop_param")
    b0, b1 = c.b
    n = len(b0)
    start = _canon(cp.int("axis", 2), n)
    offs = cp.ints("offset")
    if len(offs) > 1:
        c.check(start + len(offs) == n, "number of offset values specified must be equal to the "
                                        "number of dimensions following axis.")
    out = list(b0)
    for i in range(n):
        if i >= start:
            _check(i < len(b1), f"axis {i} out of range for {len(b1)}-D reference blob")
            off = offs[0] if len(offs) == 1 else (offs[i - start] if len(offs) > 1 else 0)
            c.check(b0[i] - off >= b1[i], f"the crop for dimension {i} is out-of-bounds with "
                                          f"size {b1[i]} and offset {off}")
            out[i] = b1[i]
    return [_blob(out)]


def _softmax(c: _Ctx):
    c.nb(1)
    c.nt(1)
    _canon(c.p.msg("softmax_param").int("axis", 1), len(c.b[0]))
    return [c.b[0]]


def _normalize(c: _Ctx):
    c.nb(1)
    c.nt(1)
    b0 = c.b[0]
    c.check(len(b0) >= 2, "Number of axes of bottom blob must be >=2.")
    shared = c.p.msg("norm_param").bool("channel_shared", True)
    c.params = 1 if shared else _legacy(b0, 1)
    return [b0]


def _prior_box(c: _Ctx, faceboxes=False):
    c.nb(2)
    c.nt(1)
    pp = c.p.msg("prior_box_param")
    mins = pp.floats("min_size")
    c.check(len(mins) > 0, "must provide min_size.")
    for m in mins:
        c.check(m > 0, "min_size must be positive.")
    ars = [1.0]
    flip = pp.bool("flip", True)
    for ar in pp.floats("aspect_ratio"):
        if any(abs(ar - x) < 1e-6 for x in ars):
            continue
        ars.append(ar)
        if flip:
            ars.append(1.0 / ar)
    if faceboxes and len(mins) == 3:     # sfzhang15/FaceBoxes: 16 + 4 + 1 densified anchors
        num_priors = 21
    else:
        num_priors = len(ars) * len(mins)
    maxs = pp.floats("max_size")
    if maxs:
        c.check(len(maxs) == len(mins), "max_size count must equal min_size count")
        for mn, mx in zip(mins, maxs):
            c.check(mx > mn, "max_size must be greater than min_size.")
            num_priors += 1
    var = pp.floats("variance")
    if len(var) > 1:
        c.check(len(var) == 4, "Must and only provide 4 variance.")
    for v in var:
        c.check(v > 0, "variance must be positive")
    b0 = c.b[0]
    n = _legacy(b0, 3) * _legacy(b0, 2) * num_priors * 4
    c.check(n > 0, "prior count must be positive")
    return [_blob((1, 2, n))]


def _detection_output(c: _Ctx):
    c.nb(3, 4)
    c.nt(1)
    dp = c.p.msg("detection_output_param")
    c.check(dp.has("num_classes"), "Must specify num_classes")
    num_classes = dp.int("num_classes")
    share = dp.bool("share_location", True)
    num_loc_classes = 1 if share else num_classes
    loc, conf, prior = c.b[0], c.b[1], c.b[2]
    c.check(_legacy(loc, 0) == _legacy(conf, 0), "loc and conf batch sizes differ")
    num_priors = _legacy(prior, 2) // 4
    c.check(num_priors * num_loc_classes * 4 == _legacy(loc, 1),
            f"Number of priors must match number of location predictions. ({num_priors} priors, "
            f"{_legacy(loc, 1)} location values)")
    c.check(num_priors * num_classes == _legacy(conf, 1),
            f"Number of priors must match number of confidence predictions. ({num_priors} priors, "
            f"{_legacy(conf, 1)} confidence values)")
    return [(1, 1, 1, 7)]


def _shuffle_channel(c: _Ctx):
    c.nb(1)
    c.nt(1)
    g = c.p.msg("shuffle_channel_param").int("group", 1)
    c.check(g > 0, "group must be greater than 0")
    b0 = c.b[0]
    return [_blob((_legacy(b0, 0), _legacy(b0, 1), _legacy(b0, 2), _legacy(b0, 3)))]


def _interp(c: _Ctx):
    c.nb(1, 2)
    c.nt(1)
    ip = c.p.msg("interp_param")
    pb = ip.int("pad_beg", 0)
    pe = ip.int("pad_end", 0)
    c.check(pb <= 0 and pe <= 0, "Only supports non-pos padding (cropping) for now")
    b0 = c.b[0]
    N, C, H, W = (_legacy(b0, i) for i in range(4))
    he = H + pb + pe
    we = W + pb + pe
    if len(c.b) > 1:
        c.check(not (ip.has("shrink_factor") or ip.has("zoom_factor") or ip.has("height")
                     or ip.has("width")),
                "Interp layer cannot have a second bottom layer if any of its shrink, zoom, "
                "height, or width parameters are specified")
        b1 = c.b[1]
        c.check(_legacy(b1, 0) == N, "second bottom batch size differs")
        ho, wo = _legacy(b1, 2), _legacy(b1, 3)
    elif ip.has("shrink_factor") and not ip.has("zoom_factor"):
        s = ip.int("shrink_factor")
        c.check(s >= 1, "Shrink factor must be positive")
        ho, wo = _cdiv(he - 1, s) + 1, _cdiv(we - 1, s) + 1
    elif ip.has("zoom_factor") and not ip.has("shrink_factor"):
        z = ip.int("zoom_factor")
        c.check(z >= 1, "Zoom factor must be positive")
        ho, wo = he + (he - 1) * (z - 1), we + (we - 1) * (z - 1)
    elif ip.has("height") and ip.has("width"):
        ho, wo = ip.int("height"), ip.int("width")
    elif ip.has("shrink_factor") and ip.has("zoom_factor"):
        s, z = ip.int("shrink_factor"), ip.int("zoom_factor")
        c.check(s >= 1, "Shrink factor must be positive")
        c.check(z >= 1, "Zoom factor must be positive")
        ho, wo = _cdiv(he - 1, s) + 1, _cdiv(we - 1, s) + 1
        ho, wo = ho + (ho - 1) * (z - 1), wo + (wo - 1) * (z - 1)
    else:
        c.fail("Interp: no output size specified")
    c.check(he > 0 and we > 0, "height/width should be positive")
    c.check(ho > 0 and wo > 0, "output height/width should be positive")
    return [_blob((N, C, ho, wo))]


def _upsample(c: _Ctx):
    up = c.p.msg("upsample_param")
    c.nt(1)
    b0 = c.b[0]
    if len(c.b) == 1:
        # YOLO-fork Upsample (nearest, one bottom): H*scale, W*scale
        s = up.int("scale", 1)
        c.check(s > 0, "scale must be positive")
        c.check(len(b0) == 4, "Input must have 4 axes")
        N, C, H, W = b0
        return [_blob((N, C, H * s, W * s))]
    c.nb(2)
    # SegNet/ENet unpooling with the pooling mask as bottom[1]
    c.check((up.has("upsample_h") and up.has("upsample_w"))
            or (not up.has("scale") and up.has("scale_h") and up.has("scale_w"))
            or (not up.has("scale_h") and not up.has("scale_w")),
            "upsample_h & upsample_w are required, else (DEPRECATED) scale OR scale_h & scale_w "
            "are required.")
    b1 = c.b[1]
    c.check(len(b0) == 4, "Input must have 4 axes, corresponding to (num, channels, height, "
                          "width)")
    c.check(len(b1) == 4, "Input mask must have 4 axes, corresponding to (num, channels, "
                          "height, width)")
    for i in range(4):
        c.check(b0[i] == b1[i], f"bottom and mask shapes differ: {b0} vs {b1}")
    if up.has("upsample_h") and up.has("upsample_w"):
        uh, uw = up.int("upsample_h"), up.int("upsample_w")
        c.check(uh > 1 and uw > 1, "upsample_h/upsample_w must be > 1")
    else:
        if not up.has("scale_h"):
            sh = sw = up.int("scale", 2)
            c.check(sh > 1, "scale must be > 1")
        else:
            sh, sw = up.int("scale_h"), up.int("scale_w")
            c.check(sh > 1 and sw > 1, "scale_h/scale_w must be > 1")
        poh = up.bool("pad_out_h", False)
        pow_ = up.bool("pad_out_w", False)
        c.check(not poh or sh == 2, "Output height padding compensation requires scale_h == 2, "
                                    "otherwise the output size is ill-defined.")
        c.check(not pow_ or sw == 2, "Output width padding compensation requires scale_w == 2, "
                                     "otherwise the output size is ill-defined.")
        uh = b0[2] * sh - int(poh)
        uw = b0[3] * sw - int(pow_)
    return [_blob((b0[0], b0[1], uh, uw))]


def _axpy(c: _Ctx):
    c.nb(3)
    c.nt(1)
    a, x, y = c.b
    c.check(len(a) >= 2 and len(x) >= 2, "Axpy needs N and C axes")
    c.check(a[0] == x[0], "Axpy: bottom[0] and bottom[1] batch sizes differ")
    c.check(a[1] == x[1], "Axpy: bottom[0] and bottom[1] channel counts differ")
    if len(a) == 4:
        c.check(a[2] == 1 and a[3] == 1, "Axpy: bottom[0] must be N x C x 1 x 1")
    c.check(x == y, f"Axpy: bottom[1] {x} and bottom[2] {y} shapes differ")
    return [x]


def _argmax(c: _Ctx):
    c.nb(1)
    c.nt(1)
    ap = c.p.msg("argmax_param")
    b0 = c.b[0]
    k = ap.int("top_k", 1)
    c.check(k >= 1, "top k must not be less than 1.")
    shape = [1] * max(3, len(b0))
    if ap.has("axis"):
        axis = _canon(ap.int("axis"), len(b0))
        c.check(k <= b0[axis], "top_k must be less than or equal to the dimension of the axis.")
        shape = list(b0)
        shape[axis] = k
    else:
        c.check(k <= _count(b0, 1), "top_k must be less than or equal to the number of classes.")
        shape[0] = b0[0]
        shape[2] = k
        if ap.bool("out_max_val", False):
            shape[1] = 2
    return [_blob(shape)]


def _tile(c: _Ctx):
    c.nb(1)
    c.nt(1)
    tp = c.p.msg("tile_param")
    c.check(tp.has("tiles"), "Number of tiles must be specified")
    t = tp.int("tiles")
    c.check(t > 0, "Number of tiles must be positive.")
    b0 = list(c.b[0])
    axis = _canon(tp.int("axis", 1), len(b0))
    b0[axis] *= t
    return [_blob(b0)]


def _reduction(c: _Ctx):
    c.nb(1)
    c.nt(1)
    b0 = c.b[0]
    axis = _canon(c.p.msg("reduction_param").int("axis", 0), len(b0))
    return [tuple(b0[:axis])]


def _spp(c: _Ctx):
    c.nb(1)
    c.nt(1)
    sp = c.p.msg("spp_param")
    b0 = c.b[0]
    c.check(len(b0) == 4, "Input must have 4 axes, corresponding to (num, channels, height, "
                          "width)")
    N, C, H, W = b0
    levels = sp.int("pyramid_height", 0)
    c.check(levels >= 1, "pyramid_height must be >= 1")
    pool = sp.enum("pool", "MAX", numbers={0: "MAX", 1: "AVE", 2: "STOCHASTIC"})
    outs = []
    for lvl in range(levels):
        bins = 2 ** lvl
        kh = int(math.ceil(H / bins))
        kw = int(math.ceil(W / bins))
        ph = (kh * bins - H + 1) // 2
        pw = (kw * bins - W + 1) // 2
        if ph or pw:
            c.check(pool in ("AVE", "MAX"), "Padding implemented only for average and max "
                                            "pooling.")
            c.check(ph < kh and pw < kw, "SPP: pad must be smaller than the kernel")
        oh, ow = _pool_out(c, H, W, kh, kw, kh, kw, ph, pw, True)
        outs.append((oh, ow))
    if levels == 1:
        return [_blob((N, C) + outs[0])]
    return [_blob((N, sum(C * oh * ow for oh, ow in outs)))]


def _embed(c: _Ctx):
    c.nb(1)
    c.nt(1)
    ep = c.p.msg("embed_param")
    n = ep.int("num_output", 0)
    k = ep.int("input_dim", 0)
    c.check(k > 0, "EmbedLayer input_dim must be positive")
    c.params = k * n + (n if ep.bool("bias_term", True) else 0)
    return [_blob(tuple(c.b[0]) + (n,))]


def _parameter(c: _Ctx):
    c.nb(0)
    c.nt(1)
    shape = _blob(c.p.msg("parameter_param").msg("shape").ints("dim"))
    c.params = _prod(shape)
    return [shape]


def _silence(c: _Ctx):
    c.nb(1, -1)
    c.nt(0)
    return []


def _loss(c: _Ctx):
    c.nb(2, 3)
    c.nt(1, 2) if c.layer.type == "SoftmaxWithLoss" else c.nt(1)
    if c.layer.type == "SoftmaxWithLoss":
        b0, b1 = c.b[0], c.b[1]
        axis = _canon(c.p.msg("softmax_param").int("axis", 1), len(b0))
        c.check(_count(b0, 0, axis) * _count(b0, axis + 1) == _prod(b1),
                "Number of labels must match number of predictions; e.g., if softmax axis == 1 "
                "and prediction shape is (N, C, H, W), label count (number of labels) must be "
                "N*H*W, with integer values in {0, 1, ..., C-1}.")
        return [()] + ([b0] if len(c.layer.tops) > 1 else [])
    return [()]


def _accuracy(c: _Ctx):
    c.nb(2)
    c.nt(1, 2)
    ap = c.p.msg("accuracy_param")
    b0, b1 = c.b
    k = ap.int("top_k", 1)
    axis = _canon(ap.int("axis", 1), len(b0))
    outer = _count(b0, 0, axis)
    inner = _count(b0, axis + 1)
    c.check(k <= _prod(b0) // max(_prod(b1), 1), "top_k must be less than or equal to the number "
                                                 "of classes.")
    c.check(outer * inner == _prod(b1), "Number of labels must match number of predictions")
    tops = [()]
    if len(c.layer.tops) > 1:
        tops.append((b0[axis],))
    return tops


def _data_like(c: _Ctx):
    """Data / ImageData / DenseImageData / WindowData...: sizes come from the data, so the caller
    may override them (input_shapes); otherwise what the prototxt itself fixes is used."""
    c.nb(0)
    c.nt(1, 2)
    t = c.layer.type
    name = c.layer.tops[0]
    tp = c.p.msg("transform_param")
    if t == "Data":
        dp = c.p.msg("data_param")
        crop = tp.int("crop_size", dp.int("crop_size", 0))
        batch = dp.int("batch_size", 0)
        shape = (batch, 3, crop, crop) if crop else None
        label = (batch,)
    elif t == "ImageData":
        ip = c.p.msg("image_data_param")
        batch = ip.int("batch_size", 1)
        ch = 3 if ip.bool("is_color", True) else 1
        crop = tp.int("crop_size", ip.int("crop_size", 0))
        if crop:
            shape = (batch, ch, crop, crop)
        elif ip.int("new_height", 0) and ip.int("new_width", 0):
            shape = (batch, ch, ip.int("new_height"), ip.int("new_width"))
        else:
            shape = None
        label = (batch,)
    elif t == "DenseImageData":
        ip = c.p.msg("dense_image_data_param")
        batch = ip.int("batch_size", 1)
        ch = 3 if ip.bool("is_color", True) else 1
        h = ip.int("crop_height", 0) or ip.int("new_height", 0)
        w = ip.int("crop_width", 0) or ip.int("new_width", 0)
        shape = (batch, ch, h, w) if h and w else None
        label = None
    else:
        shape = None
        label = None
    if name in c.overrides:
        shape = tuple(c.overrides[name])
    if shape is None:
        c.fail(f"the size of '{name}' comes from the data source; pass it in input_shapes")
    if t == "DenseImageData":
        label = (shape[0], 1) + tuple(shape[2:])
    if len(c.layer.tops) > 1 and c.layer.tops[1] in c.overrides:
        label = tuple(c.overrides[c.layer.tops[1]])
    out = [_blob(shape)]
    if len(c.layer.tops) > 1:
        c.check(label is not None, "label shape unknown")
        out.append(_blob(label))
    return out


def _input(c: _Ctx):
    c.nb(0)
    if c.layer.input_shapes is not None:
        shapes = list(c.layer.input_shapes)
    else:
        ss = c.p.msg("input_param").msgs("shape")
        n = len(c.layer.tops)
        c.check(len(ss) in (0, 1, n), "Must specify 'shape' once, once per top blob, or not at "
                                      "all: 0 tops vs 0 shapes or 1 shape or N shapes.")
        shapes = [tuple(ss[0 if len(ss) == 1 else i].ints("dim")) if ss else ()
                  for i in range(n)]
    out = []
    for top, s in zip(c.layer.tops, shapes):
        if top in c.overrides:
            s = tuple(c.overrides[top])
        out.append(_blob(s))
    return out


RULES = {
    "Input": _input,
    "Data": _data_like, "ImageData": _data_like, "DenseImageData": _data_like,
    "WindowData": _data_like, "HDF5Data": _data_like, "MemoryData": _data_like,
    "Convolution": lambda c: _conv(c, False),
    "Deconvolution": lambda c: _conv(c, True),
    "ConvolutionDepthwise": _conv_depthwise,
    "Pooling": _pooling,
    "InnerProduct": _inner_product,
    "ReLU": _same, "Sigmoid": _same, "TanH": _same, "ELU": _same, "BNLL": _same,
    "Power": _same, "Dropout": _same, "Exp": _same, "Log": _same, "Threshold": _same,
    "Clip": _same, "Swish": _same, "MVN": _same,
    "AbsVal": lambda c: _same(c, inplace_ok=False),
    "PReLU": _prelu,
    "LRN": _lrn,
    "BatchNorm": _batch_norm,
    "BN": _fork_bn,
    "Scale": lambda c: _scale_like(c, "scale_param", True),
    "Bias": lambda c: _scale_like(c, "bias_param", False),
    "Eltwise": _eltwise,
    "Concat": _concat,
    "Slice": _slice,
    "Split": _split,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Permute": _permute,
    "Crop": _crop,
    "Softmax": _softmax,
    "Normalize": _normalize,
    "PriorBox": lambda c: _prior_box(c, c.options.get("prior_box") == "faceboxes"),
    "DetectionOutput": _detection_output,
    "ShuffleChannel": _shuffle_channel,
    "Interp": _interp,
    "Upsample": _upsample,
    "Axpy": _axpy,
    "ArgMax": _argmax,
    "Tile": _tile,
    "Reduction": _reduction,
    "SPP": _spp,
    "Embed": _embed,
    "Parameter": _parameter,
    "Silence": _silence,
    "Accuracy": _accuracy,
}
for _t in LOSS_TYPES:
    RULES[_t] = _loss


# ---------------------------------------------------------------------------------------------
# the net (net.cpp Init, with insert_splits.cpp's view of in-place tops)
# ---------------------------------------------------------------------------------------------

def reference(path, input_shapes: dict | None = None, *, prior_box: str = "ssd") -> list[dict]:
    """Per-layer output shapes, learnable parameter counts and stored buffers, as Caffe builds the
    TEST-phase net of `path`. input_shapes overrides input/data blob shapes (name -> tuple).
    prior_box="faceboxes" uses sfzhang15/FaceBoxes' PriorBox (3 min_sizes -> 21 priors)."""
    _check(prior_box in ("ssd", "faceboxes"), "prior_box must be 'ssd' or 'faceboxes'")
    overrides = {k: tuple(v) for k, v in (input_shapes or {}).items()}
    net = parse_file(path)
    layers = _upgrade_layers(net)

    # InsertSplits' bookkeeping: which producer (layer, top index) each bottom reads, and how many
    # readers each producer top has. A top that repeats its bottom at the same index is in-place
    # only when that bottom is not split (read by one layer only); otherwise Caffe renames the
    # bottom to a split blob and the top then collides with the existing blob.
    last_top = {}
    readers = {}
    source = {}
    for li, L in enumerate(layers):
        for j, b in enumerate(L.bottoms):
            _check(b in last_top, f"Unknown bottom blob '{b}' (layer '{L.name}', bottom index {j})")
            source[(li, j)] = last_top[b]
            readers[last_top[b]] = readers.get(last_top[b], 0) + 1
        for j, t in enumerate(L.tops):
            last_top[t] = (li, j)

    shapes: dict[str, tuple] = {}
    produced = set()
    out = []
    for li, L in enumerate(layers):
        rule = RULES.get(L.type)
        if rule is None:
            raise CaffeError(f"Unknown layer type: {L.type} (layer '{L.name}')")
        bottoms = [shapes[b] for b in L.bottoms]
        ctx = _Ctx(L, bottoms, overrides, {"prior_box": prior_box})
        try:
            tops = rule(ctx)
        except CaffeError as e:
            msg = str(e)
            if not msg.startswith("layer '"):
                msg = f"layer '{L.name}' ({L.type}): {msg}"
            raise CaffeError(msg) from None
        _check(len(tops) == len(L.tops), f"layer '{L.name}': produced {len(tops)} tops for "
                                         f"{len(L.tops)} named")
        for j, t in enumerate(L.tops):
            inplace = (j < len(L.bottoms) and L.bottoms[j] == t
                       and readers.get(source[(li, j)], 0) <= 1)
            if not inplace:
                _check(t not in produced, f"Top blob '{t}' produced by multiple sources.")
            produced.add(t)
            shapes[t] = tops[j]
        out.append({
            "name": L.name, "type": L.type, "bottoms": list(L.bottoms),
            "top_names": list(L.tops), "tops": [tuple(s) for s in tops],
            "params": int(ctx.params), "buffers": int(ctx.buffers),
            "forward": L.type not in NON_FORWARD_TYPES,
        })
    return out


if __name__ == "__main__":      # a quick look: python caffe_reference.py FILE
    import sys
    for row in reference(sys.argv[1]):
        print(f"{row['name']:40s} {row['type']:20s} {row['tops']} p={row['params']} "
              f"b={row['buffers']}")
