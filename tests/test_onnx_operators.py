"""ONNX graphs built with onnx.helper the way exporters write them (torch.onnx, tf2onnx,
paddle2onnx; opsets 7 to 18), imported by netc and run against ONNX Runtime on the same file:
the older and newer spellings of Clip, Slice, Squeeze, Split, Softmax and the reductions,
shape arithmetic folded away, NHWC inputs, squeeze-and-excitation gates, scalar constants."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import netc
from netc.cli import main

from reference import rel

RNG = np.random.default_rng(5)


def const(name, value, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(value, dtype), name)


def weights(name, *shape, scale=0.3):
    return const(name, RNG.standard_normal(shape) * scale)


def save(tmp_path, nodes, inputs, outputs, inits=(), opset=17, name="m"):
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs], list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7 if opset < 15 else 8
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def against_ort(path, shapes: dict, batch=1, **load):
    """netc's outputs and ONNX Runtime's on the same random input (batch items)."""
    feeds = {n: RNG.standard_normal((batch, *s[1:])).astype(np.float32) for n, s in shapes.items()}
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = dict(zip([o.name for o in s.get_outputs()], s.run(None, feeds)))
    net = netc.load(path, **load)
    got = net.compile(batch=batch).run(feeds)
    for name, y in want.items():
        assert got[name].shape == y.shape, name
        assert rel(got[name], y) < 1e-4, (name, rel(got[name], y))
    return net, got


def conv(x, out, w, cin, k=3, pad=1, **kw):
    return helper.make_node("Conv", [x, w], [out], kernel_shape=[k, k], pads=[pad] * 4, **kw), weights(w, 8, cin, k, k)


def test_opset7_spellings(tmp_path):
    """Attribute forms: Clip min/max, Slice starts/ends, Unsqueeze/Squeeze axes, Upsample scales,
    BatchNormalization spatial; Softmax over everything from axis 1 on, Gemm alpha and beta."""
    c1, w1 = conv("x", "c", "w", 3)
    nodes = [c1,
             helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["bn"], spatial=1, epsilon=1e-3),
             helper.make_node("Clip", ["bn"], ["clip"], min=-0.5, max=0.7),
             helper.make_node("Slice", ["clip"], ["sl"], starts=[2], ends=[7], axes=[1]),
             helper.make_node("Upsample", ["sl"], ["up"], scales=[1.0, 1.0, 2.0, 2.0], mode="nearest"),
             helper.make_node("MaxPool", ["up"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Softmax", ["pool"], ["soft"], axis=1),
             helper.make_node("Flatten", ["soft"], ["flat"]),
             helper.make_node("Gemm", ["flat", "fc", "fcb"], ["logits"], alpha=0.5, beta=2.0, transB=1),
             helper.make_node("Unsqueeze", ["logits"], ["u"], axes=[2, 3]),
             helper.make_node("Squeeze", ["u"], ["y"], axes=[3])]
    inits = [w1, weights("g", 8), weights("b", 8), weights("m", 8), const("v", RNG.uniform(0.5, 2, 8)),
             weights("fc", 4, 5 * 6 * 6), weights("fcb", 4)]
    path = save(tmp_path, nodes, [("x", ["N", 3, 6, 6])], ["y"], inits, opset=7)
    net, got = against_ort(path, {"x": [1, 3, 6, 6]}, batch=2)
    assert got["y"].shape == (2, 4, 1)


def test_opset11_resize_split_reduce(tmp_path):
    c1, w1 = conv("x", "c", "w", 3)
    nodes = [c1,
             helper.make_node("Resize", ["c", "roi", "scales"], ["near"], mode="nearest",
                              coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
             helper.make_node("Resize", ["c", "roi", "no_scales", "sizes"], ["lin"], mode="linear",
                              coordinate_transformation_mode="align_corners"),
             helper.make_node("Split", ["near"], ["s1", "s2", "s3"], axis=1, split=[2, 4, 2]),
             helper.make_node("ReduceMean", ["s2"], ["m1"], axes=[2, 3], keepdims=1),
             helper.make_node("ReduceMean", ["s3"], ["m2"], axes=[1, 2, 3], keepdims=0),
             helper.make_node("ReduceSum", ["lin"], ["m3"], axes=[3], keepdims=1),
             helper.make_node("Mul", ["s2", "m1"], ["gated"]),
             helper.make_node("Relu", ["s1"], ["r1"])]
    inits = [w1, const("roi", []), const("no_scales", []), const("scales", [1, 1, 2, 2]), const("sizes", [1, 8, 11, 9], np.int64)]
    path = save(tmp_path, nodes, [("x", [1, 3, 5, 4])], ["r1", "gated", "m2", "m3"], inits, opset=11)
    net, got = against_ort(path, {"x": [1, 3, 5, 4]})
    types = [d["type"] for _, d in net.graph.nodes(data=True)]
    assert "Interp" in types and "Upsample" in types and "Slice" in types and "Scale" in types


def opset14_model(tmp_path):
    """HardSigmoid/HardSwish (MobileNetV3), Selu, PRelu per channel, LeakyRelu, Clip with tensor
    bounds, Sub/Div/Pow/Sqrt/Reciprocal/Neg by constants, an SE gate by Mul and by Add,
    Split with a sizes input, Squeeze with an axes input, per-channel Softmax, LogSoftmax."""
    c1, w1 = conv("x", "c", "w", 3)
    nodes = [c1,
             helper.make_node("HardSwish", ["c"], ["hs"]),
             helper.make_node("HardSigmoid", ["c"], ["hsig"], alpha=0.3, beta=0.4),
             helper.make_node("Selu", ["hs"], ["selu"]),
             helper.make_node("PRelu", ["selu", "slope"], ["pr"]),
             helper.make_node("LeakyRelu", ["pr"], ["lr"], alpha=0.2),
             helper.make_node("Clip", ["lr", "lo", "hi"], ["cl"]),
             helper.make_node("Sub", ["cl", "chan"], ["sub"]),
             helper.make_node("Div", ["sub", "two"], ["div"]),
             helper.make_node("Sub", ["two", "div"], ["rsub"]),
             helper.make_node("Abs", ["rsub"], ["abs"]),
             helper.make_node("Add", ["abs", "one"], ["pos"]),
             helper.make_node("Sqrt", ["pos"], ["sq"]),
             helper.make_node("Pow", ["sq", "three"], ["pw"]),
             helper.make_node("Reciprocal", ["pw"], ["rec"]),
             helper.make_node("Neg", ["rec"], ["neg"]),
             helper.make_node("AveragePool", ["hsig"], ["avg"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["avg"], ["gap"]),
             helper.make_node("Sigmoid", ["gap"], ["gate"]),
             helper.make_node("Mul", ["gate", "neg"], ["se"]),
             helper.make_node("Add", ["se", "gap"], ["se_bias"]),
             helper.make_node("Split", ["se_bias", "parts"], ["a", "b"], axis=1),
             helper.make_node("Softmax", ["a"], ["soft_c"], axis=1),
             helper.make_node("ReduceMean", ["b"], ["bm"], axes=[2, 3], keepdims=1),
             helper.make_node("Squeeze", ["bm", "sq_axes"], ["flat"]),
             helper.make_node("LogSoftmax", ["flat"], ["logp"], axis=1),
             helper.make_node("Tanh", ["soft_c"], ["t"]), helper.make_node("Elu", ["t"], ["e"], alpha=0.5)]
    inits = [w1, const("slope", RNG.uniform(0.1, 0.3, (8, 1, 1))), const("lo", -1.0), const("hi", 1.5),
             weights("chan", 1, 8, 1, 1), const("two", 2.0), const("one", 1.0), const("three", 3.0),
             const("parts", [3, 5], np.int64), const("sq_axes", [2, 3], np.int64)]
    return save(tmp_path, nodes, [("x", ["N", 3, 5, 5])], ["e", "logp"], inits, opset=14)


def test_opset14_activations_and_arithmetic(tmp_path):
    against_ort(opset14_model(tmp_path), {"x": [1, 3, 5, 5]}, batch=2)


def test_cuda_simulator_runs_what_import_makes(tmp_path):
    """The layers ONNX import adds (HardSwish, HardSigmoid, SELU, two-input Scale and Bias,
    Slice with Silence, Power, Reduction, AVE pooling excluding the padding) on the CUDA
    target, against ONNX Runtime."""
    from targets import run_cuda_sim
    path = opset14_model(tmp_path)
    net = netc.load(path)
    x = RNG.standard_normal((2, 3, 5, 5)).astype(np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    got, source = run_cuda_sim(net.to_prototxt(), {"x": x}, 2, net.graph.graph["weights"], path="m.prototxt")
    assert "hswish" in source.lower() or "hardswish" in source.lower()
    for name, y in zip(("e", "logp"), want):
        assert rel(got[name], y) < 1e-4, name


def test_shape_arithmetic_folds_and_keeps_the_batch(tmp_path):
    """x.view(x.size(0), -1) and a channel shuffle with sizes computed from Shape, as torch.onnx
    writes them for a symbolic batch: folded at load, the batch still set by --batch."""
    c1, w1 = conv("x", "c", "w", 3)
    nodes = [c1,
             helper.make_node("Shape", ["c"], ["shape"]),
             helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
             helper.make_node("Gather", ["shape", "one_i"], ["ch"], axis=0),
             helper.make_node("Div", ["ch", "two_i"], ["half"]),
             helper.make_node("Unsqueeze", ["n", "ax0"], ["n1"]),
             helper.make_node("Unsqueeze", ["half", "ax0"], ["h1"]),
             helper.make_node("Slice", ["shape", "s2", "s4"], ["hw"]),
             helper.make_node("Concat", ["n1", "two_1", "h1", "hw"], ["shuffle_shape"], axis=0),
             helper.make_node("Reshape", ["c", "shuffle_shape"], ["r5"]),
             helper.make_node("Transpose", ["r5"], ["t5"], perm=[0, 2, 1, 3, 4]),
             helper.make_node("Concat", ["n1", "minus1"], ["flat_shape"], axis=0),
             helper.make_node("Reshape", ["t5", "flat_shape"], ["y"]),
             helper.make_node("ConstantOfShape", ["ax0_len"], ["zeros"], value=helper.make_tensor("v", TensorProto.INT64, [1], [0])),
             helper.make_node("Cast", ["zeros"], ["zf"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["y", "zf"], ["out"])]
    inits = [w1, const("zero", 0, np.int64), const("one_i", 1, np.int64), const("two_i", 2, np.int64),
             const("ax0", [0], np.int64), const("two_1", [2], np.int64), const("s2", [2], np.int64),
             const("s4", [4], np.int64), const("minus1", [-1], np.int64), const("ax0_len", [1], np.int64)]
    path = save(tmp_path, nodes, [("x", ["N", 3, 4, 4])], ["out"], inits, opset=13)
    net, got = against_ort(path, {"x": [1, 3, 4, 4]}, batch=3)
    types = {d["type"] for _, d in net.graph.nodes(data=True)}
    assert types == {"Input", "Convolution", "Reshape", "Permute", "Power"}
    assert got["out"].shape == (3, 128)


def test_nhwc_input_reads_images_as_the_model_wants(tmp_path, capsys):
    """tf2onnx's Keras CNN: [N, H, W, 3] in, a Transpose to NCHW, SAME padding by auto_pad."""
    from PIL import Image
    w = weights("w", 8, 3, 3, 3)
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["t", "w"], ["c"], kernel_shape=[3, 3], auto_pad="SAME_UPPER"),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[3, 3], strides=[1, 1], auto_pad="SAME_UPPER"),
             helper.make_node("GlobalAveragePool", ["p"], ["g"]),
             helper.make_node("Flatten", ["g"], ["y"])]
    path = save(tmp_path, nodes, [("x", ["unk__0", 9, 11, 3])], ["y"], [w], opset=13)
    against_ort(path, {"x": [1, 9, 11, 3]}, batch=2)
    img = tmp_path / "cat.png"
    Image.fromarray(RNG.integers(0, 256, (9, 11, 3), dtype=np.uint8)).save(img)
    out = tmp_path / "y.npy"
    assert main(["run", str(path), "--input", str(img), "-o", str(out)]) == 0
    assert "fed NHWC" in capsys.readouterr().err
    x = (np.asarray(Image.open(img), np.float32) / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x[None].astype(np.float32)})[0]
    assert rel(np.load(out), want) < 1e-5


