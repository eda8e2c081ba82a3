"""What every command does the same way: load the model and print its warnings, write output."""
from __future__ import annotations

import sys

from ..compiler.report import plain


def load_model(args):
    """The model named on the command line, its warnings printed with names escaped (a layer
    name is data: it may hold terminal escapes)."""
    from ..compiler.network import load
    net = load(args.model, phase=getattr(args, "phase", "test"))
    for loc, msg in net.graph.graph.get("warnings", []):
        print(f"{plain(str(loc))}: warning: {plain(msg)}", file=sys.stderr)
    return net


def write_output(text: str, path: str | None) -> None:
    if path:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
