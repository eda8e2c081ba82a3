"""`netc zoo list`: one line per bundled model."""
from __future__ import annotations

from ..compiler.report import human, shape_text


def zoo_rows():
    from ..compiler.network import load, zoo_names
    for name in zoo_names():
        net = load(name)
        a = net.analyze()
        src = next((l for l in net.source.splitlines() if l.startswith("# source:")), "# source: -")
        inputs = [r.output_shapes[0] for r in a.layers if not r.inputs and r.forward]
        yield name, a.totals["params"], a.totals["macc"], inputs, src.split(":", 1)[1].strip()


def print_zoo(console=None) -> None:
    """One line per model: the long source column gets what the terminal width leaves and is
    cut with an ellipsis, or dropped when not even a short piece of it would fit."""
    from rich.console import Console
    from rich.table import Table
    console = console or Console()
    head = ("model", "params", "MACs", "input", "source")
    rows = [(name, f"{params:,}", human(macc), shape_text(inputs), src)
            for name, params, macc, inputs, src in zoo_rows()]
    widths = [max(len(r[k]) for r in [head, *rows]) for k in range(4)]
    left = console.width - sum(widths) - 3 * len(head) - 1   # cell padding and borders
    ncols = 5 if left >= 12 else 4
    t = Table(header_style="bold")
    for k, c in enumerate(head[:ncols]):
        t.add_column(c, justify="right" if c in ("params", "MACs") else "left", no_wrap=True,
                     overflow="ellipsis", min_width=widths[k] if k < 4 else None,
                     max_width=left if k == 4 else None)
    for r in rows:
        t.add_row(*r[:ncols])
    console.print(t)
