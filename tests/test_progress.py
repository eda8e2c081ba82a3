"""Progress on long silent steps: a first run's kernel compiles, simulated runs, compile workers."""
from __future__ import annotations

import io

import numpy as np
import pytest

from netc.compiler.network import loads
from netc.runtime import progress

NET = "input data: [1, 3, 8, 8]\nConvolution(num_output=4, kernel_size=3)\nReLU\nPooling(pool=MAX, kernel_size=2, stride=2)\nInnerProduct(num_output=5)\n"


@pytest.fixture
def ticks(monkeypatch):
    seen = []

    class Recording(progress.Ticker):
        def tick(self, n=1):
            seen.append((self.what, self.total))
            super().tick(n)
    monkeypatch.setattr(progress, "Ticker", Recording)
    monkeypatch.setattr(progress, "DELAY", 0.0)
    progress.enable()
    yield seen
    progress.enable(False)


def test_the_first_run_shows_its_steps_and_later_runs_do_not(ticks, monkeypatch):
    import rich.console
    monkeypatch.setattr(rich.console.Console, "is_terminal", property(lambda self: True))
    ex = loads(NET, path="p.net").compile()
    x = np.zeros((1, 3, 8, 8), np.float32)
    ex.run({"data": x})
    steps = len(ex.program.steps)
    assert ticks == [("first run: compiling kernels", steps)] * steps
    ex.run({"data": x}, blobs=ex.outputs)
    assert len(ticks) == steps


def test_progress_is_off_unless_enabled():
    progress.enable(False)
    assert progress.ticker(10, "x") is None
    progress.enable()
    try:
        assert progress.ticker(0, "x") is None and isinstance(progress.ticker(3, "x"), progress.Ticker)
    finally:
        progress.enable(False)


def test_a_bar_is_drawn_on_a_terminal_and_removed(monkeypatch):
    import rich.console
    out = io.StringIO()
    monkeypatch.setattr(progress.sys, "stderr", out)
    monkeypatch.setattr(rich.console.Console, "is_terminal", property(lambda self: True))
    monkeypatch.setattr(progress, "DELAY", 0.0)
    with progress.Ticker(4, "compiling PTX") as t:
        for _ in range(4):
            t.tick()
    text = out.getvalue()
    assert "compiling PTX" in text and "4/4" in text


def test_the_wait_for_compile_workers_counts_their_items(tmp_path, monkeypatch):
    """Workers append a byte per item to done{w}; the wait turns those into ticks."""
    import subprocess
    import sys
    from netc.runtime import kernel_pool
    seen = []

    class Recording(progress.Ticker):
        def tick(self, n=1):
            super().tick(n)
            seen.append(self.done)
    monkeypatch.setattr(progress, "Ticker", Recording)
    progress.enable()
    try:
        code = "import time, sys\nfor _ in range(3):\n    time.sleep(0.3)\n    open(sys.argv[1], 'ab').write(b'.')\n"
        procs = [([0, 1, 2], w, subprocess.Popen([sys.executable, "-c", code, str(tmp_path / f"done{w}")]))
                 for w in range(2)]
        kernel_pool._wait(procs, tmp_path, 6, "compiling CUDA kernels")
    finally:
        progress.enable(False)
    assert seen and seen[-1] <= 6 and seen == sorted(seen)
    assert all(p.returncode == 0 for *_, p in procs)
