"""ONNX export checked by ONNX Runtime: every zoo model and every reference file netc can run,
against the float64 torch reference (tests/reference.py) on the same weights, the final
Softmax's input (the logits) included; a subset against `netc run` itself; a symbolic batch;
several opsets; Caffe's pooling windows and divisors; clear errors for what ONNX cannot say."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import netc
from netc.cli import main
from netc.compiler.errors import NetcError
from netc.compiler.network import loads, zoo_names
from netc.runtime import weights as wmod

from conftest import REF_FILES, PYTHON_LAYER_FILES
from nets import CONV_NET, POINT_NET, POOL_NET, RESIDUAL_NET, inp, layer
from reference import rel, torch_forward

FORK_LAYERS = inp(2, 3, 7, 9) + "".join([     # the fork layers ONNX can say (no mask top)
    layer("c", "Convolution", "data", "c", "convolution_param { num_output: 4 kernel_size: 3 pad: 1 }"),
    layer("zoom", "Interp", "c", "zoom", "interp_param { zoom_factor: 2 }"),
    layer("crop", "Interp", "c", "crop", "interp_param { shrink_factor: 2 pad_beg: -1 pad_end: -1 }"),
    layer("up", "Upsample", "c", "up", "upsample_param { scale_h: 2 scale_w: 3 }"),
    layer("g", "Pooling", "c", "g", "pooling_param { pool: AVE global_pooling: true }"),
    layer("gs", "Sigmoid", "g", "gs"),
    layer("ax", "Axpy", ["gs", "c", "c"], "ax"),
    layer("bn", "BN", "ax", "bn", "bn_param { frozen: true }"),
    layer("e", "Exp", "bn", "e", "exp_param { base: 2 scale: 0.1 }"),
    layer("l", "Log", "e", "l", "log_param { shift: 1 }"),
    layer("t", "Threshold", "l", "t", "threshold_param { threshold: 0.7 }"),
])

NOT_EXPORTABLE = {"SSD300": "PriorBox", "fcn-16s": "Crop", **{n: "Python" for n in PYTHON_LAYER_FILES}}


def logits(net) -> list[str]:
    """The blob the last Softmax reads: random weights saturate a deep net's probabilities."""
    g = net.graph
    soft = [n for n in g.nodes if g.nodes[n]["forward"] and g.nodes[n]["type"] == "Softmax"]
    return [g.nodes[soft[-1]]["bottoms"][0]] if soft else []


def ort_run(path, feeds):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    return dict(zip(names, s.run(None, feeds)))


def check_against_torch(net, tmp_path, batch=1, dynamic=False, opset=17, run_batch=None):
    net.analyze(batch=batch)
    w = wmod.random(net.graph, 0)
    path = tmp_path / "m.onnx"
    extra = logits(net)
    net.export_onnx(path, weights=w, batch=batch, dynamic_batch=dynamic, opset=opset, blobs=extra)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    n = run_batch or batch
    rng = np.random.default_rng(1)
    feeds = {}
    for i in model.graph.input:
        dims = [d.dim_value if d.HasField("dim_value") else n for d in i.type.tensor_type.shape.dim]
        feeds[i.name] = rng.standard_normal(dims).astype(np.float32)
    got = ort_run(path, feeds)
    if run_batch:
        net.analyze(batch=run_batch)
    want = torch_forward(net, w, feeds)
    assert set(extra) <= set(got)
    for name, y in got.items():
        assert rel(y, want[name]) < 1e-4, (name, rel(y, want[name]))
    return got, w, feeds


@pytest.mark.parametrize("model", zoo_names())
def test_every_zoo_model_exports_and_runs_in_onnx_runtime(model, tmp_path):
    check_against_torch(netc.load(model), tmp_path)


@pytest.mark.parametrize("ref", [p for p in REF_FILES if p.stem not in NOT_EXPORTABLE], ids=lambda p: p.stem)
def test_every_runnable_reference_file_exports(ref, tmp_path):
    check_against_torch(netc.load(ref), tmp_path)


