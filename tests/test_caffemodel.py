"""Caffe's binary weights: files written by protobuf's own serializer (tests/caffe_proto.py, no
netc code) are read by netc's reader and run against the torch reference; V1 and V2 layers,
legacy 4-D shapes, double data, unpacked numbers, BatchNorm's moving-average factor, training
snapshots' extra layers; strict mapping errors; truncated and hostile files; and the way back."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest

from netc.cli import main
from netc.compiler.errors import NetcError
from netc.compiler.network import load, loads
from netc.runtime import caffemodel

import caffe_proto
from conftest import PYTHON_LAYER_FILES, REF_FILES
from nets import CONV_NET, inp, layer
from reference import rel, torch_forward

BN_NET = inp(2, 3, 6, 6) + "".join([
    layer("conv", "Convolution", "data", "conv", "convolution_param { num_output: 4 kernel_size: 3 }"),
    layer("bn", "BatchNorm", "conv", "conv", "batch_norm_param { use_global_stats: true eps: 0.001 }"),
    layer("sc", "Scale", "conv", "conv", "scale_param { bias_term: true }"),
    layer("relu", "ReLU", "conv", "conv"),
    layer("pr", "PReLU", "conv", "pr"),
    layer("fc", "InnerProduct", "pr", "fc", "inner_product_param { num_output: 5 }"),
])


# each layer type's blobs in the order Caffe's SetUp makes them (conv_layer / base_conv: weights,
# bias; batch_norm_layer: mean, variance, the moving-average factor; scale_layer: scale, then its
# bias; prelu_layer: slope; SSD's normalize: scale; PSPNet's BN: slope, bias, mean, variance),
# written here so a wrong order in netc's Layer.caffe_blobs fails these tests
CAFFE_ORDER = {"Convolution": ("weight", "bias"), "ConvolutionDepthwise": ("weight", "bias"),
               "Deconvolution": ("weight", "bias"), "InnerProduct": ("weight", "bias"), "Embed": ("weight", "bias"),
               "Scale": ("weight", "bias"), "Bias": ("bias",), "PReLU": ("weight",), "Normalize": ("weight",),
               "BatchNorm": ("mean", "var", "moving_average_factor"), "BN": ("weight", "bias", "mean", "var")}


def caffe_layers(net, w):
    """(name, type, blobs in Caffe's order) from netc-keyed weights, as Caffe would hold them."""
    out = []
    for n in net.graph.nodes:
        d = net.graph.nodes[n]
        blobs = [w[f"{n}.{k}"] for k in CAFFE_ORDER.get(d["type"], ()) if f"{n}.{k}" in w]
        assert blobs or not any(k.startswith(f"{n}.") for k in w), f"no Caffe order written down for {d['type']}"
        if blobs:
            out.append((n, d["type"], blobs))
    return out


def run_both(text, path, **fmt):
    """netc run with weights from a protobuf-written .caffemodel vs the torch reference."""
    net = loads(text, path="m.prototxt")
    w = net.compile(batch=2, seed=3).weights
    if "bn.mean" in w:        # Caffe stores the statistics times the moving-average factor
        w = dict(w, **{"bn.mean": w["bn.mean"] * 4, "bn.var": w["bn.var"] * 4,
                       "bn.moving_average_factor": np.array([4.0], np.float32)})
    path.write_bytes(caffe_proto.caffemodel(caffe_layers(net, w), **fmt))
    ex = net.compile(batch=2, weights=str(path))
    for k, v in w.items():
        np.testing.assert_array_equal(ex.weights[k], v.astype(np.float32))
    feeds = {"data": np.random.default_rng(0).standard_normal(ex.input_shape("data")).astype(np.float32)}
    got = ex.run(feeds)
    want = torch_forward(net, w, feeds)
    for o in ex.outputs:
        assert rel(got[o], want[o]) < 1e-4, o
    return ex


@pytest.mark.parametrize("fmt", [{}, {"legacy_shape": True}, {"double": True}, {"packed": False}],
                         ids=["v2", "legacy-4d-shape", "double-data", "unpacked"])
def test_caffemodel_weights_run_as_torch_says(fmt, tmp_path):
    run_both(BN_NET, tmp_path / "m.caffemodel", **fmt)


def test_v1_layers_and_the_conv_family(tmp_path):
    v1 = inp(2, 3, 8, 8) + "".join([
        layer("c1", "Convolution", "data", "c1", "convolution_param { num_output: 4 kernel_size: 3 group: 1 }"),
        layer("d1", "Deconvolution", "c1", "d1", "convolution_param { num_output: 2 kernel_size: 2 stride: 2 }"),
        layer("fc", "InnerProduct", "d1", "fc", "inner_product_param { num_output: 3 }")])
    run_both(v1, tmp_path / "v1.caffemodel", v1=True, legacy_shape=True)
    run_both(CONV_NET, tmp_path / "conv.caffemodel")


def test_a_training_snapshot_runs_a_deploy_model_and_says_what_it_left(tmp_path, capsys):
    net = loads(BN_NET, path="m.prototxt")
    w = net.compile(seed=1).weights
    extra = [("loss1/fc", "InnerProduct", [np.ones((3, 4), np.float32)]), ("data", "Data", [])]
    model = tmp_path / "snap.caffemodel"
    model.write_bytes(caffe_proto.caffemodel(caffe_layers(net, w) + extra))
    proto = tmp_path / "deploy.prototxt"
    proto.write_text(BN_NET)
    assert main(["run", str(proto), "--weights", str(model)]) == 0
    err = capsys.readouterr().err
    assert "1 layer(s) with weights that this model does not use: loss1/fc" in err


@pytest.mark.parametrize("change, message", [
    (lambda ls: [l for l in ls if l[0] != "fc"], 'has no layer "fc" \\(InnerProduct, 2 blob'),
    (lambda ls: [(n, t, [b.reshape(-1)[:b.size - 1] if n == "fc" and i == 0 else b for i, b in enumerate(bs)])
                 for n, t, bs in ls], r'layer "fc" blob weight: .* holds \[\d+\]; the model makes \[5, \d+\]'),
    (lambda ls: [(n, t, bs[:1] if n == "conv" else bs) for n, t, bs in ls], r'layer "conv" \(Convolution\) has 1 blob'),
])
def test_mapping_is_strict(change, message, tmp_path, capsys):
    net = loads(BN_NET, path="m.prototxt")
    w = net.compile(seed=1).weights
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(caffe_proto.caffemodel(change(caffe_layers(net, w))))
    with pytest.raises(NetcError, match=message):
        net.compile(weights=str(path))


def test_truncated_and_hostile_files_are_refused_quickly(tmp_path):
    net = loads(BN_NET, path="m.prototxt")
    good = caffe_proto.caffemodel(caffe_layers(net, net.compile(seed=1).weights))
    cases = {
        "truncated": good[: len(good) // 2],
        "huge-length": b"\xa2\x06" + b"\xff\xff\xff\xff\xff\xff\xff\xff\x7f" + b"\x0a\x01x",
        "long-varint": b"\x08" + b"\xff" * 11,
        "group-wire-type": b"\x0b\x0c",
        "field-zero": b"\x00\x01",
        "garbage": bytes(range(256)) * 64,
        "shape-lies": caffe_proto.caffemodel([("fc", "InnerProduct", [np.ones((2, 2), np.float32)])])
        .replace(b"\x3a\x04\x0a\x02\x02\x02", b"\x3a\x04\x0a\x02\x7f\x7f"),
    }
    for name, data in cases.items():
        path = tmp_path / f"{name}.caffemodel"
        path.write_bytes(data)
        t0 = time.perf_counter()
        with pytest.raises(NetcError) as e:
            net.compile(weights=str(path))
        assert time.perf_counter() - t0 < 10, name
        assert "Traceback" not in str(e.value) and str(path) in str(e.value) or "no layer" in str(e.value), (name, e.value)


def test_the_reader_keeps_one_copy(tmp_path):
    """A 64 MB file is read into its arrays once: the structure pass seeks past the numbers."""
    import resource
    big = [("fc", "InnerProduct", [np.arange(4096 * 4096, dtype=np.float32).reshape(4096, 4096)])]
    path = tmp_path / "big.caffemodel"
    path.write_bytes(caffe_proto.caffemodel(big))
    _, layers = caffemodel.read_layers(path)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    arr = caffemodel.load_blob(path, layers[0].blobs[0])
    grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    assert arr.shape == (4096, 4096) and arr[4095, 4095] == 4096 * 4096 - 1
    assert grew < 1.5 * 64 * 2 ** 20


def test_weights_convert_both_ways(tmp_path, capsys):
    proto = tmp_path / "m.prototxt"
    proto.write_text(BN_NET)
    net = load(proto)
    w = net.compile(seed=2).weights
    src = tmp_path / "m.caffemodel"
    src.write_bytes(caffe_proto.caffemodel(caffe_layers(net, w)))
    assert main(["weights", "convert", str(src), "-o", str(tmp_path / "w.npz"), "--model", str(proto)]) == 0
    npz = dict(np.load(tmp_path / "w.npz"))
    assert set(npz) == set(w) and all(np.array_equal(npz[k], w[k]) for k in w)
    assert main(["weights", "convert", str(tmp_path / "w.npz"), "-o", str(tmp_path / "back.caffemodel"),
                 "--model", str(proto)]) == 0
    back = caffe_proto.parse((tmp_path / "back.caffemodel").read_bytes())     # protobuf reads netc's file
    # mean, var and the factor Caffe's BatchNorm requires as its third blob (1: the statistics as they are)
    assert back["bn"][0] == "BatchNorm" and len(back["bn"][1]) == 3 and back["bn"][1][2].tolist() == [1.0]
    assert np.array_equal(back["fc"][1][0], w["fc.weight"]) and np.array_equal(back["conv"][1][1], w["conv.bias"])
    assert main(["weights", "convert", str(src), "-o", str(tmp_path / "loose.npz")]) == 0
    assert set(np.load(tmp_path / "loose.npz")) == set(w)
    capsys.readouterr()
    assert main(["weights", "convert", str(tmp_path / "w.npz"), "-o", str(tmp_path / "x.caffemodel")]) == 2
    assert "needs --model" in capsys.readouterr().err
    assert main(["weights", "convert", str(src), "-o", str(src)]) == 2


def _weights_count(path) -> int:
    from netc.runtime import weights as wmod
    net = load(path)
    net.analyze()
    return sum(math.prod(s) for s in wmod.expected(net.graph).values())


# protobuf's Python encoder takes minutes for VGG's 138M floats: the files under 30M parameters
# (13 of the 24 without Python layers) carry every layer type the others have
SMALL_REFS = [p for p in REF_FILES if p.stem not in PYTHON_LAYER_FILES and _weights_count(p) <= 30_000_000]


@pytest.mark.parametrize("ref", SMALL_REFS, ids=lambda p: p.stem)
def test_every_reference_file_takes_its_weights_from_a_caffemodel(ref, tmp_path):
    """protobuf writes the network's (seeded) weights in Caffe's blob order and shapes; netc's
    reader maps every one back to its key, bit for bit."""
    from netc.runtime import weights as wmod
    net = load(ref)
    net.analyze()
    w = wmod.random(net.graph, 0)
    path = tmp_path / "w.caffemodel"
    path.write_bytes(caffe_proto.caffemodel(caffe_layers(net, w)))
    got = wmod.load(net.graph, str(path))
    assert set(got) == set(w) and all(np.array_equal(got[k], w[k]) for k in w)
