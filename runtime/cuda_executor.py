"""CudaExecutable: a network compiled for the CUDA target, bound to one device arena.

Weights are packed into one float32 buffer and uploaded once; activations live in one device
arena laid out by the same buffer plan as the CPU target (compiler/plan.py). A run copies the
inputs in, launches every kernel in order on one stream with no host round trip, copies back
the blobs asked for right after the step that finalizes them (their bytes are reused later),
and synchronizes once at the end. The public API is `Executable`'s.
"""
from __future__ import annotations

import time

import numpy as np

from ..compiler.errors import NetcError
from ..compiler.layers.base import fmt_shape
from .cuda_device import numba_cuda, require_cuda, simulator  # noqa: F401 (numba_cuda: the CLI's)
from .executor import Executable, generate, load_module

def cuda_lower(g, weights, buffer_of, keep, tiles=None):
    from ..compiler.codegen.cuda import lower
    return lower(g, weights, buffer_of, keep, tiles)


class CudaExecutable(Executable):
    """`compile_jobs`: processes that compile kernels not yet in numba's cache before the first
    run (kernel_pool.warm_cache; default NETC_COMPILE_JOBS or every core; 1: compile each
    kernel at its first launch in this process). `compile_report` says what they did.
    `tune`: GEMM tiles timed on this GPU (runtime/autotune.py, cached per GPU model) instead of
    cuda_gemm's size rule; `tune_report` lists each GEMM problem's choice and times."""

    def __init__(self, net, weights=None, batch: int | None = None, seed: int = 0, blobs=(),
                 compile_jobs: int | None = None, tune: bool = False, log=None):
        cuda = require_cuda()
        self.network = net
        self.tune_report = None

        def lower_tuned(g, w, buffer_of, keep):
            prog = cuda_lower(g, w, buffer_of, keep)
            if not tune or not prog.gemm_problems:
                return prog
            from .autotune import tune as tune_tiles
            tiles, self.tune_report = tune_tiles(prog.gemm_problems, compile_jobs, log=log)
            return cuda_lower(g, w, buffer_of, keep, tiles)

        self.program, ctx = generate(net, batch, weights, seed, blobs, target_lower=lower_tuned)
        self.analysis, self.weights, self.blob_key = ctx["analysis"], ctx["weights"], ctx["blob_key"]
        self.order = ctx["order"]
        g = net.graph
        self.module = load_module(self.program.source, target="cuda")
        self.compile_report = self._warm_cache(compile_jobs)
        self.stream = cuda.stream()
        self.arena_bytes = self.program.arena * 4
        self.peak_bytes = self.analysis.totals["peak_activation_bytes"]
        try:
            self.params = cuda.to_device(self.program.params, stream=self.stream)
            self.arena = cuda.device_array(max(self.program.arena, 1), np.float32, stream=self.stream)
        except Exception as e:  # CudaAPIError on out-of-memory; no stable class to catch
            raise NetcError(f"cannot allocate {self.arena_bytes + self.program.params.nbytes:,} bytes "
                            f"on the GPU for the arena and weights ({e}); try a smaller --batch") from None
        self.places = self.program.places
        self.steps = [[getattr(self.module, l.kernel)[l.grid, l.block, self.stream] for l in s.launches]
                      for s in self.program.steps]
        self._index_blobs(g)

    def _warm_cache(self, jobs):
        if simulator():     # the simulator interprets kernels: nothing to compile
            return None
        from .kernel_pool import is_cached, warm_cache
        cold = {n: src for n, src in self.program.kernels.items() if not is_cached(getattr(self.module, n))}
        return warm_cache(self.program.source, cold, jobs) if cold else None

    def _view(self, key):
        """The device array holding output `key` (a view into the arena)."""
        off, shape = self.places[key]
        size = int(np.prod(shape, dtype=np.int64))
        return self.arena[off:off + size].reshape(shape)

    def _fetch(self, key) -> np.ndarray:
        return self._view(key).copy_to_host(stream=self.stream)

    def _feed(self, feeds: dict) -> None:
        for name, arr in feeds.items():
            if name not in self.inputs:
                raise NetcError(f'"{name}" is not an input of this network (inputs: {", ".join(self.inputs)})')
            shape = self.places[self.inputs[name]][1]
            arr = np.asarray(arr)
            if arr.shape != shape:
                hint = (" (compile with batch=%d)" % arr.shape[0]) if arr.shape[1:] == shape[1:] else ""
                raise NetcError(f'input "{name}" has shape {fmt_shape(arr.shape)}; this executable was '
                                f"compiled for {fmt_shape(shape)}{hint}")
            if arr.dtype.kind not in "fiub":
                raise NetcError(f'input "{name}" holds {arr.dtype}; expected numbers')
            self._view(self.inputs[name]).copy_to_device(np.ascontiguousarray(arr, np.float32), stream=self.stream)
        missing = [b for b in self.required_inputs if b not in feeds]
        if missing:
            raise NetcError(f"missing input(s): {', '.join(missing)}")
        for b, key in self.inputs.items():
            if b not in feeds:
                self._view(key).copy_to_device(np.zeros(self.places[key][1], np.float32), stream=self.stream)

    def run(self, feeds: dict, blobs=()) -> dict:
        """Inputs by blob name -> every network output, plus the blobs asked for."""
        self._feed(feeds)
        want = self._wanted(blobs)
        got = {}
        for n in self.order:
            k = self.program.step_at.get(n)
            if k is not None:
                for launch in self.steps[k]:
                    launch(self.arena, self.params)
            for b in want.get(n, ()):
                got[b] = self._fetch(self.blob_key[b])
        for o in self.outputs:
            if o not in got:
                got[o] = self._fetch(self.blob_key[o])
        self.stream.synchronize()
        return got

    def profile(self, feeds: dict, repeat: int = 1) -> list[dict]:
        """Per step: layers, type, seconds (median of `repeat` runs, each step synchronized),
        flops of its layers."""
        self._feed(feeds)
        self.stream.synchronize()
        times = np.zeros((repeat, len(self.steps)))
        for r in range(repeat):
            for k, launches in enumerate(self.steps):
                t0 = time.perf_counter()
                for launch in launches:
                    launch(self.arena, self.params)
                self.stream.synchronize()
                times[r, k] = time.perf_counter() - t0
        med = np.median(times, axis=0)
        return [{"layers": s.layers, "name": s.layers[0], "type": s.type, "seconds": float(t),
                 "flops": sum(self.flops[n] for n in s.layers)}
                for s, t in zip(self.program.steps, med)]
