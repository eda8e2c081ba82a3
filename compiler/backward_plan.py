"""The backward plan: the memory of netc's backward pass (runtime/backward.py), next to the
forward's buffer plan (passes.plan_memory, plan.py), for `netc analyze --training`.

What the runtime holds while it takes gradients, in float32 (the runtime's element type):
- the forward's values, all of them, in the arena of the executable compiled with keep_every
  (plan.keep_every_buffers): every layer's output in its own buffer, in-place layers included,
  views (Flatten, Reshape) sharing their input's; `Executable.values` hands them out uncopied;
- the gradient arrays, walked in reverse forward order: the gradient of (layer, port) is born
  at the first backward step that produces it (its last reader in forward order that a gradient
  reaches), or at the start for a seed, and dropped at its producer's step. The bytes counted at
  a step are those waiting plus those the step produced, before the step drops its own.
Weight gradients are not computed (explain needs the activations' only). A plain function over
the analyzed graph, like the passes; run it after `Network.analyze`.
"""
from __future__ import annotations

import networkx as nx

from .layers import REGISTRY, numel
from .layers.base import Layer
from .passes import forward_nodes
from .plan import keep_every_buffers

FLOAT32 = 4

def blob_keys(g: nx.DiGraph) -> dict[str, tuple]:
    """Blob name -> the (layer, port) that last writes it in forward order (as Executable's)."""
    keys = {}
    for n in forward_nodes(g):
        for p, top in enumerate(g.nodes[n]["tops"]):
            keys[top] = (n, p)
    return keys


def backward_plan(g: nx.DiGraph, seeds) -> dict:
    """The plan of a backward pass from the gradients of `seeds` ((layer, port) keys): bytes of
    the forward values kept ("kept_bytes": the keep_every executable's arena), the gradient
    bytes live at each layer's backward step ("gradient_bytes", {layer: bytes}, every forward
    layer), their peak ("peak_gradient_bytes", at "peak_layer"), "total_bytes" (the two), and
    the layers a gradient reaches whose type has no backward rule ("no_rule")."""
    order = forward_nodes(g)

    def nbytes(key):
        return numel(g.nodes[key[0]]["shapes"][key[1]]) * FLOAT32
    kept = keep_every_buffers(g)[2] * FLOAT32
    alive = set(seeds)
    live = sum(nbytes(k) for k in alive)
    at, no_rule = {}, []
    for n in reversed(order):
        d = g.nodes[n]
        layer = REGISTRY[d["type"]]
        mine = [(n, p) for p in range(len(d["tops"])) if (n, p) in alive]
        if mine and d["inputs"] and not layer.source:
            if type(layer).backward is Layer.backward:
                no_rule.append(n)
            skip = layer.no_gradient_inputs          # shape references, indices
            for i, src in enumerate(d["inputs"]):
                if i not in skip and src not in alive:
                    alive.add(src)
                    live += nbytes(src)
        at[n] = live
        for k in mine:
            alive.discard(k)
            live -= nbytes(k)
    peak_layer = max(at, key=at.get, default=None)
    peak = at[peak_layer] if peak_layer is not None else 0
    return {"dtype": "float32", "kept_bytes": kept,
            "peak_gradient_bytes": peak, "peak_layer": peak_layer,
            "total_bytes": kept + peak, "gradient_bytes": at,
            "no_rule": no_rule[::-1]}


def explain_backward_plan(net) -> dict | None:
    """The plan of the backward pass `netc explain` runs (saliency and the other gradient
    methods): seeded at the score blob (the final Softmax's input, else the last output), with
    "score" naming it; None for a network with nothing to differentiate."""
    from ..runtime.explain import score_blob
    from .errors import NetcError
    try:
        score = score_blob(net)
    except NetcError:
        return None
    keys = blob_keys(net.graph)
    if score not in keys:
        return None
    return {"score": score, **backward_plan(net.graph, [keys[score]])}
