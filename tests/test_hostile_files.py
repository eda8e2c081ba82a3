"""Hostile and broken files given to `netc run` and friends: each a clean, named error (exit 2,
no traceback), found before anything is decompressed, allocated or compiled."""
from __future__ import annotations

import os
import re
import zipfile

import numpy as np
import pytest
from PIL import Image

from netc.cli import main

NET = "network m\ninput data: [1, 2, 5, 5]\nconv: Convolution(num_output=3, kernel_size=3)\nprob: Softmax\n"


def _zip_member(path, name, data, method=zipfile.ZIP_DEFLATED, encrypted=False):
    with zipfile.ZipFile(path, "w", method) as z:
        info = zipfile.ZipInfo(name)
        info.compress_type = method
        z.writestr(info, data)
    if encrypted:        # set the "encrypted" flag in the local and the central header
        raw = bytearray(path.read_bytes())
        for sig, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            k = raw.index(sig)
            raw[k + at] |= 0x1
        path.write_bytes(bytes(raw))


def _npy_bytes(a) -> bytes:
    import io
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _weights(tmp, kind):
    p = tmp / "w.npz"
    good = {"conv.weight": np.ones((3, 2, 3, 3), np.float32), "conv.bias": np.zeros(3, np.float32)}
    if kind == "npy":
        p = tmp / "w.npy"
        np.save(p, good["conv.weight"])
    elif kind == "declares-50MB":
        _zip_member(p, "conv.weight.npy", b"\0" * (50 << 20))
    elif kind == "bzip2":
        _zip_member(p, "conv.weight.npy", _npy_bytes(good["conv.weight"]), zipfile.ZIP_BZIP2)
    elif kind == "encrypted":
        _zip_member(p, "conv.weight.npy", _npy_bytes(good["conv.weight"]), zipfile.ZIP_STORED, encrypted=True)
    elif kind == "beyond-float32":
        np.savez(p, **{**good, "conv.weight": np.full((3, 2, 3, 3), 1e39)})
    elif kind == "unused-key":
        np.savez(p, **good, stray=np.zeros(1 << 10))
    elif kind == "fifo":
        p = tmp / "w.fifo"
        os.mkfifo(p)
    elif kind == "missing":
        p = tmp / "nope.npz"
    return p


WEIGHTS = {
    "npy": r"weights .*w\.npy is an \.npy file \(one array\); netc reads an \.npz of named arrays",
    "declares-50MB": r'weights "conv.weight" declares 52,428,800 bytes; shape \[3, 2, 3, 3\] needs at most',
    "bzip2": r'weights "conv.weight" in .* uses zip compression method 12',
    "encrypted": r'weights "conv.weight" in .* is encrypted',
    "beyond-float32": r'weights "conv.weight" holds NaN or infinite values, or values beyond float32',
    "unused-key": r'weights file has a key "stray" that no layer of this network uses',
    "fifo": r"cannot read weights .*w\.fifo: not a regular file",
    "missing": r"cannot read weights .*nope\.npz: no such file",
}


