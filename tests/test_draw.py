"""netc draw: checked against the IR (names, tensors, folds, blocks), never against stored images."""
from __future__ import annotations

import io
import re
import time
import xml.etree.ElementTree as ET

import pytest

import netc
from netc.cli import main
from netc.compiler import diagram
from netc.compiler.errors import NetcError
from netc.compiler.network import loads

from conftest import REFS
from hostile import HOSTILE_NAMES, decoded, hostile_prototxt, needs_dot

SVG_NS = "{http://www.w3.org/2000/svg}"
SMALL = """
name: "tiny"
input: "data"
input_shape { dim: 1 dim: 3 dim: 32 dim: 32 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool1" top: "fc" inner_product_param { num_output: 10 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


def load_ref(name: str):
    return netc.load(REFS / f"{name}.prototxt")


def svg_texts(svg: str) -> list[str]:
    root = ET.fromstring(svg.encode("utf-8"))
    return [t.text or "" for t in root.iter(f"{SVG_NS}text")]


def edge_count_svg(svg: str) -> int:
    return svg.count('class="edge"')


def dot_edges(text: str) -> list[tuple[str, str]]:
    return re.findall(r"^\s*(\w+) -> (\w+) \[", text, flags=re.M)


def tensors(g) -> int:
    return sum(len(d["tensors"]) for _, _, d in g.edges(data=True))


# ---- names, edges, folds ----------------------------------------------------------------------
@needs_dot
@pytest.mark.parametrize("model", ["vgg-16", "googlenet", "resnet-50"])
def test_every_layer_and_tensor_is_drawn(model):
    net = load_ref(model)
    svg = diagram.svg_text(net)
    texts = set(svg_texts(svg))
    g = net.graph
    view = diagram.build_view(g)
    for n in g.nodes:
        if n in view.folded:
            assert f"+ {n} \u00b7 {g.nodes[n]['type']}" in texts, n
        else:
            assert n in texts, n
    # one drawn edge per tensor, minus the one input of every folded layer
    assert edge_count_svg(svg) == tensors(g) - len(view.folded)
    # every edge label is the producer's output shape without the batch dimension
    labels = [t.strip() for t in texts if re.fullmatch(r"\s*\d+(x\d+)*", t)]
    assert labels


def test_folding_is_caffes_in_place_layers():
    """VGG-16: every ReLU and Dropout is written in place, and exactly those are folded."""
    g = load_ref("vgg-16").graph
    view = diagram.build_view(g)
    in_place = {n for n in g.nodes if g.nodes[n]["type"] in ("ReLU", "Dropout")
                and g.nodes[n]["tops"] == g.nodes[n]["bottoms"]}
    assert in_place and view.folded == in_place
    host = view.nodes[view.of["relu1_1"]]
    assert host.layers == ["conv1_1", "relu1_1"]


def test_fold_chain_and_branching_producer():
    """conv -> BN -> Scale -> ReLU fold into one node; a ReLU whose input has a second reader
    does not fold (its edge is a real branch)."""
    net = loads("""
