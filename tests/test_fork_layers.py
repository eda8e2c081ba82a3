"""Layers of the Caffe forks real files use (Interp, Axpy, BN in test_runtime, MAX pooling's
mask with SegNet's unpooling Upsample, DenseImageData) and BVLC's Exp, Log, Threshold: shapes
as the forks' sources define them, the CPU target and the CUDA simulator against PyTorch, and the
wild files they unlock against their papers' parameter counts."""
from __future__ import annotations

import numpy as np
import pytest

from netc.compiler.errors import NetcError
from netc.compiler.network import load, loads

from conftest import WILD
from nets import inp, layer
from reference import check, rel, torch_forward
from targets import run_cuda_sim

FORKS = inp(2, 3, 7, 9) + "".join([
    layer("c", "Convolution", "data", "c", "convolution_param { num_output: 4 kernel_size: 3 pad: 1 }"),
    layer("p", "Pooling", "c", ["p", "mask"], "pooling_param { pool: MAX kernel_size: 2 stride: 2 }"),
    layer("up", "Upsample", ["p", "mask"], "up", "upsample_param { scale: 2 pad_out_h: true pad_out_w: true }"),
    layer("zoom", "Interp", "p", "zoom", "interp_param { zoom_factor: 3 }"),
    layer("sized", "Interp", "c", "sized", "interp_param { height: 11 width: 5 }"),
    layer("crop", "Interp", "c", "crop", "interp_param { shrink_factor: 2 pad_beg: -1 pad_end: -1 }"),
    layer("like", "Interp", ["p", "c"], "like"),
    layer("g", "Pooling", "c", "g", "pooling_param { pool: AVE global_pooling: true }"),
    layer("gs", "Sigmoid", "g", "gs"),
    layer("ax", "Axpy", ["gs", "c", "up"], "ax"),
    layer("e", "Exp", "ax", "e", "exp_param { base: 2 scale: 0.5 shift: 0.1 }"),
    layer("l", "Log", "e", "l", "log_param { scale: 3 shift: 1 }"),
    layer("t", "Threshold", "l", "t", "threshold_param { threshold: 0.7 }"),
])


def test_shapes_follow_the_forks():
    net = loads(FORKS, path="f.prototxt")
    net.analyze(batch=2)
    shape = {n: net.graph.nodes[n]["shapes"] for n in net.graph.nodes}
    assert shape["p"] == [(2, 4, 4, 5)] * 2                  # the mask has the output's shape
    assert shape["up"] == [(2, 4, 7, 9)]                     # 2 x 4 - 1, 2 x 5 - 1 (pad_out_h, _w)
    assert shape["zoom"] == [(2, 4, 10, 13)]                 # H + (H - 1)(z - 1)
    assert shape["sized"] == [(2, 4, 11, 5)]
    assert shape["crop"] == [(2, 4, 3, 4)]                   # (7 - 2 - 1) // 2 + 1, (9 - 2 - 1) // 2 + 1
    assert shape["like"] == [(2, 4, 7, 9)]
    assert shape["ax"] == [(2, 4, 7, 9)]


def test_cpu_matches_torch():
    check(FORKS)


def test_cuda_simulator_matches_torch():
    net = loads(FORKS, path="f.prototxt")
    ex = net.compile(batch=2)
    rng = np.random.default_rng(3)
    feeds = {"data": rng.standard_normal((2, 3, 7, 9)).astype(np.float32)}
    want = torch_forward(net, ex.weights, feeds)
    got, source = run_cuda_sim(FORKS, feeds, 2, ex.weights, path="f.prototxt")
    for k in ("def k_unpool_", "def k_interp_", "def k_axpy_"):
        assert k in source
    for blob in ex.outputs:
        assert rel(got[blob], want[blob]) < 1e-4, blob


def test_fork_errors_are_located():
    with pytest.raises(NetcError, match="only MAX pooling has a second top"):
        loads(inp(1, 2, 4, 4) + layer("p", "Pooling", "data", ["p", "m"], "pooling_param { pool: AVE kernel_size: 2 }"),
              path="a.prototxt")
    with pytest.raises(NetcError, match=r"the gate \[1, 2, 4, 4\] must hold one value per image and channel"):
        loads(inp(1, 2, 4, 4) + layer("a", "Axpy", ["data", "data", "data"], "a"), path="a.prototxt").analyze()
    with pytest.raises(NetcError, match="Interp needs height and width, zoom_factor, shrink_factor or a second input"):
        loads(inp(1, 2, 4, 4) + layer("i", "Interp", "data", "i"), path="a.prototxt").analyze()
    with pytest.raises(NetcError, match="Log: base 1 has no logarithm"):
        loads(inp(1, 2, 4, 4) + layer("l", "Log", "data", "l", "log_param { base: 1 }"), path="a.prototxt")


@pytest.mark.parametrize("name, params, macs", [
    # SENet (Hu et al., CVPR 2018) Table 2: SE-ResNet-50 28.09M parameters, 3.87 GFLOPs (multiply-adds)
    ("senet__SE-ResNet-50", 28.09e6, 3.87e9),
    # ENet (Paszke et al. 2016) Table 3: 0.37M parameters
    ("enet__enet_deploy_final", 0.37e6, None),
    # Residual Attention Network (Wang et al., CVPR 2017) Table 4: Attention-56 31.9M params, 6.3 GFLOPs
    ("attention__Attention-56-deploy", 31.9e6, 6.3e9),
])
def test_wild_fork_files_match_their_papers(name, params, macs):
    totals = load(WILD / f"{name}.prototxt").analyze().totals
    assert abs(totals["params"] - params) / params < 0.01
    if macs:
        assert abs(totals["macc"] - macs) / macs < 0.01


def test_dense_image_data_takes_its_size_from_the_command_line():
    segnet = load(WILD / "segnet__segnet_basic_inference.prototxt")
    with pytest.raises(NetcError, match="data=1x3x360x480"):
        segnet.analyze()
    segnet.set_input_shapes({"data": (1, 3, 360, 480)})
    a = segnet.analyze()
    g = segnet.graph
    assert g.nodes["data"]["shapes"] == [(1, 3, 360, 480), (1, 1, 360, 480)]
    assert a.totals["params"] > 0 and g.nodes["upsample1"]["shapes"][0] == (1, 64, 360, 480)
