"""netc report: one self-contained page, checked as text and in a real headless Chromium."""
from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

import netc
from netc.cli import main
from netc.compiler import html_report
from netc.compiler.report import human_bytes

from conftest import REFS
from hostile import HOSTILE_NAMES, decoded, hostile_prototxt, needs_dot

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0"]


class Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> Tags:
    p = Tags()
    p.feed(page)
    return p


def write_report(tmp_path: Path, model: Path, name: str = "r.html") -> Path:
    out = tmp_path / name
    assert main(["report", str(model), "-o", str(out)]) == 0
    return out


def assert_self_contained(page: str) -> None:
    tags = parse(page).tags
    for tag, attrs in tags:
        assert tag not in ("link", "iframe", "object", "embed", "img", "base"), tag
        for key in ("src", "href", "xlink:href", "action", "srcset"):
            assert key not in attrs, (tag, key, attrs[key])
    assert [t for t, _ in tags].count("script") == 1
    assert "@import" not in page and "url(" not in page
    rest = re.sub(r'xmlns(:\w+)?="http://www\.w3\.org/[^"]*"', "", page)
    assert "http:" not in rest and "https:" not in rest and "//" not in re.sub(r"<script>.*?</script>", "", rest, flags=re.S)


# ---- the page as text -------------------------------------------------------------------------
@needs_dot
def test_report_is_one_self_contained_page(tmp_path):
    page = write_report(tmp_path, REFS / "resnet-50.prototxt").read_text(encoding="utf-8")
    assert_self_contained(page)
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    analysis = netc.load(REFS / "resnet-50.prototxt").analyze()
    p = parse(page)
    assert sum(1 for t, _ in p.tags if t == "svg") == 4           # diagram + three plots
    rows = [a for t, a in p.tags if t == "tr" and "data-i" in a]
    assert len(rows) == len(analysis.layers)
    text = "".join(p.text)
    for r in analysis.layers:
        assert r.name in text
    assert f"{analysis.totals['macc']:,}" in text and f"{analysis.totals['params']:,}" in text
    assert f"peak {human_bytes(analysis.totals['peak_activation_bytes'])}" in text


@pytest.mark.parametrize("model", ["googlenet", "resnet-50", "inceptionv4"])
def test_memory_curve_peaks_at_the_planned_peak(model):
    analysis = netc.load(REFS / f"{model}.prototxt").analyze()
    curve = html_report.live_bytes(analysis)
    assert len(curve) == sum(r.forward for r in analysis.layers)
    assert max(curve) == analysis.totals["peak_activation_bytes"]
    assert all(c >= r.activation_bytes for c, r in zip(curve, (r for r in analysis.layers if r.forward)))


def test_hostile_names_stay_text(tmp_path):
    src = tmp_path / "hostile.prototxt"
    src.write_text(hostile_prototxt())
    page = write_report(tmp_path, src).read_text(encoding="utf-8")
    assert_self_contained(page)
    p = parse(page)
    assert not [t for t, _ in p.tags if t == "b"]
    text = "".join(p.text)
    for name in HOSTILE_NAMES:
        assert html_report.visible(decoded(name)) in text, name
    assert "<script>alert(1)</script>" in text


def test_report_without_graphviz_still_written(tmp_path, monkeypatch, capsys):
    src = tmp_path / "hostile.prototxt"
    src.write_text(hostile_prototxt())
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    page = write_report(tmp_path, src).read_text(encoding="utf-8")
    assert "report has no diagram" in capsys.readouterr().err
    assert "apt-get install graphviz" in page and 'id="layers"' in page


def test_report_user_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing.prototxt"), "-o", str(tmp_path / "x.html")]) == 2
    src = tmp_path / "hostile.prototxt"
    src.write_text(hostile_prototxt())
    assert main(["report", str(src), "-o", str(tmp_path / "no" / "such" / "dir.html")]) == 2
    assert "cannot write" in capsys.readouterr().err


# ---- the page in a browser --------------------------------------------------------------------
def chromium() -> str:
    for path in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if path and os.path.exists(path):
            return path
    if os.environ.get("NETC_REQUIRE_BROWSER", "") not in ("", "0"):
        pytest.fail("NETC_REQUIRE_BROWSER is set but Chromium is missing (apt-get install chromium)")
    pytest.skip("Chromium not installed (apt-get install chromium); set NETC_REQUIRE_BROWSER=1 to require it")


def run_browser(exe: str, *args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=90)
    console = [l for l in proc.stderr.splitlines() if ":CONSOLE" in l or "Uncaught" in l]
    assert not console, "\n".join(console)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


@needs_dot
def test_report_renders_in_chromium(tmp_path):
    exe = chromium()
    from PIL import Image
    analysis = netc.load(REFS / "resnet-50.prototxt").analyze()
    out = write_report(tmp_path, REFS / "resnet-50.prototxt")

    dom = run_browser(exe, "--dump-dom", out.as_uri() + "#sort=macc").stdout
    assert 'data-ready="1"' in dom                       # the script ran to its end
    assert dom.count("<svg") == 4 and 'class="diagram"' in dom and 'id="layers"' in dom
    order = [int(i) for i in re.findall(r'<tr data-i="(\d+)"', dom)]
    assert sorted(order) == list(range(len(analysis.layers)))
    maccs = [analysis.layers[i].macc for i in order]
    assert maccs == sorted(maccs, reverse=True)          # sorted by the hash, as a header click does
    assert 'aria-sort="descending"' in dom

    shot = tmp_path / "shot.png"
    run_browser(exe, f"--screenshot={shot}", "--window-size=1400,2000", out.as_uri())
    with Image.open(io.BytesIO(shot.read_bytes())) as im:
        im = im.convert("RGB")
        assert im.size == (1400, 2000)
        assert len(im.getcolors(1 << 20)) > 50          # text, plots and diagram, not a blank page


def test_hostile_report_in_chromium(tmp_path):
    exe = chromium()
    src = tmp_path / "hostile.prototxt"
    src.write_text(hostile_prototxt())
    out = write_report(tmp_path, src)
    dom = run_browser(exe, "--dump-dom", out.as_uri() + "#sort=name-asc").stdout
    assert 'data-ready="1"' in dom
    tags = [t for t, _ in parse(dom).tags]
    assert tags.count("script") == 1 and "b" not in tags and "img" not in tags
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
