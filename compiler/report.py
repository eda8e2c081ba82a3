"""Analysis -> table (rich), JSON, CSV, Markdown. Reads the Analysis; computes nothing new."""
from __future__ import annotations

import csv
import io
import json
import re

from .errors import plain  # noqa: F401 (report.plain: where callers have found it)

COLUMNS = ("name", "type", "output", "params", "macc", "flops", "act", "rf")


def human(n: float, unit: str = "") -> str:
    """1234567 -> '1.23M'. Exact below 1000 so small numbers stay checkable."""
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}{unit}"
    return f"{int(n)}{unit}" if float(n).is_integer() else f"{n:.2f}{unit}"


def human_bytes(n: int) -> str:
    """Decimal megabytes, as the CS231n and Netscope tables use."""
    if n >= 1e9:
        return f"{n / 1e9:.2f} GB"
    if n >= 1e6:
        return f"{n / 1e6:.2f} MB"
    if n >= 1e3:
        return f"{n / 1e3:.1f} kB"
    return f"{n} B"


def shape_text(shapes) -> str:
    return ", ".join("x".join(str(d) for d in s[1:]) if len(s) > 1 else "x".join(map(str, s)) or "scalar"
                     for s in shapes)


def _rows(analysis, depth, grads=None):
    """Layer rows, or groups of layers sharing a '/'-separated name prefix when depth is given;
    the last field is the gradient bytes live at the row's backward step (the most in a group)
    from a backward plan's `gradient_bytes`, None without one."""
    at = (lambda r: grads.get(r.name, 0)) if grads is not None else (lambda r: None)
    if depth is None:
        return [(r.name, r.type, shape_text(r.output_shapes), r.params, r.macc, r.flops,
                 r.activation_bytes, r.receptive_field, r.forward, at(r)) for r in analysis.layers]
    groups: dict[str, list] = {}
    order = []
    for r in analysis.layers:
        key = "/".join(r.name.split("/")[:depth + 1])  # .net scopes, and Caffe's "inception_3a/1x1"
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(r)
    rows = []
    for key in order:
        rs = groups[key]
        last = rs[-1]
        kind = last.type if len(rs) == 1 else f"{len(rs)} layers"
        rows.append((key, kind, shape_text(last.output_shapes), sum(r.params for r in rs),
                     sum(r.macc for r in rs), sum(r.flops for r in rs),
                     sum(r.activation_bytes for r in rs), last.receptive_field, any(r.forward for r in rs),
                     None if grads is None else max(at(r) for r in rs)))
    return rows


def print_table(analysis, training=None, depth=None, console=None, backward=None) -> None:
    from rich.console import Console
    from rich.table import Table
    import sys
    # piped or redirected: no terminal width to respect, so rows are not wrapped at rich's 80
    console = console or (Console() if sys.stdout.isatty() else Console(width=200))
    from rich.markup import escape  # names are data: "[/x]" must not be read as rich markup
    t = Table(title=f"{escape(plain(analysis.network.name))}  (batch {analysis.batch}, {analysis.dtype})",
              show_lines=False, header_style="bold", pad_edge=False, expand=False)
    t.add_column("layer", overflow="fold", max_width=28)
    t.add_column("type", max_width=12, overflow="ellipsis")
    t.add_column("output", overflow="fold")
    t.add_column("params", justify="right")
    t.add_column("MACs", justify="right")
    t.add_column("memory", justify="right")
    t.add_column("RF", justify="right")
    if backward:
        t.add_column("grads", justify="right")
    for name, typ, out, params, macc, flops, act, rf, fwd, grad in _rows(analysis, depth, backward and
                                                                      backward["gradient_bytes"]):
        style = None if fwd else "dim"
        t.add_row(escape(plain(name)), typ, out, human(params) if params else "-", human(macc) if macc else "-",
                  human_bytes(act) if act else "-", f"{rf[0]}" if rf[0] == rf[1] else f"{rf[0]}x{rf[1]}",
                  *([human_bytes(grad) if grad else "-"] if backward else []), style=style)
    console.print(t)
    console.print(totals_text(analysis, training, backward), markup=False)


