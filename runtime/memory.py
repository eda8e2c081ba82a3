"""How much memory a run may take, checked before it allocates.

A plan that does not fit would otherwise end in the kernel's OOM killer (no message at all) or a
MemoryError deep in numpy; `require` turns it into a NetcError that says what was needed, what is
available, and what to change. Available memory is the smallest of /proc/meminfo's MemAvailable
and the cgroup's limit minus its usage (v2 memory.max, v1 memory.limit_in_bytes; reclaimable
page cache not counted as used); when none of them can be read the check is skipped rather than
guessed.
"""
from __future__ import annotations

from pathlib import Path

from ..compiler.errors import NetcError

UNLIMITED = 1 << 60  # cgroup v1 reports "no limit" as a huge number near 2^63


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def mem_available(meminfo: Path) -> int | None:
    try:
        lines = meminfo.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("MemAvailable:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) * (1024 if parts[-1] == "kB" else 1)
    return None


def _inactive_file(stat: Path) -> int:
    """Page cache the kernel reclaims before it kills: not counted as used."""
    try:
        for line in stat.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key in ("inactive_file", "total_inactive_file") and value.strip().isdigit():
                return int(value)
    except OSError:
        pass
    return 0


def _cgroup_dirs(root: Path, proc_cgroup: Path) -> list[Path]:
    """This process' memory cgroup (v2 "0::/path", v1 "N:memory:/path") and the mount root."""
    dirs = []
    try:
        for line in proc_cgroup.read_text().splitlines():
            _, controllers, rel = line.split(":", 2)
            if controllers == "":
                dirs.append(root / rel.lstrip("/"))
            elif "memory" in controllers.split(","):
                dirs.append(root / "memory" / rel.lstrip("/"))
    except (OSError, ValueError):
        pass
    return dirs + [root, root / "memory"]


def cgroup_headroom(root: Path, proc_cgroup: Path = Path("/proc/self/cgroup")) -> int | None:
    """The smallest limit - usage over this process' cgroup and the mount root (v2 memory.max,
    v1 memory.limit_in_bytes); None where no limit is set."""
    room = []
    for d in _cgroup_dirs(root, proc_cgroup):
        for limit_file, usage_file in (("memory.max", "memory.current"),
                                       ("memory.limit_in_bytes", "memory.usage_in_bytes")):
            limit = _read_int(d / limit_file)  # v2 writes "max" when unlimited: not an int
            if limit is not None and limit < UNLIMITED:
                used = max((_read_int(d / usage_file) or 0) - _inactive_file(d / "memory.stat"), 0)
                room.append(max(limit - used, 0))
    return min(room) if room else None


def available_bytes(meminfo: Path = Path("/proc/meminfo"), cgroup: Path = Path("/sys/fs/cgroup"),
                    proc_cgroup: Path = Path("/proc/self/cgroup")) -> int | None:
    known = [v for v in (mem_available(meminfo), cgroup_headroom(cgroup, proc_cgroup)) if v is not None]
    return min(known) if known else None


def _gib(n: int) -> str:
    return f"{n / 2**30:,.2f} GiB"


def require(parts: dict[str, int], batch: int, available: int | None = None) -> None:
    """Refuse (NetcError) when the named byte counts together exceed the available memory."""
    available = available_bytes() if available is None else available
    need = sum(parts.values())
    if available is None or need <= available:
        return
    detail = ", ".join(f"{k} {_gib(v)}" for k, v in parts.items() if v)
    hint = (f"try a smaller --batch (now {batch})" if batch > 1 else
            "the network is too large for this machine even at batch 1")
    raise NetcError(f"running this network needs {_gib(need)} ({need:,} bytes: {detail}) but only "
                    f"{_gib(available)} ({available:,} bytes) of memory is available; {hint}")
