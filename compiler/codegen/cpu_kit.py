"""Source-text helpers for CPU kernel templates (numba), shared by the layers' `lower_cpu`
(compiler/layers/*.py) and the CPU Lowering (compiler/codegen/cpu.py): float32 constants, the
CPU dialect, Winograd transforms.

The kit of the CPU target: layer modules import it (inside their methods, so analysis never
loads it), never cpu.py; it never imports compiler.layers."""
from __future__ import annotations

from ..errors import NetcError
from .dialect import Dialect


def f32(x: float) -> str:
    x = float(x)
    if x != x:
        raise NetcError("NaN constant in a layer parameter")
    if x in (float("inf"), float("-inf")):
        return "np.float32(np.inf)" if x > 0 else "np.float32(-np.inf)"
    return f"np.float32({x!r})"


def i(x) -> str:
    return repr(int(x))


CPU = Dialect(f32, "Z", "ONE", "np", "v ** {p}", "fexp")

# exp for logistic functions (Sigmoid, Swish/SiLU), in plain arithmetic that LLVM vectorizes:
# numba calls libm's scalar exp (this llvmlite has no SVML), 6 ns an element, so EfficientNet's
# SiLU epilogues cost more than its convolutions (1.2 M elements: 7.3 ms; this: 0.6 ms).
# exp(x) = 2^n exp(r), n = rint(x / ln 2), r = x - n ln 2 in two parts (Cody and Waite) so r
# keeps its bits at large |x|, exp(r) on [-0.35, 0.35] by its degree-7 Taylor polynomial, 2^n
# by building the float's exponent bits. x is clamped to +-87.3 (exp stays a normal float),
# where 1 / (1 + exp(-x)) has long saturated to 0 or 1 in float32.
FEXP = """
from numba import types as _types
from numba.extending import intrinsic as _intrinsic


@_intrinsic
def _int_bits_as_float(typingctx, i):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(_types.float32))
    return _types.float32(_types.int32), codegen


@nb.njit(inline="always", fastmath=True, error_model="numpy")
def fexp(x):
    x = min(max(x, np.float32(-87.3)), np.float32(87.3))
    n = np.rint(x * np.float32(1.4426950408889634))
    r = (x - n * np.float32(0.693145751953125)) - n * np.float32(1.428606765330187e-06)
    p = np.float32(1.0 / 5040)
    p = p * r + np.float32(1.0 / 720)
    p = p * r + np.float32(1.0 / 120)
    p = p * r + np.float32(1.0 / 24)
    p = p * r + np.float32(1.0 / 6)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    return p * _int_bits_as_float((np.int32(n) + np.int32(127)) << np.int32(23))
"""


# Winograd F(4x4, 3x3): interpolation points (plus infinity). Lavin's 0, +-1, +-2 keep the
# transforms' coefficients small integers (exact in float32).
WINOGRAD_POINTS = (0, 1, -1, 2, -2)
WINOGRAD_MIN_CHANNELS = 16   # below this (first layers: C = 3) im2col + one sgemm is faster
WINOGRAD_MIN_TILES = 17   # 13x13-14x14 maps (16 tiles) on im2col: SqueezeNet 10%, GoogLeNet 4% faster (AVX2)


def winograd_matrices(points, m: int = 4, r: int = 3):
    """(A^T, G, B^T) of F(m, r) by Toom-Cook on `points` plus infinity, as exact fractions:
    y = A^T [(G g) * (B^T d)] is the correlation of d (m + r - 1 values) with g (r taps)."""
    from fractions import Fraction
    n = m + r - 1
    p = [Fraction(x) for x in points]
    if len(p) != n - 1 or len(set(p)) != n - 1:
        raise ValueError(f"F({m}, {r}) needs {n - 1} distinct finite points")
    at = [[p[j] ** k for j in range(n - 1)] + [Fraction(int(k == m - 1))] for k in range(m)]
    g = []
    for j in range(n - 1):
        f = Fraction(1)
        for l in range(n - 1):
            f *= (p[j] - p[l]) if l != j else 1
        g.append([p[j] ** k / f for k in range(r)])
    g.append([Fraction(int(k == r - 1)) for k in range(r)])
    bt = []
    for j in range(n):   # coefficients of prod_{l != j} (x - p_l); all l for the infinite point
        poly = [Fraction(1)]
        for l in range(n - 1):
            if l != j:
                poly = [Fraction(0)] + poly
                for k in range(len(poly) - 1):
                    poly[k] -= p[l] * poly[k + 1]
        bt.append(poly + [Fraction(0)] * (n - len(poly)))
    return at, g, bt


def winograd_pays(groups, c, co, kernel, stride, dilation, tiles) -> bool:
    """F(4x4, 3x3) for 3x3 stride-1 convolutions with enough channels and enough 4x4 output
    tiles (over the batch): its weights are 4x im2col's, so on 7x7 maps (4 tiles) reading
    them costs more than the multiplies it saves. Measured vs im2col: 2.3x slower at 7x7 with
    512 channels; 0.73-1.09x at 13x13-14x14 (16 tiles, up to a third of them padding) on an
    AVX-512 machine, but whole networks on AVX2 ran faster with im2col there (BENCHMARKS.md);
    0.3-0.5x from 28x28 up."""
    return (groups == 1 and tuple(kernel) == (3, 3) and tuple(stride) == (1, 1)
            and tuple(dilation) == (1, 1) and min(c, co) >= WINOGRAD_MIN_CHANNELS
            and tiles >= WINOGRAD_MIN_TILES)


def indent(lines: list[str], spaces: int) -> str:
    return "\n".join(" " * spaces + line for line in lines)


def neg_power(u: str, beta: float) -> str:
    """u ** -beta as source; Caffe's default beta 0.75 with square roots (no exp/log)."""
    if beta == 0.75:
        return f"(ONE / (np.sqrt({u}) * np.sqrt(np.sqrt({u}))))"
    return f"{u} ** np.float32({-beta!r})"


def lincomb(coeffs, names) -> str:
    """sum(c * name) as source, zero terms dropped, +-1 without a multiply."""
    terms = []
    for c, nm in zip(coeffs, names):
        c = float(c)
        if c == 0:
            continue
        sign = "-" if c < 0 else "+"
        terms.append(f"{sign} {nm}" if abs(c) == 1 else f"{sign} {f32(abs(c))} * {nm}")
    if not terms:
        return "Z"
    head = terms[0][2:] if terms[0][0] == "+" else "-" + terms[0][2:]
    return " ".join([head] + terms[1:])
