"""GEMM-shaped kernels for the CUDA target: convolution as an implicit GEMM and InnerProduct.

Each generator returns the Python source of ONE numba-cuda kernel `NAME(A, P)` (A = activation
arena, P = parameter buffer, both float32 1-D): shapes, strides, offsets, the tile and the fused
epilogue are literals in the source, so NVVM sees straight-line constant index math.

The GEMM is C[m, n] = sum_k A_op[k, m] * B_op[k, n] on a block tile BM x BN, stepping K by SK*BK
through two shared-memory tiles; each thread owns TM x TN outputs in runs of VEC adjacent rows
and columns (rows ty*4 + (i//4)*NTY*4 + i%4, likewise columns): ptxas turns each run's four
shared reads into one 128-bit LDS (a quarter of the load instructions; the k loop of the
128x128 tile issues 78% FFMA instead of 68%, ptx.main_loop_mix). Each thread prefetches the
next k-tile into registers while it multiplies the current one. Small tiles (few output tiles,
long K: 7x7 maps, fc at batch 32) split each k-tile among SK thread groups whose partial sums
are added in shared memory at the end (slice-K), keeping 4x4 outputs per thread. Convolution: m = output channel
within a group, n = (image, oh, ow), k = (c, kh, kw), the group is grid z; the B tile is
gathered straight from the NCHW input (implicit im2col, no buffer in global memory). When the
group's channels fill whole k-tiles (all but the first layer of the zoo's big networks), k runs
(kh, kw, c) instead (tap_major): a k-tile then has one window tap, whose decode and bounds test
are done once per k-tile instead of per element (the 128x128 loop: 610 instructions, 0.84
FFMA, instead of 652).
InnerProduct: m = row of x, n = output feature. At R <= GEMV_MAX_ROWS the product is a
memory-bound GEMV and gets its own kernel: one warp per output, W read once with coalesced loads.

Index math is int32 (uint32 for divisions and the final address), constants float32: the
int64/float64 defaults of numba cost wraparound checks and f64 instructions (KERNELS.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import NetcError

KERNEL_HEADER = "import math\nfrom numba import cuda, float32, int32, uint32\n"
SIG = "void(float32[::1], float32[::1])"   # what every kernel is launched with
# Lazy (no signature): importing a module of kernels compiles nothing and needs no GPU; the first
# launch compiles for (float32[::1], float32[::1]); cache=True when imported from a real file.
DECORATOR = "@cuda.jit(cache=True)"
SMS = 132                # H100 SXM streaming multiprocessors: a grid smaller than this idles the GPU
GEMV_MAX_ROWS = 8        # InnerProduct rows up to which the GEMV kernel beats a tiled GEMM
GEMV_WARPS = 8           # outputs (one per warp) per GEMV block
INDEX_LIMIT = 2 ** 31    # int32 index math
VEC = 4                  # adjacent outputs per thread along m and n (128-bit shared loads)


@dataclass(frozen=True)
class ConvGeometry:
    """One Convolution layer, Caffe semantics, NCHW float32."""
    N: int
    C: int
    H: int
    W: int
    CO: int
    OH: int
    OW: int
    KH: int
    KW: int
    SH: int
    SW: int
    PH: int
    PW: int
    DH: int
    DW: int
    G: int


@dataclass
class KernelSource:
    name: str
    source: str
    grid: tuple
    block: tuple
    shared_bytes: int


@dataclass(frozen=True)
class Tile:
    BM: int
    BN: int
    BK: int
    TM: int
    TN: int
    SK: int = 1      # slice-K: SK groups of threads share the output tile, each takes BK of the
                     # SK*BK rows of every k step; partial sums meet in shared memory at the end

    @property
    def slice_threads(self) -> int:
        return (self.BM // self.TM) * (self.BN // self.TN)

    @property
    def threads(self) -> int:
        return self.slice_threads * self.SK

    @property
    def KT(self) -> int:
        """k rows per shared tile (per step of the k loop)."""
        return self.BK * self.SK

    @property
    def shared_bytes(self) -> int:
        return 4 * (self.KT * (self.BM + self.BN) + (self.SK - 1) * self.BM * self.BN)


# Largest first, 256 threads each (so any register count ptxas picks, <= 255, can launch).
# choose_tile takes the largest whose grid still fills the GPU. The small tiles split K inside
# the block to keep 4x4 outputs per thread: late layers (7x7 maps) have few tiles and long K.
TILES = [Tile(128, 128, 8, 8, 8), Tile(128, 64, 8, 8, 4), Tile(64, 128, 8, 4, 8), Tile(64, 64, 8, 4, 4),
         Tile(32, 64, 8, 4, 4, 2), Tile(64, 32, 8, 4, 4, 2), Tile(32, 32, 8, 4, 4, 4), Tile(16, 16, 8, 2, 2, 4)]
MAX_THREADS = 256


def _log2(x: int) -> int:
    if x <= 0 or x & (x - 1):
        raise NetcError(f"tile size {x} is not a power of two")
    return x.bit_length() - 1


def check_tile(t: Tile) -> Tile:
    for v in (t.BM, t.BN, t.BK, t.TM, t.TN, t.SK):
        _log2(v)
    if t.TM > t.BM or t.TN > t.BN or t.threads > MAX_THREADS or t.threads < t.KT:
        raise NetcError(f"bad GEMM tile {t} (at most {MAX_THREADS} threads, at least SK*BK)")
    if t.SK > 1 and t.slice_threads % 32:
        raise NetcError(f"tile {t}: a k-slice must be whole warps")
    if (t.KT * t.BM) % t.threads or (t.KT * t.BN) % t.threads:
        raise NetcError(f"tile {t}: SK*BK*BM and SK*BK*BN must be multiples of the thread count")
    if t.shared_bytes >= 48 * 1024:
        raise NetcError(f"tile {t} needs more than 48 KB of static shared memory")
    return t


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def fitting_tiles(M: int, N: int) -> list[Tile]:
    """The tiles not wider than the problem along m and n (rounded up to a power of two, >= 32)."""
    fits = [t for t in TILES if t.BM <= max(32, 1 << (M - 1).bit_length())
            and t.BN <= max(32, 1 << (N - 1).bit_length())]
    return fits or TILES[-1:]


def choose_tile(M: int, N: int, groups: int = 1) -> Tile:
    """The largest tile that still gives >= SMS blocks, not wider than the problem; else the one
    with the most blocks (small problems: late ResNet layers, fc at batch 32)."""
    fits = fitting_tiles(M, N)
    for t in fits:
        if _cdiv(M, t.BM) * _cdiv(N, t.BN) * groups >= SMS:
            return t
    return max(fits, key=lambda t: (_cdiv(M, t.BM) * _cdiv(N, t.BN), -t.BM * t.BN))


def _as_tile(tile) -> Tile | None:
    if tile is None or isinstance(tile, Tile):
        return tile
    return Tile(*tile)


# ---- operand loaders -------------------------------------------------------------------------
# Each thread fetches `n` elements ("slots") of every KT x BX shared tile (X = M or N); _Slots.pos
# says where slot s sits in the tile. A loader emits
#   setup(): lines run once per thread (the column decode, hoisted out of the k loop),
#   load(s, k0): lines that set the register {tag}r{s} from global memory for the tile at row k0.

class _Slots:
    """Which (kk, x) of a BK x BX tile each of T threads fetches in each of its slots.
    x-fast: consecutive threads take consecutive x (coalesced when x is contiguous in memory);
    k-fast: consecutive threads take consecutive k."""

    def __init__(self, T: int, BK: int, BX: int, kfast: bool):
        self.n = BK * BX // T
        self.kfast = kfast
        self.T, self.BK, self.BX = T, BK, BX

    def pos(self, s: int) -> tuple[str, str]:
        T, BK, BX = self.T, self.BK, self.BX
        if self.kfast:
            return f"(tid & {BK - 1})", f"((tid >> {_log2(BK)}) + {s * (T // BK)})"
        if T >= BX:
            return f"((tid >> {_log2(BX)}) + {s * (T // BX)})", f"(tid & {BX - 1})"
        return f"{(s * T) // BX}", f"(tid + {(s * T) % BX})"


class _DenseLoader:
    """Operand stored as a dense matrix: element (k, x) at BUF[base + x*xs + k*ks]."""

    def __init__(self, tag, slots: _Slots, buf: str, base: str, xs: int, ks: int, X: int, K: int, x0: str):
        self.tag, self.slots, self.buf, self.base = tag, slots, buf, base
        self.xs, self.ks, self.X, self.K, self.x0 = xs, ks, X, K, x0

    def setup(self) -> list[str]:
        lines = []
        cols = {}
        for s in range(self.slots.n):
            kk, x = self.slots.pos(s)
            if x not in cols:
                cols[x] = len(cols)
                c = f"{self.tag}x{cols[x]}"
                lines.append(f"{c} = int32({self.x0} + {x})")
                lines.append(f"{c}v = {c} < {self.X}")
                lines.append(f"{c}b = int32({self.base} + {c} * {self.xs})")
            lines.append(f"{self.tag}k{s} = int32({kk})")
        self.cols = cols
        return lines

    def prepare(self, k0: str) -> list[str]:
        return []

    def load(self, s: int, k0: str) -> list[str]:
        kk, x = self.slots.pos(s)
        c = f"{self.tag}x{self.cols[x]}"
        r = f"{self.tag}r{s}"
        k = f"int32({k0} + {self.tag}k{s})"
        cond = f"{c}v" + ("" if self.K % self.slots.BK == 0 else f" and {k} < {self.K}")
        return [f"{r} = float32(0.0)",
                f"if {cond}:",
                f"    {r} = {self.buf}[uint32({c}b + {k} * {self.ks})]"]


class _Im2colLoader:
    """The B operand of a convolution gathered from the NCHW input: column n = (image, oh, ow),
    row k = (c, kh, kw) of the group given by grid z; zero outside the padded input."""

    tag = "b"

    def __init__(self, slots: _Slots, g: ConvGeometry, x_off: int):
        self.slots, self.g, self.x_off = slots, g, x_off

    def setup(self) -> list[str]:
        g = self.g
        hw, ohw = g.H * g.W, g.OH * g.OW
        cg = g.C // g.G
        lines, cols = [], {}
        for s in range(self.slots.n):
            kk, x = self.slots.pos(s)
            if x not in cols:
                cols[x] = len(cols)
                c = f"bx{cols[x]}"
                lines += [f"{c} = int32(n0 + {x})",
                          f"{c}v = {c} < {g.N * ohw}",
                          f"{c}n = int32(uint32({c}) // uint32({ohw}))",
                          f"{c}q = int32({c} - {c}n * {ohw})",
                          f"{c}oh = int32(uint32({c}q) // uint32({g.OW}))",
                          f"{c}ih = int32({c}oh * {g.SH} - {g.PH})",
                          f"{c}iw = int32(({c}q - {c}oh * {g.OW}) * {g.SW} - {g.PW})",
                          f"{c}b = int32({self.x_off} + {c}n * {g.C * hw} + bz * {cg * hw})"]
                if g.KH == 1 and g.KW == 1:   # the window is one pixel: its test is per column
                    if g.PH or g.PW:
                        lines.append(f"{c}v = {c}v and {c}ih >= 0 and {c}ih < {g.H} and "
                                     f"{c}iw >= 0 and {c}iw < {g.W}")
                    lines.append(f"{c}b = int32({c}b + {c}ih * {g.W} + {c}iw)")
            lines.append(f"bk{s} = int32({kk})")
        self.cols = cols
        return lines

    def prepare(self, k0: str) -> list[str]:
        return []

    def load(self, s: int, k0: str) -> list[str]:
        g = self.g
        hw, khw = g.H * g.W, g.KH * g.KW
        K = (g.C // g.G) * khw
        _, x = self.slots.pos(s)
        c = f"bx{self.cols[x]}"
        r = f"br{s}"
        lines = [f"{r} = float32(0.0)", f"k = int32({k0} + bk{s})"]
        cond = [f"{c}v"] + ([] if K % self.slots.BK == 0 else [f"k < {K}"])
        if khw == 1:
            lines += [f"if {' and '.join(cond)}:", f"    {r} = A[uint32({c}b + k * {hw})]"]
            return lines
        lines += [f"ci = int32(uint32(k) // uint32({khw}))",
                  f"kr = int32(k - ci * {khw})",
                  f"kh = int32(uint32(kr) // uint32({g.KW}))",
                  f"ih = int32({c}ih + kh * {g.DH})",
                  f"iw = int32({c}iw + (kr - kh * {g.KW}) * {g.DW})"]
        if g.PH:
            cond += ["ih >= 0", f"ih < {g.H}"]
        if g.PW:
            cond += ["iw >= 0", f"iw < {g.W}"]
        lines += [f"if {' and '.join(cond)}:", f"    {r} = A[uint32({c}b + ci * {hw} + ih * {g.W} + iw)]"]
        return lines


class _TapMajorIm2colLoader(_Im2colLoader):
    """The B operand with k ordered (kh, kw, c) (tap_major): every row of a k-tile has the same
    window tap, so the tap's decode, its bounds test and its address offset are computed once per
    k-tile and column (`prepare`) instead of once per element; an element is one load at a
    constant distance from the column's address."""

    def setup(self) -> list[str]:
        g = self.g
        lines = super().setup()
        for c in (f"bx{j}" for j in range(len(self.cols))):
            lines.append(f"{c}o = int32({c}b + {c}ih * {g.W} + {c}iw)")
        return lines

    def prepare(self, k0: str) -> list[str]:
        g = self.g
        cg = g.C // g.G
        lines = [f"tk = int32({k0})",
                 f"tap = int32(uint32(tk) // uint32({cg}))",
                 f"tkh = int32(uint32(tap) // uint32({g.KW}))",
                 f"tih = int32(tkh * {g.DH})",
                 f"tiw = int32((tap - tkh * {g.KW}) * {g.DW})",
                 f"toff = int32((tk - tap * {cg}) * {g.H * g.W} + tih * {g.W} + tiw)"]
        for c in (f"bx{j}" for j in range(len(self.cols))):
            cond = [f"{c}v"]
            if g.PH:
                cond.append(f"uint32({c}ih + tih) < uint32({g.H})")
            if g.PW:
                cond.append(f"uint32({c}iw + tiw) < uint32({g.W})")
            lines += [f"{c}ok = {' and '.join(cond)}", f"{c}a = int32({c}o + toff)"]
        return lines

    def load(self, s: int, k0: str) -> list[str]:
        c = f"bx{self.cols[self.slots.pos(s)[1]]}"
        r = f"br{s}"
        return [f"{r} = float32(0.0)", f"if {c}ok:", f"    {r} = A[uint32({c}a + bk{s} * {self.g.H * self.g.W})]"]


