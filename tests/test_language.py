"""Both front doors: Caffe prototxt quirks and the native .net language, and conversion."""
import subprocess
import sys

import pytest

import netc
from netc.compiler.build import ir_signature
from netc.compiler.errors import NetcError
from netc.compiler.netlang import format_source
from netc.compiler.network import loads

from conftest import PYTHON_LAYER_FILES, REF_FILES


def shapes(net):
    net.analyze()
    return {n: [list(s) for s in d["shapes"]] for n, d in net.graph.nodes(data=True)}


def test_v1_layers_and_input_dim():
    net = loads("""
    name: "v1"
    input: "data"
    input_dim: 2 input_dim: 3 input_dim: 32 input_dim: 32
    layers { name: "c" type: CONVOLUTION bottom: "data" top: "c"
             blobs_lr: 1 convolution_param { num_output: 8 kernel_h: 3 kernel_w: 5 stride_h: 1 stride_w: 2 } }
    layers { name: "r" type: RELU bottom: "c" top: "c" }
    layers { name: "p" type: POOLING bottom: "c" top: "p" pooling_param { pool: AVE kernel_size: 3 stride: 2 } }
    """, path="v1.prototxt")
    s = shapes(net)
    assert s["data"] == [[1, 3, 32, 32]]          # analysis is per --batch (default 1)
    assert s["c"] == [[1, 8, 30, 14]]
    assert s["p"] == [[1, 8, 15, 7]]              # ceil((30-3)/2)+1 = 15, ceil((14-3)/2)+1 = 7
    assert net.graph.nodes["r"]["tops"] == ["c"]  # in place: an ordinary node in order


def test_phases_and_loss_layers():
    text = """
    layer { name: "d" type: "Data" top: "data" top: "label" include { phase: TRAIN }
            data_param { batch_size: 64 } transform_param { crop_size: 28 } }
    layer { name: "d" type: "Data" top: "data" top: "label" include { phase: TEST }
            data_param { batch_size: 10 } transform_param { crop_size: 28 force_gray: true } }
    layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 10 } }
    layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
    layer { name: "acc" type: "Accuracy" bottom: "fc" bottom: "label" top: "acc" include { phase: TEST } }
    """
    test = loads(text, path="p.prototxt")
    train = loads(text, path="p.prototxt", phase="train")
    assert "acc" in test.graph and "acc" not in train.graph
    assert shapes(test)["d"] == [[1, 1, 28, 28], [1]]
    assert shapes(train)["d"] == [[1, 3, 28, 28], [1]]
    a = test.analyze()
    assert a.totals["macc"] == 28 * 28 * 10
    assert [r.name for r in a.layers if not r.forward] == ["loss", "acc"]


def test_native_chaining_blocks_and_scopes():
    net = loads("""
    network demo   # comments anywhere
    input data: [1, 16, 8, 8]
    block unit(n, k=3) {
      Convolution(num_output=n, kernel_size=k, pad=(k - 1) / 2) ReLU
      Eltwise(operation=SUM) <- in, last_relu
    }
    """.replace("last_relu", "relu1"), path="d.net")
    assert [n for n in net.graph] == ["data"]  # a block alone defines nothing
    net = loads("""
    input data: [1, 16, 8, 8]
    block unit(n, k=3) { c: Convolution(num_output=n, kernel_size=k, pad=(k - 1) / 2) r: ReLU
                         Eltwise <- in, r }
    repeat 2 { unit(16) }
    head: unit(16, k=1)
    tail: Concat <- unit1.c, head.r, data
    Slice(slice_point=[24]) -> lo, hi
    Eltwise(operation=MAX) <- lo, hi
    """, path="d.net")
    names = list(net.graph)
    assert names[:4] == ["data", "unit1/c", "unit1/r", "unit1/add1"]
    assert "unit2/add1" in names and "head/c" in names
    g = net.graph
    assert g.nodes["unit2/c"]["bottoms"] == ["unit1/add1"]          # implicit chaining across calls
    assert g.nodes["head/c"]["attrs"]["kernel"] == (1, 1) and g.nodes["head/c"]["attrs"]["pad"] == (0, 0)
    assert g.nodes["unit1/add1"]["bottoms"] == ["data", "unit1/r"]   # `in`
    assert g.nodes["tail"]["bottoms"] == ["unit1/c", "head/r", "data"]
    s = shapes(net)
    assert s["tail"] == [[1, 48, 8, 8]]
    assert s["slice1"] == [[1, 24, 8, 8], [1, 24, 8, 8]] and g.nodes["add1"]["bottoms"] == ["lo", "hi"]
    assert g.nodes["unit1/c"]["block_type"] == "unit" and g.nodes["unit1/c"]["block"] == "unit1"


def test_repeat_index_and_arithmetic():
    net = loads("""
    input x: [1, 4, 32, 32]
    repeat i in 3 { Convolution(num_output=8 * (i + 1), kernel_size=3, stride=1 + i % 2) }
    """, path="r.net")
    s = shapes(net)
    assert s["conv1"] == [[1, 8, 30, 30]] and s["conv2"] == [[1, 16, 14, 14]] and s["conv3"] == [[1, 24, 12, 12]]


