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


def _assemble(ptx: str, arch: str, disassemble: bool = False) -> tuple[str, str]:
    """(ptxas -v output, nvdisasm text of the cubin or "")."""
    exe = ptxas_path()
    if exe is None:
        raise NetcError("ptxas not found: pip install nvidia-cuda-nvcc-cu12 (same CUDA 12 toolkit as numba-cuda's NVVM)")
    if not re.fullmatch(r"sm_\d+a?", arch):
        raise NetcError(f"bad GPU architecture {arch!r} (expected e.g. sm_90)")
    dis = nvdisasm_path() if disassemble else None
    if disassemble and dis is None:
        raise NetcError("nvdisasm not found: pip install nvidia-cuda-nvdisasm")
    with tempfile.TemporaryDirectory() as d:
        src, cubin = Path(d) / "k.ptx", Path(d) / "k.cubin"
        src.write_text(ptx)
        r = subprocess.run([exe, "-v", f"-arch={arch}", str(src), "-o", str(cubin)], capture_output=True, text=True)
        if r.returncode != 0:
            raise NetcError(f"ptxas failed for {arch}:\n{(r.stderr or r.stdout).strip()[:2000]}")
        sass = ""
        if dis:
            q = subprocess.run([dis, "-c", str(cubin)], capture_output=True, text=True)
            if q.returncode != 0:
                raise NetcError(f"nvdisasm failed:\n{(q.stderr or q.stdout).strip()[:2000]}")
            sass = q.stdout
    return r.stdout + r.stderr, sass


def ptxas_report(ptx: str, arch: str = "sm_90", loop_mix: bool = False) -> dict:
    """registers, shared_bytes, spill_stores, spill_loads, stack_frame of the PTX's kernel, and
    with `loop_mix` its main loop's instruction counts (main_loop_mix, needs nvdisasm)."""
    log, sass = _assemble(ptx, arch, disassemble=loop_mix)
    report = parse_ptxas(log)
    if loop_mix:
        report["main_loop"] = _hottest_loop(sass)
    return report


def nvdisasm_path() -> str | None:
    """nvdisasm from the nvidia-cuda-nvdisasm wheel (CUDA 13; it reads CUDA 12 ptxas cubins), or
    None. Machine code is where ptxas's own choices show (it merges adjacent shared loads into
    128-bit LDS, which PTX cannot tell)."""
    try:
        import nvidia
    except ImportError:
        return None
    for root in nvidia.__path__:
        for p in sorted(Path(root).glob("*/bin/nvdisasm")):
            if os.access(p, os.X_OK):
                return str(p)
    return None


def main_loop_mix(ptx: str, arch: str = "sm_90") -> dict:
    """Instruction counts of the kernel's hottest loop in machine code: the backward branch whose
    body holds the most FFMA (a GEMM's k loop). Each SM sub-partition issues one instruction per
    clock, so ffma / instructions bounds the share of FP32 peak the loop can reach."""
    return ptxas_report(ptx, arch, loop_mix=True)["main_loop"]


def _hottest_loop(sass: str) -> dict:
    labels, ops = {}, []
    for line in sass.splitlines():
        m = re.match(r"\s*(\.L_x_\d+):", line)
        if m:
            labels[m.group(1)] = len(ops)
            continue
        m = re.search(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)(.*)", line)
        if m:
            ops.append((m.group(1), m.group(2)))
    best: list = []
    for k, (op, rest) in enumerate(ops):
        target = re.search(r"(\.L_x_\d+)", rest)
        if op.startswith("BRA") and target and labels.get(target.group(1), k + 1) <= k:
            body = [o for o, _ in ops[labels[target.group(1)]:k + 1]]
            if sum(o == "FFMA" for o in body) > sum(o == "FFMA" for o in best):
                best = body
    return {"instructions": len(best), "ffma": sum(o == "FFMA" for o in best),
            "lds": sum(o.startswith("LDS") for o in best), "lds128": sum(o == "LDS.128" for o in best)}
