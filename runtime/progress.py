"""Progress for the steps that can take minutes without a word: a network's first run (numba
compiles each kernel at its first call, 15-60 s cold for the larger zoo networks), the CUDA
target's compile workers (ResNet-50: 74 s cold) and runs in the CUDA simulator.

The command line turns it on (`enable`) when stderr is a terminal; a library caller gets no
output unless it asks. A bar appears only once a step has run for `DELAY` seconds, so the fast
(cached) case prints nothing, and it is removed when the step ends.
"""
from __future__ import annotations

import sys
import time

DELAY = 1.0
_enabled = False


def enable(on: bool = True) -> None:
    global _enabled
    _enabled = on


def enabled() -> bool:
    return _enabled


class Ticker:
    """`tick()` after each of `total` units; `close()` at the end (or use it as a context)."""

    def __init__(self, total: int, what: str, unit: str | None = None):
        self.total, self.what, self.done, self.unit = total, what, 0, unit
        self.start = time.perf_counter()
        self.bar = self.task = None

    def tick(self, n: int = 1) -> None:
        self.done += n
        if self.bar is None:
            if time.perf_counter() - self.start < DELAY:
                return
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)
            columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
            if self.unit:       # folders: the rate and what is left
                columns += [TextColumn("{task.fields[rate]}"), TextColumn("ETA"), TimeRemainingColumn()]
            self.bar = Progress(*columns, console=Console(file=sys.stderr), transient=True,
                                redirect_stdout=False, redirect_stderr=False)
            self.bar.start()
            self.task = self.bar.add_task(self.what, total=self.total, rate="")
        rate = self.done / max(time.perf_counter() - self.start, 1e-9)
        self.bar.update(self.task, completed=self.done, rate=f"{rate:.1f} {self.unit}/s" if self.unit else "")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def __enter__(self) -> "Ticker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def ticker(total: int, what: str, unit: str | None = None) -> Ticker | None:
    """A Ticker when progress is on, else None (callers test it: nothing to do per step);
    with `unit` (e.g. "images") it shows the rate and an ETA."""
    return Ticker(total, what, unit) if _enabled and total > 0 else None
