"""Caffe's binary weights (`.caffemodel`: a NetParameter in protobuf's wire format), read without
the protobuf package and without holding the file twice.

The structure (layers, their names and types, each blob's shape and where its numbers lie) is
walked first with small reads, skipping every packed array by seeking past it; the arrays are
then read one at a time straight into their float32 arrays, so the peak is about the file's size
plus one blob. Field numbers are caffe.proto's: NetParameter layer = 100 (V2) and layers = 2
(V1, whose V0 form nests a `layer = 1`); LayerParameter name = 1, type = 2, blobs = 7;
V1LayerParameter name = 4, type = 5 (an enum), blobs = 6; V0LayerParameter name = 1, type = 2,
blobs = 50; BlobProto shape = 7, data = 5, double_data = 8, num/channels/height/width = 1..4;
BlobShape dim = 1. Everything else (training settings, diffs) is skipped.

`write` is the way back (netc weights convert w.npz -o m.caffemodel): V2 layers with name,
type and float blobs with shapes, which Caffe's CopyTrainedLayersFrom reads.
"""
from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..compiler.errors import NetcError

MAX_DIMS = 32  # a blob shape with more is corrupt, not a tensor

# V1LayerParameter.LayerType (caffe.proto) -> the type name netc knows
V1_TYPES = {0: "None", 35: "AbsVal", 1: "Accuracy", 30: "ArgMax", 2: "BNLL", 3: "Concat", 37: "ContrastiveLoss",
            4: "Convolution", 5: "Data", 39: "Deconvolution", 6: "Dropout", 32: "DummyData", 7: "EuclideanLoss",
            25: "Eltwise", 38: "Exp", 8: "Flatten", 9: "HDF5Data", 10: "HDF5Output", 28: "HingeLoss", 11: "Im2col",
            12: "ImageData", 13: "InfogainLoss", 14: "InnerProduct", 15: "LRN", 29: "MemoryData",
            16: "MultinomialLogisticLoss", 34: "MVN", 17: "Pooling", 26: "Power", 18: "ReLU", 19: "Sigmoid",
            27: "SigmoidCrossEntropyLoss", 36: "Silence", 20: "Softmax", 21: "SoftmaxWithLoss", 22: "Split",
            33: "Slice", 23: "TanH", 24: "WindowData", 31: "Threshold"}


@dataclass
class BlobRef:
    """Where one blob's numbers are: `chunks` of (offset, bytes, dtype) in the file, or `values`
    already read (protobuf may write a repeated float unpacked, one field per number)."""
    shape: tuple
    chunks: list = field(default_factory=list)
    values: list = field(default_factory=list)
    count: int = 0


@dataclass
class CaffeLayer:
    name: str
    type: str
    blobs: list


class _Wire:
    """Protobuf wire format over a seekable binary file, every length checked against the end
    of the message that holds it (a hostile file cannot point outside itself)."""

    def __init__(self, f, path: Path, size: int):
        self.f, self.path, self.size = f, path, size

    def corrupt(self, what: str) -> NetcError:
        return NetcError(f"{self.path} is not a valid .caffemodel ({what} at byte {self.f.tell():,})")

    def varint(self, end: int) -> int:
        value = shift = 0
        for _ in range(10):
            if self.f.tell() >= end:
                raise self.corrupt("a number runs past the end of its message")
            b = self.f.read(1)[0]
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value
            shift += 7
        raise self.corrupt("a number longer than 10 bytes")

    def fields(self, end: int):
        """(field number, wire type, value or (offset, length)) up to `end`; length-delimited
        fields are left unread: the caller reads or skips them."""
        while self.f.tell() < end:
            key = self.varint(end)
            number, wire = key >> 3, key & 7
            if number == 0:
                raise self.corrupt("field number 0")
            if wire == 0:
                yield number, wire, self.varint(end)
            elif wire == 1 or wire == 5:
                width = 8 if wire == 1 else 4
                at = self.f.tell()
                if at + width > end:
                    raise self.corrupt("a fixed-size number runs past the end of its message")
                yield number, wire, self.f.read(width)
            elif wire == 2:
                length = self.varint(end)
                at = self.f.tell()
                if length > end - at:
                    raise self.corrupt(f"a field declares {length:,} bytes but its message has {end - at:,} left")
                yield number, wire, (at, length)
                self.f.seek(at + length)
            else:
                raise self.corrupt(f"wire type {wire} (groups are not used by caffe.proto)")

    def string(self, span) -> str:
        at, length = span
        here = self.f.tell()
        self.f.seek(at)
        raw = self.f.read(length)
        self.f.seek(here)
        return raw.decode("utf-8", "replace")


