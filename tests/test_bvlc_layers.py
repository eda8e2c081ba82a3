"""BVLC layers real files use beyond the common ones: Tile, Reduction, MVN, Embed, Silence, ArgMax,
Parameter, SPP; shapes and counts from their caffe.proto semantics, the CPU target, the CUDA
simulator and ONNX Runtime against the torch reference."""
from __future__ import annotations

import numpy as np
import pytest

from netc.compiler.errors import NetcError
from netc.compiler.network import loads

from nets import inp, layer
from reference import check, rel, torch_forward
from targets import run_cuda_sim

NET = inp(2, 3, 4, 5) + "".join([
    layer("c", "Convolution", "data", "c", "convolution_param { num_output: 4 kernel_size: 1 }"),
    layer("t", "Tile", "c", "t", "tile_param { axis: 2 tiles: 3 }"),
    layer("m", "MVN", "t", "m"),
    layer("mc", "MVN", "c", "mc", "mvn_param { across_channels: true normalize_variance: false }"),
    layer("r1", "Reduction", "m", "r1", "reduction_param { operation: SUMSQ axis: 1 coeff: 0.5 }"),
    layer("r2", "Reduction", "mc", "r2", "reduction_param { operation: ASUM axis: 2 }"),
    layer("r3", "Reduction", "c", "r3", "reduction_param { operation: MEAN axis: -1 }"),
    layer("r0", "Reduction", "c", "r0"),
    layer("quiet", "Silence", ["r0"], []),
])


def test_shapes_and_costs():
    net = loads(NET, path="b.prototxt")
    net.analyze(batch=2)
    shape = {n: net.graph.nodes[n]["shapes"] for n in net.graph.nodes}
    assert shape["t"] == [(2, 4, 12, 5)] and shape["m"] == [(2, 4, 12, 5)]
    assert shape["r1"] == [(2,)] and shape["r2"] == [(2, 4)] and shape["r3"] == [(2, 4, 4)] and shape["r0"] == [()]
    assert shape["quiet"] == [] and not net.graph.nodes["quiet"]["forward"]
    assert net.graph.nodes["r1"]["ops"].mul == 2 * 4 * 12 * 5 + 2


def test_cpu_matches_torch():
    check(NET)


def test_cuda_simulator_and_onnx_runtime_match_torch(tmp_path):
    import onnxruntime as ort
    net = loads(NET, path="b.prototxt")
    ex = net.compile(batch=2)
    feeds = {"data": np.random.default_rng(2).standard_normal((2, 3, 4, 5)).astype(np.float32)}
    want = torch_forward(net, ex.weights, feeds)
    got, source = run_cuda_sim(NET, feeds, 2, ex.weights, path="b.prototxt")
    assert "def k_mvn_" in source and "def k_tile_" in source and "def k_reduce_" in source
    for blob in ex.outputs:
        assert rel(got[blob], want[blob]) < 1e-4, blob
    net.export_onnx(tmp_path / "b.onnx", weights=ex.weights, batch=2)
    s = ort.InferenceSession(str(tmp_path / "b.onnx"), providers=["CPUExecutionProvider"])
    for o, y in zip(s.get_outputs(), s.run(None, feeds)):
        assert rel(y, want[o.name]) < 1e-4, o.name


def test_embed_looks_rows_up_and_never_reads_outside_its_table(tmp_path):
    text = inp(2, 3) + layer("e", "Embed", "data", "e", "embed_param { num_output: 4 input_dim: 5 }")
    net = loads(text, path="e.prototxt")
    net.analyze(batch=2)
    assert net.graph.nodes["e"]["shapes"] == [(2, 3, 4)] and net.graph.nodes["e"]["params"] == 5 * 4 + 4
    ex = net.compile(batch=2)
    idx = np.array([[0, 4, 2], [1, 1, 3]], np.float32)
    want = torch_forward(net, ex.weights, {"data": idx})["e"].numpy()
    np.testing.assert_allclose(ex.run({"data": idx})["e"], want, rtol=1e-6)
    got, _ = run_cuda_sim(text, {"data": idx}, 2, ex.weights, path="e.prototxt")
    np.testing.assert_allclose(got["e"], want, rtol=1e-6)
    bad = ex.run({"data": np.array([[-1, 5, 2], [9, 1, 3]], np.float32)})["e"]
    assert np.isnan(bad[0, 0]).all() and np.isnan(bad[0, 1]).all() and np.isnan(bad[1, 0]).all()
    assert np.allclose(bad[0, 2], want[0, 2])


