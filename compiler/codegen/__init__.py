"""Code generation per target: cpu.py (numba + numpy BLAS), cuda.py (numba-cuda); the per-layer
kernel templates live with their layers (compiler/layers, `lower_cpu` / `lower_cuda`)."""
