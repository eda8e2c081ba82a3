"""Explain methods over a folder of images: the patches that excite a layer's units most
(Girshick et al. 2014), cropped by netc's receptive-field pass, and a t-SNE map of a layer's
codes (van der Maaten & Hinton 2008; Karpathy's CNN-codes pictures) by scikit-learn."""
from __future__ import annotations

import numpy as np

from ..compiler.errors import NetcError
from .folder import batches

MAX_UNITS = 64
MIN_TSNE = 4          # scikit-learn's perplexity must stay below the sample count


def _walk(ex, blob: str, paths: list[str], decode, errors: dict, progress=None):
    """(indices of the batch's readable images, the blob for them) per batch; the unreadable
    ones go into `errors` by index."""
    name = ex.required_inputs[0]
    shape = ex.input_shape(name)
    start = 0
    for b in batches(paths, decode, shape[0], shape[1:]):
        got = ex.run({name: b.x}, blobs=[blob] if blob not in ex.outputs else ())[blob]
        ok = [k for k, e in enumerate(b.errors) if e is None]
        errors.update({start + k: e for k, e in enumerate(b.errors) if e is not None})
        yield [start + k for k in ok], got[ok]
        start += len(b.paths)
        if progress is not None:
            progress.tick(len(b.paths))


def field_box(ex, blob: str, y: int, x: int, hw: tuple) -> tuple[int, int, int, int]:
    """(top, left, bottom, right), bottom/right exclusive: the input pixels unit (y, x) of
    `blob` sees, from the receptive-field pass, clipped to the input."""
    d = ex.network.graph.nodes[ex.blob_key[blob][0]]
    if d.get("rf_start") is None:
        raise NetcError(f'"{blob}" comes after a resampling layer: its units have no single input box')
    (ry, jy), (rx, jx) = d["rf"]
    sy, sx = d["rf_start"]
    top, left = int(np.floor(sy + y * jy)), int(np.floor(sx + x * jx))
    return max(top, 0), max(left, 0), min(top + int(ry), hw[0]), min(left + int(rx), hw[1])


def top_patches(ex, blob: str, paths: list[str], decode, k: int = 9, units=None, progress=None):
    """[U, k, 6] rows (image index, activation, top, left, bottom, right): for each unit
    (channel) of `blob`, the k images whose strongest response is largest, where it is, and the
    input box that position sees; and {image index: error} of the images that were unreadable."""
    key = ex.blob_key[blob]
    shape = ex.network.graph.nodes[key[0]]["shapes"][key[1]]
    channels = shape[1]
    units = list(range(min(channels, 8))) if units is None else list(units)
    if not units or len(units) > MAX_UNITS:
        raise NetcError(f"top-patches shows 1 to {MAX_UNITS} units; asked for {len(units)}")
    bad = [u for u in units if not 0 <= u < channels]
    if bad:
        raise NetcError(f"unit {bad[0]} is out of range: {blob} has {channels} channels (0 to {channels - 1})")
    hw = ex.input_shape(ex.required_inputs[0])[2:]
    best = np.full((len(units), 0), -np.inf)
    where = np.zeros((len(units), 0, 3), np.int64)         # image, y, x
    errors = {}
    for images, a in _walk(ex, blob, paths, decode, errors, progress):
        if not images:
            continue
        a = a.reshape(len(images), channels, -1)[:, units]        # [n, U, positions]
        pos = a.argmax(axis=2)                                    # first maximum, as numpy breaks ties
        val = np.take_along_axis(a, pos[..., None], 2)[..., 0].T  # [U, n]
        w = a.shape[2] if len(shape) < 4 else shape[3]
        ys, xs = (pos // w, pos % w) if len(shape) == 4 else (pos * 0, pos * 0)
        new = np.stack([np.broadcast_to(np.array(images)[:, None], pos.shape), ys, xs], -1).transpose(1, 0, 2)
        best, where = np.concatenate([best, val], 1), np.concatenate([where, new], 1)
        order = np.argsort(-best, axis=1, kind="stable")[:, :k]
        best, where = np.take_along_axis(best, order, 1), np.take_along_axis(where, order[..., None], 1)
    if best.shape[1] == 0:
        raise NetcError(f"none of the {len(paths)} images could be read (first: {next(iter(errors.values()))})")
    rows = np.zeros((len(units), best.shape[1], 6))
    for u in range(len(units)):
        for j in range(best.shape[1]):
            image, y, x = where[u, j]
            box = field_box(ex, blob, int(y), int(x), hw) if len(shape) == 4 else (0, 0, *hw)
            rows[u, j] = (image, best[u, j], *box)
    return rows, errors


def codes(ex, blob: str, paths: list[str], decode, progress=None):
    """([n, D] codes of the readable images, their indices in `paths`, {index: error})."""
    got, index, errors = [], [], {}
    for images, a in _walk(ex, blob, paths, decode, errors, progress):
        got.append(a.reshape(len(images), -1).astype(np.float64))
        index += images
    width = int(np.prod(ex.network.graph.nodes[ex.blob_key[blob][0]]["shapes"][ex.blob_key[blob][1]][1:]))
    return (np.concatenate(got) if got else np.empty((0, width))), index, errors


def tsne(codes_: np.ndarray, seed: int = 0) -> np.ndarray:
    """[n, 2]: scikit-learn's t-SNE of the codes (PCA start, perplexity up to 30)."""
    n = len(codes_)
    if n < MIN_TSNE:
        raise NetcError(f"t-SNE needs at least {MIN_TSNE} readable images; got {n}")
    from sklearn.manifold import TSNE
    perplexity = float(min(30.0, (n - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(codes_)
