"""What both targets share: the walk over the analyzed IR, sanitized names, readers, and fusion.

A target subclasses `Lowering` and adds only how it emits and launches: the CPU target binds
arena views and numba kernels (cpu.py), the CUDA target arena offsets and numba-cuda launches
(cuda.py). Each layer type's `lower_cpu` / `lower_cuda` (compiler/layers/) emits its step
through the public interface documented here and on each target, never through private methods.

Fusion is decided here, once, by asking the layers: a node's single reader joins the node's step
when it reads nothing else, lives in the same buffer and nobody asked to see the value in
between; an affine layer (`Layer.affine`) folds into a producer's weights, a pointwise one
(`Layer.activation`) runs in the producer's epilogue, in the target's dialect, and an
`epilogue_merge` layer (Eltwise) right after its producer may do its work there too.
"""
from __future__ import annotations

import re

import networkx as nx

from ..errors import NetcError
from ..layers import REGISTRY, numel
from ..passes import forward_nodes


class Namespace:
    """Identifiers derived from model names: [0-9a-zA-Z_] only, prefixed, never repeated."""

    def __init__(self):
        self.used: set[str] = set()

    def create(self, prefix: str, name: str) -> str:
        base = prefix + re.sub(r"[^0-9a-zA-Z_]", "_", name)[:40]
        ident, k = base, 1
        while ident in self.used:
            k += 1
            ident = f"{base}_{k}"
        self.used.add(ident)
        return ident


def readers_of(g: nx.DiGraph, order: list) -> dict[tuple, list]:
    """(node, port) -> the nodes that read it, in forward order: fusion needs single readers."""
    readers: dict[tuple, list] = {}
    for n in order:
        for src in g.nodes[n]["inputs"]:
            readers.setdefault(src, []).append(n)
    return readers


