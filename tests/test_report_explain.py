"""`netc report --explain IMAGE`: the Explain gallery, one inline PNG per method, its names as text,
checked as text, as PNGs (Pillow) and in a real headless Chromium (images decoded)."""
from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from netc.cli import main
from netc.cli.draw import REPORT_METHODS

from test_report import assert_self_contained, chromium, parse, run_browser

EVIL = "<script>alert(1)</script>"

# 12x12 input, two convolutions, five classes: every method runs in well under a second
NET = f"""network "tiny {EVIL}"
input data: [1, 3, 12, 12]
"c1{EVIL}": Convolution(num_output=6, kernel_size=3, pad=1) ReLU
Pooling(pool=MAX, kernel_size=2, stride=2)
"c2&<b>x</b>": Convolution(num_output=8, kernel_size=3) ReLU
fc: InnerProduct(num_output=5)
prob: Softmax
"""
SIDE = 12
STRIPS = {14 * n + 6 for n in range(1, 5)}          # pictures.png's caption strip: 1 to 4 lines


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("explain_report")
    model, img, out = tmp / "tiny.net", tmp / "x.png", tmp / "r.html"
    model.write_text(NET, encoding="utf-8")
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)).save(img)
    assert main(["report", str(model), "--explain", str(img), "-o", str(out)]) == 0
    return out


def figures(page: str) -> list[tuple[str, bytes, str]]:
    """(alt, PNG bytes, caption text) of every gallery figure."""
    found = re.findall(r'<figure><img alt="([^"]*)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">'
                       r"<figcaption>(.*?)</figcaption></figure>", page)
    return [(alt, base64.b64decode(data, validate=True), caption) for alt, data, caption in found]


def test_one_png_per_method_of_the_expected_size(report):
    page = report.read_text(encoding="utf-8")
    figs = figures(page)
    assert [alt for alt, _, _ in figs] == list(REPORT_METHODS)
    assert len([t for t, _ in parse(page).tags if t == "img"]) == len(REPORT_METHODS)
    for method, data, _ in figs:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()                                   # a whole, valid PNG
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "PNG" and im.mode == "RGB"
            w, h = im.size
        if method in ("features", "filters"):             # 6 maps / 6 kernels: tiles of 48, 3 a row, 2 rows
            assert w == 146 * 3 and h - 97 * 3 in STRIPS, (method, w, h)
        else:                                             # the 12x12 input, enlarged to >= 320 px, square
            assert w % SIDE == 0 and w >= 320 and h - w in STRIPS, (method, w, h)
    # the page stays self-contained once its data-URI pictures are set aside
    assert_self_contained(re.sub(r"<img [^>]*>", "", page))


def test_names_are_escaped_text(report):
    page = report.read_text(encoding="utf-8")
    assert EVIL not in page and "<b>x</b>" not in page
    captions = {alt: caption for alt, _, caption in figures(page)}
    assert "layer c1&lt;script&gt;alert(1)&lt;/script&gt;" in captions["features"]
    assert "layer c1&lt;script&gt;alert(1)&lt;/script&gt;" in captions["filters"]
    assert "layer c2&amp;&lt;b&gt;x&lt;/b&gt;" in captions["gradcam"]
    text = "".join(parse(page).text)
    for method in REPORT_METHODS:
        assert method in text
    for method in ("saliency", "guided-backprop", "gradcam", "guided-gradcam", "occlusion"):
        assert re.search(r"class \d (\(score -?[0-9.e+-]+\))", captions[method]), captions[method]
    tags = [t for t, _ in parse(page).tags]
    assert tags.count("script") == 1 and "b" not in tags


def test_target_and_missing_image(tmp_path, capsys):
    model = tmp_path / "tiny.net"
    model.write_text(NET, encoding="utf-8")
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((SIDE, SIDE, 3), np.uint8)).save(img)
    out = tmp_path / "r.html"
    assert main(["report", str(model), "--explain", str(img), "--target", "3", "-o", str(out)]) == 0
    captions = [c for _, _, c in figures(out.read_text(encoding="utf-8"))]
    assert sum("class 3 " in c for c in captions) == 5
    capsys.readouterr()
    missing = tmp_path / "nope.jpg"
    assert main(["report", str(model), "--explain", str(missing), "-o", str(tmp_path / "m.html")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"cannot read image {missing}: no such file" in err
    assert not (tmp_path / "m.html").exists()
    assert main(["report", str(model), "--explain", str(img), "--target", "9", "-o", str(tmp_path / "t.html")]) == 2
    assert "class 9 is out of range" in capsys.readouterr().err
    assert main(["report", str(model), "--explain", str(img), "-o", str(img)]) == 2
    assert "netc never overwrites its inputs" in capsys.readouterr().err


def test_methods_the_network_cannot_do_are_notes(tmp_path, capsys):
    """No convolution: Grad-CAM, features and filters are notes saying why; the rest are pictures."""
    model = tmp_path / "mlp.net"
    model.write_text("network mlp\ninput data: [1, 3, 12, 12]\nfc1: InnerProduct(num_output=7) ReLU\n"
                     "fc2: InnerProduct(num_output=4)\n", encoding="utf-8")
    img = tmp_path / "x.png"
    Image.fromarray(np.full((SIDE, SIDE, 3), 90, np.uint8)).save(img)
    out = tmp_path / "r.html"
    assert main(["report", str(model), "--explain", str(img), "-o", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert [alt for alt, _, _ in figures(page)] == ["saliency", "guided-backprop", "occlusion"]
    assert page.count('<div class="warn"><span class="method">') == 4
    assert "this network has no convolution" in page
    assert "the report shows no gradcam" in capsys.readouterr().err


PROBE = """<script>window.addEventListener("load", function () {
  var imgs = document.querySelectorAll(".gallery img"), ok = 0;
  for (var i = 0; i < imgs.length; i++) if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++;
  document.body.setAttribute("data-images", ok + "/" + imgs.length);
});</script>"""


def test_gallery_renders_in_chromium(report, tmp_path):
    exe = chromium()
    page = report.read_text(encoding="utf-8")
    probe = tmp_path / "probe.html"               # the page plus a script counting decoded pictures
    probe.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = run_browser(exe, "--dump-dom", "--virtual-time-budget=5000", probe.as_uri()).stdout
    assert 'data-ready="1"' in dom                  # the report's own script ran to its end
    assert f'data-images="{len(REPORT_METHODS)}/{len(REPORT_METHODS)}"' in dom
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
