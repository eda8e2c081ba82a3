"""CPU execution against PyTorch: every layer type, Caffe's quirks, two real networks.

The reference (tests/reference.py) walks the IR and applies torch ops per layer type in float64
with the raw (unfolded) weights, so folding, fusion, the arena and every kernel are checked at once.
"""
from __future__ import annotations

import numpy as np
import pytest

import netc
from netc.compiler.errors import NetcError
from netc.compiler.network import loads
from netc.runtime import weights as wmod

from conftest import REFS
from nets import CONV_NET, POINT_NET, POOL_NET, RESIDUAL_NET, inp, layer
from reference import check, rel, torch_forward


def test_conv_family_matches_torch():
    check(CONV_NET)


def test_pooling_and_lrn_match_torch_with_caffe_rounding():
    net = loads(POOL_NET, path="x.prototxt")
    net.analyze()
    # ceil: (12 - 3) / 2 -> 5 + 1 windows; the clip rule: on 5 rows, ceil((5 + 2 - 3) / 3) + 1 = 3
    # windows, but the last would start in the padding, so 2
    assert net.graph.nodes["mp"]["shapes"][0][2:] == (6, 6)
    assert net.graph.nodes["p3"]["shapes"][0][2:] == (5, 4) and net.graph.nodes["apc"]["shapes"][0][2:] == (2, 2)
    check(POOL_NET, batch=1)


def test_ave_pool_divisor_counts_padding_inside_the_padded_extent():
    """Caffe pooling_layer.cpp by hand: pool_size uses the window clipped to H + pad."""
    net = loads(inp(1, 1, 5, 5) + layer("p", "Pooling", "data", "p",
                                        "pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }"), path="x.prototxt")
    ex = net.compile()
    x = np.arange(25, dtype=np.float32).reshape(1, 1, 5, 5)
    y = ex(x)
    ref = np.zeros((3, 3))
    for oh in range(3):
        for ow in range(3):
            hs, ws = oh * 2 - 1, ow * 2 - 1
            he, we = min(hs + 3, 5 + 1), min(ws + 3, 5 + 1)
            size = (he - hs) * (we - ws)
            ref[oh, ow] = x[0, 0, max(hs, 0):min(he, 5), max(ws, 0):min(we, 5)].sum() / size
    np.testing.assert_allclose(y[0, 0], ref, rtol=1e-6)


def test_residual_adds_fused_into_the_conv_epilogue_match_torch():
    ex, _ = check(RESIDUAL_NET)
    fused = {s.layers[0]: s.layers for s in ex.program.steps}
    assert fused["a1"] == ["a1", "a1_bn", "a1_sc", "add1", "relu1"]
    assert fused["proj"] == ["proj", "add2", "tanh2"]
    assert fused["c1"][-1] == "add3" and fused["d1"][-1] == "max4" and fused["e1"][-1] == "prod5"
    assert not any(s.type == "Eltwise" for s in ex.program.steps)


def test_pointwise_merge_and_shape_layers_match_torch():
    check(POINT_NET)


def test_batchnorm_moving_average_factor_and_affine():
    text = inp(1, 3, 4, 4) + layer("bn", "BatchNorm", "data", "bn", "batch_norm_param { eps: 0.1 affine: true }") \
        + layer("bn2", "BatchNorm", "bn", "bn2")
    net = loads(text, path="x.prototxt")
    net.analyze()
    w = wmod.random(net.graph, 3)
    w["bn2.moving_average_factor"] = np.array([4.0], np.float32)
    ex = net.compile(weights=w)
    x = np.random.default_rng(0).standard_normal((1, 3, 4, 4)).astype(np.float32)
    ref = torch_forward(net, ex.weights, {"data": x})
    assert rel(ex(x), ref["bn2"]) < 1e-5


@pytest.mark.parametrize("model", ["alexnet", "squeezenet_v11"])
def test_real_network_matches_torch_and_analysis(model):
    net = netc.load(REFS / f"{model}.prototxt")
    analysis = net.analyze(batch=1)
    shapes = {r.outputs[i]: tuple(s) for r in analysis.layers if r.forward for i, s in enumerate(r.output_shapes)}
    names = [b for b in shapes if b not in ("data", "label")]
    ex = net.compile(blobs=names)
    x = np.random.default_rng(0).standard_normal((1, 3, 227, 227)).astype(np.float32)
    got = ex.run({"data": x}, blobs=names)
    ref = torch_forward(net, ex.weights, {"data": x})
    for b in names:
        assert got[b].shape == shapes[b], b
        assert rel(got[b], ref[b]) < 1e-4, (b, rel(got[b], ref[b]))
    assert ex.arena_bytes >= ex.peak_bytes == analysis.totals["peak_activation_bytes"]
    assert ex.arena_bytes <= 1.5 * ex.peak_bytes


