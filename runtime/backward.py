"""The backward pass: gradients with respect to the activations, walked in reverse order over
the forward's own values, each layer's rule in its module (`Layer.backward`).

A gradient lives from the step of its last reader until its producer's step (then it is
dropped): the backward plan next to the forward's. The forward values all stay, read from an
executable compiled with keep_every=True (nothing fused, each value in its own buffer).
"""
from __future__ import annotations

import numpy as np

from ..compiler.errors import NetcError
from ..compiler.layers import REGISTRY

RULES = ("backprop", "deconvnet", "guided")


def gradients(ex, feeds: dict, seeds: dict, rule: str = "backprop", wanted=(),
              stats: dict | None = None) -> tuple[dict, dict]:
    """({key: d(sum of seeds . outputs)/d key} for the `wanted` (layer, port) keys, the forward's
    values by key), seeds given as {(layer, port): gradient array}; the forward runs on `feeds`.

    `stats`, when given, receives what the walk held (compiler/backward_plan.py predicts the same
    numbers for `netc analyze --training`): "kept_bytes" (the forward's values: the keep_every
    executable's arena), and, counting
    the gradient arrays alive at each layer's step (those waiting plus those it produced, before
    its own are dropped), "gradient_bytes" {layer: bytes} and their maximum "peak_gradient_bytes"."""
    if rule not in RULES:
        raise NetcError(f'unknown backward rule "{rule}" (use {", ".join(RULES)})')
    g = ex.network.graph
    values = ex.values(feeds)
    grads = {k: np.asarray(v, np.float32) for k, v in seeds.items()}
    wanted = set(wanted)
    got = {}
    live = sum(v.nbytes for v in grads.values())       # a running sum, not the dict re-summed
    at = {}
    for n in reversed(ex.order):
        d = g.nodes[n]
        layer = REGISTRY[d["type"]]
        dys = [grads.pop((n, p), None) for p in range(len(d["tops"]))]
        for p, dy in enumerate(dys):
            if (n, p) in wanted:
                got[(n, p)] = dy if dy is not None else np.zeros_like(values[(n, p)])
        if not (layer.source or all(dy is None for dy in dys) or not d["inputs"]):
            live += _step(ex, n, d, layer, dys, values, grads, rule)
        at[n] = live
        live -= sum(dy.nbytes for dy in dys if dy is not None)
    if stats is not None:
        stats.update(kept_bytes=ex.arena_bytes, gradient_bytes=at,
                     peak_gradient_bytes=max(at.values(), default=0))
    return got, values


def _step(ex, n, d, layer, dys, values, grads, rule) -> int:
    """Layer n's backward rule: its inputs' gradients added into `grads`; the bytes of the
    gradients it stored that were not there before."""
    def param(blob, *default):
        key = f"{n}.{blob}"
        if key in ex.weights:
            return np.asarray(ex.weights[key], np.float32)
        if default:
            return default[0]
        raise KeyError(key)
    xs = [values[src] for src in d["inputs"]]
    ys = [values[(n, p)] for p in range(len(d["tops"]))]
    dxs = layer.backward(dys, xs, ys, d["attrs"], param, rule)
    if dxs is None:
        raise NetcError(f'layer "{n}" ({d["type"]}) has no backward rule: netc cannot take gradients '
                        f"through it yet", d["loc"])
    born = 0
    for src, dx in zip(d["inputs"], dxs):
        if dx is None:
            continue
        dx = np.asarray(dx, np.float32)
        if src in grads:
            grads[src] = grads[src] + dx
        else:
            grads[src] = dx
            born += dx.nbytes
    return born
