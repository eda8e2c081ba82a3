"""Generated source imported from a real file in netc's cache, named by its hash.

numba's cache=True (CPU and CUDA) needs a file to key its machine code on (KERNELS.md: exec'd
strings have no locator), tracebacks get a location, and the same source compiled twice reuses
both the file and the compiled code. The CPU and CUDA targets and the PTX tooling share this.

numba's cache index is a pickle, and a module in the cache is code netc imports: a cache
directory anyone else can write to would let them run code in the next `netc run`. So, as ssh
does with its key files, a cache directory is used only when it is ours and writable by nobody
else; otherwise, and when the cache cannot be written at all (a file in its place, a read-only
or full disk), the run compiles into a private temporary directory with a warning. A damaged
entry (an unreadable index, an empty or foreign module file) is discarded and rebuilt.
"""
from __future__ import annotations

import atexit
import hashlib
import importlib.util
import os
import pickle
import shutil
import stat
import sys
import tempfile
from pathlib import Path

from ..errors import plain

_fallback: dict[str, Path] = {}     # kind -> this process's private directory, once needed


def cache_root() -> Path:
    root = os.environ.get("NETC_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "netc")
    return Path(root)


def unsafe_reason(path: Path) -> str | None:
    """Why `path` may not hold code netc runs (None: a directory of ours nobody else can write)."""
    try:
        st = path.lstat()
    except OSError as e:
        return f"cannot read it ({e.strerror})"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a directory"
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return "another user owns it"
    if st.st_mode & 0o022:
        return "other users can write to it"
    return None


def cache_dir(kind: str) -> Path:
    """The directory for `kind` under the cache root, created private (0700) when missing; a
    private temporary one (with a warning, once) when the cache may not or cannot be used."""
    if kind in _fallback:
        return _fallback[kind]
    root = cache_root()
    d = root / kind
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        d.mkdir(mode=0o700, exist_ok=True)
    except OSError as e:
        return _private_fallback(kind, f"cannot use the kernel cache {plain(str(root))}: {e.strerror}")
    numba_cache = d / "__pycache__"
    for p in [root, d] + ([numba_cache] if os.path.lexists(numba_cache) else []):
        reason = unsafe_reason(p)
        if reason:
            return _private_fallback(kind, f"not using the kernel cache {plain(str(p))}: {reason}")
    return d


def _private_fallback(kind: str, why: str) -> Path:
    if kind not in _fallback:
        _fallback[kind] = Path(tempfile.mkdtemp(prefix=f"netc-{kind}-"))
        atexit.register(shutil.rmtree, _fallback[kind], ignore_errors=True)
        print(f"warning: {why}; compiling into {_fallback[kind]} (nothing is reused across runs; "
              f"set NETC_CACHE to a directory of your own)", file=sys.stderr)
    return _fallback[kind]


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)     # atomic: a concurrent reader never sees half a file


def drop_broken_index(d: Path, stem: str) -> None:
    """Remove numba cache files of module `stem` that numba could not load (a truncated or
    empty index or data file would otherwise fail every later run)."""
    cache = d / "__pycache__"
    if not cache.is_dir():
        return
    for index in cache.glob(f"{stem}.*.nbi"):
        try:
            with open(index, "rb") as f:
                pickle.load(f)                  # numba's version stamp
                pickle.loads(f.read())          # (source stamp, overloads)
            broken = any(p.stat().st_size == 0 for p in cache.glob(f"{index.name[:-4]}*.nbc"))
        except Exception:  # noqa: BLE001 - any damage means: rebuild
            broken = True
        if broken:
            for p in [index, *cache.glob(f"{index.name[:-4]}*.nbc")]:
                p.unlink(missing_ok=True)


def import_source(source: str, kind: str, prefix: str = "m"):
    """The module defined by `source`, written to cache_dir(kind)/<prefix>_<hash>.py once."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:24]
    name = f"netc_{kind}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    data = source.encode()
    d = cache_dir(kind)
    path = d / f"{prefix}_{digest}.py"
    try:
        if not path.is_file() or path.read_bytes() != data:
            if path.is_dir() or path.is_symlink():
                raise IsADirectoryError(f"{path} is not a plain file")
            _write(path, data)
        drop_broken_index(d, path.stem)
    except OSError as e:
        d = _private_fallback(kind, f"cannot write the kernel cache {plain(str(path))}: {e.strerror or e}")
        path = d / f"{prefix}_{digest}.py"
        _write(path, data)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
