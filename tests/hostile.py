"""Hostile names shared by several test modules, and the Graphviz fixture their drawings need.

HOSTILE and _quote: layer and blob names that would break code generation or a terminal if they
were ever evaluated or echoed raw (test_errors, test_cuda). HOSTILE_NAMES, hostile_prototxt and
decoded: the strings that break naive DOT/HTML writers (test_draw, test_report). The `dot`
fixture (re-exported by conftest.py) and the `needs_dot` mark skip or fail without Graphviz.

A plain helper module, not a test module: the test modules import from here, never from one
another.
"""
from __future__ import annotations

import os
import re
import shutil

import pytest

# ---- reflected text is data, never code (test_errors, test_cuda) -----------------------------
HOSTILE = ['q"uote', "new\nline", "__import__('os').system('touch PWNED')", "{braces}", "f{x!r}{{y}}",
           "tab\there", "back\\slash", "$(rm -rf /)", "<script>", "semi;colon", "a|b", "'single'", "ünï €",
           "[/x]", "[bold]b[/bold]", "[link=http://e]c[/link]", "esc\x1b[2Jape\x07"]


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'


# ---- names that break DOT and HTML writers (test_draw, test_report) --------------------------
HOSTILE_NAMES = ['q"uote', "<b>bold</b>", "amp&amp;", "brace{x}[y]", "new\\nline", "back\\\\",
                 "<<B>html</B>>", "-->", "uni\u00e9\u2192"]


def hostile_prototxt() -> str:
    """A chain whose layer names are all the strings that break naive DOT/HTML writers."""
    lines = ['name: "<script>alert(1)</script>"', 'input: "data"',
             "input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }"]
    prev = "data"
    for i, name in enumerate(HOSTILE_NAMES):
        esc = name.replace('"', '\\"')
        top = f"t{i}"
        lines.append(f'layer {{ name: "{esc}" type: "Convolution" bottom: "{prev}" top: "{top}" '
                     f"convolution_param {{ num_output: 4 kernel_size: 1 }} }}")
        prev = top
    return "\n".join(lines) + "\n"


def decoded(name: str) -> str:
    """What the prototxt reader makes of the escapes written above."""
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), name)


# ---- Graphviz ---------------------------------------------------------------------------------
def _need_dot():
    """Skips without Graphviz locally; in CI (which installs it) a missing dot is a failure."""
    if shutil.which("dot") is None:
        if os.environ.get("CI") or os.environ.get("NETC_REQUIRE_BROWSER", "") not in ("", "0"):
            pytest.fail("Graphviz dot is missing (apt-get install graphviz)")
        pytest.skip("Graphviz dot not installed (apt-get install graphviz)")


needs_dot = pytest.mark.usefixtures("dot")


@pytest.fixture
def dot():
    _need_dot()
