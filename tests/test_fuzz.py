"""Property-based tests: random valid networks analyze to the shapes and MACs Caffe's formulas
give (recomputed here, independently of compiler/layers); both languages and `convert` agree on
the IR; random damage to real model files ends in a valid network or a clean NetcError, never
another exception and never a hang.

Defaults fit CI (a few thousand examples, well under two minutes on 2 cores). NETC_FUZZ=1
selects the "netc-fuzz-long" profile (20x the examples) for local runs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from netc.compiler.build import ir_signature
from netc.compiler.errors import NetcError
from netc.compiler.network import load, loads

from conftest import REF_FILES

settings.register_profile("netc-fuzz-ci", max_examples=1, deadline=timedelta(seconds=10), derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("netc-fuzz-long", parent=settings.get_profile("netc-fuzz-ci"), derandomize=False)
LONG = os.environ.get("NETC_FUZZ") == "1"
PROFILE = settings.get_profile("netc-fuzz-long" if LONG else "netc-fuzz-ci")


def budget(n: int) -> settings:
    """This test's example count under the selected profile (CI: n; NETC_FUZZ=1: 20n)."""
    return settings(PROFILE, max_examples=n * 20 if LONG else n)


# ---- independent shape arithmetic (Caffe's formulas, written out again) -------------------------
def conv_out(size, k, s, p, d):
    return (size + 2 * p - (d * (k - 1) + 1)) // s + 1


def pool_out(size, k, s, p, ceil_mode=True):
    span = size + 2 * p - k
    out = (span + s - 1) // s + 1 if ceil_mode else span // s + 1
    if p > 0 and (out - 1) * s >= size + p:  # Caffe drops a last window that starts in the padding
        out -= 1
    return out


