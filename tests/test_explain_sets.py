"""explain's folder methods and class models: receptive-field boxes against the support of torch's
gradient, top patches against activations computed by torch, t-SNE codes against torch and the
map's clusters, class-model's step against autograd and its ascent on a trained net."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from netc.cli import main
from netc.compiler.network import loads
from netc.runtime import explain, image_sets
from netc.runtime.images import Decoder

from digits import PROTOTXT, torch_score, trained
from reference import torch_forward

BOXES = """input: "data"
input_shape { dim: 1 dim: 1 dim: 23 dim: 21 }
layer { name: "c1" type: "Convolution" bottom: "data" top: "c1" convolution_param { num_output: 2 kernel_size: 5 pad: 2 } }
layer { name: "p1" type: "Pooling" bottom: "c1" top: "p1" pooling_param { pool: AVE kernel_size: 3 stride: 2 } }
layer { name: "c2" type: "Convolution" bottom: "p1" top: "c2" convolution_param { num_output: 2 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "c3" type: "Convolution" bottom: "c2" top: "c3" convolution_param { num_output: 1 kernel_size: 3 dilation: 2 } }
"""


def test_field_boxes_are_the_support_of_the_gradient():
    """With positive weights nothing cancels, so the input pixels unit (y, x) depends on (its
    gradient's support, by torch autograd on torch's own layers) fill exactly netc's box."""
    net = loads(BOXES, path="boxes.prototxt")
    rng = np.random.default_rng(0)
    w = {f"{n}.weight": rng.uniform(0.1, 1, s).astype(np.float32) for n, s in
         (("c1", (2, 1, 5, 5)), ("c2", (2, 2, 3, 3)), ("c3", (1, 2, 3, 3)))}
    w.update({f"{n}.bias": np.zeros(c, np.float32) for n, c in (("c1", 2), ("c2", 2), ("c3", 1))})
    ex = net.compile(weights=w, blobs=["c3"])
    x = torch.ones((1, 1, 23, 21), dtype=torch.float64, requires_grad=True)
    t = {k: torch.from_numpy(v.astype(np.float64)) for k, v in w.items()}
    h = torch.nn.functional.conv2d(x, t["c1.weight"], padding=2)
    h = torch.nn.functional.avg_pool2d(h, 3, 2, ceil_mode=True)
    h = torch.nn.functional.conv2d(h, t["c2.weight"], stride=2, padding=1)
    y = torch.nn.functional.conv2d(h, t["c3.weight"], dilation=2)[0, 0]
    assert tuple(y.shape) == tuple(net.graph.nodes["c3"]["shapes"][0][2:])
    for i in range(y.shape[0]):
        for j in range(y.shape[1]):
            (g,) = torch.autograd.grad(y[i, j], x, retain_graph=True)
            rows, cols = np.nonzero(g[0, 0].numpy())
            want = (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1)
            assert image_sets.field_box(ex, "c3", i, j, (23, 21)) == want, (i, j)


def _folder(tmp_path, n=12, size=12, seed=3):
    rng = np.random.default_rng(seed)
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for k in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"im{k:02d}.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    Image.fromarray(np.zeros((size, size, 3), np.uint8)).save(folder / "sub" / "deep.png")
    return folder


SMALL = """name: "small"
input: "data"
input_shape { dim: 4 dim: 3 dim: 12 dim: 12 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 6 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2" convolution_param { num_output: 8 kernel_size: 3 } }
layer { name: "fc" type: "InnerProduct" bottom: "conv2" top: "fc" inner_product_param { num_output: 5 } }
"""


def test_top_patches_are_the_strongest_responses(tmp_path):
    from netc.runtime.folder import image_files
    folder = _folder(tmp_path)
    paths = image_files(str(folder))
    assert len(paths) == 13 and not any("deep" in p for p in paths)       # not recursive
    assert len(image_files(str(folder), recursive=True)) == 14
    net = loads(SMALL, path="small.prototxt")
    ex = net.compile(blobs=["conv2"])
    decode = Decoder(ex.input_shape("data"), {})
    rows, errors = image_sets.top_patches(ex, "conv2", paths, decode, k=3, units=[0, 5, 7])
    assert list(errors) == [paths.index(str(folder / "broken.jpg"))] and "broken.jpg" in errors[0]
    ref = loads(SMALL, path="small.prototxt")
    ref.analyze(batch=1)
    good = [k for k in range(len(paths)) if k not in errors]
    acts = {k: torch_forward(ref, ex.weights, {"data": decode(paths[k])[None]})["conv2"][0].numpy() for k in good}
    for u, unit in enumerate([0, 5, 7]):
        best = sorted(good, key=lambda k: -acts[k][unit].max())[:3]
        assert [int(r) for r in rows[u, :, 0]] == best
        for j, k in enumerate(best):
            a = acts[k][unit]
            np.testing.assert_allclose(rows[u, j, 1], a.max(), rtol=1e-4)
            y, x = np.unravel_index(np.argmax(a), a.shape)
            assert tuple(rows[u, j, 2:]) == image_sets.field_box(ex, "conv2", y, x, (12, 12))
            assert rows[u, j, 4] - rows[u, j, 2] <= 10            # conv2's field: 3 + 2 * (2 + 1) + ... = 10


def test_tsne_codes_are_torchs_and_the_map_keeps_kinds_apart(tmp_path):
    rng = np.random.default_rng(5)
    folder = tmp_path / "two"
    folder.mkdir()
    for k in range(16):
        img = rng.integers(0, 60, (12, 12, 3), dtype=np.uint8)
        img[..., k % 2 * 2] += 180                          # reddish or bluish
        Image.fromarray(img).save(folder / f"{k:02d}.png")
    paths = sorted(str(p) for p in folder.iterdir())
    net = loads(SMALL, path="small.prototxt")
    ex = net.compile(blobs=["conv1"])
    decode = Decoder(ex.input_shape("data"), {})
    codes, index, errors = image_sets.codes(ex, "conv1", paths, decode)
    assert index == list(range(16)) and not errors
    ref = loads(SMALL, path="small.prototxt")
    ref.analyze(batch=1)
    for k in (0, 7, 15):
        want = torch_forward(ref, ex.weights, {"data": decode(paths[k])[None]})["conv1"].numpy().ravel()
        np.testing.assert_allclose(codes[k], want, rtol=1e-4, atol=1e-5)
    points, info = ex.explain("tsne", None, layer="conv1", images=paths, decode=decode)
    assert points.shape == (16, 2) and info["index"] == index
    dist = np.linalg.norm(points[:, None] - points[None], axis=2) + np.eye(16) * 1e9
    kind = np.arange(16) % 2
    assert np.all(kind[dist.argmin(axis=1)] == kind)


def test_class_model_step_is_the_formula_with_autograds_gradient():
    w, x, _, modules = trained()
    net = loads(PROTOTXT, path="digits.prototxt")
    ex = net.compile(weights=w, keep_every=True)
    start = x[3, :, :, :].copy()
    got = explain.class_model(ex, "fc", start, 7, steps=1, lr=0.1, decay=0.01, blur_every=0)
    t = torch.from_numpy(start[None].astype(np.float64)).requires_grad_()
    (g,) = torch.autograd.grad(torch_score(modules, t)[0, 7], t)
    g = g[0].numpy()
    want = 0.99 * start + 0.1 * g / np.sqrt(np.mean(g * g))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_blur_is_a_normalized_gaussian():
    x = np.zeros((1, 9, 9), np.float32)
    x[0, 4, 4] = 1
    b = explain.blur(x, 1.0)[0]
    assert abs(b.sum() - 1) < 1e-6 and b[4, 4] == b.max()
    np.testing.assert_allclose(b[4, 5] / b[4, 4], np.exp(-0.5), rtol=1e-5)
    np.testing.assert_allclose(b, b.T, atol=1e-7)


@pytest.mark.parametrize("target", [1, 4, 8])
def test_class_model_makes_its_class_the_top_one(target):
    """On the trained digits net the grown input is scored as the target, well above the seed."""
    w, x, _, modules = trained()
    net = loads(PROTOTXT, path="digits.prototxt")
    ex = net.compile(weights=w, keep_every=True)
    out, info = ex.explain("class-model", None, target, steps=60, bounds=(0.0, 1.0))
    assert out.shape == (1, 8, 8) and out.min() >= 0 and out.max() <= 1
    s = torch_score(modules, torch.from_numpy(out[None].astype(np.float64)))[0].detach().numpy()
    assert int(np.argmax(s)) == target
    np.testing.assert_allclose(info["score"], s[target], rtol=1e-4)
    assert info["score"] > info["start_score"] + 5


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_commands_and_their_errors(tmp_path, capsys):
    model = tmp_path / "small.prototxt"
    model.write_text(SMALL.replace("dim: 4 dim: 3", "dim: 1 dim: 3"), encoding="utf-8")
    folder = _folder(tmp_path)
    out = tmp_path / "o.png"
    assert main(["explain", str(model), "--method", "top-patches", "--layer", "conv2", "--images", str(folder),
                 "-k", "4", "--units", "1,2", "-o", str(out), "--save-map", str(tmp_path / "m.npy")]) == 0
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "1 of 13 images could not be read" in err
    assert np.load(tmp_path / "m.npy").shape == (2, 4, 6)
    assert Image.open(out).size[0] >= 4 * 72
    assert main(["explain", str(model), "--method", "tsne", "--layer", "fc", "--images", str(folder),
                 "--recursive", "-o", str(tmp_path / "t.png")]) == 0
    assert Image.open(tmp_path / "t.png").size[0] == 960
    assert main(["explain", str(model), "--method", "class-model", "--target", "2", "--steps", "5",
                 "-o", str(tmp_path / "c.png")]) == 0
    assert "score of class 2 went" in capsys.readouterr().out
    base = ["explain", str(model), "-o", str(tmp_path / "x.png")]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "holds no image files" in one_line_error(capsys, base + ["--method", "tsne", "--layer", "fc",
                                                                     "--images", str(empty)])
    assert "no such folder" in one_line_error(capsys, base + ["--method", "tsne", "--layer", "fc",
                                                               "--images", str(tmp_path / "nope")])
    nested = tmp_path / "nested"
    (nested / "inner").mkdir(parents=True)
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(nested / "inner" / "a.png")
    assert "1 subfolder(s): --recursive looks in them" in one_line_error(
        capsys, base + ["--method", "tsne", "--layer", "fc", "--images", str(nested)])
    assert "walks a folder of images" in one_line_error(capsys, base + ["--method", "top-patches", "--layer", "fc"])
    assert "needs a layer" in one_line_error(capsys, base + ["--method", "top-patches", "--images", str(folder)])
    assert "unit 8 is out of range: conv2 has 8 channels" in one_line_error(
        capsys, base + ["--method", "top-patches", "--layer", "conv2", "--units", "8", "--images", str(folder)])
    assert 'no layer named "conv9"' in one_line_error(
        capsys, base + ["--method", "top-patches", "--layer", "conv9", "--images", str(folder)])
    few = tmp_path / "few"
    few.mkdir()
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(few / "a.png")
    assert "t-SNE needs at least 4 readable images; got 1" in one_line_error(
        capsys, base + ["--method", "tsne", "--layer", "fc", "--images", str(few)])
