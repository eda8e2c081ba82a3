"""Code generation per target: cpu.py (numba + numpy BLAS)."""