def read_layers(path: Path) -> tuple[str, list[CaffeLayer]]:
    """(network name, layers with blobs) of a .caffemodel, no numbers read yet."""
    from .files import regular_file
    regular_file(path, "weights")
    size = path.stat().st_size
    with open(path, "rb") as raw:
        f = io.BufferedReader(raw, 1 << 16)
        w = _Wire(f, path, size)
        name, layers = "", []
        for number, wire, value in w.fields(size):
            if number == 1 and wire == 2:
                name = w.string(value)
            elif number == 100 and wire == 2:
                layers.append(_layer(w, value, v1=False))
            elif number == 2 and wire == 2:
                layers.append(_layer(w, value, v1=True))
    return name, [layer for layer in layers if layer.blobs]


def _layer(w: _Wire, span, v1: bool) -> CaffeLayer:
    at, length = span
    here = w.f.tell()
    w.f.seek(at)
    name, type_, blobs = "", "", []
    name_no, type_no, blobs_no = (4, 5, 6) if v1 else (1, 2, 7)
    for number, wire, value in w.fields(at + length):
        if number == name_no and wire == 2:
            name = w.string(value)
        elif number == type_no:
            type_ = V1_TYPES.get(value, f"V1 type {value}") if (v1 and wire == 0) else w.string(value) if wire == 2 else ""
        elif number == blobs_no and wire == 2:
            blobs.append(_blob(w, value))
        elif v1 and number == 1 and wire == 2:          # V0: the whole layer nested here
            inner = _v0(w, value)
            name, type_, blobs = name or inner.name, type_ or inner.type, blobs or inner.blobs
    w.f.seek(here)
    return CaffeLayer(name, type_, blobs)


def _v0(w: _Wire, span) -> CaffeLayer:
    at, length = span
    here = w.f.tell()
    w.f.seek(at)
    name, type_, blobs = "", "", []
    for number, wire, value in w.fields(at + length):
        if number == 1 and wire == 2:
            name = w.string(value)
        elif number == 2 and wire == 2:
            type_ = w.string(value)
        elif number == 50 and wire == 2:
            blobs.append(_blob(w, value))
    w.f.seek(here)
    return CaffeLayer(name, {"conv": "Convolution", "innerproduct": "InnerProduct"}.get(type_, type_), blobs)


def _blob(w: _Wire, span) -> BlobRef:
    at, length = span
    here = w.f.tell()
    w.f.seek(at)
    dims, legacy, ref = None, [0, 0, 0, 0], BlobRef(())
    for number, wire, value in w.fields(at + length):
        if number == 7 and wire == 2:
            dims = _dims(w, value)
        elif 1 <= number <= 4 and wire == 0:
            legacy[number - 1] = value
        elif number in (5, 8):       # data (float) or double_data
            width, dtype = (4, "<f4") if number == 5 else (8, "<f8")
            if wire == 2:
                off, n = value
                if n % width:
                    raise w.corrupt(f"a packed array of {n:,} bytes is not whole {width}-byte numbers")
                ref.chunks.append((off, n, dtype))
                ref.count += n // width
            elif wire == (5 if number == 5 else 1):
                ref.values.append(struct.unpack("<f" if width == 4 else "<d", value)[0])
                ref.count += 1
    w.f.seek(here)
    if dims is None:
        dims = tuple(d for d in legacy) if any(legacy) else (ref.count,)
    ref.shape = tuple(dims)
    expect = int(np.prod(ref.shape, dtype=object)) if ref.shape else 1
    if expect != ref.count:
        raise w.corrupt(f"a blob of shape {list(ref.shape)} holds {ref.count:,} numbers")
    return ref


def _dims(w: _Wire, span) -> tuple:
    at, length = span
    here = w.f.tell()
    w.f.seek(at)
    dims = []
    for number, wire, value in w.fields(at + length):
        if number == 1 and wire == 0:
            dims.append(value)
        elif number == 1 and wire == 2:      # packed
            off, n = value
            w.f.seek(off)
            while w.f.tell() < off + n:
                dims.append(w.varint(off + n))
        if len(dims) > MAX_DIMS:
            raise w.corrupt(f"a blob shape with more than {MAX_DIMS} dimensions")
    w.f.seek(here)
    return tuple(dims)


