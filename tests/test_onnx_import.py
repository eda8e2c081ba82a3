"""ONNX import (first cut): files netc exports and files built with onnx.helper the way PyTorch
exports CNNs, imported into the IR and run by netc against ONNX Runtime on the same file."""
from __future__ import annotations

import netc
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from netc.cli import main
from onnx import TensorProto, helper, numpy_helper
from reference import rel


def ort_and_netc(path, batch=1):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    net = netc.load(path)
    ex = net.compile(batch=batch)
    name = ex.required_inputs[0]
    x = np.random.default_rng(0).standard_normal(ex.input_shape(name)).astype(np.float32)
    want = dict(zip([o.name for o in s.get_outputs()], s.run(None, {name: x})))
    got = ex.run({name: x})
    return net, want, got


@pytest.mark.parametrize("model", ["lenet", "resnet18", "googlenet", "squeezenet1_1", "mobilenet_v2"])
def test_netc_exports_import_back_and_run_as_onnx_runtime_does(model, tmp_path):
    path = tmp_path / f"{model}.onnx"
    netc.load(model).export_onnx(path)
    net, want, got = ort_and_netc(path)
    for name, y in want.items():
        assert rel(got[name], y) < 1e-4, name
    assert net.analyze().totals["macc"] == netc.load(model).analyze().totals["macc"]


def torch_style_model(path):
    """Conv+BN+ReLU, a padded MaxPool, a residual Add, a per-channel Mul, LeakyRelu, Clip with
    tensor bounds, Concat, GlobalAveragePool, Flatten, Gemm, Softmax: PyTorch's shapes of export."""
    rng = np.random.default_rng(1)

    def init(name, *shape, scale=0.3):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)
    inits = [init("w1", 8, 3, 3, 3), init("b1", 8), init("gamma", 8), init("beta", 8), init("mean", 8),
             numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), "var"),
             init("w2", 8, 8, 3, 3), init("chan", 1, 8, 1, 1), init("fc_w", 5, 16), init("fc_b", 5),
             numpy_helper.from_array(np.array(0.0, np.float32), "lo"), numpy_helper.from_array(np.array(6.0, np.float32), "hi")]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "gamma", "beta", "mean", "var"], ["bn1"], epsilon=1e-3),
        helper.make_node("Relu", ["bn1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "p1"], ["res"]),
        helper.make_node("Mul", ["res", "chan"], ["scaled"]),
        helper.make_node("LeakyRelu", ["scaled"], ["lr"], alpha=0.1),
        helper.make_node("Clip", ["res", "lo", "hi"], ["six"]),
        helper.make_node("Concat", ["lr", "six"], ["cat"], axis=1),
        helper.make_node("GlobalAveragePool", ["cat"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["prob"], axis=1),
    ]
    graph = helper.make_graph(nodes, "torchish", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 12, 10])],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["batch", 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def test_a_pytorch_style_file_runs_as_onnx_runtime_says(tmp_path):
    path = tmp_path / "t.onnx"
    torch_style_model(path)
    for batch in (1, 3):
        net, want, got = ort_and_netc(path, batch)
        assert rel(got["prob"], want["prob"]) < 1e-4
    rows = {r.name: r for r in net.analyze().layers}
    # conv1 8x3x3x3 + 8, BatchNormalization's gamma and beta 2x8, conv2 8x8x3x3, the per-channel Mul 8, Gemm 5x16 + 5
    assert net.analyze().totals["params"] == 8 * 27 + 8 + 16 + 8 * 72 + 8 + 85
    assert rows["conv1"].output_shapes == [[1, 8, 12, 10]]


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "\ufffd" not in err and len(err.splitlines()) == 1, err
    return err


def saved(tmp_path, nodes, inits=(), name="e", x_shape=(1, 3, 4, 4)):
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                              [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)], list(inits))
    path = tmp_path / f"{name}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_every_unsupported_operator_is_named_at_once(tmp_path, capsys):
    nodes = [helper.make_node("Einsum", ["x", "x"], ["a"], equation="ij,ij->ij"),
             helper.make_node("Hardswish", ["a"], ["b"]),
             helper.make_node("FusedConv", ["b"], ["c"], domain="com.microsoft"),
             helper.make_node("Einsum", ["c", "c"], ["d"], equation="ij,ij->ij")]
    err = one_line_error(capsys, ["analyze", str(saved(tmp_path, nodes))])
    assert "e.onnx:1:1: error: netc does not import 3 operators of this file (opset 17)" in err
    assert 'Einsum: 2 nodes, first node 0 "a"' in err
    assert 'Hardswish (did you mean "HardSwish"?): 1 node, first node 1 "b"' in err
    assert "FusedConv (domain com.microsoft)" in err
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01not onnx" * 50)
    assert "cannot read" in one_line_error(capsys, ["analyze", str(junk)])


def test_broken_graphs_are_located_errors(tmp_path, capsys):
    missing = saved(tmp_path, [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3])], name="missing")
    assert ('missing.onnx:1:1: error: ONNX node 0 (Conv "y"): it reads "w", which no node, graph input or '
            'initializer defines') in one_line_error(capsys, ["analyze", str(missing)])
    cycle = saved(tmp_path, [helper.make_node("Add", ["x", "b"], ["a"]), helper.make_node("Relu", ["a"], ["b"])],
                  name="cycle")
    assert "the ONNX graph has a cycle through nodes 0 (Add), 1 (Relu)" in one_line_error(capsys, ["analyze", str(cycle)])
    shuffled = saved(tmp_path, [helper.make_node("Relu", ["a"], ["b"]), helper.make_node("Sigmoid", ["x"], ["a"])],
                     name="unsorted")
    assert main(["analyze", str(shuffled)]) == 0        # out of order but acyclic: sorted on load
    capsys.readouterr()
    odd = saved(tmp_path, [helper.make_node("Mul", ["x", "v"], ["y"])], [numpy_helper.from_array(np.ones((4, 1), np.float32), "v")],
                name="odd")
    assert "a constant operand of shape [4, 1]" in one_line_error(capsys, ["analyze", str(odd)])


