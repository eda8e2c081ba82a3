"""Input files that must be read whole: refuse what is not a regular file before opening it."""
from __future__ import annotations

from pathlib import Path

from ..compiler.errors import NetcError


def regular_file(path: Path, what: str) -> Path:
    """`path` if it is a regular file (a FIFO or device would block or never end)."""
    if not path.exists():
        raise NetcError(f"cannot read {what} {path}: no such file")
    if not path.is_file():
        raise NetcError(f"cannot read {what} {path}: not a regular file")
    return path
