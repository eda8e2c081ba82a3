"""Executable: a compiled network bound to one float32 arena, run step by step, on any target.

The arena follows the analysis' buffer plan (compiler/plan.py gives each buffer an offset), so
what `netc analyze` reports as peak activation memory is what a run allocates. Requested blobs
are copied out right after the step that finalizes them, because their bytes are reused later.

`Executable` is the same for every target; a target object only knows how to lower, load,
allocate, feed, fetch and launch: `CpuTarget` here, `CudaTarget` in cuda_executor.py.
"""
from __future__ import annotations

import math
import time

import numpy as np

from ..compiler.codegen import modules
from ..compiler.codegen.cpu import lower
from ..compiler.errors import NetcError
from ..compiler.layers import REGISTRY
from ..compiler.layers.base import fmt_shape
from ..compiler.passes import forward_nodes, refuse_soft_shapes
from . import memory, progress
from . import weights as wmod
from .threads import BlasThreads, configure_numba, loops_parallel
from ..compiler.plan import assign_offsets, keep_every_buffers


def cache_dir(target: str = "cpu"):
    return modules.cache_dir(target)


def load_module(source: str, target: str = "cpu"):
    """The generated module for `target`, imported from the cache (codegen/modules.py)."""
    try:
        configure_numba()
    except ImportError:
        raise NetcError("running a network needs numba, which netc installs: from the netc checkout, "
                        "pip install .") from None
    return modules.import_source(source, target)


def generate(net, batch: int | None = None, weights=None, seed: int = 0, blobs=(), target_lower=None,
             keep_every: bool = False):
    """(Program, context) for a network: analysis at `batch` (default 1, as `netc analyze`),
    weights loaded or made, arena offsets assigned, kernels generated (not yet compiled) by
    `target_lower` (default: the CPU target's `lower`)."""
    analysis = net.analyze(batch=batch or 1)
    g = net.graph
    order = forward_nodes(g)
    refuse_soft_shapes(g, "execute")
    memory.require({"weights": 4 * sum(math.prod(s) for s in wmod.expected(g).values())},
                   batch or 1)
    if weights is None and g.graph.get("weights") is not None:
        weights = g.graph["weights"]          # an ONNX file's own initializers
    w = wmod.load(g, weights) if weights is not None else wmod.random(g, seed)
    offsets, length = assign_offsets(g)
    buffer_of = {(n, p): b for n in order for p, b in enumerate(g.nodes[n]["buffer_of"])}
    blob_key = {}
    for n in order:
        for p, top in enumerate(g.nodes[n]["tops"]):
            blob_key[top] = (n, p)
    keep = set()
    for b in blobs:
        if b not in blob_key:
            from ..compiler.errors import did_you_mean
            raise NetcError(f'no blob named "{b}"' + did_you_mean(b, list(blob_key)))
        keep.add(blob_key[b])
    if keep_every:      # every layer's own output, in its own buffer: nothing fused or overwritten
        keep = {(n, p) for n in order for p in range(len(g.nodes[n]["tops"]))}
        buffer_of, offsets, length = keep_every_buffers(g)
    if target_lower is None:
        prog = lower(g, w, buffer_of, keep, parallel=loops_parallel())
    else:
        prog = target_lower(g, w, buffer_of, keep)
    return prog, {"analysis": analysis, "weights": w, "blob_key": blob_key, "order": order,
                  "offsets": offsets, "length": length}


class CpuTarget:
    """numba kernels and numpy sgemm over one host arena and a scratch array."""

    name = "cpu"

    def __init__(self):
        self.blas = BlasThreads()

    def lower(self, g, weights, buffer_of, keep):
        return lower(g, weights, buffer_of, keep, parallel=loops_parallel())

    def load(self, program, offsets: list, length: int, batch: int) -> None:
        memory.require({"activation arena": 4 * length, "scratch": 4 * program.scratch}, batch)
        self.module = load_module(program.source)
        try:
            self.arena = np.zeros(max(length, 1), np.float32)
            self.scratch = np.zeros(max(program.scratch, 1), np.float32)
        except MemoryError:
            raise NetcError(f"cannot allocate {4 * (length + program.scratch):,} bytes for the "
                            f"activation arena and scratch; try a smaller --batch") from None
        self.arena_bytes = length * 4
        self.views = []
        for b, shape in program.views:
            size = int(np.prod(shape, dtype=np.int64))
            self.views.append(self.arena[offsets[b]:offsets[b] + size].reshape(shape))
        self.view_of = program.view_of
        self.steps = self.module.make(self.views, self.scratch, program.params)

    def shape(self, key) -> tuple:
        return self.views[self.view_of[key]].shape

    def write(self, key, arr: np.ndarray) -> None:
        np.copyto(self.views[self.view_of[key]], arr, casting="unsafe")

    def fetch(self, key) -> np.ndarray:
        return self.views[self.view_of[key]].copy()

    def view(self, key) -> np.ndarray:
        """The arena's own array for key (overwritten by the next run)."""
        return self.views[self.view_of[key]]

    def launch(self, k: int) -> None:
        self.steps[k]()

    def sync(self) -> None:
        pass

    def pass_begins(self) -> None:
        self.blas.begin()

    def pass_ends(self) -> None:
        self.blas.end()


