"""One section of BENCHMARKS.md replaced in place (or appended), the others left as they are."""
from __future__ import annotations

import re
from pathlib import Path

PATH = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def write_section(title: str, text: str) -> None:
    """'## {title}' and its text, up to the next '## ' heading."""
    old = PATH.read_text() if PATH.exists() else "# Benchmarks\n"
    section = f"## {title}\n\n{text.rstrip()}\n"
    pattern = re.compile(rf"## {re.escape(title)}\n.*?(?=\n## |\Z)", re.S)
    new = pattern.sub(lambda _: section, old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + section
    PATH.write_text(new)
