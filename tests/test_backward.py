"""Each layer's backward rule against torch autograd through the layer's torch reference
(float64), on the shared test networks (every output seeded with a random gradient), and the
ReLU rules of the visualization papers against the same rules written as torch autograd
functions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from netc.compiler.layers import REGISTRY
from netc.compiler.network import loads
from netc.runtime.backward import gradients
from netc.runtime.executor import Executable

from nets import CONV_NET, POINT_NET, POOL_NET, RESIDUAL_NET, inp, layer
from reference import rel

ONNX_NET = inp(2, 6, 7, 7) + "".join([
    layer("hsig", "HardSigmoid", "data", "hsig", "hard_sigmoid_param { alpha: 0.3 beta: 0.4 }"),
    layer("hsw", "HardSwish", "data", "hsw"),
    layer("selu", "SELU", "data", "selu"),
    layer("sw", "Swish", "data", "sw"),
    layer("ex", "Exp", "data", "ex", "exp_param { scale: 0.5 }"),
    layer("ab", "AbsVal", "data", "ab"),
    layer("lg", "Log", "ab", "lg", "log_param { shift: 1 base: 2 }"),
    layer("avg", "Pooling", "hsw", "avg", "pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }"),
    layer("gap", "Pooling", "hsig", "gap", "pooling_param { pool: AVE global_pooling: true }"),
    layer("gate", "Flatten", "gap", "gate"),
    layer("se", "Scale", ["selu", "gate"], "se", "scale_param { axis: 0 }"),
])
ONNX_NET_EXCLUDE = ONNX_NET.replace('pool: AVE kernel_size: 3 stride: 2 pad: 1 }"', 'pool: AVE kernel_size: 3 stride: 2 pad: 1 }" # netc: param exclude_pad=true')


class _Rule(torch.autograd.Function):
    """ReLU forward; backward by the deconvnet or guided-backprop rule."""

    @staticmethod
    def forward(ctx, x, rule):
        ctx.save_for_backward(x)
        ctx.rule = rule
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        if ctx.rule == "deconvnet":
            return g.clamp(min=0), None
        return g * (x > 0) * (g > 0), None


def torch_grad(net, w, x, seeds: dict, rule="backprop", override=None):
    """d(sum seeds . blobs)/d data by autograd through every layer's torch reference;
    `override(n, d, xs)` may return a layer's outputs instead (None: the reference's)."""
    g = net.graph
    t = {k: torch.from_numpy(np.asarray(v, np.float64)) for k, v in w.items()}
    data = torch.from_numpy(x.astype(np.float64)).requires_grad_()
    out = {}
    for n in g.nodes:
        d = g.nodes[n]
        if not d["forward"]:
            continue
        layer_ = REGISTRY[d["type"]]
        xs = [out[src] for src in d["inputs"]]
        ys = override(n, d, xs) if override is not None and not layer_.source else None
        if ys is not None:
            pass
        elif layer_.source:
            ys = [data]
        elif d["type"] == "ReLU" and rule != "backprop":
            ys = [_Rule.apply(xs[0], rule)]
        else:
            def p(blob, *default, n=n):
                key = f"{n}.{blob}"
                return t[key] if not default or key in t else default[0]
            ys = layer_.reference(torch, xs, d["attrs"], p, d)
        for port, y in enumerate(ys):
            out[(n, port)] = y
    total = sum((out[k] * torch.from_numpy(s.astype(np.float64))).sum() for k, s in seeds.items())
    (grad,) = torch.autograd.grad(total, data)
    return grad.numpy()


def check(text, rule="backprop", batch=None):
    net = loads(text, path="b.prototxt")
    ex = Executable(net, keep_every=True, batch=batch)
    name = ex.required_inputs[0]
    rng = np.random.default_rng(4)
    x = rng.standard_normal(ex.input_shape(name)).astype(np.float32)
    key = ex.inputs[name]
    outputs = [ex.blob_key[o] for o in ex.outputs]
    seeds = {k: rng.standard_normal(net.graph.nodes[k[0]]["shapes"][k[1]]).astype(np.float32) for k in outputs}
    got = gradients(ex, {name: x}, seeds, rule, wanted=[key])[0][key]
    want = torch_grad(net, ex.weights, x, seeds, rule)
    assert np.abs(want).max() > 0
    assert rel(got, want) < 1e-4, rel(got, want)


@pytest.mark.parametrize("name,text", [("conv", CONV_NET), ("pool", POOL_NET.replace(
    layer("lrnw", "LRN", "data", "lrnw", "lrn_param { local_size: 3 alpha: 0.8 beta: 0.75 norm_region: WITHIN_CHANNEL }"), "")),
    ("point", POINT_NET), ("residual", RESIDUAL_NET), ("onnx", ONNX_NET), ("onnx_exclude_pad", ONNX_NET_EXCLUDE)])
def test_backward_equals_autograd(name, text):
    check(text)


@pytest.mark.parametrize("rule", ["deconvnet", "guided"])
def test_relu_rules_equal_autograd_with_the_same_rule(rule):
    check(CONV_NET.replace("negative_slope: 0.1", "negative_slope: 0"), rule)
    check(RESIDUAL_NET, rule)


def test_a_layer_without_a_rule_is_named():
    from netc.compiler.errors import NetcError
    text = inp(1, 2, 4, 4) + layer("u", "SPP", "data", "u", "spp_param { pyramid_height: 2 }")
    net = loads(text, path="u.prototxt")
    ex = Executable(net, keep_every=True)
    key = ex.blob_key["u"]
    with pytest.raises(NetcError, match='layer "u" \\(SPP\\) has no backward rule'):
        gradients(ex, {"data": np.ones((1, 2, 4, 4), np.float32)}, {key: np.ones((1, 10), np.float32)},
                  wanted=[ex.inputs["data"]])


MORE_NET = inp(2, 4, 5, 6) + "".join([
    layer("up", "Upsample", "data", "up", "upsample_param { upsample_h: 12 upsample_w: 13 }"),
    layer("up2", "Upsample", "data", "up2", "upsample_param { scale: 2 }"),
    layer("tile", "Tile", "up2", "tile", "tile_param { axis: 1 tiles: 3 }"),
    layer("red", "Reduction", "tile", "red", "reduction_param { operation: SUMSQ axis: 2 coeff: 0.5 }"),
    layer("red2", "Reduction", "up", "red2", "reduction_param { operation: MEAN axis: 1 }"),
    layer("red3", "Reduction", "data", "red3", "reduction_param { operation: ASUM axis: 3 }"),
    layer("pool", "Pooling", "data", ["pool", "mask"], "pooling_param { pool: MAX kernel_size: 2 stride: 2 }"),
    layer("unpool", "Upsample", ["pool", "mask"], "unpool", "upsample_param { scale: 2 pad_out_h: true }"),
    layer("zoom", "Interp", "data", "zoom", "interp_param { zoom_factor: 3 }"),
    layer("shrink", "Interp", "up", "shrink", "interp_param { height: 7 width: 4 pad_beg: -1 pad_end: -2 }"),
    layer("mvn", "MVN", "data", "mvn"),
    layer("mvn2", "MVN", "up2", "mvn2", "mvn_param { across_channels: true normalize_variance: false }"),
    layer("mvn3", "MVN", "zoom", "mvn3", "mvn_param { across_channels: true }"),
    layer("gap", "Pooling", "data", "gap", "pooling_param { pool: AVE global_pooling: true }"),
    layer("pw", "Power", "data", "pw", "power_param { scale: 2 shift: 0.5 }"),
    layer("axpy", "Axpy", ["gap", "data", "pw"], "axpy"),
])


def test_backward_of_resizing_and_reducing_layers():
    check(MORE_NET)


def test_backward_of_the_fork_bn_layers():
    """PSPNet's BN (slope (x - mean) / sqrt(var + eps) + bias) and SegNet's (scale x + shift)."""
    psp = 'bn_param { slope_filler { type: "constant" value: 1 } frozen: true eps: 0.001 }'
    seg = 'bn_param { bn_mode: INFERENCE scale_filler { type: "constant" value: 1 } }'
    check(inp(2, 3, 6, 6) + "".join([
        layer("c", "Convolution", "data", "c", "convolution_param { num_output: 4 kernel_size: 3 }"),
        layer("b1", "BN", "c", "c", psp),
        layer("r", "ReLU", "c", "c"),
        layer("b2", "BN", "c", "b2", seg)]))


def test_depthwise_backward_kernel_over_random_geometries():
    """grouped_one_back against autograd on 40 random depthwise geometries: channel multipliers,
    strides up to 3, pads, dilations, kernels wider than the stride."""
    from netc.compiler.codegen.grad_kit import grouped_one_back
    rng = np.random.default_rng(0)
    checked = 0
    while checked < 40:
        C, M, H, W, KH, KW = (int(v) for v in rng.integers([1, 1, 3, 3, 1, 1], [4, 3, 12, 12, 4, 4]))
        SH, SW, PH, PW, DH, DW = (int(v) for v in rng.integers([1, 1, 0, 0, 1, 1], [4, 4, 3, 3, 3, 3]))
        if (H + 2 * PH - DH * (KH - 1) - 1) < 0 or (W + 2 * PW - DW * (KW - 1) - 1) < 0:
            continue
        x = torch.tensor(rng.standard_normal((2, C, H, W)), requires_grad=True)
        w = torch.tensor(rng.standard_normal((C * M, 1, KH, KW)))
        y = torch.nn.functional.conv2d(x, w, stride=(SH, SW), padding=(PH, PW), dilation=(DH, DW), groups=C)
        dy = torch.tensor(rng.standard_normal(y.shape))
        (want,) = torch.autograd.grad((y * dy).sum(), x)
        got = grouped_one_back(dy.numpy().astype(np.float32), w.numpy().astype(np.float32), C, H, W,
                               SH, SW, PH, PW, DH, DW)
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-5 * np.abs(want.numpy()).max())
        checked += 1