def test_same_input_same_bits_and_arena_matches_plan():
    net = netc.load(REFS / "squeezenet_v11.prototxt")
    ex = net.compile()
    x = np.random.default_rng(1).standard_normal((1, 3, 227, 227)).astype(np.float32)
    a, b = ex(x), ex(x)
    assert a.tobytes() == b.tobytes()
    assert net.compile()(x).tobytes() == a.tobytes()
    assert ex.target.arena.nbytes == ex.peak_bytes  # greedy-by-size reaches the plan's peak here


def test_batch_two_and_generated_source_is_sanitized():
    ex, got = check(CONV_NET, all_blobs=False, batch=1)
    src = ex.program.source
    assert "conv/1" not in src and "s_conv_1" in src
    net = loads(CONV_NET, path="x.prototxt")
    ex2 = net.compile(batch=2)
    x = np.zeros((1, 4, 17, 19), np.float32)
    with pytest.raises(NetcError, match="compiled for"):
        ex2(x)


# ---- Winograd F(4x4, 3x3) ---------------------------------------------------------------------

def test_winograd_matrices_compute_a_correlation_exactly():
    """y = A^T [(G g) * (B^T d)] against the definition, in exact fractions, for Lavin's points
    and the better-conditioned +-1/2 variant."""
    from fractions import Fraction
    from netc.compiler.codegen.cpu_kit import winograd_matrices
    rng = np.random.default_rng(0)
    for points in [(0, 1, -1, 2, -2), (0, 1, -1, Fraction(1, 2), Fraction(-1, 2))]:
        at, g, bt = winograd_matrices(points)
        d = [Fraction(int(v)) for v in rng.integers(-9, 9, 6)]
        w = [Fraction(int(v)) for v in rng.integers(-9, 9, 3)]
        gw = [sum(g[j][k] * w[k] for k in range(3)) for j in range(6)]
        bd = [sum(bt[j][k] * d[k] for k in range(6)) for j in range(6)]
        y = [sum(at[i][j] * gw[j] * bd[j] for j in range(6)) for i in range(4)]
        assert y == [sum(d[i + k] * w[k] for k in range(3)) for i in range(4)]
    with pytest.raises(ValueError):
        winograd_matrices((0, 1, 1, 2, -2))


def winograd_net(n, c, h, w, co, pad, extra=""):
    return inp(n, c, h, w) + layer("conv", "Convolution", "data", "y",
                                   f"convolution_param {{ num_output: {co} kernel_size: 3 pad: {pad} }}") + extra


@pytest.mark.parametrize("n,c,h,w,co,pad", [
    (1, 16, 15, 17, 16, 1),     # partial last tiles
    (2, 19, 13, 14, 23, 1),     # batch 2, odd channel counts, H and W not multiples of 4
    (2, 17, 14, 13, 21, 0),     # no padding: output 12 x 11
    (2, 24, 9, 11, 18, 2),      # pad 2: output larger than the input
    (9, 32, 3, 5, 20, 1),       # smaller than one tile, 9 of them
    (5, 16, 7, 7, 16, 1),       # 7 x 7: 2 x 2 tiles, 3 of them partial
])
def test_winograd_conv_matches_torch(n, c, h, w, co, pad):
    ex, _ = check(winograd_net(n, c, h, w, co, pad), batch=n, all_blobs=False)
    assert "k_wino_in" in ex.program.source and "k_im2col" not in ex.program.source


def test_winograd_with_folded_batchnorm_scale_and_fused_relu():
    extra = (layer("bn", "BatchNorm", "y", "y", "batch_norm_param { eps: 0.001 }")
             + layer("sc", "Scale", "y", "y", "scale_param { bias_term: true }")
             + layer("relu", "ReLU", "y", "y", "relu_param { negative_slope: 0.1 }")
             + layer("conv2", "Convolution", "y", "z", "convolution_param { num_output: 16 kernel_size: 3 pad: 1 "
                     "bias_term: false }") + layer("relu2", "ReLU", "z", "z"))
    ex, _ = check(winograd_net(2, 20, 10, 15, 18, 1, extra), batch=2)
    steps = ex.program.steps
    assert [s.layers for s in steps] == [["conv", "bn", "sc", "relu"], ["conv2", "relu2"]]
    assert ex.program.source.count("np.matmul(") == 2 and "k_im2col" not in ex.program.source


