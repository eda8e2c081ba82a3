"""The kernel cache holds code netc imports and pickles numba loads: it is used only when it is
ours and nobody else can write to it, and a damaged or unusable cache never stops a run."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from netc.compiler.codegen import modules


def run_lenet(cache, tmp_path):
    env = dict(os.environ, NETC_CACHE=str(cache), TMPDIR=str(tmp_path))
    r = subprocess.run([sys.executable, "-m", "netc", "run", "lenet"], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "prob: [1, 10]" in r.stdout
    return r.stderr


def cached_modules(cache):
    return sorted(p.name for p in (cache / "cpu").glob("m_*.py")) if (cache / "cpu").is_dir() else []


@settings(max_examples=60, deadline=None)
@given(mode=st.integers(0, 0o777), sub_mode=st.integers(0, 0o777))
def test_a_cache_is_used_only_when_nobody_else_can_write_it(mode, sub_mode, tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    (root / "cpu").mkdir()
    os.chmod(root, mode | 0o700)
    os.chmod(root / "cpu", sub_mode | 0o700)
    saved, modules._fallback = modules._fallback, {}
    old = os.environ.get("NETC_CACHE")
    os.environ["NETC_CACHE"] = str(root)
    try:
        got = modules.cache_dir("cpu")
    finally:
        modules._fallback = saved
        os.environ["NETC_CACHE"] = old if old is not None else ""
    assert (got == root / "cpu") == (not ((mode | sub_mode) & 0o022))


def test_group_writable_cache_is_refused_so_a_planted_index_never_loads(tmp_path):
    cache = tmp_path / "shared"
    cache.mkdir()
    os.chmod(cache, 0o777)
    err = run_lenet(cache, tmp_path)
    assert "not using the kernel cache" in err and "other users can write to it" in err
    assert cached_modules(cache) == []            # nothing was written there, nothing read


@pytest.mark.skipif(os.getuid() != 0, reason="chown to another user needs root (CI runs as root)")
def test_cache_owned_by_another_user_is_refused(tmp_path):
    cache = tmp_path / "theirs"
    cache.mkdir(mode=0o700)
    os.chown(cache, 4321, -1)
    assert "another user owns it" in run_lenet(cache, tmp_path)


def test_damaged_entries_are_rebuilt_and_an_unusable_cache_does_not_stop_a_run(tmp_path):
    cache = tmp_path / "mine"
    assert "warning" not in run_lenet(cache, tmp_path)
    (module,) = cached_modules(cache)
    index = sorted((cache / "cpu" / "__pycache__").glob("*.nbi"))
    assert index
    for p in index:
        p.write_bytes(p.read_bytes()[:7])          # truncated numba index
    (cache / "cpu" / module).write_bytes(b"\xff\xfe not python")   # foreign, not UTF-8
    assert "warning" not in run_lenet(cache, tmp_path)
    assert cached_modules(cache) == [module]
    assert all(p.stat().st_size > 7 for p in (cache / "cpu" / "__pycache__").glob("*.nbi"))
    (cache / "cpu" / module).unlink()
    (cache / "cpu" / module).mkdir()               # a directory in the module's place
    assert "cannot write the kernel cache" in run_lenet(cache, tmp_path)
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert "cannot use the kernel cache" in run_lenet(afile, tmp_path)
    assert afile.read_text() == "x"
