"""ModelSpec -> the graph IR: a networkx DiGraph, one node per layer, edges carrying tensors.

Node attributes (the single source of truth every pass, report and target reads):
  type        canonical layer type ("Convolution")
  attrs       normalized parameters (see compiler/layers/)
  bottoms     blob names as written;  inputs: [(producer layer, output index)]
  tops        blob names as written
  loc         where the layer was written; block / block_type: native block instance
  forward     False for loss/accuracy layers, which inference skips
  declared    output shapes the user declared (Python layers)
Edge (u, v) attribute `tensors`: [(blob name, u's output index, v's input index)].
Blob names follow Caffe: a later layer writing the same top (in place) shadows the earlier one.
"""
from __future__ import annotations

import networkx as nx

from .errors import Loc, NetcError, did_you_mean
from .layers import lookup
from .spec import ModelSpec


def build_graph(spec: ModelSpec) -> nx.DiGraph:
    """Caffe files get Caffe's (and Netscope's) leniency, each use of it recorded in
    g.graph["warnings"]: repeated layer names (Caffe allows them) get a #2 suffix, and a bottom
    naming a layer rather than a blob (a typo Netscope forgives) reads that layer's output."""
    lenient = spec.language == "prototxt"
    g = nx.DiGraph(name=spec.name, path=spec.path, language=spec.language, warnings=list(spec.warnings),
                   block_types=dict(spec.block_types), dropped=dict(spec.dropped))
    producer: dict[str, tuple[str, int]] = {}
    for ls in spec.layers:
        layer = lookup(ls.type, ls.type_loc or ls.loc)
        attrs = layer.validate(ls.fields, ls.loc)
        name = ls.name
        if name in g:
            if not lenient:
                raise NetcError(f'duplicate layer name "{name}" (first defined at {g.nodes[name]["loc"]})', ls.loc)
            k = 2
            while f"{ls.name}#{k}" in g:
                k += 1
            name = f"{ls.name}#{k}"
            g.graph["warnings"].append((ls.loc, f'layer name "{ls.name}" is used again; netc calls this one "{name}"'))
        inputs = []
        for i, blob in enumerate(ls.bottoms):
            loc = ls.bottom_locs[i] if i < len(ls.bottom_locs) else ls.loc
            if blob not in producer and lenient and blob in g and len(g.nodes[blob]["tops"]) == 1:
                top = g.nodes[blob]["tops"][0]
                g.graph["warnings"].append((loc, f'no layer produces blob "{blob}"; reading the output of layer '
                                                 f'"{blob}" (blob "{top}") instead, as Netscope does'))
                inputs.append(producer[top] if producer.get(top, (None,))[0] == blob else (blob, 0))
                continue
            if blob not in producer:
                raise NetcError(f'layer "{name}" reads blob "{blob}", which no earlier layer produces'
                                + did_you_mean(blob, list(producer)), loc)
            inputs.append(producer[blob])
        layer.check_inputs(len(inputs), ls.loc)
        tops = list(ls.tops)
        if lenient and not tops and layer.outputs == 1:
            tops = [name]
            g.graph["warnings"].append((ls.loc, f'layer "{name}" has no top; netc names its output "{name}"'))
        if (layer.outputs is not None and not layer.outputs <= len(tops) <= layer.outputs + layer.optional_outputs
                and not ls.declared_shapes):
            most = layer.outputs + layer.optional_outputs
            raise NetcError(f"{layer.type} has {layer.outputs}{f' to {most}' if most > layer.outputs else ''} "
                            f"top(s), got {len(tops)}", ls.loc)
        layer.check_outputs(len(tops), attrs, ls.loc)
        if len(set(tops)) != len(tops):
            raise NetcError(f'layer "{ls.name}" names the same top twice', ls.loc)
        for top in tops:
            if top in producer and top not in ls.bottoms:
                first = g.nodes[producer[top][0]]["loc"]
                raise NetcError(f'blob "{top}" is already produced by layer "{producer[top][0]}" '
                                f'({first}); only in-place layers (top == bottom) may reuse a name', ls.loc)
        g.add_node(name, type=layer.type, attrs=attrs, bottoms=list(ls.bottoms), tops=tops,
                   inputs=inputs, loc=ls.loc, forward=layer.forward, declared=ls.declared_shapes,
                   block=ls.block, block_type=ls.block_type)
        for dst_port, (src, src_port) in enumerate(inputs):
            if g.has_edge(src, name):
                g.edges[src, name]["tensors"].append((ls.bottoms[dst_port], src_port, dst_port))
            else:
                g.add_edge(src, name, tensors=[(ls.bottoms[dst_port], src_port, dst_port)])
        for port, top in enumerate(tops):
            producer[top] = (name, port)
    if not nx.is_directed_acyclic_graph(g):  # cannot happen from ordered files; guard the invariant
        cycle = nx.find_cycle(g)
        raise NetcError(f"the graph has a cycle through {cycle[0][0]}", g.nodes[cycle[0][0]]["loc"])
    if not len(g):
        raise NetcError("the model defines no layers", Loc(spec.path, 1, 1), source=spec.source)
    return g


def ir_signature(g: nx.DiGraph) -> list[tuple]:
    """What "the same IR" means for round trips: layers in order with their types, normalized
    attributes, tops, producers of each input and declared shapes. Blob names used to *refer*
    to an input may differ (a .net label vs the Caffe blob it stands for); the edges may not."""
    return [(n, d["type"], repr(sorted(d["attrs"].items())), tuple(d["tops"]), tuple(d["inputs"]),
             repr(d["declared"])) for n, d in g.nodes(data=True)]