def test_winograd_only_where_it_pays():
    """3x3 stride 1 with enough channels: Winograd; the RGB first layer, strided, dilated or
    grouped 3x3 convolutions: im2col."""
    from netc.compiler.codegen.cpu_kit import winograd_pays
    assert winograd_pays(1, 64, 64, (3, 3), (1, 1), (1, 1), 49)
    assert not winograd_pays(1, 3, 64, (3, 3), (1, 1), (1, 1), 49)
    assert not winograd_pays(1, 64, 64, (3, 3), (2, 2), (1, 1), 49)
    assert not winograd_pays(1, 64, 64, (3, 3), (1, 1), (2, 2), 49)
    assert not winograd_pays(2, 64, 64, (3, 3), (1, 1), (1, 1), 49)
    assert not winograd_pays(1, 64, 64, (5, 5), (1, 1), (1, 1), 49)
    assert not winograd_pays(1, 512, 512, (3, 3), (1, 1), (1, 1), 4)   # ResNet's 7x7 maps
    assert not winograd_pays(1, 256, 256, (3, 3), (1, 1), (1, 1), 16)  # 13x13-14x14 maps
    ex = netc.load(REFS / "squeezenet_v11.prototxt").compile()
    wino = {s.layers[0] for s in ex.program.steps if any(k.startswith("k_wino_in") for k in s.kernels)}
    # conv1 (3 channels, stride 2) and the 13x13 fire modules: im2col
    assert wino == {f"fire{k}/expand3x3" for k in range(2, 6)}


def test_parallel_kernels_match_torch(monkeypatch):
    """Machines with more than two cores get prange loops; this one (like CI) has two, so
    force them here: no race and no wrong index in any parallel variant."""
    import numba
    from netc.compiler.codegen import cpu
    from netc.runtime import executor
    monkeypatch.setattr(executor, "loops_parallel", lambda: True)
    monkeypatch.setattr(cpu, "PAR_MIN", 1)   # every kernel, however small
    before = numba.get_num_threads()
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    try:
        for text in (CONV_NET, POOL_NET, POINT_NET, RESIDUAL_NET, winograd_net(2, 16, 13, 11, 16, 1)):
            ex, _ = check(text, all_blobs=False)
            assert "nb.prange(" in ex.program.source and "parallel=True" in ex.program.source
    finally:
        numba.set_num_threads(before)


def test_non_finite_inputs_give_nan_not_an_exception():
    """numpy's error model in every kernel: a softmax over +inf or an all -inf row divides by
    zero or by nan; that must give nan (as numpy would), not raise inside a kernel."""
    ex = loads(inp(2, 4) + layer("prob", "Softmax", "data", "prob"), path="x.prototxt").compile(batch=2)
    for row in ([np.inf, 0, 0, 0], [-np.inf] * 4, [np.nan, 0, 0, 0]):
        y = ex(np.array([row, [0, 1, 2, 3]], np.float32))
        assert np.isnan(y[0]).all()
        np.testing.assert_allclose(y[1], np.exp(np.arange(4)) / np.exp(np.arange(4)).sum(), rtol=1e-6)
    assert "error_model='numpy'" in ex.program.source


def test_one_thread_gets_plain_loops():
    ex, _ = check(RESIDUAL_NET, all_blobs=False)
    assert "prange" not in ex.program.source and "parallel=True" not in ex.program.source


def test_winograd_error_stays_small_through_a_deep_chain():
    """Twelve Winograd layers in a row (VGG's depth of 3x3 convolutions): F(4x4, 3x3)'s larger
    rounding error must not compound past the 1e-4 bar."""
    text = inp(1, 24, 20, 20) + "".join(
        layer(f"c{k}", "Convolution", "data" if k == 0 else f"c{k - 1}", f"c{k}",
              "convolution_param { num_output: 24 kernel_size: 3 pad: 1 }")
        + layer(f"r{k}", "ReLU", f"c{k}", f"c{k}") for k in range(12))
    ex, got = check(text, batch=1, all_blobs=False)
    assert sum(k.startswith("k_wino_in") for s in ex.program.steps for k in s.kernels) == 12


def test_random_weights_are_seeded_he_uniform():
    """Counter-based fills: same seed same bits, He variance 2 / fan_in, ranges respected."""
    from netc.runtime.randfill import uniform
    net = netc.load("alexnet")
    net.analyze()
    a, b, c = (wmod.random(net.graph, s) for s in (0, 0, 1))
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)
    assert all(a[k].tobytes() != c[k].tobytes() for k in a if a[k].size > 1)
    fc6 = a["fc6.weight"]                       # [4096, 9216]
    assert fc6.dtype == np.float32 and abs(fc6.var() * 9216 / 2 - 1) < 0.01 and abs(fc6.mean()) < 1e-4
    assert len({a[k][:4].tobytes() for k in a}) == len(a)   # no two arrays share a stream
    u = uniform((1 << 20,), 0.5, 1.5, 7, 3)
    assert u.min() >= 0.5 and u.max() < 1.5 and abs(u.std() * 12 ** 0.5 - 1) < 0.01
    hist = np.bincount(((u - 0.5) * 16).astype(int), minlength=16)
    assert hist.min() > 0.95 * len(u) / 16      # flat to within 5% per sixteenth


