"""Arena offsets for the buffer plan of `passes.plan_memory`.

The plan says which outputs share a buffer and how long each buffer lives; here each buffer
gets an offset in one float32 arena. Offsets are placed greedily, largest buffer first, in the
lowest gap not used by a buffer whose lifetime overlaps (the TFLite "greedy by size" scheme):
the arena is never below the plan's peak and usually equal to it.
"""
from __future__ import annotations

import networkx as nx

from .passes import forward_nodes


def lifetimes(g: nx.DiGraph) -> tuple[list[int], list[int], list[int]]:
    """(size in floats, first position, last position) per buffer id, positions in forward order."""
    order = forward_nodes(g)
    pos = {n: i for i, n in enumerate(order)}
    last_read: dict[tuple, int] = {}
    for n in order:
        for src in g.nodes[n]["inputs"]:
            last_read[src] = pos[n]
    size: dict[int, int] = {}
    birth: dict[int, int] = {}
    end: dict[int, int] = {}
    for n in order:
        d = g.nodes[n]
        for port, b in enumerate(d["buffer_of"]):
            if b not in birth:
                birth[b] = end[b] = pos[n]
                size[b] = _numel(d["shapes"][port])
            end[b] = max(end[b], last_read.get((n, port), len(order)))
    ids = range(len(size))
    return [size[b] for b in ids], [birth[b] for b in ids], [end[b] for b in ids]


def assign_offsets(g: nx.DiGraph) -> tuple[list[int], int]:
    """Offsets (in floats) per buffer id and the arena length in floats."""
    return place(*lifetimes(g))


def keep_every_buffers(g: nx.DiGraph) -> tuple[dict, list[int], int]:
    """(buffer id per (layer, port), offsets, arena length in floats) for an executable that keeps
    every value (the backward pass reads them all): each output its own buffer for the whole
    run, in place layers included; views (Flatten, Reshape) still alias their input."""
    from .layers import REGISTRY
    order = forward_nodes(g)
    buffer_of: dict = {}
    offsets: list[int] = []
    length = 0
    for n in order:
        d = g.nodes[n]
        layer = REGISTRY[d["type"]]
        for port, shape in enumerate(d["shapes"]):
            if port == 0 and d["inputs"] and layer.is_view(d["attrs"]):
                buffer_of[(n, port)] = buffer_of[d["inputs"][0]]
                continue
            buffer_of[(n, port)] = len(offsets)
            offsets.append(length)
            length += _numel(shape)
    return buffer_of, offsets, length


def place(size: list[int], birth: list[int], end: list[int]) -> tuple[list[int], int]:
    """Greedy-by-size placement of buffers with these lifetimes (the CUDA target calls it with
    some births moved earlier, for producers that write straight into a concat buffer)."""
    offsets = [0] * len(size)
    placed: list[int] = []
    for b in sorted(range(len(size)), key=lambda b: (-size[b], birth[b])):
        busy = sorted((offsets[o], offsets[o] + size[o]) for o in placed
                      if birth[o] <= end[b] and birth[b] <= end[o])
        best, best_gap, cursor = None, None, 0
        for lo, hi in busy:
            gap = lo - cursor
            if gap >= size[b] and (best_gap is None or gap < best_gap):
                best, best_gap = cursor, gap
            cursor = max(cursor, hi)
        offsets[b] = cursor if best is None else best
        placed.append(b)
    arena = max((offsets[b] + size[b] for b in range(len(size))), default=0)
    return offsets, arena


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
