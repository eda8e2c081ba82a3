"""The folder job on a Ray cluster: ray.data reads the files' bytes, `map_batches` runs a pool
of `Predictor` actors (each compiles once; one GPU each with the CUDA target), and the rows come
back to this process in path order, written by the same writer as the one-machine run.

The dataset holds whole batches of paths, which the actors read and decode themselves (so the
images must be at the same path on every node, as for ray.data's local paths): every worker
decodes exactly as the one-machine run does, a corrupt image becomes that row's error instead of
failing the job, and no batch is padded. `ray` is an optional extra: pip install "netc[ray]".
"""
from __future__ import annotations

import os
import time

from ..compiler.errors import NetcError

CHUNKS_PER_CALL = 4  # batches per actor call: decoding runs ahead within them


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
    from .predict import chunks_to_do, not_done
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
        # sgemm's threads: the actor's share of the cores (numba's loops choose as on one machine:
        # NUMBA_NUM_THREADS would switch them to prange loops, which round differently)
        threads = max(1, cpus // actors)
        env = {} if threads == cpus else {"OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)}
        # One dataset row per batch of paths, read and decoded by the actor: each image meets
        # the kernels in the batch and position it has in the one-machine run (Ray's own
        # batches follow its blocks: 10-row blocks at batch 8 become 8 + 2, the 2 padded out).
        chunks = [{"paths": c} for c in chunks_to_do(paths, rows.done, predictor.settings["batch"])]
        ds = ray.data.from_items(chunks, override_num_blocks=max(1, min(len(chunks), 4 * actors)))
        per_actor = 0 if gpu else max(1, cpus // actors)
        ds = ds.map_batches(type(predictor), fn_constructor_kwargs=predictor.settings, batch_size=CHUNKS_PER_CALL,
                            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors),
                            num_cpus=per_actor, num_gpus=1 if gpu else 0, runtime_env={"env_vars": env})
        images = failed = 0
        for cols in _rows_of(ray, ds):
            cols = not_done({k: cols[k] for k in _order(cols)}, rows.done)
            rows.write(cols)
            images += len(cols["path"])
            failed += int(sum(1 for e in cols["error"] if e))
            if progress is not None:
                progress.tick(len(cols["path"]))
    finally:
        if started_here:
            ray.shutdown()
    return {"images": images, "failed": failed, "seconds": time.perf_counter() - start, "actors": actors}


def _rows_of(ray, ds):
    """The job's batches of rows; a worker's failure (a model that does not compile there, a
    missing file system) as one clean error naming its cause."""
    try:
        yield from ds.iter_batches(batch_size=None, batch_format="numpy")
    except ray.exceptions.RayError as e:
        cause = getattr(e, "cause", None) or e
        lines = [line for line in str(cause).strip().splitlines() if line.strip()]
        raise NetcError(f"the Ray job failed: {lines[-1] if lines else type(cause).__name__}") from None


def _order(cols: dict) -> list[str]:
    """The Predictor's column order (Ray keeps it, but a dict's order is not promised)."""
    import re
    names = list(cols)
    kinds = ("index", "name", "score")
    found = {k: re.fullmatch(r"top(\d+)_(index|name|score)", k) for k in names}
    tops = sorted((k for k, m in found.items() if m), key=lambda k: (int(found[k][1]), kinds.index(found[k][2])))
    rest = [k for k in names if k not in tops and k not in ("path", "error")]
    return ["path", *tops, "error", *rest]
