"""CPU execution against PyTorch: every layer type, Caffe's quirks, two real networks.

The reference walks the IR and applies torch ops per layer type in float64 with the raw
(unfolded) weights, so folding, fusion, the arena and every kernel are checked at once.
"""
from __future__ import annotations

import numpy as np
import pytest

import netc
from netc.compiler.errors import NetcError
from netc.compiler.network import loads
from netc.runtime import weights as wmod

import torch  # a pinned test dependency: a missing torch must fail, not skip
F = torch.nn.functional
REFS = "/work/shared/refs/caffe"


def torch_forward(net, w: dict, feeds: dict) -> dict:
    """Blob name -> float64 tensor, Caffe semantics (a later in-place write shadows a blob)."""
    g = net.graph
    t = {k: torch.from_numpy(v.astype(np.float64)) for k, v in w.items()}
    out: dict[tuple, torch.Tensor] = {}
    blobs = {}
    for n in g.nodes:
        d = g.nodes[n]
        if not d["forward"]:
            continue
        typ, a = d["type"], d["attrs"]
        xs = [out[src] for src in d["inputs"]]
        x = xs[0] if xs else None
        p = lambda k: t[f"{n}.{k}"]  # noqa: E731
        if typ in ("Input", "Data"):
            ys = [torch.from_numpy(feeds[top].astype(np.float64)) if top in feeds else torch.zeros(s, dtype=torch.float64)
                  for top, s in zip(d["tops"], d["shapes"])]
        elif typ in ("Convolution", "ConvolutionDepthwise"):
            groups = x.shape[1] if typ == "ConvolutionDepthwise" else a["group"]
            ys = [F.conv2d(x, p("weight"), p("bias") if a["bias_term"] else None, a["stride"], a["pad"],
                           a["dilation"], groups)]
        elif typ == "Deconvolution":
            ys = [F.conv_transpose2d(x, p("weight"), p("bias") if a["bias_term"] else None, a["stride"],
                                     a["pad"], 0, a["group"], a["dilation"])]
        elif typ == "InnerProduct":
            xf = x.flatten(a["axis"] % x.dim())
            wt = p("weight").T if a["transpose"] else p("weight")
            ys = [xf @ wt.T + (p("bias") if a["bias_term"] else 0)]
        elif typ == "Pooling":
            k, s, pad = (x.shape[2:], (1, 1), (0, 0)) if a["global_pooling"] else (a["kernel"], a["stride"], a["pad"])
            ceil = a["round_mode"] == "CEIL"
            if a["pool"] == "MAX":
                ys = [F.max_pool2d(x, k, s, pad, ceil_mode=ceil)]
            else:
                ys = [F.avg_pool2d(x, k, s, pad, ceil_mode=ceil, count_include_pad=True)]
        elif typ == "LRN":
            size = a["local_size"]
            if a["norm_region"] == "ACROSS_CHANNELS":
                ys = [F.local_response_norm(x, size, a["alpha"], a["beta"], a["k"])]
            else:
                avg = F.avg_pool2d(x * x, size, 1, (size - 1) // 2, count_include_pad=True)
                ys = [x * (1 + a["alpha"] * avg) ** -a["beta"]]
        elif typ == "ReLU":
            ys = [F.leaky_relu(x, a["negative_slope"])]
        elif typ == "PReLU":
            ys = [F.prelu(x, p("weight"))]
        elif typ == "ELU":
            ys = [F.elu(x, a["alpha"])]
        elif typ == "Sigmoid":
            ys = [torch.sigmoid(x)]
        elif typ == "TanH":
            ys = [torch.tanh(x)]
        elif typ == "Clip":
            ys = [x.clamp(a["min"], a["max"])]
        elif typ == "Power":
            ys = [(a["shift"] + a["scale"] * x) ** a["power"]]
        elif typ == "AbsVal":
            ys = [x.abs()]
        elif typ == "BNLL":
            ys = [F.softplus(x)]
        elif typ == "Dropout":
            ys = [x.clone()]
        elif typ == "BatchNorm":
            f = t.get(f"{n}.moving_average_factor", torch.ones(1))[0]
            f = 1 / f if f != 0 else 1
            ys = [F.batch_norm(x, p("mean") * f, p("var") * f, p("weight") if a["affine"] else None,
                               p("bias") if a["affine"] else None, False, 0.0, a["eps"])]
        elif typ in ("Scale", "Bias"):
            shape = (x.shape[0] if len(xs) == 2 and xs[1].dim() == 2 else 1, x.shape[1]) + (1,) * (x.dim() - 2)
            if typ == "Scale":
                m = (xs[1] if len(xs) == 2 else p("weight")).reshape(shape)
                b = p("bias").reshape((1,) + shape[1:]) if a["bias_term"] else 0
            else:
                m, b = 1, (xs[1] if len(xs) == 2 else p("bias")).reshape(shape)
            ys = [x * m + b]
        elif typ == "Eltwise":
            if a["operation"] == "SUM":
                coeff = a["coeff"] or (1.0,) * len(xs)
                ys = [sum(c * v for c, v in zip(coeff, xs))]
            elif a["operation"] == "PROD":
                y = xs[0]
                for v in xs[1:]:
                    y = y * v
                ys = [y]
            else:
                y = xs[0]
                for v in xs[1:]:
                    y = torch.maximum(y, v)
                ys = [y]
        elif typ == "Concat":
            ys = [torch.cat(xs, a["axis"])]
        elif typ == "Slice":
            ax = a["axis"] % x.dim()
            sizes = [s[ax] for s in d["shapes"]]
            ys = list(torch.split(x, sizes, ax))
        elif typ == "Split":
            ys = [x.clone() for _ in d["tops"]]
        elif typ in ("Flatten", "Reshape"):
            ys = [x.reshape(d["shapes"][0])]
        elif typ == "Softmax":
            ys = [F.softmax(x, a["axis"])]
        elif typ == "Crop":
            ax = a["axis"] % x.dim()
            ref, offs = xs[1], list(a["offset"])
            y = x
            for i in range(ax, x.dim()):
                o = offs[0] if len(offs) == 1 else offs[i - ax] if offs else 0
                y = y.narrow(i, o, ref.shape[i])
            ys = [y]
        elif typ == "Permute":
            order = list(a["order"]) + [i for i in range(x.dim()) if i not in a["order"]]
            ys = [x.permute(order)]
        elif typ == "ShuffleChannel":
            gp, c = a["group"], x.shape[1]
            ys = [x.reshape(x.shape[0], gp, c // gp, -1).transpose(1, 2).reshape(x.shape)]
        elif typ == "Normalize":
            dims = tuple(range(1, x.dim())) if a["across_spatial"] else (1,)
            norm = torch.sqrt((x * x).sum(dims, keepdim=True) + a["eps"])
            ys = [x / norm * p("weight").reshape((1, -1) + (1,) * (x.dim() - 2))]
        else:
            raise AssertionError(f"no torch reference for {typ}")
        for port, y in enumerate(ys):
            out[(n, port)] = y
            blobs[d["tops"][port]] = y
            assert tuple(y.shape) == tuple(d["shapes"][port]), (n, y.shape, d["shapes"][port])
    return blobs


def rel(a, b) -> float:
    b = np.asarray(b, np.float64)
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / max(np.linalg.norm(b), 1e-30))


def check(text: str, seed: int = 0, all_blobs: bool = True, batch: int = 2):
    net = loads(text, path="x.prototxt")
    ex = net.compile(seed=seed, batch=batch)
    rng = np.random.default_rng(seed + 1)
    feeds = {b: rng.standard_normal(ex.views[ex.program.view_of[ex.inputs[b]]].shape).astype(np.float32)
             for b in ex.required_inputs}
    got = ex.run(feeds)
    ref = torch_forward(net, ex.weights, feeds)
    for o in ex.outputs:
        assert got[o].shape == tuple(ref[o].shape)
        assert rel(got[o], ref[o]) < 1e-4, (o, rel(got[o], ref[o]))
    assert ex.arena_bytes >= ex.peak_bytes
    if all_blobs:  # again with every blob kept: no fusion may hide a wrong intermediate
        names = [b for b in ex.blob_key if b not in ex.inputs]
        ex2 = net.compile(seed=seed, batch=batch, blobs=names)
        got2 = ex2.run(feeds, blobs=names)
        for b in names:
            assert rel(got2[b], ref[b]) < 1e-4, (b, rel(got2[b], ref[b]))
    return ex, got


def inp(*dims, name="data"):
    return f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ ' + \
        " ".join(f"dim: {d}" for d in dims) + " } } }\n"


def layer(name, typ, bottoms, tops=None, body=""):
    bottoms = [bottoms] if isinstance(bottoms, str) else bottoms
    tops = [name] if tops is None else ([tops] if isinstance(tops, str) else tops)
    return (f'layer {{ name: "{name}" type: "{typ}" ' + " ".join(f'bottom: "{b}"' for b in bottoms) + " "
            + " ".join(f'top: "{t}"' for t in tops) + f" {body} }}\n")


CONV_NET = inp(2, 4, 17, 19) + "".join([
    layer("conv/1", "Convolution", "data", "c1", "convolution_param { num_output: 6 kernel_h: 3 kernel_w: 5 "
          "stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 2 }"),
    layer("bn1", "BatchNorm", "c1", "c1", "batch_norm_param { eps: 0.001 }"),
    layer("sc1", "Scale", "c1", "c1", "scale_param { bias_term: true }"),
    layer("relu1", "ReLU", "c1", "c1", "relu_param { negative_slope: 0.1 }"),
    layer("conv2", "Convolution", "c1", "c2", "convolution_param { num_output: 8 kernel_size: 3 pad: 2 "
          "dilation: 2 group: 2 bias_term: false }"),
    layer("dw", "ConvolutionDepthwise", "c2", "dw", "convolution_param { num_output: 8 kernel_size: 3 stride: 2 pad: 1 }"),
    layer("relu6", "ReLU6", "dw", "dw", "clip_param { min: 0 max: 0.5 }"),
    layer("pw", "Convolution", "dw", "pw", "convolution_param { num_output: 10 kernel_size: 1 group: 2 }"),
    layer("pw2", "Convolution", "pw", "pw2", "convolution_param { num_output: 6 kernel_size: 1 stride: 2 }"),
    layer("up", "Deconvolution", "pw", "up", "convolution_param { num_output: 4 kernel_size: 4 stride: 2 pad: 1 group: 2 }"),
    layer("up2", "Deconvolution", "up", "up2", "convolution_param { num_output: 3 kernel_h: 3 kernel_w: 2 stride: 3 "
          "dilation: 2 bias_term: false }"),
    layer("fc", "InnerProduct", "pw2", "fc", "inner_product_param { num_output: 7 }"),
    layer("fc_bn", "BatchNorm", "fc", "fc"),
    layer("fc_relu", "ReLU", "fc", "fc"),
    layer("fc2", "InnerProduct", "fc", "fc2", "inner_product_param { num_output: 5 transpose: true }"),
    layer("prob", "Softmax", "fc2", "prob"),
])

POOL_NET = inp(1, 3, 13, 12) + "".join([
    layer("mp", "Pooling", "data", "mp", "pooling_param { pool: MAX kernel_size: 3 stride: 2 }"),
    layer("ap", "Pooling", "data", "ap", "pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }"),
    layer("p3", "Pooling", "data", "p3", "pooling_param { pool: MAX kernel_size: 3 stride: 3 }"),
    layer("apc", "Pooling", "p3", "apc", "pooling_param { pool: AVE kernel_size: 3 stride: 3 pad: 1 }"),
    layer("mpc", "Pooling", "p3", "mpc", "pooling_param { pool: MAX kernel_size: 3 stride: 3 pad: 1 }"),
    layer("ahw", "Pooling", "data", "ahw", "pooling_param { pool: AVE kernel_h: 2 kernel_w: 4 stride_h: 1 stride_w: 3 pad_h: 0 pad_w: 1 }"),
    layer("fl", "Pooling", "data", "fl", "pooling_param { pool: MAX kernel_size: 2 stride: 2 round_mode: FLOOR }"),
    layer("gap", "Pooling", "mp", "gap", "pooling_param { pool: AVE global_pooling: true }"),
    layer("gmp", "Pooling", "mp", "gmp", "pooling_param { pool: MAX global_pooling: true }"),
    layer("lrn", "LRN", "data", "lrn", "lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 }"),
    layer("lrn5", "LRN", "mp", "lrn5", "lrn_param { local_size: 5 alpha: 0.3 beta: 0.6 }"),
    layer("lrnw", "LRN", "data", "lrnw", "lrn_param { local_size: 3 alpha: 0.8 beta: 0.75 norm_region: WITHIN_CHANNEL }"),
])

POINT_NET = inp(2, 6, 5, 4) + "".join([
    layer("sig", "Sigmoid", "data", "sig"),
    layer("tanh", "TanH", "data", "tanh"),
    layer("elu", "ELU", "data", "elu", "elu_param { alpha: 0.5 }"),
    layer("abs", "AbsVal", "data", "abs"),
    layer("bnll", "BNLL", "data", "bnll"),
    layer("pow", "Power", "data", "pow", "power_param { power: 2 scale: 0.5 shift: 1 }"),
    layer("pow2", "Power", "abs", "pow2", "power_param { power: 1.5 scale: 2 shift: 0.1 }"),
    layer("drop", "Dropout", "pow2", "pow2"),
    layer("drop2", "Dropout", "elu", "drop2"),
    layer("prelu", "PReLU", "data", "prelu"),
    layer("prelu1", "PReLU", "data", "prelu1", "prelu_param { channel_shared: true }"),
    layer("clip", "Clip", "data", "clip", "clip_param { min: -0.5 max: 0.7 }"),
    layer("sum", "Eltwise", ["sig", "tanh"], "sum", "eltwise_param { operation: SUM coeff: 1 coeff: -0.5 }"),
    layer("sum_relu", "ReLU", "sum", "sum"),
    layer("prod", "Eltwise", ["elu", "bnll", "pow"], "prod", "eltwise_param { operation: PROD }"),
    layer("max", "Eltwise", ["prelu", "prelu1", "clip"], "max", "eltwise_param { operation: MAX }"),
    layer("cat", "Concat", ["sum", "prod", "max"], "cat"),
    layer("bn", "BatchNorm", "cat", "cat", "batch_norm_param { eps: 0.01 }"),
    layer("bn_sc", "Scale", "cat", "cat"),
    layer("bn_b", "Bias", "cat", "cat"),
    layer("cat2", "Concat", ["pow2", "drop2"], "cat2", "concat_param { axis: 3 }"),
    layer("sl", "Slice", "cat", ["s0", "s1", "s2"], "slice_param { axis: 1 slice_point: 2 slice_point: 5 }"),
    layer("sp", "Split", "s1", ["sp0", "sp1"]),
    layer("fl", "Flatten", "sp0", "fl"),
    layer("rs", "Reshape", "sp1", "rs", "reshape_param { shape { dim: 0 dim: -1 dim: 2 } }"),
    layer("sm", "Softmax", "s2", "sm"),
    layer("sm2", "Softmax", "rs", "sm2", "softmax_param { axis: 2 }"),
    layer("crop", "Crop", ["cat", "sm"], "crop", "crop_param { axis: 2 offset: 0 }"),
    layer("small", "Pooling", "cat", "small", "pooling_param { pool: MAX kernel_size: 2 }"),
    layer("crop2", "Crop", ["cat", "small"], "crop2", "crop_param { axis: 2 offset: 1 offset: 1 }"),
    layer("perm", "Permute", "cat", "perm", "permute_param { order: 0 order: 2 order: 3 order: 1 }"),
    layer("shuf", "ShuffleChannel", "cat", "shuf", "shuffle_channel_param { group: 3 }"),
    layer("l2", "Normalize", "cat", "l2", "norm_param { across_spatial: true }"),
    layer("l2c", "Normalize", "cat", "l2c", "norm_param { across_spatial: false channel_shared: false }"),
    layer("gate", "InnerProduct", "fl", "gate", "inner_product_param { num_output: 18 }"),
    layer("gated", "Scale", ["cat", "gate"], "gated", "scale_param { bias_term: true }"),
    layer("shift", "InnerProduct", "fl", "shift", "inner_product_param { num_output: 18 }"),
    layer("shifted", "Bias", ["shuf", "shift"], "shifted"),
])


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


RESIDUAL_NET = inp(2, 8, 9, 9) + "".join([
    # identity block: conv + BN + Scale, then the add (in place on the conv's output) and ReLU
    layer("a1", "Convolution", "data", "a1", "convolution_param { num_output: 8 kernel_size: 1 }"),
    layer("a1_bn", "BatchNorm", "a1", "a1"),
    layer("a1_sc", "Scale", "a1", "a1", "scale_param { bias_term: true }"),
    layer("add1", "Eltwise", ["a1", "data"], "add1"),
    layer("relu1", "ReLU", "add1", "add1"),
    # projection block: the shortcut conv runs last, so it is the one that does the add
    layer("b1", "Convolution", "add1", "b1", "convolution_param { num_output: 12 kernel_size: 3 stride: 2 pad: 1 }"),
    layer("b1_relu", "ReLU", "b1", "b1"),
    layer("proj", "Convolution", "add1", "proj", "convolution_param { num_output: 12 kernel_size: 1 stride: 2 }"),
    layer("add2", "Eltwise", ["b1", "proj"], "add2", "eltwise_param { coeff: 0.5 coeff: -2 }"),
    layer("tanh2", "TanH", "add2", "add2"),
    # an add whose first operand lives on (not in place), three operands, then MAX and PROD
    layer("c0", "Convolution", "add2", "c0", "convolution_param { num_output: 12 kernel_size: 1 }"),
    layer("c1", "Convolution", "add2", "c1", "convolution_param { num_output: 12 kernel_size: 3 pad: 1 }"),
    layer("add3", "Eltwise", ["add2", "c0", "c1"], "add3"),
    layer("d1", "Convolution", "add3", "d1", "convolution_param { num_output: 12 kernel_size: 1 }"),
    layer("max4", "Eltwise", ["d1", "add2"], "max4", "eltwise_param { operation: MAX }"),
    layer("e1", "Convolution", "max4", "e1", "convolution_param { num_output: 12 kernel_size: 1 }"),
    layer("prod5", "Eltwise", ["add3", "e1"], "prod5", "eltwise_param { operation: PROD }"),
])


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
    net = netc.load(f"{REFS}/{model}.prototxt")
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
    net = netc.load(f"{REFS}/squeezenet_v11.prototxt")
    ex = net.compile()
    x = np.random.default_rng(1).standard_normal((1, 3, 227, 227)).astype(np.float32)
    a, b = ex(x), ex(x)
    assert a.tobytes() == b.tobytes()
    assert net.compile()(x).tobytes() == a.tobytes()
    assert ex.arena.nbytes == ex.peak_bytes  # greedy-by-size reaches the plan's peak here


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
    (8, 32, 3, 5, 20, 1),       # smaller than one tile, 8 of them
    (4, 16, 7, 7, 16, 1),       # 7 x 7: 2 x 2 tiles, 3 of them partial
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
    assert winograd_pays(1, 64, 64, (3, 3), (1, 1), (1, 1), 16)
    assert not winograd_pays(1, 3, 64, (3, 3), (1, 1), (1, 1), 16)
    assert not winograd_pays(1, 64, 64, (3, 3), (2, 2), (1, 1), 16)
    assert not winograd_pays(1, 64, 64, (3, 3), (1, 1), (2, 2), 16)
    assert not winograd_pays(2, 64, 64, (3, 3), (1, 1), (1, 1), 16)
    assert not winograd_pays(1, 64, 64, (5, 5), (1, 1), (1, 1), 16)
    assert not winograd_pays(1, 512, 512, (3, 3), (1, 1), (1, 1), 4)   # ResNet's 7x7 maps
    ex = netc.load(f"{REFS}/squeezenet_v11.prototxt").compile()
    wino = {s.layers[0] for s in ex.program.steps if any(k.startswith("k_wino_in") for k in s.kernels)}
    assert wino == {f"fire{k}/expand3x3" for k in range(2, 10)}   # conv1 (3 channels, stride 2): im2col


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
