"""Seeded uniform float32 fills for netc's random weights, fast enough not to dominate start-up.

numpy's generators make about 40 M float32 values a second here, so VGG-16's 138 M random
weights took 2.3 s of a 3.1 s warm `netc run vgg16`. This fill is counter based (splitmix64 of
key + index, the finalizer of Steele et al., "Fast splittable pseudorandom number generators",
OOPSLA 2014), so every element is independent of the others: numba fills in parallel, and the
values do not depend on the thread count. The 24 high bits of each hash give a uniform float32.
"""
from __future__ import annotations

import hashlib

import numba as nb
import numpy as np

from .threads import all_cores, configure_numba

@nb.njit(cache=True, parallel=True, fastmath=True)
def _fill(out, key, lo, hi):
    scale = np.float32((hi - lo) * 2.0 ** -24)
    lo32 = np.float32(lo)
    for j in nb.prange(out.size):
        z = np.uint64(key) + np.uint64(j + 1) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
        out[j] = np.float32(z >> np.uint64(40)) * scale + lo32


def stream_key(seed: int, stream: int) -> int:
    """A 64-bit key per (seed, stream number): distinct arrays get unrelated streams."""
    digest = hashlib.blake2b(f"{seed}\0{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def uniform(shape, lo: float, hi: float, seed: int, stream: int) -> np.ndarray:
    """float32 array of `shape`, uniform in [lo, hi), the same for the same (seed, stream)."""
    configure_numba()
    out = np.empty(int(np.prod(shape, dtype=np.int64)), np.float32)
    if out.size:
        with all_cores():
            _fill(out, stream_key(seed, stream), float(lo), float(hi))
    return out.reshape(shape)
