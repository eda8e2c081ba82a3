"""The CUDA target without a GPU.

1. The simulator (NUMBA_ENABLE_CUDASIM=1, which must be set before numba.cuda is first
   imported, so it runs in a subprocess: this file run as a script) executes small networks
   that use every layer type the CPU target runs; their outputs must match the CPU target and
   PyTorch (float64, tests/reference.py) to 1e-4 relative L2. The session computes the cases
   of the selected tests only, all in one subprocess.
2. Every generated non-GEMM kernel of the zoo and of the analyzable refs/caffe networks compiles
   to PTX and `ptxas -v` reports no spills (the GEMM kernels have their own test); one kernel of
   each kind, at realistic sizes, has int32 index math and no float64 in its PTX.
3. The CLI: `run --gpu` without a GPU is a clear error; `build --target cuda` writes the module,
   PTX per kernel and a manifest.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hostile import HOSTILE, _quote
from nets import CONV_NET, POINT_NET, POOL_NET, RESIDUAL_NET, inp, layer
from reference import rel

HERE = Path(__file__).resolve()
TOL = 1e-4

# ---- networks ------------------------------------------------------------------------------------
# index math at the edges: sizes that no tile divides, groups whose channel counts no tile
# divides, 1x1 spatial maps, batch 2, InnerProduct as GEMV (R = 2) and as tiled GEMM (R = 24)
EDGE_NET = inp(2, 5, 7, 9) + "".join([
    layer("wide", "Convolution", "data", "wide", "convolution_param { num_output: 70 kernel_size: 3 pad: 1 }"),
    layer("wide_relu", "ReLU", "wide", "wide"),
    layer("grp", "Convolution", "wide", "grp", "convolution_param { num_output: 15 kernel_size: 3 stride: 2 group: 5 }"),
    layer("gap", "Pooling", "grp", "gap", "pooling_param { pool: AVE global_pooling: true }"),
    layer("one", "Convolution", "gap", "one", "convolution_param { num_output: 9 kernel_size: 1 }"),
    layer("one3", "Convolution", "one", "one3", "convolution_param { num_output: 6 kernel_size: 3 pad: 1 group: 3 }"),
    layer("dw1", "ConvolutionDepthwise", "one3", "dw1", "convolution_param { num_output: 6 kernel_size: 3 pad: 1 }"),
    layer("fc", "InnerProduct", "dw1", "fc", "inner_product_param { num_output: 11 }"),
    layer("fc_sig", "Sigmoid", "fc", "fc"),
    layer("rows", "InnerProduct", "grp", "rows", "inner_product_param { num_output: 13 axis: 2 }"),
    layer("rows_tanh", "TanH", "rows", "rows"),
])

# producers that write straight into their concat slice (batch 1): a conv with its fused ReLU,
# a 1x1 conv, a pooling, an eltwise, a nested concat; plus inputs that must be copied (the
# network input, a blob with a second reader)
CONCAT_NET = inp(1, 3, 6, 7) + "".join([
    layer("a", "Convolution", "data", "a", "convolution_param { num_output: 4 kernel_size: 3 pad: 1 }"),
    layer("a_relu", "ReLU", "a", "a"),
    layer("b", "Convolution", "data", "b", "convolution_param { num_output: 5 kernel_size: 1 }"),
    layer("p", "Pooling", "data", "p", "pooling_param { pool: MAX kernel_size: 3 stride: 1 pad: 1 }"),
    layer("inner", "Concat", ["a", "b"], "inner"),
    layer("e", "Eltwise", ["p", "data"], "e", "eltwise_param { operation: SUM coeff: 0.5 coeff: 2 }"),
    layer("cat", "Concat", ["inner", "p", "e", "data"], "cat"),
    layer("mix", "Convolution", "cat", "mix", "convolution_param { num_output: 3 kernel_size: 3 pad: 1 }"),
    layer("side", "Pooling", "p", "side", "pooling_param { pool: AVE kernel_size: 2 stride: 2 }"),
])


# long softmax axes get a block per row (shared-memory max and sum trees): a row longer than
# the block (300 > 256 threads), one shorter than it (130 of 256), rows strided by an inner
# extent (axis 1 of (1, 130, 3)); a short axis keeps one thread per row
SOFTMAX_NET = inp(2, 300) + inp(1, 130, 3, name="x2") + "".join([
    layer("long", "Softmax", "data", "long"),
    layer("strided", "Softmax", "x2", "strided"),
    layer("short", "Softmax", "x2", "short", "softmax_param { axis: 2 }"),
])


# channel concat at batch 2: producers whose kernels write with the concat's per-image stride
# (a GEMM conv with its ReLU, a depthwise conv, PReLU, LRN, a nested concat's producers) and
# one that cannot (a deconvolution: its own buffer, copied); CONCAT_NET at batch 2 as well
CONCAT2_NET = inp(2, 3, 6, 7) + "".join([
    layer("a", "Convolution", "data", "a", "convolution_param { num_output: 4 kernel_size: 3 pad: 1 }"),
    layer("a_relu", "ReLU", "a", "a"),
    layer("up", "Deconvolution", "data", "up", "convolution_param { num_output: 2 kernel_size: 1 }"),
    layer("dw", "ConvolutionDepthwise", "data", "dw", "convolution_param { num_output: 3 kernel_size: 3 pad: 1 }"),
    layer("pr", "PReLU", "dw", "pr"),
    layer("ln", "LRN", "data", "ln", "lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 }"),
    layer("cat", "Concat", ["a", "up", "pr", "ln"], "cat"),
    layer("mix", "Convolution", "cat", "mix", "convolution_param { num_output: 3 kernel_size: 1 }"),
])


# k in (kh, kw, c) order (cuda_gemm.tap_major: 32 channels fill the default 16x16 tile's 32-row
# k-tiles) at batch 2, with a folded BatchNorm/Scale, a fused ReLU and a residual add in the
# second conv's epilogue
TAP_NET = inp(2, 32, 5, 6) + "".join([
    layer("t1", "Convolution", "data", "t1", "convolution_param { num_output: 32 kernel_size: 3 pad: 1 }"),
    layer("t1_bn", "BatchNorm", "t1", "t1"),
    layer("t1_sc", "Scale", "t1", "t1", "scale_param { bias_term: true }"),
    layer("t1_relu", "ReLU", "t1", "t1"),
    layer("t2", "Convolution", "t1", "t2", "convolution_param { num_output: 32 kernel_h: 3 kernel_w: 1 pad_h: 2 pad_w: 0 dilation: 2 }"),
    layer("add", "Eltwise", ["t2", "t1"], "add"),
    layer("add_relu", "ReLU", "add", "add"),
])


def hostile_net() -> str:
    """Layer and blob names from hostile.HOSTILE on a small conv network."""
    h = [_quote(s) for s in HOSTILE]
    lines = [f"name: {h[0]}", f"input: {h[1]}", "input_shape { dim: 1 dim: 3 dim: 6 dim: 6 }",
             f"layer {{ name: {h[2]} type: \"Convolution\" bottom: {h[1]} top: {h[3]} "
             "convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }",
             f"layer {{ name: {h[4]} type: \"ReLU\" bottom: {h[3]} top: {h[3]} }}",
             f"layer {{ name: {h[5]} type: \"Pooling\" bottom: {h[3]} top: {h[6]} pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}",
             f"layer {{ name: {h[7]} type: \"Convolution\" bottom: {h[1]} top: {h[8]} "
             "convolution_param { num_output: 2 kernel_size: 2 stride: 2 } }",
             f"layer {{ name: {h[9]} type: \"Concat\" bottom: {h[6]} bottom: {h[8]} top: {h[10]} }}",
             f"layer {{ name: {h[11]} type: \"InnerProduct\" bottom: {h[10]} top: {h[12]} "
             "inner_product_param { num_output: 3 } }",
             f"layer {{ name: {h[13]} type: \"Softmax\" bottom: {h[12]} top: {h[14]} }}"]
    return "\n".join(lines) + "\n"


# x + conv(x) with x dying at the add: the add would write over x while the GEMM still reads it
IN_PLACE_ADD_NET = inp(1, 4, 6, 6) + "".join([
    layer("r", "Convolution", "data", "r", "convolution_param { num_output: 4 kernel_size: 3 pad: 1 }"),
    layer("s", "Eltwise", ["data", "r"], "s"),
    layer("s_relu", "ReLU", "s", "s"),
])


# case -> (network text, batch, also compare every blob with fusion and concat slices off)
CASES = {
    "conv": (CONV_NET, 2, False),
    "pool": (POOL_NET, 1, False),
    "point": (POINT_NET, 2, True),
    "point_b1": (POINT_NET, 1, False),
    "edge": (EDGE_NET, 2, False),
    "concat": (CONCAT_NET, 1, True),
    "hostile": (hostile_net(), 1, False),
    "softmax": (SOFTMAX_NET, 2, False),
    "concat_b2": (CONCAT_NET, 2, False),
    "concat2": (CONCAT2_NET, 2, False),
    "residual": (RESIDUAL_NET, 2, True),
    "residual_in_place": (IN_PLACE_ADD_NET, 1, False),
    "tap_major": (TAP_NET, 2, False),
    # the int64 fallback of the non-GEMM kernels (offsets past int32), forced on small networks
    "wide_pool": (POOL_NET, 1, False),
    "wide_point": (POINT_NET, 1, False),
}


# ---- the simulator side (this file run as a script) ---------------------------------------------
def simulate(case: str) -> dict:
    """Run one case on the CUDA target (simulator) and the CPU target; errors against both and
    against the torch reference, per blob."""
    from netc.compiler.network import loads
    from reference import torch_forward
    from netc.compiler.codegen import cuda as cuda_codegen
    text, batch, all_blobs = CASES[case]
    cuda_codegen.INT32_INDEX_LIMIT = 0 if case.startswith("wide") else cuda_codegen.gemm.INDEX_LIMIT
    net = loads(text, path="x.prototxt")
    ex = net.compile(target="cuda", batch=batch)
    cpu = net.compile(target="cpu", batch=batch)
    rng = np.random.default_rng(7)
    feeds = {b: rng.standard_normal(ex.input_shape(b)).astype(np.float32) for b in ex.required_inputs}
    t0 = time.perf_counter()
    got = ex.run(feeds)
    seconds = time.perf_counter() - t0
    want = cpu.run(feeds)
    ref = torch_forward(net, ex.weights, feeds)
    out = {"outputs": {o: [rel(got[o], want[o]), rel(got[o], ref[o]), list(got[o].shape), list(ref[o].shape)]
                       for o in ex.outputs},
           "same_outputs_as_cpu": sorted(ex.outputs) == sorted(cpu.outputs),
           "arena_bytes": ex.arena_bytes, "cpu_arena_bytes": cpu.arena_bytes, "seconds": seconds,
           "source": ex.program.source,
           "concat_launches": {s.layers[0]: len(s.launches) for s in ex.program.steps if s.type == "Concat"}}
    if all_blobs:
        names = [b for b in ex.blob_key if b not in ex.inputs]
        ex2 = net.compile(target="cuda", batch=batch, blobs=names)
        got2 = ex2.run(feeds, blobs=names)
        out["blobs"] = {b: rel(got2[b], ref[b]) for b in names}
    return out



# ---- the pytest side -----------------------------------------------------------------------------
def uses(*cases: str):
    """The simulator cases a test reads: the session computes only those of the selected tests."""
    assert set(cases) <= set(CASES), set(cases) - set(CASES)

    def mark(test):
        test.sim_cases = cases
        return test
    return mark


@pytest.fixture(scope="session")
def sim(request) -> dict:
    """case -> results for the cases of the tests this session runs (after -k, -m, node ids),
    computed in one subprocess (imports cost seconds); "_seconds": that subprocess's wall time."""
    wanted = {c for item in request.session.items for c in getattr(getattr(item, "function", None), "sim_cases", ())}
    cases = [c for c in CASES if c in wanted]
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(HERE), *cases], env=env, capture_output=True, text=True,
                       cwd=HERE.parent, timeout=1200)
    assert r.returncode == 0, r.stderr[-5000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["_seconds"] = time.perf_counter() - t0
    return out


def check_case(sim: dict, case: str) -> dict:
    assert case in sim, f"simulator case {case!r} not computed: list it in the test's @uses(...)"
    r = sim[case]
    assert r["same_outputs_as_cpu"]
    for o, (vs_cpu, vs_torch, shape, ref_shape) in r["outputs"].items():
        assert shape == ref_shape, (o, shape, ref_shape)
        assert vs_cpu < TOL and vs_torch < TOL, (case, o, vs_cpu, vs_torch)
    for b, err in r.get("blobs", {}).items():
        assert err < TOL, (case, b, err)
    return r


@uses("conv")
def test_sim_conv_family_batch_two(sim):
    """Grouped, dilated, strided, depthwise, 1x1 and transposed convolutions with folded
    BatchNorm/Scale and fused activations, InnerProduct (plain and transposed), Softmax."""
    check_case(sim, "conv")


@uses("pool")
def test_sim_pooling_and_lrn_caffe_rounding(sim):
    check_case(sim, "pool")


@uses("point", "point_b1")
def test_sim_pointwise_merge_and_data_movement(sim):
    """Every activation, PReLU, Eltwise, standalone affine layers, Concat/Slice/Split/Crop/
    Permute/ShuffleChannel/Normalize/Flatten/Reshape, Scale/Bias from a second blob; again
    with every blob kept readable (no fusion may hide a wrong intermediate)."""
    check_case(sim, "point")
    check_case(sim, "point_b1")


@uses("edge")
def test_sim_index_math_edges(sim):
    check_case(sim, "edge")


@uses("concat")
def test_sim_concat_producers_write_their_slices(sim):
    r = check_case(sim, "concat")
    # inner's producers (a conv with its fused ReLU, a 1x1 conv) and inner itself wrote in
    # place; cat copies only its two inputs that have other readers (p, the network input)
    assert r["concat_launches"] == {"inner": 0, "cat": 2}, r["concat_launches"]
    # the CPU's buffer plan, less the buffers of producers that wrote into the concat instead
    assert r["arena_bytes"] < r["cpu_arena_bytes"]


@uses("softmax")
def test_sim_softmax_rows_per_block(sim):
    r = check_case(sim, "softmax")
    assert r["source"].count("cuda.syncthreads()") >= 4 and "k_softmaxrow_" in r["source"]
    assert "k_softmax_" in r["source"]


@uses("tap_major")
def test_sim_tap_major_convolutions_with_fold_and_residual(sim):
    r = check_case(sim, "tap_major")
    assert r["source"].count("tap = int32") >= 2, "the case no longer exercises the (kh, kw, c) order"


@uses("wide_pool", "wide_point")
def test_sim_int64_index_fallback(sim):
    """Past the int32 range the kernels keep numba's int64 index math (no int32 casts)."""
    for case in ("wide_pool", "wide_point"):
        r = check_case(sim, case)
        kernels = r["source"].split("@cuda.jit")[1:]
        own = [k for k in kernels if "k_conv_" not in k and "k_fc_" not in k]
        assert own and not any("int32(" in k for k in own), case


@uses("concat_b2", "concat2")
def test_sim_concat_slices_with_an_image_stride_at_batch_two(sim):
    r = check_case(sim, "concat_b2")
    # a, b (GEMM convs) and e (eltwise) write strided slices; inner (a concat: copies) is
    # copied into cat like p and the network input
    assert r["concat_launches"] == {"inner": 0, "cat": 3}, r["concat_launches"]
    assert r["arena_bytes"] < r["cpu_arena_bytes"]
    r = check_case(sim, "concat2")
    assert r["concat_launches"] == {"cat": 1}, r["concat_launches"]     # only the deconvolution


def program_of(text: str, batch: int, target_lower=None):
    from netc.compiler.network import loads
    from netc.runtime.executor import generate
    net = loads(text, path="x.prototxt")
    return net.graph, generate(net, batch=batch, target_lower=target_lower)[0]


@uses("residual", "residual_in_place")
def test_sim_residual_adds_run_in_the_gemm_epilogue(sim):
    """The CPU's absorb_merge on the GPU: an Eltwise right after a GEMM convolution is its
    epilogue (SUM with coefficients, three operands, MAX, PROD, batch 2; x + conv(x) with x
    dying at the add). The kernel writes the sum while other blocks still read the
    convolution's input, so the two must never share arena memory."""
    from netc.compiler.layers import numel
    from netc.runtime.cuda_executor import cuda_lower
    check_case(sim, "residual")
    check_case(sim, "residual_in_place")
    for text, batch in ((RESIDUAL_NET, 2), (IN_PLACE_ADD_NET, 1)):
        g, prog = program_of(text, batch, cuda_lower)
        merged = [s.layers for s in prog.steps if any(g.nodes[n]["type"] == "Eltwise" for n in s.layers[1:])]
        _, cpu = program_of(text, batch)
        assert merged == [s.layers for s in cpu.steps if len(s.layers) > 1 and
                          any(g.nodes[n]["type"] == "Eltwise" for n in s.layers[1:])]
        assert len(merged) == (5 if text is RESIDUAL_NET else 1), merged
        for layers in merged:
            (x_at, x_shape), (y_at, y_shape) = prog.places[g.nodes[layers[0]]["inputs"][0]], prog.places[(layers[-1], 0)]
            assert x_at + numel(x_shape) <= y_at or y_at + numel(y_shape) <= x_at, layers


def test_cuda_source_does_not_depend_on_the_hash_seed():
    """Arena offsets are literals in the kernels: the layout (concat slices, residual adds,
    births moved in forward order) must not follow set or dict order of node names."""
    code = ("import sys, hashlib; sys.path.insert(0, %r)\n"
            "import nets as T\n"
            "from netc.compiler.network import loads\n"
            "from netc.runtime.executor import generate\n"
            "from netc.runtime.cuda_executor import cuda_lower\n"
            "for text in (T.RESIDUAL_NET, T.POINT_NET):\n"
            "    src = generate(loads(text, path='x.prototxt'), batch=2, target_lower=cuda_lower)[0].source\n"
            "    print(hashlib.sha1(src.encode()).hexdigest())\n") % str(HERE.parent)
    outs = set()
    for seed in ("1", "2", "3"):
        env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
        r = subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONHASHSEED": seed},
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        outs.add(r.stdout)
    assert len(outs) == 1, outs


@uses("hostile")
def test_sim_hostile_names_stay_out_of_the_source(sim):
    r = check_case(sim, "hostile")
    for name in HOSTILE:
        assert name not in r["source"], name
    assert "__import__" not in r["source"] and "PWNED" not in r["source"]
    assert r["seconds"] >= 0 and sim["_seconds"] < 600, sim["_seconds"]



# ---- PTX and ptxas: no spills --------------------------------------------------------------------
# refs/caffe networks no target can run: PriorBox, Python layers, a Crop Caffe would reject
NOT_RUNNABLE = {"SSD300", "fasterRCNN_AlexNet", "fasterRCNN_ResNet", "fasterRCNN_VGG", "fasterRCNN_ZynqNet",
                "fcn-16s"}


def own_kernels(model) -> dict:
    """kernel source -> (model, kernel name) for the non-GEMM kernels of `model` at batch 1
    (weights are zeros: they do not change a kernel's text)."""
    from netc.compiler.codegen.cuda import lower
    from netc.compiler.network import load
    from netc.runtime import weights as wmod
    from netc.compiler.passes import refuse_soft_shapes
    net = load(model)
    net.analyze(batch=1)
    g = net.graph
    refuse_soft_shapes(g, "execute")
    w = {k: np.zeros(s, np.float32) for k, s in wmod.expected(g).items()}
    buffer_of = {(n, p): b for n in g.nodes for p, b in enumerate(g.nodes[n]["buffer_of"])}
    prog = lower(g, w, buffer_of)
    return {src: (str(model), name) for name, src in prog.kernels.items()
            if not name.startswith(("k_conv_", "k_fc_"))}   # GEMM kernels: test_cuda_gemm


def test_every_non_gemm_kernel_assembles_without_spills(refs):
    """sm_90 for every distinct kernel; sm_80 for the first of each kind and every 8th other
    (all of them with NETC_FULL_PTX=1): a full second pass would double this test's minutes."""
    from netc.compiler.codegen.ptx import ptxas_path
    from netc.compiler.errors import NetcError
    from netc.compiler.network import zoo_names
    from netc.runtime.kernel_pool import compile_ptx_many
    assert ptxas_path(), "ptxas missing: pip install nvidia-cuda-nvcc-cu12"
    t0 = time.perf_counter()
    kernels, failed = {}, set()
    models = zoo_names() + sorted(refs.glob("*.prototxt"))
    for m in models:
        try:
            for src, where in own_kernels(m).items():
                kernels.setdefault(src, where)
        except NetcError:
            failed.add(Path(m).stem)
    assert failed == NOT_RUNNABLE
    full = os.environ.get("NETC_FULL_PTX") == "1"
    kinds, todo = set(), {"sm_90": [], "sm_80": []}
    for k, (src, (model, name)) in enumerate(kernels.items()):
        kind = name.rsplit("_", 1)[0]
        todo["sm_90"].append((src, model, name))
        if full or kind not in kinds or k % 8 == 0:
            todo["sm_80"].append((src, model, name))
        kinds.add(kind)
    for arch, items in todo.items():
        built = compile_ptx_many([(name, src) for src, _, name in items], (int(arch[3]), int(arch[4])), arch)
        for (src, model, name), (_, rep) in zip(items, built):
            assert rep["spill_stores"] == rep["spill_loads"] == 0, (model, name, arch, rep)
            assert rep["stack_frame"] == 0, (model, name, arch, rep)
    checked = {arch: len(items) for arch, items in todo.items()}
    seconds = time.perf_counter() - t0
    print(f"{len(models)} networks, {len(kernels)} distinct kernels, {checked} assembled in {seconds:.0f} s")
    assert len(kernels) > 100 and {"k_pool", "k_lrn", "k_dwconv", "k_softmax", "k_eltwise"} <= kinds


# realistic layer shapes (GoogLeNet/AlexNet/MobileNet sizes) for one kernel of each kind;
# batch 2, so the concat copies
KINDS_NET = inp(2, 64, 56, 56) + "".join([
    layer("pool", "Pooling", "data", "pool", "pooling_param { pool: MAX kernel_size: 3 stride: 2 }"),
    layer("apool", "Pooling", "data", "apool", "pooling_param { pool: AVE kernel_size: 3 stride: 1 pad: 1 }"),
    layer("lrn", "LRN", "pool", "lrn", "lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }"),
    layer("lrnw", "LRN", "pool", "lrnw", "lrn_param { local_size: 3 alpha: 0.0001 beta: 0.75 norm_region: WITHIN_CHANNEL }"),
    layer("dw", "ConvolutionDepthwise", "pool", "dw", "convolution_param { num_output: 64 kernel_size: 3 pad: 1 }"),
    layer("dw_bn", "BatchNorm", "dw", "dw"),
    layer("dw_relu", "ReLU", "dw", "dw"),
    layer("up", "Deconvolution", "lrn", "up", "convolution_param { num_output: 32 kernel_size: 4 stride: 2 pad: 1 }"),
    layer("bn", "BatchNorm", "lrnw", "bn"),
    layer("sum", "Eltwise", ["dw", "bn"], "sum"),
    layer("sum_relu", "ReLU", "sum", "sum"),
    layer("prelu", "PReLU", "sum", "prelu"),
    layer("sig", "Sigmoid", "pool", "sig"),
    layer("cat", "Concat", ["sig", "prelu"], "cat"),
    layer("shuf", "ShuffleChannel", "cat", "shuf", "shuffle_channel_param { group: 4 }"),
    layer("l2", "Normalize", "shuf", "l2", "norm_param { across_spatial: false }"),
    layer("l2s", "Normalize", "shuf", "l2s", "norm_param { across_spatial: true }"),
    layer("gap", "Pooling", "l2", "gap", "pooling_param { pool: AVE global_pooling: true }"),
    layer("fc", "InnerProduct", "gap", "fc", "inner_product_param { num_output: 1000 }"),
    layer("prob", "Softmax", "fc", "prob"),
    layer("segprob", "Softmax", "pool", "segprob"),
])
NARROW_KINDS = {"k_pool", "k_lrn", "k_lrnwc", "k_dwconv", "k_deconv", "k_affine", "k_eltwise", "k_prelu",
                "k_sigmoid", "k_copy", "k_l2norm", "k_softmax", "k_softmaxrow"}


def test_index_math_is_32_bit_and_constants_float32(tmp_path, monkeypatch):
    """One kernel of each kind for a realistic layer: its PTX has no float64 instruction, no
    64-bit division or remainder (nor the multiply-high sequence NVVM makes of a division by a
    constant) and no signed 64-bit compare (int32/uint32 index math, KERNELS.md). With the offsets
    forced past int32 the same kernels fall back to int64 index math and still assemble."""
    from netc.compiler.codegen import cuda as cuda_codegen
    from netc.compiler.codegen.ptx import compile_kernel_ptx
    model = tmp_path / "kinds.prototxt"
    model.write_text(KINDS_NET, encoding="utf-8")
    for wide in (False, True):
        monkeypatch.setattr(cuda_codegen, "INT32_INDEX_LIMIT", 0 if wide else cuda_codegen.gemm.INDEX_LIMIT)
        first = {}
        for src, (_, name) in own_kernels(model).items():
            first.setdefault(name.rsplit("_", 1)[0], (src, name))
        assert set(first) == NARROW_KINDS, set(first) ^ NARROW_KINDS
        for kind, (src, name) in sorted(first.items()):
            assert ("int32(" in src) != wide, (kind, src)
            ptx = compile_kernel_ptx(src, name)
            body = ptx[ptx.index(".entry"):]
            assert ".f64" not in body, (kind, wide, src)
            if not wide:   # 64-bit division, its multiply-high form, int64 compares (wraparound checks)
                bad = re.findall(r"\b(?:(?:div|rem|mul\.hi)\.[su]64|setp\.\w+\.s64)\b", body)
                assert not bad, (kind, bad, src)


# ---- the CLI -------------------------------------------------------------------------------------
def test_run_gpu_without_a_gpu_is_a_clear_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["CUDA_VISIBLE_DEVICES"] = ""    # no GPU, even on a machine that has one
    r = subprocess.run([sys.executable, "-m", "netc.cli", "run", "lenet", "--gpu"], env=env,
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "no CUDA GPU found" in r.stderr and "NUMBA_ENABLE_CUDASIM=1" in r.stderr
    assert "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "netc.cli", "bench", "lenet", "--gpu"], env=env,
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and "no CUDA GPU found" in r.stderr


def test_run_and_bench_gpu_in_the_simulator(tmp_path):
    """`run --gpu` takes the CPU's options and gives the CPU's numbers; `bench --gpu` reports."""
    model = tmp_path / "tiny.prototxt"
    model.write_text(inp(1, 3, 6, 6) + layer("p", "Pooling", "data", "p", "pooling_param { pool: MAX kernel_size: 2 stride: 2 }")
                     + layer("s", "Softmax", "p", "s"), encoding="utf-8")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    x = np.random.default_rng(3).standard_normal((2, 3, 6, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    outs = {}
    for target, flag in (("gpu", ["--gpu"]), ("cpu", [])):
        r = subprocess.run([sys.executable, "-m", "netc.cli", "run", str(model), "--input", str(tmp_path / "x.npy"),
                            "--output", str(tmp_path / f"{target}.npy"), "--blobs", "p",
                            "--blobs-out", str(tmp_path / f"{target}.npz"), *flag], env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        outs[target] = (np.load(tmp_path / f"{target}.npy"), np.load(tmp_path / f"{target}.npz")["p"])
    ref = x.reshape(2, 3, 3, 2, 3, 2).max(axis=(3, 5))
    np.testing.assert_allclose(outs["gpu"][1], ref, rtol=1e-6)
    np.testing.assert_allclose(outs["gpu"][0], outs["cpu"][0], rtol=1e-5)
    np.testing.assert_allclose(outs["gpu"][0].sum(axis=1), 1.0, rtol=1e-5)
    r = subprocess.run([sys.executable, "-m", "netc.cli", "bench", str(model), "--gpu", "--iters", "1",
                        "--format", "json"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    b = json.loads(r.stdout)
    assert b["target"] == "cuda" and b["median_ms"] > 0 and [s["layer"] for s in b["slowest"]] != []

def test_build_cuda_writes_module_ptx_and_manifest(tmp_path, monkeypatch):
    from netc.cli import main
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "hostile.prototxt"
    src.write_text(hostile_net(), encoding="utf-8")
    out = tmp_path / "out"
    assert main(["build", str(src), "--target", "cuda", "--arch", "sm_90", "-o", str(out)]) == 0
    man = json.loads((out / "manifest.json").read_text())
    module = (out / man["module"]).read_text()
    for name in HOSTILE:
        assert name not in module, name
    assert man["arch"] == "sm_90" and man["ptxas"] is True
    heads = [HOSTILE[k] for k in (2, 5, 7, 9, 11, 13)]
    assert [s["layers"][0] for s in man["steps"]] == heads
    assert man["steps"][0]["layers"] == [HOSTILE[2], HOSTILE[4]]          # the ReLU ran in the conv
    launched = {l["kernel"] for s in man["steps"] for l in s["launches"]}
    assert launched == set(man["kernels"]) and len(launched) == 5
    assert man["steps"][3]["launches"] == []             # the concat's producers wrote its slices
    for name, k in man["kernels"].items():
        assert f"def {name}(A, P):" in module
        ptx = (out / k["ptx"]).read_text()
        assert ".target sm_90" in ptx and ".entry" in ptx
        assert k["ptxas"]["registers"] > 0 and k["ptxas"]["spill_stores"] == 0
        loop = k["ptxas"]["main_loop"]        # nvdisasm is a test dependency
        assert loop["ffma"] <= loop["instructions"], (name, loop)
    for s in man["steps"]:
        for l in s["launches"]:
            assert len(l["grid"]) == len(l["block"]) == 3 and l["block"][0] <= 1024
    assert not (tmp_path / "PWNED").exists()
    assert main(["build", str(src), "--target", "cuda", "--arch", "90", "-o", str(out)]) == 2
    # a conv with a k loop (K = 64*9 in 8-row k-tiles): its FFMA share is the network's
    conv = tmp_path / "conv.prototxt"
    conv.write_text(inp(1, 64, 16, 16) + layer("c", "Convolution", "data", "c",
                    "convolution_param { num_output: 64 kernel_size: 3 pad: 1 }"), encoding="utf-8")
    assert main(["build", str(conv), "--target", "cuda", "-o", str(tmp_path / "c"), "-j", "1"]) == 0
    man = json.loads((tmp_path / "c" / "manifest.json").read_text())
    (loop,) = [k["ptxas"]["main_loop"] for k in man["kernels"].values()]
    assert loop["ffma"] > 0 and man["gemm_ffma_share"] == pytest.approx(loop["ffma"] / loop["instructions"])
    assert 0.25 < man["gemm_ffma_share"] < 1.0, man["gemm_ffma_share"]    # a small tile here: few blocks


if __name__ == "__main__":
    assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", "run me with NUMBA_ENABLE_CUDASIM=1"
    print(json.dumps({case: simulate(case) for case in sys.argv[1:]}))
