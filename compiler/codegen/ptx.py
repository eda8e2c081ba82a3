"""Compile generated CUDA kernels to PTX and ask ptxas what they cost, without a GPU.

NVVM comes from numba-cuda's CUDA 12 wheels, and ptxas must come from the same toolkit
(`nvidia-cuda-nvcc-cu12`): a ptxas from another CUDA release rejects or misreads the PTX
(KERNELS.md), so the system one is never used.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path

from ..errors import NetcError
from .cuda_gemm import KERNEL_HEADER, SIG
from .modules import import_source


def load_kernel(source: str, name: str):
    """The `@cuda.jit` dispatcher `name` defined by `source`, imported from a real file under the
    cache dir (numba's cache=True needs one; tracebacks get a location). Compiles nothing yet."""
    return getattr(import_source(KERNEL_HEADER + "\n" + source, "ptx", prefix="k"), name)


def compile_kernel_ptx(source: str, name: str, cc=(9, 0)) -> str:
    """PTX text of kernel `name` (signature `void(float32[::1], float32[::1])`) for `cc`."""
    from numba import cuda
    kernel = load_kernel(source, name)
    ptx, _ = cuda.compile_ptx(getattr(kernel, "py_func", kernel), SIG, cc=tuple(cc))
    return ptx


def ptxas_path() -> str | None:
    """ptxas from the nvidia-cuda-nvcc-cu12 wheel (same toolkit as NVVM), or None."""
    try:
        import nvidia.cuda_nvcc as m
    except ImportError:
        return None
    for root in m.__path__:
        p = Path(root) / "bin" / "ptxas"
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


_NUM = {
    "registers": re.compile(r"Used (\d+) registers"),
    "shared_bytes": re.compile(r"(\d+) bytes smem"),
    "spill_stores": re.compile(r"(\d+) bytes spill stores"),
    "spill_loads": re.compile(r"(\d+) bytes spill loads"),
    "stack_frame": re.compile(r"(\d+) bytes stack frame"),
}


def parse_ptxas(text: str) -> dict:
    """Numbers from `ptxas -v` output for a single-kernel PTX module (absent figures are 0)."""
    out = {}
    for key, rx in _NUM.items():
        vals = [int(v) for v in rx.findall(text)]
        out[key] = max(vals) if vals else 0
    if not _NUM["registers"].search(text):
        raise NetcError(f"ptxas printed no register count:\n{text.strip()[:2000]}")
    return out


def ptxas_report(ptx: str, arch: str = "sm_90") -> dict:
    """registers, shared_bytes, spill_stores, spill_loads, stack_frame of the PTX's kernel."""
    exe = ptxas_path()
    if exe is None:
        raise NetcError("ptxas not found: pip install nvidia-cuda-nvcc-cu12 (same CUDA 12 toolkit as numba-cuda's NVVM)")
    if not re.fullmatch(r"sm_\d+a?", arch):
        raise NetcError(f"bad GPU architecture {arch!r} (expected e.g. sm_90)")
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "k.ptx"
        src.write_text(ptx)
        r = subprocess.run([exe, "-v", f"-arch={arch}", str(src), "-o", str(Path(d) / "k.cubin")],
                           capture_output=True, text=True)
    if r.returncode != 0:
        raise NetcError(f"ptxas failed for {arch}:\n{(r.stderr or r.stdout).strip()[:2000]}")
    return parse_ptxas(r.stdout + r.stderr)
