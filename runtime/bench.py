"""Timing the generated kernels: the API behind `netc bench` and bench/*.py."""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from .threads import load_mark, others_since

# Cores other programs may keep busy during the timing before bench calls the machine loaded
# (a spinning process is 1.0; desktop background work stays well under).
LOADED = 0.25


def measure_sgemm(n: int = 2048, reps: int = 3) -> float:
    """This machine's numpy sgemm GFLOP/s at n^3 (best of reps): the yardstick for bench."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    c = a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def bench(net, batch: int = 1, iters: int = 20, weights=None, target: str = "cpu", tune: bool = False,
          report_tuning=None) -> dict:
    """Latency of whole runs (inputs in, outputs back: on the GPU, one synchronization each);
    on the CPU also the fraction of this machine's sgemm speed it reaches."""
    ex = net.compile(target, weights=weights, batch=batch, tune=tune)
    if report_tuning is not None:
        report_tuning(ex, sys.stderr)
    feeds = {name: np.random.default_rng(k).standard_normal(ex.input_shape(name)).astype(np.float32)
             for k, name in enumerate(ex.required_inputs)}
    ex.run(feeds)
    ex.run(feeds)
    times = []
    before = load_mark()
    for _ in range(iters):
        t0 = time.perf_counter()
        ex.run(feeds)
        times.append(time.perf_counter() - t0)
    others = others_since(before)
    t = np.array(times)
    med = float(np.median(t))
    flops = ex.analysis.totals["flops"]
    peak = measure_sgemm() if target == "cpu" else None
    rows = ex.profile(feeds, repeat=min(max(iters, 3), 10))
    return {
        "network": net.name, "batch": batch, "iters": iters,
        "median_ms": med * 1e3, "p10_ms": float(np.percentile(t, 10)) * 1e3,
        "p90_ms": float(np.percentile(t, 90)) * 1e3, "min_ms": float(t.min()) * 1e3,
        "images_per_s": batch / med, "gflop": flops / 1e9, "gflops": flops / med / 1e9,
        "target": target, "sgemm_peak_gflops": peak,
        "fraction_of_sgemm_peak": flops / med / 1e9 / peak if peak else None,
        "arena_bytes": ex.arena_bytes, "peak_activation_bytes": ex.peak_bytes,
        "autotune": ex.tune_report,
        "cores": os.cpu_count(), "other_programs_cores": others, "loaded": others >= LOADED,
        "sgemm_threads": getattr(getattr(ex.target, "blas", None), "count", None),
        "profile_steps_ms": ex.profile_totals["steps"] * 1e3, "profile_pass_ms": ex.profile_totals["pass"] * 1e3,
        "slowest": [{"layer": r["name"], "type": r["type"], "ms": r["seconds"] * 1e3,
                     "gflops": r["flops"] / r["seconds"] / 1e9 if r["seconds"] else 0.0,
                     "fused": r["layers"][1:]} for r in sorted(rows, key=lambda r: -r["seconds"])[:10]],
    }
