"""Swish (Caffe fork layer, y = x * sigmoid(beta * x)) end to end: both languages, analysis,
the CPU target, the CUDA target in the simulator, the diagram, all against PyTorch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from netc.compiler.diagram import to_dot
from netc.compiler.layers import REGISTRY
from netc.compiler.network import loads

from targets import run_cpu, run_cuda_sim

PROTOTXT = """name: "swishnet"
input: "data"
input_shape { dim: 2 dim: 3 dim: 6 dim: 5 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "act" type: "Swish" bottom: "conv" top: "act" swish_param { beta: 1.5 } }
layer { name: "act2" type: "Swish" bottom: "data" top: "act2" }
"""
NET = """network swishnet
input data: [2, 3, 6, 5]
conv: Convolution(num_output=4, kernel_size=3, pad=1)
act: Swish(beta=1.5)
act2: Swish <- data
"""


def swish(x, beta):
    return x * torch.sigmoid(beta * x)


def test_parses_from_both_languages_to_the_same_ir():
    a, b = loads(PROTOTXT, path="s.prototxt").graph, loads(NET, path="s.net").graph
    assert a.nodes["act"]["attrs"] == b.nodes["act"]["attrs"] == {"beta": 1.5}
    assert a.nodes["act2"]["attrs"] == {"beta": 1.0}        # swish_param's default


def test_analysis_shape_flops_and_receptive_field():
    rows = {r.name: r for r in loads(NET, path="s.net").analyze(batch=2).layers}
    n = 2 * 4 * 6 * 5
    assert rows["act"].output_shapes == [[2, 4, 6, 5]]
    # beta * x, exp, 1 + e, x / (...): 4 operations an element; beta = 1 drops the multiply
    assert rows["act"].flops == 4 * n and rows["act2"].flops == 3 * (2 * 3 * 6 * 5)
    assert rows["act"].receptive_field == rows["conv"].receptive_field == [3, 3]
    assert rows["act"].inplace            # pointwise: overwrites the conv output


def test_cpu_and_cuda_simulator_match_torch():
    rng = np.random.default_rng(3)
    feeds = {"data": (3 * rng.standard_normal((2, 3, 6, 5))).astype(np.float32)}
    got, ex = run_cpu(NET, feeds, batch=2)
    fused = [s for s in ex.program.steps if "act" in s.layers]
    assert fused and fused[0].layers == ["conv", "act"]     # ran in the convolution's epilogue
    x = torch.from_numpy(feeds["data"].astype(np.float64))
    w = {k: torch.from_numpy(v.astype(np.float64)) for k, v in ex.weights.items()}
    conv = torch.nn.functional.conv2d(x, w["conv.weight"], w["conv.bias"], padding=1)
    want = {"act": swish(conv, 1.5).numpy(), "act2": swish(x, 1.0).numpy()}
    for blob in want:
        np.testing.assert_allclose(got[blob], want[blob], rtol=1e-4, atol=1e-4)
    sim, source = run_cuda_sim(NET, feeds, 2, ex.weights)
    assert "math.exp" in source
    for blob in want:
        np.testing.assert_allclose(sim[blob], want[blob], rtol=1e-4, atol=1e-4)


def test_reference_hook_is_pytorch_silu_at_beta_one():
    x = torch.linspace(-6, 6, 101, dtype=torch.float64)
    ref = REGISTRY["Swish"].reference(torch, [x], {"beta": 1.0}, None, {})[0]
    torch.testing.assert_close(ref, torch.nn.functional.silu(x))


def test_drawn_with_its_type():
    net = loads(NET, path="s.net")
    net.analyze()
    assert "Swish" in to_dot(net.graph)


@pytest.mark.parametrize("bad, msg", [("Swish(beta=true)", "must be a number"),
                                      ("Swish(betta=2)", 'did you mean "beta"')])
def test_bad_parameters_are_located_errors(bad, msg):
    from netc.compiler.errors import NetcError
    with pytest.raises(NetcError, match=msg):
        loads(f"network x\ninput data: [1, 2, 3, 3]\n{bad}\n", path="x.net")


def test_the_cpu_targets_logistic_exp_is_within_half_a_millionth_of_exp():
    """Sigmoid and Swish on the CPU use codegen.cpu_kit's FEXP (vectorizable, no libm call):
    relative error against float64 exp over float32's range of exp, and the logistic function
    built on it saturates to exactly 0 and 1 (and stays finite) far out."""
    import numba as nb
    from netc.compiler.codegen.cpu_kit import FEXP
    space = {"np": np, "nb": nb}
    exec(compile("import numpy as np\nimport numba as nb\n" + FEXP, "fexp", "exec"), space)
    fexp = space["fexp"]

    @nb.njit(fastmath=True)
    def run(xs):
        out = np.empty_like(xs)
        for j in range(xs.size):
            out[j] = fexp(xs[j])
        return out

    @nb.njit(fastmath=True)
    def logistic(xs):
        out = np.empty_like(xs)
        for j in range(xs.size):
            out[j] = np.float32(1.0) / (np.float32(1.0) + fexp(-xs[j]))
        return out

    xs = np.linspace(-87, 87, 200_001, dtype=np.float32)
    want = np.exp(xs.astype(np.float64))
    assert np.max(np.abs(run(xs) - want) / want) < 5e-7     # float32 np.exp: 2e-7 here
    far = np.array([-1e4, -200, -100, 100, 200, 1e4], np.float32)
    s = logistic(far)
    assert np.all(np.isfinite(s)) and np.all(s[:3] < 1e-37) and np.all(s[3:] == 1)
