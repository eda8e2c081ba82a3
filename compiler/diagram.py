"""The IR -> a Graphviz diagram (`netc draw`, Network.draw, the HTML report).

The DOT text is written here rather than through graphviz.Digraph: that package passes a label
that looks like `<...>` through as HTML and treats `\\"` as already escaped, so a hostile layer
name could change the drawing. Node ids are generated (L0, B3), never user names; every user
string reaches DOT only through `_q` (quoted strings) or `_h` (HTML-like labels). The graphviz
package is only used to run `dot`, so `.dot` output needs neither it nor Graphviz.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx

from .errors import NetcError, did_you_mean
from .layers import REGISTRY
from .report import human, shape_text

FORMATS = ("svg", "png", "pdf", "dot")
DETAILS = ("none", "shapes", "full")
RANKDIRS = ("TB", "LR", "BT", "RL")
INSTALL_HINT = ("install Graphviz: apt-get install graphviz (Debian/Ubuntu) or brew install graphviz "
                "(macOS); -o FILE.dot works without it")

# family -> (fill colour, node shape, extra style); the report's plots reuse the colours.
FAMILY_STYLE = {
    "data": ("#d9d9d9", "cylinder", ""),
    "conv": ("#8ec3e6", "box", "rounded"),
    "pool": ("#f5b971", "invtrapezium", ""),
    "fc": ("#b39ddb", "box", ""),
    "norm": ("#c5e1a5", "box", "rounded"),
    "activation": ("#fff59d", "ellipse", ""),
    "merge": ("#f48fb1", "hexagon", ""),
    "shape": ("#b0bec5", "parallelogram", ""),
    "loss": ("#ef9a9a", "octagon", ""),
    "detection": ("#80cbc4", "tab", ""),
    "other": ("#eeeeee", "component", ""),
}
BLOCK_STYLE = ("#ffe0b2", "box3d", "")
FONT = "Helvetica,Arial,sans-serif"


def family_of(layer_type: str) -> str:
    fam = REGISTRY[layer_type].family
    return fam if fam in FAMILY_STYLE else "other"


# ---- escaping ---------------------------------------------------------------------------------
def visible(s: str) -> str:
    """Control and format characters shown as escapes, so a name with a newline or NUL stays
    one readable line and never reaches the XML/SVG output (where it would be invalid)."""
    out = []
    for ch in str(s):
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            out.append(ascii(ch)[1:-1])
        else:
            out.append(ch)
    return "".join(out)


LONGEST_SHOWN = 400  # characters of one name in a label; dot quits on strings near 64k


def shortened(s: str) -> str:
    """A name as a drawing shows it: the ends of a very long one, and how long it is."""
    s = str(s)
    if len(s) <= LONGEST_SHOWN:
        return s
    half = LONGEST_SHOWN // 2 - 20
    return f"{s[:half]}\u2026{s[-half:]} ({len(s):,} characters)"


def _q(*lines: str) -> str:
    """A DOT double-quoted string holding exactly these lines (escString: backslashes doubled
    too, so a name cannot smuggle in \\N or \\l; lines joined by DOT's own \\n)."""
    parts = [visible(shortened(s)).replace("\\", "\\\\").replace('"', '\\"') for s in lines]
    return '"' + "\\n".join(parts) + '"'


def _h(s: str) -> str:
    """Text for a Graphviz HTML-like label."""
    return (visible(shortened(s)).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#39;"))


# ---- the view: which layers share a drawn node ----------------------------------------------
@dataclass
class VNode:
    id: str
    layers: list[str]          # host first, then the layers folded into it (file order)
    group: str | None = None   # collapsed block instance path
    block_type: str = ""
    cluster: str = ""          # enclosing (not collapsed) block path, for nested clusters


@dataclass
class View:
    nodes: dict[str, VNode] = field(default_factory=dict)
    of: dict[str, str] = field(default_factory=dict)         # layer -> VNode id
    edges: list[tuple] = field(default_factory=list)         # (src vid, dst vid, src layer, port, blob)
    folded: set[str] = field(default_factory=set)            # layers drawn inside their producer
    block_types: dict[str, str] = field(default_factory=dict)  # instance path -> block type


def parse_collapse(collapse) -> set[str]:
    if collapse is None:
        return set()
    items = collapse.split(",") if isinstance(collapse, str) else list(collapse)
    return {str(x).strip() for x in items if str(x).strip()}


def _prefixes(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]


def build_view(g: nx.DiGraph, collapse=None) -> View:
    """Folding follows Netscope: a pointwise activation/norm layer whose input only it reads
    (Caffe's in-place ReLU/BatchNorm/Scale/Dropout) is drawn inside its producer, chains
    included. Collapsing maps every layer of a block instance to one node; a block type names
    every instance of it, an instance path just that one, `all` every outermost instance."""
    view = View()
    view.block_types.update(g.graph.get("block_types") or {})  # outer instances, if the IR records them
    for n in g.nodes:
        b = g.nodes[n].get("block") or ""
        if b:
            view.block_types.setdefault(b, g.nodes[n].get("block_type") or "")
    names = parse_collapse(collapse)
    every = "all" in names
    if names:
        paths = {p for b in view.block_types for p in _prefixes(b)}
        if not paths:
            raise NetcError("--collapse folds the blocks of native .net files; this model has no blocks")
        types = {t for t in view.block_types.values() if t}
        for name in sorted(names - {"all"}):
            if name not in types and name not in paths:
                raise NetcError(f'no block type or instance named "{name}" in this model (block types: '
                                f'{", ".join(sorted(types)) or "none"})' + did_you_mean(name, sorted(types | paths)))

    def group_of(n: str) -> str | None:
        for p in _prefixes(g.nodes[n].get("block") or ""):
            if p and (every or p in names or view.block_types.get(p) in names):
                return p
        return None

    readers: dict[tuple, list] = {}
    for n in g.nodes:
        for dst_port, src in enumerate(g.nodes[n]["inputs"]):
            readers.setdefault(tuple(src), []).append((n, dst_port))

    group_vid: dict[str, str] = {}
    for i, n in enumerate(g.nodes):
        d = g.nodes[n]
        grp = group_of(n)
        if grp is not None:
            vid = group_vid.get(grp)
            if vid is None:
                vid = group_vid[grp] = f"B{len(view.nodes)}"
                parent = grp.rsplit("/", 1)[0] if "/" in grp else ""
                view.nodes[vid] = VNode(vid, [], grp, view.block_types.get(grp, ""), parent)
            view.nodes[vid].layers.append(n)
            view.of[n] = vid
            continue
        layer = REGISTRY[d["type"]]
        if (layer.elementwise and layer.family in ("activation", "norm") and d["forward"]
                and len(d["inputs"]) == 1 and len(d["tops"]) == 1):
            src, port = d["inputs"][0]
            s = g.nodes[src]
            src_group = group_of(src)
            # drawn where its producer is drawn: the same block, or beside a collapsed block's node
            place = (s.get("block") or "") if src_group is None else (
                src_group.rsplit("/", 1)[0] if "/" in src_group else "")
            if (readers.get((src, port)) == [(n, 0)] and s["forward"]
                    and family_of(s["type"]) != "data" and place == (d.get("block") or "")):
                view.of[n] = view.of[src]
                view.nodes[view.of[src]].layers.append(n)
                view.folded.add(n)
                continue
        vid = f"L{i}"
        view.nodes[vid] = VNode(vid, [n], cluster=d.get("block") or "")
        view.of[n] = vid

    seen = set()
    for n in g.nodes:
        dst = view.of[n]
        for dst_port, (src, port) in enumerate(g.nodes[n]["inputs"]):
            sv = view.of[src]
            if sv == dst:
                continue
            # one edge per tensor entering a drawn node: a block read twice draws it once
            key = (src, port, dst) if view.nodes[dst].group else (src, port, n, dst_port)
            if key in seen:
                continue
            seen.add(key)
            view.edges.append((sv, dst, src, port, g.nodes[n]["bottoms"][dst_port]))
    return view


# ---- DOT text ---------------------------------------------------------------------------------
def _brief(d: dict) -> str:
    """The layer's own one-glance label (`Layer.brief`); "" for attrs it cannot read."""
    try:
        return REGISTRY[d["type"]].brief(d["attrs"])
    except (KeyError, TypeError, IndexError):
        return ""


def _has_costs(g, n) -> bool:
    return "params" in g.nodes[n] and "ops" in g.nodes[n]


def _costs(g, layers) -> str:
    params = sum(g.nodes[n].get("params", 0) for n in layers)
    macc = sum(g.nodes[n]["ops"].macc for n in layers if g.nodes[n]["forward"] and "ops" in g.nodes[n])
    return " \u00b7 ".join(t for t in (f"{human(params)} params" if params else "",
                                       f"{human(macc)} MACs" if macc else "") if t)


def _where(loc) -> str:
    """file:line without the directory, so drawings do not carry the author's paths."""
    return f"{Path(loc.file).name}:{loc.line}" if loc is not None else "?"


def _own_layers(g, v: VNode) -> list[str]:
    """A collapsed block's own layers, without the activations folded in after it."""
    return [n for n in v.layers if f"{g.nodes[n].get('block') or ''}/".startswith(f"{v.group}/")]


def _label(g, v: VNode, detail: str, sink_shapes: str) -> str:
    small, tiny = '<FONT POINT-SIZE="9">', '<FONT POINT-SIZE="8" COLOR="#444444">'
    if v.group is not None:
        own = _own_layers(g, v)
        count = f"{len(own)} layer{'s' if len(own) != 1 else ''}"
        lines = [f"<B>{_h(v.group)}</B>",
                 f"{small}<I>{_h(v.block_type or 'block')}</I> \u00b7 {count}</FONT>"]
        for n in v.layers:
            if n not in own:  # an activation after the call, drawn inside the block's node
                lines.append(f"{tiny}+ {_h(n)} \u00b7 {_h(g.nodes[n]['type'])}</FONT>")
        if all(_has_costs(g, n) for n in v.layers) and _costs(g, v.layers):
            lines.append(f"{small}{_costs(g, v.layers)}</FONT>")
    else:
        host = g.nodes[v.layers[0]]
        brief = _brief(host)
        lines = [f"<B>{_h(v.layers[0])}</B>",
                 f"{small}{_h(host['type'])}{(' ' + _h(brief)) if brief else ''}</FONT>"]
        for n in v.layers[1:]:
            lines.append(f"{tiny}+ {_h(n)} \u00b7 {_h(g.nodes[n]['type'])}</FONT>")
        if detail == "full" and all(_has_costs(g, n) for n in v.layers) and _costs(g, v.layers):
            lines.append(f"{small}{_costs(g, v.layers)}</FONT>")
    if sink_shapes:
        lines.append(f"{small}\u2192 {_h(sink_shapes)}</FONT>")
    return "<" + "<BR/>".join(lines) + ">"


def _style(fill, shape, extra, forward=True):
    style = ",".join(x for x in ("filled", extra, "" if forward else "dashed") if x)
    return f'shape={shape} style="{style}" fillcolor="{fill}"'


def to_dot(g: nx.DiGraph, *, rankdir: str = "TB", collapse=None, detail: str = "shapes",
           title: str | None = None) -> str:
    """DOT text for the graph; shapes and costs appear when the analysis passes have run."""
    if rankdir not in RANKDIRS:
        raise NetcError(f'rankdir must be one of {", ".join(RANKDIRS)}, got "{rankdir}"')
    if detail not in DETAILS:
        raise NetcError(f'detail must be one of {", ".join(DETAILS)}, got "{detail}"')
    view = build_view(g, collapse)
    shaped = all("shapes" in g.nodes[n] for n in g.nodes)
    out = ["digraph netc {",
           f'  graph [rankdir={rankdir} fontname="{FONT}" fontsize=12 ranksep=0.3 nodesep=0.25 '
           f'labelloc=t label=<<B>{_h(title if title is not None else g.graph.get("name", ""))}</B>>];',
           f'  node [fontname="{FONT}" fontsize=10 margin="0.1,0.03" height=0.3 penwidth=0.8];',
           f'  edge [fontname="{FONT}" fontsize=8 color="#555555" fontcolor="#333333" arrowsize=0.6];']

    node_lines: dict[str, list[str]] = {}   # cluster path -> node statements
    families = set()
    feeds = {sv for sv, *_ in view.edges}
    for v in view.nodes.values():
        sink = ""
        if shaped and v.group is None and detail != "none" and v.id not in feeds:
            sink = shape_text(g.nodes[v.layers[-1]]["shapes"])
        if v.group is not None:
            style = _style(*BLOCK_STYLE) + ' margin="0.15,0.08"'
            tip = [f"{v.group} ({v.block_type or 'block'}): {len(_own_layers(g, v))} layer(s)"]
        else:
            d = g.nodes[v.layers[0]]
            fam = family_of(d["type"])
            families.add(fam)
            style = _style(*FAMILY_STYLE[fam], forward=d["forward"])
            tip = [f"{n} ({g.nodes[n]['type']}) at {_where(g.nodes[n]['loc'])}" for n in v.layers]
        node_lines.setdefault(v.cluster, []).append(
            f"{v.id} [label={_label(g, v, detail, sink)} {style} tooltip={_q(*tip)}];")

    _emit_clusters(out, node_lines, view.block_types)

    for sv, dv, src, port, blob in view.edges:
        attrs = [f"tooltip={_q(blob)}"]
        if shaped and detail != "none":
            text = shape_text([g.nodes[src]["shapes"][port]])
            attrs = [f"tooltip={_q(f'{blob}: {text}')}", f"label={_q(' ' + text)}"]
        if not g.nodes[src]["forward"]:
            attrs.append("style=dashed")
        out.append(f"  {sv} -> {dv} [{' '.join(attrs)}];")

    legend = [f"legend_{fam} [label=\"{fam}\" {_style(*FAMILY_STYLE[fam])} fontsize=9 height=0.25];"
              for fam in sorted(families, key=list(FAMILY_STYLE).index)]
    if any(v.group for v in view.nodes.values()):
        legend.append(f"legend_block [label=\"block\" {_style(*BLOCK_STYLE)} fontsize=9 height=0.25];")
    if view.folded:
        legend.append('legend_folded [label=<<FONT POINT-SIZE="8">+ name: layer folded<BR/>into its producer'
                      '</FONT>> shape=plaintext];')
    if rankdir in ("TB", "BT"):  # dot lays an edgeless row out right to left
        legend.reverse()
    out.append('  subgraph cluster_legend { label=<<B>legend</B>> style="rounded,dashed" color="#999999" '
               'fontsize=10; margin=6;')
    out += ["    " + line for line in legend]
    out.append("  }")
    out.append("}")
    return "\n".join(out) + "\n"


def _emit_clusters(out: list, node_lines: dict, block_types: dict) -> None:
    """Nested `subgraph cluster_k` per enclosing block path (native .net files only). A block
    drawn as a single node needs no box: the node's own name already carries the path."""
    tree: dict[str, set] = {}
    for path in node_lines:
        if path:
            prefixes = _prefixes(path)
            for parent, child in zip([""] + prefixes, prefixes):
                tree.setdefault(parent, set()).add(child)
    size: dict[str, int] = {}

    def count(path: str) -> int:
        size[path] = len(node_lines.get(path, ())) + sum(count(c) for c in tree.get(path, ()))
        return size[path]

    count("")
    counter = [0]

    def emit(path: str, depth: int, boxed: bool):
        pad = "  " * depth
        if boxed:
            counter[0] += 1
            btype = block_types.get(path, "")
            name = path.rsplit("/", 1)[-1]
            label = f"{_h(name)}" + (f' <FONT POINT-SIZE="8"><I>{_h(btype)}</I></FONT>' if btype else "")
            out.append(f'{pad}subgraph cluster_{counter[0]} {{ label=<{label}> style="rounded,dashed" '
                       f'color="#bbbbbb" fontsize=9; labeljust=l;')
        inner = pad + "  " if boxed else pad
        for line in node_lines.get(path, []):
            out.append(inner + line)
        for child in sorted(tree.get(path, ())):
            emit(child, depth + (1 if boxed else 0), size[child] > 1)
        if boxed:
            out.append(f"{pad}}}")

    emit("", 1, False)


# ---- running dot ------------------------------------------------------------------------------
def render(dot_text: str, fmt: str) -> bytes:
    if fmt not in FORMATS:
        raise NetcError(f'cannot draw to "{fmt}": use one of {", ".join(FORMATS)}')
    if fmt == "dot":
        return dot_text.encode("utf-8")
    try:
        import graphviz
    except ImportError:
        raise NetcError("drawing needs the graphviz Python package, which netc installs: from the netc checkout, pip install .") from None
    try:
        return graphviz.Source(dot_text).pipe(format=fmt, engine="dot", quiet=True)
    except graphviz.ExecutableNotFound:
        raise NetcError("Graphviz's `dot` program was not found", hint=INSTALL_HINT) from None
    except graphviz.CalledProcessError as e:
        err = (e.stderr or b"").decode("utf-8", "replace").strip()[-600:]
        raise NetcError(f"dot failed: {err or e}") from None
    except OSError as e:  # dot quit before reading all of its input (BrokenPipeError)
        raise NetcError(f"dot quit while reading the diagram ({e.strerror or e})") from None


def _prepare(net, detail: str, collapse, batch: int) -> NetcError | None:
    """Run the analysis the labels need. A model whose shapes cannot be inferred (a Python
    layer, say) is still drawn, without shapes and costs, as Netscope does; the error is
    returned for the caller to show as a warning."""
    if detail == "none" and not collapse:
        return None
    try:
        net.analyze(batch=batch)
    except NetcError as e:
        return e
    return None


def _format_of(path: Path, format: str | None) -> str:
    fmt = (format or path.suffix.lstrip(".")).lower()
    fmt = "dot" if fmt == "gv" else fmt
    if fmt not in FORMATS:
        raise NetcError(f'cannot tell the format of "{path}": name it .svg, .png, .pdf or .dot')
    return fmt


def draw(net, path=None, *, rankdir="TB", collapse=None, detail="shapes", format=None, batch=1,
         on_warning=None):
    """Network.draw: with a path, write the file (format from its suffix) and return the path;
    without one, a graphviz.Source that Jupyter displays."""
    fmt = _format_of(Path(path), format) if path is not None else (format or "svg")
    problem = _prepare(net, detail, collapse, batch)
    if problem is not None:
        if on_warning is None:
            import warnings
            warnings.warn(f"drawing without shapes: {problem.message}", stacklevel=3)
        else:
            on_warning(problem)
    text = to_dot(net.graph, rankdir=rankdir, collapse=collapse, detail=detail, title=net.name)
    if path is None:
        try:
            import graphviz
        except ImportError:
            raise NetcError("drawing needs the graphviz Python package, which netc installs: from the netc checkout, pip install .") from None
        return graphviz.Source(text, format=fmt)
    data = render(text, fmt)
    try:
        Path(path).write_bytes(data)
    except OSError as e:
        raise NetcError(f"cannot write {path}: {e.strerror}") from None
    return Path(path)


def svg_text(net, *, rankdir="TB", collapse=None, detail="shapes", batch=1) -> str:
    _prepare(net, detail, collapse, batch)
    text = to_dot(net.graph, rankdir=rankdir, collapse=collapse, detail=detail, title=net.name)
    return render(text, "svg").decode("utf-8")
