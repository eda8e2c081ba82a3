"""The PyTorch reference: the IR walked in float64 with the raw (unfolded) weights, each layer
computed by its own `reference` (torch ops, in its layer module), so folding, fusion, the arena
and every kernel are checked at once.

A plain helper module, not a test module: test_runtime, test_cuda (and its simulator
subprocess) and test_autotune's subprocess import from here.
"""
from __future__ import annotations

import numpy as np

from netc.compiler.layers import REGISTRY
from netc.compiler.network import loads

import torch  # a pinned test dependency: a missing torch must fail, not skip


def torch_forward(net, w: dict, feeds: dict) -> dict:
    """Blob name -> float64 tensor, Caffe semantics (a later in-place write shadows a blob): the
    sources give the feeds (zeros for the rest), every other layer its own `reference`."""
    g = net.graph
    t = {k: torch.from_numpy(v.astype(np.float64)) for k, v in w.items()}
    out: dict[tuple, torch.Tensor] = {}
    blobs = {}
    for n in g.nodes:
        d = g.nodes[n]
        if not d["forward"]:
            continue
        layer = REGISTRY[d["type"]]
        if layer.source:
            ys = [torch.from_numpy(feeds[top].astype(np.float64)) if top in feeds else torch.zeros(s, dtype=torch.float64)
                  for top, s in zip(d["tops"], d["shapes"])]
        else:
            def p(blob, *default, n=n):
                key = f"{n}.{blob}"
                return t[key] if not default or key in t else default[0]
            ys = layer.reference(torch, [out[src] for src in d["inputs"]], d["attrs"], p, d)
        for port, y in enumerate(ys):
            out[(n, port)] = y
            blobs[d["tops"][port]] = y
            assert tuple(y.shape) == tuple(d["shapes"][port]), (n, y.shape, d["shapes"][port])
    return blobs


def rel(a, b) -> float:
    b = np.asarray(b, np.float64)
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / max(np.linalg.norm(b), 1e-30))


def check(text: str, seed: int = 0, all_blobs: bool = True, batch: int = 2):
    net = loads(text, path="x.prototxt")
    ex = net.compile(seed=seed, batch=batch)
    rng = np.random.default_rng(seed + 1)
    feeds = {b: rng.standard_normal(ex.input_shape(b)).astype(np.float32)
             for b in ex.required_inputs}
    got = ex.run(feeds)
    ref = torch_forward(net, ex.weights, feeds)
    for o in ex.outputs:
        assert got[o].shape == tuple(ref[o].shape)
        assert rel(got[o], ref[o]) < 1e-4, (o, rel(got[o], ref[o]))
    assert ex.arena_bytes >= ex.peak_bytes
    if all_blobs:  # again with every blob kept: no fusion may hide a wrong intermediate
        names = [b for b in ex.blob_key if b not in ex.inputs]
        ex2 = net.compile(seed=seed, batch=batch, blobs=names)
        got2 = ex2.run(feeds, blobs=names)
        for b in names:
            assert rel(got2[b], ref[b]) < 1e-4, (b, rel(got2[b], ref[b]))
    return ex, got
