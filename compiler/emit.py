"""IR -> text: .net (explicit and flat, for `netc convert`) and Caffe .prototxt.

Both writers list every layer with its name as written, so converting there and back gives
the same IR (layer names, types, normalized attributes, blobs and edges).
"""
from __future__ import annotations

import re
import unicodedata

import networkx as nx

from .layers import REGISTRY
from .layers.base import Enum, Field

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
KEYWORDS = {"network", "input", "block", "repeat", "in", "true", "false"}


def _escape(s: str, control) -> str:
    out = []
    for c in s:
        if c == "\\" or c == '"':
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif unicodedata.category(c) == "Cc":      # ESC, BEL, C1 controls: never raw in a file
            out.append(control(c))
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def quote(s: str) -> str:
    """A .net string literal; control characters as \\xHH (one code point below 256)."""
    return _escape(s, lambda c: f"\\x{ord(c):02x}")


def quote_proto(s: str) -> str:
    """A prototxt string literal; control characters as octal escapes of their UTF-8 bytes."""
    return _escape(s, lambda c: "".join(f"\\{b:03o}" for b in c.encode("utf-8")))


def net_label(s: str) -> str:
    return s if IDENT.match(s) and s not in KEYWORDS else quote(s)


def net_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, Enum):
        return v.name
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if v == v and abs(v) != float("inf") else quote(str(v))
    if isinstance(v, str):
        return quote(v)
    if isinstance(v, (list, tuple)):
        if v and all(isinstance(x, Field) for x in v):
            return "{" + ", ".join(f"{f.key}={net_value(f.value)}" for f in v) + "}"
        return "[" + ", ".join(net_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r}")


def _enumish(layer, key):
    p = layer.schema().get(key)
    return p is not None and p.kind == "enum"


def to_net(g: nx.DiGraph) -> str:
    out = [f"network {net_label(g.graph['name'])}"]
    current = None
    for n in g.nodes:
        d = g.nodes[n]
        layer = REGISTRY[d["type"]]
        params = layer.written_params(d["attrs"])
        if d["type"] == "Input" and len(d["tops"]) == 1 and d["tops"][0] == n and not d["declared"]:
            options = [f"{k}={Enum(v).name if _enumish(layer, k) and isinstance(v, str) else net_value(v)}"
                       for k, v in params if k != "shape"]
            out.append(f"input {net_label(n)}: {net_value(list(d['attrs']['shape'][0]))}"
                       + (f" ({', '.join(options)})" if options else ""))
            current = n
            continue
        args = [f"{k}={Enum(v).name if _enumish(layer, k) and isinstance(v, str) else net_value(v)}"
                for k, v in params]
        if d["declared"]:
            shapes = [list(s) for s in d["declared"]]
            args.append(f"output_shape={net_value(shapes[0] if len(shapes) == 1 else shapes)}")
        line = f"{net_label(n)}: {d['type']}" + (f"({', '.join(args)})" if args else "")
        if d["bottoms"] and d["bottoms"] != [current]:
            line += " <- " + ", ".join(net_label(b) for b in d["bottoms"])
        if d["tops"] and d["tops"] != [n]:
            line += " -> " + ", ".join(net_label(t) for t in d["tops"])
        out.append(line)
        current = d["tops"][0] if d["tops"] else current
    return "\n".join(out) + "\n"


def proto_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, Enum):
        return v.name
    if isinstance(v, (int, float)):
        return repr(v)
    return quote_proto(str(v))


def _proto_field(key, v, layer, indent) -> list[str]:
    pad = "  " * indent
    p = layer.schema().get(key) if layer else None
    if p is not None and p.kind == "shape":
        shapes = v if p.repeated else [v]
        return [f"{pad}{key} {{ " + " ".join(f"dim: {d}" for d in s) + " }" for s in shapes]
    if isinstance(v, (list, tuple)) and v and all(isinstance(x, Field) for x in v):
        lines = [f"{pad}{key} {{"]
        for f in v:
            lines += _proto_field(f.key, f.value, None, indent + 1)
        return lines + [f"{pad}}}"]
    if isinstance(v, (list, tuple)):
        return [line for x in v for line in _proto_field(key, x, None, indent)]
    if p is not None and p.kind == "enum":
        return [f"{pad}{key}: {v}"]
    return [f"{pad}{key}: {proto_value(v)}"]


def to_prototxt(g: nx.DiGraph) -> str:
    out = [f"name: {quote_proto(g.graph['name'])}"]
    for n in g.nodes:
        d = g.nodes[n]
        layer = REGISTRY[d["type"]]
        out.append("layer {")
        out.append(f"  name: {quote_proto(n)}")
        out.append(f"  type: {quote_proto(d['type'])}")
        out += [f"  bottom: {quote_proto(b)}" for b in d["bottoms"]]
        out += [f"  top: {quote_proto(t)}" for t in d["tops"]]
        if d["declared"]:
            out.append("  # netc: output_shape " + ", ".join("x".join(map(str, s)) for s in d["declared"]))
        groups: dict[str, list] = {}
        schema = layer.schema()
        extensions = []
        for k, v in layer.written_params(d["attrs"]):
            if schema[k].doc.startswith("netc:"):   # no such field in caffe.proto: Caffe would refuse the file
                text = v if isinstance(v, str) else net_value(list(v) if isinstance(v, tuple) else v)
                extensions.append(f"{k}={text.replace(' ', '')}")
                continue
            msg = schema[k].message or layer.messages[0]
            groups.setdefault(msg, []).append((k, v))
        if extensions:
            kind = "preprocess" if layer.source else "param"   # read back by netc, a comment to Caffe
            out.append(f"  # netc: {kind} " + " ".join(extensions))
        for msg, items in groups.items():
            out.append(f"  {msg} {{")
            for k, v in items:
                out += _proto_field(k, v, layer, 2)
            out.append("  }")
        out.append("}")
    return "\n".join(out) + "\n"
