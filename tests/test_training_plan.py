"""The backward plan `netc analyze --training` reports (compiler/backward_plan.py) against what
the backward pass really holds (runtime/backward.py's stats): the forward values kept, the
executable's arena, and the gradient bytes live at every layer's step, equal on a plain chain
(also derived by hand), on branching test networks and on a zoo ResNet."""
from __future__ import annotations

import json

import numpy as np
import pytest

import netc
from netc.cli import main
from netc.compiler.backward_plan import backward_plan, blob_keys, explain_backward_plan
from netc.compiler.network import loads
from netc.runtime.backward import gradients
from netc.runtime.executor import Executable
from netc.runtime.explain import score_blob

from nets import POINT_NET, RESIDUAL_NET, inp, layer

CHAIN = """network Chain
input data: [1, 2, 8, 8]
conv: Convolution(num_output=4, kernel_size=3, pad=1)
relu: ReLU
pool: Pooling(pool=MAX, kernel_size=2, stride=2)
fc: InnerProduct(num_output=3)
"""

# Inputs that get no gradient (Crop's and Interp's size reference, the unpooling's mask), a
# Concat read by two layers, a Slice whose middle piece nobody reads
FORK_NET = inp(2, 3, 6, 8) + "".join([
    layer("c", "Convolution", "data", "c", "convolution_param { num_output: 4 kernel_size: 3 pad: 1 }"),
    layer("pool", "Pooling", "c", ["pool", "mask"], "pooling_param { pool: MAX kernel_size: 2 stride: 2 }"),
    layer("unpool", "Upsample", ["pool", "mask"], "unpool", "upsample_param { scale: 2 }"),
    layer("zoom", "Interp", ["pool", "c"], "zoom"),
    layer("cat", "Concat", ["unpool", "zoom", "c"], "cat"),
    layer("crop", "Crop", ["cat", "pool"], "crop", "crop_param { axis: 2 offset: 1 }"),
    layer("sl", "Slice", "cat", ["s0", "s1", "s2"], "slice_param { axis: 1 slice_point: 4 slice_point: 8 }"),
    layer("sum", "Eltwise", ["s0", "s2"], "sum"),
    layer("relu", "ReLU", "sum", "sum"),
    layer("fc", "InnerProduct", "relu", "fc", "inner_product_param { num_output: 5 }"),
    layer("fc2", "InnerProduct", "crop", "fc2", "inner_product_param { num_output: 5 }"),
    layer("both", "Eltwise", ["fc", "fc2"], "both"),
    layer("prob", "Softmax", "both", "prob"),
])


def measured(net, seed_all: bool, batch=None):
    """(plan, what gradients() held, the executable) for one input: seeds at every output when
    `seed_all`, else at explain's score."""
    ex = Executable(net, keep_every=True, batch=batch)
    name = ex.required_inputs[0]
    rng = np.random.default_rng(3)
    x = rng.standard_normal(ex.input_shape(name)).astype(np.float32)
    g = net.graph
    keys = [ex.blob_key[o] for o in ex.outputs] if seed_all else [ex.blob_key[score_blob(net)]]
    seeds = {k: rng.standard_normal(g.nodes[k[0]]["shapes"][k[1]]).astype(np.float32) for k in keys}
    stats = {}
    got, values = gradients(ex, {name: x}, seeds, wanted=[ex.inputs[name]], stats=stats)
    assert np.abs(got[ex.inputs[name]]).max() > 0          # a gradient really went all the way back
    distinct = {v.__array_interface__["data"][0]: v.nbytes for v in values.values()}     # views share
    assert stats["kept_bytes"] == sum(distinct.values()) == ex.arena_bytes
    return backward_plan(g, keys), stats, ex


def assert_plan_is_what_ran(plan, stats, ex):
    assert plan["peak_gradient_bytes"] == stats["peak_gradient_bytes"] > 0
    assert plan["gradient_bytes"] == stats["gradient_bytes"]          # every layer's step
    assert plan["kept_bytes"] == stats["kept_bytes"]
    assert plan["kept_bytes"] == ex.target.arena.nbytes
    assert plan["total_bytes"] == plan["kept_bytes"] + plan["peak_gradient_bytes"]


