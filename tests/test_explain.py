"""`netc explain`'s forward-pass methods: occlusion against Captum's Occlusion on the torch
reference of the same network and weights, feature maps against `run --blobs`, filters against
the weights, and the pictures and errors of the command."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from netc.cli import main
from netc.compiler.network import loads
from netc.runtime import explain

from reference import torch_forward

NET = """name: "small"
input: "data"
input_shape { dim: 1 dim: 3 dim: 12 dim: 12 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 6 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  convolution_param { num_output: 8 kernel_size: 3 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "fc" type: "InnerProduct" bottom: "conv2" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


@pytest.fixture
def small(tmp_path):
    path = tmp_path / "small.prototxt"
    path.write_text(NET, encoding="utf-8")
    return path


def test_the_score_is_the_softmax_input():
    net = loads(NET, path="s.prototxt")
    assert explain.score_blob(net) == "fc"


@pytest.mark.parametrize("window,stride,baseline", [(3, 3, 0.0), (4, 2, 0.5), (5, 1, -1.0)])
def test_occlusion_equals_captum(window, stride, baseline):
    """Captum spreads each window's score drop over the pixels it covers (averaged where windows
    overlap); netc's map is per window position, so it is spread the same way to compare."""
    from captum.attr import Occlusion
    net = loads(NET, path="s.prototxt")
    ex = net.compile(batch=4, blobs=["fc"])
    x = np.random.default_rng(1).standard_normal((3, 12, 12)).astype(np.float32)
    target = 2
    got = explain.occlusion(ex, "fc", x, target, window, stride, baseline)
    rows, cols = (12 - window) // stride + 1, (12 - window) // stride + 1
    assert got.shape == (rows, cols)

    ref = loads(NET, path="s.prototxt")
    ref.analyze(batch=1)

    def forward(t):
        return torch.cat([torch_forward(ref, ex.weights, {"data": t[k:k + 1].numpy()})["fc"] for k in range(len(t))])
    want = Occlusion(forward).attribute(torch.from_numpy(x[None].astype(np.float64)), sliding_window_shapes=(3, window, window),
                                        strides=(3, stride, stride), baselines=baseline, target=target)[0].numpy()
    spread, count = np.zeros((12, 12)), np.zeros((12, 12))
    for i in range(rows):
        for j in range(cols):
            spread[i * stride:i * stride + window, j * stride:j * stride + window] += got[i, j]
            count[i * stride:i * stride + window, j * stride:j * stride + window] += 1
    covered = count > 0
    np.testing.assert_allclose(spread[covered] / count[covered], want[0][covered], rtol=1e-4, atol=1e-5)
    assert np.all(want[:, ~covered] == 0)


def test_features_and_filters_are_the_blobs_and_weights(small, tmp_path, capsys):
    img = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(img)
    out, raw = tmp_path / "f.png", tmp_path / "f.npy"
    assert main(["explain", str(small), "--method", "features", "--layer", "conv1", "--input", str(img),
                 "-o", str(out), "--save-map", str(raw)]) == 0
    maps = np.load(raw)
    assert maps.shape == (6, 12, 12) and maps.min() >= 0      # after the in-place ReLU, as --blobs gives it
    blobs = tmp_path / "b.npz"
    assert main(["run", str(small), "--input", str(img), "--blobs", "conv1", "--blobs-out", str(blobs)]) == 0
    np.testing.assert_array_equal(np.load(blobs)["conv1"][0], maps)
    assert Image.open(out).format == "PNG"
    assert main(["explain", str(small), "--method", "filters", "--layer", "conv2", "-o", str(out),
                 "--save-map", str(raw)]) == 0
    net = loads(NET, path=str(small))
    np.testing.assert_array_equal(np.load(raw), net.compile().weights["conv2.weight"])
    capsys.readouterr()


def test_occlusion_of_a_trained_digit_drops_where_the_stroke_is(tmp_path):
    """A net trained here (torch, scikit-learn's 8x8 digits, a few seconds): hiding the stroke
    lowers the class score more than hiding the empty border."""
    from digits import PROTOTXT, trained
    w, x, target, _ = trained()
    net = loads(PROTOTXT, path="digits.prototxt")
    ex = net.compile(weights=w, batch=4)
    img = x[0, 0]                                                # a zero
    assert int(np.argmax(ex.run({"data": np.repeat(x[:1], 4, 0)})["fc"][0])) == target[0] == 0
    drop = explain.occlusion(ex, "fc", img[None], 0, 2, 1, 0.0)
    ink = np.array([[img[i:i + 2, j:j + 2].sum() for j in range(7)] for i in range(7)])
    assert drop[ink > 2].mean() > 5 * max(drop[ink == 0].mean(), 1e-3)
    assert np.corrcoef(drop.ravel(), ink.ravel())[0, 1] > 0.5


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and [l for l in lines if not l.startswith("note:")] == lines[-1:], err
    return lines[-1]


def test_bad_requests_are_clear_errors(small, tmp_path, capsys):
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(img)
    out = str(tmp_path / "o.png")
    base = ["explain", str(small), "-o", out]
    assert 'no layer named "conv3" (did you mean "conv2"?)' in one_line_error(
        capsys, base + ["--method", "features", "--layer", "conv3", "--input", str(img)])
    assert '"fc" is a InnerProduct layer; filters are a convolution\'s' in one_line_error(
        capsys, base + ["--method", "filters", "--layer", "fc"])
    assert "class 7 is out of range: the network scores 5 classes (0 to 4)" in one_line_error(
        capsys, base + ["--method", "occlusion", "--input", str(img), "--target", "7"])
    assert "the occlusion window 13 is larger than the 12x12 input" in one_line_error(
        capsys, base + ["--method", "occlusion", "--input", str(img), "--window", "13"])
    assert "needs an input: --input IMAGE" in one_line_error(capsys, base + ["--method", "occlusion"])
    assert "netc never overwrites its inputs" in one_line_error(capsys, ["explain", str(small), "-o", str(small), "--method", "filters"])
    assert "netc never overwrites its inputs" in one_line_error(
        capsys, ["explain", str(small), "-o", str(img), "--method", "occlusion", "--input", str(img)])


class SmallTorch(torch.nn.Module):
    """NET in torch with netc's weights, ReLUs as modules (Captum's guided backprop and
    deconvnet hook them)."""

    def __init__(self, w):
        super().__init__()
        t = {k: torch.from_numpy(np.asarray(v, np.float64)) for k, v in w.items()}
        self.conv1, self.relu1 = torch.nn.Conv2d(3, 6, 3, padding=1).double(), torch.nn.ReLU()
        self.pool1 = torch.nn.MaxPool2d(2, 2)
        self.conv2, self.relu2 = torch.nn.Conv2d(6, 8, 3).double(), torch.nn.ReLU()
        self.fc = torch.nn.Linear(8 * 4 * 4, 5).double()
        for name in ("conv1", "conv2", "fc"):
            getattr(self, name).weight.data, getattr(self, name).bias.data = t[f"{name}.weight"], t[f"{name}.bias"]

    def forward(self, x):
        h = self.pool1(self.relu1(self.conv1(x)))
        return self.fc(self.relu2(self.conv2(h)).flatten(1))


@pytest.fixture(scope="module")
def small_case():
    net = loads(NET, path="s.prototxt")
    ex = net.compile(keep_every=True)
    x = np.random.default_rng(3).standard_normal((3, 12, 12)).astype(np.float32)
    return ex, x, SmallTorch(ex.weights)


@pytest.mark.parametrize("method,captum_name", [("saliency", "Saliency"), ("guided-backprop", "GuidedBackprop"),
                                                ("deconvnet", "Deconvolution")])
def test_gradient_maps_equal_captum(small_case, method, captum_name):
    import captum.attr
    ex, x, model = small_case
    for target in (0, 3):
        got, info = ex.explain(method, x, target=target)
        assert info["target"] == target and got.shape == (3, 12, 12)
        kwargs = {"abs": False} if method == "saliency" else {}
        want = getattr(captum.attr, captum_name)(model).attribute(
            torch.from_numpy(x[None].astype(np.float64)), target=target, **kwargs)[0].detach().numpy()
        assert np.abs(want).max() > 0
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())


def test_gradcam_equals_captum_at_the_layer_blob(small_case):
    """Grad-CAM at conv2 reads conv2's blob after its in-place ReLU: Captum's LayerGradCam at relu2."""
    from captum.attr import GuidedGradCam, LayerGradCam
    ex, x, model = small_case
    xt = torch.from_numpy(x[None].astype(np.float64))
    for target in (1, 4):
        got, info = ex.explain("gradcam", x, target=target)
        assert info["layer"] == "conv2" and got.shape == (4, 4)
        want = LayerGradCam(model, model.relu2).attribute(xt, target=target, relu_attributions=True)[0, 0].detach().numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
        got, _ = ex.explain("guided-gradcam", x, target=target)
        want = GuidedGradCam(model, model.relu2).attribute(xt, target=target)[0].detach().numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7 + 1e-6 * np.abs(want).max())


