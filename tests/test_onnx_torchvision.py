"""torchvision's CNNs exported by torch.onnx (random weights, BatchNorm kept, batch and image
size symbolic), imported by netc: parameters against the torch model, MACs against
torchvision's published table, every value's shape against ONNX's own shape inference, and
the CPU target's outputs against ONNX Runtime on the same file."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import shape_inference

import netc
import torchvision_models as tv
from reference import rel

MODELS = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0",
          "squeezenet1_1", "shufflenet_v2_x1_0", "densenet121", "googlenet", "mnasnet1_0", "regnet_y_400mf"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    made = {}

    def get(name):
        if name not in made:
            model = tv.build(name)
            path = tv.export(model, tmp_path_factory.mktemp("tv") / f"{name}.onnx")
            made[name] = path, sum(p.numel() for p in model.parameters())
        return made[name]
    return get


def reference_shapes(path, size, names):
    """Shapes of `names` (node outputs) with the input sized size x size: ONNX's shape
    inference, and for the values it leaves open (Slice bounds computed from Shape), the
    arrays ONNX Runtime makes."""
    model = onnx.load(str(path))
    for d, v in zip(model.graph.input[0].type.tensor_type.shape.dim, (1, 3, size, size)):
        d.dim_value = v
    inferred = shape_inference.infer_shapes(model, data_prop=True).graph
    known = {v.name: tuple(d.dim_value for d in v.type.tensor_type.shape.dim) for v in inferred.value_info
             if all(d.HasField("dim_value") for d in v.type.tensor_type.shape.dim)}
    open_ = [n for n in names if n not in known]
    if open_:
        model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in open_)
        s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        known.update(zip(open_, (o.shape for o in s.run(open_, {"image": np.zeros((1, 3, size, size), np.float32)}))))
    return {n: tuple(known[n]) for n in names}


@pytest.mark.parametrize("name", MODELS)
def test_analysis_agrees_with_torch_torchvision_and_onnx(name, exported):
    path, params = exported(name)
    net = netc.load(path, input_shapes={"image": (1, 3, 224, 224)})
    a = net.analyze()
    assert a.totals["params"] == params
    ops = tv.published(name)["_ops"]           # GMACs at 224, to torchvision's three decimals
    assert abs(a.totals["macc"] / 1e9 - ops) <= max(0.01 * ops, 0.0005), (a.totals["macc"], ops)
    g = net.graph
    ours = {t: s for n in g.nodes for t, s in zip(g.nodes[n]["tops"], g.nodes[n].get("shapes", ()))}
    values = {o for n in onnx.load(str(path)).graph.node for o in n.output} & set(ours)
    # every value a node of the file computes and netc keeps, folded shape arithmetic aside
    assert len(values) >= len([n for n in g.nodes if g.nodes[n]["type"] == "Convolution"]) + 1
    assert {v: ours[v] for v in values} == reference_shapes(path, 224, sorted(values))
    assert ours["logits"] == (1, 1000)


@pytest.mark.parametrize("name", MODELS)
def test_cpu_run_equals_onnx_runtime(name, exported):
    """The logits and the features the last node reads (with random weights GoogLeNet's are
    ~1e-11, its logits nearly the bias alone: both are compared, relatively)."""
    path, _ = exported(name)
    model = onnx.load(str(path))
    features = next(n.input[0] for n in model.graph.node if "logits" in n.output)   # what the last node reads
    model.graph.output.append(onnx.ValueInfoProto(name=features))
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = dict(zip(["logits", features], session.run(["logits", features], {"image": x})))
    net = netc.load(path, input_shapes={"image": (1, 3, 64, 64)})
    got = net.compile(batch=2, blobs=[features]).run({"image": x}, blobs=[features])
    assert np.abs(want[features][0] - want[features][1]).max() > 0
    for value in ("logits", features):
        assert rel(got[value], want[value]) < 1e-4, value