@dataclass
class Net:
    """A generated network: the same layers rendered as .net and as prototxt, and the shapes
    and MACs they must analyze to."""
    layers: list = field(default_factory=list)   # (name, type, params: dict, bottoms)
    shapes: dict = field(default_factory=dict)   # blob -> shape
    macc: dict = field(default_factory=dict)
    order: list = field(default_factory=list)

    def add(self, name, typ, params, bottoms, shape, macc=0):
        self.layers.append((name, typ, params, bottoms))
        self.shapes[name] = shape
        self.macc[name] = macc
        self.order.append(name)

    def to_net(self) -> str:
        n0, _, p0, _ = self.layers[0]
        lines = ["network fuzz", f"input {n0}: {list(p0['shape'])}"]
        for name, typ, params, bottoms in self.layers[1:]:
            args = ", ".join(f"{k}={v}" for k, v in params.items())
            lines.append(f"{name}: {typ}" + (f"({args})" if args else "") + " <- " + ", ".join(bottoms))
        return "\n".join(lines) + "\n"

    def to_prototxt(self) -> str:
        n0, _, p0, _ = self.layers[0]
        out = ['name: "fuzz"', f'input: "{n0}"', "input_shape { " + " ".join(f"dim: {d}" for d in p0["shape"]) + " }"]
        msg = {"Convolution": "convolution_param", "Pooling": "pooling_param", "InnerProduct": "inner_product_param",
               "Eltwise": "eltwise_param", "Concat": "concat_param", "Scale": "scale_param",
               "Softmax": "softmax_param", "Flatten": "flatten_param", "BatchNorm": "batch_norm_param"}
        for name, typ, params, bottoms in self.layers[1:]:
            body = "".join(f' bottom: "{b}"' for b in bottoms)
            if params:
                fields = " ".join(f"{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in params.items())
                body += f" {msg[typ]} {{ {fields} }}"
            out.append(f'layer {{ name: "{name}" type: "{typ}"{body} top: "{name}" }}')
        return "\n".join(out) + "\n"


@st.composite
def networks(draw, max_layers=12):
    net = Net()
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 8)), draw(st.integers(1, 24)), draw(st.integers(1, 24)))
    net.add("data", "Input", {"shape": shape}, [], shape)
    cur = "data"
    for i in range(draw(st.integers(1, max_layers))):
        name = f"l{i}"
        s = net.shapes[cur]
        four_d = [b for b in net.order if len(net.shapes[b]) == 4]
        if len(s) == 4:
            kind = draw(st.sampled_from(["conv", "conv", "pool", "pool", "relu", "bn", "scale", "eltwise",
                                         "concat", "softmax", "fc", "flatten", "branch"]))
        else:
            kind = draw(st.sampled_from(["fc", "relu", "softmax"]))
        if kind == "branch" and len(four_d) > 1:  # continue from an earlier 4-D blob: a DAG
            cur = draw(st.sampled_from(four_d))
            s = net.shapes[cur]
            kind = "conv"
        elif kind == "branch":
            kind = "relu"
        if kind == "conv":
            n, c, h, w = s
            g = draw(st.sampled_from([d for d in range(1, c + 1) if c % d == 0]))
            num = g * draw(st.integers(1, 4))
            d = draw(st.integers(1, 2))
            p = draw(st.integers(0, 2))
            k = draw(st.integers(1, 5))
            assume(d * (k - 1) + 1 <= min(h, w) + 2 * p)
            stride = draw(st.integers(1, 3))
            params = {"num_output": num, "kernel_size": k, "stride": stride, "pad": p}
            if d > 1:
                params["dilation"] = d
            if g > 1:
                params["group"] = g
            out = (n, num, conv_out(h, k, stride, p, d), conv_out(w, k, stride, p, d))
            net.add(name, "Convolution", params, [cur], out, macc=n * num * out[2] * out[3] * (c // g) * k * k)
        elif kind == "pool":
            n, c, h, w = s
            k = draw(st.integers(1, 4))
            p = draw(st.integers(0, k - 1))
            assume(k <= min(h, w) + 2 * p)
            stride = draw(st.integers(1, 3))
            method = draw(st.sampled_from(["MAX", "AVE"]))
            out = (n, c, pool_out(h, k, stride, p), pool_out(w, k, stride, p))
            net.add(name, "Pooling", {"pool": method, "kernel_size": k, "stride": stride, "pad": p}, [cur], out)
        elif kind in ("relu", "bn", "scale", "softmax"):
            typ, params = {"relu": ("ReLU", {}), "bn": ("BatchNorm", {}), "softmax": ("Softmax", {}),
                           "scale": ("Scale", {"bias_term": draw(st.booleans())})}[kind]
            net.add(name, typ, params, [cur], s)
        elif kind == "eltwise":
            same = [b for b in net.order if net.shapes[b] == s and b != cur]
            if not same:
                net.add(name, "ReLU", {}, [cur], s)
            else:
                other = draw(st.sampled_from(same))
                op = draw(st.sampled_from(["SUM", "PROD", "MAX"]))
                net.add(name, "Eltwise", {"operation": op}, [cur, other], s)
        elif kind == "concat":
            fits = [b for b in four_d if net.shapes[b][0] == s[0] and net.shapes[b][2:] == s[2:]]
            others = draw(st.lists(st.sampled_from(fits), min_size=1, max_size=3))
            out = (s[0], s[1] + sum(net.shapes[b][1] for b in others), s[2], s[3])
            net.add(name, "Concat", {}, [cur, *others], out)
        elif kind == "fc":
            num = draw(st.integers(1, 32))
            fan_in = 1
            for dim in s[1:]:
                fan_in *= dim
            net.add(name, "InnerProduct", {"num_output": num}, [cur], (s[0], num), macc=s[0] * num * fan_in)
        elif kind == "flatten":
            net.add(name, "Flatten", {}, [cur], (s[0], s[1] * s[2] * s[3]))
        cur = name
    return net


def check_analysis(got, net: Net) -> None:
    a = got.analyze(batch=net.shapes["data"][0])  # analysis replaces the input batch
    rows = {r.name: r for r in a.layers}
    assert list(rows) == net.order
    for name in net.order:
        assert tuple(rows[name].output_shapes[0]) == net.shapes[name], name
        if net.macc[name]:
            assert rows[name].macc == net.macc[name], name
    assert a.totals["macc"] == sum(net.macc.values())


@budget(800)
@given(networks())
def test_random_networks_analyze_to_caffe_shapes(net):
    """Generated .net and prototxt both analyze to the independently computed shapes and MACs,
    and describe the same IR."""
    native = loads(net.to_net(), path="fuzz.net")
    caffe = loads(net.to_prototxt(), path="fuzz.prototxt")
    check_analysis(native, net)
    check_analysis(caffe, net)
    assert ir_signature(native.graph) == ir_signature(caffe.graph)


@budget(500)
@given(networks())
def test_convert_round_trips_preserve_the_ir(net):
    """net -> prototxt -> net and prototxt -> net -> prototxt keep the IR, and the text settles."""
    for text, path in ((net.to_net(), "a.net"), (net.to_prototxt(), "a.prototxt")):
        first = loads(text, path=path)
        sig = ir_signature(first.graph)
        as_proto = first.to_prototxt()
        as_net = first.to_net()
        p = loads(as_proto, path="b.prototxt")
        n = loads(as_net, path="b.net")
        assert ir_signature(p.graph) == sig
        assert ir_signature(n.graph) == sig
        assert p.to_prototxt() == as_proto and n.to_net() == as_net


@budget(300)
@given(st.integers(1, 64), st.integers(1, 2000), st.integers(1, 7), st.integers(1, 4), st.integers(0, 3),
       st.booleans())
def test_pooling_rounding_matches_caffe(c, size, k, s, p, ceil_mode):
    """Pool output sizes (ceil and floor, with Caffe's clip of a window starting in the padding)."""
    assume(p < k and k <= size + 2 * p)
    text = (f"input d: [1, {c}, {size}, {size}]\n"
            f"Pooling(kernel_size={k}, stride={s}, pad={p}, round_mode={'CEIL' if ceil_mode else 'FLOOR'})\n")
    row = loads(text, path="p.net").analyze().layers[-1]
    o = pool_out(size, k, s, p, ceil_mode)
    assert row.output_shapes == [[1, c, o, o]]


# ---- damaged real files -----------------------------------------------------------------------
ZOO = Path(__file__).resolve().parent.parent / "zoo"
SEEDS = sorted(p for p in REF_FILES if p.stat().st_size < 60_000) + sorted(ZOO.glob("*.net"))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@st.composite
def damaged(draw):
    """A real file (Caffe reference or zoo) with a few random byte-level edits."""
    src = draw(st.sampled_from(SEEDS))
    data = bytearray(src.read_bytes())
    for _ in range(draw(st.integers(1, 4))):
        n = len(data)
        op = draw(st.sampled_from(["flip", "truncate", "delete", "duplicate", "insert", "swap"]))
        i = draw(st.integers(0, max(n - 1, 0)))
        j = min(n, i + draw(st.integers(1, 200)))
        if op == "flip" and n:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[i:]
        elif op == "delete":
            del data[i:j]
        elif op == "duplicate":
            data[i:i] = data[i:j] * draw(st.integers(1, 3))
        elif op == "insert":
            data[i:i] = draw(st.sampled_from([b"{", b"}", b"[", b"]", b'"', b":", b"\xff", b"\x00", b"-1",
                                              b"0", b"(", b")", b"<-", b"repeat 9 {", b"\n", b"# ", b"in"]))
        elif op == "swap" and n:
            k = draw(st.integers(0, n - 1))
            data[i], data[k] = data[k], data[i]
    return src, bytes(data)


def survive(path: Path) -> None:
    """Whatever the bytes, the front end, analysis and both writers end normally or in NetcError."""
    try:
        net = load(path)
        net.analyze()
        net.analyze(batch=3, dtype="int8")
        loads(net.to_net(), path="round.net")
        loads(net.to_prototxt(), path="round.prototxt")
    except NetcError as e:
        text = e.render()
        assert text.startswith(f"{path}:") or text.startswith("error:"), text
        if e.loc is not None:
            assert f"{path}:{e.loc.line}:{e.loc.column}: error: " in text


@budget(1500)
@given(damaged())
def test_damaged_real_files_fail_cleanly(scratch, case):
    src, data = case
    path = scratch / f"m{src.suffix}"
    path.write_bytes(data)
    survive(path)


@budget(300)
@given(st.sampled_from(SEEDS), st.integers(0, 10_000))
def test_truncated_real_files_fail_cleanly(scratch, src, cut):
    """Every prefix of a real file (an interrupted download) is valid or a located error."""
    data = src.read_bytes()
    path = scratch / f"t{src.suffix}"
    path.write_bytes(data[: cut % (len(data) + 1)])
    survive(path)


@budget(300)
@given(st.text(max_size=300), st.sampled_from([".net", ".prototxt"]))
def test_arbitrary_text_fails_cleanly(scratch, text, suffix):
    path = scratch / f"x{suffix}"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    survive(path)


def test_seed_files_exist():
    assert len(SEEDS) > 20
