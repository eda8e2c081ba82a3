"""`netc layers` lists what the layer classes say, for every registered type."""
from __future__ import annotations

import json

from netc.cli import main
from netc.compiler.layers import REGISTRY


def listed(capsys, *args) -> list[dict]:
    assert main(["layers", "--format", "json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_every_type_is_listed_with_its_cost_rule_and_targets(capsys):
    rows = {r["type"]: r for r in listed(capsys)}
    assert set(rows) == set(REGISTRY)
    assert all(r["cost"] for r in rows.values())
    assert rows["Convolution"]["cpu"] and rows["Convolution"]["cuda"]
    assert rows["Upsample"]["cpu"] and rows["Swish"]["cuda"]
    assert not rows["PriorBox"]["cpu"] and not rows["DetectionOutput"]["cuda"]   # analysis only
    assert not rows["SoftmaxWithLoss"]["inference"]
    assert "ConvTranspose" in rows["Deconvolution"]["aliases"]
    assert "pool=MAX (MAX/AVE/STOCHASTIC)" in rows["Pooling"]["params"]
    assert "num_output: int" in rows["InnerProduct"]["params"]


def test_family_filter_and_text_form(capsys):
    assert {r["family"] for r in listed(capsys, "--family", "pool")} == {"pool"}
    assert main(["layers"]) == 0
    text = capsys.readouterr().out
    assert f"{len(REGISTRY)} layer types" in text and "Swish  [activation]  runs: cpu, cuda" in text
