"""Kernels compiled in worker processes (runtime/kernel_pool.py): same PTX and ptxas figures as
one process, errors surface, and the cache check reads the file numba writes."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from netc.compiler.codegen import cuda_gemm as cg
from netc.compiler.errors import NetcError
from netc.runtime import kernel_pool

from gemm_kernels import some_kernels


def without_counters(ptx: str) -> str:
    """numba numbers shared arrays and mangled names per process: blank those counters."""
    return re.sub(r"_cudapy_smem_\d+", "SMEM", re.sub(r"_Z\w+", "NAME", ptx))


def test_workers_give_the_same_ptx_and_ptxas_figures_as_one_process():
    kernels = some_kernels()
    one = kernel_pool.compile_ptx_many(kernels, (9, 0), "sm_90", jobs=1)
    two = kernel_pool.compile_ptx_many(kernels, (9, 0), "sm_90", jobs=2)
    assert len(one) == len(two) == len(kernels)
    for (name, _), (p1, r1), (p2, r2) in zip(kernels, one, two):
        assert f"{name}" in p2 and ".target sm_90" in p2         # in the order asked, not finish order
        assert without_counters(p1) == without_counters(p2), name
        assert r1 == r2 and r1["registers"] > 0 and r1["spill_stores"] == 0, (name, r1, r2)
    no_report = kernel_pool.compile_ptx_many(kernels[:2], (8, 0), None, jobs=2)
    assert [r for _, r in no_report] == [None, None] and ".target sm_80" in no_report[0][0]


def test_a_kernel_that_does_not_compile_fails_the_build():
    broken = ("k_bad", "@cuda.jit(cache=True)\ndef k_bad(A, P):\n    A[0] = undefined_name\n")
    with pytest.raises(Exception, match="undefined_name"):
        kernel_pool.compile_ptx_many(some_kernels()[1:3] + [broken], jobs=2)


def test_jobs_from_the_environment(monkeypatch):
    monkeypatch.setenv("NETC_COMPILE_JOBS", "3")
    assert kernel_pool.default_jobs() == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("NETC_COMPILE_JOBS", bad)
        with pytest.raises(NetcError, match="NETC_COMPILE_JOBS"):
            kernel_pool.default_jobs()
    monkeypatch.delenv("NETC_COMPILE_JOBS")
    assert kernel_pool.default_jobs() >= 1


def test_cache_check_reads_numbas_index_file(tmp_path, monkeypatch):
    """is_cached looks where numba-cuda writes a kernel's cache index; if a numba-cuda release
    moved it, every GPU run would spawn compile workers for nothing: this fails first."""
    monkeypatch.setenv("NETC_CACHE", str(tmp_path))
    from netc.compiler.codegen.modules import import_source
    name, src = some_kernels()[2]
    module = import_source(cg.KERNEL_HEADER + "\n" + src, "cuda")
    kernel = getattr(module, name)
    index = Path(kernel._cache._cache_file._index_path)
    assert index.parent.parent == Path(module.__file__).parent and index.suffix == ".nbi"
    assert name in index.name and not kernel_pool.is_cached(kernel)
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_bytes(b"")
    assert kernel_pool.is_cached(kernel)
    assert kernel_pool.is_cached(object()) is False


def test_warm_cache_reports_worker_failures_instead_of_raising(tmp_path):
    """Without a GPU every worker's compile fails (numba-cuda needs the device's compute
    capability): the report names each kernel; the run itself would then compile (and fail
    with its usual message) in the main process. On a GPU the same call fills the cache.
    The script has no __main__ guard, as users' scripts often have not: workers must not run
    it again (multiprocessing's spawn would, once per worker)."""
    runs = tmp_path / "runs.txt"
    code = ("import json, sys\n"
            "open(%r, 'a').write('ran\\n')\n"
            "from netc.compiler.codegen import cuda_gemm as cg\n"
            "from netc.compiler.codegen.modules import import_source\n"
            "from netc.runtime.kernel_pool import warm_cache\n"
            "sys.path.insert(0, %r)\n"
            "from gemm_kernels import some_kernels\n"
            "ks = dict(some_kernels()[1:3])\n"
            "src = cg.KERNEL_HEADER + '\\n' + '\\n'.join(ks.values())\n"
            "import_source(src, 'cuda')\n"
            "print(json.dumps(warm_cache(src, ks, jobs=2)))\n") % (str(runs), str(Path(__file__).parent))
    script = tmp_path / "warm.py"
    script.write_text(code)
    env = {**os.environ, "NETC_CACHE": str(tmp_path / "cache"), "CUDA_VISIBLE_DEVICES": ""}
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(r.stdout.strip().splitlines()[-1])
    assert rep["kernels"] == 2 and rep["jobs"] == 2 and rep["wall_s"] > 0
    assert set(rep["errors"]) == {"k_conv_1", "k_fc_2"}, rep
    assert all("CUDA" in e for e in rep["errors"].values()), rep
    assert runs.read_text() == "ran\n"


def test_shares_balance_the_largest_first():
    assert kernel_pool._shares([1, 9, 5, 5], 2) == [[1, 0], [2, 3]]     # loads 10 and 10
    assert kernel_pool._shares([3, 3], 4) == [[0], [1]]          # no empty workers
