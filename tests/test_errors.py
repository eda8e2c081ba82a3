"""Bad and hostile input: every broken model file gets a located error (FILE:LINE:COL, the line,
a caret, exit status 2) and never a traceback; nothing a file says is ever evaluated; absurd
sizes stay exact; output is deterministic.

The corpus lives in tests/bad/ (one small file per case) with tests/bad/expected.txt giving
each case's LINE:COL and a substring of its message. Most cases run in-process through
`netc.cli.main` (fast); a handful run through a real `python -m netc` subprocess to prove the
exit status and the absence of a traceback end to end.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from netc.cli import main
from netc.compiler.build import ir_signature
from netc.compiler.network import MAX_FILE_BYTES, loads

from hostile import HOSTILE, _quote

BAD = Path(__file__).parent / "bad"


def _expected() -> dict[str, tuple[int, int, str]]:
    table = {}
    for line in (BAD / "expected.txt").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, pos, sub = line.split("\t")
        ln, col = pos.split(":")
        table[name] = (int(ln), int(col), sub)
    return table


EXPECTED = _expected()
CASES = sorted(EXPECTED)


def check_rendered(stderr: str, path: str, line: int, col: int, substring: str) -> None:
    """The compiler-style error: head line, the quoted source line, a caret under `col`."""
    assert "Traceback" not in stderr, stderr
    assert stderr.startswith(f"{path}:{line}:{col}: error:"), stderr
    assert substring in stderr.splitlines()[0], stderr
    lines = stderr.splitlines()
    carets = [i for i, l in enumerate(lines) if re.fullmatch(r" {4,}\^", l)]
    assert carets, f"no caret line in:\n{stderr}"
    i = carets[0]
    assert i >= 2, stderr  # head, quoted line, caret
    raw = Path(path).read_bytes().decode("utf-8", "replace").splitlines() or [""]
    quoted = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "\ufffd", raw[line - 1].expandtabs(1))
    if len(quoted) <= 200:  # long lines are windowed around the column
        assert lines[i - 1] == "    " + quoted
        assert lines[i].index("^") - 4 == col - 1


def test_corpus_is_complete_and_large():
    """Every file in tests/bad has an expectation and vice versa; both languages are covered."""
    files = {p.name for p in BAD.iterdir() if p.suffix in (".net", ".prototxt")}
    assert files == set(EXPECTED)
    assert len(files) >= 60
    assert sum(f.endswith(".net") for f in files) >= 30
    assert sum(f.endswith(".prototxt") for f in files) >= 30


@pytest.mark.parametrize("name", CASES)
def test_bad_file_gives_located_error(name, capsys):
    line, col, sub = EXPECTED[name]
    path = str(BAD / name)
    assert main(["analyze", path]) == 2
    check_rendered(capsys.readouterr().err, path, line, col, sub)


@pytest.mark.parametrize("name", CASES)
def test_bad_file_other_commands_fail_cleanly(name, capsys):
    """convert (and fmt for .net) read the same files: a clean error or a result, no exception."""
    path = str(BAD / name)
    assert main(["convert", path]) in (0, 2)
    if name.endswith(".net"):
        assert main(["fmt", path]) in (0, 2)
    assert "Traceback" not in capsys.readouterr().err


SUBPROCESS_CASES = ["pt_syntax_eof.prototxt", "pt_not_utf8.prototxt", "pt_deep_messages.prototxt",
                    "net_deep_sum.net", "net_repeat_huge.net", "net_empty.net", "net_kernel_too_big.net"]


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_real_cli_exit_status_and_no_traceback(name):
    line, col, sub = EXPECTED[name]
    path = str(BAD / name)
    r = subprocess.run([sys.executable, "-m", "netc", "analyze", path], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    assert r.stdout == ""
    check_rendered(r.stderr, path, line, col, sub)


# ---- generated cases too big to keep as files -----------------------------------------------
DEEP = 20_000
GENERATED = {
    "deep_braces.prototxt": ("layer { " + "a { " * DEEP + "}" * DEEP + " }\n", "nest more than"),
    "deep_unbalanced.prototxt": ("a {" * DEEP, "unexpected end of file"),
    "deep_lists.prototxt": ('input: "d"\nx: ' + "[" * DEEP + "1" + "]" * DEEP + "\n", "nest more than"),
    "deep_lists.net": ("input d: " + "[" * DEEP + "1" + "]" * DEEP + "\n", "nest more than"),
    "deep_negation.net": ("input d: [1, " + "-" * DEEP + "3, 8, 8]\n", "nest more than"),
    "deep_sum.net": ("input d: [1, " + "+".join(["1"] * DEEP) + ", 8, 8]\n", "nest more than"),
    "deep_blocks.net": ("input d: [1, 3, 8, 8]\n" + "repeat 1 { " * DEEP + "ReLU" + " }" * DEEP, "nest more than"),
    "deep_parens.net": ("input d: [1, 3, 8, 8]\nReLU(negative_slope=" + "(" * DEEP + "1" + ")" * DEEP + ")\n",
                        None),  # redundant parentheses leave no depth behind: this one is valid
}


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_pathological_nesting(name, tmp_path, capsys):
    """Tens of thousands of nested brackets/operators: a located error, never RecursionError."""
    text, sub = GENERATED[name]
    path = tmp_path / name
    path.write_text(text)
    rc = main(["analyze", str(path), "--format", "json"])
    out = capsys.readouterr()
    if sub is None:
        assert rc == 0 and json.loads(out.out)
        return
    assert rc == 2
    assert "Traceback" not in out.err
    assert re.match(re.escape(str(path)) + r":\d+:\d+: error: ", out.err)
    assert sub in out.err.splitlines()[0]
    assert re.search(r"^ {4,}\^$", out.err, re.M)


def test_file_too_large(tmp_path, capsys):
    path = tmp_path / "huge.prototxt"
    with path.open("wb") as f:
        f.write(b"# padding\n")
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: costs no disk
    assert main(["analyze", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{path}:1:1: error: file is {MAX_FILE_BYTES + 1} bytes")
    assert "    # padding\n    ^" in err


def test_missing_file_is_a_clean_error(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "nope.prototxt")]) == 2
    assert 'no such file or zoo model' in capsys.readouterr().err


# ---- reflected text is data, never code ---------------------------------------------------------
# (HOSTILE and _quote live in tests/hostile.py: test_cuda uses them too)
def hostile_chain_prototxt() -> str:
    """A chain whose network, layer and blob names are all hostile strings."""
    out = [f"name: {_quote(HOSTILE[0])}", f"input: {_quote(HOSTILE[1])}",
           "input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }"]
    prev = HOSTILE[1]
    for i, name in enumerate(HOSTILE[2:]):
        typ = "ReLU" if i % 2 else "Sigmoid"
        top = name + "#out"
        out.append(f"layer {{ name: {_quote(name)} type: {_quote(typ)} bottom: {_quote(prev)} top: {_quote(top)} }}")
        prev = top
    return "\n".join(out) + "\n"


def test_hostile_names_round_trip_and_stay_data(tmp_path, capsys, monkeypatch):
    """Names with quotes, newlines, braces, __import__ and f-string syntax survive analyze in
    every format and convert in both directions exactly; JSON stays valid JSON; nothing runs
    (an evaluated name would create ./PWNED or change the text)."""
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "hostile.prototxt"
    src.write_text(hostile_chain_prototxt(), encoding="utf-8")
    net = loads(src.read_text(encoding="utf-8"), path=str(src))
    names = list(net.graph.nodes)
    assert names == HOSTILE[1:]
    for fmt in ("json", "csv", "markdown", "table"):
        out = tmp_path / f"a.{fmt}"
        assert main(["analyze", str(src), "--format", fmt, "-o", str(out)]) == 0
        text = out.read_text(encoding="utf-8")
        if fmt == "json":
            d = json.loads(text)
            assert d["network"] == HOSTILE[0]
            assert [l["name"] for l in d["layers"]] == names
            assert d["layers"][1]["outputs"] == [HOSTILE[2] + "#out"]
            assert d["layers"][2]["inputs"] == [HOSTILE[2] + "#out"]
        elif fmt == "csv":
            rows = list(csv.reader(io.StringIO(text)))
            assert [r[0] for r in rows[1:]] == names
        else:  # display formats: shown literally, no rich markup, no raw control characters
            assert "__import__" in text and "{x!r}{{y}}" in text and "[/x]" in text
            assert "\x1b" not in text and "\x07" not in text
    for direction in ("net", "prototxt"):
        assert main(["convert", str(src), "--to", direction, "-o", str(tmp_path / f"c.{direction}")]) == 0
    assert not (tmp_path / "PWNED").exists()
    # convert both ways: prototxt -> net -> prototxt, same IR at every step
    sig = ir_signature(net.graph)
    as_net = net.to_net()
    net2 = loads(as_net, path=str(tmp_path / "h.net"))
    assert ir_signature(net2.graph) == sig and net2.name == HOSTILE[0]
    net3 = loads(net2.to_prototxt(), path=str(tmp_path / "h2.prototxt"))
    assert ir_signature(net3.graph) == sig and net3.name == HOSTILE[0]
    assert net3.to_prototxt() == net.to_prototxt()


def test_hostile_native_labels_round_trip(tmp_path):
    """The same strings as quoted .net labels and output names."""
    lines = ['network "n{e}t\\"1"', 'input "in\\"put": [1, 3, 8, 8]']
    for i, name in enumerate(HOSTILE):
        lines.append(f"{_quote(name)}: ReLU -> {_quote(name + str(i))}")
    net = loads("\n".join(lines) + "\n", path=str(tmp_path / "h.net"))
    assert list(net.graph.nodes)[1:] == HOSTILE
    sig = ir_signature(net.graph)
    back = loads(net.to_prototxt(), path=str(tmp_path / "h.prototxt"))
    assert ir_signature(back.graph) == sig
    again = loads(back.to_net(), path=str(tmp_path / "h2.net"))
    assert ir_signature(again.graph) == sig and again.name == 'n{e}t"1'
    json.loads(json.dumps(again.analyze().to_dict()))


# ---- absurd sizes: exact integers end to end ---------------------------------------------------
def test_absurd_sizes_stay_exact(tmp_path, capsys):
    """A 1x3x100000x100000 input through a 3x3 conv (64 outputs) and a 1000-way InnerProduct:
    totals in the JSON match the hand formula digit for digit (no floats anywhere)."""
    H = W = 100_000
    path = tmp_path / "huge.net"
    path.write_text(f"input data: [1, 3, {H}, {W}]\n"
                    "Convolution(num_output=64, kernel_size=3, pad=1)\nReLU\nInnerProduct(num_output=1000)\n")
    assert main(["analyze", str(path), "--format", "json", "--batch", "7"]) == 0
    d = json.loads(capsys.readouterr().out)
    n = 7
    conv_out = n * 64 * H * W
    conv_macc = conv_out * 3 * 3 * 3
    fc_in = 64 * H * W
    fc_macc = n * 1000 * fc_in
    assert d["totals"]["macc"] == conv_macc + fc_macc
    assert d["totals"]["params"] == (64 * 3 * 9 + 64) + (1000 * fc_in + 1000)
    assert d["totals"]["flops"] == 2 * (conv_macc + fc_macc) + conv_out + n * 1000 + conv_out  # bias adds + ReLU comps
    assert d["totals"]["macc"] > 10 ** 12
    conv = d["layers"][1]
    assert conv["output_shapes"] == [[n, 64, H, W]] and conv["activation_bytes"] == conv_out * 4
    assert all(type(v) is int for v in d["totals"].values())


# ---- determinism -------------------------------------------------------------------------------
def test_output_is_byte_identical_across_processes():
    """Two fresh interpreters (different hash seeds) print the same bytes in every format."""
    root = Path(__file__).resolve().parent.parent
    zoo = root / "zoo" / "googlenet.net"
    targets = [str(p) for p in (zoo, Path(sys.modules["conftest"].REFS) / "resnet-50.prototxt") if p.exists()]
    assert targets
    outs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "COLUMNS": "120"}
        r = subprocess.run([sys.executable, "-c",
                            "import sys; from netc.cli import main\n"
                            "for t in sys.argv[1:]:\n"
                            "    for f in ('json', 'table', 'csv', 'markdown'):\n"
                            "        main(['analyze', t, '--format', f])\n", *targets],
                           capture_output=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        outs.append(r.stdout)
    assert outs[0] == outs[1] and len(outs[0]) > 1000


def test_control_characters_in_names_are_not_echoed_raw(tmp_path, capsys):
    """An error quoting a hostile name shows escapes, not terminal control sequences."""
    path = tmp_path / "esc.net"
    path.write_text('input data: [1, 3, 8, 8]\nReLU <- "x\x1b[2J\x07"\n', encoding="utf-8")
    assert main(["analyze", str(path)]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err
    assert err.startswith(f'{path}:2:9: error: unknown name "x\\x1b[2J\\x07"')


# ---- hostile names through `netc run` and `netc build --target cpu` ----------------------------
RUN_NAMES = ['q"uote', "new\nline", '__import__("os").system("touch PWNED")', "{x}", "f{x!r}{{y}}",
             '"""', "#hash", "back\\slash", "ünï €", "a-b", "a+b", "a b", "'''; import os #", "}{"]


