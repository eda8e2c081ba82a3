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
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = torch.tensor(digits.images[:, None] / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target)
    torch.manual_seed(0)
    conv, fc = torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.Linear(8 * 4 * 4, 10)
    opt = torch.optim.Adam([*conv.parameters(), *fc.parameters()], lr=0.01)
    for _ in range(60):
        opt.zero_grad()
        h = torch.nn.functional.max_pool2d(torch.relu(conv(x)), 2)
        loss = torch.nn.functional.cross_entropy(fc(h.flatten(1)), y)
        loss.backward()
        opt.step()
    text = """input: "data"
input_shape { dim: 1 dim: 1 dim: 8 dim: 8 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 10 } }
"""
    net = loads(text, path="digits.prototxt")
    w = {"conv.weight": conv.weight.detach().numpy(), "conv.bias": conv.bias.detach().numpy(),
         "fc.weight": fc.weight.detach().numpy(), "fc.bias": fc.bias.detach().numpy()}
    ex = net.compile(weights=w, batch=4)
    img = x[0, 0].numpy()                                        # a zero
    assert int(np.argmax(ex.run({"data": np.repeat(x[:1].numpy(), 4, 0)})["fc"][0])) == digits.target[0] == 0
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
