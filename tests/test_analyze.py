"""Analysis figures against published and hand-derived numbers (never netc's own output)."""
import json
import math

import pytest

import netc
from netc.compiler.layers.pool import pooled_size
from netc.compiler.network import loads

from conftest import REFS

# CS231n "Convolutional Networks" notes, VGGNet case study: (layer, activations, weights).
CS231N_VGG16 = [
    ("data", 224 * 224 * 3, 0),
    ("conv1_1", 224 * 224 * 64, 3 * 3 * 3 * 64), ("conv1_2", 224 * 224 * 64, 3 * 3 * 64 * 64),
    ("pool1", 112 * 112 * 64, 0),
    ("conv2_1", 112 * 112 * 128, 3 * 3 * 64 * 128), ("conv2_2", 112 * 112 * 128, 3 * 3 * 128 * 128),
    ("pool2", 56 * 56 * 128, 0),
    ("conv3_1", 56 * 56 * 256, 3 * 3 * 128 * 256), ("conv3_2", 56 * 56 * 256, 3 * 3 * 256 * 256),
    ("conv3_3", 56 * 56 * 256, 3 * 3 * 256 * 256), ("pool3", 28 * 28 * 256, 0),
    ("conv4_1", 28 * 28 * 512, 3 * 3 * 256 * 512), ("conv4_2", 28 * 28 * 512, 3 * 3 * 512 * 512),
    ("conv4_3", 28 * 28 * 512, 3 * 3 * 512 * 512), ("pool4", 14 * 14 * 512, 0),
    ("conv5_1", 14 * 14 * 512, 3 * 3 * 512 * 512), ("conv5_2", 14 * 14 * 512, 3 * 3 * 512 * 512),
    ("conv5_3", 14 * 14 * 512, 3 * 3 * 512 * 512), ("pool5", 7 * 7 * 512, 0),
    ("fc6", 4096, 7 * 7 * 512 * 4096), ("fc7", 4096, 4096 * 4096), ("fc8", 1000, 4096 * 1000),
]


@pytest.fixture(scope="module")
def vgg16():
    return netc.load(REFS / "vgg-16.prototxt").analyze()


def test_vgg16_published_totals(vgg16):
    assert vgg16.totals["params"] == 138_357_544
    assert vgg16.totals["macc"] == 15_470_264_320


def test_vgg16_cs231n_memory_table(vgg16):
    rows = {r.name: r for r in vgg16.layers}
    for name, acts, weights in CS231N_VGG16:
        r = rows[name]
        assert r.output_bytes // 4 == acts if name != "data" else r.output_shapes[0] == [1, 3, 224, 224]
        assert r.activation_bytes == acts * 4, name          # a new buffer for each of these layers
        w = r.params - (r.output_shapes[0][1] if weights else 0)  # the table counts weights without bias
        assert w == weights, name
    for r in vgg16.layers:
        if r.type in ("ReLU", "Dropout"):
            assert r.activation_bytes == 0 and r.inplace
    # The table's rows sum to 15.2M values (its "24M" total is an arithmetic slip); ours add the
    # 1000 softmax probabilities the table omits.
    assert vgg16.totals["activation_bytes"] == 4 * (sum(a for _, a, _ in CS231N_VGG16) + 1000)


def test_alexnet_caffe():
    a = netc.load(REFS / "alexnet.prototxt").analyze()
    conv1 = next(r for r in a.layers if r.name == "conv1")
    assert conv1.output_shapes == [[1, 96, 55, 55]] and conv1.params == 34_944
    assert a.totals["params"] == 60_965_224
    assert a.totals["macc"] == 724_406_816
    # loss/accuracy layers stay in the graph but not in the forward totals
    assert {r.type for r in a.layers if not r.forward} == {"Accuracy", "SoftmaxWithLoss"}


def test_receptive_fields_match_published():
    """Araujo et al., "Computing Receptive Fields of CNNs" (Distill 2019): AlexNet 195, VGG16 212."""
    alex = {r.name: r for r in netc.load(REFS / "alexnet.prototxt").analyze().layers}
    vgg = {r.name: r for r in netc.load(REFS / "vgg-16.prototxt").analyze().layers}
    assert alex["pool5"].receptive_field == [195, 195] and alex["pool5"].jump == [32, 32]
    assert vgg["pool5"].receptive_field == [212, 212] and vgg["pool5"].jump == [32, 32]
    assert vgg["conv1_2"].receptive_field == [5, 5]


@pytest.mark.parametrize("size,k,s,p,ceil,expected", [
    (112, 3, 2, 0, True, 56),     # GoogLeNet pool1: ceil((112-3)/2)+1
    (112, 3, 2, 0, False, 55),
    (5, 2, 2, 1, True, 3),        # ceil gives 4, but window 4 would start in the padding: clipped
    (6, 3, 2, 1, True, 4),        # clip does not fire: (4-1)*2 = 6 < 6+1
    (7, 7, 1, 0, True, 1),
])
def test_caffe_pooling_rounding(size, k, s, p, ceil, expected):
    assert pooled_size(size, k, s, p, ceil) == expected


