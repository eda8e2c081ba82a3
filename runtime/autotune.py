"""GEMM tiles chosen by timing them on the GPU at hand, remembered on disk per GPU model.

cuda_gemm.choose_tile picks a tile from the grid size alone (the largest that still fills the
SMs). Which tile is fastest for a layer also depends on its K, on the implicit im2col's bounds
checks and on the GPU, which nothing here can tell without running it. `tune` times every
candidate of each GEMM problem of a network (cuda_gemm.tile_candidates: the tiles not wider than
the problem, and GEMV for an fc of few rows) on scratch buffers and keeps the fastest.

Results go to cache_dir("autotune")/<GPU name>_<sm_XY>.json, one entry per problem key (a
layer's shape, so ResNet's repeated blocks share one), and are dropped when the kernel generator
(cuda_gemm.py's text) or numba-cuda changes: tuning the same network on the same GPU model
again times nothing. Each candidate is its own kernel: NVVM takes 1.5-7 s per GEMM kernel, so
they compile in kernel_pool's worker processes first (VGG16 at batch 32: 12 problems, about 80
kernels).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from pathlib import Path

import numpy as np

from ..compiler.codegen import cuda_gemm as gemm
from ..compiler.codegen.modules import cache_dir
from ..compiler.errors import NetcError
from .cuda_device import require_cuda, simulator

MIN_TRIAL_MS = 2.0     # launches per timed interval: enough to cover this (event resolution ~0.5 us)
REPEATS = 5            # timed intervals per candidate; the median is kept


def device_identity(cuda) -> tuple[str, str]:
    """(GPU name, "sm_XY"); the simulator is a device of its own (its timings mean nothing)."""
    if simulator():
        return "simulator", "sim"
    dev = cuda.get_current_device()
    name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
    return name, "sm_%d%d" % tuple(dev.compute_capability)


def cache_path(device: str, arch: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", device).strip("-") or "gpu"
    return cache_dir("autotune") / f"{slug}_{arch}.json"


def generator_stamp() -> str:
    """Changes when a tile's kernel could: the generator's source or numba-cuda's version."""
    try:
        from numba_cuda import __version__ as numba_cuda_version
    except ImportError:
        numba_cuda_version = "?"
    text = Path(gemm.__file__).read_bytes() + numba_cuda_version.encode()
    return hashlib.sha256(text).hexdigest()[:16]


