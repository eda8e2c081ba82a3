"""Generated source imported from a real file in netc's cache, named by its hash.

numba's cache=True (CPU and CUDA) needs a file to key its machine code on (KERNELS.md: exec'd
strings have no locator), tracebacks get a location, and the same source compiled twice reuses
both the file and the compiled code. The CPU and CUDA targets and the PTX tooling share this.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path


def cache_dir(kind: str) -> Path:
    root = os.environ.get("NETC_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "netc")
    return Path(root) / kind


def import_source(source: str, kind: str, prefix: str = "m"):
    """The module defined by `source`, written to cache_dir(kind)/<prefix>_<hash>.py once."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:24]
    name = f"netc_{kind}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    d = cache_dir(kind)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{prefix}_{digest}.py"
    if not path.is_file() or path.read_text() != source:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(source)
        os.replace(tmp, path)     # atomic: a concurrent reader never sees half a file
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
