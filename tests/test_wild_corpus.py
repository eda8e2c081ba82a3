"""netc against an independent Caffe reference on the 53 third-party files of refs/wild.

The oracle is tests/caffe_reference.py: its own prototxt parser and its own transcription of
Caffe's Reshape/LayerSetUp rules (BVLC master plus the forks the files were written for), sharing
no code with netc. netc is used only through its public API (load / set_input_shapes / analyze /
graph). For every forward layer (loss, accuracy and Silence layers are left out) the output shapes,
learnable parameter count and stored buffer count must agree; every disagreement is reported with
the file, the layer and both values.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from caffe_reference import CaffeError, reference
from conftest import WILD
from netc.compiler.errors import NetcError
from netc.compiler.network import load

WILD_FILES = sorted(WILD.glob("*.prototxt"))

# Caffe rejects this one: its TEST-phase Accuracy layer reads "label", which nothing produces.
REJECTED = {"lightcnn__LightenedCNN_B_deploy"}
# DenseImageData takes its size from the images; both sides get the CamVid size.
OVERRIDES = {"segnet__segnet_basic_inference": {"data": (1, 3, 360, 480)}}
# OpenPose declares placeholder 1x1 (16x16 for BODY_25) inputs "defined at runtime": compare them
# as written and at the real size too.
OPENPOSE = ("openpose__body25_pose_deploy", "openpose__coco_pose_deploy_linevec",
            "openpose__hand_pose_deploy")
OPENPOSE_REAL = {"image": (1, 3, 368, 368)}
# Written for sfzhang15/FaceBoxes' Caffe, whose PriorBox makes 21 densified anchors for a layer
# with 3 min_sizes; under weiliu89 SSD's PriorBox its DetectionOutput CHECK-fails.
FACEBOXES = "faceboxes__deploy"

CASES = [pytest.param(p, OVERRIDES.get(p.stem), id=p.stem) for p in WILD_FILES
         if p.stem not in REJECTED and p.stem != FACEBOXES]
CASES += [pytest.param(WILD / f"{s}.prototxt", OPENPOSE_REAL, id=f"{s}@368") for s in OPENPOSE]

DATA_TYPES = ("Input", "Data", "ImageData", "DenseImageData")


def _netc_rows(path, shapes, batch):
    net = load(str(path))
    if shapes:
        net.set_input_shapes(dict(shapes))
    net.analyze(batch=batch)
    rows = []
    for node, d in net.graph.nodes(data=True):
        rows.append({"name": str(node), "type": d["type"], "top_names": list(d["tops"]),
                     "tops": [tuple(s) for s in d["shapes"]], "params": int(d["params"]),
                     "buffers": int(d["buffers"]), "forward": bool(d["forward"])})
    return rows


def _file_batch(ref_rows):
    first = next(r for r in ref_rows if r["type"] in DATA_TYPES)
    return first["tops"][0][0]


def _compare(path, shapes, ref_rows):
    """Every disagreement between netc and the reference, as readable lines; and the count of
    forward layers compared."""
    stem = Path(path).stem
    rows = _netc_rows(path, shapes, _file_batch(ref_rows))
    problems = []
    # input blobs: Caffe folds net-level inputs into one Input layer, netc may keep one node per
    # blob, so inputs are matched by blob name
    ref_in = {t: s for r in ref_rows if r["type"] == "Input"
              for t, s in zip(r["top_names"], r["tops"])}
    net_in = {t: s for r in rows if r["type"] == "Input" for t, s in zip(r["top_names"], r["tops"])}
    if ref_in != net_in:
        problems.append(f"{stem}: input blobs: caffe {ref_in} netc {net_in}")
    ref_fw = [r for r in ref_rows if r["forward"] and r["type"] != "Input"]
    net_fw = [r for r in rows if r["forward"] and r["type"] != "Input"]
    if len(ref_fw) != len(net_fw):
        problems.append(f"{stem}: {len(ref_fw)} forward layers in Caffe, {len(net_fw)} in netc")
    for a, b in zip(ref_fw, net_fw):
        where = f"{stem}: layer {a['name']!r} ({a['type']})"
        base = re.sub(r"#\d+$", "", b["name"])
        if a["name"] and base != a["name"]:
            problems.append(f"{where}: layers out of step, netc has {b['name']!r} here")
            break
        if a["type"] != b["type"]:
            problems.append(f"{where}: type caffe {a['type']} netc {b['type']}")
        if a["top_names"] != b["top_names"]:
            problems.append(f"{where}: tops caffe {a['top_names']} netc {b['top_names']}")
        if a["tops"] != b["tops"]:
            problems.append(f"{where}: output shapes caffe {a['tops']} netc {b['tops']}")
        if a["params"] != b["params"]:
            problems.append(f"{where}: params caffe {a['params']} netc {b['params']}")
        if a["buffers"] != b["buffers"]:
            problems.append(f"{where}: buffers caffe {a['buffers']} netc {b['buffers']}")
    return problems, len(ref_fw)


def test_corpus_is_complete():
    assert len(WILD_FILES) == 53, f"expected the 53 wild files under {WILD}, found {len(WILD_FILES)}"
    stems = {p.stem for p in WILD_FILES}
    for s in (*REJECTED, *OVERRIDES, *OPENPOSE, FACEBOXES):
        assert s in stems, s


@pytest.mark.parametrize("path, shapes", CASES)
def test_wild_file_matches_caffe(path, shapes):
    ref_rows = reference(path, shapes)
    problems, compared = _compare(path, shapes, ref_rows)
    assert compared > 0
    assert not problems, "netc disagrees with Caffe:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("stem", sorted(REJECTED))
def test_caffe_rejects_and_so_does_netc(stem):
    path = WILD / f"{stem}.prototxt"
    with pytest.raises(CaffeError, match="Unknown bottom blob 'label'"):
        reference(path)
    with pytest.raises(NetcError):
        net = load(str(path))
        net.analyze(batch=20)


def test_faceboxes_priors():
    path = WILD / f"{FACEBOXES}.prototxt"
    # weiliu89 SSD: 3 priors per cell for inception3 -> the loc/conf counts do not match
    with pytest.raises(CaffeError, match="Number of priors must match"):
        reference(path)
    ref_rows = reference(path, prior_box="faceboxes")
    try:
        problems, compared = _compare(path, None, ref_rows)
    except NetcError:
        return      # rejecting the file is what SSD's Caffe does
    assert compared > 0
    assert not problems, ("netc neither rejects the file (as SSD Caffe does) nor builds it as "
                          "FaceBoxes' Caffe does:\n  " + "\n  ".join(problems))


# --- the oracle itself: a few hand-checked Caffe facts -------------------------------------------

def _net(tmp_path, text, shapes=None):
    p = tmp_path / "t.prototxt"
    p.write_text(text)
    return reference(p, shapes)


def test_reference_parser_and_upgrades(tmp_path):
    rows = _net(tmp_path, r'''
        name: "t"  # comment
        input: "data" input_dim: 2 input_dim: 3 input_dim: 7 input_dim: 7
        layer: { name: 'c\'1'; type: "Convolution" bottom: "data" top: "c"
                 convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 0 } }
        layer { name: "p" type: "Pooling" bottom: "c" top: "p"
                pooling_param < pool: AVE kernel_size: 2 stride: 2 pad: 1 > }
        layer { name: "t" type: "ReLU" bottom: "p" top: "p" include { phase: TRAIN } }
    ''')
    assert [r["name"] for r in rows] == ["input", "c'1", "p"]
    assert rows[1]["tops"] == [(2, 4, 3, 3)] and rows[1]["params"] == 4 * 27 + 4
    # ceil((3 + 2 - 2) / 2) + 1 = 3, and (3 - 1) * 2 = 4 >= 3 + 1 clips it to 2
    assert rows[2]["tops"] == [(2, 4, 2, 2)]


def test_reference_bare_input_dropped(tmp_path):
    with pytest.raises(CaffeError, match="Unknown bottom blob 'x'"):
        _net(tmp_path, 'input: "x"\nlayers { name: "i" type: INNER_PRODUCT bottom: "x" '
                       'top: "y" inner_product_param { num_output: 5 } }')


def test_reference_rules(tmp_path):
    rows = _net(tmp_path, '''
        layer { name: "in" type: "Input" top: "d" input_param { shape { dim: 1 dim: 8 dim: 5 dim: 5 } } }
        layer { name: "dc" type: "Deconvolution" bottom: "d" top: "u"
                convolution_param { num_output: 4 group: 2 kernel_size: 4 stride: 2 pad: 1 bias_term: false } }
        layer { name: "pf" type: "Pooling" bottom: "u" top: "pf"
                pooling_param { pool: MAX kernel_size: 3 stride: 2 round_mode: FLOOR } }
        layer { name: "pc" type: "Pooling" bottom: "u" top: "pc" pooling_param { kernel_size: 3 stride: 2 } }
        layer { name: "bn" type: "BatchNorm" bottom: "pc" top: "pc" }
        layer { name: "sc" type: "Scale" bottom: "pc" top: "pc" scale_param { bias_term: true } }
        layer { name: "r" type: "Reshape" bottom: "pc" top: "r" reshape_param { shape { dim: 0 dim: -1 } } }
        layer { name: "sl" type: "Slice" bottom: "r" top: "a" top: "b" slice_param { slice_point: 1 } }
    ''')
    by = {r["name"]: r for r in rows}
    assert by["dc"]["tops"] == [(1, 4, 10, 10)] and by["dc"]["params"] == 8 * 2 * 16
    assert by["pf"]["tops"] == [(1, 4, 4, 4)]       # floor(7 / 2) + 1
    assert by["pc"]["tops"] == [(1, 4, 5, 5)]       # ceil(7 / 2) + 1
    assert by["bn"]["buffers"] == 9 and by["bn"]["params"] == 0
    assert by["sc"]["params"] == 8
    assert by["r"]["tops"] == [(1, 100)]
    assert by["sl"]["tops"] == [(1, 1), (1, 99)]