@pytest.mark.parametrize("text,needle", [
    ("input x: [1, 3, 8, 8]\nConvolution(num_ouput=3, kernel_size=3)\n", 'did you mean "num_output"'),
    ("input x: [1, 3, 8, 8]\nConvolutoin(num_output=3, kernel_size=3)\n", 'did you mean "Convolution"'),
    ("input x: [1, 3, 8, 8]\nReLU <- y\n", 'unknown name "y"'),
    ("input data: [1, 3, 8, 8]\nReLU <- dat\n", 'did you mean "data"'),
    ("input x: [1, 3, 8, 8]\nPooling(pool=MAXX, kernel_size=2)\n", 'did you mean "MAX"'),
    ("input x: [1, 3, 8, 8]\nConvolution(num_output=3, kernel_size=3, stride=0)\n", "must be positive"),
    ("input x: [1, 3, 8, 8]\nConvolution(num_output=4, kernel_size=3, group=3)\n", "not divisible by group"),
])
def test_native_errors_are_located(text, needle):
    with pytest.raises(NetcError) as e:
        loads(text, path="bad.net").analyze()
    msg = e.value.render()
    assert msg.startswith("bad.net:2:") and needle in msg and "^" in msg


def test_prototxt_bottom_did_you_mean():
    with pytest.raises(NetcError) as e:
        loads('input: "data"\ninput_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8\n'
              'layer { name: "r" type: "ReLU" bottom: "dat" top: "r" }\n', path="b.prototxt")
    assert e.value.loc.line == 3 and 'did you mean "data"' in e.value.render()


def test_python_layer_needs_declared_shape(refs, tmp_path):
    src = (refs / "fasterRCNN_VGG.prototxt").read_text()
    net = netc.load(refs / "fasterRCNN_VGG.prototxt")
    with pytest.raises(NetcError) as e:
        net.analyze()
    assert "Python layer" in e.value.message and e.value.loc.line > 1 and "output_shape" in e.value.hint
    fixed = src.replace("  python_param {", "  # netc: output_shape 300x5\n  python_param {", 1)
    p = tmp_path / "frcnn.prototxt"
    p.write_text(fixed)
    a = netc.load(p).analyze()
    rows = {r.name: r for r in a.layers}
    assert rows["roi_pool5"].output_shapes[0][0] == 300


@pytest.mark.parametrize("path", REF_FILES, ids=lambda p: p.stem)
def test_reference_files_load_and_round_trip(path):
    net = netc.load(path)
    if path.stem not in PYTHON_LAYER_FILES:
        net.analyze()
    want = ir_signature(net.graph)
    assert ir_signature(loads(net.to_net(), path="x.net").graph) == want
    assert ir_signature(loads(net.to_prototxt(), path="x.prototxt").graph) == want


def test_fmt_is_canonical_and_keeps_meaning(tmp_path):
    messy = ("# demo\nnetwork   demo\ninput data:[1,3,16,16]  # image\nblock b(n){Convolution(num_output=n,"
             "kernel_size=3,pad=1)   ReLU}\nb(8) b(2*8)\n")
    out = format_source(messy, "m.net")
    assert out == ("# demo\nnetwork demo\ninput data: [1, 3, 16, 16]  # image\n"
                   "block b(n) { Convolution(num_output=n, kernel_size=3, pad=1) ReLU }\nb(8) b(2 * 8)\n")
    assert format_source(out, "m.net") == out
    assert ir_signature(loads(out, path="m.net").graph) == ir_signature(loads(messy, path="m.net").graph)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "netc", *args], capture_output=True, text=True, timeout=120)


def test_cli_convert_round_trip(refs, tmp_path):
    out = tmp_path / "alexnet.net"
    r = run_cli("convert", str(refs / "alexnet.prototxt"), "-o", str(out))
    assert r.returncode == 0, r.stderr
    back = run_cli("convert", str(out), "--to", "prototxt")
    assert back.returncode == 0
    assert ir_signature(loads(back.stdout, path="a.prototxt").graph) == \
        ir_signature(netc.load(refs / "alexnet.prototxt").graph)


def test_cli_error_exit_status(tmp_path):
    bad = tmp_path / "bad.net"
    bad.write_text("input x: [1, 3, 8, 8]\nReLU <- nothere\n")
    r = run_cli("analyze", str(bad))
    assert r.returncode == 2
    assert r.stderr.startswith(f"{bad}:2:9: error:") and "Traceback" not in r.stderr


def test_automatic_names_avoid_labels_written_later():
    net = loads("network T\ninput data: [1, 3, 8, 8]\nReLU\nrelu1: Sigmoid\n"
                "block b() { ReLU  relu1: TanH }\nx: b\n", path="t.net")
    types = {n: d["type"] for n, d in net.graph.nodes(data=True)}
    assert types == {"data": "Input", "relu2": "ReLU", "relu1": "Sigmoid", "x/relu2": "ReLU", "x/relu1": "TanH"}


def test_a_block_of_one_layer_is_named_by_its_call():
    """No `norm1/norm1`: a one-layer block, or a layer named like its call, takes the call's name."""
    net = loads("network T\ninput data: [1, 3, 8, 8]\n"
                "block norm() { LRN(local_size=3) }\n"
                "block cr() { Convolution(num_output=2, kernel_size=1) ReLU }\n"
                "norm  top: norm  conv1: cr  cr\n", path="t.net")
    assert list(net.graph.nodes) == ["data", "norm1", "top", "conv1", "conv1/relu1", "cr1/conv1", "cr1/relu1"]
    assert netc.load("googlenet").graph.has_node("norm1")


def test_a_zoo_file_name_names_the_zoo_model(tmp_path, monkeypatch):
    """`netc analyze vgg16.net` where no such file exists: the zoo's vgg16.net."""
    monkeypatch.chdir(tmp_path)
    assert netc.load("vgg16.net").graph.graph["path"].endswith("zoo/vgg16.net")
    (tmp_path / "vgg16.net").write_text("network Mine\ninput data: [1, 3, 8, 8]\nReLU\n")
    assert netc.load("vgg16.net").name == "Mine"       # a file of that name comes first
    with pytest.raises(NetcError, match='no such file or zoo model: "vgg17.net"'):
        netc.load("vgg17.net")
