"""The CUDA target of `Executable`: a network's kernels bound to one device arena.

Weights are packed into one float32 buffer and uploaded once; activations live in one device
arena laid out by the same buffer plan as the CPU target (compiler/plan.py). A run copies the
inputs in, launches every kernel in order on one stream with no host round trip, copies back
the blobs asked for right after the step that finalizes them (their bytes are reused later),
and synchronizes once at the end. The public API is `Executable`'s.
"""
from __future__ import annotations

import numpy as np

from ..compiler.errors import NetcError
from .cuda_device import require_cuda, simulator
from .executor import load_module


def cuda_lower(g, weights, buffer_of, keep, tiles=None):
    from ..compiler.codegen.cuda import lower
    return lower(g, weights, buffer_of, keep, tiles)


class CudaTarget:
    """numba-cuda kernels over one device arena, launched on one stream.

    `compile_jobs`: processes that compile kernels not yet in numba's cache before the first
    run (kernel_pool.warm_cache; default NETC_COMPILE_JOBS or every core; 1: compile each
    kernel at its first launch in this process). `compile_report` says what they did.
    `tune`: GEMM tiles timed on this GPU (runtime/autotune.py, cached per GPU model) instead of
    cuda_gemm's size rule; `tune_report` lists each GEMM problem's choice and times."""

    name = "cuda"

    def __init__(self, compile_jobs: int | None = None, tune: bool = False, log=None):
        self.cuda = require_cuda()
        self.compile_jobs, self.tune, self.log = compile_jobs, tune, log
        self.tune_report = self.compile_report = None
        self.simulated = simulator()   # every run is interpreted: slow enough for progress

    def lower(self, g, weights, buffer_of, keep):
        prog = cuda_lower(g, weights, buffer_of, keep)
        if not self.tune or not prog.gemm_problems:
            return prog
        from .autotune import tune as tune_tiles
        tiles, self.tune_report = tune_tiles(prog.gemm_problems, self.compile_jobs, log=self.log)
        return cuda_lower(g, weights, buffer_of, keep, tiles)

    def load(self, program, offsets: list, length: int, batch: int) -> None:
        cuda = self.cuda
        self.module = load_module(program.source, target="cuda")
        self.compile_report = self._warm_cache(program)
        self.stream = cuda.stream()
        self.arena_bytes = program.arena * 4
        try:
            self.params = cuda.to_device(program.params, stream=self.stream)
            self.arena = cuda.device_array(max(program.arena, 1), np.float32, stream=self.stream)
        except Exception as e:  # CudaAPIError on out-of-memory; no stable class to catch
            raise NetcError(f"cannot allocate {self.arena_bytes + program.params.nbytes:,} bytes "
                            f"on the GPU for the arena and weights ({e}); try a smaller --batch") from None
        self.places = program.places
        self.steps = [[getattr(self.module, l.kernel)[l.grid, l.block, self.stream] for l in s.launches]
                      for s in program.steps]

    def _warm_cache(self, program):
        if simulator():     # the simulator interprets kernels: nothing to compile
            return None
        from .kernel_pool import is_cached, warm_cache
        cold = {n: src for n, src in program.kernels.items() if not is_cached(getattr(self.module, n))}
        return warm_cache(program.source, cold, self.compile_jobs) if cold else None

    def _device_view(self, key):
        off, shape = self.places[key]
        size = int(np.prod(shape, dtype=np.int64))
        return self.arena[off:off + size].reshape(shape)

    def shape(self, key) -> tuple:
        return self.places[key][1]

    def write(self, key, arr: np.ndarray) -> None:
        self._device_view(key).copy_to_device(arr, stream=self.stream)

    def fetch(self, key) -> np.ndarray:
        return self._device_view(key).copy_to_host(stream=self.stream)

    def launch(self, k: int) -> None:
        for launch in self.steps[k]:
            launch(self.arena, self.params)

    def sync(self) -> None:
        self.stream.synchronize()

    def pass_begins(self) -> None:
        """(The CPU target picks its sgemm threads here; the GPU has nothing to pick.)"""

    def pass_ends(self) -> None:
        pass
