"""An output never overwrites an input (same path, symlink or hard link), lands at exactly the
path given, and a path that cannot be written is a clean error before any work."""
from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from netc.cli import main

MODEL = ('name: "m"\ninput: "data"\ninput_shape { dim: 1 dim: 2 dim: 5 dim: 5 }\n'
         'layer { name: "file" type: "Convolution" bottom: "data" top: "file" '
         'convolution_param { num_output: 3 kernel_size: 3 } }\n'
         'layer { name: "allow_pickle" type: "ReLU" bottom: "file" top: "allow_pickle" }\n')


def setup(tmp_path):
    model = tmp_path / "m.prototxt"
    model.write_text(MODEL)
    x = tmp_path / "x.npy"
    np.save(x, np.ones((1, 2, 5, 5), np.float32))
    return model, x


SUFFIX = {"analyze": ".json", "convert": ".prototxt", "report": ".html", "draw": ".dot", "run-output": ".npy"}


def alias(tmp_path, target, how, suffix):
    """A name for `target` (or, for "other", a fresh file)."""
    p = tmp_path / f"out_{how}{suffix}"
    if how == "same":
        return target
    if how == "symlink":
        p.symlink_to(target)
    elif how == "hardlink":
        os.link(target, p)
    return p


COMMANDS = {
    "analyze": lambda m, x, o: ["analyze", str(m), "-o", str(o), "--format", "json"],
    "convert": lambda m, x, o: ["convert", str(m), "--to", "prototxt", "-o", str(o)],
    "report": lambda m, x, o: ["report", str(m), "-o", str(o)],
    "draw": lambda m, x, o: ["draw", str(m), "-o", str(o), "--detail", "none"],
    "run-output": lambda m, x, o: ["run", str(m), "--input", str(x), "--output", str(o)],
}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(sorted(COMMANDS)), how=st.sampled_from(["same", "symlink", "hardlink", "other"]),
       victim=st.sampled_from(["model", "input"]))
def test_an_output_that_is_an_input_is_refused_and_the_input_kept(command, how, victim, tmp_path_factory):
    assume(victim == "model" or command == "run-output")     # only run reads the input file
    tmp = tmp_path_factory.mktemp("o")
    model, x = setup(tmp)
    target = model if victim == "model" else x
    before = target.read_bytes()
    out = alias(tmp, target, how, SUFFIX[command])
    rc = main(COMMANDS[command](model, x, out))
    assert target.read_bytes() == before
    assert rc == (0 if how == "other" else 2)


def test_outputs_land_at_exactly_the_path_given_whatever_the_blob_names(tmp_path, capsys):
    model, x = setup(tmp_path)
    assert main(["run", str(model), "--input", str(x), "--output", str(tmp_path / "y.out"),
                 "--blobs", "file,allow_pickle", "--blobs-out", str(tmp_path / "blobs.bin")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blobs.bin", "m.prototxt", "x.npy", "y.out"]
    y = np.load(tmp_path / "y.out", allow_pickle=False)
    blobs = np.load(tmp_path / "blobs.bin", allow_pickle=False)
    assert sorted(blobs.files) == ["allow_pickle", "file"]
    np.testing.assert_array_equal(blobs["allow_pickle"], np.maximum(blobs["file"], 0))
    np.testing.assert_array_equal(y, blobs["allow_pickle"])


@pytest.mark.parametrize("args, msg", [
    (["analyze", "{m}", "-o", "{t}/nodir/a.json"], "does not exist"),
    (["report", "{m}", "-o", "{t}"], "is a directory"),
    (["run", "{m}", "-o", "{t}/y.npy", "--blobs", "file", "--blobs-out", "{t}/y.npy"], "two outputs"),
    (["run", "{m}", "--input", "{x}", "--blobs", "file", "--blobs-out", "{x}"], "input of this command"),
    (["build", "{m}", "-o", "{m}"], "input of this command"),
    (["build", "{m}", "-o", "{x}"], "not a directory"),
])
def test_unwritable_outputs_are_clean_errors(args, msg, tmp_path, capsys):
    model, x = setup(tmp_path)
    rc = main([a.format(m=model, x=x, t=tmp_path) for a in args])
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and "Traceback" not in err
    assert model.read_text() == MODEL
