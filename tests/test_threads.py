"""runtime/threads.BlasThreads: OpenBLAS's thread count follows the machine's load, and only then.

The decision logic runs on a scripted clock and scripted load readings (what a pass costs on each
count, what other programs use), so each case is exact; the load reading itself is checked
against real spinning processes."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from netc.runtime import threads


class FakeBlas:
    def __init__(self, n):
        self.n, self.sets = n, 0

    def get_num_threads(self):
        return self.n

    def set_num_threads(self, n):
        self.n, self.sets = n, self.sets + 1


class Machine:
    """A clock that a pass advances by its cost on the current thread count, and the cores
    other programs use."""

    def __init__(self, monkeypatch, cost, others=0.0):
        self.now, self.cost, self.others = 0.0, dict(cost), others
        self.blas = FakeBlas(2)
        monkeypatch.setattr(threads, "_openblas", lambda: self.blas)
        monkeypatch.setattr(threads, "clock", lambda: self.now)
        self.chooser = threads.BlasThreads()
        self.chooser.pinned = False     # the decision logic, also where /proc/stat is missing
        self.counts = []

        def read(chooser=self.chooser):
            chooser.mark, chooser.others = (self.now, 0, 0), self.others
        monkeypatch.setattr(self.chooser, "_read_load", read)

    def passes(self, k):
        for _ in range(k):
            self.chooser.begin()
            self.counts.append(self.blas.n)
            self.now += self.cost[self.blas.n]
            self.chooser.end()
        return self.counts[-k:]


def test_quiet_machine_never_changes_the_count(monkeypatch):
    """Even where one thread would be faster: without other programs there is no look, so every
    pass rounds the same way."""
    m = Machine(monkeypatch, {2: 0.05, 1: 0.01}, others=0.1)
    assert set(m.passes(200)) == {2}
    assert m.blas.sets == 0


def test_busy_machine_moves_to_one_thread_when_it_is_faster(monkeypatch):
    m = Machine(monkeypatch, {2: 0.40, 1: 0.24}, others=1.5)
    seen = m.passes(40)
    first_one = seen.index(1)
    assert first_one <= 5                        # 3 passes to know the current count, then the look
    assert all(c == 1 for c in seen[first_one:first_one + 15])
    # a look back at 2 threads every 16 passes, then every 32, 64 ... while it keeps losing
    looks = [k for k in range(first_one, len(seen)) if seen[k] == 2]
    assert looks and looks[0] - first_one >= 16
    assert m.chooser.wait == 32


def test_busy_machine_keeps_all_threads_when_they_stay_faster(monkeypatch):
    m = Machine(monkeypatch, {2: 0.10, 1: 0.16}, others=1.0)
    seen = m.passes(30)
    assert 1 in seen and seen[-1] == 2 and m.chooser.count == 2


def test_back_to_all_threads_when_the_others_stop(monkeypatch):
    m = Machine(monkeypatch, {2: 0.40, 1: 0.24}, others=1.5)
    m.passes(20)
    assert m.chooser.count == 1
    m.others, m.cost = 0.0, {2: 0.10, 1: 0.17}
    seen = m.passes(10)
    assert seen[-1] == 2 and m.chooser.count == 2
    assert seen.index(2) <= 4   # the reading, 3 passes timed under the new load, then the look (not the scheduled one)


def test_pinned_chooser_never_touches_openblas(monkeypatch):
    m = Machine(monkeypatch, {2: 0.40, 1: 0.24}, others=1.5)
    m.chooser.pinned = True
    assert set(m.passes(50)) == {2} and m.blas.sets == 0


def test_one_thread_from_the_start_means_nothing_to_choose(monkeypatch):
    blas = FakeBlas(1)
    monkeypatch.setattr(threads, "_openblas", lambda: blas)
    assert threads.BlasThreads().pinned


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/stat")
def test_load_reading_sees_a_spinning_process_and_not_this_ones_work():
    chooser = threads.BlasThreads.__new__(threads.BlasThreads)
    chooser.mark, chooser.others = None, 0.0

    def spin_here(seconds):                      # this process's own CPU time: must not count
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass
    chooser._read_load()
    spin_here(0.5)
    chooser._read_load()
    alone = chooser.others
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        chooser._read_load()
        time.sleep(0.6)
        chooser._read_load()
    finally:
        spinner.kill()
        spinner.wait()
    assert alone < 0.5 <= chooser.others <= 1.2


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/stat")
def test_bench_says_when_other_programs_hold_the_cores_and_its_profile_adds_up():
    import netc
    from netc.runtime.bench import bench
    net = netc.load("squeezenet1_1")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        busy = bench(net, iters=15)
    finally:
        spinner.kill()
        spinner.wait()
    quiet = bench(net, iters=15)
    # a spinner is a whole core more than whatever else the machine runs (in a full suite, the
    # tail of an earlier test's subprocesses)
    assert busy["loaded"] and busy["other_programs_cores"] >= quiet["other_programs_cores"] + 0.5
    # the step medians make up the profiled pass (each step is waited for, nothing is left out)
    assert quiet["profile_steps_ms"] == pytest.approx(quiet["profile_pass_ms"], rel=0.25)
