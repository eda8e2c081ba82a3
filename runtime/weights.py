"""Weights files: which keys a network expects, loading them strictly, or making seeded ones.

Keys are `LAYER.blob` with Caffe's layouts (conv OIHW with I = Cin/group, deconv
(Cin, Cout/group, kh, kw), InnerProduct [out, in]); BatchNorm adds its stored `mean` and `var`
(and may carry Caffe's `moving_average_factor`, which scales both). A file that does not match
is an error that names the key and the shape expected, never a silent broadcast.
"""
from __future__ import annotations

import math
import zipfile
from pathlib import Path

import networkx as nx
import numpy as np

from ..compiler.errors import NetcError
from ..compiler.layers import REGISTRY
from ..compiler.layers.base import fmt_shape
from .files import regular_file


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
            if k in d["buffer_shapes"]:
                keys[f"{n}.{k}"] = tuple(d["buffer_shapes"][k])
    return keys


def optional(g: nx.DiGraph) -> dict[str, tuple]:
    return {f"{n}.{k}": s for n in g.nodes if g.nodes[n]["forward"]
            for k, s in REGISTRY[g.nodes[n]["type"]].optional_blobs(g.nodes[n]["attrs"]).items()}


def load(g: nx.DiGraph, source) -> dict[str, np.ndarray]:
    """Validated float32 arrays from an .npz or .caffemodel path or a {key: array} dict
    (a .caffemodel's notes on layers it has and the model lacks go to g.graph["weight_notes"])."""
    g.graph["weight_notes"] = []
    if isinstance(source, (str, Path)) and _is_caffemodel(Path(source)):
        from .caffemodel import weights_for
        raw, g.graph["weight_notes"] = weights_for(g, Path(source), expected(g), optional(g))
    elif isinstance(source, (str, Path)):
        raw = read_npz(g, Path(source))
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
        with np.errstate(over="ignore"):          # beyond float32 becomes inf, refused below
            a32 = np.ascontiguousarray(a, dtype=np.float32)
        if not np.all(np.isfinite(a32)):
            raise NetcError(f'weights "{key}" holds NaN or infinite values, or values beyond float32 '
                            f'(|x| > 3.4e38) (shape {fmt_shape(shape)})')
        out[key] = a32
    return out


def _is_caffemodel(path: Path) -> bool:
    """By name, or by content: neither a zip (.npz) nor an .npy."""
    if path.suffix.lower() == ".caffemodel":
        return True
    regular_file(path, "weights")
    with open(path, "rb") as f:
        head = f.read(6)
    return bool(head) and not head.startswith((b"PK", b"\x93NUMPY"))


def read_npz(g: nx.DiGraph, path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz weights file, checked before anything is decompressed: keys the
    network uses, plain (unencrypted, stored or deflated) members, and declared sizes that fit
    the shapes expected (a small file can declare terabytes)."""
    regular_file(path, "weights")
    with open(path, "rb") as f:
        head = f.read(6)
    if head == b"\x93NUMPY":
        raise NetcError(f"weights {path} is an .npy file (one array); netc reads an .npz of named "
                        f"arrays (np.savez(path, **{{'conv1.weight': ...}}); netc weights MODEL lists the keys)")
    want = {**expected(g), **optional(g)}
    try:
        with zipfile.ZipFile(path) as z:
            members = {}
            for info in z.infolist():
                key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if key not in want:
                    from ..compiler.errors import did_you_mean
                    raise NetcError(f'weights file has a key "{key}" that no layer of this network uses'
                                    + did_you_mean(key, list(want)))
                if info.flag_bits & 0x1:
                    raise NetcError(f'weights "{key}" in {path} is encrypted')
                if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                    raise NetcError(f'weights "{key}" in {path} uses zip compression method '
                                    f'{info.compress_type}; netc reads stored or deflated members (np.savez, np.savez_compressed)')
                limit = 8 * math.prod(want[key]) + 4096        # float64 and the .npy header
                if info.file_size > limit:
                    raise NetcError(f'weights "{key}" declares {info.file_size:,} bytes; shape '
                                    f'{fmt_shape(want[key])} needs at most {limit:,}')
                members[key] = info
            raw = {}
            for key, info in members.items():
                with z.open(info) as f:
                    raw[key] = np.lib.format.read_array(f, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, NotImplementedError, RuntimeError) as e:
        raise NetcError(f"cannot read weights {path}: {e}") from None
    return raw


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
