"""What a layer type is: its parameter schema (data, as in ONNX) next to its shape rule, costs
and kernels (`lower_cpu`, `lower_cuda`: one place per layer type).

A layer module subclasses `Layer`, declares `params`, and overrides the few rules that differ
from the defaults here. Validation, defaults, Caffe aliases and did-you-mean come from the schema,
so adding a layer never means writing a parser.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import Loc, NetcError, did_you_mean

Shape = tuple  # tuple[int, ...]


@dataclass(frozen=True)
class Enum:
    """A bare identifier value such as MAX or SUM (distinct from a quoted string)."""
    name: str

    def __str__(self) -> str:
        return self.name


@dataclass
class Field:
    """One raw `key: value` from a model file; value is a scalar, Enum, list or list[Field].
    Equality ignores where it was written, so IRs from different files compare equal."""
    key: str
    value: Any
    loc: Loc = field(compare=False, repr=False)


@dataclass(frozen=True)
class Param:
    name: str
    kind: str = "int"          # int | float | bool | enum | str | msg | shape
    default: Any = None
    repeated: bool = False
    choices: tuple = ()        # enum values; ints accepted as their index (protobuf)
    min: float | None = 0      # inclusive lower bound for numbers
    positive: bool = False     # strict > 0
    message: str | None = None  # Caffe sub-message the field lives in (default: the layer's first)
    base: int = 0              # protobuf number of the first enum choice
    doc: str = ""


@dataclass
class Ops:
    """Netscope-style operation counts; flops = 2*macc + everything else."""
    macc: int = 0
    comp: int = 0
    add: int = 0
    mul: int = 0
    div: int = 0
    exp: int = 0

    @property
    def flops(self) -> int:
        return 2 * self.macc + self.comp + self.add + self.mul + self.div + self.exp


def numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


class Layer:
    type: str = ""
    aliases: tuple = ()          # V1 enum names and other spellings
    messages: tuple = ()         # Caffe *_param messages holding this layer's fields
    params: tuple = ()
    ignored: tuple = ("engine", "weight_filler", "bias_filler", "filler")  # accepted, no effect
    respelled: dict = {}         # a widespread fork's field -> (Caffe's field, {fork value: Caffe value})
    family: str = "other"        # conv pool fc norm activation merge data shape loss detection
    short: str = "layer"         # prefix for generated names
    min_inputs: int = 1
    max_inputs: int | None = 1
    outputs: int | None = 1      # None: as many as tops given
    optional_outputs: int = 0    # tops a file may add (MAX pooling's argmax mask); shapes() gives them too
    elementwise: bool = False    # output i depends on input i only: may run in place
    forward: bool = True         # False for loss/accuracy: kept but not part of inference
    source: bool = False         # produces the network's inputs (fed, never computed)
    kernels: bool = False        # its weight is [out, in, kh, kw] kernels (explain --method filters)
    feature_conv: bool = False   # a convolution computing feature maps (explain's default layers)
    scores_in: bool = False      # its input is the class scores it normalizes (explain's score: Softmax)
    no_gradient_inputs: tuple = ()   # inputs its backward never returns a gradient for (shape refs, indices)
    sink: bool = False           # marks an output: reads its bottoms, computes nothing
    swallows: bool = False       # a sink whose bottoms are not outputs (Silence)
    epilogue_merge: bool = False  # a producer's epilogue may compute it (ResNet's residual add)
    own_buffer: bool = False     # its kernel writes its own output buffer, never a concat slice
    cost: str = ""               # the operation-count rule, in words (`netc layers`)

    # ---- schema -------------------------------------------------------------------------
    def schema(self) -> dict[str, Param]:
        return {p.name: p for p in self.params}

    def validate(self, fields: list[Field], loc: Loc) -> dict:
        """Typed, range-checked attributes with defaults filled in."""
        schema = self.schema()
        got: dict[str, Any] = {}
        for f in fields:
            if f.key in self.ignored:
                continue
            p = schema.get(f.key)
            if p is None:
                raise NetcError(f'{self.type} has no parameter "{f.key}"'
                                + did_you_mean(f.key, list(schema)), f.loc)
            values = f.value if isinstance(f.value, list) and p.kind not in ("msg", "shape") \
                and not (f.value and isinstance(f.value[0], Field)) else [f.value]
            if p.kind == "shape" and isinstance(f.value, list) and not (f.value and isinstance(f.value[0], Field)):
                nested = p.repeated and f.value and all(isinstance(x, (list, tuple)) for x in f.value)
                values = list(f.value) if nested else [f.value]  # .net: shape=[1, 3, 224, 224]
            conv = [_coerce(self.type, p, v, f.loc) for v in values]
            if p.repeated:
                got.setdefault(p.name, []).extend(conv)
            else:
                if p.name in got or len(conv) != 1:
                    raise NetcError(f'{self.type} parameter "{p.name}" given more than once', f.loc)
                got[p.name] = conv[0]
        attrs = {}
        for p in self.params:
            if p.name in got:
                attrs[p.name] = tuple(got[p.name]) if p.repeated else got[p.name]
            else:
                attrs[p.name] = tuple(p.default or ()) if p.repeated else p.default
        return self.normalize(attrs, loc)

    def normalize(self, attrs: dict, loc: Loc) -> dict:
        """Canonical form (e.g. kernel_h/kernel_w folded into kernel). Override as needed."""
        return attrs

    def written_params(self, attrs: dict) -> list[tuple[str, Any]]:
        """(param, value) pairs to write back out; inverse of normalize. Defaults omitted."""
        out = []
        for p in self.params:
            v = attrs.get(p.name)
            if v is None or v == p.default or (p.repeated and v == tuple(p.default or ())):
                continue
            out.append((p.name, v))
        return out

    # ---- rules --------------------------------------------------------------------------
    def check_inputs(self, n: int, loc: Loc) -> None:
        if n < self.min_inputs or (self.max_inputs is not None and n > self.max_inputs):
            want = (f"{self.min_inputs}" if self.min_inputs == self.max_inputs else
                    f"at least {self.min_inputs}" if self.max_inputs is None else
                    f"{self.min_inputs} to {self.max_inputs}")
            raise NetcError(f"{self.type} takes {want} input(s), got {n}", loc)

    def check_outputs(self, ntops: int, a: dict, loc: Loc) -> None:
        """Refuse a top count these parameters do not allow (beyond `outputs` and
        `optional_outputs`)."""

    def shapes(self, ins: list[Shape], a: dict, loc: Loc) -> list[Shape]:
        return [ins[0]]

    def param_shapes(self, ins: list[Shape], a: dict) -> dict[str, Shape]:
        """Learnable blobs, keyed as in weights files (weight, bias, ...)."""
        return {}

    def buffer_shapes(self, ins: list[Shape], a: dict) -> dict[str, Shape]:
        """Stored values that are not learned (BatchNorm statistics)."""
        return {}

    # stored buffers a weights file must carry (the rest of buffer_shapes may be left out)
    required_buffers: tuple = ()

    def onnx(self, b, n: str, d: dict, ins: list[str]) -> list[str]:
        """ONNX nodes computing this layer (compiler/onnx_export.py's builder `b`, the node's IR
        dict `d`, its input value names); returns its output value names, one per top."""
        raise NotImplementedError

    def caffe_blobs(self, a: dict) -> list[str]:
        """Its blobs in the order a .caffemodel stores them (those this layer does not have are
        skipped: a Scale with two inputs keeps only its bias)."""
        return ["weight", "bias"]

    def given_shapes(self, given: list, a: dict, loc: Loc) -> list[Shape]:
        """A source's output shapes when the user gave some (--input-shape; None for the rest):
        the given ones replace what the file says, with as many dimensions."""
        natural = self.multi_shapes([], a, loc, len(given))
        for top, (new, old) in enumerate(zip(given, natural)):
            if new is not None and len(new) != len(old):
                raise NetcError(f"this input has {len(old)} dimensions ({fmt_shape(old)}); --input-shape "
                                f"gives {len(new)} ({fmt_shape(tuple(new))})", loc)
        return [tuple(new) if new is not None else old for new, old in zip(given, natural)]

    def optional_blobs(self, a: dict) -> dict[str, Shape]:
        """Blobs a weights file may carry or leave out (BatchNorm's moving-average factor)."""
        return {}

    def init_range(self, blob: str, shape: Shape, a: dict) -> tuple[float, float]:
        """(low, high) of the seeded uniform values netc makes for `blob` when no weights are
        given: statistics with positive variance, small biases, multipliers near one (a layer
        with a fan-in overrides this with He's range), so every layer does visible work."""
        if blob == "var":
            return 0.5, 1.5
        if blob in ("mean", "bias"):
            return -0.1 * 3 ** 0.5, 0.1 * 3 ** 0.5       # standard deviation 0.1
        return 0.5, 1.5

    def ops(self, ins: list[Shape], outs: list[Shape], a: dict) -> Ops:
        return Ops()

    def window(self, ins: list[Shape], a: dict):
        """Per spatial axis (kernel_extent, stride, pad) for receptive fields; None if pointwise."""
        return None

    def receptive(self, rf: list[tuple], ins: list[Shape], a: dict) -> list[tuple]:
        """Per spatial axis (size, jump) after this layer, from the inputs' merged (size, jump):
        a window of extent k and stride s grows the size by (k - 1) * jump and multiplies the
        jump by s; pointwise layers pass them through."""
        win = self.window(ins, a)
        if not win:
            return rf
        return [(r + (k - 1) * j, j * s) for (r, j), (k, s, _) in zip(rf, win)]

    def is_view(self, a: dict) -> bool:
        """True when the output is the input's bytes re-labelled (Flatten, Reshape)."""
        return False

    def computes(self, a: dict) -> bool:
        """Whether a target emits a step for it (sources, sinks and views need none)."""
        return not (self.source or self.sink or self.is_view(a))

    def feeds(self, port: int) -> bool:
        """Whether output `port` of a source is fed by the user (Data's label is not)."""
        return self.source

    def concat_axis(self, a: dict) -> int | None:
        """The axis along which the output lays its inputs side by side (Concat), else None: a
        target may then let the producers write straight into their slices."""
        return None

    # ---- what fusion asks ------------------------------------------------------------------
    def activation(self, a: dict, k) -> list[str] | None:
        """Statements updating a float32 local `v` in dialect `k` (codegen/dialect.py) when the
        layer is pointwise, so any producer's epilogue can run it; None otherwise."""
        return None

    def affine(self, name: str, a: dict, channels: int, w: dict):
        """Per-channel (multiplier, offset) float64 arrays when the layer is y = x * m + b with
        m, b from its weights (`w`, keyed "<name>.<blob>"), so it folds into a producer's
        weights; None otherwise."""
        return None

    # ---- how it reads in a diagram and in tests -----------------------------------------------
    def brief(self, a: dict) -> str:
        """The few parameters that identify the layer at a glance in a diagram (Netscope-like)."""
        return ""

    def reference(self, torch, xs: list, a: dict, p, node: dict) -> list:
        """The layer's outputs computed with PyTorch (`torch` passed in: layers never import it),
        the independent semantics tests compare the kernels with. `xs`: input tensors (float64),
        `p(blob)`: a weight tensor, `node`: the IR node (shapes, tops)."""
        raise NotImplementedError(f"no torch reference for {self.type}")

    def backward(self, dys: list, xs: list, ys: list, a: dict, p, rule: str) -> list | None:
        """Gradients with respect to the inputs (None where none flows) from those with respect
        to the outputs (None where none came): xs and ys are the forward's inputs and outputs
        (float32 arrays), p(blob) the layer's weights, `rule` explain's ReLU rule ("backprop",
        "deconvnet", "guided"). None: this type has no backward rule (yet). Weight gradients
        would go beside these, per layer, when training needs them."""
        return None

    # ---- kernels ------------------------------------------------------------------------
    # lower_<target>(lo, n) emits node n's step through the target's Lowering `lo`
    # (compiler/codegen/cpu.py, cuda.py: views, parameters, kernel registration, fusion) and
    # returns the nodes it computed (n, then any it fused; None: n alone). Templates are strings and
    # codegen helpers are imported inside these methods, so analysis never loads numpy/numba.
    # A type without its own lower_<target> has no kernels there (`runs_on`); the lowering
    # reports that with the layer's location before it would call these.
    def lower_cpu(self, lo, n: str):
        raise NotImplementedError(f"{self.type} has no CPU kernels")

    def lower_cuda(self, lo, n: str):
        raise NotImplementedError(f"{self.type} has no CUDA kernels")

    def runs_on(self, target: str) -> bool:
        """Whether this layer type has kernels for `target` ("cpu" or "cuda")."""
        method = f"lower_{target}"
        return (self.source or self.sink or self.is_view({})
                or getattr(type(self), method) is not getattr(Layer, method))


REGISTRY: dict[str, Layer] = {}
_ALIASES: dict[str, Layer] = {}


def register(cls):
    layer = cls()
    REGISTRY[layer.type] = layer
    for name in (layer.type, *layer.aliases):
        _ALIASES[name] = layer
        _ALIASES[name.lower()] = layer
    return cls


def lookup(type_name: str, loc: Loc) -> Layer:
    layer = _ALIASES.get(type_name) or _ALIASES.get(type_name.lower())
    if layer is None:
        raise NetcError(f'unknown layer type "{type_name}"' + _suggest_type(type_name), loc)
    return layer


def _suggest_type(word: str) -> str:
    """The closest type name in its own spelling (V1 enums such as INNER_PRODUCT included),
    compared without case: "upsampel" suggests "Upsample", never a lowercase alias."""
    import difflib
    names = {}
    spellings = [*REGISTRY, *(a for a in _ALIASES if not a.islower())]
    if word.isupper():       # a V1 file: its enum spellings first (CONVOLUTON -> CONVOLUTION)
        spellings.sort(key=lambda a: not a.isupper())
    for name in spellings:
        names.setdefault(name.lower().replace("_", ""), name)
    word = word.replace("_", "")
    close = difflib.get_close_matches(word.lower(), list(names), n=1, cutoff=0.6)
    return f' (did you mean "{names[close[0]]}"?)' if close else ""


def _coerce(layer_type: str, p: Param, v: Any, loc: Loc):
    def bad(what):
        return NetcError(f'{layer_type} parameter "{p.name}" {what}', loc)

    if p.kind == "msg":
        return v
    if p.kind == "shape":
        if isinstance(v, list) and all(isinstance(x, Field) for x in v):
            dims = [x.value for x in v if x.key == "dim"]
            for x in v:
                if x.key != "dim":
                    raise NetcError(f'shape has no field "{x.key}" (expected "dim")', x.loc)
        elif isinstance(v, list):
            dims = v
        else:
            raise bad("must be a shape such as [1, 3, 224, 224]")
        if not all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
            raise bad("must hold integers")
        return tuple(dims)
    if isinstance(v, list):
        raise bad("takes a single value here, not a list")
    if p.kind == "bool":
        if isinstance(v, bool):
            return v
        if isinstance(v, Enum) and v.name.lower() in ("true", "false"):
            return v.name.lower() == "true"
        if isinstance(v, int) and v in (0, 1):
            return bool(v)
        raise bad(f"must be true or false, got {_show(v)}")
    if p.kind == "enum":
        if isinstance(v, Enum) and v.name.upper() in p.choices:
            return v.name.upper()
        if isinstance(v, str) and v.upper() in p.choices:
            return v.upper()
        if isinstance(v, int) and not isinstance(v, bool) and 0 <= v - p.base < len(p.choices):
            return p.choices[v - p.base]
        raise bad(f"must be one of {', '.join(p.choices)}, got {_show(v)}"
                  + did_you_mean(str(v).upper(), p.choices))
    if p.kind == "str":
        if isinstance(v, (str, Enum)):
            return str(v)
        raise bad(f"must be a string, got {_show(v)}")
    if p.kind == "int":
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            else:
                raise bad(f"must be an integer, got {_show(v)}")
    elif p.kind == "float":
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise bad(f"must be a number, got {_show(v)}")
        v = float(v)
        if math.isnan(v) or math.isinf(v):
            raise bad(f"must be a finite number, got {v}")
    if p.positive and v <= 0:
        raise bad(f"must be positive, got {_show(v)}")
    if p.min is not None and v < p.min:
        raise bad(f"must be >= {p.min}, got {_show(v)}")
    return v


def _show(v) -> str:
    if isinstance(v, str):
        return f'"{v}"'
    return str(v)


def spatial_pair(a: dict, name: str, loc: Loc, default: int | None, *, h: str, w: str):
    """Caffe's X / X_h+X_w convention -> (h, w). `name` is repeated (N-D Caffe)."""
    vals = a.get(name) or ()
    vh, vw = a.get(h), a.get(w)
    if vh is not None or vw is not None:
        if vals:
            raise NetcError(f'give either "{name}" or "{h}"/"{w}", not both', loc)
        if vh is None or vw is None:
            raise NetcError(f'"{h}" and "{w}" must be given together', loc)
        return (vh, vw)
    if not vals:
        if default is None:
            raise NetcError(f'missing required parameter "{name}"', loc)
        return (default, default)
    if len(vals) == 1:
        return (vals[0], vals[0])
    if len(vals) == 2:
        return tuple(vals)
    raise NetcError(f'"{name}" takes one or two values for 2-D layers, got {len(vals)}', loc)


def write_pair(name: str, h: str, w: str, pair, default) -> list[tuple[str, Any]]:
    if pair[0] == pair[1]:
        return [] if pair[0] == default else [(name, pair[0])]
    return [(h, pair[0]), (w, pair[1])]


def require_4d(layer: Layer, shape: Shape, loc: Loc) -> None:
    if len(shape) != 4:
        raise NetcError(f"{layer.type} needs a 4-D input (N, C, H, W), got {fmt_shape(shape)}", loc)


def fmt_shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"