def tap_major(geom: ConvGeometry, tile: Tile) -> bool:
    """Whether the conv's k runs (kh, kw, c) rather than Caffe's (c, kh, kw): when the group's
    channels fill whole k-tiles, a k-tile never straddles two taps (_TapMajorIm2colLoader). The
    packed weights follow the same order (pack_conv_weights)."""
    return geom.KH * geom.KW > 1 and (geom.C // geom.G) % tile.KT == 0


def conv_tile(geom: ConvGeometry, tile=None) -> Tile:
    """The tile conv_kernel uses for `geom` given `tile` (None: choose_tile's)."""
    g = geom
    if tile == GEMV:
        raise NetcError("GEMV is a choice for InnerProduct, not convolution")
    return check_tile(_as_tile(tile) or choose_tile(g.CO // g.G, g.N * g.OH * g.OW, g.G))


# ---- the tiled GEMM ----------------------------------------------------------------------------

def _indent(lines: list[str], n: int) -> list[str]:
    return [" " * n + l for l in lines]


def _gemm_source(name: str, t: Tile, K: int, a_load, b_load, store: list[str]) -> str:
    """Kernel text: prologue, the k loop with register prefetch, the slice-K reduction, then
    `store` per output (m, n int32 and the sum `v` ready; it must bounds-check m and n)."""
    NTX, NTY = t.BN // t.TN, t.BM // t.TM
    VM, VN = min(VEC, t.TM), min(VEC, t.TN)

    def m_of(i):     # the i-th of a thread's TM rows: runs of VM adjacent rows, NTY*VM apart
        return f"ty * {VM} + ({i} >> {_log2(VM)}) * {NTY * VM} + ({i} & {VM - 1})"

    def n_of(j):
        return f"tx * {VN} + ({j} >> {_log2(VN)}) * {NTX * VN} + ({j} & {VN - 1})"

    nkt = _cdiv(K, t.KT)
    L = [DECORATOR, f"def {name}(A, P):",
         f"    As = cuda.shared.array(({t.KT}, {t.BM}), float32)",
         f"    Bs = cuda.shared.array(({t.KT}, {t.BN}), float32)"]
    if t.SK > 1:
        L.append(f"    red = cuda.shared.array({(t.SK - 1) * t.BM * t.BN}, float32)")
    L += [f"    acc = cuda.local.array(({t.TM}, {t.TN}), float32)",
          f"    a = cuda.local.array({t.TM}, float32)",
          f"    b = cuda.local.array({t.TN}, float32)",
          "    tid = int32(cuda.threadIdx.x)",
          f"    tx = int32(tid & {NTX - 1})",
          f"    ty = int32((tid >> {_log2(NTX)}) & {NTY - 1})",
          f"    ks = int32(tid >> {_log2(t.slice_threads)})" if t.SK > 1 else "    ks = int32(0)",
          f"    kb = int32(ks * {t.BK})",
          f"    n0 = int32(int32(cuda.blockIdx.x) * {t.BN})",
          f"    m0 = int32(int32(cuda.blockIdx.y) * {t.BM})",
          "    bz = int32(cuda.blockIdx.z)",
          f"    for i in range({t.TM}):",
          f"        for j in range({t.TN}):",
          "            acc[i, j] = float32(0.0)"]
    L += _indent(a_load.setup() + b_load.setup(), 4)

    def fetch(k0):
        out = a_load.prepare(k0) + b_load.prepare(k0)
        for s in range(a_load.slots.n):
            out += a_load.load(s, k0)
        for s in range(b_load.slots.n):
            out += b_load.load(s, k0)
        return out

    def put():
        out = []
        for ld, arr in ((a_load, "As"), (b_load, "Bs")):
            for s in range(ld.slots.n):
                kk, x = ld.slots.pos(s)
                out.append(f"{arr}[{kk}, {x}] = {ld.tag}r{s}")
        return out

    L += _indent(fetch("0") + put() + ["cuda.syncthreads()"], 4)
    L.append(f"    for kt in range(int32({nkt})):")
    L.append(f"        if kt < {nkt - 1}:")
    L += _indent(fetch(f"(kt + 1) * {t.KT}"), 12)
    for kk in range(t.BK):
        row = f"kb + {kk}" if t.SK > 1 else f"{kk}"
        L += _indent([f"for i in range({t.TM}):",
                      f"    a[i] = As[{row}, {m_of('i')}]",
                      f"for j in range({t.TN}):",
                      f"    b[j] = Bs[{row}, {n_of('j')}]",
                      f"for i in range({t.TM}):",
                      f"    for j in range({t.TN}):",
                      "        acc[i, j] += a[i] * b[j]"], 8)
    L += _indent(["cuda.syncthreads()", f"if kt < {nkt - 1}:"], 8)
    L += _indent(put(), 12)
    L += _indent(["cuda.syncthreads()"], 8)
    if t.SK > 1:
        cell = f"({m_of('i')}) * {t.BN} + {n_of('j')}"
        L += _indent(["if ks > 0:",
                      f"    for i in range({t.TM}):",
                      f"        for j in range({t.TN}):",
                      f"            red[(ks - 1) * {t.BM * t.BN} + {cell}] = acc[i, j]",
                      "cuda.syncthreads()",
                      "if ks == 0:",
                      f"    for i in range({t.TM}):",
                      f"        for j in range({t.TN}):",
                      f"            for r in range({t.SK - 1}):",
                      f"                acc[i, j] += red[r * {t.BM * t.BN} + {cell}]"], 4)
    epi = [f"for i in range({t.TM}):",
           f"    m = int32(m0 + {m_of('i')})",
           f"    for j in range({t.TN}):",
           f"        n = int32(n0 + {n_of('j')})",
           "        v = acc[i, j]",
           *_indent(store, 8)]
    L += _indent(["if ks == 0:", *_indent(epi, 4)] if t.SK > 1 else epi, 4)   # slice 0 holds the sums
    return "\n".join(L) + "\n"


def _epilogue(bias_index: str, out_index: str, epilogue: list[str]) -> list[str]:
    return [f"v = v + P[uint32({bias_index})]", *epilogue, f"A[uint32({out_index})] = v"]


def _check_index(*extents: int) -> None:
    if max(extents) >= INDEX_LIMIT:
        raise NetcError(f"a buffer offset of {max(extents)} floats is past the int32 index range of the CUDA kernels")


def _check_epilogue(name: str, epilogue) -> list[str]:
    """The kernel name must be an identifier (callers pass sanitized names); epilogue lines are
    single statements that read and assign only the float32 local `v`."""
    if not name.isidentifier():
        raise NetcError(f"kernel name {name!r} is not an identifier")
    lines = list(epilogue)
    for l in lines:
        if "\n" in l:
            raise NetcError("epilogue lines must be single statements")
    return lines


def conv_kernel(name: str, geom: ConvGeometry, x_off: int, w_off: int, b_off: int, y_off: int,
                epilogue: list[str], tile=None, y_image_stride: int | None = None) -> KernelSource:
    """y = conv(x) + bias, then `epilogue` (statements on float32 `v`; int32 `e` is the output
    element's index in an unstrided NCHW output, so a residual operand of the output's shape is
    A[operand offset + e]), as an implicit GEMM. `y_image_stride`: floats from one image's output
    to the next (default CO*OH*OW; larger when the output is a channel slice of a concatenation
    at batch > 1)."""
    g = geom
    if g.G < 1 or g.C % g.G or g.CO % g.G:
        raise NetcError(f"group {g.G} does not divide channels {g.C} -> {g.CO}")
    oh = (g.H + 2 * g.PH - (g.DH * (g.KH - 1) + 1)) // g.SH + 1
    ow = (g.W + 2 * g.PW - (g.DW * (g.KW - 1) + 1)) // g.SW + 1
    if (g.OH, g.OW) != (oh, ow) or min(g.N, g.C, g.H, g.W, g.CO, g.OH, g.OW, g.SH, g.SW, g.DH, g.DW) < 1 \
            or min(g.PH, g.PW) < 0:
        raise NetcError(f"inconsistent convolution geometry {g} (Caffe gives output {oh}x{ow})")
    M, N, K = g.CO // g.G, g.N * g.OH * g.OW, (g.C // g.G) * g.KH * g.KW
    ystride = g.CO * g.OH * g.OW if y_image_stride is None else y_image_stride
    if ystride < g.CO * g.OH * g.OW:
        raise NetcError(f"output image stride {ystride} is smaller than one image ({g.CO * g.OH * g.OW})")
    _check_index(x_off + g.N * g.C * g.H * g.W, y_off + g.N * ystride,
                 w_off + g.CO * K, b_off + g.CO)
    t = conv_tile(g, tile)
    T = t.threads
    a = _DenseLoader("a", _Slots(T, t.KT, t.BM, kfast=False), "P", f"{w_off} + bz * {K * M}", 1, M, M, K, "m0")
    b = (_TapMajorIm2colLoader if tap_major(g, t) else _Im2colLoader)(_Slots(T, t.KT, t.BN, kfast=False), g, x_off)
    ohw = g.OH * g.OW
    image = g.CO * ohw
    store = [f"if m < {M} and n < {N}:",
             f"    co = int32(bz * {M} + m)",
             f"    ni = int32(uint32(n) // uint32({ohw}))",
             f"    e = int32(n + ni * {image - ohw} + co * {ohw})",      # NCHW element of an unstrided output
             *_indent(_epilogue(f"{b_off} + co",
                                f"{y_off} + e" + (f" + ni * {ystride - image}" if ystride != image else ""),
                                _check_epilogue(name, epilogue)), 4)]
    src = _gemm_source(name, t, K, a, b, store)
    return KernelSource(name, src, (_cdiv(N, t.BN), _cdiv(M, t.BM), g.G), (T, 1, 1), t.shared_bytes)


def pack_conv_weights(weight_oihw: np.ndarray, geom: ConvGeometry, tile=None) -> np.ndarray:
    """[CO, C/G, KH, KW] -> [G, K, CO/G], k = (c, kh, kw), or (kh, kw, c) when the kernel for
    `tile` (as given to conv_kernel) is tap_major: the A tile's rows are contiguous."""
    g = geom
    w = np.asarray(weight_oihw, dtype=np.float32)
    cg, og = g.C // g.G, g.CO // g.G
    if w.shape != (g.CO, cg, g.KH, g.KW):
        raise NetcError(f"convolution weight has shape {w.shape}, expected {(g.CO, cg, g.KH, g.KW)}")
    w = w.reshape(g.G, og, cg, g.KH, g.KW)
    order = (0, 3, 4, 2, 1) if tap_major(g, conv_tile(g, tile)) else (0, 2, 3, 4, 1)
    return np.ascontiguousarray(w.transpose(order)).reshape(-1)


def fc_kernel(name: str, R: int, K: int, O: int, x_off: int, w_off: int, b_off: int, y_off: int,
              epilogue: list[str], tile=None) -> KernelSource:
    """y[R, O] = x[R, K] @ W[O, K].T + b, then `epilogue`. A GEMV kernel for few rows (or when
    `tile` is GEMV), else the tiled GEMM."""
    _check_index(x_off + R * K, y_off + R * O, w_off + O * K, b_off + O)
    epilogue = _check_epilogue(name, epilogue)
    if tile == GEMV or (R <= GEMV_MAX_ROWS and tile is None):
        if R > GEMV_MAX_ROWS:
            raise NetcError(f"the GEMV kernel takes at most {GEMV_MAX_ROWS} rows, not {R}")
        return _gemv_kernel(name, R, K, O, x_off, w_off, b_off, y_off, epilogue)
    t = check_tile(_as_tile(tile) or choose_tile(R, O))
    T = t.threads
    a = _DenseLoader("a", _Slots(T, t.KT, t.BM, kfast=True), "A", str(x_off), K, 1, R, K, "m0")
    b = _DenseLoader("b", _Slots(T, t.KT, t.BN, kfast=True), "P", str(w_off), K, 1, O, K, "n0")
    store = [f"if m < {R} and n < {O}:",
             *_indent(_epilogue(f"{b_off} + n", f"{y_off} + m * {O} + n", epilogue), 4)]
    src = _gemm_source(name, t, K, a, b, store)
    return KernelSource(name, src, (_cdiv(O, t.BN), _cdiv(R, t.BM), 1), (T, 1, 1), t.shared_bytes)


def _gemv_kernel(name, R, K, O, x_off, w_off, b_off, y_off, epilogue) -> KernelSource:
    """One warp per output o: lanes stride over W[o, :] (coalesced, each weight read once) keeping
    R partial sums; partials meet in shared memory (no warp shuffles: the simulator lacks them)
    and lane r adds up row r."""
    U = 4                       # independent loads in flight per lane
    step = 32 * U
    L = [DECORATOR, f"def {name}(A, P):",
         f"    red = cuda.shared.array(({GEMV_WARPS * R}, 33), float32)",
         "    tid = int32(cuda.threadIdx.x)",
         "    lane = int32(tid & 31)",
         "    warp = int32(tid >> 5)",
         f"    o = int32(int32(cuda.blockIdx.x) * {GEMV_WARPS} + warp)",
         *[f"    s{r} = float32(0.0)" for r in range(R)],
         f"    if o < {O}:",
         f"        wb = int32({w_off} + o * {K} + lane)",
         f"        for it in range({K // step}):",
         f"            k = int32(it * {step})"]
    for u in range(U):
        L.append(f"            w{u} = P[uint32(wb + k + {32 * u})]")
    for u in range(U):
        for r in range(R):
            L.append(f"            s{r} += w{u} * A[uint32({x_off + r * K + 32 * u} + lane + k)]")
    rest = K - (K // step) * step
    if rest:
        L += [f"        for u in range({_cdiv(rest, 32)}):",
              f"            k = int32({K - rest} + u * 32 + lane)",
              f"            if k < {K}:",
              f"                w = P[uint32({w_off} + o * {K} + k)]"]
        L += [f"                s{r} += w * A[uint32({x_off + r * K} + k)]" for r in range(R)]
    L += [f"    red[warp * {R} + {r}, lane] = s{r}" for r in range(R)]
    L += ["    cuda.syncthreads()",
          f"    if lane < {R} and o < {O}:",
          "        v = float32(0.0)",
          "        for l in range(32):",
          f"            v += red[warp * {R} + lane, l]",
          *_indent(_epilogue(f"{b_off} + o", f"{y_off} + lane * {O} + o", epilogue), 8)]
    return KernelSource(name, "\n".join(L) + "\n", (_cdiv(O, GEMV_WARPS), 1, 1), (32 * GEMV_WARPS, 1, 1),
                        4 * GEMV_WARPS * R * 33)


# ---- GEMM problems and their tile choices (measured per GPU by runtime/autotune.py) ----------------
# A problem key names one GEMM layer's shape, not its place in a network: layers of the same
# shape (ResNet's repeated blocks) share a measurement. A choice is a Tile, or GEMV for fc.

GEMV = "gemv"


def conv_problem(geom: ConvGeometry) -> str:
    return "conv " + ",".join(str(getattr(geom, f)) for f in ConvGeometry.__dataclass_fields__)


def fc_problem(R: int, K: int, O: int) -> str:
    return f"fc {R},{K},{O}"


def parse_problem(key: str) -> tuple[str, tuple]:
    """("conv", ConvGeometry) or ("fc", (R, K, O)); NetcError for anything else (keys are also
    read back from tuning caches on disk)."""
    kind, _, rest = str(key).partition(" ")
    nums = rest.split(",")
    if not all(v.isdigit() for v in nums):
        raise NetcError(f"bad GEMM problem key {key!r}")
    vals = [int(v) for v in nums]
    if kind == "conv" and len(vals) == len(ConvGeometry.__dataclass_fields__):
        return kind, ConvGeometry(*vals)
    if kind == "fc" and len(vals) == 3 and min(vals) >= 1:
        return kind, tuple(vals)
    raise NetcError(f"bad GEMM problem key {key!r}")


def _gemm_shape(key: str) -> tuple[int, int, int]:
    kind, p = parse_problem(key)
    if kind == "fc":
        return p[0], p[2], 1
    return p.CO // p.G, p.N * p.OH * p.OW, p.G


def tile_candidates(key: str) -> list:
    """Every tile not wider than the problem (the filter choose_tile applies), and GEMV for an
    fc of few rows: what the autotuner times."""
    M, N, _ = _gemm_shape(key)
    kind, p = parse_problem(key)
    return ([GEMV] if kind == "fc" and p[0] <= GEMV_MAX_ROWS else []) + fitting_tiles(M, N)


def default_choice(key: str):
    """What conv_kernel / fc_kernel pick when given no tile."""
    kind, p = parse_problem(key)
    if kind == "conv":
        return conv_tile(p)
    R, _, O = p
    return GEMV if R <= GEMV_MAX_ROWS else choose_tile(R, O)


def choice_text(choice) -> str:
    return GEMV if choice == GEMV else "x".join(str(v) for v in (choice.BM, choice.BN, choice.BK, choice.TM, choice.TN, choice.SK))


def parse_choice(text: str):
    """Inverse of choice_text, validated (a tuning cache is data from disk)."""
    if text == GEMV:
        return GEMV
    vals = str(text).split("x")
    if len(vals) != 6 or not all(v.isdigit() for v in vals):
        raise NetcError(f"bad tile {text!r}")
    return check_tile(Tile(*(int(v) for v in vals)))


def trial_kernel(key: str, name: str, choice) -> tuple[KernelSource, int, int]:
    """(kernel, arena floats, parameter floats) computing problem `key` with `choice` alone:
    input at arena offset 0, output after it, weights then bias in P. What the autotuner times."""
    kind, p = parse_problem(key)
    if kind == "fc":
        R, K, O = p
        ks = fc_kernel(name, R, K, O, 0, 0, O * K, R * K, [], tile=choice)
        return ks, R * K + R * O, O * K + O
    g = p
    x, y, w = g.N * g.C * g.H * g.W, g.N * g.CO * g.OH * g.OW, g.CO * (g.C // g.G) * g.KH * g.KW
    return conv_kernel(name, g, 0, 0, w, x, [], tile=choice), x + y, w + g.CO


def pack_fc_weights(weight_ok: np.ndarray) -> np.ndarray:
    """[O, K] row-major as is: the GEMV reads rows, the GEMM's B loader is k-fast."""
    w = np.asarray(weight_ok, dtype=np.float32)
    if w.ndim != 2:
        raise NetcError(f"InnerProduct weight must be 2-D [O, K], got shape {w.shape}")
    return np.ascontiguousarray(w).reshape(-1)