def load_cache(path: Path, stamp: str) -> dict:
    """problem key -> {"choice": text, "ms": {choice text: ms}}; {} when missing, unreadable or
    from another generator. Entries are validated, never trusted: the file is data."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("generator") != stamp or not isinstance(data.get("problems"), dict):
        return {}
    return _valid_entries(data["problems"])


def _valid_entries(problems: dict) -> dict:
    out = {}
    for key, entry in problems.items():
        try:
            if gemm.parse_choice(entry["choice"]) not in gemm.tile_candidates(key):
                continue        # not a tile this version would try for the problem
            ms = {str(c): float(v) for c, v in entry["ms"].items()}
        except (NetcError, KeyError, TypeError, AttributeError, ValueError):
            continue
        out[key] = {"choice": entry["choice"], "ms": ms}
    return out


MAX_TILES_BYTES = 16 << 20


def tiles_from_file(path: Path) -> tuple[str, dict, bool]:
    """(GPU name, problem key -> tile or GEMV, whether another kernel generator timed them) from
    a tuning cache copied from a GPU machine: `netc build --target cuda --tiles FILE`."""
    from .files import regular_file
    p = regular_file(Path(path), "tuning file")
    if p.stat().st_size > MAX_TILES_BYTES:
        raise NetcError(f"tuning file {path} is {p.stat().st_size:,} bytes; a tuning cache is far smaller "
                        f"(netc reads up to {MAX_TILES_BYTES:,})")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:     # RecursionError: JSON nested thousands deep
        raise NetcError(f"cannot read tuning file {path}: {type(e).__name__}: {str(e)[:200]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("problems"), dict):
        raise NetcError(f"{path} is not a netc tuning cache (what --tune writes under ~/.cache/netc/autotune/)")
    tiles = {k: gemm.parse_choice(e["choice"]) for k, e in _valid_entries(data["problems"]).items()}
    return str(data.get("device", "?")), tiles, data.get("generator") != generator_stamp()


def save_cache(path: Path, stamp: str, device: str, entries: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"generator": stamp, "device": device, "problems": entries}, indent=1, sort_keys=True))
    os.replace(tmp, path)     # atomic: a concurrent tuner never reads half a file


def event_timer(cuda, stream):
    """ms per launch: median over REPEATS intervals of CUDA events, each interval enough
    launches to cover MIN_TRIAL_MS. In the simulator (no real events) wall time of one launch."""
    def timer(key, choice, launch) -> float:
        if simulator():
            t0 = time.perf_counter()
            launch()
            return (time.perf_counter() - t0) * 1e3
        launch()                      # loads the kernel (compiled by the workers) and warms up
        stream.synchronize()
        reps, times = 1, []
        for r in range(REPEATS + 1):
            e0, e1 = cuda.event(), cuda.event()
            e0.record(stream)
            for _ in range(reps):
                launch()
            e1.record(stream)
            e1.synchronize()
            ms = e0.elapsed_time(e1) / reps
            if r == 0:                # calibration interval, not kept
                reps = max(1, min(200, math.ceil(MIN_TRIAL_MS / max(ms, 1e-4))))
            else:
                times.append(ms)
        return float(np.median(times))
    return timer


def tune(problems, jobs: int | None = None, timer=None, log=None) -> tuple[dict, list[dict]]:
    """(problem key -> tile or GEMV, report rows) for GEMM problem keys (cuda.Program.gemm_problems:
    key -> layers). Problems in the cache are not timed again. `timer(key, choice text, launch)
    -> ms per launch` replaces the CUDA-event timer (tests); `log(text)` hears progress."""
    from .executor import load_module
    from .kernel_pool import warm_cache
    cuda = require_cuda()
    layers = problems if isinstance(problems, dict) else {k: [] for k in problems}
    device, arch = device_identity(cuda)
    path, stamp = cache_path(device, arch), generator_stamp()
    entries = load_cache(path, stamp)
    todo = [k for k in layers if k not in entries]
    if todo:
        # problem -> [(choice, kernel, arena floats, param floats)]
        trials = {k: [(c, *gemm.trial_kernel(k, f"t{n}_{j}", c)) for j, c in enumerate(gemm.tile_candidates(k))]
                  for n, k in enumerate(todo)}
        kernels = {ks.name: ks.source for runs in trials.values() for _, ks, _, _ in runs}
        source = gemm.KERNEL_HEADER + "\n" + "\n\n".join(kernels.values())
        module = load_module(source, target="cuda")
        t0 = time.perf_counter()
        if not simulator():
            warm_cache(source, kernels, jobs)
        if log:
            log(f"autotune: {len(kernels)} candidate kernels for {len(todo)} GEMM problem(s) compiled "
                f"in {time.perf_counter() - t0:.1f} s")
        stream = cuda.stream()
        rng = np.random.default_rng(0)
        sizes = [(a, p) for runs in trials.values() for _, _, a, p in runs]
        arena = cuda.to_device(rng.standard_normal(max(a for a, _ in sizes), np.float32), stream=stream)
        params = cuda.to_device(0.05 * rng.standard_normal(max(p for _, p in sizes), np.float32), stream=stream)
        time_one = timer or event_timer(cuda, stream)
        for key, runs in trials.items():
            ms = {}
            for choice, ks, _, _ in runs:
                launch = getattr(module, ks.name)[ks.grid, ks.block, stream]
                text = gemm.choice_text(choice)
                try:
                    ms[text] = float(time_one(key, text, lambda: launch(arena, params)))
                except Exception as e:  # noqa: BLE001 - a candidate that cannot launch is not chosen
                    if log:
                        log(f"autotune: {key} tile {text} failed: {type(e).__name__}: {e}")
            if not ms:
                raise NetcError(f"autotune: no tile of GEMM problem {key} could run")
            entries[key] = {"choice": min(ms, key=ms.get), "ms": ms}
        stream.synchronize()
        save_cache(path, stamp, device, entries)
    choices, report = {}, []
    for key in layers:
        entry = entries[key]
        default = gemm.choice_text(gemm.default_choice(key))
        choices[key] = gemm.parse_choice(entry["choice"])
        report.append({"problem": key, "layers": list(layers[key]), "tile": entry["choice"], "default": default,
                       "ms": entry["ms"].get(entry["choice"]), "default_ms": entry["ms"].get(default),
                       "measured": key in todo})
    if log:
        changed = sum(r["tile"] != r["default"] for r in report)
        log(f"autotune: {len(layers)} GEMM problem(s) on {device} ({len(todo)} timed, "
            f"{len(layers) - len(todo)} from {path}); {changed} differ from the default tile")
    return choices, report
