"""netc run / bench / build / weights, and weights files that do not match the network."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from netc.cli import main
from netc.compiler.errors import NetcError
from netc.compiler.network import loads

NET = """name: "tiny/net"
layer { name: "data" type: "Data" top: "data" top: "label"
  transform_param { crop_size: 16 mean_value: 100 mean_value: 110 mean_value: 120 scale: 0.02 }
  data_param { batch_size: 1 } }
layer { name: "conv 1" type: "Convolution" bottom: "data" top: "c1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "bn" type: "BatchNorm" bottom: "c1" top: "c1" }
layer { name: "relu" type: "ReLU" bottom: "c1" top: "c1" }
layer { name: "pool" type: "Pooling" bottom: "c1" top: "p" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "p" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
"""


@pytest.fixture
def model(tmp_path):
    p = tmp_path / "tiny.prototxt"
    p.write_text(NET)
    return p


def net():
    return loads(NET, path="tiny.prototxt")


def test_weights_lists_keys_and_shapes(model, capsys):
    assert main(["weights", str(model)]) == 0
    out = capsys.readouterr().out
    assert "conv 1.weight" in out and "[4, 3, 3, 3]" in out and "bn.mean" in out and "fc.weight" in out
    assert "[5, 256]" in out


def test_run_npy_output_blobs_and_profile(model, tmp_path, capsys):
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    rc = main(["run", str(model), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy"),
               "--blobs", "c1,p", "--blobs-out", str(tmp_path / "b.npz"), "--profile"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "GFLOP/s" in out and "share" in out
    y = np.load(tmp_path / "y.npy")
    ref = net().compile(batch=2)(x)
    assert y.shape == (2, 5) and y.tobytes() == ref.tobytes()
    with np.load(tmp_path / "b.npz") as z:
        assert z["c1"].shape == (2, 4, 16, 16) and z["p"].shape == (2, 4, 8, 8)
        assert (z["c1"] >= 0).all()


def test_run_images_top_k_with_labels(model, tmp_path, capsys):
    from PIL import Image
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (30, 20, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "labels.txt").write_text("zero\none\ntwo\nthree\nfour\n")
    rc = main(["run", str(model), "--input", str(tmp_path / "a.png"), "--top", "3",
               "--labels", str(tmp_path / "labels.txt")])
    assert rc == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("note: random weights (seed 0)")      # the scores mean nothing: said so
    assert out[1].split() == ["rank", "class", "probability", "name"]
    rows = [line.split() for line in out[2:]]
    assert [r[0] for r in rows] == ["1", "2", "3"]
    assert all(r[3] == "zero one two three four".split()[int(r[1])] for r in rows)
    assert [float(r[2]) for r in rows] == sorted((float(r[2]) for r in rows), reverse=True)
    from netc.runtime.images import load_images
    x = load_images([str(tmp_path / "a.png")], (1, 3, 16, 16),
                    {"mean_value": (100.0, 110.0, 120.0), "scale": 0.02})
    assert x.shape == (1, 3, 16, 16) and abs(float(x.mean())) < 3


def test_gpu_is_a_clear_error(model, capsys):
    assert main(["run", str(model), "--gpu"]) != 0
    assert "no CUDA GPU found" in capsys.readouterr().err


def test_build_writes_an_importable_sanitized_module(model, tmp_path, capsys):
    assert main(["build", str(model), "--target", "cpu", "-o", str(tmp_path / "out")]) == 0
    files = list((tmp_path / "out").glob("*.py"))
    assert len(files) == 1 and files[0].name == "net_tiny_net.py"
    src = files[0].read_text()
    assert "conv 1" not in src and "tiny/net" not in src and "def make(V, S, P)" in src
    spec = importlib.util.spec_from_file_location("built_tiny", files[0])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert callable(mod.make)


def test_bench_json(model, capsys):
    assert main(["bench", str(model), "--iters", "3", "--format", "json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["median_ms"] > 0 and r["sgemm_peak_gflops"] > 0 and len(r["slowest"]) <= 10
    assert r["arena_bytes"] >= r["peak_activation_bytes"]


def _weights():
    n = net()
    n.analyze()
    from netc.runtime.weights import random
    return n, random(n.graph, 1)


@pytest.mark.parametrize("edit, message", [
    (lambda w: w.pop("fc.bias"), r'lacks "fc.bias" \(expected shape \[5\]\)'),
    (lambda w: w.update({"fc.extra": np.zeros(3, np.float32)}), '"fc.extra"'),
    (lambda w: w.update({"conv 1.weight": np.zeros((4, 3, 3, 2), np.float32)}),
     r'"conv 1.weight" has shape \[4, 3, 3, 2\]; expected \[4, 3, 3, 3\]'),
    (lambda w: w.update({"bn.var": np.zeros(4, np.int32)}), r'"bn.var" has dtype int32.*\[4\]'),
    (lambda w: w["fc.weight"].__setitem__((0, 0), np.nan), r'"fc.weight" holds NaN.*\[5, 256\]'),
])
def test_bad_weights_name_the_key_and_shape(tmp_path, edit, message):
    n, w = _weights()
    edit(w)
    np.savez(tmp_path / "w.npz", **w)
    with pytest.raises(NetcError, match=message):
        n.compile(weights=str(tmp_path / "w.npz"))


def test_weights_file_round_trip(tmp_path):
    n, w = _weights()
    np.savez(tmp_path / "w.npz", **w)
    x = np.random.default_rng(2).standard_normal((1, 3, 16, 16)).astype(np.float32)
    a = n.compile(weights=str(tmp_path / "w.npz"))(x)
    b = n.compile(weights=w)(x)
    c = n.compile(seed=1)(x)
    assert a.tobytes() == b.tobytes() == c.tobytes()


def test_run_bench_weights_print_no_control_characters(tmp_path, capsys):
    """Names from a model file reach the terminal as escapes, never as raw control sequences."""
    p = tmp_path / "esc.prototxt"
    p.write_text('input: "x" input_shape { dim: 1 dim: 2 dim: 4 dim: 4 }\n'
                 'layer { name: "c\\x1b[2Jv" type: "Convolution" bottom: "x" top: "y\\x1b]0;pwn\\x07"\n'
                 '  convolution_param { num_output: 2 kernel_size: 3 } }\n')
    assert main(["run", str(p), "--profile"]) == 0
    assert main(["bench", str(p), "--iters", "2"]) == 0
    assert main(["weights", str(p)]) == 0
    out, err = capsys.readouterr()
    assert "\x1b" not in out + err and "\x07" not in out + err
    assert "\\x1b[2Jv" in out and "y\\x1b]0;pwn\\x07" in out


def test_fused_blob_is_refused_unless_kept_at_compile_time():
    n = loads('input: "x" input_shape { dim: 1 dim: 2 dim: 5 dim: 5 }\n'
              'layer { name: "c" type: "Convolution" bottom: "x" top: "c" convolution_param { num_output: 3 kernel_size: 3 } }\n'
              'layer { name: "r" type: "ReLU" bottom: "c" top: "r" }\n', path="f.prototxt")
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 5)).astype(np.float32)
    with pytest.raises(NetcError, match='blob "c" is never materialized.*blobs=\\["c"\\]'):
        n.compile().run({"x": x}, blobs=["c"])
    got = n.compile(blobs=["c"]).run({"x": x}, blobs=["c"])
    assert np.array_equal(np.maximum(got["c"], 0), got["r"]) and (got["c"] < 0).any()