def caffe_conv_out(size, k, s, p, d):
    return (size + 2 * p - (d * (k - 1) + 1)) // s + 1


def caffe_pool_out(size, k, s, p, ceil_mode):
    n = (math.ceil if ceil_mode else math.floor)((size + 2 * p - k) / s) + 1
    if p and (n - 1) * s >= size + p:
        n -= 1
    return n


def test_every_reference_file_follows_caffe_shape_rules(refs):
    """Each conv/pool output recomputed with Caffe's float formulas, written out again here."""
    checked = 0
    for path in sorted(refs.glob("*.prototxt")):
        net = netc.load(path)
        if any(d["type"] == "Python" and not d["declared"] for _, d in net.graph.nodes(data=True)):
            continue
        net.analyze()
        for n, d in net.graph.nodes(data=True):
            a, ins = d["attrs"], d["in_shapes"]
            if d["type"] in ("Convolution", "ConvolutionDepthwise"):
                want = [caffe_conv_out(ins[0][2 + i], a["kernel"][i], a["stride"][i], a["pad"][i], a["dilation"][i])
                        for i in (0, 1)]
            elif d["type"] == "Pooling":
                if a["global_pooling"]:
                    want = [1, 1]
                else:
                    want = [caffe_pool_out(ins[0][2 + i], a["kernel"][i], a["stride"][i], a["pad"][i],
                                           a["round_mode"] == "CEIL") for i in (0, 1)]
            else:
                continue
            assert list(d["shapes"][0][2:]) == want, (path.name, n)
            checked += 1
    assert checked > 1000


def test_peak_memory_by_hand():
    """data(4x4x4) -> conv(8ch) -> relu (in place) -> pool -> fc: peak is conv in + out."""
    net = loads("""
    network tiny
    input data: [1, 4, 4, 4]
    Convolution(num_output=8, kernel_size=3, pad=1) ReLU
    Pooling(pool=MAX, kernel_size=2, stride=2)
    InnerProduct(num_output=10)
    """, path="tiny.net")
    a = net.analyze()
    data, conv, pool, fc = 4 * 16 * 4, 8 * 16 * 4, 8 * 4 * 4, 10 * 4
    assert a.totals["activation_bytes"] == data + conv + pool + fc
    assert a.totals["peak_activation_bytes"] == data + conv  # then conv+pool = 640 < 768
    assert a.totals["peak_activation_bytes"] == max(data + conv, conv + pool, pool + fc)


def test_branch_keeps_buffer_alive():
    """A residual input stays live across the branch; the add's ReLU runs in place."""
    net = loads("""
    input data: [1, 2, 8, 8]
    a: Convolution(num_output=2, kernel_size=1)
    Convolution(num_output=2, kernel_size=1)
    ReLU
    Eltwise <- a, relu1
    ReLU
    """, path="res.net")
    an = net.analyze()
    t = 2 * 64 * 4
    rows = {r.name: r for r in an.layers}
    assert rows["relu1"].inplace and rows["relu2"].inplace and not rows["add1"].inplace
    assert an.totals["peak_activation_bytes"] == 3 * t  # a, conv2 and the sum (data died after a)


def test_batch_and_dtype_scale():
    net = netc.load(REFS / "alexnet.prototxt")
    one = net.analyze(batch=1)
    t1 = dict(one.totals)
    four = net.analyze(batch=4, dtype="float16")
    assert four.totals["macc"] == 4 * t1["macc"]
    assert four.totals["params"] == t1["params"]
    assert four.totals["param_bytes"] == 2 * t1["params"]


def test_json_schema_required_keys(vgg16):
    d = json.loads(json.dumps(vgg16.to_dict()))
    assert {"network", "batch", "dtype", "layers", "totals"} <= d.keys()
    need = {"name", "type", "inputs", "outputs", "output_shapes", "params", "buffers", "macc", "flops",
            "activation_bytes", "param_bytes", "receptive_field", "jump"}
    for row in d["layers"]:
        assert need <= row.keys()
    assert {"params", "buffers", "macc", "flops", "activation_bytes", "param_bytes",
            "peak_activation_bytes"} <= d["totals"].keys()


def test_batchnorm_statistics_are_buffers(refs):
    a = netc.load(refs / "resnet-50.prototxt").analyze()
    bn = [r for r in a.layers if r.type == "BatchNorm"]
    assert bn and all(r.params == 0 and r.buffers == 2 * r.output_shapes[0][1] + 1 for r in bn)


def test_flops_formula_for_conv():
    net = loads("input x: [1, 3, 8, 8]\nConvolution(num_output=4, kernel_size=3)\n", path="f.net")
    r = net.analyze().layers[1]
    macc = 4 * 6 * 6 * 3 * 3 * 3
    assert r.macc == macc and r.flops == 2 * macc + 4 * 6 * 6  # + one bias add per output


