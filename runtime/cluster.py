"""The folder job on a Ray cluster: ray.data reads the files' bytes, `map_batches` runs a pool
of `Predictor` actors (each compiles once; one GPU each with the CUDA target), and the rows come
back to this process in path order, written by the same writer as the one-machine run.

The files are read as bytes (read_binary_files) rather than decoded by read_images, so every
worker decodes exactly as the one-machine run does and a corrupt image becomes that row's error
instead of failing the job. `ray` is an optional extra: pip install "netc[ray]".
"""
from __future__ import annotations

import os
import time

from ..compiler.errors import NetcError

READ_CPUS = 0.1      # per read task


def ray_module():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise NetcError('--ray needs Ray Data: pip install "netc[ray]" (or pip install "ray[data]")') from None
    return ray


def predict_on_ray(predictor, paths: list[str], rows, address: str | None = None, actors: int | None = None,
                   gpu: bool = False, progress=None) -> dict:
    """The rows of every path not yet in `rows`, computed on the cluster at `address` (None:
    a local one on this machine's cores); {"images", "failed", "seconds", "actors"}."""
    ray = ray_module()
    todo = [p for p in paths if p not in rows.done]
    start = time.perf_counter()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 **({} if address else {"num_cpus": os.cpu_count()}))
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        gpus = int(ray.cluster_resources().get("GPU", 0))
        if gpu and not gpus:
            raise NetcError("--gpu: the Ray cluster has no GPU")
        actors = actors or (gpus if gpu else max(1, cpus))
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True         # rows in path order, as on one machine
        ctx.enable_progress_bars = False
        threads = str(max(1, cpus // actors))
        env = {"NUMBA_NUM_THREADS": threads, "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}
        # Reading bytes is light; the actors must leave it some CPU or the pool, holding every
        # core, waits forever for input no task can be scheduled to read.
        ds = ray.data.read_binary_files(todo, include_paths=True, num_cpus=READ_CPUS)
        per_actor = 0 if gpu else cpus // actors if cpus // actors * actors <= cpus - READ_CPUS else 1 - READ_CPUS
        ds = ds.map_batches(type(predictor), fn_constructor_kwargs=predictor.settings,
                            batch_size=predictor.settings["batch"], batch_format="numpy", concurrency=actors,
                            num_cpus=per_actor, num_gpus=1 if gpu else 0, runtime_env={"env_vars": env})
        failed = 0
        for cols in ds.iter_batches(batch_size=None, batch_format="numpy"):
            cols = {k: cols[k] for k in _order(cols)}
            rows.write(cols)
            failed += int(sum(1 for e in cols["error"] if e))
            if progress is not None:
                progress.tick(len(cols["path"]))
    finally:
        if started_here:
            ray.shutdown()
    return {"images": len(todo), "failed": failed, "seconds": time.perf_counter() - start, "actors": actors}


def _order(cols: dict) -> list[str]:
    """The Predictor's column order (Ray keeps it, but a dict's order is not promised)."""
    import re
    names = list(cols)
    kinds = ("index", "name", "score")
    found = {k: re.fullmatch(r"top(\d+)_(index|name|score)", k) for k in names}
    tops = sorted((k for k, m in found.items() if m), key=lambda k: (int(found[k][1]), kinds.index(found[k][2])))
    rest = [k for k in names if k not in tops and k not in ("path", "error")]
    return ["path", *tops, "error", *rest]