def totals_text(analysis, training=None, backward=None) -> str:
    tt = analysis.totals
    lines = [
        f"layers                 {tt['layers']}",
        f"params                 {tt['params']:,}  ({human(tt['params'])}, {human_bytes(tt['param_bytes'])})",
        f"buffers                {tt['buffers']:,}",
        f"MACs                   {tt['macc']:,}  ({human(tt['macc'])})",
        f"FLOPs                  {tt['flops']:,}  ({human(tt['flops'])})",
        f"activations (summed)   {human_bytes(tt['activation_bytes'])}",
        f"peak activations       {human_bytes(tt['peak_activation_bytes'])}  (liveness-based reuse)",
    ]
    if training:
        lines.append(f"training step ({training['optimizer']})  {human_bytes(training['total'])}  = "
                     + " + ".join(f"{k.replace('_', ' ')} {human_bytes(v)}" for k, v in training.items()
                                  if k not in ("total", "optimizer")))
    if backward:
        lines += backward_lines(backward)
    return "\n".join(lines) + "\n"


def backward_lines(b: dict) -> list[str]:
    """The backward plan (compiler/backward_plan.py) in the totals' layout."""
    where = f"  (at {plain(b['peak_layer'])})" if b["peak_layer"] else ""
    lines = [
        f"backward pass          d {plain(b['score'])} / d inputs and activations, as explain runs it (float32)",
        "  weight gradients     not computed",
        f"  forward values kept  {human_bytes(b['kept_bytes'])}  (every layer's output in its own buffer: the arena)",
        f"  peak gradients       {human_bytes(b['peak_gradient_bytes'])}{where}",
        f"  total                {human_bytes(b['total_bytes'])}  (besides weights and kernel scratch)",
    ]
    if b["no_rule"]:
        lines.append(f"  no backward rule     {', '.join(plain(n) for n in b['no_rule'])} (the backward stops there)")
    return lines


CSV_FIELDS = ("name", "type", "inputs", "outputs", "output_shapes", "params", "buffers", "macc", "flops",
              "activation_bytes", "param_bytes", "receptive_field", "jump")


def _md(text: str) -> str:
    """A name inside one Markdown line: no new lines, table cells or raw HTML from the model file."""
    return plain(text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;"))


def render(analysis, fmt: str, training=None, depth=None, backward=None) -> str:
    if fmt == "json":
        d = analysis.to_dict()
        if training:
            d["training"] = training
        if backward:
            d["backward"] = backward
        return json.dumps(d, indent=1) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(CSV_FIELDS)
        for r in analysis.layers:
            d = r.to_dict()
            w.writerow([" ".join(d[k]) if k in ("inputs", "outputs") else
                        ";".join("x".join(map(str, s)) for s in d[k]) if k == "output_shapes" else
                        "x".join(map(str, d[k])) if k in ("receptive_field", "jump") else d[k]
                        for k in CSV_FIELDS])
        return buf.getvalue()
    if fmt == "markdown":
        extra = (" grads |", "--:|") if backward else ("", "")
        out = [f"# {_md(analysis.network.name)} (batch {analysis.batch}, {analysis.dtype})", "",
               "| layer | type | output | params | MACs | memory | RF |" + extra[0],
               "|---|---|---|--:|--:|--:|--:|" + extra[1]]
        for name, typ, shape, params, macc, flops, act, rf, fwd, grad in _rows(analysis, depth, backward and
                                                                             backward["gradient_bytes"]):
            esc = _md(name)
            out.append(f"| {esc} | {typ} | {shape} | {params:,} | {macc:,} | {act:,} | {rf[0]}x{rf[1]} |"
                       + (f" {grad:,} |" if backward else ""))
        text = totals_text(analysis, training, backward).rstrip()
        fence = "`" * max(3, 1 + max((len(m) for m in re.findall("`+", text)), default=0))  # names may hold ```
        out += ["", fence, text, fence, ""]
        return "\n".join(out)
    buf = io.StringIO()
    from rich.console import Console
    print_table(analysis, training, depth, console=Console(file=buf, width=100, color_system=None), backward=backward)
    return buf.getvalue()
