"""Predictions over many images: `Predictor`, the picklable per-worker model that Ray Data's
`map_batches` (and Spark's `predict_batch_udf`, with one line of adapter) calls on batches of
rows, and the row columns both the one-machine run and the cluster run write (runtime/rows.py).

A row per image: path, top1_index, top1_name, top1_score ... topK_*, error ("" when it was
read), and one array column per --blobs layer. An image that cannot be read gets its error and
empty predictions; the batch goes on.
"""
from __future__ import annotations

import numpy as np

from ..compiler.errors import NetcError, plain


class Predictor:
    """Compiles `model` once per process, at the first batch (so the object pickles as its
    settings: Ray builds one per actor, and numba's kernel cache makes a second start fast).

    `__call__(batch)` takes {"path": [...], and "bytes": encoded files (ray.data.read_binary_files)
    or "image": decoded HxWxC uint8 arrays (ray.data.read_images)} and returns the row columns as
    numpy arrays; `predict(paths)` does the same for files on this machine."""

    def __init__(self, model: str, weights: str | None = None, target: str = "cpu", batch: int = 8, top: int = 5,
                 blobs=(), labels: list[str] | None = None, preprocess: dict | None = None, seed: int = 0):
        self.settings = dict(model=model, weights=weights, target=target, batch=batch, top=top, blobs=tuple(blobs),
                             labels=labels, preprocess=dict(preprocess or {}), seed=seed)
        self._ready = None

    def __getstate__(self):
        return {"settings": self.settings}

    def __setstate__(self, state):
        self.settings, self._ready = state["settings"], None

    def _build(self):
        """(executable, decoder, labels, the scores' blob), compiled on first use."""
        if self._ready is None:
            import dataclasses
            from ..compiler.network import load
            from .images import Decoder, Preprocess
            s = self.settings
            net = load(s["model"])
            ex = net.compile(s["target"], weights=s["weights"], batch=s["batch"], seed=s["seed"],
                             blobs=list(s["blobs"]))
            if len(ex.required_inputs) != 1:
                raise NetcError(f"this network has {len(ex.required_inputs)} inputs; predictions feed one image")
            if hasattr(ex.target, "blas"):
                ex.target.blas.pinned = True   # same sgemm threads for every batch: same bits on --resume
            name = ex.required_inputs[0]
            attrs = net.graph.nodes[ex.inputs[name][0]]["attrs"]
            prep = dataclasses.replace(Preprocess.of(attrs), **s["preprocess"])
            decoder = Decoder(ex.input_shape(name), prep)
            out = ex.outputs[-1]
            key = ex.blob_key[out]
            classes = int(np.prod(net.graph.nodes[key[0]]["shapes"][key[1]][1:]))
            labels = s["labels"]
            if labels is None and classes == 1000:
                from .images import imagenet_classes
                labels = imagenet_classes()
            self._ready = (ex, decoder, labels or [], out)
        return self._ready

    @property
    def executable(self):
        return self._build()[0]

    @property
    def decoder(self):
        return self._build()[1]

    def columns(self, paths: list[str], x: np.ndarray, errors: list) -> dict[str, np.ndarray]:
        """The row columns for `paths`, their decoded items x (rows of failed images ignored)
        and per-image errors (None when read)."""
        ex, _, labels, out = self._build()
        s = self.settings
        name = ex.required_inputs[0]
        batch = ex.input_shape(name)[0]
        n = len(paths)
        ok = np.array([e is None for e in errors], bool)
        scores, blobs = None, {b: None for b in s["blobs"]}
        for start in range(0, n, batch):
            chunk = x[start:start + batch]
            if len(chunk) < batch:
                chunk = np.concatenate([chunk, np.zeros((batch - len(chunk), *chunk.shape[1:]), np.float32)])
            got = ex.run({name: chunk}, list(s["blobs"]))
            m = min(batch, n - start)
            y = got[out].reshape(batch, -1)[:m]
            scores = y if scores is None else np.concatenate([scores, y])
            for b in blobs:
                v = got[b].reshape(batch, -1)[:m]
                blobs[b] = v if blobs[b] is None else np.concatenate([blobs[b], v])
        k = min(s["top"], scores.shape[1])
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        cols = {"path": np.array(paths, dtype=object)}
        for j in range(k):
            idx = order[:, j]
            cols[f"top{j + 1}_index"] = np.where(ok, idx, -1).astype(np.int64)
            cols[f"top{j + 1}_name"] = np.array([labels[i] if e and i < len(labels) else "" for i, e in zip(idx, ok)],
                                                dtype=object)
            cols[f"top{j + 1}_score"] = np.where(ok, scores[np.arange(n), idx], np.nan).astype(np.float32)
        cols["error"] = np.array(["" if e is None else e for e in errors], dtype=object)
        for b, v in blobs.items():
            cols[b] = np.where(ok[:, None], v, np.nan).astype(np.float32)
        return cols

    def _decode(self, path: str, data=None, array=None):
        from .images import from_array
        try:
            if array is not None:
                return from_array(self.decoder, path, array), None
            return self.decoder(path, data), None
        except NetcError as e:
            return None, plain(e.message)
        except Exception as e:       # noqa: BLE001 -- any decoder failure is that image's error
            return None, f"cannot read image {plain(path)}: {e}"

    def __call__(self, batch: dict) -> dict[str, np.ndarray]:
        if "paths" in batch:
            return self._chunks(batch["paths"])
        paths = [str(p) for p in batch["path"]]
        shape = self.executable.input_shape(self.executable.required_inputs[0])[1:]
        x = np.zeros((len(paths), *shape), np.float32)
        errors = []
        source = "bytes" if "bytes" in batch else "image"
        for k, p in enumerate(paths):
            v = batch[source][k]
            item, error = self._decode(p, data=bytes(v)) if source == "bytes" else self._decode(p, array=v)
            if item is not None:
                x[k] = item
            errors.append(error)
        return self.columns(paths, x, errors)


    def _chunks(self, chunks) -> dict[str, np.ndarray]:
        """Rows for whole batches of paths read here (netc run --ray): each chunk is run as the
        one-machine run runs it, decoded on threads ahead of the compute."""
        from .folder import batches
        ex = self.executable
        shape = ex.input_shape(ex.required_inputs[0])
        paths = [str(p) for chunk in chunks for p in chunk]
        if any(len(chunk) != shape[0] for chunk in list(chunks)[:-1]):
            raise NetcError(f"each row of paths must hold a whole batch of {shape[0]}")
        parts = [self.columns(b.paths, b.x[:len(b.paths)], b.errors)
                 for b in batches(paths, self.decoder, shape[0], shape[1:])]
        return {k: np.concatenate([c[k] for c in parts]) for k in parts[0]}


