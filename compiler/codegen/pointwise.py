"""Pointwise layers as statements on a float32 local `v`, in either target's dialect.

The CPU target (numba) and the CUDA target (numba-cuda) fuse the same activations into their
epilogues; only the spelling differs: numpy vs math functions, and on the GPU every constant
must be a float32(...) call or the arithmetic silently runs in float64 (KERNELS.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Dialect:
    f32: Callable[[float], str]   # a float32 constant
    zero: str
    one: str
    math: str                     # module of exp/tanh/log1p
    power: str                    # v raised to {p}


def act_lines(d: dict, k: Dialect) -> list[str] | None:
    """Statements for one pointwise layer (IR node attributes `d`); None if it is not one."""
    t, a = d["type"], d["attrs"]
    z, one, m, f32 = k.zero, k.one, k.math, k.f32
    if t == "ReLU":
        s = a["negative_slope"]
        return [f"v = v if v > {z} else {z}"] if s == 0 else [f"v = v if v > {z} else v * {f32(s)}"]
    if t == "Clip":
        return [f"v = min(max(v, {f32(a['min'])}), {f32(a['max'])})"]
    if t == "Sigmoid":
        return [f"v = {one} / ({one} + {m}.exp(-v))"]
    if t == "TanH":
        return [f"v = {m}.tanh(v)"]
    if t == "ELU":
        return [f"v = v if v > {z} else {f32(a['alpha'])} * ({m}.exp(v) - {one})"]
    if t == "AbsVal":
        return ["v = abs(v)"]
    if t == "BNLL":
        return [f"v = v + {m}.log1p({m}.exp(-v)) if v > {z} else {m}.log1p({m}.exp(v))"]
    if t == "Power":
        p, sc, sh = a["power"], a["scale"], a["shift"]
        lines = [] if sc == 1 else [f"v = v * {f32(sc)}"]
        lines += [] if sh == 0 else [f"v = v + {f32(sh)}"]
        if p == 2:
            lines.append("v = v * v")
        elif p != 1:
            lines.append("v = " + k.power.format(p=f32(p)))
        return lines
    if t == "Dropout":
        return []
    return None