def test_scale_and_bias_broadcast_along_caffes_axes():
    """scale_layer.cpp's axis/num_axes: a learned [C, H, W] scale (num_axes -1), a [H] bias at
    axis 2, an SE gate [N, C] at axis 0 (SE-BN-Inception) and a negative axis; not per channel,
    so none folds into the conv before it. Parameter counts follow the blob shapes."""
    text = inp(2, 3, 4, 5) + "".join([
        layer("c", "Convolution", "data", "c", "convolution_param { num_output: 4 kernel_size: 1 }"),
        layer("s1", "Scale", "c", "s1", "scale_param { axis: 1 num_axes: -1 bias_term: true }"),
        layer("b1", "Bias", "s1", "b1", "bias_param { axis: 2 num_axes: 1 }"),
        layer("s2", "Scale", "b1", "s2", "scale_param { axis: -1 num_axes: 1 }"),
        layer("g", "Pooling", "s2", "g", "pooling_param { pool: AVE global_pooling: true }"),
        layer("gr", "Reshape", "g", "gr", "reshape_param { shape { dim: 0 dim: 0 } }"),
        layer("se", "Scale", ["s2", "gr"], "se", "scale_param { axis: 0 }"),
    ])
    check(text)
    net = loads(text, path="axes.prototxt")
    net.analyze()
    params = {n: net.graph.nodes[n]["params"] for n in ("s1", "b1", "s2", "se")}
    assert params == {"s1": 2 * 4 * 4 * 5, "b1": 4, "s2": 5, "se": 0}
    bad = inp(2, 3, 4, 5) + layer("x", "Scale", ["data", "data"], "x", "scale_param { axis: 1 }")
    with pytest.raises(NetcError, match=r"Scale: axis 1 with 4 axes does not fit the input"):
        loads(bad, path="bad.prototxt").analyze()
    wrong = text + layer("w", "Scale", ["s2", "gr"], "w", "scale_param { axis: 1 }")
    with pytest.raises(NetcError, match=r"second input \[1, 4\] must match the first's axes 1..2 \[4, 4\]"):
        loads(wrong, path="wrong.prototxt").analyze()


def test_fork_bn_layers_of_pspnet_and_segnet():
    """`BN` is not BatchNorm: PSPNet's (slope, bias, mean, variance: 2C parameters + 2C
    statistics, y = slope (x - mean) / sqrt(var + eps) + bias) and SegNet's INFERENCE mode
    (scale, shift: y = scale x + shift). Both fold into the conv before them; LEARN mode (batch
    statistics at test time) is analyzed but not run."""
    psp = 'bn_param { slope_filler { type: "constant" value: 1 } frozen: true eps: 0.001 }'
    seg = 'bn_param { bn_mode: INFERENCE scale_filler { type: "constant" value: 1 } }'
    text = inp(2, 3, 6, 6) + "".join([
        layer("c", "Convolution", "data", "c", "convolution_param { num_output: 4 kernel_size: 3 }"),
        layer("b1", "BN", "c", "c", psp),
        layer("r", "ReLU", "c", "c"),
        layer("b2", "BN", "c", "b2", seg),
        layer("p", "Pooling", "b2", "p", "pooling_param { pool: MAX kernel_size: 2 stride: 2 }"),
        layer("b3", "BN", "p", "b3", psp),
    ])
    check(text)
    net = loads(text, path="bn.prototxt")
    net.analyze()
    nodes = net.graph.nodes
    assert [(nodes[n]["params"], nodes[n]["buffers"]) for n in ("b1", "b2", "b3")] == [(8, 8), (8, 0), (8, 8)]
    ex = net.compile()
    assert any(s.layers[:2] == ["c", "b1"] for s in ex.program.steps)      # folded into the conv
    learn = inp(1, 3, 4, 4) + layer("b", "BN", "data", "b", "bn_param { scale_filler { value: 1 } }")
    loads(learn, path="learn.prototxt").analyze()
    with pytest.raises(NetcError, match="LEARN mode normalizes with each batch's own statistics"):
        loads(learn, path="learn.prototxt").compile()