@pytest.mark.parametrize("ref", [p for p in REF_FILES if p.stem in NOT_EXPORTABLE], ids=lambda p: p.stem)
def test_what_onnx_cannot_say_is_a_located_error(ref, tmp_path):
    with pytest.raises(NetcError, match=NOT_EXPORTABLE[ref.stem]):
        netc.load(ref).export_onnx(tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("text", [CONV_NET, POOL_NET, POINT_NET, RESIDUAL_NET, FORK_LAYERS],
                         ids=["conv", "pool", "point", "residual", "forks"])
def test_layer_family_nets_at_batch_2(text, tmp_path):
    check_against_torch(loads(text, path="t.prototxt"), tmp_path, batch=2)


def test_a_mask_top_is_refused_by_name(tmp_path):
    text = inp(1, 2, 4, 4) + layer("p", "Pooling", "data", ["p", "m"], "pooling_param { pool: MAX kernel_size: 2 stride: 2 }")
    with pytest.raises(NetcError, match="mask top has no ONNX equivalent"):
        loads(text, path="m.prototxt").export_onnx(tmp_path / "m.onnx")


def test_caffe_pooling_windows_and_divisors(tmp_path):
    """Ceil-mode overhang, the clip rule, asymmetric pads and AVE's divisor counting padding up to
    H + pad only: the end pad and the explicit Pad reproduce pooling_layer.cpp."""
    text = inp(2, 3, 7, 6) + "".join(
        layer(f"p{k}", "Pooling", "data", f"p{k}", f"pooling_param {{ pool: {pool} {geo} }}")
        for k, (pool, geo) in enumerate([("AVE", "kernel_size: 3 stride: 2 pad: 1"), ("MAX", "kernel_size: 3 stride: 2 pad: 1"),
                                         ("AVE", "kernel_size: 2 stride: 3 pad_h: 1 pad_w: 0"),
                                         ("AVE", "kernel_size: 3 stride: 2"), ("MAX", "kernel_size: 2 stride: 2 round_mode: FLOOR"),
                                         ("AVE", "kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 1")]))
    check_against_torch(loads(text, path="p.prototxt"), tmp_path, batch=2)


@pytest.mark.parametrize("model", ["resnet18", "googlenet", "squeezenet1_1", "mobilenet_v2"])
def test_dynamic_batch_runs_batch_4_and_matches_netc(model, tmp_path):
    net = netc.load(model)
    got, w, feeds = check_against_torch(net, tmp_path, dynamic=True, run_batch=4)
    ex = net.compile(batch=4, weights=w)
    mine = ex.run(feeds, blobs=logits(net))
    for name, y in got.items():
        assert rel(mine[name], y) < 1e-4, name


@pytest.mark.parametrize("opset", [13, 21])
def test_opsets(opset, tmp_path):
    check_against_torch(loads(POINT_NET, path="p.prototxt"), tmp_path, batch=2, opset=opset)


def test_cli_export(tmp_path, capsys):
    out = tmp_path / "r.onnx"
    w = tmp_path / "w.npz"
    net = netc.load("lenet")
    net.analyze()
    np.savez(w, **wmod.random(net.graph, 7))
    assert main(["export", "lenet", "--weights", str(w), "-o", str(out), "--dynamic-batch"]) == 0
    model = onnx.load(str(out))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert [o.name for o in model.graph.output] == ["prob"]
    assert main(["export", "lenet", "-o", str(out), "--opset", "9"]) == 2
    assert "netc writes opsets 13 to 21" in capsys.readouterr().err
    assert main(["export", "lenet", "-o", str(w), "--weights", str(w)]) == 2        # never over an input


def test_convert_writes_relu6_as_clip_with_both_bounds():
    text = netc.load("mobilenet_v2").to_prototxt()
    clip = text[text.index('type: "Clip"'):]
    clip = clip[:clip.index("}\n}")]
    assert "min: 0.0" in clip and "max: 6.0" in clip
