"""Resources and inputs that must not take netc down: plans larger than memory refused before
anything is allocated, exact integers for absurd sizes, images of every mode (converted or
refused by name), weights files that are not what they claim, huge nested repeats failing fast,
bit-identical CPU runs across processes, and `netc zoo list` one line per model at 80 columns.
"""
from __future__ import annotations

import json
import os
import re
import resource
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from netc.cli import main
from netc.compiler import netlang
from netc.compiler.errors import NetcError
from netc.compiler.network import loads, zoo_names
from netc.runtime import memory

HUGE = "input data: [1, 3, 100000, 100000]\nConvolution(num_output=8, kernel_size=3, pad=1)\nReLU\n"


def _rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


# ---- memory: refuse before allocating ----------------------------------------------------------
def test_run_refuses_a_plan_larger_than_memory(tmp_path, capsys):
    """A 1x3x100000x100000 input at batch 64 needs ~27 TiB of activations: `netc run` says so
    (needed vs available, a hint) and exits 2 quickly, without having allocated it."""
    path = tmp_path / "huge.net"
    path.write_text(HUGE)
    rss, t0 = _rss_bytes(), time.perf_counter()
    assert main(["run", str(path), "--batch", "64"]) == 2
    elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    m = re.search(r"needs ([\d,.]+) GiB \(([\d,]+) bytes: activation arena .*\) but only [\d,.]+ GiB "
                  r"\(([\d,]+) bytes\) of memory is available; try a smaller --batch \(now 64\)", err)
    assert m, err
    need, avail = int(m[2].replace(",", "")), int(m[3].replace(",", ""))
    # the input and the conv output (ReLU in place) are both alive during the conv
    assert need >= 4 * 64 * (3 + 8) * 100_000 ** 2 > avail > 0
    assert elapsed < 20 and _rss_bytes() - rss < 2 ** 30


