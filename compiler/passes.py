"""The analysis pipeline: plain functions over the IR in topological (file) order.

    PIPELINE = infer_shapes -> count_costs -> plan_memory -> receptive_fields

Each pass takes the graph and the run's `Options` (batch, dtype), reads what earlier passes
wrote on the nodes, adds its own keys and may return a result (`run` collects them by pass
name); run one alone in a test by running the ones before it. Integers stay Python ints, so
absurd sizes stay exact.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
import networkx as nx

from .errors import NetcError, SoftShapeError
from .layers import REGISTRY, Ops, numel
from .layers.base import fmt_shape

MAX_DIM = 2 ** 48     # no real tensor comes near; bounds the digits of every product printed
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}


@dataclass(frozen=True)
class Options:
    batch: int | None = 1      # replaces every source layer's first dimension (None: as written)
    dtype: str = "float32"     # element type of activations and parameters, for byte counts


def forward_nodes(g: nx.DiGraph):
    return [n for n in g.nodes if g.nodes[n]["forward"]]


def in_shapes(g: nx.DiGraph, n: str) -> list[tuple]:
    return [g.nodes[src]["shapes"][port] for src, port in g.nodes[n]["inputs"]]


def infer_shapes(g: nx.DiGraph, opts: Options = Options()) -> None:
    """Output shapes per Caffe's rules. g.graph["input_shapes"] (blob -> shape, from
    `Network.set_input_shapes` / --input-shape) replaces what the file says for those inputs
    (the batch is still `opts.batch`): placeholder inputs (OpenPose's 1x3x1x1, sized at run
    time) get their real sizes."""
    batch = opts.batch
    overrides = dict(g.graph.get("input_shapes") or {})
    for n in g.nodes:
        d = g.nodes[n]
        layer = REGISTRY[d["type"]]
        ins = in_shapes(g, n)
        d["in_shapes"] = ins
        if d["declared"]:
            outs = [tuple(s) for s in d["declared"]]
            if len(outs) != len(d["tops"]):
                raise NetcError(f'layer "{n}" declares {len(outs)} output shape(s) for {len(d["tops"])} top(s)', d["loc"])
        elif layer.source and any(t in overrides for t in d["tops"]):
            outs = layer.given_shapes([overrides.pop(t, None) for t in d["tops"]], d["attrs"], d["loc"])
        elif layer.outputs is None:
            outs = layer.multi_shapes(ins, d["attrs"], d["loc"], len(d["tops"]))
        else:
            try:
                outs = layer.shapes(ins, d["attrs"], d["loc"])[:len(d["tops"]) or 1]
            except SoftShapeError as e:
                if g.graph.get("language") != "prototxt":
                    raise
                outs = e.fallback[:len(d["tops"]) or 1]
                why = (" (Caffe builds it too; an input sized at run time? analyze it at its real size with "
                       "--input-shape NAME=NxCxHxW)" if e.caffe_accepts else
                       " (Caffe would stop here; netc continues as Netscope does)")
                warning = (d["loc"], e.message + why)
                if warning not in g.graph["warnings"]:
                    g.graph["warnings"].append(warning)
        if batch is not None and layer.source and outs:
            outs = [(batch, *s[1:]) if len(s) else s for s in outs]
        for s in outs:
            if any(x <= 0 for x in s):
                raise NetcError(f'layer "{n}" would produce an empty tensor {fmt_shape(s)}', d["loc"])
            if any(x > MAX_DIM for x in s):
                raise NetcError(f'layer "{n}" would produce a tensor with a dimension over 2^48', d["loc"])
        d["shapes"] = [tuple(s) for s in outs]
    if overrides:   # Network.set_input_shapes checked the names: only a phase's absent input is left
        raise NetcError(f'"{next(iter(overrides))}" is not an input of this network')


def refuse_soft_shapes(g: nx.DiGraph, doing: str) -> None:
    """Shapes the analysis shows that Caffe would reject (Netscope's leniency), or that Caffe
    builds but no kernel can compute (a window larger than its input): fine to look at, errors
    for `doing` ("execute", "export") it, whose result would read out of bounds or differ."""
    for n in forward_nodes(g):
        d = g.nodes[n]
        layer = REGISTRY[d["type"]]
        if layer.outputs is not None and not d["declared"] and d["inputs"]:
            try:
                layer.shapes(d["in_shapes"], d["attrs"], d["loc"])
            except SoftShapeError as e:
                raise NetcError(f"{e.message} (netc cannot {doing} it)", e.loc) from None


def count_costs(g: nx.DiGraph, opts: Options = Options()) -> None:
    """Learnable parameters, stored buffers and operation counts per layer."""
    for n in g.nodes:
        d = g.nodes[n]
        layer = REGISTRY[d["type"]]
        ins, outs, a = d["in_shapes"], d["shapes"], d["attrs"]
        d["param_shapes"] = layer.param_shapes(ins, a) if ins or not layer.source else {}
        d["buffer_shapes"] = layer.buffer_shapes(ins, a) if ins else {}
        d["params"] = sum(numel(s) for s in d["param_shapes"].values())
        d["buffers"] = sum(numel(s) for s in d["buffer_shapes"].values())
        d["ops"] = layer.ops(ins, outs, a) if (ins and not d["declared"]) else Ops()


def plan_memory(g: nx.DiGraph, opts: Options = Options()) -> dict:
    """Liveness-based buffer plan for one forward pass.

    A pointwise layer writes over its input when nothing later reads that input (Caffe's
    in-place ReLU, and the same for .net files that never say "in place"); Flatten/Reshape
    outputs are views. Every other output gets a buffer that lives until its last reader ran.
    Returns {"peak": bytes, "buffers": {buffer id: bytes}} and sets per node `buffer_of`
    (one buffer id per output) and `new_bytes` (bytes this layer allocated).
    """
    size = DTYPE_BYTES[opts.dtype]
    order = forward_nodes(g)
    position = {n: i for i, n in enumerate(order)}
    last_use: dict[tuple[str, int], int] = {}   # (layer, port) -> position of its last reader
    for n in order:
        for src in g.nodes[n]["inputs"]:
            last_use[src] = position[n]
    for n in g.nodes:
        g.nodes[n].update(new_bytes=0, buffer_of=[])
    buffer_of: dict[tuple[str, int], int] = {}
    buffer_bytes: list[int] = []
    buffer_end: list[int] = []                   # last position any alias of the buffer is read
    live = peak = 0
    for i, n in enumerate(order):
        d = g.nodes[n]
        layer = REGISTRY[d["type"]]
        for port, shape in enumerate(d["shapes"]):
            b = None
            if d["inputs"] and port == 0:
                src_buffer = buffer_of[d["inputs"][0]]
                if layer.is_view(d["attrs"]):
                    b = src_buffer
                elif layer.elementwise and buffer_end[src_buffer] == i:
                    b = src_buffer  # nobody reads the input after us: overwrite it
            if b is None:
                b = len(buffer_bytes)
                buffer_bytes.append(numel(shape) * size)
                buffer_end.append(i)
                live += buffer_bytes[b]
                d["new_bytes"] += buffer_bytes[b]
            buffer_of[(n, port)] = b
            d["buffer_of"].append(b)
            buffer_end[b] = max(buffer_end[b], last_use.get((n, port), len(order)))
        peak = max(peak, live)
        dying = {buffer_of[src] for src in d["inputs"]} | set(d["buffer_of"])
        live -= sum(buffer_bytes[b] for b in dying if buffer_end[b] == i)
    return {"peak": peak, "buffers": buffer_bytes}


def receptive_fields(g: nx.DiGraph, opts: Options = Options()) -> None:
    """Receptive field (size) and jump (effective stride) per output, per spatial axis, in input
    pixels: merges take the largest of their inputs, then each layer applies its rule
    (`Layer.receptive`; a layer with a declared output shape passes them through). `rf_start`:
    per axis, where the field of output pixel 0 begins (negative inside the padding), so unit
    (y, x) sees rows start + y * jump onward; None past a layer that resamples (Upsample,
    Deconvolution), whose fields are not one box per unit."""
    from .layers.base import Layer
    for n in g.nodes:
        d = g.nodes[n]
        srcs = [g.nodes[s] for s, _ in d["inputs"]]
        if not srcs:
            d["rf"] = ((1, Fraction(1)), (1, Fraction(1)))
            d["rf_start"] = (Fraction(0), Fraction(0))
            continue
        rf = [(max(s["rf"][ax][0] for s in srcs), max(s["rf"][ax][1] for s in srcs)) for ax in (0, 1)]
        starts = [s["rf_start"] for s in srcs]
        start = None if None in starts else tuple(min(s[ax] for s in starts) for ax in (0, 1))
        if not d["declared"]:
            layer = REGISTRY[d["type"]]
            win = layer.window(d["in_shapes"], d["attrs"])
            if type(layer).receptive is not Layer.receptive:
                start = None
            elif win and start is not None:
                start = tuple(s - pad * j for s, (_, j), (_, _, pad) in zip(start, rf, win))
            rf = layer.receptive(rf, d["in_shapes"], d["attrs"])
        d["rf"] = tuple((r, Fraction(j)) for r, j in rf)
        d["rf_start"] = start


PIPELINE = (infer_shapes, count_costs, plan_memory, receptive_fields)


def run(g: nx.DiGraph, opts: Options, pipeline=PIPELINE) -> dict:
    """Every pass in order; pass name -> what it returned."""
    return {p.__name__: p(g, opts) for p in pipeline}
