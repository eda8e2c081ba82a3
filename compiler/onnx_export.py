"""The IR as a standard ONNX model: every forward layer asks its own `Layer.onnx` for nodes.

Weights become initializers named like netc's keys (`conv1.weight`); BatchNorm's stored
statistics are divided by Caffe's moving-average factor here, so the file holds what the network
computes. Inputs are the network's fed blobs (Data layers' label tops are not inputs), outputs
its materialized blobs nobody reads, as `netc run` returns them. `dynamic_batch` makes the first
dimension of every input and output the symbolic `N` (layers that fix the batch in a shape are
refused). A layer ONNX cannot express exactly raises a NetcError naming it and why.
"""
from __future__ import annotations

import numpy as np

from .errors import NetcError
from .layers import REGISTRY
from .passes import refuse_soft_shapes

DEFAULT_OPSET = 17
OPSETS = range(13, 22)   # Softmax's single-axis meaning and Clip's tensor bounds start at 13 / 11


class OnnxBuilder:
    """What a layer's `onnx` hook uses: `node`, `const`, `weight`, `fresh`; `opset`, `batch`."""

    def __init__(self, weights: dict, opset: int, dynamic_batch: bool):
        from onnx import helper, numpy_helper
        self.helper, self.numpy_helper = helper, numpy_helper
        self.w, self.opset, self.dynamic = weights, opset, dynamic_batch
        self.nodes, self.inits, self.names, self.node_names = [], {}, set(), set()

    def fresh(self, base: str, taken: set | None = None) -> str:
        """An unused value name (or node name, with `taken` = node_names) from `base`."""
        taken = self.names if taken is None else taken
        name, k = base, 1
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        taken.add(name)
        return name

    def node(self, op: str, inputs: list, outputs=None, name: str = "", **attrs) -> list[str]:
        """Add one node; `outputs` names (or a count of fresh names); returns the output names."""
        if outputs is None or isinstance(outputs, int):
            outputs = [self.fresh(f"{name or op}:{j}" if outputs and outputs > 1 else f"{name or op}:out")
                       for j in range(outputs or 1)]
        self.nodes.append(self.helper.make_node(op, inputs, outputs, name=self.fresh(name or op, self.node_names),
                                                **attrs))
        return outputs

    def const(self, base: str, value, dtype=np.float32) -> str:
        name = self.fresh(base)
        self.inits[name] = self.numpy_helper.from_array(np.asarray(value, dtype=dtype), name)
        return name

    def weight(self, layer: str, blob: str, array=None) -> str:
        """The initializer for netc key `layer.blob` (or `array` in its place: a folded form)."""
        key = f"{layer}.{blob}"
        value = self.w[key] if array is None else array
        return self.const(key, np.asarray(value, np.float32))


def export(net, weights: dict, path, *, opset: int = DEFAULT_OPSET, dynamic_batch: bool = False,
           batch: int = 1, blobs=()) -> "onnx.ModelProto":
    """Write `net` (analyzed at `batch`) with `weights` ({key: array}) to `path` as ONNX; the
    intermediate `blobs` named are outputs too."""
    try:
        import onnx
        from onnx import TensorProto, helper
    except ImportError:
        raise NetcError('ONNX export needs the onnx package, which netc installs: pip install "."') from None
    if opset not in OPSETS:
        raise NetcError(f"--opset {opset}: netc writes opsets {OPSETS.start} to {OPSETS.stop - 1}")
    net.analyze(batch=batch)
    g = net.graph
    refuse_soft_shapes(g, "export")
    b = OnnxBuilder(weights, opset, dynamic_batch)
    value: dict[tuple, str] = {}
    inputs, read = [], set()
    for n in g.nodes:
        d = g.nodes[n]
        if not d["forward"]:
            continue
        layer = REGISTRY[d["type"]]
        if layer.source:
            for port, top in enumerate(d["tops"]):
                name = b.fresh(top)
                value[(n, port)] = name
                if layer.feeds(port):
                    inputs.append((name, d["shapes"][port]))
                else:   # a Data layer's label: zeros, as `netc run` feeds it
                    b.node("ConstantOfShape", [b.const(f"{top}_shape", d["shapes"][port], np.int64)], [name],
                           value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]))
            continue
        if layer.sink:
            continue
        ins = [value[tuple(src)] for src in d["inputs"]]
        read.update(tuple(src) for src in d["inputs"])
        try:
            outs = layer.onnx(b, n, d, ins)
        except NotImplementedError:
            raise NetcError(f'layer "{n}" ({d["type"]}) has no ONNX form in netc', d["loc"]) from None
        for port, name in enumerate(outs):
            value[(n, port)] = name
    outputs, last = [], {}
    for n in g.nodes:
        if g.nodes[n]["forward"]:
            last.update({top: (n, p) for p, top in enumerate(g.nodes[n]["tops"])})
    for blob in blobs:
        if blob not in last:
            from .errors import did_you_mean
            raise NetcError(f'no blob named "{blob}"' + did_you_mean(blob, list(last)))
        n, p = last[blob]
        read.discard((n, p))
    for n in g.nodes:
        d = g.nodes[n]
        if d["forward"] and not REGISTRY[d["type"]].source and not REGISTRY[d["type"]].sink:
            for p, shape in enumerate(d["shapes"]):
                if (n, p) not in read and (n, p) in value:   # named as the blob, as `netc run` names them
                    outputs.append((b.node("Identity", [value[(n, p)]], [b.fresh(d["tops"][p])], name=n)[0], shape))

    def info(name, shape):
        dims = ["N" if dynamic_batch and k == 0 else int(s) for k, s in enumerate(shape)]
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)
    graph = helper.make_graph(b.nodes, net.name or "netc", [info(*i) for i in inputs],
                              [info(*o) for o in outputs], list(b.inits.values()))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="netc", doc_string=f"exported by netc from {g.graph.get('path', '')}")
    model.ir_version = min(model.ir_version, 8 if opset <= 17 else 9)
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise NetcError(f"the exported model fails ONNX's checker: {str(e).splitlines()[0][:400]}") from None
    if path is not None:
        try:
            onnx.save(model, str(path))
        except OSError as e:
            raise NetcError(f"cannot write {path}: {e.strerror}") from None
    return model
