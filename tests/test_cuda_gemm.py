"""The CUDA GEMM kernels (implicit-GEMM convolution, InnerProduct) without a GPU.

1. Correctness in numba-cuda's simulator (a subprocess: NUMBA_ENABLE_CUDASIM must be set before
   numba.cuda is imported) on tiny shapes against torch in float64: ragged tiles, groups, stride +
   pad + dilation, batch, 1x1, non-square kernels, GEMV and GEMM InnerProduct, a fused ReLU, and
   that nothing outside the output range of the arena is written.
2. Every Convolution / InnerProduct geometry of the zoo and the Caffe references compiles with
   NVVM and `ptxas -v` reports no spills for sm_90 (and sm_80: all with NETC_FULL_PTX=1 or
   NETC_FUZZ=1, else a stratified subset, to keep the default run short).
3. The PTX of a big convolution is FFMA work with no float64 and no 64-bit signed division.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from netc.compiler.codegen import cuda_gemm as cg
from netc.compiler.codegen.ptx import compile_kernel_ptx, parse_ptxas, ptxas_path, ptxas_report
from netc.compiler.errors import NetcError

RELU = ["v = v if v > float32(0.0) else float32(0.0)"]
SMALL = (16, 16, 4, 2, 2)      # 64 threads: the simulator runs every thread as a Python thread

# name: (N, C, H, W, CO, KH, KW, SH, SW, PH, PW, DH, DW, G, tile, relu)
CONV_CASES = {
    "ragged_tiles": (1, 3, 7, 6, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, SMALL, True),
    "groups2_ragged": (1, 6, 5, 5, 10, 3, 3, 1, 1, 1, 1, 1, 1, 2, SMALL, False),
    "stride2_pad2_dil2": (1, 4, 9, 8, 6, 3, 3, 2, 2, 2, 2, 2, 2, 1, SMALL, True),
    "batch2": (2, 3, 5, 5, 4, 3, 3, 1, 1, 0, 0, 1, 1, 1, SMALL, False),
    "pointwise_batch2": (2, 7, 4, 5, 9, 1, 1, 1, 1, 0, 0, 1, 1, 1, SMALL, True),
    "pointwise_stride2_pad1": (1, 5, 5, 4, 3, 1, 1, 2, 2, 1, 1, 1, 1, 1, SMALL, False),
    "one_by_one_output": (1, 8, 3, 3, 6, 3, 3, 1, 1, 0, 0, 1, 1, 1, SMALL, True),
    "kernel_1x3": (1, 3, 4, 6, 5, 1, 3, 1, 1, 0, 1, 1, 1, 1, SMALL, False),
    "kernel_3x2_stride21": (1, 3, 7, 5, 4, 3, 2, 2, 1, 1, 0, 1, 1, 1, SMALL, False),
    "depthwise": (1, 4, 5, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 4, SMALL, True),
    "narrow_tile_few_threads": (1, 3, 6, 6, 70, 3, 3, 1, 1, 1, 1, 1, 1, 1, (64, 8, 8, 8, 2), False),
    "default_tile_slice_k4": (1, 4, 6, 7, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, None, True),
    "slice_k4_32x32_batch2": (2, 3, 6, 5, 9, 3, 3, 1, 1, 1, 1, 1, 1, 1, (32, 32, 8, 4, 4, 4), False),
    "slice_k2_ragged_k": (1, 5, 6, 5, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1, (16, 16, 4, 2, 2, 2), False),
    # k in (kh, kw, c) order (cg.tap_major: the group's channels fill whole k-tiles)
    "tap_major_groups2_stride2_batch2": (2, 8, 7, 6, 6, 3, 3, 2, 2, 1, 1, 1, 1, 2, SMALL, True),
    "tap_major_slice_k2_dil_pad_asym": (1, 16, 6, 7, 5, 3, 3, 1, 1, 2, 1, 2, 1, 1, (16, 16, 4, 2, 2, 2), False),
    "tap_major_pad_h_only_3x2": (1, 4, 5, 6, 3, 3, 2, 1, 1, 1, 0, 1, 1, 1, SMALL, False),
}
# name: (R, K, O, tile, relu)
FC_CASES = {
    "gemv_r1_tail": (1, 70, 13, None, True),
    "gemv_r3_main_and_tail": (3, 300, 10, None, False),
    "gemv_r1_exact": (1, 256, 9, None, False),
    "gemm_r3_small_tile": (3, 37, 21, SMALL, True),
    "gemm_r9_default_tile": (9, 20, 11, None, False),
    "gemm_r5_slice_k2": (5, 45, 19, (16, 16, 4, 2, 2, 2), True),
}


def conv_geometry(N, C, H, W, CO, KH, KW, SH, SW, PH, PW, DH, DW, G) -> cg.ConvGeometry:
    OH = (H + 2 * PH - (DH * (KH - 1) + 1)) // SH + 1
    OW = (W + 2 * PW - (DW * (KW - 1) + 1)) // SW + 1
    return cg.ConvGeometry(N, C, H, W, CO, OH, OW, KH, KW, SH, SW, PH, PW, DH, DW, G)


# ---- 1. simulator -------------------------------------------------------------------------------

def _run_sim(ks: cg.KernelSource, arena: np.ndarray, params: np.ndarray) -> np.ndarray:
    ns: dict = {}                      # KERNEL_HEADER imports numba.cuda: the simulator, here
    exec(compile(cg.KERNEL_HEADER + ks.source, f"<{ks.name}>", "exec"), ns)
    a = arena.copy()
    ns[ks.name][ks.grid, ks.block](a, params)
    return a


def _check_arena(out, before, lo, ref, relu) -> dict:
    """rel L2 of the output range vs ref; whether anything else in the arena changed."""
    import torch
    ref = torch.relu(ref) if relu else ref
    ref = ref.numpy().reshape(-1)
    got = out[lo:lo + ref.size].astype(np.float64)
    rest_same = bool(np.array_equal(np.delete(out, np.arange(lo, lo + ref.size)),
                                    np.delete(before, np.arange(lo, lo + ref.size)), equal_nan=True))
    return {"rel": float(np.linalg.norm(got - ref) / np.linalg.norm(ref)), "rest_same": rest_same}


def _sim_conv(case) -> dict:
    import torch
    *dims, tile, relu = case
    g = conv_geometry(*dims)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((g.N, g.C, g.H, g.W)).astype(np.float32)
    w = rng.standard_normal((g.CO, g.C // g.G, g.KH, g.KW)).astype(np.float32)
    b = rng.standard_normal(g.CO).astype(np.float32)
    x_off, ny = 7, g.N * g.CO * g.OH * g.OW
    y_off = x_off + x.size + 3
    arena = np.full(y_off + ny + 5, np.nan, np.float32)
    arena[x_off:x_off + x.size] = x.reshape(-1)
    wp = cg.pack_conv_weights(w, g, tile)
    w_off, b_off = 2, 2 + wp.size + 1
    params = np.full(b_off + g.CO + 4, np.nan, np.float32)
    params[w_off:w_off + wp.size], params[b_off:b_off + g.CO] = wp, b
    ks = cg.conv_kernel("k_conv", g, x_off, w_off, b_off, y_off, RELU if relu else [], tile=tile)
    out = _run_sim(ks, arena, params)
    f = lambda a: torch.from_numpy(a).double()  # noqa: E731
    ref = torch.nn.functional.conv2d(f(x), f(w), f(b), (g.SH, g.SW), (g.PH, g.PW), (g.DH, g.DW), g.G)
    assert ref.shape == (g.N, g.CO, g.OH, g.OW)
    return _check_arena(out, arena, y_off, ref, relu)


def _sim_fc(case) -> dict:
    import torch
    R, K, O, tile, relu = case
    rng = np.random.default_rng(2)
    x = rng.standard_normal((R, K)).astype(np.float32)
    w = rng.standard_normal((O, K)).astype(np.float32)
    b = rng.standard_normal(O).astype(np.float32)
    x_off, y_off = 3, 3 + x.size + 2
    arena = np.full(y_off + R * O + 6, np.nan, np.float32)
    arena[x_off:x_off + x.size] = x.reshape(-1)
    wp = cg.pack_fc_weights(w)
    w_off, b_off = 5, 5 + wp.size
    params = np.full(b_off + O + 3, np.nan, np.float32)
    params[w_off:w_off + wp.size], params[b_off:b_off + O] = wp, b
    ks = cg.fc_kernel("k_fc", R, K, O, x_off, w_off, b_off, y_off, RELU if relu else [], tile=tile)
    out = _run_sim(ks, arena, params)
    f = lambda a: torch.from_numpy(a).double()  # noqa: E731
    return _check_arena(out, arena, y_off, torch.nn.functional.linear(f(x), f(w), f(b)), relu)


def _sim_main() -> None:
    assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
    res = {}
    for name, case in CONV_CASES.items():
        res["conv/" + name] = _sim_conv(case)
    for name, case in FC_CASES.items():
        res["fc/" + name] = _sim_fc(case)
    print("RESULTS " + json.dumps(res))


@pytest.fixture(scope="module")
def sim_results() -> dict:
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    r = subprocess.run([sys.executable, __file__, "sim"], env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    line = [l for l in r.stdout.splitlines() if l.startswith("RESULTS ")][-1]
    return json.loads(line[len("RESULTS "):])


@pytest.mark.parametrize("case", ["conv/" + c for c in CONV_CASES] + ["fc/" + c for c in FC_CASES])
def test_simulator_matches_torch(sim_results, case):
    if case.startswith("conv/tap_major"):     # the case exercises the order it is named for
        *dims, tile, _ = CONV_CASES[case[5:]]
        assert cg.tap_major(conv_geometry(*dims), cg.Tile(*tile))
    r = sim_results[case]
    assert r["rel"] < 1e-4, r
    assert r["rest_same"], "the kernel wrote outside its output range"


# ---- 2. every zoo / reference geometry: NVVM + ptxas, zero spills -------------------------------

def _refs() -> Path:
    from conftest import REFS
    return REFS


def gemm_layers(batches=(1,)) -> dict:
    """{("conv", ConvGeometry) | ("fc", R, K, O): first network that has it} over the zoo and the
    analyzable Caffe references."""
    import netc
    from netc.compiler.layers import REGISTRY
    from netc.compiler.network import zoo_names
    sources = list(zoo_names()) + sorted(str(p) for p in _refs().glob("*.prototxt"))
    found = {}
    for src in sources:
        for batch in batches:
            try:
                net = netc.load(src)
                net.analyze(batch=batch)
            except NetcError:
                continue            # reference files netc cannot analyze (documented elsewhere)
            g = net.graph
            for n in g.nodes:
                d = g.nodes[n]
                if not d.get("shapes") or not d.get("in_shapes"):
                    continue
                t, a = d["type"], d["attrs"]
                if t in ("Convolution", "ConvolutionDepthwise"):
                    (N, C, H, W), (_, CO, OH, OW) = d["in_shapes"][0], d["shapes"][0]
                    G = C if t == "ConvolutionDepthwise" else a["group"]
                    key = ("conv", cg.ConvGeometry(N, C, H, W, CO, OH, OW, *a["kernel"], *a["stride"],
                                                   *a["pad"], *a["dilation"], G))
                elif t == "InnerProduct":
                    K = REGISTRY["InnerProduct"].fan_in(d["in_shapes"][0], a)
                    key = ("fc", int(np.prod(d["in_shapes"][0])) // K, K, a["num_output"])
                else:
                    continue
                found.setdefault(key, f"{Path(src).stem}/{n}@{batch}")
    return found


def kernel_for(key) -> cg.KernelSource:
    if key[0] == "conv":
        return cg.conv_kernel("k", key[1], 0, 0, 0, 0, RELU)
    return cg.fc_kernel("k", *key[1:], 0, 0, 0, 0, RELU)


FULL = os.environ.get("NETC_FULL_PTX") == "1" or os.environ.get("NETC_FUZZ") == "1"
ARCHS = {"sm_90": (9, 0), "sm_80": (8, 0)}


def structure(key) -> str:
    """The kernel's text with every number blanked: geometries that differ only in sizes, strides
    and offsets share a structure (same tile, same loaders, same branches)."""
    return re.sub(r"\b\d+\b", "#", kernel_for(key).source)


def representatives(keys) -> list:
    """One geometry per structure, the one with the most multiply-adds (the largest constants)."""
    best = {}
    for k in sorted(keys, key=repr):
        cost = np.prod([v for v in (k[1].__dict__.values() if k[0] == "conv" else k[1:])], dtype=float)
        s = structure(k)
        if s not in best or cost > best[s][0]:
            best[s] = (cost, k)
    return [k for _, k in best.values()]


def spills(keys, arch) -> list:
    """(key, report) of the kernels that spill, could not launch (registers x threads > 64K, static
    shared memory >= 48 KB) or declare other shared memory than their KernelSource says."""
    from netc.runtime.kernel_pool import compile_ptx_many
    bad = []
    sources = [kernel_for(key) for key in keys]
    built = compile_ptx_many([(ks.name, ks.source) for ks in sources], ARCHS[arch], arch)
    for key, ks, (_, rep) in zip(keys, sources, built):
        threads = ks.block[0] * ks.block[1] * ks.block[2]
        if rep["spill_stores"] or rep["spill_loads"] or rep["registers"] > 255 or rep["registers"] * threads > 65536 \
                or rep["shared_bytes"] >= 48 * 1024 or rep["shared_bytes"] != ks.shared_bytes:
            bad.append((key, arch, rep))
    return bad


@pytest.fixture(scope="module")
def geometries() -> list:
    """Batch 1 everywhere and batch 32 (N folds into the GEMM's n, fc rows become a GEMM)."""
    return sorted(set(gemm_layers((1,))) | set(gemm_layers((32,))), key=repr)


def test_geometry_census(geometries):
    """The sweep below really covers the zoo: hundreds of layers, every kernel family."""
    assert len(geometries) > 500, len(geometries)
    fc = [kernel_for(k).source for k in geometries if k[0] == "fc"]
    assert any("red = cuda.shared" in s for s in fc) and any("As = cuda.shared" in s for s in fc)  # GEMV, GEMM
    assert any(k[0] == "conv" and k[1].G > 1 for k in geometries)                # AlexNet groups
    assert any(k[0] == "conv" and k[1].DH > 1 for k in geometries)               # dilated (refs)
    assert len(representatives(geometries)) >= 30


@pytest.mark.parametrize("arch", ["sm_90", "sm_80"])
def test_gemm_kernels_do_not_spill(geometries, arch):
    """Every geometry costs ~3 s (NVVM + ptxas), ~1000 of them per arch: too slow for the default
    run. Default: one geometry per kernel structure for sm_90 (~55, ~1 min in two worker
    processes), every third of those for sm_80; NETC_FULL_PTX=1 or NETC_FUZZ=1: every geometry
    for both (~1.5 h on one core, divided by the worker processes, one per core)."""
    keys = geometries if FULL else representatives(geometries)[:: 1 if arch == "sm_90" else 3]
    t0 = time.time()
    bad = spills(keys, arch)
    print(f"\n{arch}: {len(keys)} kernels compiled with NVVM + ptxas in {time.time() - t0:.0f} s")
    assert not bad, bad[:5]


# ---- 3. code quality ---------------------------------------------------------------------------

def test_big_conv_ptx_is_fma_float32_int32():
    g = conv_geometry(1, 256, 56, 56, 256, 3, 3, 1, 1, 1, 1, 1, 1, 1)    # VGG16 conv3_2
    for tile in (None, (128, 128, 8, 8, 8)):
        ks = cg.conv_kernel("k", g, 11, 13, 17, 19, RELU, tile=tile)
        ptx = compile_kernel_ptx(ks.source, ks.name)
        ffma = ptx.count("fma.rn.f32")
        t = cg.check_tile(cg._as_tile(tile) or cg.choose_tile(256, 56 * 56))
        assert ffma >= t.BK * t.TM * t.TN, ffma          # the unrolled k-step is all FMA
        assert not re.search(r"\.f64\b", ptx), "float64 arithmetic in the kernel"
        assert not re.search(r"\b(div|rem)\.s64", ptx), "signed 64-bit division in the kernel"
        rep = ptxas_report(ptx)
        assert rep["spill_stores"] == rep["spill_loads"] == 0 and rep["shared_bytes"] == ks.shared_bytes


def test_k_loop_issues_mostly_ffma_with_128_bit_shared_loads():
    """In machine code (ptxas merges each thread's run of four adjacent shared reads into one
    LDS.128; PTX cannot show it): one FFMA per multiply-add of the unrolled k-step, a quarter as
    many shared loads, all 128-bit, and a floor on the FFMA share of the loop, which bounds the
    share of FP32 peak (one instruction issued per clock per scheduler). Measured: 0.84 / 0.76 /
    0.69 with k in (kh, kw, c) order (tap_major); 0.78 / 0.72 / 0.62 in (c, kh, kw) order;
    scalar shared reads gave 0.68 / 0.60 / 0.50."""
    from netc.compiler.codegen.ptx import main_loop_mix, nvdisasm_path
    assert nvdisasm_path(), "nvdisasm missing: pip install nvidia-cuda-nvdisasm"
    g = conv_geometry(1, 256, 56, 56, 256, 3, 3, 1, 1, 1, 1, 1, 1, 1)    # VGG16 conv3_2
    for tile, floor in (((128, 128, 8, 8, 8), 0.82), ((128, 64, 8, 8, 4), 0.74), ((64, 64, 8, 4, 4), 0.66)):
        t = cg.Tile(*tile)
        mix = main_loop_mix(compile_kernel_ptx(cg.conv_kernel("k", g, 11, 13, 17, 19, RELU, tile=tile).source, "k"))
        assert mix["ffma"] == t.BK * t.TM * t.TN, (tile, mix)
        assert mix["lds"] == mix["lds128"] == t.BK * (t.TM + t.TN) // 4, (tile, mix)
        assert mix["ffma"] / mix["instructions"] >= floor, (tile, mix)


def test_residual_epilogue_does_not_spill():
    """A ResNet block's add in the GEMM epilogue (one more global load per output, its index
    from the tile position): still no spills and no float64 with the biggest tile."""
    from netc.compiler.codegen.cuda_kit import ux
    g = conv_geometry(1, 64, 56, 56, 256, 1, 1, 1, 1, 0, 0, 1, 1, 1)      # ResNet-50 res2a_branch2c
    add = [f"v = v + A[{ux('1000', 'e')}]"] + RELU
    for tile, arch in ((None, "sm_90"), ((128, 128, 8, 8, 8), "sm_90"), ((128, 128, 8, 8, 8), "sm_80")):
        ks = cg.conv_kernel("k", g, 11, 13, 17, 2_000_000, add, tile=tile)
        ptx = compile_kernel_ptx(ks.source, ks.name, ARCHS[arch])
        assert "A[uint32(1000) + uint32(e)]" in ks.source and not re.search(r"\.f64\b", ptx)
        rep = ptxas_report(ptx, arch)
        assert rep["spill_stores"] == rep["spill_loads"] == 0, (tile, arch, rep)
        if tile:    # two 256-thread blocks per SM: 64K registers / 512 threads
            assert rep["registers"] <= 128, (tile, arch, rep)
        print(tile, arch, rep["registers"])


def test_ptxas_report_parses_and_tool_is_the_wheels():
    path = ptxas_path()
    assert path and "nvidia" in path and path != "/usr/local/bin/ptxas"
    text = ("ptxas info    : Used 40 registers, used 1 barriers, 4096 bytes smem, 380 bytes cmem[0]\n"
            "ptxas info    : Function properties for k\n    16 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads\n")
    assert parse_ptxas(text) == {"registers": 40, "shared_bytes": 4096, "spill_stores": 8, "spill_loads": 12,
                                 "stack_frame": 16}
    with pytest.raises(NetcError):
        ptxas_report("this is not ptx")


def test_tile_choice_and_validation():
    assert cg.choose_tile(512, 224 * 224) == cg.Tile(128, 128, 8, 8, 8)   # big: the largest tile
    small = cg.choose_tile(512, 49)                                       # ResNet stage 5
    assert small.SK > 1 and 512 // small.BM * -(-49 // small.BN) >= 100   # fills most SMs
    assert all(cg.check_tile(t).threads <= 256 for t in cg.TILES)         # 255 registers always launch
    with pytest.raises(NetcError):
        cg.check_tile(cg.Tile(128, 128, 24, 8, 8))                         # not a power of two
    with pytest.raises(NetcError):
        cg.check_tile(cg.Tile(256, 256, 32, 16, 16))                       # > 48 KB of shared memory
    with pytest.raises(NetcError):
        cg.conv_kernel("k", conv_geometry(1, 6, 5, 5, 10, 3, 3, 1, 1, 1, 1, 1, 1, 4), 0, 0, 0, 0, [])
    good = conv_geometry(1, 4, 5, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1)
    with pytest.raises(NetcError):                                         # output size off by one
        cg.conv_kernel("k", dataclasses.replace(good, OH=6), 0, 0, 0, 0, [])
    with pytest.raises(NetcError):                                         # not an identifier
        cg.conv_kernel("k(); import os", good, 0, 0, 0, 0, [])
    with pytest.raises(NetcError):
        cg.fc_kernel("k", 1, 10, 10, 2 ** 31, 0, 0, 0, [])                  # past int32 indices


def test_pack_conv_weights_layout():
    g = conv_geometry(1, 4, 5, 5, 6, 3, 2, 1, 1, 0, 0, 1, 1, 2)
    w = np.arange(6 * 2 * 3 * 2, dtype=np.float32).reshape(6, 2, 3, 2)
    p = cg.pack_conv_weights(w, g).reshape(2, 2 * 3 * 2, 3)               # [G, K, CO/G]
    assert p[1, 0 * 6 + 2 * 2 + 1, 2] == w[3 + 2, 0, 2, 1]                 # k = (c, kh, kw)
    with pytest.raises(NetcError):
        cg.pack_conv_weights(w[:, :1], g)
    # 4 channels per group fill the SMALL tile's 4-row k-tiles: k = (kh, kw, c)
    g = conv_geometry(1, 8, 5, 5, 6, 3, 2, 1, 1, 0, 0, 1, 1, 2)
    w = np.arange(6 * 4 * 3 * 2, dtype=np.float32).reshape(6, 4, 3, 2)
    assert cg.tap_major(g, cg.Tile(*SMALL)) and not cg.tap_major(g, cg.Tile(16, 16, 8, 2, 2))
    p = cg.pack_conv_weights(w, g, SMALL).reshape(2, 3 * 2 * 4, 3)
    assert p[1, (2 * 2 + 1) * 4 + 3, 2] == w[3 + 2, 3, 2, 1]
    assert np.array_equal(cg.pack_conv_weights(w, g, (16, 16, 8, 2, 2)).reshape(2, 24, 3)[1, 3 * 6 + 2 * 2 + 1, 2],
                          w[5, 3, 2, 1])


# ---- bench/gpu.py without a GPU ------------------------------------------------------------------

BENCH = Path(__file__).resolve().parent.parent / "bench" / "gpu.py"


def test_gpu_bench_arithmetic_and_arguments():
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    flops, nbytes = gpu.sgemm_cost(4096)
    assert flops == 2 * 4096 ** 3 and nbytes == 3 * 4 * 4096 ** 2
    assert gpu.roofline_s(flops, nbytes) == pytest.approx(2 * 4096 ** 3 / 66.9e12)   # compute-bound
    assert gpu.roofline_s(1e6, 3e9) == pytest.approx(1e-3)                            # memory-bound
    assert gpu.use_device_peaks("NVIDIA H100 80GB HBM3") == (66.9e12, 3.0e12)
    assert gpu.use_device_peaks("NVIDIA H200") == (66.9e12, 4.3e12)
    assert gpu.roofline_s(1e6, 4.3e9) == pytest.approx(1e-3)
    a = gpu.parse_args(["--models", "vgg16,resnet50", "--batches", "1,32", "--iters", "5"])
    assert a.models == ["vgg16", "resnet50"] and a.batches == [1, 32] and a.iters == 5 and a.sgemm == 4096
    with pytest.raises(SystemExit):
        gpu.parse_args(["--batches", "0"])


def test_gpu_bench_network_path_in_the_simulator(tmp_path):
    """The part of bench/gpu.py a GPU session cannot afford to find broken: one network through
    compile, the torch reference (on the CPU here), whole-network and per-step timing, roofline
    and cache figures, into JSON. The simulator's event times are meaningless; the rest is not."""
    from nets import inp, layer
    model = tmp_path / "small.prototxt"       # the layer types the torch reference (bench/cpu.py) knows
    model.write_text(inp(1, 3, 6, 6) + "".join([
        layer("c1", "Convolution", "data", "c1", "convolution_param { num_output: 4 kernel_size: 3 pad: 1 }"),
        layer("bn", "BatchNorm", "c1", "c1"), layer("sc", "Scale", "c1", "c1", "scale_param { bias_term: true }"),
        layer("r1", "ReLU", "c1", "c1"),
        layer("c2", "Convolution", "c1", "c2", "convolution_param { num_output: 4 kernel_size: 1 }"),
        layer("add", "Eltwise", ["c2", "c1"], "add"),
        layer("lrn", "LRN", "add", "lrn", "lrn_param { local_size: 3 }"),
        layer("cat", "Concat", ["lrn", "c1"], "cat"),
        layer("pool", "Pooling", "cat", "pool", "pooling_param { pool: MAX kernel_size: 3 stride: 2 }"),
        layer("fc", "InnerProduct", "pool", "fc", "inner_product_param { num_output: 10 }"),
        layer("prob", "Softmax", "fc", "prob")]), encoding="utf-8")
    code = ("import importlib.util, json, sys, time\n"
            "spec = importlib.util.spec_from_file_location('bench_gpu', %r)\n"
            "gpu = importlib.util.module_from_spec(spec); spec.loader.exec_module(gpu)\n"
            "import torch\n"
            "from numba import cuda\n"
            "def cpu_ms(torch, fn, iters):\n"
            "    t0 = time.perf_counter(); fn(); return (time.perf_counter() - t0) * 1e3\n"
            "gpu.torch_median_ms = cpu_ms\n"
            "r = gpu.bench_network(cuda, torch, %r, 1, 1, device='cpu', tune=True)\n"
            "print(json.dumps(r))\n") % (str(BENCH), str(model))
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", NETC_CACHE=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600,
                       cwd=Path(__file__).parent)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["rel_err"] < 1e-4 and out["batch"] == 1 and out["torch_ms"] > 0
    assert out["workers"] is None and out["cache"] == {"hits": 0, "misses": 0}   # simulator: nothing compiled
    assert out["compile_s"] > 0 and out["first_run_s"] > 0
    types = [s["type"] for s in out["steps"]]
    assert "Convolution" in types and all(s["floor_ms"] > 0 for s in out["steps"]), out["steps"]
    assert all(len(s["kernels"]) == len(s["grids"]) for s in out["steps"])
    # --tune: the network again on timed tiles (c1, c2 and fc are GEMM problems), same answer
    assert sorted(l for t in out["tuned"] for l in t["layers"]) == ["c1", "c2", "fc"]
    assert out["tuned_rel_err"] < 1e-4 and out["tuned_ms"] is not None and out["tune_s"] > 0


def test_gpu_bench_without_a_gpu_exits_with_a_message():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", NUMBA_ENABLE_CUDASIM="0")
    r = subprocess.run([sys.executable, str(BENCH), "--sgemm", "64", "--models", ""], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "needs an NVIDIA GPU" in r.stderr and "Traceback" not in r.stderr


if __name__ == "__main__" and sys.argv[1:] == ["sim"]:
    _sim_main()