def runnable_prototxt(names: list[str], net_name: str) -> str:
    """conv -> BN -> Scale -> ReLU (fused into the conv), two convs of it, one summed with it (the
    sum is not right after that conv, so it stays its own step), concat, pool, fc, softmax:
    layer names are names[0..], blob names are names[k] + "/out" (or the names again)."""
    L = names
    B = [n + "/out" for n in names]
    q = _quote
    return "\n".join([
        f"name: {q(net_name)}", f"input: {q(L[0])}", "input_shape { dim: 1 dim: 3 dim: 12 dim: 12 }",
        f"layer {{ name: {q(L[1])} type: 'Convolution' bottom: {q(L[0])} top: {q(B[1])} "
        "convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }",
        f"layer {{ name: {q(L[2])} type: 'BatchNorm' bottom: {q(B[1])} top: {q(B[1])} }}",
        f"layer {{ name: {q(L[3])} type: 'Scale' bottom: {q(B[1])} top: {q(B[1])} scale_param {{ bias_term: true }} }}",
        f"layer {{ name: {q(L[4])} type: 'ReLU' bottom: {q(B[1])} top: {q(B[1])} }}",
        f"layer {{ name: {q(L[9])} type: 'Convolution' bottom: {q(B[1])} top: {q(B[9])} "
        "convolution_param { num_output: 4 kernel_size: 1 } }",
        f"layer {{ name: {q(L[10])} type: 'Convolution' bottom: {q(B[1])} top: {q(B[10])} "
        "convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }",
        f"layer {{ name: {q(L[11])} type: 'Eltwise' bottom: {q(B[9])} bottom: {q(B[1])} top: {q(L[3])} }}",
        f"layer {{ name: {q(L[5])} type: 'Concat' bottom: {q(L[3])} bottom: {q(B[10])} top: {q(B[5])} }}",
        f"layer {{ name: {q(L[6])} type: 'Pooling' bottom: {q(B[5])} top: {q(B[6])} "
        "pooling_param { pool: MAX kernel_size: 2 stride: 2 } }",
        f"layer {{ name: {q(L[7])} type: 'InnerProduct' bottom: {q(B[6])} top: {q(B[7])} "
        "inner_product_param { num_output: 10 } }",
        f"layer {{ name: {q(L[8])} type: 'Softmax' bottom: {q(B[7])} top: {q(L[12])} }}",
        f"layer {{ name: {q(L[13])} type: 'Sigmoid' bottom: {q(L[12])} top: {q(B[13])} }}",
    ]) + "\n"