class Lowering:
    """Base of the targets' lowerings. Subclasses set `target` ("cpu" or "cuda", the layer
    method they call) and `dialect` (codegen/dialect.py), and build their program in `run()`
    around `walk()`."""

    target = ""
    dialect = None

    def __init__(self, g: nx.DiGraph, weights: dict, keep: set):
        self.g, self.w, self.keep = g, weights, keep
        self.order = forward_nodes(g)
        self.position = {n: k for k, n in enumerate(self.order)}
        self.readers = readers_of(g, self.order)
        self.ns = Namespace()
        from ...runtime.memory import available_bytes
        self.room = available_bytes()  # for the lowered parameters, counted as they are made
        self.lowered_bytes = 0

    def allot(self, nbytes: int, transient: int = 0) -> None:
        """Count a lowered parameter array before it is made, and refuse the one that would not
        fit (with `transient` bytes of work arrays beside it): folded and Winograd-transformed
        weights take up to 4x the file's (3x3 kernels become 6x6 tiles)."""
        self.lowered_bytes += nbytes
        if self.room is not None and self.lowered_bytes + transient > self.room:
            raise NetcError(f"the network's lowered weights (folded, Winograd-transformed) need more than "
                            f"{(self.lowered_bytes + transient) / 2**30:,.2f} GiB but only {self.room / 2**30:,.2f} GiB of "
                            f"memory is available")

    # ---- the walk ---------------------------------------------------------------------------
    def lower_node(self, n: str):
        """Node n's step through its layer's lower_<target> (None: nothing to run); the nodes it
        computed (n, then any it fused)."""
        d = self.g.nodes[n]
        layer = REGISTRY[d["type"]]
        if d["declared"] or not layer.runs_on(self.target):
            raise NetcError(f'layer "{n}" ({d["type"]}) cannot run on the {self.target.upper()} target: '
                            f'netc has no kernel for it yet', d["loc"])
        if not layer.computes(d["attrs"]):
            return None
        return getattr(layer, f"lower_{self.target}")(self, n) or [n]

    def walk(self) -> None:
        done: set = set()
        for n in self.order:
            if n not in done:
                done.update(self.lower_node(n) or [n])

    # ---- node facts for the layers ------------------------------------------------------------
    def io(self, n):
        """(node attributes, layer attrs, first input shape, first output shape)."""
        d = self.g.nodes[n]
        return d, d["attrs"], d["in_shapes"][0], d["shapes"][0]

    @staticmethod
    def nc_s(shape):
        """(N, C, spatial size) of an (N, C, ...) shape."""
        return shape[0], shape[1], numel(shape[2:])

    @staticmethod
    def outer_axis_inner(shape, axis):
        """(product before axis, axis size, product after axis)."""
        ax = axis % len(shape)
        return numel(shape[:ax]), shape[ax], numel(shape[ax + 1:])

    def act_lines(self, n) -> list[str] | None:
        """Node n's activation statements in this target's dialect (None: not pointwise)."""
        d = self.g.nodes[n]
        return REGISTRY[d["type"]].activation(d["attrs"], self.dialect)

    def affine(self, n):
        """Per-channel (mul, add) of node n when it is affine in its weights alone, else None."""
        d = self.g.nodes[n]
        if len(d["inputs"]) != 1:
            return None
        return REGISTRY[d["type"]].affine(n, d["attrs"], d["in_shapes"][0][1], self.w)

    # ---- fusion ---------------------------------------------------------------------------
    def next_fusable(self, n: str, ok) -> str | None:
        """The single reader of n's output if it can be computed in n's step."""
        key = (n, 0)
        rs = self.readers.get(key, [])
        if key in self.keep or len(rs) != 1:
            return None
        m = rs[0]
        d = self.g.nodes[m]
        if len(d["inputs"]) != 1 or d["buffer_of"][0] != self.g.nodes[n]["buffer_of"][0] or not ok(m):
            return None
        return m

    def _activations_after(self, cur: str) -> tuple[list, list[str]]:
        nodes, acts = [], []
        while (m := self.next_fusable(cur, lambda r: self.act_lines(r) is not None)):
            acts += self.act_lines(m)
            nodes.append(m)
            cur = m
        return nodes, acts

    def absorb(self, n: str, fold: bool):
        """(nodes absorbed, per-channel (mul, add) folded or None, activation lines)."""
        nodes, mul_add = [], None
        cur = n
        while fold:
            m = self.next_fusable(cur, lambda m: self.affine(m) is not None)
            if m is None:
                break
            mm, aa = self.affine(m)
            mul_add = (mm, aa) if mul_add is None else (mul_add[0] * mm, mul_add[1] * mm + aa)
            nodes.append(m)
            cur = m
        more, acts = self._activations_after(cur)
        return nodes + more, mul_add, acts

    def fused(self, n, fold: bool):
        """absorb() plus the output key the step finally writes: (extra nodes, (mul, add) or
        None, activation lines, output key)."""
        extra, mul_add, acts = self.absorb(n, fold=fold)
        return extra, mul_add, acts, ((extra or [n])[-1], 0)

    def absorb_merge(self, last: str):
        """An `epilogue_merge` layer (Eltwise) that reads `last`'s output and runs right after
        it (so no other step sees its operands change), with the activations after it: (nodes,
        its input keys with None for last's own value, its attrs, activation lines). A producer's
        epilogue then does the residual add of a ResNet block, saving a pass over the output;
        None when it does not apply."""
        key = (last, 0)
        rs = self.readers.get(key, [])
        if key in self.keep or len(rs) != 1 or not REGISTRY[self.g.nodes[rs[0]]["type"]].epilogue_merge:
            return None
        m = rs[0]
        if self.position[m] != self.position[last] + 1:
            return None
        d = self.g.nodes[m]
        operands = [None if src == key else src for src in d["inputs"]]
        more, acts = self._activations_after(m)
        return [m, *more], operands, d["attrs"], acts