def test_maxpool_ceil_mode_and_end_pads_follow_onnx(tmp_path):
    """A window in ONNX's end padding (pads [0, 0, 1, 1]) or from ceil_mode: the Caffe rounding
    that gives ONNX's window count is chosen, padded only at the start."""
    nodes = [helper.make_node("MaxPool", ["x"], ["a"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
             helper.make_node("MaxPool", ["x"], ["b"], kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1]),
             helper.make_node("AveragePool", ["x"], ["c"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
             # ONNX's default divisor: the taps inside the input (Keras's "same" average pooling)
             helper.make_node("AveragePool", ["x"], ["d"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                              ceil_mode=1),
             helper.make_node("AveragePool", ["x"], ["e"], kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1]),
             helper.make_node("AveragePool", ["x"], ["f"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1],
                              count_include_pad=1)]
    path = save(tmp_path, nodes, [("x", [1, 2, 7, 8])], ["a", "b", "c", "d", "e", "f"], opset=13)
    net, got = against_ort(path, {"x": [1, 2, 7, 8]})
    assert got["a"].shape == (1, 2, 4, 5) and got["b"].shape == (1, 2, 4, 4) and got["c"].shape == (1, 2, 3, 4)
    assert got["d"].shape == (1, 2, 4, 5) and got["e"].shape == (1, 2, 4, 4)
    assert net.graph.nodes["f"]["attrs"]["exclude_pad"] is False and net.graph.nodes["d"]["attrs"]["exclude_pad"]


@pytest.mark.parametrize("model", ["lenet", "squeezenet1_1", "mobilenet_v2"])
def test_prototxt_to_onnx_to_netc_keeps_analysis_and_outputs(model, tmp_path):
    path = tmp_path / f"{model}.onnx"
    first = netc.load(model)
    first.export_onnx(path)
    second = netc.load(path)
    a, b = first.analyze(), second.analyze()
    for key in ("params", "macc", "flops", "activation_bytes", "peak_activation_bytes"):
        assert a.totals[key] == b.totals[key], key
    ex1, ex2 = first.compile(), second.compile()
    x = RNG.standard_normal(ex1.input_shape(ex1.required_inputs[0])).astype(np.float32)
    y1 = ex1.run({ex1.required_inputs[0]: x})[ex1.outputs[-1]]
    y2 = ex2.run({ex2.required_inputs[0]: x})[ex2.outputs[-1]]
    assert rel(y2, y1) < 1e-5


def test_opset18_and_paddle_style_constants(tmp_path):
    """Weights in Constant nodes (paddle2onnx), ReduceMean's axes and Split's num_outputs as
    opset 18 spells them."""
    w = RNG.standard_normal((6, 3, 3, 3)).astype(np.float32) * 0.3
    nodes = [helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w, "w")),
             helper.make_node("Constant", [], ["b"], value_floats=[0.1, -0.2, 0.3, 0.0, 0.5, -0.1]),
             helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Split", ["c"], ["s1", "s2", "s3"], axis=1, num_outputs=3),
             helper.make_node("Constant", [], ["axes"], value_ints=[2, 3]),
             helper.make_node("ReduceMean", ["s2", "axes"], ["m"], keepdims=0),
             helper.make_node("Max", ["s1", "s3"], ["mx"])]
    path = save(tmp_path, nodes, [("x", ["batch", 3, 6, 6])], ["m", "mx"], opset=18)
    net, _ = against_ort(path, {"x": [1, 3, 6, 6]}, batch=2)
    assert net.analyze().totals["params"] == w.size + 6