PLAIN_NAMES = [f"l{k}" for k in range(len(RUN_NAMES))]


def _code_tokens(src: str) -> list[tuple[int, str]]:
    """The generated module as tokens, identifiers blanked: two builds of one topology must
    match exactly in every string, number, operator and comment."""
    import tokenize
    toks = tokenize.generate_tokens(io.StringIO(src).readline)
    return [(t.type, "NAME" if t.type == tokenize.NAME else t.string) for t in toks]


@pytest.fixture(scope="module")
def hostile_pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile_run")
    hostile = d / "hostile.prototxt"
    plain = d / "plain.prototxt"
    hostile.write_text(runnable_prototxt(RUN_NAMES, 'n"et{x}\n__import__("os")'), encoding="utf-8")
    plain.write_text(runnable_prototxt(PLAIN_NAMES, "plain"), encoding="utf-8")
    return d, hostile, plain


def test_hostile_names_run_and_give_the_same_bits(hostile_pair, capsys, monkeypatch):
    """`netc run` on a network whose every layer and blob name is hostile gives bit for bit the
    output of the same network with plain names (same seed -> same weights and input), also
    for an intermediate blob asked for by its hostile name; nothing a name says runs."""
    d, hostile, plain = hostile_pair
    monkeypatch.chdir(d)
    assert main(["run", str(plain), "--output", str(d / "plain.npy"),
                 "--blobs", "l3", "--blobs-out", str(d / "plain_blobs.npz")]) == 0
    blob = RUN_NAMES[3]  # "{x}": the eltwise output, kept although the next layer could fuse it
    assert main(["run", str(hostile), "--output", str(d / "hostile.npy"),
                 "--blobs", blob, "--blobs-out", str(d / "hostile_blobs.npz")]) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    assert out.out.splitlines()[1].startswith(RUN_NAMES[13] + "/out: [1, 10]")
    a, b = np.load(d / "plain.npy"), np.load(d / "hostile.npy")
    assert a.shape == (1, 10) and a.dtype == np.float32 and np.all((a > 0.5) & (a < 1))
    assert a.tobytes() == b.tobytes()
    with np.load(d / "plain_blobs.npz") as p, np.load(d / "hostile_blobs.npz") as h:
        assert list(h.files) == [blob]
        assert p["l3"].shape == (1, 4, 12, 12) and p["l3"].tobytes() == h[blob].tobytes()
    assert not (d / "PWNED").exists()


