"""How a target spells float32 scalar code, so one layer rule serves both targets.

The CPU target (numba) and the CUDA target (numba-cuda) fuse the same activations into their
epilogues; only the spelling differs: numpy vs math functions, and on the GPU every constant
must be a float32(...) call or the arithmetic silently runs in float64 (KERNELS.md). A layer's
`activation(a, k)` writes its statements with the `k` it is given (cpu_kit.CPU, cuda_kit.CUDA).
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
    logistic_exp: str             # exp inside 1 / (1 + exp(-x)), where a saturating exp is exact enough
