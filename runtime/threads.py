"""Who owns the cores while a network runs: OpenBLAS's sgemm threads, not numba's.

Both pools spin up on 2 cores and fight: KERNELS.md saw ResNet-50 at 476 ms with numba's OpenMP
layer; here, with one core busy elsewhere, VGG-16 took 4.1 s instead of 0.19 s per pass when both
numba (workqueue) and OpenBLAS used 2 threads, and 0.15-0.19 s when either used one. On a quiet
machine numba on one thread was also 1-4% faster on all five benchmark models (BENCHMARKS.md),
so on machines with few cores netc's numba loops run on the calling thread and sgemm keeps both
cores. NUMBA_NUM_THREADS or NUMBA_THREADING_LAYER set by the user win.
"""
from __future__ import annotations

import contextlib
import os

FEW_CORES = 2


def configure_numba() -> None:
    """Call before a generated kernel runs (cheap; idempotent)."""
    import numba
    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = "workqueue"
    if "NUMBA_NUM_THREADS" not in os.environ and (os.cpu_count() or 1) <= FEW_CORES:
        numba.set_num_threads(1)


def loops_parallel() -> bool:
    """Whether generated loops should be prange loops: only when numba has threads to run them
    on (with one thread the parallel machinery costs more than it saves)."""
    import numba
    configure_numba()
    return numba.get_num_threads() > 1


@contextlib.contextmanager
def all_cores():
    """numba on every core for work that runs while OpenBLAS is idle (filling random weights:
    mostly first-touch page faults, which parallelize)."""
    import numba
    before = numba.get_num_threads()
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    try:
        yield
    finally:
        numba.set_num_threads(before)
