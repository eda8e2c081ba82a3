"""Every command prints a model's warnings the same way: located, names escaped (a layer name is
data and may hold terminal escapes; before one load-and-warn, draw and report printed them raw)."""
from __future__ import annotations

import pytest

from netc.cli import main

MODEL = ('input: "x"\ninput_shape { dim: 1 dim: 2 dim: 4 dim: 4 }\n'
         'layer { name: "a\\x1b[31mRED" type: "ReLU" bottom: "x" top: "y" }\n'
         'layer { name: "a\\x1b[31mRED" type: "ReLU" bottom: "y" top: "z" }\n')


@pytest.mark.parametrize("command", [["analyze"], ["draw", "-o", "{tmp}/d.dot"], ["report", "-o", "{tmp}/r.html"],
                                     ["weights"], ["convert", "-o", "{tmp}/c.net"]])
def test_warnings_are_escaped_and_located_in_every_command(command, tmp_path, capsys):
    p = tmp_path / "esc.prototxt"
    p.write_text(MODEL)
    args = [command[0], str(p), *(a.format(tmp=tmp_path) for a in command[1:])]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert f"{p}:4:1: warning: layer name " in err
    assert '"a\\x1b[31mRED#2"' in err and "\x1b" not in err


def test_convert_writes_control_characters_escaped_and_round_trips(tmp_path, capsys):
    from netc.compiler.network import load
    p = tmp_path / "esc.prototxt"
    p.write_text('name: "n\\x1b]0;pwn\\x07"\n' + MODEL)
    for to in ("net", "prototxt"):
        out = tmp_path / f"c.{to}"
        assert main(["convert", str(p), "--to", to, "-o", str(out)]) == 0
        text = out.read_text(encoding="utf-8")
        assert "\x1b" not in text and "\x07" not in text
        again = load(out).graph
        assert list(again.nodes) == list(load(p).graph.nodes) and again.graph["name"] == "n\x1b]0;pwn\x07"


def test_data_on_a_terminal_is_escaped(tmp_path, monkeypatch, capsys):
    import sys
    p = tmp_path / "esc.prototxt"
    p.write_text(MODEL)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    assert main(["analyze", str(p), "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "a\\x1b[31mRED" in out


def test_piped_tables_do_not_wrap_at_80_columns_and_csv_refuses_training(capsys):
    from netc.compiler.network import load
    assert main(["analyze", "googlenet"]) == 0                 # capsys: not a terminal
    rows = [l for l in capsys.readouterr().out.splitlines() if l.startswith("│")]
    assert len(rows) == len(load("googlenet").analyze().layers)     # one line per layer: nothing folded
    assert max(len(l) for l in rows) > 80
    assert main(["analyze", "lenet", "--format", "csv", "--training", "adam"]) == 2
    assert "CSV's one row per layer has no place for" in capsys.readouterr().err


def test_errors_escape_the_file_name_the_message_and_the_hint_c1_controls_included():
    from netc.compiler.errors import Loc, NetcError
    text = NetcError("bad \x9b31m name", Loc("m\x1b]0;x\x07.net", 1, 1), hint="try \x1b[2J").render()
    assert not any(c in text for c in "\x1b\x07\x9b")
    assert text.startswith("m\\x1b]0;x\\x07.net:1:1: error: bad \\x9b31m name") and "hint: try \\x1b[2J" in text


def test_convert_says_what_it_leaves_out(tmp_path, capsys):
    p = tmp_path / "tv.prototxt"
    p.write_text('name: "tv"\n'
                 'layer { name: "d" type: "Input" top: "x" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n'
                 'layer { name: "c" type: "Convolution" bottom: "x" top: "c" param { lr_mult: 1 }\n'
                 '        convolution_param { num_output: 2 kernel_size: 3 weight_filler { type: "xavier" } } }\n'
                 'layer { name: "r" type: "ReLU" bottom: "c" top: "c" }\n'
                 'layer { name: "acc" type: "Accuracy" bottom: "c" bottom: "x" top: "acc" include { phase: TRAIN } }\n')
    assert main(["convert", str(p), "-o", str(tmp_path / "tv.net")]) == 0
    err = capsys.readouterr().err
    assert "leaves out what inference does not use" in err
    assert "layers of another phase than TEST: acc" in err
    assert "learning rates (param { }, blobs_lr, weight_decay): c\n" in err
    assert "initializers (weight_filler, bias_filler): c\n" in err
    assert "Accuracy" not in (tmp_path / "tv.net").read_text()
    plain = tmp_path / "plain.prototxt"
    plain.write_text('layer { name: "d" type: "Input" top: "x" input_param { shape { dim: 1 dim: 3 } } }\n')
    assert main(["convert", str(plain), "-o", str(tmp_path / "p.net")]) == 0
    assert "leaves out" not in capsys.readouterr().err


def test_every_run_option_is_documented():
    import argparse
    from netc.cli import build_parser
    run = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["run"]
    undocumented = [a.option_strings for a in run._actions
                    if a.option_strings and a.help in (None, "") and a.dest != "help"]
    assert not undocumented