CAPTUM_ONE_CONV = """# Captum's BasicModel_ConvNet_One_Conv (captum/testing/helpers/basic_models.py)
network one_conv
input x: [1, 1, 4, 4]
conv1: Convolution(num_output=2, kernel_size=3) ReLU
fc1: InnerProduct(num_output=4) ReLU
"""


@pytest.mark.parametrize("method,captum_name", [("saliency", "Saliency"), ("guided-backprop", "GuidedBackprop"),
                                                ("deconvnet", "Deconvolution")])
def test_captums_hand_weighted_network(tmp_path, method, captum_name):
    """Ones for weights, biases -50 and -75, fc of ones and minus ones, on arange(16): the
    numbers Captum's own tests know."""
    import captum.attr
    from captum.testing.helpers.basic_models import BasicModel_ConvNet_One_Conv
    path = tmp_path / "one_conv.net"
    path.write_text(CAPTUM_ONE_CONV, encoding="utf-8")
    from netc.compiler.network import load
    model = BasicModel_ConvNet_One_Conv()
    w = {"conv1.weight": np.ones((2, 1, 3, 3), np.float32), "conv1.bias": np.array([-50, -75], np.float32),
         "fc1.weight": np.concatenate([np.ones((4, 5)), -np.ones((4, 3))], 1).astype(np.float32),
         "fc1.bias": np.zeros(4, np.float32)}
    ex = load(path).compile(weights=w, keep_every=True)
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    kwargs = {"abs": False} if method == "saliency" else {}
    for target in range(4):
        got, _ = ex.explain(method, x, target=target)
        want = getattr(captum.attr, captum_name)(model).attribute(
            torch.arange(16.0).view(1, 1, 4, 4), target=target, **kwargs)[0].detach().numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    if method == "saliency":     # by hand: relu1 passes the conv windows of sums > 50 / > 75; fc row of ones/minus ones
        assert got.sum() != 0


def test_sanity_checks_of_adebayo(small_case):
    """Cascading randomization from the top (Adebayo et al. 2018): with the classifier's weights
    re-randomized, saliency and Grad-CAM change (rank correlation with the original map < 0.5),
    guided backprop keeps more of its picture than saliency does."""
    ex, x, _ = small_case

    def spearman(a, b):
        ra, rb = np.argsort(np.argsort(a.ravel())), np.argsort(np.argsort(b.ravel()))
        return float(np.corrcoef(ra, rb)[0, 1])
    for seed in (7, 8, 9):
        w = dict(ex.weights)
        w["fc.weight"] = np.random.default_rng(seed).standard_normal(w["fc.weight"].shape).astype(np.float32) * 0.1
        other = ex.network.compile(weights=w, keep_every=True)
        same = {m: spearman(np.abs(ex.explain(m, x, target=0)[0]), np.abs(other.explain(m, x, target=0)[0]))
                for m in ("saliency", "guided-backprop", "gradcam")}
        assert same["saliency"] < 0.5 and same["gradcam"] < 0.5
        assert same["guided-backprop"] > same["saliency"]
