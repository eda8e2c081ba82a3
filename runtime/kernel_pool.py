"""Generated CUDA kernels compiled in worker processes, one per core.

numba compiles one kernel at a time (a global compiler lock) and NVVM takes 1.5-7 s per GEMM
kernel: ResNet-50 at batch 32 is ~95 s of compile on one core here (53 GEMM kernels), and a
first `netc run --gpu` or bench/gpu.py would spend minutes in it. Worker processes each compile
a share, largest source first (the GEMM kernels), handed out one at a time:
- to PTX, and through `ptxas -v` when asked (`netc build --target cuda`, the PTX tests);
  needs no GPU;
- into numba's on-disk cache before the CUDA target's first run (`warm_cache`): each worker
  imports the same generated file (cache entries are keyed on that file and the launch
  signature) and compiles it; the main process then loads the kernel from the cache at its
  first launch instead of compiling it. Needs the GPU in every worker (the cache is per
  compute capability).
"""
from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor

from ..compiler.errors import NetcError

_MODULE: dict = {}     # in a worker: the generated module source it compiles from (warm_cache)


def default_jobs() -> int:
    """NETC_COMPILE_JOBS, else the cores this process may use."""
    env = os.environ.get("NETC_COMPILE_JOBS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise NetcError(f'NETC_COMPILE_JOBS="{env}": expected a positive whole number')
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:    # not on Linux
        return os.cpu_count() or 1


def _pool(jobs: int, module_source: str | None = None) -> ProcessPoolExecutor:
    # spawn, not fork: the parent may hold a CUDA context or numba/OpenBLAS threads
    return ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init, initargs=(module_source,))


def _init(module_source) -> None:
    _MODULE["source"] = module_source


def _ptx_one(item):
    from ..compiler.codegen.ptx import compile_kernel_ptx, ptxas_report
    source, name, cc, arch, loop_mix = item
    ptx = compile_kernel_ptx(source, name, cc)
    return ptx, (ptxas_report(ptx, arch, loop_mix) if arch else None)


def compile_ptx_many(kernels: list[tuple[str, str]], cc=(9, 0), arch: str | None = None,
                     jobs: int | None = None, loop_mix: bool = False) -> list[tuple[str, dict | None]]:
    """(PTX, ptxas report or None) for each (kernel name, kernel source), in the given order;
    `arch` (e.g. "sm_90") asks ptxas for registers/spills too, `loop_mix` also the main loop's
    instruction counts (ptx.main_loop_mix). The first error is raised."""
    work = [(src, name, tuple(cc), arch, loop_mix) for name, src in kernels]
    jobs = min(jobs or default_jobs(), len(work))
    if jobs <= 1:
        return [_ptx_one(w) for w in work]
    out: list = [None] * len(work)
    with _pool(jobs) as pool:
        futures = {i: pool.submit(_ptx_one, work[i]) for i in _largest_first([w[0] for w in work])}
        try:
            for i, f in futures.items():
                out[i] = f.result()
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    return out


def _largest_first(sources: list[str]) -> list[int]:
    """Indices, longest source first: the GEMM kernels take NVVM longest; started first, they
    do not finish last on one core while the others sit idle."""
    return sorted(range(len(sources)), key=lambda i: -len(sources[i]))


def _cache_one(name: str):
    """Compile kernel `name` of the worker's module for the launch signature; numba writes the
    result to its cache. Errors come back as text: the main process compiles that kernel again
    at its launch and reports the error there, with its usual message."""
    from numba.core import sigutils
    from ..compiler.codegen.cuda_gemm import SIG
    from ..compiler.codegen.modules import import_source
    t0 = time.perf_counter()
    try:
        kernel = getattr(import_source(_MODULE["source"], "cuda"), name)
        argtypes, _ = sigutils.normalize_signature(SIG)
        kernel.compile(tuple(argtypes))     # the tuple a launch with two float32 arrays looks up
        return name, time.perf_counter() - t0, None
    except Exception as e:  # noqa: BLE001 - reported, and met again in the main process
        return name, time.perf_counter() - t0, f"{type(e).__name__}: {e}"


def is_cached(kernel) -> bool:
    """Whether numba has a cache index for this dispatcher's kernel (an entry for this GPU is
    likely then; a miss only costs the compile it would have cost anyway)."""
    try:
        return os.path.isfile(kernel._cache._cache_file._index_path)
    except AttributeError:    # no cache (simulator, cache=False) or another numba-cuda layout
        return False


def warm_cache(module_source: str, kernels: dict[str, str], jobs: int | None = None) -> dict:
    """Compile `kernels` (name -> its source) of the generated module into numba's cache in
    `jobs` processes. The module file must already be written (executor.load_module): a worker
    rewriting it would change the source stamp the cache entries are keyed on."""
    names = list(kernels)
    jobs = min(jobs or default_jobs(), len(names))
    report = {"kernels": len(names), "jobs": jobs, "compile_s": 0.0, "wall_s": 0.0, "errors": {}}
    if jobs <= 1:
        return {**report, "jobs": 0}    # one process would only compile what the launch compiles
    t0 = time.perf_counter()
    order = [names[i] for i in _largest_first([kernels[n] for n in names])]
    with _pool(jobs, module_source) as pool:
        for name, seconds, err in pool.map(_cache_one, order):
            report["compile_s"] += seconds
            if err:
                report["errors"][name] = err
    report["wall_s"] = time.perf_counter() - t0
    return report