def test_chain_by_hand():
    """data 2x8x8 (512 B), conv 4x8x8 (1024 B), ReLU over it in place (its own 1024 B buffer),
    MAX pool 4x4x4 (256 B), fc 3 (12 B); the score is fc (no Softmax)."""
    net = loads(CHAIN, path="chain.net")
    plan, stats, ex = measured(net, seed_all=False)
    assert plan["kept_bytes"] == 512 + 1024 + 1024 + 256 + 12
    # reverse walk: fc's seed 12 + pool's 256; pool's 256 + relu's 1024; relu's 1024 + conv's
    # 1024; conv's 1024 + data's 512; data's 512
    assert plan["gradient_bytes"] == {"fc": 268, "pool": 1280, "relu": 2048, "conv": 1536, "data": 512}
    assert (plan["peak_gradient_bytes"], plan["peak_layer"]) == (2048, "relu")
    assert plan["total_bytes"] == 2828 + 2048
    assert_plan_is_what_ran(plan, stats, ex)


@pytest.mark.parametrize("text", [POINT_NET, RESIDUAL_NET, FORK_NET], ids=["point", "residual", "fork"])
def test_branching_nets_every_output_seeded(text):
    net = loads(text, path="n.prototxt")
    plan, stats, ex = measured(net, seed_all=True)
    assert_plan_is_what_ran(plan, stats, ex)


def test_fork_net_gradients_skip_size_and_index_inputs():
    """The mask and the size references get no gradient: counting them would raise the plan."""
    net = loads(FORK_NET, path="n.prototxt")
    plan, stats, ex = measured(net, seed_all=False)
    assert_plan_is_what_ran(plan, stats, ex)
    # at unpool's step: waiting are pool's gradient (zoom's and crop's) and c's (cat's); the mask
    # (pool port 1) is not among them
    g = net.graph
    b = {k: int(np.prod(g.nodes[k[0]]["shapes"][k[1]])) * 4 for k in [("pool", 0), ("pool", 1), ("c", 0), ("unpool", 0)]}
    assert stats["gradient_bytes"]["unpool"] == b[("unpool", 0)] + b[("pool", 0)] + b[("c", 0)]


def test_resnet18_at_64_explains_score():
    net = netc.load("resnet18")
    net.set_input_shapes({"data": (1, 3, 64, 64)})
    plan, stats, ex = measured(net, seed_all=False, batch=2)
    assert_plan_is_what_ran(plan, stats, ex)
    analyzed = explain_backward_plan(net)      # what analyze --training prints: the same seeds
    assert analyzed["score"] == "fc" and analyzed["gradient_bytes"] == plan["gradient_bytes"]
    assert blob_keys(net.graph)["fc"] == ("fc", 0)
    # the stem's 64x32x32 output and its gradient pair at batch 2 are the peak
    assert plan["peak_gradient_bytes"] == 2 * (2 * 64 * 32 * 32 * 4)


def test_analyze_training_prints_the_plan(tmp_path, capsys):
    path = tmp_path / "chain.net"
    path.write_text(CHAIN)
    assert main(["analyze", str(path)]) == 0
    plain = capsys.readouterr().out
    assert "backward" not in plain and "grads" not in plain
    assert main(["analyze", str(path), "--training"]) == 0
    out = capsys.readouterr().out
    assert plain.split("┘\n")[1].rstrip() in out               # the forward totals, unchanged, come first
    assert "weight gradients     not computed" in out
    assert "forward values kept  2.8 kB" in out
    assert "peak gradients       2.0 kB  (at relu)" in out and "total                4.9 kB" in out
    relu_row = next(line for line in out.splitlines() if line.startswith("│relu"))
    assert relu_row.rstrip("│ ").endswith("2.0 kB")                         # the grads column
    assert main(["analyze", str(path), "--training", "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    b = d["backward"]
    assert (b["kept_bytes"], b["peak_gradient_bytes"], b["total_bytes"]) == (2828, 2048, 4876)
    assert b["gradient_bytes"]["pool"] == 1280 and b["score"] == "fc" and b["no_rule"] == []
    assert main(["analyze", str(path), "--training", "--format", "markdown"]) == 0
    md = capsys.readouterr().out
    assert "| relu | ReLU | 4x8x8 | 0 | 0 | 0 | 3x3 | 2,048 |" in md


def test_a_layer_without_a_backward_rule_is_named(capsys):
    net = loads(inp(1, 2, 4, 4) + layer("u", "SPP", "data", "u", "spp_param { pyramid_height: 2 }"), path="u.prototxt")
    net.analyze()
    assert explain_backward_plan(net)["no_rule"] == ["u"]
