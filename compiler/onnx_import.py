"""An ONNX model as the IR: each node becomes the netc layer that computes it, its initializers
(and Constant nodes) the layer's weights, so `analyze`, `draw`, `report`, `run` and `export` work
on it as on a Caffe file.

The walk first sizes every value (ONNX's own shape inference, the inputs' sizes fixed), then
folds what only constants feed (onnx_fold: the exporters' shape arithmetic), then turns each
remaining node into netc layers. What it cannot express exactly is an error naming the node
(file:node-index), its op and why; the file's contents are only ever data.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import onnx_fold
from .errors import Loc, NetcError, did_you_mean
from .layers.base import Enum, Field, lookup
from .onnx_ops import Operators
from .spec import LayerSpec, ModelSpec

MAX_ONNX_BYTES = 2 * 1024 ** 3     # protobuf's own limit for one message


class _Importer(Operators):
    def __init__(self, model, path: Path):
        self.model, self.path, self.g = model, str(path), model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.const: dict[str, np.ndarray] = {}
        self.mask: dict[str, np.ndarray] = {}           # folded ints -> which elements are the batch
        self.layers: list[LayerSpec] = []
        self.names: set[str] = set()
        self.weights: dict[str, np.ndarray] = {}
        self.known: dict[str, tuple] = {}               # value -> shape, by netc's rules as layers are added
        self.k = 0
        self.absorbed: set[int] = set()                 # node indices an earlier translation took over
        for t in self.g.initializer:
            self.const[t.name] = _tensor(t, path)

    def loc(self) -> Loc:
        return Loc(self.path, self.k + 1, 1)

    def fail(self, node, why: str) -> NetcError:
        return NetcError(f'ONNX node {self.k} ({node.op_type} "{node.name or node.output[0]}"): {why}', self.loc())

    def add(self, node, type_: str, bottoms, fields: dict, weights: dict | None = None, tops=None,
            suffix: str = "") -> str:
        name = (node.name or node.output[0]) + suffix
        if name in self.names:
            name = f"{name}_{self.k}"
        self.names.add(name)
        loc = self.loc()
        spec = LayerSpec(name, type_, list(bottoms), list(node.output[:1] if tops is None else tops),
                         [Field(k, v, loc) for k, v in fields.items()], loc, loc)
        self.layers.append(spec)
        for blob, value in (weights or {}).items():
            self.weights[f"{name}.{blob}"] = np.asarray(value, np.float32)
        self.size_outputs(spec)
        return name

    def size_outputs(self, spec: LayerSpec) -> None:
        """The new layer's output shapes by its own rule, which later nodes' translations read
        (ONNX's shape inference leaves sizes open that the folded constants fix)."""
        layer = lookup(spec.type, spec.loc)
        attrs = layer.validate(spec.fields, spec.loc)
        ins = [self.known[b] for b in spec.bottoms]
        if layer.outputs == 0:
            return
        if layer.outputs is None:
            outs = layer.multi_shapes(ins, attrs, spec.loc, len(spec.tops))
        else:
            outs = layer.shapes(ins, attrs, spec.loc)[:len(spec.tops)]
        self.known.update(zip(spec.tops, (tuple(o) for o in outs)))

    def attrs(self, node) -> dict:
        from onnx import TensorProto, helper
        got = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        return {k: _tensor(v, Path(self.path)) if isinstance(v, TensorProto) else v for k, v in got.items()}

    def is_const(self, name: str) -> bool:
        return name in self.const

    def shape(self, node, value: str) -> tuple:
        if value not in self.known:
            raise self.fail(node, f'the size of "{value}" is not static (ONNX shape inference left it open)')
        return self.known[value]

    def constant(self, node, k: int, what: str):
        """Input k as a constant (None when it is omitted)."""
        if len(node.input) <= k or not node.input[k]:
            return None
        if node.input[k] not in self.const:
            raise self.fail(node, f"its {what} must be a constant")
        return self.const[node.input[k]]

    def ints(self, node, attr: str, k: int, moved: int, what: str):
        """An int list given as attribute `attr` before opset `moved` and as input k from it."""
        if self.opset < moved:
            v = self.attrs(node).get(attr)
            return None if v is None else [int(x) for x in v]
        v = self.constant(node, k, what)
        return None if v is None else [int(x) for x in np.asarray(v).reshape(-1)]

    # ---- the walk ---------------------------------------------------------------------------
    def run(self, input_shapes: dict) -> ModelSpec:
        nodes = self.checked_nodes()
        self.add_inputs(input_shapes)
        for self.k, node in nodes:
            if self.k in self.absorbed:
                continue
            if node.op_type == "Constant":
                self.const[node.output[0]] = self.constant_node(node)
            elif not self.try_fold(node):
                handler = getattr(self, f"op_{node.op_type}", None)
                if handler is None:
                    raise self.fail(node, f"netc folds {node.op_type} only when all its inputs are constants")
                handler(node)
        for value in self.g.output:
            if value.name in self.const and not any(value.name in ls.tops for ls in self.layers):
                raise NetcError(f'ONNX output "{value.name}" is a constant: it needs no network', Loc(self.path, 1, 1))
        return ModelSpec(self.g.name or Path(self.path).stem, self.layers, self.path, "", "onnx")

    def checked_nodes(self) -> list:
        """The nodes in a dependency order: every unsupported op at once, a read of a value
        nothing defines, or a cycle, is an error."""
        unknown: dict[tuple, list[int]] = {}
        supported = {n[3:] for n in dir(self) if n.startswith("op_")} | set(onnx_fold.FOLD) | {"Constant"}
        for k, node in enumerate(self.g.node):
            if node.domain not in ("", "ai.onnx") or node.op_type not in supported:
                unknown.setdefault((node.domain, node.op_type), []).append(k)
        if unknown:
            parts = []
            for (domain, op), ks in unknown.items():
                first = self.g.node[ks[0]]
                hint = did_you_mean(op, supported) if domain in ("", "ai.onnx") else f" (domain {domain})"
                parts.append(f'{op}{hint}: {len(ks)} node{"s" * (len(ks) > 1)}, first node {ks[0]} '
                             f'"{first.name or first.output[0]}"')
            raise NetcError(f"netc does not import {len(unknown)} operator{'s' * (len(unknown) > 1)} of this "
                            f"file (opset {self.opset}): " + "; ".join(parts), Loc(self.path, unknown[next(iter(unknown))][0] + 1, 1))
        defined = {v.name for v in self.g.input} | set(self.const)
        producer = {}
        for k, node in enumerate(self.g.node):
            for out in node.output:
                if out:
                    producer[out] = k
        self.readers: dict[str, list[int]] = {}          # value -> indices of the nodes reading it
        for k, node in enumerate(self.g.node):
            for v in node.input:
                self.readers.setdefault(v, []).append(k)
                if v and v not in defined and v not in producer:
                    self.k = k
                    raise self.fail(node, f'it reads "{v}", which no node, graph input or initializer defines')
        # Kahn's order (ONNX files are sorted already; a sorted file comes back as it is)
        waiting = {k: {producer[v] for v in node.input if v in producer and v not in defined}
                   for k, node in enumerate(self.g.node)}
        readers: dict[int, list[int]] = {}
        for k, deps in waiting.items():
            for d in deps:
                readers.setdefault(d, []).append(k)
        ready = sorted(k for k, deps in waiting.items() if not deps)
        order = []
        while ready:
            k = ready.pop(0)
            order.append(k)
            for r in readers.get(k, ()):
                waiting[r].discard(k)
                if not waiting[r]:
                    ready.append(r)
        if len(order) < len(self.g.node):
            stuck = sorted(set(range(len(self.g.node))) - set(order))
            names = ", ".join(f'{k} ({self.g.node[k].op_type})' for k in stuck[:6])
            raise NetcError(f"the ONNX graph has a cycle through nodes {names}" + (" ..." if len(stuck) > 6 else ""),
                            Loc(self.path, stuck[0] + 1, 1))
        return [(k, self.g.node[k]) for k in order]

    def add_inputs(self, input_shapes: dict) -> None:
        loc = Loc(self.path, 1, 1)
        names = [v.name for v in self.g.input if v.name not in self.const]
        for name in input_shapes:
            if name not in names:
                raise NetcError(f'"{name}" is not an input of this ONNX model (inputs: {", ".join(names)})'
                                + did_you_mean(name, names), loc)
        for value in self.g.input:
            if value.name in self.const:
                continue
            tt = value.type.tensor_type
            if tt.elem_type not in (1, 10, 11):
                raise NetcError(f'ONNX input "{value.name}" holds {onnx_fold.DTYPES.get(tt.elem_type, "type " + str(tt.elem_type))}'
                                f" values; netc imports float inputs", loc)
            given, axes = input_shapes.get(value.name), list(tt.shape.dim)
            if given is not None and len(given) != len(axes):
                raise NetcError(f'--input-shape gives {len(given)} sizes for ONNX input "{value.name}", '
                                f"which has {len(axes)} axes", loc)
            dims = list(given) if given is not None else []
            for k, d in enumerate(axes if given is None else ()):
                if d.HasField("dim_value") and d.dim_value > 0:
                    dims.append(d.dim_value)
                elif k == 0:
                    dims.append(1)                      # a symbolic batch: --batch sets it
                else:
                    letters = "NCHW" if len(axes) == 4 else [f"D{j}" for j in range(len(axes))]
                    spelled = "x".join("1" if j == 0 else str(e.dim_value) if e.dim_value > 0 else letters[j]
                                       for j, e in enumerate(axes))
                    raise NetcError(f'ONNX input "{value.name}" has an unknown size on axis {k} '
                                    f'({d.dim_param or "unnamed"}): give it with --input-shape '
                                    f'{value.name}={spelled}', loc)
            self.known[value.name] = tuple(dims)
            fields = [Field("shape", dims, loc)] + [Field(k, v, loc) for k, v in _image_defaults(dims).items()]
            self.layers.append(LayerSpec(value.name, "Input", [], [value.name], fields, loc))

    def constant_node(self, node) -> np.ndarray:
        a = {x.name: x for x in node.attribute}
        if "value" in a:
            return _tensor(a["value"].t, Path(self.path))
        for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                           ("value_int", np.int64), ("value_ints", np.int64)):
            if key in a:
                return np.asarray(self.attrs(node)[key], dtype)
        raise self.fail(node, "netc reads tensor and number Constant nodes, not sparse or string ones")

    def try_fold(self, node) -> bool:
        """Fold a node whose inputs are all constants (Shape: whose input has a static size)."""
        ins = list(node.input)
        if node.op_type == "Shape" and ins[0] not in self.const:
            shape = np.array(self.shape(node, ins[0]), np.int64)
            mask = np.arange(len(shape)) == 0
            a = self.attrs(node)
            lo, hi = a.get("start", 0), a.get("end", len(shape))
            self.const[node.output[0]], self.mask[node.output[0]] = shape[lo:hi], mask[lo:hi]
            return True
        if node.op_type not in onnx_fold.FOLD or not all(v in self.const for v in ins if v):
            return False
        values = [self.const[v] if v else None for v in ins]
        masks = [self.mask.get(v) for v in ins]
        try:
            value, mask = onnx_fold.fold(node.op_type, self.attrs(node), values, masks, self.opset)
        except onnx_fold.Unfoldable as e:
            raise self.fail(node, str(e)) from None
        self.const[node.output[0]] = value
        if mask is not None:
            self.mask[node.output[0]] = mask
        return True

