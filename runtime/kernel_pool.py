"""Generated CUDA kernels compiled in worker processes, one per core.

numba compiles one kernel at a time (a global compiler lock) and NVVM takes 1.5-7 s per GEMM
kernel: `netc build resnet50 --target cuda --batch 32` took 130 s in one process here, and a
first `netc run --gpu` or bench/gpu.py would spend as long in compiling. Worker processes each
compile a share (largest sources first, dealt out to the least-loaded worker):
- to PTX, and through `ptxas -v` when asked (`netc build --target cuda`, the PTX tests); needs
  no GPU;
- into numba's on-disk cache before the CUDA target's first run (`warm_cache`): each worker
  imports the same generated file (cache entries are keyed on that file and the launch
  signature) and compiles it; the main process then loads the kernel from the cache at its
  first launch instead of compiling it. Needs the GPU in every worker (the cache is per
  compute capability).
Workers are plain `python -c` processes given the parent's sys.path, not multiprocessing's
spawn: spawn re-imports the caller's main module, and a user's script without a __main__ guard
would run again in every worker.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..compiler.errors import NetcError

WORKER = ("import json, sys\n"
          "task = json.load(open(sys.argv[1]))\n"
          "sys.path[:] = task['sys_path']\n"
          "from netc.runtime.kernel_pool import _worker\n"
          "_worker(task, sys.argv[2])\n")


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


def _shares(costs: list[int], jobs: int) -> list[list[int]]:
    """Indices dealt to `jobs` workers, largest cost first to the least-loaded worker (the GEMM
    kernels take NVVM longest: started last on one worker, they would finish alone)."""
    shares, load = [[] for _ in range(jobs)], [0] * jobs
    for i in sorted(range(len(costs)), key=lambda i: -costs[i]):
        w = load.index(min(load))
        shares[w].append(i)
        load[w] += costs[i]
    return [s for s in shares if s]


def _run(mode: str, items: list, costs: list[int], jobs: int, module_source: str | None = None) -> list:
    """Each item's result dict, in order; a worker that died leaves {"error": its stderr}."""
    out: list = [None] * len(items)
    with tempfile.TemporaryDirectory(prefix="netc_pool_") as d:
        procs = []
        try:
            for w, share in enumerate(_shares(costs, jobs)):
                task = {"mode": mode, "sys_path": sys.path, "module": module_source,
                        "items": [items[i] for i in share]}
                (Path(d) / f"in{w}.json").write_text(json.dumps(task))
                with open(Path(d) / f"err{w}.txt", "w") as err:   # the child keeps its own handle
                    procs.append((share, w, subprocess.Popen(
                        [sys.executable, "-c", WORKER, str(Path(d) / f"in{w}.json"), str(Path(d) / f"out{w}.json")],
                        stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT)))
            _wait(procs, Path(d), len(items), "compiling CUDA kernels" if mode == "cache" else "compiling PTX")
        finally:    # a failed start or an interrupt leaves no worker running on its own
            for _, _, p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        for share, w, p in procs:
            res = Path(d) / f"out{w}.json"
            if p.returncode == 0 and res.is_file():
                got = json.loads(res.read_text())
            else:
                tail = (Path(d) / f"err{w}.txt").read_text()[-2000:]
                got = [{"error": f"compile worker exited with status {p.returncode}: {tail}"}] * len(share)
            for i, r in zip(share, got):
                out[i] = r
    return out


def _wait(procs, d: Path, total: int, what: str) -> None:
    """Wait for the workers, showing how many items they have done (each appends a byte to its
    own progress file per item) when progress is on."""
    from .progress import ticker
    tick = ticker(total, what)
    if tick is None:
        for _, _, p in procs:
            p.wait()
        return
    with tick:
        while any(p.poll() is None for _, _, p in procs):
            time.sleep(0.2)
            done = sum((d / f"done{w}").stat().st_size if (d / f"done{w}").exists() else 0 for _, w, _ in procs)
            tick.tick(done - tick.done)


