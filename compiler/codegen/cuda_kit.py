"""Source-text helpers for CUDA kernel templates (numba-cuda): float32 constants, activation
lines and int32/uint32 index math, shared by the layers' `lower_cuda` (compiler/layers/*.py) and
the CUDA Lowering (compiler/codegen/cuda.py), and the constants and launch record both use.

The kit of the CUDA target: layer modules import it (inside their methods), never cuda.py; it
never imports compiler.layers."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import NetcError
from .dialect import Dialect

BLOCK = 256                   # threads per block of the one-thread-per-output kernels
SOFTMAX_BLOCK_MIN = 128       # axis length from which a softmax row gets a block of its own


@dataclass
class Launch:
    """One kernel launch of a step: kernel[grid, block, stream, shared_bytes](A, P)."""
    kernel: str
    grid: tuple
    block: tuple
    shared_bytes: int = 0


def f32(x: float) -> str:
    x = float(x)
    if x != x:
        raise NetcError("NaN constant in a layer parameter")
    if math.isinf(x):
        return "float32(math.inf)" if x > 0 else "float32(-math.inf)"
    return f"float32({x!r})"


def i(x) -> str:
    return repr(int(x))


ZERO, ONE = "float32(0.0)", "float32(1.0)"


CUDA = Dialect(f32, ZERO, ONE, "math", "math.pow(v, {p})", "math.exp")


# Index math. numba types Python ints and cuda.grid(1) as int64: signed 64-bit index math costs
# wraparound checks, and floor division/modulo on signed values a correction sequence on every
# access (KERNELS.md). The templates wrap each index in int32(...) (LLVM then computes it in 32
# bits), divide and take remainders of non-negative values as uint32, and subscript with uint32
# (no negative-index wraparound). Lowering.index_math drops these casts, back to int64, when an
# offset can pass the int32 range.
def ix(e) -> str:
    """An int32 index expression."""
    return f"int32({e})"


def ux(*terms) -> str:
    """A subscript: the sum of `terms`, none ever negative. Each term is a uint32 and the sum is
    taken in 64 bits, where it cannot wrap: constant parts then fold into the load's address
    (a uint32 sum could wrap, so every access would need its own 64-bit address arithmetic)."""
    return " + ".join(f"uint32({t})" for t in terms)


def udiv(a, c) -> str:
    """a // c for a >= 0, c > 0 (uint32 division by a constant: a multiply-high, no sign fix-up)."""
    return f"int32(uint32({a}) // uint32({c}))"


def umod(a, c) -> str:
    """a % c for a >= 0, c > 0."""
    return f"int32(uint32({a}) % uint32({c}))"


def split_index(var: str, dims: list[tuple[str, int]]) -> list[str]:
    """Statements decomposing the flat index `var` (>= 0) into named indices, innermost last in
    `dims` (row-major): [("n", N), ("c", C), ("j", S)] -> j, c, n. A name "_" is not bound."""
    lines, rest = [], var
    inner_first = list(reversed(dims))
    for k, (name, size) in enumerate(inner_first[:-1]):
        if name != "_":
            lines.append(f"{name} = {umod(rest, i(size))}")
        quotient = udiv(rest, i(size))
        outer = k == len(inner_first) - 2
        if outer and inner_first[-1][0] == "_":
            break
        rest = inner_first[-1][0] if outer else f"r{k}"
        lines.append(f"{rest} = {quotient}")
    if len(dims) == 1 and dims[0][0] != "_":
        lines.append(f"{dims[0][0]} = {var}")
    return lines
