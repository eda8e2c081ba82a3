"""A few GEMM kernels' sources for the kernel-pool tests.

A plain helper module, not a test module: test_kernel_pool and the script one of its tests runs
in a subprocess import from here.
"""
from __future__ import annotations

from netc.compiler.codegen import cuda_gemm as cg

RELU = ["v = max(v, float32(0.0))"]


def some_kernels() -> list[tuple[str, str]]:
    """(name, source): a 3x3 conv (big tile), a 1x1 conv, a GEMV fc, a GEMM fc."""
    ks = [cg.conv_kernel("k_conv_0", cg.ConvGeometry(1, 64, 28, 28, 128, 28, 28, 3, 3, 1, 1, 1, 1, 1, 1, 1),
                         0, 0, 64 * 28 * 28, 0, RELU),
          cg.conv_kernel("k_conv_1", cg.ConvGeometry(2, 32, 7, 7, 48, 7, 7, 1, 1, 1, 1, 0, 0, 1, 1, 1),
                         0, 0, 32 * 98, 0, []),
          cg.fc_kernel("k_fc_2", 1, 256, 100, 0, 0, 256, 0, []),
          cg.fc_kernel("k_fc_3", 32, 256, 100, 0, 0, 256 * 32, 0, RELU)]
    return [(k.name, k.source) for k in ks]
