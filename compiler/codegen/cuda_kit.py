"""Source-text helpers for CUDA kernel templates (numba-cuda): float32 constants, activation
lines and int32/uint32 index math, shared by the layers' `lower_cuda` (compiler/layers/*.py) and
the CUDA Lowering (compiler/codegen/cuda.py).

Kept apart from cuda.py so layer modules can use them without importing the Lowering, and it
must never import compiler.layers."""
from __future__ import annotations

import math

from ..errors import NetcError


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


def act_lines(d: dict) -> list[str] | None:
    """Pointwise layer as statements on a float32 local `v` (float32 constants, math.* calls:
    a bare 0.5 or np.exp would compute in float64, KERNELS.md); None if it is not one."""
    t, a = d["type"], d["attrs"]
    if t == "ReLU":
        s = a["negative_slope"]
        return [f"v = v if v > {ZERO} else {ZERO}"] if s == 0 else [f"v = v if v > {ZERO} else v * {f32(s)}"]
    if t == "Clip":
        return [f"v = min(max(v, {f32(a['min'])}), {f32(a['max'])})"]
    if t == "Sigmoid":
        return [f"v = {ONE} / ({ONE} + math.exp(-v))"]
    if t == "TanH":
        return ["v = math.tanh(v)"]
    if t == "ELU":
        return [f"v = v if v > {ZERO} else {f32(a['alpha'])} * (math.exp(v) - {ONE})"]
    if t == "AbsVal":
        return ["v = abs(v)"]
    if t == "BNLL":
        return [f"v = v + math.log1p(math.exp(-v)) if v > {ZERO} else math.log1p(math.exp(v))"]
    if t == "Power":
        p, sc, sh = a["power"], a["scale"], a["shift"]
        lines = [] if sc == 1 else [f"v = v * {f32(sc)}"]
        lines += [] if sh == 0 else [f"v = v + {f32(sh)}"]
        if p == 2:
            lines.append("v = v * v")
        elif p != 1:
            lines.append(f"v = math.pow(v, {f32(p)})")
        return lines
    if t == "Dropout":
        return []
    return None


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