def _worker(task: dict, out_path: str) -> None:
    results = []
    done = Path(out_path).with_name("done" + Path(out_path).stem[3:])
    for item in task["items"]:
        t0 = time.perf_counter()
        try:
            r = _ptx_one(*item) if task["mode"] == "ptx" else _cache_one(task["module"], item)
        except Exception as e:  # noqa: BLE001 - the parent reports it with the kernel's name
            r = {"error": f"{type(e).__name__}: {e}"}
        r["seconds"] = time.perf_counter() - t0
        results.append(r)
        with open(done, "ab") as f:
            f.write(b".")
    Path(out_path).write_text(json.dumps(results))


def _ptx_one(source: str, name: str, cc, arch, loop_mix: bool) -> dict:
    from ..compiler.codegen.ptx import compile_kernel_ptx, ptxas_report
    ptx = compile_kernel_ptx(source, name, tuple(cc))
    return {"ptx": ptx, "report": ptxas_report(ptx, arch, loop_mix) if arch else None}


def gist(message: str, lines: int = 3, limit: int = 500) -> str:
    """The first few lines of a compiler's message, short enough to read (NVVM and numba can
    print whole kernels or IR)."""
    message = re.sub(r"\x1b\[[0-9;]*m", "", message)        # numba colours its errors
    kept = [l.strip()[:200] for l in message.splitlines() if l.strip()][:lines]
    text = " / ".join(kept) or "failed"
    return text if len(text) <= limit else text[:limit] + " ..."


def compile_ptx_many(kernels: list[tuple[str, str]], cc=(9, 0), arch: str | None = None,
                     jobs: int | None = None, loop_mix: bool = False) -> list[tuple[str, dict | None]]:
    """(PTX, ptxas report or None) for each (kernel name, kernel source), in the given order;
    `arch` (e.g. "sm_90") asks ptxas for registers/spills too, `loop_mix` also the main loop's
    instruction counts (ptx.main_loop_mix). The first error (in the given order) is raised."""
    items = [(src, name, list(cc), arch, loop_mix) for name, src in kernels]
    jobs = min(jobs or default_jobs(), len(items))
    if jobs <= 1:
        from .progress import ticker
        out, tick = [], ticker(len(items), "compiling PTX")
        try:
            for (name, _), it in zip(kernels, items):
                try:
                    r = _ptx_one(*it)
                except Exception as e:  # noqa: BLE001 - named and short, like the workers' errors
                    raise NetcError(f"kernel {name} did not compile: {gist(f'{type(e).__name__}: {e}')}") from None
                out.append((r["ptx"], r["report"]))
                if tick:
                    tick.tick()
        finally:
            if tick:
                tick.close()
        return out
    results = _run("ptx", items, [len(src) for src, *_ in items], jobs)
    for (name, _), r in zip(kernels, results):
        if "error" in r:
            raise NetcError(f"kernel {name} did not compile: {gist(r['error'])}")
    return [(r["ptx"], r["report"]) for r in results]


def _cache_one(module_source: str, name: str) -> dict:
    """Compile kernel `name` of the generated module for the launch signature; numba writes the
    result to its cache. (An error comes back as text: the main process compiles that kernel
    again at its launch and reports the error there, with its usual message.)"""
    import numpy as np
    from numba import cuda
    from ..compiler.codegen.modules import import_source
    kernel = getattr(import_source(module_source, "cuda"), name)
    probe = cuda.device_array(1, np.float32)      # a launch passes two such arrays (arena, params)
    kernel.compile((kernel.typeof_pyval(probe),) * 2)   # typed as a launch types them: same cache key
    return {}


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
    try:
        results = _run("cache", names, [len(kernels[n]) for n in names], jobs, module_source)
    except OSError as e:     # no processes to be had: the launches compile as before
        results = [{"error": f"could not start compile workers: {e}"}] * len(names)
    for name, r in zip(names, results):
        report["compile_s"] += r.get("seconds", 0.0)
        if "error" in r:
            report["errors"][name] = r["error"]
    report["wall_s"] = time.perf_counter() - t0
    return report
