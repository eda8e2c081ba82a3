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
import functools
import os
import statistics
import time

FEW_CORES = 2
clock = time.perf_counter   # (a name of its own, so tests can script the passes' times)


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


class BlasThreads:
    """OpenBLAS's thread count, chosen pass by pass: all threads on a quiet machine, one while
    other programs hold the cores and one thread proves faster.

    With other programs on the cores, OpenBLAS's second thread is descheduled at random and every
    sgemm waits for it: ResNet-50 went 111 -> 390 ms with two busy processes on 2 cores (ONNX
    Runtime, whose pool lets the caller take a late worker's share, 100 -> 194), while one sgemm
    thread took 241 ms. Every 0.1 s of passes the machine's busy time (/proc/stat) less this
    process's own says whether others ran; if they used half a core or more, three passes try the
    other count, and the faster is kept. A look that loses doubles the wait before the next (16
    passes up to 256), but the load coming or going since the last look brings one at once. On a
    quiet machine the count never changes, so results stay bit for bit the same (OpenBLAS rounds
    differently by thread count). `pinned` (folder runs, which promise the same bits per batch)
    turns it off; so does OPENBLAS_NUM_THREADS=1."""

    EVERY = 0.1          # seconds between readings of the machine's load
    OTHERS = 0.5         # cores used by other programs that make the count worth a second look
    TRIES = 3            # passes a look at the other count takes (one pass under load is noise)
    FIRST_WAIT, LAST_WAIT = 16, 256
    FAVOUR_ONE = 1.1     # under load one thread wins unless all threads are 10% faster

    def __init__(self):
        self.lib = _openblas()
        self.most = self.lib.get_num_threads() if self.lib is not None else 1
        self.pinned = self.most <= 1 or not os.path.exists("/proc/stat")
        self.count = self.most
        self.recent = []                 # the current count's last pass times
        self.tried = None                # during a look: its pass times so far
        self.since, self.wait = 0, 0     # passes since the last look; passes before the next may come
        self.loaded_then = False         # whether others held the cores at the last look
        self.mark = None
        self.others = 0.0                # cores other programs used at the last reading

    @property
    def other_count(self) -> int:
        return 1 if self.count == self.most else self.most

    def begin(self) -> None:
        if self.pinned:
            return
        want = self.count if self.tried is None else self.other_count
        if self.lib.get_num_threads() != want:    # another executable in this process may have moved it
            self.lib.set_num_threads(want)
        self.t0 = clock()

    def end(self) -> None:
        if self.pinned:
            return
        now = clock()
        dt = now - self.t0
        if self.tried is not None:
            self.tried.append(dt)
            if len(self.tried) == self.TRIES:
                self._judge()
            return
        self.recent = (self.recent + [dt])[-5:]
        self.since += 1
        if self.mark is None or now - self.mark[0] >= self.EVERY:
            was = self.others >= self.OTHERS
            self._read_load()
            if (self.others >= self.OTHERS) != was:
                self.recent = []                   # times from before the change say nothing now
        if len(self.recent) < 3:
            return
        loaded = self.others >= self.OTHERS
        changed = loaded != self.loaded_then       # the load came or went since the last look
        if self.count == self.most:
            look = loaded and (changed or self.since >= self.wait)
        else:
            look = changed or self.since >= self.wait
        if look:
            self.tried, self.loaded_then = [], loaded

    def _read_load(self) -> None:
        mark = load_mark()
        if self.mark is not None:
            self.others = others_since(self.mark, mark)
        self.mark = mark

    def _judge(self) -> None:
        """After a look at the other count: move there if its median beat the current count's,
        by a margin that favours one thread under load (a descheduled second thread can turn a
        pass 10x slower at random: ResNet-50 0.3 -> 3.4 s) and all threads without. A look that
        loses doubles the wait before the next (16 passes up to 256)."""
        single = self.other_count == 1
        favour = self.FAVOUR_ONE if single == self.loaded_then else 1 / self.FAVOUR_ONE
        if statistics.median_high(self.tried) < statistics.median_high(self.recent[-3:]) * favour:
            self.count, self.recent = self.other_count, self.tried
            self.wait = self.FIRST_WAIT if self.count != self.most else 0
        else:
            self.wait = min(max(2 * self.wait, self.FIRST_WAIT), self.LAST_WAIT)
        self.tried, self.since = None, 0


def load_mark() -> tuple:
    """(wall seconds, the machine's busy CPU seconds, this process's CPU seconds), for
    others_since; Linux's /proc/stat (elsewhere the machine's time is taken to be ours)."""
    t = os.times()
    own = t.user + t.system
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        busy = (sum(v) - v[3] - (v[4] if len(v) > 4 else 0)) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        busy = own
    return clock(), busy, own


def others_since(before: tuple, after: tuple | None = None) -> float:
    """Cores other programs kept busy between two load_marks: the machine's busy time less ours
    (a spinning OpenBLAS worker of ours counts as ours)."""
    after = after or load_mark()
    wall = after[0] - before[0]
    return max(0.0, (after[1] - before[1]) - (after[2] - before[2])) / max(wall, 1e-9)


@functools.cache
def _openblas():
    """numpy's OpenBLAS controller (threadpoolctl), or None where numpy uses another BLAS; looked
    up once (0.6 ms a scan of the loaded libraries), not per compiled network."""
    try:
        import threadpoolctl
        import numpy  # noqa: F401  (loads the library threadpoolctl looks for)
        for lib in threadpoolctl.ThreadpoolController().lib_controllers:
            if lib.internal_api == "openblas":
                return lib
    except Exception:   # threadpoolctl missing or unable to read the library: keep OpenBLAS as it is
        return None
    return None
