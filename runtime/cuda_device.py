"""Whether CUDA kernels can run here: numba-cuda installed, and a GPU or the simulator."""
from __future__ import annotations

import os

from ..compiler.errors import NetcError

NO_NUMBA_CUDA = ("the CUDA target needs numba-cuda: from the netc checkout, pip install \".[gpu]\" "
                 "(numba-cuda and the CUDA 12 nvcc wheel)")
NO_GPU = ("no CUDA GPU found (numba-cuda sees none): run on a machine with an NVIDIA GPU and "
          "driver, or set NUMBA_ENABLE_CUDASIM=1 to run in the simulator (slow)")


def simulator() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "") not in ("", "0")


def numba_cuda():
    """numba.cuda (compiling to PTX needs no GPU), or a NetcError saying how to install it."""
    try:
        from numba import cuda
    except ImportError:
        raise NetcError(NO_NUMBA_CUDA) from None
    return cuda


def require_cuda():
    """numba.cuda, if it can run kernels here (a GPU, or the simulator); else a NetcError."""
    cuda = numba_cuda()
    if simulator():
        return cuda
    try:
        ok = cuda.is_available()
    except Exception:  # a broken driver install reads as no GPU
        ok = False
    if not ok:
        raise NetcError(NO_GPU)
    return cuda
