"""Weights files: which keys a network expects, loading them strictly, or making seeded ones.

Keys are `LAYER.blob` with Caffe's layouts (conv OIHW with I = Cin/group, deconv
(Cin, Cout/group, kh, kw), InnerProduct [out, in]); BatchNorm adds its stored `mean` and `var`
(and may carry Caffe's `moving_average_factor`, which scales both). A file that does not match
is an error that names the key and the shape expected, never a silent broadcast.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import networkx as nx
import numpy as np

from ..compiler.errors import NetcError
from ..compiler.layers import REGISTRY
from ..compiler.layers.base import fmt_shape


def expected(g: nx.DiGraph) -> dict[str, tuple]:
    """Key -> shape for every forward layer, in graph order (needs `Network.analyze`)."""
    keys = {}
    for n in g.nodes:
        d = g.nodes[n]
        if not d["forward"]:
            continue
        for k, s in d.get("param_shapes", {}).items():
            keys[f"{n}.{k}"] = tuple(s)
        for k in REGISTRY[d["type"]].required_buffers:
            keys[f"{n}.{k}"] = tuple(d["buffer_shapes"][k])
    return keys


def optional(g: nx.DiGraph) -> dict[str, tuple]:
    return {f"{n}.{k}": s for n in g.nodes if g.nodes[n]["forward"]
            for k, s in REGISTRY[g.nodes[n]["type"]].optional_blobs(g.nodes[n]["attrs"]).items()}


def load(g: nx.DiGraph, source) -> dict[str, np.ndarray]:
    """Validated float32 arrays from an .npz path or a {key: array} dict."""
    if isinstance(source, (str, Path)):
        try:
            with np.load(source, allow_pickle=False) as z:
                raw = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:   # missing, pickled, damaged
            raise NetcError(f"cannot read weights {source}: {e}") from None
    elif isinstance(source, dict):
        raw = dict(source)
    else:
        raise NetcError(f"weights must be an .npz path or a dict, got {type(source).__name__}")
    want, maybe = expected(g), optional(g)
    for key in raw:
        if key not in want and key not in maybe:
            from ..compiler.errors import did_you_mean
            raise NetcError(f'weights file has a key "{key}" that no layer of this network uses'
                            + did_you_mean(key, list(want)))
    out = {}
    for key, shape in {**want, **{k: s for k, s in maybe.items() if k in raw}}.items():
        if key not in raw:
            raise NetcError(f'weights file lacks "{key}" (expected shape {fmt_shape(shape)})')
        a = np.asarray(raw[key])
        if a.dtype.kind != "f":
            raise NetcError(f'weights "{key}" has dtype {a.dtype}; expected floating point '
                            f'(float32), shape {fmt_shape(shape)}')
        if tuple(a.shape) != shape:
            raise NetcError(f'weights "{key}" has shape {fmt_shape(a.shape)}; expected {fmt_shape(shape)}')
        if not np.all(np.isfinite(a)):
            raise NetcError(f'weights "{key}" holds NaN or infinite values (shape {fmt_shape(shape)})')
        out[key] = np.ascontiguousarray(a, dtype=np.float32)
    return out


def random(g: nx.DiGraph, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded uniform weights in each layer's `init_range` (He's for convolutions and
    InnerProduct, small biases, statistics with positive variance), so that every layer does
    visible work in tests and benchmarks (zeros would hide bugs). Each array is its own seeded
    stream."""
    from .randfill import uniform
    out = {}
    for index, (key, shape) in enumerate(expected(g).items()):
        layer, blob = key.rsplit(".", 1)
        d = g.nodes[layer]
        lo, hi = REGISTRY[d["type"]].init_range(blob, shape, d["attrs"])
        out[key] = uniform(shape, lo, hi, seed, index)   # by position: renaming keeps the weights
    return out
