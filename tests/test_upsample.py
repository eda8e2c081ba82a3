"""Upsample (Caffe fork layer, nearest neighbour) end to end: both languages, analysis, the CPU
target, the CUDA target in the simulator, the diagram, all against PyTorch's interpolate."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from fractions import Fraction

from netc.compiler.diagram import to_dot
from netc.compiler.errors import NetcError
from netc.compiler.network import loads

from targets import run_cpu, run_cuda_sim

PROTOTXT = """name: "upnet"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 5 dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 6 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "up" type: "Upsample" bottom: "conv" top: "up" upsample_param { scale: 2 } }
layer { name: "relu" type: "ReLU" bottom: "up" top: "up" }
layer { name: "wide" type: "Upsample" bottom: "data" top: "wide" upsample_param { scale_h: 2 scale_w: 3 } }
layer { name: "sized" type: "Upsample" bottom: "data" top: "sized" upsample_param { upsample_h: 15 upsample_w: 8 } }
layer { name: "cat" type: "Concat" bottom: "up" bottom: "up" top: "cat" }
"""
NET = """network upnet
input data: [2, 3, 5, 4]
conv: Convolution(num_output=6, kernel_size=3, stride=2, pad=1)
up: Upsample(scale=2)
relu: ReLU
wide: Upsample(scale_h=2, scale_w=3) <- data
sized: Upsample(upsample_h=15, upsample_w=8) <- data
cat: Concat <- relu, relu
"""


def test_parses_from_both_languages_to_the_same_ir():
    a, b = loads(PROTOTXT, path="u.prototxt"), loads(NET, path="u.net")
    for n in ("up", "wide", "sized"):
        assert a.graph.nodes[n]["attrs"] == b.graph.nodes[n]["attrs"]
    assert a.graph.nodes["wide"]["attrs"]["scale_h"] == 2
    ra = {r.name: r.output_shapes for r in a.analyze(batch=2).layers}
    rb = {r.name: r.output_shapes for r in b.analyze(batch=2).layers}
    assert ra["up"] == rb["relu"] == [[2, 6, 6, 4]]


def test_analysis_shape_costs_and_receptive_field():
    rows = {r.name: r for r in loads(NET, path="u.net").analyze(batch=2).layers}
    assert rows["up"].output_shapes == [[2, 6, 6, 4]]
    assert rows["wide"].output_shapes == [[2, 3, 10, 12]]
    assert rows["sized"].output_shapes == [[2, 3, 15, 8]]
    assert rows["up"].flops == 0 and rows["up"].params == 0      # a copy, no arithmetic
    # conv 3x3/2: size 3, jump 2; nearest x2 keeps the size and halves the jump
    assert rows["conv"].receptive_field == rows["up"].receptive_field == [3, 3]
    assert rows["conv"].jump == [2, 2] and rows["up"].jump == [1, 1]
    assert rows["wide"].jump == [0.5, float(Fraction(1, 3))]
    assert rows["sized"].jump == [float(Fraction(5, 15)), 0.5]


def test_cpu_and_cuda_simulator_match_torch():
    rng = np.random.default_rng(5)
    feeds = {"data": rng.standard_normal((2, 3, 5, 4)).astype(np.float32)}
    blobs = ["up", "wide", "sized", "cat"]
    net = loads(NET, path="u.net")
    ex = net.compile(target="cpu", batch=2, blobs=blobs)
    got = ex.run(feeds, blobs=blobs)
    F = torch.nn.functional
    x = torch.from_numpy(feeds["data"].astype(np.float64))
    w = {k: torch.from_numpy(v.astype(np.float64)) for k, v in ex.weights.items()}
    conv = F.conv2d(x, w["conv.weight"], w["conv.bias"], stride=2, padding=1)
    up = F.interpolate(conv, scale_factor=2, mode="nearest")
    want = {"up": up, "wide": F.interpolate(x, size=(10, 12), mode="nearest"),
            "sized": F.interpolate(x, size=(15, 8), mode="nearest"), "cat": torch.cat([F.relu(up)] * 2, 1)}
    for blob in blobs:
        np.testing.assert_allclose(got[blob], want[blob].numpy(), rtol=1e-5, atol=1e-5)
    plain, _ = run_cpu(NET, feeds, batch=2)      # fused: the ReLU runs in the upsample loop
    np.testing.assert_allclose(plain["cat"], want["cat"].numpy(), rtol=1e-5, atol=1e-5)
    sim, source = run_cuda_sim(NET, feeds, 2, ex.weights)
    assert "def k_upsample_" in source
    for blob in ("wide", "sized", "cat"):
        np.testing.assert_allclose(sim[blob], want[blob].numpy(), rtol=1e-5, atol=1e-5)


def test_diagram_label_names_the_scale():
    net = loads(NET, path="u.net")
    net.analyze()
    dot = to_dot(net.graph)
    assert "nearest \u00d72" in dot and "nearest \u00d72x3" in dot and "nearest \u219215x8" in dot


@pytest.mark.parametrize("bad, msg", [("Upsample(upsample_h=4)", "must be given together"),
                                      ("Upsample(scale=0)", "must be positive"),
                                      ("Upsample(scale_h=2)", "must be given together")])
def test_bad_parameters_are_located_errors(bad, msg):
    with pytest.raises(NetcError, match=msg) as e:
        loads(f"network x\ninput data: [1, 2, 3, 3]\n{bad}\n", path="x.net").analyze()
    assert e.value.loc is not None and e.value.loc.line == 3