name: "fold"
input: "data"
input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "bn" type: "BatchNorm" bottom: "c" top: "c" }
layer { name: "sc" type: "Scale" bottom: "c" top: "c" scale_param { bias_term: true } }
layer { name: "r" type: "ReLU" bottom: "c" top: "c" }
layer { name: "c2" type: "Convolution" bottom: "c" top: "c2" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "r2" type: "ReLU" bottom: "c2" top: "r2" }
layer { name: "side" type: "Pooling" bottom: "c2" top: "side" pooling_param { pool: MAX kernel_size: 2 } }
""", path="fold.prototxt")
    view = diagram.build_view(net.graph)
    assert view.nodes[view.of["c"]].layers == ["c", "bn", "sc", "r"]
    assert view.folded == {"bn", "sc", "r"}
    assert view.of["r2"] != view.of["c2"]
    net.analyze()
    dot = diagram.to_dot(net.graph)
    assert len(dot_edges(dot)) == tensors(net.graph) - 3


# ---- escaping ---------------------------------------------------------------------------------
@needs_dot
def test_hostile_names_are_escaped(tmp_path):
    src = tmp_path / "hostile.prototxt"
    src.write_text(hostile_prototxt())
    net = netc.load(src)
    dot_path = net.draw(tmp_path / "h.dot", detail="full")
    text = dot_path.read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text
    svg_path = net.draw(tmp_path / "h.svg", detail="full")
    svg = svg_path.read_text(encoding="utf-8")
    root = ET.fromstring(svg.encode("utf-8"))           # well-formed XML despite the names
    assert not [el for el in root.iter() if el.tag in (f"{SVG_NS}b", f"{SVG_NS}script", "b", "script")]
    texts = set(svg_texts(svg))
    for name in HOSTILE_NAMES:
        assert diagram.visible(decoded(name)) in texts, name
    assert "new\\nline" in texts            # the newline is shown, not obeyed
    assert "<script>alert(1)</script>" in texts  # the network's name, as text
    assert edge_count_svg(svg) == len(HOSTILE_NAMES)


def test_quoting_helpers():
    assert diagram._q('a"b\\') == '"a\\"b\\\\"'
    assert diagram._q("x\ny") == '"x\\\\ny"'
    assert diagram._q("a", "b") == '"a\\nb"'         # DOT's own line break
    assert diagram._h("<a & 'b'>") == "&lt;a &amp; &#39;b&#39;&gt;"
    assert diagram.visible("a\x00b\u2028") == "a\\x00b\\u2028"


# ---- formats and the dot executable ---------------------------------------------------------
def test_dot_output_needs_no_graphviz(tmp_path, monkeypatch):
    src = tmp_path / "tiny.prototxt"
    src.write_text(SMALL)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["draw", str(src), "-o", str(tmp_path / "t.dot")]) == 0
    text = (tmp_path / "t.dot").read_text()
    assert text.startswith("digraph netc {") and text.rstrip().endswith("}")
    assert len(dot_edges(text)) == 4  # data->conv1(+relu1)->pool1->fc->prob
    with pytest.raises(NetcError) as e:
        netc.load(src).draw(tmp_path / "t.svg")
    assert "apt-get install graphviz" in e.value.render() and "brew install graphviz" in e.value.render()
    assert main(["draw", str(src), "-o", str(tmp_path / "t.svg")]) == 2


@needs_dot
def test_png_and_pdf_are_real(tmp_path):
    from PIL import Image
    src = tmp_path / "tiny.prototxt"
    src.write_text(SMALL)
    assert main(["draw", str(src), "-o", str(tmp_path / "t.png"), "--rankdir", "LR"]) == 0
    data = (tmp_path / "t.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        assert im.width > im.height > 20       # LR: wider than tall
    assert main(["draw", str(src), "-o", str(tmp_path / "t.pdf")]) == 0
    assert (tmp_path / "t.pdf").read_bytes()[:5] == b"%PDF-"


def test_user_errors_exit_2(tmp_path, capsys):
    src = tmp_path / "tiny.prototxt"
    src.write_text(SMALL)
    assert main(["draw", str(src), "-o", str(tmp_path / "t.jpg")]) == 2
    assert "name it .svg" in capsys.readouterr().err
    assert main(["draw", str(src), "-o", str(tmp_path / "t.dot"), "--collapse", "stage"]) == 2
    assert "no blocks" in capsys.readouterr().err


def test_detail_levels(tmp_path):
    src = tmp_path / "tiny.prototxt"
    src.write_text(SMALL)
    net = netc.load(src)
    none = diagram.to_dot(net.graph, detail="none")
    assert "label=\" " not in none                    # no edge labels
    net.analyze()
    shapes = diagram.to_dot(net.graph, detail="shapes")
    assert 'label=" 8x32x32"' in shapes and 'label=" 8x16x16"' in shapes
    assert "\u2192 10" in shapes                    # the sink's output shape
    full = diagram.to_dot(net.graph, detail="full", rankdir="LR")
    assert "rankdir=LR" in full and "224 params" in full and "MACs" in full
    with pytest.raises(NetcError):
        diagram.to_dot(net.graph, detail="everything")


def test_unanalyzable_model_draws_without_shapes(tmp_path, capsys):
    """A Python layer stops shape inference; the drawing still comes out, with a warning."""
    out = tmp_path / "frcnn.dot"
    assert main(["draw", str(REFS / "fasterRCNN_VGG.prototxt"), "-o", str(out)]) == 0
    assert "warning: drawing without shapes" in capsys.readouterr().err
    assert out.read_text().count(" -> ") > 10


# ---- collapse (.net blocks, emulated on ResNet-50) ------------------------------------------
def resnet_with_blocks():
    """ResNet-50 with the block attributes a .net file would give: stageN/resNx bottlenecks."""
    net = load_ref("resnet-50")
    for n, d in net.graph.nodes(data=True):
        m = re.match(r"(?:res|bn|scale)(\d)([a-z])(_|$)", n)
        if m:
            d["block"] = f"stage{m[1]}/res{m[1]}{m[2]}"
            d["block_type"] = "bottleneck"
    return net


def test_collapse_blocks_keeps_edges_right():
    net = resnet_with_blocks()
    net.analyze()
    g = net.graph
    full = diagram.build_view(g)
    view = diagram.build_view(g, "bottleneck")
    groups = {v.group for v in view.nodes.values() if v.group}
    assert len(groups) == 16 and len(view.nodes) < len(full.nodes)

    def owner(n):
        return g.nodes[n]["block"] or view.of[n]
    expected = {(src, port, owner(n)) for n in g.nodes for src, port in g.nodes[n]["inputs"]
                if view.of[src] != view.of[n]}
    assert len(view.edges) == len(expected)
    pairs = {(view.nodes[s].group or view.nodes[s].layers[0], view.nodes[d].group or view.nodes[d].layers[0])
             for s, d, *_ in view.edges}
    assert ("pool1", "stage2/res2a") in pairs
    assert ("stage2/res2a", "stage2/res2b") in pairs and ("stage2/res2c", "stage3/res3a") in pairs
    dot = diagram.to_dot(g, collapse="bottleneck")
    assert len(dot_edges(dot)) == len(view.edges)
    assert "25.56M" not in dot and "bottleneck" in dot and "MACs" in dot

    stages = diagram.build_view(g, "all")
    assert {v.group for v in stages.nodes.values() if v.group} == {"stage2", "stage3", "stage4", "stage5"}
    one = diagram.build_view(g, ["stage3"])
    assert {v.group for v in one.nodes.values() if v.group} == {"stage3"}
    with pytest.raises(NetcError, match='did you mean "bottleneck"'):
        diagram.build_view(g, "botleneck")


@needs_dot
def test_collapsed_and_clustered_svgs_render():
    net = resnet_with_blocks()
    net.analyze()
    clustered = diagram.render(diagram.to_dot(net.graph), "svg").decode()
    assert clustered.count('class="cluster"') == 1 + 4 + 16      # legend, stages, bottlenecks
    collapsed = diagram.render(diagram.to_dot(net.graph, collapse="bottleneck"), "svg").decode()
    nodes = len(re.findall(r'class="node">\s*<title>[LB]\d+</title>', collapsed))
    assert nodes == len(diagram.build_view(net.graph, "bottleneck").nodes) < 40
    assert edge_count_svg(collapsed) == len(diagram.build_view(net.graph, "bottleneck").edges)
    assert "stage3/res3b" in svg_texts(collapsed)


# ---- API and scale ----------------------------------------------------------------------------
@needs_dot
def test_network_api(tmp_path):
    src = tmp_path / "tiny.prototxt"
    src.write_text(SMALL)
    net = netc.load(src)
    source = net.draw()
    import graphviz
    assert isinstance(source, graphviz.Source) and "digraph" in source.source
    assert net.draw(tmp_path / "x.svg", rankdir="LR", detail="full") == tmp_path / "x.svg"
    svg = net._repr_svg_()
    assert svg and "<svg" in svg and "conv1" in svg


@needs_dot
def test_inception_v4_renders_in_reasonable_time(tmp_path):
    net = load_ref("inceptionv4")
    t = time.perf_counter()
    out = net.draw(tmp_path / "i4.svg")
    elapsed = time.perf_counter() - t
    svg = out.read_text()
    assert len(net.graph) == 638 and elapsed < 30
    texts = set(svg_texts(svg))
    view = diagram.build_view(net.graph)
    assert all(n in texts for n in net.graph.nodes if n not in view.folded)
    assert edge_count_svg(svg) == tensors(net.graph) - len(view.folded)


NATIVE = """network Tiny
input data: [1, 3, 16, 16]
block cr(n) { Convolution(num_output=n, kernel_size=3, pad=1) ReLU }
block pair(n) { a: cr(n) b: cr(n) <- in Eltwise <- a, b }
p1: pair(8)
p2: pair(8)
Pooling(pool=MAX, kernel_size=2, stride=2)
"""


def test_collapse_native_blocks():
    """A real .net file: nested instances, a block input read twice, edges between groups."""
    net = loads(NATIVE, path="tiny.net")
    net.analyze()

    def drawn(collapse):
        view = diagram.build_view(net.graph, collapse)
        name = {v.id: v.group or v.layers[0] for v in view.nodes.values()}
        return sorted(name.values()), sorted((name[s], name[d]) for s, d, *_ in view.edges)

    nodes, edges = drawn("pair")
    assert nodes == ["data", "p1", "p2", "pool1"]
    assert edges == [("data", "p1"), ("p1", "p2"), ("p2", "pool1")]   # data read twice in p1: one edge
    assert drawn("all") == (nodes, edges)
    nodes, edges = drawn("cr")
    assert nodes == ["data", "p1/a", "p1/add1", "p1/b", "p2/a", "p2/add1", "p2/b", "pool1"]
    assert ("data", "p1/a") in edges and ("data", "p1/b") in edges and len(edges) == 9
    nodes, edges = drawn(["p1"])
    assert len(edges) == 6 and ("p1", "p2/a/conv1") in edges and ("p1", "p2/b/conv1") in edges
    dot = diagram.to_dot(net.graph, collapse="pair")
    assert "<I>pair</I>" in dot and "4 layers" not in dot and "5 layers" in dot
    with pytest.raises(NetcError, match="no block type or instance"):
        diagram.build_view(net.graph, "stage")


@needs_dot
def test_cli_collapse_renders(tmp_path):
    src = tmp_path / "tiny.net"
    src.write_text(NATIVE)
    assert main(["draw", str(src), "-o", str(tmp_path / "c.svg"), "--collapse", "cr,pair"]) == 0
    svg = (tmp_path / "c.svg").read_text()
    assert edge_count_svg(svg) == 3 and {"p1", "p2"} <= set(svg_texts(svg))
    assert main(["draw", str(src), "-o", str(tmp_path / "u.svg")]) == 0
    assert (tmp_path / "u.svg").read_text().count('class="cluster"') == 1 + 2   # legend, p1, p2


def test_activation_after_a_collapsed_block_is_drawn_in_its_node():
    net = loads("network T\ninput data: [1, 3, 8, 8]\n"
                "block b() { Convolution(num_output=4, kernel_size=3) ReLU }\n"
                "x: b ReLU Sigmoid\ny: b\n", path="t.net")
    net.analyze()
    view = diagram.build_view(net.graph, "all")
    groups = {v.group: v for v in view.nodes.values() if v.group}
    assert set(groups) == {"x", "y"} and len(view.nodes) == 3     # data, x (+ReLU, Sigmoid), y
    assert groups["x"].layers[-2:] == ["relu1", "sigmoid1"]
    dot = diagram.to_dot(net.graph, collapse="all")
    assert "2 layers</FONT><BR/>" in dot and "+ sigmoid1" in dot
    plain = diagram.build_view(net.graph)       # uncollapsed: the top-level ReLU is not drawn in the block
    assert plain.of["relu1"] != plain.of["x/conv1"]


@needs_dot
def test_a_name_longer_than_dot_reads_is_drawn_shortened(tmp_path):
    """dot quits on strings near 64k characters: labels show a long name's ends and its length."""
    name = "a" * 50_000 + "Z" * 30_000
    p = tmp_path / "long.prototxt"
    p.write_text('input: "x"\ninput_shape { dim: 1 dim: 2 dim: 4 dim: 4 }\n'
                 f'layer {{ name: "{name}" type: "ReLU" bottom: "x" top: "y" }}\n')
    assert main(["draw", str(p), "-o", str(tmp_path / "d.svg")]) == 0
    texts = svg_texts((tmp_path / "d.svg").read_text())
    assert any(t.startswith("aaa") and "Z\u2026" not in t and t.endswith("ZZ (80,000 characters)") for t in texts)
    assert main(["report", str(p), "-o", str(tmp_path / "r.html")]) == 0
    assert name in (tmp_path / "r.html").read_text()


def test_dot_quitting_early_is_an_error(monkeypatch):
    import graphviz

    def broken(*a, **k):
        raise BrokenPipeError(32, "Broken pipe")
    monkeypatch.setattr(graphviz.Source, "pipe", broken)
    with pytest.raises(NetcError, match="dot quit while reading the diagram"):
        diagram.render("digraph { a }", "svg")