def test_training_memory_adds_up(vgg16):
    tm = vgg16.training_memory("adam")
    p = vgg16.totals["param_bytes"]
    assert tm["gradients"] == p and tm["optimizer_state"] == 2 * p
    assert tm["total"] == sum(v for k, v in tm.items() if k not in ("total", "optimizer"))


def test_text_formats_agree_with_totals(refs):
    import csv
    import io
    from netc.compiler import report
    a = netc.load(refs / "googlenet.prototxt").analyze()
    rows = list(csv.DictReader(io.StringIO(report.render(a, "csv"))))
    assert len(rows) == len(a.layers)
    assert sum(int(r["params"]) for r in rows) == a.totals["params"]
    md = report.render(a, "markdown", depth=0)
    groups = [l for l in md.splitlines() if l.startswith("| inception_")]
    assert len(groups) == 9  # 3a, 3b, 4a-4e, 5a, 5b: one row per module
    table = report.render(a, "table")
    assert f"{a.totals['macc']:,}" in table and all(len(l) <= 100 for l in table.splitlines())


def _shape_of(text, layer, **kw):
    net = loads(text, path="t.prototxt")
    if kw:
        net.set_input_shapes(kw)
    net.analyze()
    return net.graph.nodes[layer]["shapes"][0]


INPUT_1x1 = 'input: "data"\ninput_dim: 1 input_dim: 3 input_dim: {h} input_dim: {w}\n'


def test_pooling_clip_rule_runs_on_both_axes_when_either_is_padded():
    """pooling_layer.cpp: `if (pad_h_ || pad_w_)` then both axes test their own last window.
    Width 6, kernel 2, stride 3, pad_w 0: ceil gives 3 and (3-1)*3 = 6 >= 6 + 0 clips it to 2,
    but only because pad_h is 1; with no padding at all the width stays 3."""
    pool = 'layer {{ name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param {{ pool: MAX ' \
           'kernel_size: 2 stride: 3 {pads} }} }}\n'
    padded = INPUT_1x1.format(h=6, w=6) + pool.format(pads="pad_h: 1 pad_w: 0")
    assert _shape_of(padded, "p") == (1, 3, 3, 2)
    assert _shape_of(INPUT_1x1.format(h=6, w=6) + pool.format(pads=""), "p") == (1, 3, 3, 3)


def test_placeholder_inputs_build_as_in_caffe_and_take_their_real_size(tmp_path, capsys):
    """OpenPose ships input_dim 1x3x1x1 (sized at run time): Caffe builds it (a 2x2/2 pool of a
    1x1 map is 1x1; a conv's output size truncates toward zero), netc warns and points at
    --input-shape, which analyzes the real size."""
    from netc.cli import main
    text = INPUT_1x1.format(h=1, w=1) + "".join([
        'layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }\n',
        'layer { name: "p" type: "Pooling" bottom: "c" top: "p" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n',
        'layer { name: "d" type: "Convolution" bottom: "p" top: "d" convolution_param { num_output: 4 kernel_size: 2 stride: 2 } }\n'])
    assert _shape_of(text, "p") == (1, 4, 1, 1) and _shape_of(text, "d") == (1, 4, 1, 1)
    assert _shape_of(text, "d", data=(1, 3, 368, 368)) == (1, 4, 92, 92)
    p = tmp_path / "pose.prototxt"
    p.write_text(text)
    assert main(["analyze", str(p), "--format", "json"]) == 0
    out = capsys.readouterr()
    assert f"{p}:4:1: warning: Pooling kernel 2x2 is larger than its input [1, 4, 1, 1] (Caffe builds it too" in out.err
    assert "--input-shape NAME=NxCxHxW" in out.err
    assert main(["analyze", str(p), "--input-shape", "data=2x3x368x368", "--format", "json"]) == 0
    out = capsys.readouterr()
    assert "warning" not in out.err
    rows = json.loads(out.out)
    assert rows["batch"] == 2 and [r["output_shapes"] for r in rows["layers"] if r["name"] == "d"] == [[[2, 4, 92, 92]]]
    assert main(["analyze", str(p), "--input-shape", "dta=1x3x9x9"]) == 2
    assert 'did you mean "data"?' in capsys.readouterr().err
    assert main(["analyze", str(p), "--input-shape", "data=3x9x9"]) == 2
    assert "--input-shape gives 3" in capsys.readouterr().err
    assert main(["run", str(p)]) == 2
    assert "netc cannot execute it" in capsys.readouterr().err


def test_a_bare_legacy_input_beside_an_input_layer_is_dropped():
    """cvjena's AlexNet: `input: "data"` with no dims, then an Input layer making "data"."""
    text = ('input: "data"\nlayer { name: "in" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 '
            'dim: 8 dim: 8 } } }\nlayer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n')
    assert _shape_of(text, "r") == (1, 3, 8, 8)