def column_names(net, top: int, blobs=()) -> list[str]:
    """The columns Predictor.columns writes for the analyzed `net` (its last layer scores)."""
    g = net.graph
    last = [n for n in g.nodes if g.nodes[n]["forward"]][-1]
    classes = int(np.prod(g.nodes[last]["shapes"][0][1:]))
    tops = [f"top{j + 1}_{kind}" for j in range(min(top, classes)) for kind in ("index", "name", "score")]
    return ["path", *tops, "error", *blobs]


def chunks_to_do(paths: list[str], done: set, batch: int) -> list[list[str]]:
    """The batches of `paths` (cut at multiples of `batch` of the whole list, as the first run
    cut them) holding an image not in `done`: a resumed image meets the kernels in the batch and
    position it would have had, so its row is the uninterrupted run's."""
    cut = [paths[k:k + batch] for k in range(0, len(paths), batch)]
    return [c for c in cut if any(p not in done for p in c)]


def not_done(cols: dict, done: set) -> dict:
    keep = np.array([p not in done for p in cols["path"]], bool)
    return cols if keep.all() else {k: v[keep] for k, v in cols.items()}


def predict_folder(predictor: Predictor, paths: list[str], rows, progress=None, workers: int | None = None) -> dict:
    """Every path not yet in `rows` through the network on this machine, decoding on threads
    ahead of the compute; {"images", "failed", "seconds"} of this run."""
    import time
    from .folder import batches
    ex = predictor.executable
    shape = ex.input_shape(ex.required_inputs[0])
    todo = [p for c in chunks_to_do(paths, rows.done, shape[0]) for p in c]
    images = failed = 0
    start = time.perf_counter()
    for b in batches(todo, predictor.decoder, shape[0], shape[1:], workers):
        cols = not_done(predictor.columns(b.paths, b.x[:len(b.paths)], b.errors), rows.done)
        rows.write(cols)
        images += len(cols["path"])
        failed += sum(1 for e in cols["error"] if e)
        if progress is not None:
            progress.tick(len(cols["path"]))
    return {"images": images, "failed": failed, "seconds": time.perf_counter() - start}

