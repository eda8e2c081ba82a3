"""The structure the code promises: a layer type lives in its layer module, generic code asks the
layer, layers reach the targets only through their public emitters, no import circles, and no
path of one machine in the repository. Read from the source (ast), so a regression fails here
before it spreads."""
from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import networkx as nx
import pytest

from netc.compiler.layers import REGISTRY, Layer

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"netc": ".", "netc.compiler": "compiler", "netc.compiler.layers": "compiler/layers",
            "netc.compiler.codegen": "compiler/codegen", "netc.runtime": "runtime"}
GENERIC = sorted([*(ROOT / "compiler/codegen").glob("*.py"), ROOT / "compiler/passes.py",
                  ROOT / "compiler/plan.py", ROOT / "compiler/diagram.py", ROOT / "compiler/onnx_export.py"])
TARGET_MODULES = {"netc.compiler.codegen.cpu", "netc.compiler.codegen.cuda", "netc.compiler.codegen.lowering"}


def modules() -> dict[str, Path]:
    out = {}
    for pkg, folder in PACKAGES.items():
        for f in (ROOT / folder).glob("*.py"):
            out[pkg if f.stem == "__init__" else f"{pkg}.{f.stem}"] = f
    for f in (ROOT / "cli").glob("*.py") if (ROOT / "cli").is_dir() else ():
        out["netc.cli" if f.stem == "__init__" else f"netc.cli.{f.stem}"] = f
    return out


def imports_of(name: str, path: Path, known) -> set[str]:
    """Modules of the package that `path` imports anywhere (functions included)."""
    base = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base.split(".")[:len(base.split(".")) - (node.level - 1)]
                target = ".".join(parts + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            cands = [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            cands = [a.name for a in node.names]
        else:
            continue
        found |= {c for c in cands if c in known and c != name}
    return found


def import_graph() -> nx.DiGraph:
    mods = modules()
    g = nx.DiGraph()
    g.add_nodes_from(mods)
    for name, path in mods.items():
        for m in imports_of(name, path, mods):
            g.add_edge(name, m)
    # compiler/layers/__init__ imports every module beside it (discovered, not named)
    for m in mods:
        if m.startswith("netc.compiler.layers."):
            g.add_edge("netc.compiler.layers", m)
    return g


def test_the_import_graph_has_no_circles():
    cycles = list(nx.simple_cycles(import_graph()))
    assert not cycles, cycles


def test_the_checker_sees_imports_inside_functions(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from .network import load\n")
    assert imports_of("netc.compiler.m", f, {"netc.compiler.network"}) == {"netc.compiler.network"}


def type_names() -> set[str]:
    return {n for layer in REGISTRY.values() for n in (layer.type, *layer.aliases)}


@pytest.mark.parametrize("path", GENERIC, ids=lambda p: str(p.relative_to(ROOT)))
def test_generic_code_names_no_layer_type(path):
    names = type_names()
    hits = [(node.lineno, node.value) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names]
    assert not hits, f"{path.name} switches on layer types {hits}: make it a Layer hook"


def test_layer_modules_use_only_public_emitters():
    mods = modules()
    for name, path in mods.items():
        if not name.startswith("netc.compiler.layers."):
            continue
        bad_imports = imports_of(name, path, mods) & TARGET_MODULES
        assert not bad_imports, f"{path.name} imports a target module {bad_imports}"
        private = [(node.lineno, node.attr) for node in ast.walk(ast.parse(path.read_text()))
                   if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                   and node.value.id == "lo" and node.attr.startswith("_")]
        assert not private, f"{path.name} calls private lowering members {private}"


def test_every_layer_that_runs_has_a_torch_reference():
    missing = [t for t, layer in REGISTRY.items()
               if layer.forward and not (layer.source or layer.sink) and layer.runs_on("cpu")
               and type(layer).reference is Layer.reference]
    assert not missing, f"layers that run but have no reference semantics: {missing}"


def test_no_absolute_machine_path_in_the_repository():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    pattern = re.compile(r"(?<![\w.])/(?:work|root|home|Users)/\w")
    hits = []
    for f in files:
        p = ROOT / f
        if p.suffix in (".svg", ".png", ".jpg") or not p.is_file():
            continue
        text = p.read_text(errors="replace")
        hits += [f"{f}:{text.count(chr(10), 0, m.start()) + 1}" for m in pattern.finditer(text)]
    assert not hits, hits


def test_analyzing_at_another_batch_leaves_a_compiled_executable_alone():
    import numpy as np
    from netc.compiler.network import load
    net = load("lenet")
    ex = net.compile(batch=2)
    x = np.random.default_rng(0).standard_normal(ex.input_shape("data")).astype(np.float32)
    before = ex(x)
    rows_before = [r.output_shapes for r in ex.analysis.layers]
    net.analyze(batch=5)
    assert ex.input_shape("data") == (2, 1, 28, 28)
    assert [r.output_shapes for r in ex.analysis.layers] == rows_before
    np.testing.assert_array_equal(ex(x), before)
