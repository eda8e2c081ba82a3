"""GEMM tile autotuning (runtime/autotune.py): candidates, problem keys and the per-GPU cache
without a GPU; in the simulator (a subprocess: NUMBA_ENABLE_CUDASIM must be set before
numba.cuda is imported) a tuned network runs on the chosen tiles and matches the CPU target, a
second compile reads the cache instead of timing, and the CUDA-event timer's path launches
every candidate."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from nets import inp, layer

from netc.compiler.codegen import cuda_gemm as gemm
from netc.compiler.errors import NetcError

HERE = Path(__file__).resolve()

# a conv whose default tile (the most blocks: 16x16) is not the largest that fits (32x64), whose
# k order differs between the two (16 channels fill 32x64's 16-row k-tiles, not 16x16's 32), an
# fc of 2 rows (default GEMV) and one of 12 rows (axis 2: a tiled GEMM)
TUNE_NET = inp(2, 16, 5, 7) + "".join([
    layer("c", "Convolution", "data", "c", "convolution_param { num_output: 6 kernel_size: 3 pad: 1 }"),
    layer("c_relu", "ReLU", "c", "c"),
    layer("fc", "InnerProduct", "c", "fc", "inner_product_param { num_output: 5 }"),
    layer("rows", "InnerProduct", "c", "rows", "inner_product_param { num_output: 4 axis: 2 }"),
])
CONV_KEY = "conv 2,16,5,7,6,5,7,3,3,1,1,1,1,1,1,1"


def vgg_conv3_2(batch: int) -> gemm.ConvGeometry:
    return gemm.ConvGeometry(batch, 256, 56, 56, 256, 56, 56, 3, 3, 1, 1, 1, 1, 1, 1, 1)


def test_candidates_are_the_tiles_that_fit_and_include_the_default():
    big = gemm.conv_problem(vgg_conv3_2(32))
    assert gemm.parse_problem(big) == ("conv", vgg_conv3_2(32))
    assert gemm.tile_candidates(big) == gemm.TILES            # 256 x 100352: every tile fits
    assert gemm.default_choice(big) == gemm.Tile(128, 128, 8, 8, 8)
    # M = 6, N = 2*5*7 = 70: BM <= 32 (6 rounded up, at least 32), BN <= 128
    small = [(t.BM, t.BN, t.SK) for t in gemm.tile_candidates(CONV_KEY)]
    assert small == [(32, 64, 2), (32, 32, 4), (16, 16, 4)]
    assert gemm.default_choice(CONV_KEY) == gemm.choose_tile(6, 70)
    geom = gemm.parse_problem(CONV_KEY)[1]
    assert gemm.tap_major(geom, gemm.Tile(32, 64, 8, 4, 4, 2)) and not gemm.tap_major(geom, gemm.default_choice(CONV_KEY))
    assert gemm.tile_candidates("fc 2,105,5")[0] == gemm.GEMV == gemm.default_choice("fc 2,105,5")
    assert gemm.GEMV not in gemm.tile_candidates("fc 12,35,4")
    for key in (CONV_KEY, "fc 2,105,5", "fc 12,35,4", gemm.fc_problem(32, 25088, 4096)):
        assert gemm.default_choice(key) in gemm.tile_candidates(key)


def test_keys_and_choices_from_disk_are_parsed_not_trusted():
    for bad in ("conv 1,2", "fc 0,3,4", "fc 1,2,x", "rm -rf /", "conv " + ",".join(["1"] * 15) + ",-1", ""):
        with pytest.raises(NetcError):
            gemm.parse_problem(bad)
    t = gemm.Tile(64, 32, 8, 4, 4, 2)
    assert gemm.parse_choice(gemm.choice_text(t)) == t and gemm.parse_choice("gemv") == gemm.GEMV
    for bad in ("3x3x3x3x3x3", "__import__('os')", "128x128x8x8x8", "1024x1024x8x8x8x1"):
        with pytest.raises(NetcError):
            gemm.parse_choice(bad)
    with pytest.raises(NetcError, match="GEMV"):
        gemm.fc_kernel("k", 9, 4, 4, 0, 0, 0, 0, [], tile=gemm.GEMV)
    with pytest.raises(NetcError, match="GEMV"):
        gemm.conv_kernel("k", vgg_conv3_2(1), 0, 0, 0, 0, [], tile=gemm.GEMV)


def test_trial_kernels_size_their_scratch_by_hand_counts():
    ks, arena, params = gemm.trial_kernel(CONV_KEY, "t0_1", gemm.Tile(32, 32, 8, 4, 4, 4))
    assert "def t0_1(A, P):" in ks.source and ks.block == (256, 1, 1)
    assert arena == 2 * 16 * 5 * 7 + 2 * 6 * 5 * 7 and params == 6 * 16 * 9 + 6
    assert ks.grid == (3, 1, 1)                               # ceil(70 / 32) column tiles
    ks, arena, params = gemm.trial_kernel("fc 2,105,5", "t1_0", gemm.GEMV)
    assert arena == 2 * 105 + 2 * 5 and params == 5 * 105 + 5 and "red = cuda.shared.array" in ks.source


def test_cache_is_keyed_by_generator_and_drops_bad_entries(tmp_path, monkeypatch):
    from netc.runtime import autotune
    monkeypatch.setenv("NETC_CACHE", str(tmp_path))
    path = autotune.cache_path("NVIDIA H100 80GB HBM3/../../evil", "sm_90")
    assert path.parent == tmp_path / "autotune" and path.name == "NVIDIA-H100-80GB-HBM3-..-..-evil_sm_90.json"
    good = {"choice": "32x32x8x4x4x4", "ms": {"32x32x8x4x4x4": 1.0, "16x16x8x2x2x4": 2.0}}
    autotune.save_cache(path, "stamp1", "H100", {CONV_KEY: good, "fc 1,2": good, "fc 2,3,4": {"choice": "9x9"},
                                                 "fc 2,3,5": {"choice": "gemv", "ms": "fast"},
                                                 "fc 2,3,6": {"choice": "128x128x8x8x8x1", "ms": {}}})
    assert autotune.load_cache(path, "stamp1") == {CONV_KEY: good}
    assert autotune.load_cache(path, "stamp2") == {}           # another generator: time again
    path.write_text("{not json")
    assert autotune.load_cache(path, "stamp1") == {}
    assert len(autotune.generator_stamp()) == 16


def test_lowering_records_problems_and_uses_the_given_tiles():
    from netc.compiler.network import loads
    from netc.runtime.cuda_executor import cuda_lower
    from netc.runtime.executor import generate
    net = loads(TUNE_NET, path="t.prototxt")
    prog, _ = generate(net, 2, target_lower=cuda_lower)
    assert prog.gemm_problems == {CONV_KEY: ["c"], "fc 2,210,5": ["fc"], "fc 12,35,4": ["rows"]}
    launches = {s.layers[0]: s.launches[0] for s in prog.steps}
    assert launches["c"].grid == (5, 1, 1) and launches["fc"].block == (32 * gemm.GEMV_WARPS, 1, 1)
    assert "tap = int32" not in prog.kernels[launches["c"].kernel]           # k = (c, kh, kw)
    tiles = {CONV_KEY: gemm.Tile(32, 64, 8, 4, 4, 2), "fc 2,210,5": gemm.Tile(16, 16, 8, 2, 2, 4)}
    prog, _ = generate(net, 2, target_lower=partial(cuda_lower, tiles=tiles))
    launches = {s.layers[0]: s.launches[0] for s in prog.steps}
    assert launches["c"].grid == (2, 1, 1) and launches["c"].shared_bytes == tiles[CONV_KEY].shared_bytes
    assert "tap = int32" in prog.kernels[launches["c"].kernel]               # k = (kh, kw, c)
    assert launches["fc"].grid == (1, 1, 1) and launches["fc"].shared_bytes == tiles["fc 2,210,5"].shared_bytes


def test_tune_needs_the_gpu_target(tmp_path):
    from netc.cli import main
    from netc.compiler.network import loads
    with pytest.raises(NetcError, match="CUDA target"):
        loads(TUNE_NET, path="t.prototxt").compile(tune=True)
    model = tmp_path / "t.prototxt"
    model.write_text(TUNE_NET, encoding="utf-8")
    assert main(["run", str(model), "--tune"]) == 2


def test_build_takes_tiles_tuned_on_another_machine(tmp_path, monkeypatch):
    """`netc build --target cuda --tiles FILE`: a tuning cache copied from a GPU host sets the
    tiles (and so the k order and the grid) of the layers it knows; others keep the default."""
    from netc.cli import main
    from netc.runtime import autotune
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "t.prototxt"
    model.write_text(TUNE_NET, encoding="utf-8")
    cache = tmp_path / "NVIDIA-H100_sm_90.json"
    autotune.save_cache(cache, autotune.generator_stamp(), "NVIDIA H100",
                        {CONV_KEY: {"choice": "32x64x8x4x4x2", "ms": {"32x64x8x4x4x2": 0.1}},
                         "fc 99,1,1": {"choice": "gemv", "ms": {"gemv": 0.1}}})
    assert main(["build", str(model), "--target", "cuda", "--tiles", str(cache), "--batch", "2", "-o", "out",
                 "-j", "1"]) == 0
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert man["tiles"] == {"file": str(cache), "device": "NVIDIA H100", "stale": False, "layers_tuned": 1, "gemm_layers": 3}
    conv = next(s for s in man["steps"] if s["layers"][0] == "c")["launches"][0]
    assert conv["grid"] == [2, 1, 1] and conv["shared_bytes"] == gemm.Tile(32, 64, 8, 4, 4, 2).shared_bytes
    module = (tmp_path / "out" / man["module"]).read_text()
    assert "tap = int32" in module                                      # 32x64's k order
    old = {CONV_KEY: {"choice": "32x32x8x4x4x4", "ms": {}}, "fc 2,210,5": {"choice": "128x128x8x8x8x1", "ms": {}},
           "fc 12,35,4": {"choice": "gemv", "ms": {}}}          # the last two: tiles never tried for them
    autotune.save_cache(tmp_path / "old.json", "another-generator", "NVIDIA H100", old)
    assert autotune.tiles_from_file(tmp_path / "old.json") == ("NVIDIA H100", {CONV_KEY: gemm.Tile(32, 32, 8, 4, 4, 4)}, True)
    assert main(["build", str(model), "--tiles", str(cache), "-o", "cpu_out"]) == 2
    (tmp_path / "junk.json").write_text("[1, 2]")
    assert main(["build", str(model), "--target", "cuda", "--tiles", "junk.json", "-o", "out"]) == 2
    assert main(["build", str(model), "--target", "cuda", "--tiles", "missing.json", "-o", "out"]) == 2


def simulate() -> dict:
    """In the simulator: tune with a fake timer (prefers the largest tile, so every choice differs
    from the default), then from the cache, then with the real timer on a fresh cache."""
    from netc.compiler.network import loads
    from netc.runtime import autotune
    from reference import rel
    net = loads(TUNE_NET, path="t.prototxt")
    cpu = net.compile(batch=2)
    feeds = {"data": np.random.default_rng(5).standard_normal((2, 16, 5, 7)).astype(np.float32)}
    want = cpu.run(feeds)
    calls = []

    def fake(cuda, stream):
        def timer(key, choice, launch):
            calls.append([key, choice])
            t = gemm.parse_choice(choice)
            return 1.0 if t == gemm.GEMV else 1.0 / (t.BM * t.BN)
        return timer

    real, autotune.event_timer = autotune.event_timer, fake
    out = {}
    for run in ("fake", "cached"):
        ex = net.compile(target="cuda", batch=2, tune=True)
        got = ex.run(feeds)
        out[run] = {"report": ex.tune_report, "calls": len(calls),
                    "err": max(rel(got[o], want[o]) for o in ex.outputs),
                    "blocks": {s.layers[0]: [list(s.launches[0].grid), list(s.launches[0].block)] for s in ex.program.steps}}
    out["candidates"] = calls
    autotune.event_timer = real
    os.environ["NETC_CACHE"] = os.environ["NETC_CACHE"] + "/fresh"
    ex = net.compile(target="cuda", batch=2, tune=True)
    got = ex.run(feeds)
    out["real"] = {"report": ex.tune_report, "err": max(rel(got[o], want[o]) for o in ex.outputs)}
    out["cache_files"] = sorted(str(p.relative_to(os.environ["NETC_CACHE"].rsplit("/fresh", 1)[0]))
                                for p in Path(os.environ["NETC_CACHE"]).parent.rglob("autotune/*.json"))
    return out


def test_tuned_network_in_the_simulator(tmp_path):
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", NETC_CACHE=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, str(HERE)], env=env, capture_output=True, text=True, cwd=HERE.parent, timeout=900)
    assert r.returncode == 0, r.stderr[-5000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    fake, cached, real = out["fake"], out["cached"], out["real"]
    # every candidate of every problem timed once, then never again
    expect = [[k, gemm.choice_text(c)] for k in (CONV_KEY, "fc 2,210,5", "fc 12,35,4") for c in gemm.tile_candidates(k)]
    assert sorted(out["candidates"]) == sorted(expect) and fake["calls"] == cached["calls"] == len(expect)
    picks = {r["problem"]: r["tile"] for r in fake["report"]}
    assert picks == {CONV_KEY: "32x64x8x4x4x2", "fc 2,210,5": "32x32x8x4x4x4", "fc 12,35,4": "32x32x8x4x4x4"}
    assert all(r["tile"] != r["default"] and r["measured"] for r in fake["report"])
    assert [(r["tile"], r["measured"]) for r in cached["report"]] == [(picks[r["problem"]], False) for r in cached["report"]]
    assert fake["blocks"]["c"] == [[2, 1, 1], [256, 1, 1]]   # ceil(70 / 64) tiles of 32x64
    assert fake["err"] < 1e-4 and cached["err"] < 1e-4
    # the event timer's path: every candidate launched (wall time in the simulator)
    assert all(r["measured"] and r["ms"] > 0 for r in real["report"]) and real["err"] < 1e-4
    assert out["cache_files"] == ["autotune/simulator_sim.json", "fresh/autotune/simulator_sim.json"]


if __name__ == "__main__":
    assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", "run me with NUMBA_ENABLE_CUDASIM=1"
    print(json.dumps(simulate()))