def _image_defaults(dims: list) -> dict:
    """How images feed an image-shaped input. An ONNX file does not say; most CNNs in ONNX come
    from PyTorch, so torchvision's ImageNet normalization (RGB, /255, its mean and std), in the
    layout the input has ([N, H, W, 3]: tf2onnx's NHWC). `run` prints what it applies, and
    --mean/--std/--pixels/--channels change it."""
    if len(dims) != 4 or 3 not in (dims[1], dims[3]):
        return {}
    layout = "NHWC" if dims[3] == 3 and dims[1] != 3 else "NCHW"
    return {"color_order": Enum("RGB"), "pixel_scale": 1 / 255, "mean_value": [0.485, 0.456, 0.406],
            "std_value": [0.229, 0.224, 0.225], "layout": Enum(layout)}


def _tensor(t, model_path: Path) -> np.ndarray:
    """An initializer's values; external data only from a regular file inside the model's
    folder, and only as many bytes as the tensor declares (checked before reading)."""
    import onnx
    from onnx import numpy_helper
    if t.data_location != onnx.TensorProto.EXTERNAL:
        try:
            return numpy_helper.to_array(t)
        except Exception as e:  # noqa: BLE001 - a tensor whose bytes do not fit its dims
            raise NetcError(f'{model_path}: tensor "{t.name}" is malformed: {str(e).splitlines()[0][:160]}') from None
    info = {e.key: e.value for e in t.external_data}
    where = info.get("location", "")
    base = os.path.realpath(model_path.parent)
    target = os.path.realpath(os.path.join(base, where))
    if not where or os.path.isabs(where) or os.path.commonpath([base, target]) != base:
        raise NetcError(f'{model_path}: tensor "{t.name}" keeps its data at "{where}", outside the model\'s '
                        f"folder {base}; netc reads external data only from beside the model")
    dtype = onnx_fold.DTYPES.get(t.data_type)
    if dtype is None:
        raise NetcError(f'{model_path}: tensor "{t.name}" has data type {t.data_type}, which netc does not read')
    count = int(np.prod(t.dims, dtype=np.int64))
    need = count * np.dtype(dtype).itemsize
    offset = int(info.get("offset", 0) or 0)
    length = int(info.get("length", need) or need)
    if length != need:
        raise NetcError(f'{model_path}: tensor "{t.name}" declares {length:,} bytes of external data for '
                        f"{count:,} values of {np.dtype(dtype).name} ({need:,} bytes)")
    from ..runtime.files import regular_file
    regular_file(Path(target), "external data")
    size = os.path.getsize(target)
    if offset + need > size:
        raise NetcError(f'{model_path}: tensor "{t.name}" needs bytes {offset:,} to {offset + need:,} of '
                        f"{where}, which has {size:,}: the external data is truncated")
    with open(target, "rb") as f:
        f.seek(offset)
        data = f.read(need)
    return np.frombuffer(data, dtype).reshape(tuple(t.dims))


def load_onnx(path: Path, input_shapes: dict | None = None):
    """(ModelSpec, weights) of an .onnx file, read with the onnx package (never executed)."""
    try:
        import onnx
    except ImportError:
        raise NetcError('reading ONNX needs the onnx package, which netc installs: pip install "."') from None
    size = path.stat().st_size
    if size > MAX_ONNX_BYTES:
        raise NetcError(f"{path} is {size:,} bytes, past protobuf's 2 GiB; a model that large keeps its "
                        "weights in external data files beside it")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - a DecodeError or an OSError: the file is not ONNX
        raise NetcError(f"cannot read {path} as ONNX: {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}") from None
    if not model.graph.node:
        raise NetcError(f"{path} holds no ONNX graph (no nodes)")
    imp = _Importer(model, path)
    spec = imp.run(input_shapes or {})
    return spec, imp.weights