def load_blob(path: Path, ref: BlobRef) -> np.ndarray:
    """One blob's numbers as float32, read into its array (double_data converted)."""
    out = np.empty(ref.count, np.float32)
    pos = 0
    with open(path, "rb") as f:
        for off, n, dtype in ref.chunks:
            f.seek(off)
            if dtype == "<f4":
                view = out[pos:pos + n // 4]
                if f.readinto(memoryview(view).cast("B")) != n:
                    raise NetcError(f"{path} ends inside a blob (truncated?)")
                pos += n // 4
            else:
                data = np.frombuffer(f.read(n), "<f8")
                if data.size * 8 != n:
                    raise NetcError(f"{path} ends inside a blob (truncated?)")
                with np.errstate(over="ignore"):
                    out[pos:pos + data.size] = data
                pos += data.size
    if ref.values:
        with np.errstate(over="ignore"):
            out[pos:pos + len(ref.values)] = np.array(ref.values, np.float64)
    return out.reshape(ref.shape) if ref.shape else out


# ---- writing ------------------------------------------------------------------------------------
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def write(path: Path, name: str, layers: list[tuple[str, str, list[np.ndarray]]]) -> None:
    """A V2 NetParameter with `layers` (name, type, float32 blobs), written to `path`."""
    with open(path, "wb") as f:
        f.write(_field(1, name.encode("utf-8")))
        for lname, ltype, blobs in layers:
            body = _field(1, lname.encode("utf-8")) + _field(2, ltype.encode("utf-8"))
            for b in blobs:
                b = np.ascontiguousarray(b, "<f4")
                shape = _field(1, b"".join(_varint(int(d)) for d in b.shape))
                body += _field(7, _field(7, shape) + _field(5, b.tobytes()))
            f.write(_field(100, body))


# ---- onto a network -------------------------------------------------------------------------------
def _squeezed(shape) -> tuple:
    return tuple(int(d) for d in shape if d != 1)


def weights_for(g, path: Path, want: dict, maybe: dict) -> tuple[dict, list[str]]:
    """{netc key: float32 array} for every layer of the (analyzed) graph that has parameters
    (`want`: key -> shape required, `maybe`: optional, as weights.expected/optional give them),
    from the file's layer of the same name, blobs in Caffe's order (`Layer.caffe_blobs`); and
    notes naming the file's layers the network does not use (a training snapshot's data, loss
    and auxiliary heads). Strict: a missing layer, a missing or extra blob and a shape that
    differs (beyond Caffe's legacy leading 1s) are errors naming the layer and both shapes."""
    from ..compiler.layers import REGISTRY
    from ..compiler.layers.base import fmt_shape
    from . import memory
    _, layers = read_layers(path)
    by_name = {}
    for layer in layers:
        by_name.setdefault(layer.name, layer)
    plan, used = [], set()
    for n in g.nodes:
        d = g.nodes[n]
        if not d["forward"]:
            continue
        keys = [k for k in REGISTRY[d["type"]].caffe_blobs(d["attrs"]) if f"{n}.{k}" in want or f"{n}.{k}" in maybe]
        if not keys:
            continue
        source = by_name.get(n)
        if source is None:
            raise NetcError(f'{path} has no layer "{n}" ({d["type"]}, {len(keys)} blob(s)); its layers with '
                            f'weights: {", ".join(sorted(by_name)[:12])}{" ..." if len(by_name) > 12 else ""}')
        used.add(n)
        needed = [k for k in keys if f"{n}.{k}" in want]
        if not len(needed) <= len(source.blobs) <= len(keys):
            raise NetcError(f'layer "{n}" ({d["type"]}) has {len(source.blobs)} blob(s) in {path}; the model\'s '
                            f'layer takes {len(needed)}' + (f" to {len(keys)}" if len(keys) > len(needed) else "")
                            + f" ({', '.join(keys)})")
        for k, ref in zip(keys, source.blobs):
            shape = want.get(f"{n}.{k}") or maybe[f"{n}.{k}"]
            if _squeezed(ref.shape) != _squeezed(shape):
                raise NetcError(f'layer "{n}" blob {k}: {path} holds {fmt_shape(ref.shape)}; the model makes '
                                f'{fmt_shape(shape)}')
            plan.append((f"{n}.{k}", ref, shape))
    memory.require({"weights": sum(4 * ref.count for _, ref, _ in plan)}, 1)
    out = {key: load_blob(path, ref).reshape(shape) for key, ref, shape in plan}
    unused = [layer.name for layer in layers if layer.name not in used]
    notes = [f"{path}: {len(unused)} layer(s) with weights that this model does not use: "
             + ", ".join(unused[:8]) + (" ..." if len(unused) > 8 else "")] if unused else []
    return out, notes


def read_mean_file(path: Path) -> np.ndarray:
    """A Caffe mean file (`mean.binaryproto`: one BlobProto, [1, C, H, W] or [C, H, W]) as a
    float32 [C, H, W] image."""
    from .files import regular_file
    regular_file(path, "mean file")
    size = path.stat().st_size
    with open(path, "rb") as raw:
        w = _Wire(io.BufferedReader(raw, 1 << 16), path, size)
        ref = _blob(w, (0, size))
    a = load_blob(path, ref)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3:
        raise NetcError(f"mean file {path} holds a blob of shape {list(a.shape)}; expected [1, C, H, W]")
    return a