def test_hostile_names_never_reach_generated_source(hostile_pair, capsys):
    """`netc build --target cpu`: the module differs from the plain-named build only in
    identifiers (every string, comment and number identical), identifiers are plain ASCII,
    names that sanitize alike stay distinct, and no hostile name appears anywhere."""
    import ast
    d, hostile, plain = hostile_pair
    assert main(["build", str(hostile), "--target", "cpu", "-o", str(d / "bh")]) == 0
    assert main(["build", str(plain), "--target", "cpu", "-o", str(d / "bp")]) == 0
    capsys.readouterr()
    [fh], [fp] = list((d / "bh").glob("*.py")), list((d / "bp").glob("*.py"))
    assert re.fullmatch(r"net_[0-9A-Za-z_]+\.py", fh.name)
    src, ref = fh.read_text(encoding="utf-8"), fp.read_text(encoding="utf-8")
    assert _code_tokens(src) == _code_tokens(ref)
    for name in RUN_NAMES:
        if name not in ref:  # '"""' is also in the fixed docstring of every build
            assert name not in src, name
    tree = ast.parse(src)
    idents = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | \
        {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", i) for i in idents)
    make = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "make")
    steps = [n.name for n in make.body if isinstance(n, ast.FunctionDef)]
    assert len(steps) >= 9 and len(steps) == len(set(steps)), steps
    assert {"a_b", "a_b_2", "a_b_3"} <= {s.split("_", 1)[1] for s in steps}, steps  # a-b, a+b, a b
    assert not (d / "PWNED").exists()


def test_hostile_names_real_cli(hostile_pair):
    """The same through a real `python -m netc` process: exit 0, no traceback, same bits."""
    d, hostile, plain = hostile_pair
    if not (d / "plain.npy").exists():
        assert main(["run", str(plain), "--output", str(d / "plain.npy")]) == 0
    r = subprocess.run([sys.executable, "-m", "netc", "run", str(hostile), "--output", str(d / "sub.npy")],
                       capture_output=True, text=True, timeout=300, cwd=d)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert np.load(d / "sub.npy").tobytes() == np.load(d / "plain.npy").tobytes()
    r = subprocess.run([sys.executable, "-m", "netc", "build", str(hostile), "--target", "cpu", "-o",
                        str(d / "sub_build")], capture_output=True, text=True, timeout=300, cwd=d)
    assert r.returncode == 0 and r.stdout.startswith("wrote "), r.stderr
    assert not (d / "PWNED").exists()