def test_run_refusal_at_batch_1_says_the_network_is_too_large(tmp_path):
    path = tmp_path / "huge.net"
    path.write_text(HUGE)
    r = subprocess.run([sys.executable, "-m", "netc", "run", str(path)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: running this network needs ")
    assert "too large for this machine even at batch 1" in r.stderr


def test_weights_too_large_are_refused_before_they_are_made(tmp_path, capsys):
    """A 100000x100000-input InnerProduct has 3*10^10*1000 weights: refused before random()."""
    path = tmp_path / "fc.net"
    path.write_text("input data: [1, 3, 100000, 100000]\nInnerProduct(num_output=1000)\n")
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"({4 * (3 * 10 ** 10 * 1000 + 1000):,} bytes: weights " in err


def test_lowered_weights_are_counted_before_they_are_made(monkeypatch, capsys, tmp_path):
    """Winograd keeps 6x6 tiles of each 3x3 kernel (4x the file's weights): a machine with room
    for the weights but not for their lowered copies gets a clear refusal, not the OOM killer."""
    path = tmp_path / "w.net"
    path.write_text("input data: [1, 256, 20, 20]\nConvolution(num_output=256, kernel_size=3, pad=1)\n"
                    "BatchNorm Scale(bias_term=true) ReLU\n")
    weights = 4 * 256 * 256 * 9
    monkeypatch.setattr(memory, "available_bytes", lambda *a, **k: 2 * weights)
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "lowered weights (folded, Winograd-transformed) need more than" in err and "Traceback" not in err
    monkeypatch.setattr(memory, "available_bytes", lambda *a, **k: 8 * weights)
    assert main(["run", str(path)]) == 0


@pytest.mark.parametrize("files, expected", [
    ({"meminfo": "MemTotal: 100 kB\nMemAvailable:    2048 kB\n"}, 2048 * 1024),
    ({"meminfo": "MemAvailable: 2048 kB\n", "cg/memory.max": "max\n", "cg/memory.current": "5\n"}, 2048 * 1024),
    ({"meminfo": "MemAvailable: 2048 kB\n", "cg/memory.max": "1000000\n", "cg/memory.current": "400000\n"}, 600000),
    ({"cg/memory/memory.limit_in_bytes": "5000\n", "cg/memory/memory.usage_in_bytes": "1000\n"}, 4000),
    ({"cg/memory/memory.limit_in_bytes": str(2 ** 63 - 4096) + "\n"}, None),   # v1 "unlimited"
    ({"meminfo": "MemTotal: 100 kB\n"}, None),
    ({}, None),
    # this process' own group, found through /proc/self/cgroup; page cache is not "used"
    ({"proc": "0::/job/7\n", "cg/job/7/memory.max": "9000\n", "cg/job/7/memory.current": "5000\n",
      "cg/job/7/memory.stat": "anon 1000\ninactive_file 3000\n"}, 7000),
    ({"proc": "4:memory:/a/b\n3:cpu:/\n", "cg/memory/a/b/memory.limit_in_bytes": "800\n",
      "cg/memory/a/b/memory.usage_in_bytes": "300\n", "meminfo": "MemAvailable: 1 kB\n"}, 500),
    ({"proc": "0::/x\n", "cg/x/memory.max": "100\n", "cg/memory.max": "50\n"}, 50),  # the tighter one
])
def test_available_memory_sources(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert memory.available_bytes(tmp_path / "meminfo", tmp_path / "cg", tmp_path / "proc") == expected


def test_require_compares_and_explains():
    memory.require({"a": 10, "b": 5}, batch=4, available=15)
    with pytest.raises(NetcError, match=r"needs 0\.00 GiB \(16 bytes: a 0\.00 GiB, b 0\.00 GiB\) but only "
                                        r"0\.00 GiB \(15 bytes\).*smaller --batch \(now 4\)"):
        memory.require({"a": 11, "b": 5}, batch=4, available=15)


def test_this_machine_reports_its_memory():
    """CI runs on Linux: /proc/meminfo must be readable, so the check is live there."""
    avail = memory.available_bytes()
    assert avail is not None and 2 ** 20 < avail < 2 ** 50


# ---- absurd sizes: exact integers ---------------------------------------------------------------
def test_absurd_odd_sizes_are_exact_beyond_float_precision(tmp_path, capsys):
    """Odd sizes, so that the totals have low bits a float64 would drop: the JSON must hold the
    hand-computed integers, which float() cannot represent."""
    n, h, w, co, fc = 7, 99_999, 100_003, 63, 4000   # macc = n*co*h*w*(27 + fc): odd, > 2^53
    path = tmp_path / "odd.net"
    path.write_text(f"input data: [{n}, 3, {h}, {w}]\nConvolution(num_output={co}, kernel_size=3, pad=1)\n"
                    f"InnerProduct(num_output={fc})\n")
    assert main(["analyze", str(path), "--format", "json", "--batch", str(n)]) == 0
    d = json.loads(capsys.readouterr().out)
    conv_macc = n * co * h * w * 27
    fc_macc = n * fc * co * h * w
    assert d["totals"]["macc"] == conv_macc + fc_macc
    assert d["totals"]["params"] == co * 27 + co + fc * co * h * w + fc
    assert d["totals"]["macc"] > 2 ** 53 and int(float(d["totals"]["macc"])) != d["totals"]["macc"]
    assert d["layers"][1]["macc"] == conv_macc and d["layers"][2]["macc"] == fc_macc


# ---- images: every mode converted or refused by name ------------------------------------------
IMG_NET = "input data: [1, {c}, 8, 8]\nReLU\n"   # images are >= 0, so the output is the input blob


@pytest.fixture(scope="module")
def img_nets(tmp_path_factory):
    d = tmp_path_factory.mktemp("img_nets")
    for c in (1, 3):
        (d / f"c{c}.net").write_text(IMG_NET.format(c=c))
    return d


def _run_image(nets, channels, image, tmp_path) -> np.ndarray:
    out = tmp_path / "y.npy"
    assert main(["run", str(nets / f"c{channels}.net"), "--input", str(image), "--output", str(out)]) == 0
    return np.load(out)[0]


RNG = np.random.default_rng(5)
RGB = RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)
GRAY = RNG.integers(0, 256, (8, 8), dtype=np.uint8)
ALPHA = RNG.integers(0, 256, (8, 8), dtype=np.uint8)
WIDE = RNG.integers(0, 65536, (8, 8), dtype=np.uint16)
BITS = RNG.integers(0, 2, (8, 8)).astype(bool)
CMYK = RNG.integers(0, 256, (8, 8, 4), dtype=np.uint8)


def _bgr(rgb: np.ndarray) -> np.ndarray:
    return rgb[:, :, ::-1].transpose(2, 0, 1).astype(np.float32)


def _gray3(g: np.ndarray) -> np.ndarray:
    return np.repeat(g[None].astype(np.float32), 3, axis=0)


def _palette_image():
    img = Image.fromarray(RGB).quantize(colors=16)
    pal = np.array(img.getpalette()[:48], np.uint8).reshape(16, 3)
    return img, pal[np.asarray(img)]


def _cmyk_rgb(c):
    """Pillow's CMYK -> RGB, written out: (255 - C) * (255 - K) / 255 per channel."""
    c = c.astype(np.float64)
    return np.round((255 - c[:, :, :3]) * (255 - c[:, :, 3:]) / 255)


MODES = {  # name -> (writer, channels, expected network input, tolerance)
    "L": (lambda p: Image.fromarray(GRAY).save(p), 3, lambda: _gray3(GRAY), 0),
    "LA": (lambda p: Image.fromarray(np.dstack([GRAY, ALPHA]), "LA").save(p), 3, lambda: _gray3(GRAY), 0),
    "RGBA": (lambda p: Image.fromarray(np.dstack([RGB, ALPHA]), "RGBA").save(p), 3, lambda: _bgr(RGB), 0),
    "P": (lambda p: _palette_image()[0].save(p), 3, lambda: _bgr(_palette_image()[1]), 0),
    "I;16": (lambda p: Image.fromarray(WIDE).save(p), 3, lambda: _gray3((WIDE >> 8).astype(np.uint8)), 0),
    "1": (lambda p: Image.fromarray(BITS).save(p), 3, lambda: _gray3(BITS.astype(np.uint8) * 255), 0),
    "CMYK": (lambda p: Image.fromarray(CMYK, "CMYK").save(p.with_suffix(".tiff")), 3,
             lambda: _cmyk_rgb(CMYK)[:, :, ::-1].transpose(2, 0, 1), 1),
    "RGB->1ch": (lambda p: Image.fromarray(RGB).save(p), 1,
                 lambda: (RGB @ np.array([0.299, 0.587, 0.114]))[None], 1),
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_image_modes_become_the_models_channels(mode, img_nets, tmp_path, capsys):
    write, channels, expected, tol = MODES[mode]
    path = tmp_path / "img.png"
    write(path)
    if not path.exists():
        path = path.with_suffix(".tiff")
    src = Image.open(path)
    assert src.mode == mode.split("->")[0] if "->" in mode else src.mode == mode
    y = _run_image(img_nets, channels, path, tmp_path)
    assert y.shape == (channels, 8, 8)
    assert np.abs(y - expected()).max() <= tol
    assert "Traceback" not in capsys.readouterr().err


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a size and holds no pixels: what a decompression bomb looks like to
    a reader before it decodes."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _encoded(fmt: str) -> bytes:
    import io
    buf = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


BAD_IMAGES = {  # file name -> (bytes or None for "do not create", message pattern)
    "truncated.png": (lambda: _encoded("PNG")[:3000], r"cannot read image .*truncated\.png: (?i:.*(truncated|broken))"),
    "truncated.jpg": (lambda: _encoded("JPEG")[:600], r"cannot read image .*truncated\.jpg: (?i:.*truncated)"),
    "text.png": (lambda: b"this is not an image\n", r"cannot read image .*text\.png: cannot identify image file"),
    "empty.png": (lambda: b"", r"cannot read image .*empty\.png: cannot identify image file"),
    "missing.png": (None, r"cannot read image .*missing\.png: no such file"),
    "bomb.png": (lambda: _png_header_only(100_000, 100_000),
                 r"refusing image .*bomb\.png: Image size \(10000000000 pixels\) exceeds limit"),
    "float.tiff": (lambda: _tiff_float(), r"cannot use image .*float\.tiff \(mode F\): floating-point pixels"),
}


def _tiff_float() -> bytes:
    import io
    buf = io.BytesIO()
    Image.fromarray(np.ones((8, 8), np.float32)).save(buf, "TIFF")
    return buf.getvalue()


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_bad_images_are_refused_by_name(name, img_nets, tmp_path, capsys):
    make, pattern = BAD_IMAGES[name]
    path = tmp_path / name
    if make is not None:
        path.write_bytes(make())
    assert main(["run", str(img_nets / "c3.net"), "--input", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.match(r"error: " + pattern, err), err


def test_bomb_warning_range_is_an_error_too(img_nets, tmp_path, capsys, monkeypatch):
    """Between MAX_IMAGE_PIXELS and twice that, Pillow only warns; netc refuses."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40)   # 8x8 = 64 pixels: in the warning range
    path = tmp_path / "small_bomb.png"
    Image.fromarray(RGB).save(path)
    assert main(["run", str(img_nets / "c3.net"), "--input", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: refusing image {path}: Image size (64 pixels) exceeds limit of 40")


def test_bomb_through_the_real_cli(img_nets, tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(50_000, 50_000))
    r = subprocess.run([sys.executable, "-m", "netc", "run", str(img_nets / "c3.net"), "--input", str(path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"error: refusing image {path}: Image size (2500000000 pixels)")


# ---- weights files that are not what they claim --------------------------------------------------
class _Payload:
    """Unpickling this would create the file `target`."""
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_weights_files_never_unpickle(tmp_path, capsys):
    net = tmp_path / "w.net"
    net.write_text("input data: [1, 3, 4, 4]\nfc: InnerProduct(num_output=2)\n")
    target = tmp_path / "PWNED"
    bad = tmp_path / "pickled.npz"
    with open(bad, "wb") as f:
        np.savez(f, **{"fc.weight": np.array([_Payload(str(target))], dtype=object),
                       "fc.bias": np.zeros(2, np.float32)})
    assert main(["run", str(net), "--weights", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot read weights {bad}: ") and "allow_pickle" in err
    assert not target.exists()
    truncated = tmp_path / "truncated.npz"
    good = tmp_path / "good.npz"
    np.savez(good, **{"fc.weight": np.ones((2, 48), np.float32), "fc.bias": np.zeros(2, np.float32)})
    truncated.write_bytes(good.read_bytes()[:100])
    assert main(["run", str(net), "--weights", str(truncated)]) == 2
    assert capsys.readouterr().err.startswith(f"error: cannot read weights {truncated}: ")
    assert main(["run", str(net), "--weights", str(good)]) == 0


# ---- huge nested repeats fail fast ---------------------------------------------------------------
def test_nested_repeats_with_variables_fail_fast(tmp_path, capsys):
    """10^10 layers from two nested `repeat i in` loops: a located error well under a second
    (it used to elaborate 2M layers first, ~29 s)."""
    path = tmp_path / "nested.net"
    path.write_text("input data: [1, 3, 32, 32]\nrepeat i in 100000 { repeat j in 100000 { ReLU } }\n")
    t0 = time.perf_counter()
    assert main(["analyze", str(path)]) == 2
    assert time.perf_counter() - t0 < 1.0
    err = capsys.readouterr().err
    assert err.startswith(f"{path}:2:13: error: repeat 100000 would expand to more than "
                          f"{netlang.MAX_LAYERS} layers (at least 10,000,000,001)")


def test_growing_repeats_fail_fast_too(tmp_path, capsys):
    """Passes that differ (the inner count is the outer variable) are counted pass by pass,
    without making layers: the cap is crossed in a fraction of a second."""
    path = tmp_path / "grow.net"
    path.write_text("input data: [1, 3, 8, 8]\nrepeat i in 100000 { repeat i { ReLU } }\n")
    t0 = time.perf_counter()
    assert main(["analyze", str(path)]) == 2
    assert time.perf_counter() - t0 < 1.0
    crossed = next(1 + k * (k + 1) // 2 for k in range(10 ** 6) if 1 + k * (k + 1) // 2 > netlang.MAX_LAYERS)
    assert capsys.readouterr().err.startswith(
        f"{path}:2:13: error: repeat 100000 would expand to more than {netlang.MAX_LAYERS} layers "
        f"(at least {crossed:,})")


def test_counting_pass_counts_every_zoo_network_exactly():
    """The counting pass must not give up on real files (it resolves no names, so `<-` and
    block instances are no obstacle): its count equals the layers elaboration makes."""
    zoo = Path(netlang.__file__).resolve().parent.parent / "zoo"
    files = sorted(zoo.glob("*.net"))
    assert len(files) >= 19
    for f in files:
        text = f.read_text(encoding="utf-8")
        tree = netlang.parse_tree(text, str(f))
        spec = netlang.load(text, str(f))
        counter = netlang.Elaborator(text, str(f), counting=True)
        counter.blocks = {str(st.children[0]): st for st in tree.children
                          if hasattr(st, "data") and st.data == "block_def"}
        counter.stmts(tree.children, netlang.Scope("", None, None, {}), None, allow_defs=True)
        assert counter.count == len(spec.layers), f.name


@pytest.mark.parametrize("loop, at_least", [
    ("repeat i in 100000 { stage(30) <- a\n ReLU <- b }", 1 + 3 + 32 * 100000),   # alike passes
    ("repeat i in 3000 { stage(i) <- a }",                                             # growing passes
     next(4 + k * (k + 1) // 2 for k in range(3000) if 4 + k * (k + 1) // 2 > netlang.MAX_LAYERS)),
])
def test_huge_repeat_after_references_fails_fast(tmp_path, capsys, loop, at_least):
    """References (`<-`, block instances) before and inside the loop do not stop the count."""
    path = tmp_path / "refs.net"
    path.write_text("input data: [1, 3, 8, 8]\na: ReLU\nb: ReLU <- data\nEltwise <- a, b\n"
                    "block stage(n) { x: ReLU <- in\n repeat n { ReLU } }\n" + loop + "\n")
    t0 = time.perf_counter()
    assert main(["analyze", str(path)]) == 2
    assert time.perf_counter() - t0 < 1.0
    assert capsys.readouterr().err.startswith(
        f"{path}:7:13: error: repeat {loop.split()[3]} would expand to more than {netlang.MAX_LAYERS} "
        f"layers (at least {at_least:,})")


@pytest.mark.parametrize("body, layers", [
    ("repeat i in 4 { repeat 400 // (i + 1) { ReLU } }", 1 + 400 + 200 + 133 + 100),
    ("block b(n) { repeat n { ReLU } }\nrepeat i in 4 { b(400 // (i + 1)) }", 1 + 400 + 200 + 133 + 100),
    ("repeat i in 3 { repeat j in 300 - 100 * i { ReLU } }", 1 + 300 + 200 + 100),
])
def test_shrinking_repeats_are_not_refused(monkeypatch, body, layers):
    """A first pass larger than the rest must not be taken for every pass: these stay under a
    (lowered) cap that 4x the first pass would break."""
    monkeypatch.setattr(netlang, "MAX_LAYERS", 1000)
    net = loads("input data: [1, 3, 8, 8]\n" + body + "\n", path="shrink.net")
    assert net.graph.number_of_nodes() == layers


@pytest.mark.parametrize("body, where, at_least", [
    ("repeat i in 600 { Convolution(num_output=i + 1, kernel_size=1) ReLU }", "2:13", 1201),
    ("repeat 10 { repeat i in 3 { repeat 50 { ReLU } } }", "2:8", 1501),
    ("block b(n) { repeat n { ReLU } }\nrepeat 30 { b(40) }", "3:8", 1201),
])
def test_uniform_repeats_are_refused_after_one_pass(monkeypatch, body, where, at_least):
    monkeypatch.setattr(netlang, "MAX_LAYERS", 1000)
    with pytest.raises(NetcError) as e:
        loads("input data: [1, 3, 8, 8]\n" + body + "\n", path="u.net")
    assert f"{e.value.loc.line}:{e.value.loc.column}" == where
    assert f"more than 1000 layers (at least {at_least:,})" in e.value.message


# ---- determinism ---------------------------------------------------------------------------------
def test_cpu_run_output_bits_identical_across_processes(tmp_path):
    """Two fresh interpreters (different hash seeds, separate kernel caches, so each compiles
    its own machine code) produce the same output bytes for lenet at batch 8."""
    outs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "NETC_CACHE": str(tmp_path / f"cache{seed}")}
        out = tmp_path / f"y{seed}.npy"
        r = subprocess.run([sys.executable, "-m", "netc", "run", "lenet", "--batch", "8", "--output", str(out)],
                           capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr
        outs.append(np.load(out))
    assert outs[0].shape == (8, 10) and np.allclose(outs[0].sum(axis=1), 1, atol=1e-5)
    assert outs[0].tobytes() == outs[1].tobytes()


# ---- netc zoo list -------------------------------------------------------------------------------
def test_zoo_list_one_line_per_model_at_80_columns(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["zoo", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = zoo_names()
    assert len(names) >= 19 and len(lines) == len(names) + 4   # top rule, header, rule, rows, bottom
    assert all(len(l) <= 80 for l in lines)
    rows = [l for l in lines if l.startswith("│")]
    assert [r.split("│")[1].strip() for r in rows] == names
    vgg16 = next(r for r in rows if "vgg16" in r).split("│")
    assert vgg16[2].strip() == "138,357,544" and vgg16[3].strip() == "15.47G"
    assert vgg16[5].strip().startswith("Simonyan & Zisserman")   # the source column, cut to fit
    assert "source" in lines[1]


def test_zoo_list_drops_the_source_column_when_narrow(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "50")
    assert main(["zoo", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "source" not in lines[1] and len(lines) == len(zoo_names()) + 4