def external_model(tmp_path, location: str, nbytes: int = 8 * 27 * 4):
    """A Conv whose weights (8x3x3x3 floats) live in external data at `location`."""
    w = onnx.TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[8, 3, 3, 3])
    w.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(nbytes))):
        w.external_data.add(key=k, value=v)
    return saved(tmp_path, [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3])], [w], name="ext")


def test_external_data_stays_beside_the_model(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    here = tmp_path / "model"
    weights = np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32)
    (here / "w.bin").write_bytes(weights.tobytes())
    net = netc.load(external_model(here, "w.bin"))
    assert np.array_equal(net.graph.graph["weights"]["y.weight"], weights)
    (tmp_path / "secret.bin").write_bytes(weights.tobytes())
    for where in ("../secret.bin", str(tmp_path / "secret.bin")):
        err = one_line_error(capsys, ["analyze", str(external_model(here, where))])
        assert f'keeps its data at "{where}", outside the model\'s folder' in err
    (here / "link.bin").symlink_to(tmp_path / "secret.bin")
    assert "outside the model's folder" in one_line_error(capsys, ["analyze", str(external_model(here, "link.bin"))])
    (here / "short.bin").write_bytes(weights.tobytes()[:100])
    err = one_line_error(capsys, ["analyze", str(external_model(here, "short.bin"))])
    assert "needs bytes 0 to 864 of short.bin, which has 100: the external data is truncated" in err
    err = one_line_error(capsys, ["analyze", str(external_model(here, "w.bin", nbytes=1 << 40))])
    assert "declares 1,099,511,627,776 bytes of external data for 216 values" in err


def test_symbolic_sizes_take_input_shape(tmp_path, capsys):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "s",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, "h", "w"])])
    path = tmp_path / "s.onnx"
    onnx.save(helper.make_model(graph), str(path))
    assert main(["analyze", str(path)]) == 2
    assert 'unknown size on axis 2 (h): give it with --input-shape x=1x3xHxW' in capsys.readouterr().err
    assert main(["analyze", str(path), "--input-shape", "x=1x3x48x192", "--format", "json"]) == 0
    assert '"output_shapes": [\n    [\n     1,\n     3,\n     48,\n     192' in capsys.readouterr().out


def test_onnx_to_prototxt_and_caffemodel_runs_the_same(tmp_path, capsys):
    """`convert` and `weights convert` take an ONNX file to Caffe's two files; netc runs those
    as ONNX Runtime runs the original."""
    path = tmp_path / "t.onnx"
    torch_style_model(path)
    proto, caffemodel, npz = tmp_path / "t.prototxt", tmp_path / "t.caffemodel", tmp_path / "t.npz"
    assert main(["convert", str(path), "--to", "prototxt", "-o", str(proto)]) == 0
    assert main(["weights", "convert", str(path), "-o", str(caffemodel)]) == 0
    assert main(["weights", "convert", str(path), "-o", str(npz)]) == 0
    assert main(["weights", "convert", str(path), "-o", str(npz), "--model", str(proto)]) == 2
    assert "carries its own graph" in capsys.readouterr().err
    x = np.random.default_rng(3).standard_normal((1, 3, 12, 10)).astype(np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    for weights in (caffemodel, npz):
        got = netc.load(proto).compile(weights=str(weights)).run({"x": x})["prob"]
        assert rel(got, want) < 1e-5


def test_silu_imports_as_one_swish_fused_into_the_convolution(tmp_path):
    """x * Sigmoid(x) after a Conv (torch's SiLU as exported) becomes one Swish layer, which the
    CPU target runs in the convolution's epilogue; a Sigmoid whose value is read elsewhere, or a
    Mul of something else by it, stays as it was. Outputs as ONNX Runtime computes them."""
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.standard_normal((6, 3, 3, 3)).astype(np.float32), "w")
    v = numpy_helper.from_array(rng.standard_normal((6, 6, 1, 1)).astype(np.float32), "v")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["c"], ["s"]),
             helper.make_node("Mul", ["s", "c"], ["silu"]),                  # SiLU: fused
             helper.make_node("Conv", ["silu", "v"], ["d"]),
             helper.make_node("Sigmoid", ["d"], ["t"]),
             helper.make_node("Mul", ["silu", "t"], ["gated"]),              # a gate by another value: kept
             helper.make_node("Sigmoid", ["gated"], ["u"]),
             helper.make_node("Mul", ["gated", "u"], ["g2"]),
             helper.make_node("Add", ["g2", "u"], ["y"])]                    # u read twice: kept
    path = saved(tmp_path, nodes, [w, v], "silu", (1, 3, 8, 8))
    net, want, got = ort_and_netc(path)
    types = [net.graph.nodes[n]["type"] for n in net.graph.nodes]
    assert types.count("Swish") == 1 and types.count("Sigmoid") == 2
    assert rel(got["y"], want["y"]) < 1e-5
    ex = net.compile()
    fused = [s for s in ex.program.steps if s.type == "Convolution" and len(s.layers) > 1]
    assert any(net.graph.nodes[n]["type"] == "Swish" for s in fused for n in s.layers)
