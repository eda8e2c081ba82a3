"""The wheel carries grammar and zoo files; a non-editable install works; analyze stays lean."""
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_carries_grammar_and_zoo(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                        "-w", str(tmp_path), "-q"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    wheel = next(tmp_path.glob("netc-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"netc/grammar/prototxt.lark", "netc/grammar/netc.lark", "netc/cli/__init__.py",
            "netc/cli/__main__.py", "netc/compiler/layers/conv.py", "netc/compiler/layers/upsample.py",
            "netc/runtime/data/imagenet_classes.txt"} <= names
    zoo = {n for n in names if n.startswith("netc/zoo/") and n.endswith(".net")}
    assert len(zoo) == len(list((ROOT / "zoo").glob("*.net"))) > 0
    assert not any(n.startswith("netc/tests/") for n in names)
    # installed from the wheel (not editable) into a fresh venv, it runs from site-packages; the
    # dependencies come from this interpreter's site-packages, added by a .pth file: a nested
    # `venv --system-site-packages` would see the base interpreter's, not those of the venv the
    # tests run in (and a plain path line in a .pth does not run the editable install's hook)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    inner = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    outer = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    Path(inner, "netc_test_deps.pth").write_text("\n".join(outer) + "\n")
    r = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    probe = "import netc, json; print(netc.__file__); print(netc.load('vgg16').analyze().totals['params'])"
    r = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    where, params = r.stdout.split()
    assert str(venv) in where and int(params) == 138_357_544
    r = subprocess.run([str(venv / "bin" / "netc"), "analyze", "vgg16", "--format", "csv"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("name,type,")


def test_analyze_does_not_import_numba_or_torch():
    code = ("import sys, io, contextlib\nimport netc.cli\nbuf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf): netc.cli.main(['analyze', 'vgg16', '--format', 'json'])\n"
            "print(sorted(m for m in ('numba', 'torch', 'graphviz', 'llvmlite') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": ""})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