def test_errors_are_located():
    with pytest.raises(NetcError, match='Tile needs "tiles"'):
        loads(inp(1, 2) + layer("t", "Tile", "data", "t"), path="t.prototxt")
    with pytest.raises(NetcError, match="Reduction: axis 5 out of range"):
        loads(inp(1, 2) + layer("r", "Reduction", "data", "r", "reduction_param { axis: 5 }"), path="r.prototxt").analyze()
    with pytest.raises(NetcError, match='Embed needs "num_output" and "input_dim"'):
        loads(inp(1, 2) + layer("e", "Embed", "data", "e", "embed_param { num_output: 3 }"), path="e.prototxt")


@pytest.mark.parametrize("params, shape", [
    ("argmax_param { top_k: 3 }", (2, 1, 3, 1)),
    ("argmax_param { top_k: 2 out_max_val: true }", (2, 2, 2, 1)),
    ("argmax_param { axis: 1 top_k: 2 }", (2, 2, 4, 5)),
    ("argmax_param { axis: -1 out_max_val: true }", (2, 3, 4, 1)),
])
def test_argmax_top_k_everywhere(params, shape, tmp_path):
    import onnxruntime as ort
    text = inp(2, 3, 4, 5) + layer("a", "ArgMax", "data", "a", params)
    net = loads(text, path="a.prototxt")
    net.analyze(batch=2)
    assert net.graph.nodes["a"]["shapes"] == [shape]
    ex = net.compile(batch=2)
    feeds = {"data": np.random.default_rng(5).standard_normal((2, 3, 4, 5)).astype(np.float32)}
    want = torch_forward(net, ex.weights, feeds)["a"].numpy()
    np.testing.assert_array_equal(ex.run(feeds)["a"], want.astype(np.float32))
    got, _ = run_cuda_sim(text, feeds, 2, ex.weights, path="a.prototxt")
    np.testing.assert_array_equal(got["a"], want.astype(np.float32))
    net.export_onnx(tmp_path / "a.onnx", weights=ex.weights, batch=2)
    s = ort.InferenceSession(str(tmp_path / "a.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(s.run(None, feeds)[0], want.astype(np.float32))


def test_argmax_ties_go_to_the_larger_index():
    text = inp(1, 6) + layer("a", "ArgMax", "data", "a", "argmax_param { top_k: 3 }")
    ex = loads(text, path="t.prototxt").compile()
    got = ex.run({"data": np.array([[1, 5, 5, 2, 5, 0]], np.float32)})["a"]
    assert got.ravel().tolist() == [4, 2, 1]


def test_parameter_feeds_a_learned_blob(tmp_path):
    """A Parameter [4] scaling a conv's channels through a two-input Scale."""
    text = inp(2, 3, 4, 4) + "".join([
        layer("c", "Convolution", "data", "c", "convolution_param { num_output: 4 kernel_size: 1 }"),
        layer("g", "Parameter", [], "g", "parameter_param { shape { dim: 4 } }"),
        layer("s", "Scale", ["c", "g"], "s", "scale_param { axis: 1 }"),
    ])
    check(text)
    net = loads(text, path="p.prototxt")
    net.analyze(batch=2)
    assert net.graph.nodes["g"]["shapes"] == [(4,)] and net.graph.nodes["g"]["params"] == 4
    ex = net.compile(batch=2)
    feeds = {"data": np.random.default_rng(1).standard_normal((2, 3, 4, 4)).astype(np.float32)}
    want = torch_forward(net, ex.weights, feeds)
    got, _ = run_cuda_sim(text, feeds, 2, ex.weights, path="p.prototxt")
    assert rel(got["s"], want["s"]) < 1e-5


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
def test_spp_levels_follow_spp_layer_cpp(pool, tmp_path):
    import onnxruntime as ort
    text = inp(2, 3, 7, 5) + "".join([
        layer("s", "SPP", "data", "s", f"spp_param {{ pyramid_height: 3 pool: {pool} }}"),
        layer("one", "SPP", "data", "one", f"spp_param {{ pyramid_height: 1 pool: {pool} }}")])
    net = loads(text, path="s.prototxt")
    net.analyze(batch=2)
    assert net.graph.nodes["s"]["shapes"] == [(2, 3 * (1 + 4 + 16))]
    assert net.graph.nodes["one"]["shapes"] == [(2, 3, 1, 1)]
    check(text)
    ex = net.compile(batch=2)
    feeds = {"data": np.random.default_rng(3).standard_normal((2, 3, 7, 5)).astype(np.float32)}
    want = torch_forward(net, ex.weights, feeds)
    got, _ = run_cuda_sim(text, feeds, 2, ex.weights, path="s.prototxt")
    net.export_onnx(tmp_path / "s.onnx", weights=ex.weights, batch=2)
    s = ort.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"])
    onnx_out = dict(zip([o.name for o in s.get_outputs()], s.run(None, feeds)))
    for blob in ("s", "one"):
        assert rel(got[blob], want[blob]) < 1e-5 and rel(onnx_out[blob], want[blob]) < 1e-5, blob
