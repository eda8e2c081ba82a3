"""What both front ends produce: a flat, ordered list of layers with raw fields and locations.

The .prototxt reader and the .net elaborator both stop here; compiler/build.py turns a
ModelSpec into the graph IR, so the two languages cannot drift apart in meaning.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import Loc
from .layers.base import Field


@dataclass
class LayerSpec:
    name: str
    type: str
    bottoms: list[str]
    tops: list[str]
    fields: list[Field]
    loc: Loc
    type_loc: Loc | None = None
    bottom_locs: list[Loc] = field(default_factory=list)
    declared_shapes: list[tuple] | None = None
    block: str = ""        # native-language block instance path ("" at top level)
    block_type: str = ""   # the block definition's name


@dataclass
class ModelSpec:
    name: str
    layers: list[LayerSpec]
    path: str
    source: str
    language: str          # "prototxt" | "net" | "onnx"
    block_types: dict = field(default_factory=dict)  # block instance path -> block name
    dropped: dict = field(default_factory=dict)  # what of a Caffe file the IR keeps not: kind -> layer names
    warnings: list = field(default_factory=list)  # (Loc, message) found while reading the file
