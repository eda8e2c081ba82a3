"""`netc run --input DIR/`: rows against torch's scores of the same decoded images, unreadable
images as rows, --resume and Ctrl-C, Parquet and JSON Lines with array columns, and the same job
on a local Ray cluster (byte for byte in the CSV), through netc.Predictor."""
from __future__ import annotations

import csv
import json
import pickle

import numpy as np
import pytest
from PIL import Image

import netc
from netc.cli import main
from netc.compiler.network import loads
from netc.runtime.images import Decoder

from reference import torch_forward

NET = """name: "tiny"
input: "data"
input_shape { dim: 1 dim: 3 dim: 10 dim: 10 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 stride: 2 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc" inner_product_param { num_output: 6 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""
LABELS = ["ant", "bee", "cat", "dog", "eel", "fox"]


@pytest.fixture
def setup(tmp_path):
    """A model whose weights keep the softmax away from 0 and 1, labels, a folder of 20 images
    (one corrupt, one truncated, one grayscale, sizes that need a resize and crop)."""
    model = tmp_path / "tiny.prototxt"
    model.write_text(NET, encoding="utf-8")
    net = loads(NET, path=str(model))
    rng = np.random.default_rng(0)
    w = {"conv.weight": rng.normal(0, 0.01, (4, 3, 3, 3)), "conv.bias": rng.normal(0, 0.1, 4),
         "fc.weight": rng.normal(0, 0.05, (6, 64)), "fc.bias": rng.normal(0, 0.3, 6)}
    weights = tmp_path / "w.npz"
    np.savez(weights, **{k: v.astype(np.float32) for k, v in w.items()})
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    folder = tmp_path / "photos"
    folder.mkdir()
    for k in range(17):
        size = (14 + k, 11 + 2 * k)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / f"p{k:02d}.png")
    Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)).save(folder / "gray.jpg")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n definitely not the rest of a PNG")
    good = (folder / "p00.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[:len(good) // 2])
    return {"model": model, "net": net, "weights": weights, "labels": labels, "folder": folder, "tmp": tmp_path}


def run(s, out, *extra):
    return main(["run", str(s["model"]), "--weights", str(s["weights"]), "--input", str(s["folder"]),
                 "--labels", str(s["labels"]), "--output", str(out), "--top", "3", *extra])


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_rows_are_torchs_scores_of_the_decoded_images(setup, capsys):
    out = setup["tmp"] / "preds.csv"
    assert run(setup, out, "--batch", "4") == 0
    summary = capsys.readouterr().out
    assert "20 image(s)" in summary and "2 could not be read" in summary
    rows = read_csv(out)
    assert [r["path"] for r in rows] == sorted(str(p) for p in setup["folder"].iterdir())
    ref = loads(NET, path="tiny.prototxt")
    ref.analyze(batch=1)
    w = dict(np.load(setup["weights"]))
    decode = Decoder((1, 3, 10, 10), {})
    for r in rows:
        if "corrupt" in r["path"] or "truncated" in r["path"]:
            assert r["error"].startswith("cannot read image") and r["top1_index"] == "-1" and r["top1_score"] == ""
            continue
        assert r["error"] == ""
        p = torch_forward(ref, w, {"data": decode(r["path"])[None]})["prob"][0].numpy()
        order = np.argsort(-p, kind="stable")
        for j in range(3):
            assert int(r[f"top{j + 1}_index"]) == order[j]
            assert r[f"top{j + 1}_name"] == LABELS[order[j]]
            np.testing.assert_allclose(float(r[f"top{j + 1}_score"]), p[order[j]], rtol=1e-5)
    assert 0.2 < max(float(r["top1_score"]) for r in rows if r["top1_score"]) < 0.9      # not saturated


def test_resume_appends_only_the_missing_images(setup, capsys):
    whole, part = setup["tmp"] / "whole.csv", setup["tmp"] / "part.csv"
    assert run(setup, whole) == 0
    moved = setup["tmp"] / "later"
    moved.mkdir()
    names = sorted(p.name for p in setup["folder"].iterdir())
    for name in names[10:]:
        (setup["folder"] / name).rename(moved / name)
    assert run(setup, part) == 0
    for name in names[10:]:
        (moved / name).rename(setup["folder"] / name)
    with open(part, "a", encoding="utf-8") as f:
        f.write(f"{setup['folder'] / names[10]},3,dog,0.1")        # a row cut off by a hard kill
    assert run(setup, part, "--resume") == 0
    assert "10 already in" in capsys.readouterr().err
    assert part.read_bytes() == whole.read_bytes()
    assert run(setup, part, "--resume") == 0                      # nothing left: nothing added
    assert part.read_bytes() == whole.read_bytes()
    assert main(["run", str(setup["model"]), "--input", str(setup["folder"]), "--output", str(part), "--top", "2",
                 "--resume"]) == 2
    assert "--resume needs the same ones" in capsys.readouterr().err


def test_ctrl_c_leaves_complete_rows_and_resume_finishes(setup, capsys, monkeypatch):
    from netc.runtime.predict import Predictor
    whole, cut = setup["tmp"] / "whole.jsonl", setup["tmp"] / "cut.jsonl"
    assert run(setup, whole, "--batch", "4") == 0
    real, calls = Predictor.columns, []

    def interrupted(self, *a):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, *a)
    monkeypatch.setattr(Predictor, "columns", interrupted)
    assert run(setup, cut, "--batch", "4") == 130
    assert "interrupted: 8 row(s) written" in capsys.readouterr().err
    lines = cut.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 8 and all(json.loads(line)["path"] for line in lines)
    monkeypatch.setattr(Predictor, "columns", real)
    assert run(setup, cut, "--batch", "4", "--resume") == 0
    assert cut.read_bytes() == whole.read_bytes()


def test_parquet_and_jsonl_carry_a_layers_codes(setup):
    import pyarrow.parquet as pq
    pq_out, js_out = setup["tmp"] / "p.parquet", setup["tmp"] / "p.jsonl"
    assert run(setup, pq_out, "--blobs", "fc") == 0
    assert run(setup, js_out, "--blobs", "fc") == 0
    table = pq.read_table(pq_out).to_pydict()
    lines = [json.loads(line) for line in js_out.read_text(encoding="utf-8").splitlines()]
    ref = loads(NET, path="tiny.prototxt")
    ref.analyze(batch=1)
    w = dict(np.load(setup["weights"]))
    decode = Decoder((1, 3, 10, 10), {})
    k = table["path"].index(str(setup["folder"] / "p03.png"))
    want = torch_forward(ref, w, {"data": decode(table["path"][k])[None]})["fc"][0].numpy()
    np.testing.assert_allclose(table["fc"][k], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lines[k]["fc"], want, rtol=1e-5, atol=1e-6)
    assert lines[k]["path"] == table["path"][k] and lines[k]["top1_index"] == table["top1_index"][k]
    bad = table["path"].index(str(setup["folder"] / "corrupt.png"))
    assert table["error"][bad] and lines[bad]["top1_score"] is None


def test_bad_requests(setup, capsys):
    base = ["run", str(setup["model"]), "--input", str(setup["folder"])]
    for extra, says in ((["--output", str(setup["tmp"] / "p.txt")], "name it .csv, .jsonl, .parquet"),
                        ([], "--output preds.csv"),
                        (["--output", str(setup["tmp"] / "p.csv"), "--blobs", "fc"], "write Parquet or JSON Lines"),
                        (["--output", str(setup["tmp"] / "q.csv"), "--blobs", "fc", "--blobs-out", "x.npz"],
                         "--blobs-out is for named inputs"),
                        (["--output", str(setup["folder"] / "p00.png")], "name it .csv")):    # never an image
        assert main(base + extra) == 2, extra
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err, err
    assert not (setup["tmp"] / "p.csv").exists()
    assert main(["run", str(setup["model"]), "--resume"]) == 2
    assert "--resume is for a folder of images" in capsys.readouterr().err


def test_predictor_pickles_before_and_after_compiling(setup):
    p = netc.Predictor(str(setup["model"]), weights=str(setup["weights"]), batch=2, top=2)
    paths = [str(setup["folder"] / n) for n in ("p01.png", "corrupt.png", "p02.png")]
    batch = {"path": np.array(paths, object), "bytes": np.array([open(q, "rb").read() for q in paths], object)}
    got = p(batch)
    again = pickle.loads(pickle.dumps(p))(batch)
    assert set(got) == set(again) and got["error"][1] and not got["error"][0]
    for key in got:
        assert list(got[key]) == list(again[key]) or np.allclose(got[key], again[key], equal_nan=True)
    decoded = {"path": batch["path"][[0, 2]],
               "image": [np.asarray(Image.open(q).convert("RGB")) for q in (paths[0], paths[2])]}
    np.testing.assert_array_equal(p(decoded)["top1_score"], got["top1_score"][[0, 2]])


def test_the_same_rows_on_a_local_ray_cluster(setup, capsys):
    """A real Ray cluster on this machine (two CPUs): the CSV equals the one-process run's byte for
    byte, unreadable images included; and read_images + map_batches(Predictor) agrees."""
    import ray
    one, cluster = setup["tmp"] / "one.csv", setup["tmp"] / "ray.csv"
    assert run(setup, one, "--batch", "4") == 0
    assert run(setup, cluster, "--batch", "4", "--ray", "--actors", "2") == 0
    assert "2 Ray actor(s)" in capsys.readouterr().out
    assert cluster.read_bytes() == one.read_bytes()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        good = [str(setup["folder"] / f"p{k:02d}.png") for k in range(6)]
        ds = ray.data.read_images(good, include_paths=True, mode="RGB")
        out = ds.map_batches(netc.Predictor, fn_constructor_kwargs={"model": str(setup["model"]),
                             "weights": str(setup["weights"]), "batch": 4, "top": 3, "labels": LABELS},
                             batch_size=4, concurrency=1, num_cpus=1, batch_format="numpy").take_all()
    finally:
        ray.shutdown()
    rows = {r["path"]: r for r in read_csv(one)}
    assert len(out) == 6
    for r in out:
        full = str(setup["folder"] / r["path"].rsplit("/", 1)[-1])
        assert r["top1_name"] == rows[full]["top1_name"]
        assert f"{float(r['top1_score']):.9g}" == rows[full]["top1_score"]


def test_gpu_actors_on_ray_in_the_cuda_simulator(setup):
    """--ray --gpu: one actor per GPU of the cluster, each running the CUDA target (here numba's
    simulator, on a cluster that declares one GPU); its rows equal the one-process --gpu run's.
    In fresh processes: the simulator must be chosen before numba.cuda is first imported."""
    import os
    import subprocess
    import sys
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")          # inherited by the cluster's workers
    for name in [f"p{k:02d}.png" for k in range(4, 17)] + ["gray.jpg"]:
        (setup["folder"] / name).unlink()                      # the simulator is slow: 6 images
    one, cluster = setup["tmp"] / "one.csv", setup["tmp"] / "ray.csv"
    argv = ["run", str(setup["model"]), "--weights", str(setup["weights"]), "--input", str(setup["folder"]),
            "--labels", str(setup["labels"]), "--top", "3", "--batch", "2", "--gpu"]
    r = subprocess.run([sys.executable, "-m", "netc", *argv, "--output", str(one)], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    script = ("import sys, ray\nfrom netc.cli import main\n"
              "ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)\n"
              "try:\n    code = main(sys.argv[1:])\nfinally:\n    ray.shutdown()\nsys.exit(code)\n")
    r = subprocess.run([sys.executable, "-c", script, *argv, "--ray", "--output", str(cluster)], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "1 Ray actor(s)" in r.stdout
    assert cluster.read_bytes() == one.read_bytes()
    assert sum(1 for row in read_csv(one) if row["error"]) == 2