def _input(tmp, kind):
    if kind == "scalar":
        np.save(tmp / "x.npy", np.float32(1))
        return tmp / "x.npy", NET
    if kind == "declares-112GiB":
        with open(tmp / "x.npy", "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                                    "shape": (1, 2, 173_000, 173_000)})
            f.write(b"\0" * 64)
        return tmp / "x.npy", NET
    if kind == "fifo":
        os.mkfifo(tmp / "x.npy")
        return tmp / "x.npy", NET
    Image.new("RGB", (40, 30)).save(tmp / "cat.jpg")
    if kind == "image-into-2d":
        return tmp / "cat.jpg", "network m\ninput data: [1, 3]\nReLU\n"
    return tmp / "cat.jpg", "network m\ninput data: [1, 3, 1, 200000]\nReLU\n"    # elongated


INPUTS = {
    "scalar": r"x\.npy holds a single number",
    "declares-112GiB": r"x\.npy declares \[1, 2, 173000, 173000\] float32 \(239,432,000,000 bytes\) but holds 64 bytes",
    "fifo": r"cannot read input .*x\.npy: not a regular file",
    "image-into-2d": r"the network input has shape \[1, 3\]; images feed a 4-D input",
    "elongated": r"image .*cat\.jpg \(40x30\) would be resized to 200000x150000 .* too elongated",
}


def _fails(args, pattern, capsys):
    rc = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    assert re.search(pattern, err), err


@pytest.mark.parametrize("kind", sorted(WEIGHTS))
def test_bad_weights_files(kind, tmp_path, capsys):
    (tmp_path / "m.net").write_text(NET)
    _fails(["run", tmp_path / "m.net", "--weights", _weights(tmp_path, kind)], WEIGHTS[kind], capsys)


@pytest.mark.parametrize("kind", sorted(INPUTS))
def test_bad_inputs(kind, tmp_path, capsys):
    path, text = _input(tmp_path, kind)
    (tmp_path / "m.net").write_text(text)
    _fails(["run", tmp_path / "m.net", "--input", path], INPUTS[kind], capsys)


LABELS = {"missing": (None, r"cannot read labels .*: no such file"),
          "not-utf8": (b"\xff\xfe\x00zero\n", r"labels file .* is not UTF-8 text"),
          "directory": ("dir", r"cannot read labels .*: not a regular file"),
          "device": ("/dev/zero", r"cannot read labels /dev/zero: not a regular file")}


@pytest.mark.parametrize("kind", sorted(LABELS))
def test_bad_labels_are_refused_before_compiling(kind, tmp_path, capsys, monkeypatch):
    from netc.compiler.network import Network
    monkeypatch.setattr(Network, "compile", lambda *a, **k: pytest.fail("compiled before checking the labels"))
    (tmp_path / "m.net").write_text(NET)
    content, pattern = LABELS[kind]
    path = tmp_path / "labels.txt"
    if content == "dir":
        path.mkdir()
    elif content == "/dev/zero":
        path = "/dev/zero"
    elif content is not None:
        path.write_bytes(content)
    _fails(["run", tmp_path / "m.net", "--top", "2", "--labels", path], pattern, capsys)


@pytest.mark.parametrize("text, pattern", [
    ("network m\ninput data: [1, 3, 8, " + "9" * 5000 + "]\n", r"m\.net:2:23: error: number with 5000 characters is too large"),
    ("network m\ninput data: [1, 3, 8, 8]\nLRN(k=1e309)\n", r'LRN parameter "k" must be a finite number, got inf'),
    ("network m\ninput data: [1, 3, 8, 8]\nReLU(negative_slope=1e309)\n", r'ReLU parameter "negative_slope" must be a finite number'),
    ("network m\ninput data: [1, 1, 8, 8]\nrepeat 1500 { Deconvolution(num_output=1, kernel_size=1, stride=1000) }\n",
     r'would produce a tensor with a dimension over 2\^48'),
])
def test_numbers_past_any_real_model_are_located_errors(text, pattern, tmp_path, capsys):
    (tmp_path / "m.net").write_text(text)
    _fails(["analyze", tmp_path / "m.net"], pattern, capsys)


def test_huge_integer_in_a_prototxt(tmp_path, capsys):
    (tmp_path / "m.prototxt").write_text('input: "d"\ninput_shape { dim: 1 dim: ' + "7" * 5000 + " }\n")
    _fails(["analyze", tmp_path / "m.prototxt"], r"m\.prototxt:2:27: error: number with 5000 characters", capsys)


@pytest.mark.parametrize("args, option", [(["run", "lenet", "--seed", "-5"], "--seed"), (["run", "lenet", "--top", "-2"], "--top"),
                                          (["run", "lenet", "--batch", "0"], "--batch"),
                                          (["build", "lenet", "--batch", "0", "-o", "x"], "--batch"),
                                          (["draw", "lenet", "--batch", "0", "-o", "x.svg"], "--batch"),
                                          (["bench", "lenet", "--iters", "0"], "--iters")])
def test_out_of_range_options_exit_2(args, option, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2 and f"argument {option}:" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and re.fullmatch(r"netc \d+\.\d+\.\d+\n", capsys.readouterr().out)


def test_blocks_that_double_are_counted_once_per_call_and_refused_fast(tmp_path, capsys):
    """40 blocks, each calling the one before twice: 2^40 layers from 1 kB."""
    import time
    from netc.compiler import netlang
    lines = ["network x", "input data: [1, 3, 8, 8]", "block b0() { ReLU }"]
    lines += [f"block b{k}() {{ b{k - 1}() b{k - 1}() }}" for k in range(1, 41)] + ["b40()"]
    (tmp_path / "m.net").write_text("\n".join(lines) + "\n")
    t0 = time.perf_counter()
    _fails(["analyze", tmp_path / "m.net"], rf"error: the network expands to more than {netlang.MAX_LAYERS:,} layers", capsys)
    assert time.perf_counter() - t0 < 5


@pytest.mark.parametrize("kind, pattern", [
    ("nested", r"cannot read tuning file .*: RecursionError"),
    ("fifo", r"cannot read tuning file .*: not a regular file"),
    ("huge", r"tuning file .* is 16,777,217 bytes; a tuning cache is far smaller"),
])
def test_bad_tuning_files(kind, pattern, tmp_path, capsys):
    path = tmp_path / "tiles.json"
    if kind == "nested":
        path.write_text("[" * 5000 + "]" * 5000)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.write_bytes(b" " * ((16 << 20) + 1))
    _fails(["build", "lenet", "--target", "cuda", "--tiles", path, "-o", tmp_path / "out"], pattern, capsys)


def test_cuda_build_arch_and_simulator_are_plain_errors(tmp_path, capsys, monkeypatch):
    _fails(["build", "lenet", "--target", "cuda", "--arch", "sm_999", "-o", tmp_path / "o"],
           r'bad --arch "sm_999": expected sm_XY of a CUDA GPU', capsys)
    monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "1")
    _fails(["build", "lenet", "--target", "cuda", "-o", tmp_path / "o"],
           r"compiles PTX with NVVM, which the CUDA simulator replaces", capsys)


def test_fmt_says_it_formats_net_files(tmp_path, capsys):
    (tmp_path / "m.prototxt").write_text('input: "d"\ninput_shape { dim: 1 }\n')
    _fails(["fmt", tmp_path / "m.prototxt"], r"netc fmt formats \.net files; m\.prototxt is not one", capsys)