class Executable:
    """A network compiled for `target` (default the CPU): `run`, `profile`, `__call__`.
    Attributes for tools: `program` (what the target generated), `analysis`, `weights`,
    `inputs` / `outputs` (blob names), `arena_bytes`, `peak_bytes`, `target`."""

    def __init__(self, net, weights=None, batch: int | None = None, seed: int = 0, blobs=(), target=None,
                 keep_every: bool = False):
        self.network = net
        self.target = target if target is not None else CpuTarget()
        self.keep_every = keep_every
        self.program, ctx = generate(net, batch, weights, seed, blobs, target_lower=self.target.lower,
                                     keep_every=keep_every)
        self.analysis, self.weights, self.blob_key = ctx["analysis"], ctx["weights"], ctx["blob_key"]
        self.order = ctx["order"]
        self.target.load(self.program, ctx["offsets"], ctx["length"], batch or 1)
        self.arena_bytes = self.target.arena_bytes
        self.peak_bytes = self.analysis.totals["peak_activation_bytes"]
        self.runs = 0
        self._index_blobs(net.graph)

    @property
    def tune_report(self):
        """The CUDA target's autotuning choices (None elsewhere or untuned)."""
        return getattr(self.target, "tune_report", None)

    @property
    def compile_report(self):
        """What the CUDA target's compile workers did (None elsewhere)."""
        return getattr(self.target, "compile_report", None)

    def _index_blobs(self, g) -> None:
        """Types and FLOPs per node, the network's inputs, and its outputs (blobs nobody reads
        that are materialized)."""
        self.types = {n: g.nodes[n]["type"] for n in self.order}
        self.flops = {n: g.nodes[n]["ops"].flops for n in self.order}
        layer = {n: REGISTRY[self.types[n]] for n in self.order}
        self.inputs = {g.nodes[n]["tops"][p]: (n, p) for n in self.order if layer[n].source
                       for p in range(len(g.nodes[n]["tops"]))}
        read = {src for n in self.order if not layer[n].sink for src in g.nodes[n]["inputs"]}
        read |= {src for n in g.nodes if REGISTRY[g.nodes[n]["type"]].swallows for src in g.nodes[n].get("inputs", ())}
        self.outputs = [g.nodes[n]["tops"][p] for n in self.order if not layer[n].source
                        for p in range(len(g.nodes[n]["shapes"])) if (n, p) not in read]
        self.outputs = [o for o in self.outputs if self.blob_key[o][0] not in self.program.hidden]

    def _key(self, blob: str) -> tuple:
        if blob not in self.blob_key:
            from ..compiler.errors import did_you_mean
            raise NetcError(f'no blob named "{blob}"' + did_you_mean(blob, list(self.blob_key)))
        return self.blob_key[blob]

    @property
    def required_inputs(self) -> list[str]:
        """Inputs a caller must feed: a Data layer's label top is optional (zeros)."""
        return [b for b, (n, p) in self.inputs.items() if REGISTRY[self.types[n]].feeds(p)]

    def input_shape(self, name: str) -> tuple:
        """The shape input blob `name` must be fed with."""
        if name not in self.inputs:
            raise NetcError(f'"{name}" is not an input of this network (inputs: {", ".join(self.inputs)})')
        return tuple(self.target.shape(self.inputs[name]))

    def _feed(self, feeds: dict) -> None:
        for name, arr in feeds.items():
            shape = self.input_shape(name)
            arr = np.asarray(arr)
            if arr.shape != shape:
                hint = (" (compile with batch=%d)" % arr.shape[0]) if arr.shape[1:] == shape[1:] else ""
                raise NetcError(f'input "{name}" has shape {fmt_shape(arr.shape)}; this executable was '
                                f"compiled for {fmt_shape(shape)}{hint}")
            if arr.dtype.kind not in "fiub":
                raise NetcError(f'input "{name}" holds {arr.dtype}; expected numbers')
            self.target.write(self.inputs[name], np.ascontiguousarray(arr, np.float32))
        missing = [b for b in self.required_inputs if b not in feeds]
        if missing:
            raise NetcError(f"missing input(s): {', '.join(missing)}")
        for b, key in self.inputs.items():
            if b not in feeds:
                self.target.write(key, np.zeros(self.target.shape(key), np.float32))

    def _wanted(self, blobs) -> dict[str, list]:
        """Blobs asked for, grouped by the node after whose step they are read."""
        want: dict[str, list] = {}
        for b in blobs:
            n, p = self._key(b)
            if n in self.program.hidden:
                raise NetcError(f'blob "{b}" is never materialized on its own (fused into a later '
                                f'step, or written straight into a concat); compile with '
                                f'blobs=["{b}"] to keep it')
            want.setdefault(n, []).append(b)
        return want

    def run(self, feeds: dict, blobs=()) -> dict:
        """Inputs by blob name -> every network output, plus the blobs asked for."""
        self._feed(feeds)
        want = self._wanted(blobs)
        got = {}
        tick = self._ticker()
        self.target.pass_begins()
        try:
            if not want:
                for k in range(len(self.program.steps)):
                    self.target.launch(k)
                    if tick:
                        tick.tick()
            for n in self.order if want else ():
                k = self.program.step_at.get(n)
                if k is not None:
                    self.target.launch(k)
                    if tick:
                        tick.tick()
                for b in want.get(n, ()):
                    got[b] = self.target.fetch(self.blob_key[b])
        finally:
            if tick:
                tick.close()
        self.runs += 1
        for o in self.outputs:
            if o not in got:
                got[o] = self.target.fetch(self.blob_key[o])
        self.target.sync()
        self.target.pass_ends()
        return got

    def explain(self, method: str, image, target=None, layer=None, **options):
        """(map, info) of an explain method (runtime/explain.py: filters, features, occlusion,
        saliency, deconvnet, guided-backprop, gradcam, guided-gradcam, class-model for one input
        item [C, H, W]; top-patches and tsne over images=paths); info names the class, layer
        and score explained."""
        from .explain import explain
        return explain(self, method, None if image is None else np.asarray(image, np.float32), target, layer,
                       **options)

    def values(self, feeds: dict) -> dict:
        """(layer, port) -> every layer's output as it wrote it (each has its own buffer, in-place
        layers included): what the backward pass reads. Needs compile(..., keep_every=True). On the
        CPU the arrays are the arena's own (no copies), valid until the next run."""
        if not self.keep_every:
            raise NetcError("values() needs an executable compiled with keep_every=True")
        self._feed(feeds)
        for k in range(len(self.program.steps)):
            self.target.launch(k)
        self.target.sync()
        g = self.network.graph
        read = getattr(self.target, "view", self.target.fetch)
        return {(n, p): read((n, p)) for n in self.order for p in range(len(g.nodes[n]["tops"]))}

    def _ticker(self):
        """Progress over the steps of a first run (kernels compile at their first call) and of
        every simulated one (runtime/progress.py: on for the command line's terminal)."""
        if self.runs and not getattr(self.target, "simulated", False):
            return None
        what = "simulating" if getattr(self.target, "simulated", False) else "first run: compiling kernels"
        return progress.ticker(len(self.program.steps), what)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        req = self.required_inputs
        if len(req) != 1:
            raise NetcError(f"this network has {len(req)} inputs ({', '.join(req)}): use .run({{name: array}})")
        if not self.outputs:
            raise NetcError("this network has no output blob")
        return self.run({req[0]: x})[self.outputs[-1]]

    def profile(self, feeds: dict, repeat: int = 1) -> list[dict]:
        """Per step: layers, type, seconds (median over `repeat` whole passes, each step waited
        for), flops of its layers. Passes run as `run` runs them (the same sgemm threads), so the
        steps add up to a pass: `profile_totals` has the sum of the step medians and the
        median pass, in seconds."""
        self._feed(feeds)
        self.target.sync()
        times = np.zeros((repeat, len(self.program.steps)))
        for r in range(repeat):
            self.target.pass_begins()
            for k in range(len(self.program.steps)):
                t0 = time.perf_counter()
                self.target.launch(k)
                self.target.sync()
                times[r, k] = time.perf_counter() - t0
            self.target.pass_ends()
        med = np.median(times, axis=0)
        self.profile_totals = {"steps": float(med.sum()), "pass": float(np.median(times.sum(axis=1)))}
        return [{"layers": s.layers, "name": s.layers[0], "type": s.type, "seconds": float(t),
                 "flops": sum(self.flops[n] for n in s.layers)}
                for s, t in zip(self.program.steps, med)]
