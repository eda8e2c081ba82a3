"""Analysis -> one self-contained HTML page (`netc report`): diagram, sortable table, totals, plots.

The page must open from an e-mail attachment or an air-gapped machine, so everything is inline:
the Graphviz SVG, SVG plots drawn here (no matplotlib), a few lines of CSS and JS. A
Content-Security-Policy forbids every fetch, so a stray external reference fails loudly in the
browser instead of silently phoning out. Model strings are data: they pass through `_e` only.
"""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from . import passes
from .diagram import FAMILY_STYLE, family_of, render, to_dot, visible
from .errors import NetcError
from .layers import numel
from .report import human, human_bytes, shape_text

CSP = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:; "
       "base-uri 'none'; form-action 'none'")


def _e(s) -> str:
    return html.escape(visible(str(s)), quote=True)


# ---- data -------------------------------------------------------------------------------------
def live_bytes(analysis) -> list[int]:
    """Bytes of activations alive while each forward layer runs, from the buffer plan that
    plan_memory left on the nodes (buffer_of); its maximum is totals["peak_activation_bytes"]."""
    g = analysis.network.graph
    size = passes.DTYPE_BYTES[analysis.dtype]
    order = [n for n in g.nodes if g.nodes[n]["forward"]]
    pos = {n: i for i, n in enumerate(order)}
    last_use: dict[tuple, int] = {}
    for n in order:
        for src in g.nodes[n]["inputs"]:
            last_use[tuple(src)] = pos[n]
    start: dict[int, int] = {}
    nbytes: dict[int, int] = {}
    end: dict[int, int] = {}
    for i, n in enumerate(order):
        d = g.nodes[n]
        for port, b in enumerate(d["buffer_of"]):
            if b not in start:
                start[b], nbytes[b], end[b] = i, numel(d["shapes"][port]) * size, i
            end[b] = max(end[b], last_use.get((n, port), len(order)))
    delta = [0] * (len(order) + 1)
    for b, s in start.items():
        delta[s] += nbytes[b]
        delta[min(end[b], len(order) - 1) + 1] -= nbytes[b]
    curve, live = [], 0
    for i in range(len(order)):
        live += delta[i]
        curve.append(live)
    return curve


# ---- SVG plots --------------------------------------------------------------------------------
def _nice_step(top: float, ticks: int = 4) -> float:
    raw = top / ticks
    mag = 10 ** (len(str(int(raw))) - 1) if raw >= 1 else 1
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def plot(title: str, names: list[str], values: list[int], colors: list[str], fmt, *,
         curve: list[int] | None = None, mark_peak: int | None = None, width: int = 1100,
         height: int = 230, plot_id: str = "") -> str:
    """A bar chart over the layers (one bar per layer, <title> tooltips), optionally with a
    step curve on the same axis and its peak marked."""
    left, right, top, bottom = 70, 12, 28, 26
    w, h = width - left - right, height - top - bottom
    n = max(len(values), 1)
    vmax = max([*values, *(curve or []), 1])
    step = _nice_step(vmax)
    ymax = step * -(-vmax // step)
    bw = w / n

    def y(v):
        return top + h - h * v / ymax

    # as wide as the page (the viewBox scales to it, text included), not a fixed 1100 px
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" id="{plot_id}" width="100%" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">',
           f'<text x="{left}" y="16" class="ptitle">{_e(title)}</text>']
    t = 0
    while t <= ymax + 1e-9:
        yy = y(t)
        out.append(f'<line x1="{left}" x2="{left + w}" y1="{yy:.1f}" y2="{yy:.1f}" class="grid"/>'
                   f'<text x="{left - 6}" y="{yy + 4:.1f}" class="tick" text-anchor="end">{_e(fmt(t))}</text>')
        t += step
    marks = sorted({round(k * (n - 1) / 4) for k in range(5)}) if n > 1 else [0]
    for k, i in enumerate(marks):   # layer names under the axis: the ends and three between
        xx = left + bw * (i + 0.5)
        anchor = "start" if k == 0 and len(marks) > 1 else "end" if k == len(marks) - 1 and k else "middle"
        label = names[i] if i < len(names) else str(i)
        label = label if len(label) <= 24 else label[:23] + "\u2026"
        out.append(f'<text x="{xx:.1f}" y="{height - 8}" class="tick" text-anchor="{anchor}">'
                   f'<title>#{i} {_e(names[i]) if i < len(names) else i}</title>{_e(label)}</text>')
    for i, (name, v) in enumerate(zip(names, values)):
        if v <= 0:
            continue
        yy = y(v)
        out.append(f'<rect x="{left + bw * i:.2f}" y="{yy:.2f}" width="{max(bw * 0.85, 0.6):.2f}" '
                   f'height="{top + h - yy:.2f}" fill="{colors[i]}"><title>#{i} {_e(name)}: '
                   f'{_e(fmt(v))}</title></rect>')
    if curve:
        pts = []
        for i, v in enumerate(curve):
            pts.append(f"{left + bw * i:.2f},{y(v):.2f} {left + bw * (i + 1):.2f},{y(v):.2f}")
        out.append(f'<polyline class="curve" points="{" ".join(pts)}"/>')
    if mark_peak is not None and curve:
        i = max(range(len(curve)), key=curve.__getitem__)
        xx, yy = left + bw * (i + 0.5), y(curve[i])
        anchor = "end" if i > n / 2 else "start"
        dx = -8 if anchor == "end" else 8
        out.append(f'<line x1="{left}" x2="{left + w}" y1="{yy:.1f}" y2="{yy:.1f}" class="peakline"/>'
                   f'<circle cx="{xx:.1f}" cy="{yy:.1f}" r="4" class="peak"><title>peak at #{i} '
                   f'{_e(names[i])}: {_e(fmt(mark_peak))}</title></circle>'
                   f'<text x="{xx + dx:.1f}" y="{yy - 6:.1f}" class="peaktext" text-anchor="{anchor}">peak '
                   f'{_e(fmt(mark_peak))} at {_e(names[i])}</text>')
    out.append("</svg>")
    return "".join(out)


# ---- page -------------------------------------------------------------------------------------
STYLE = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:24px;color:#222}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px}
.sub{color:#666} .warn{background:#fff8e1;border-left:4px solid #f9a825;padding:6px 10px;margin:4px 0}
.totals{border-collapse:collapse} .totals td{padding:2px 14px 2px 0} .totals td.n{text-align:right;font-variant-numeric:tabular-nums}
.diagram{overflow:auto;max-height:min(85vh,1400px);border:1px solid #ddd;padding:6px;background:#fff}
.plot{display:block;margin:6px 0 14px;width:100%;height:auto} .ptitle{font-weight:600;font-size:13px} .tick{font-size:10px;fill:#555}
.grid{stroke:#e4e4e4} .curve{fill:none;stroke:#c62828;stroke-width:1.5} .peak{fill:#c62828}
.peakline{stroke:#c62828;stroke-dasharray:4 3} .peaktext{font-size:11px;fill:#c62828;font-weight:600}
table.layers{border-collapse:collapse;font-size:12.5px} .layers th,.layers td{padding:3px 8px;border-bottom:1px solid #eee}
.layers th{position:sticky;top:0;background:#f4f4f4;cursor:pointer;user-select:none;text-align:left;white-space:nowrap}
.layers th[aria-sort=ascending]::after{content:" \\25B2"} .layers th[aria-sort=descending]::after{content:" \\25BC"}
.layers td.n{text-align:right;font-variant-numeric:tabular-nums} .layers tr.off td{color:#999}
.chip{display:inline-block;width:10px;height:10px;border:1px solid #888;margin-right:5px;vertical-align:-1px}
.legend span{margin-right:14px;font-size:12px}
"""

GALLERY_STYLE = """
.gallery{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
.gallery figure{margin:0;max-width:480px} .gallery img{display:block;max-width:100%;height:auto;border:1px solid #ddd}
.gallery figcaption{font-size:12.5px;margin-top:4px} .gallery .method{font-weight:600}
"""

SCRIPT = """
(function () {
  var table = document.getElementById("layers"), body = table.tBodies[0];
  var heads = table.tHead.rows[0].cells;
  function key(row, col, num) {
    var c = row.cells[col];
    return num ? Number(c.getAttribute("data-v")) : c.textContent.toLowerCase();
  }
  function sortBy(col, dir) {
    var num = heads[col].getAttribute("data-num") === "1";
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a, col, num), y = key(b, col, num);
      var r = x < y ? -1 : x > y ? 1 : Number(a.getAttribute("data-i")) - Number(b.getAttribute("data-i"));
      return dir === "descending" ? -r : r;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    for (var i = 0; i < heads.length; i++) heads[i].removeAttribute("aria-sort");
    heads[col].setAttribute("aria-sort", dir);
  }
  table.tHead.addEventListener("click", function (ev) {
    var th = ev.target.closest("th");
    if (!th) return;
    var dir = th.getAttribute("aria-sort") === "descending" ? "ascending"
            : th.getAttribute("aria-sort") === "ascending" ? "descending"
            : th.getAttribute("data-num") === "1" ? "descending" : "ascending";
    sortBy(th.cellIndex, dir);
  });
  var m = /^#sort=([a-z_]+)(?:-(asc|desc))?$/.exec(location.hash);
  if (m) {
    for (var i = 0; i < heads.length; i++)
      if (heads[i].getAttribute("data-key") === m[1]) sortBy(i, m[2] === "asc" ? "ascending" : "descending");
  }
  var box = document.querySelector(".diagram");
  if (box) box.scrollLeft = (box.scrollWidth - box.clientWidth) / 2;
  document.body.setAttribute("data-ready", "1");
})();
"""

COLUMNS = (  # key, header, numeric
    ("index", "#", True), ("name", "layer", False), ("type", "type", False), ("block", "block", False),
    ("output", "output", False), ("params", "params", True), ("macc", "MACs", True),
    ("flops", "FLOPs", True), ("act", "memory", True), ("rf", "RF", True),
)


def _diagram_svg(net) -> tuple[str, str]:
    """(inline svg, notice); a missing Graphviz costs only the diagram, not the report."""
    try:
        svg = render(to_dot(net.graph, title=net.name), "svg").decode("utf-8")
    except NetcError as e:
        return "", e.message + (f" ({e.hint})" if e.hint else "")
    svg = svg[svg.index("<svg"):]
    return re.sub(r"<!--.*?-->", "", svg, flags=re.S), ""


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _gallery(pictures, note: str) -> str:
    """The Explain section: each picture as an inline PNG over its method and what it explains
    (a picture of None: the method did not run, its text says why)."""
    out = ['<h2 id="explain">Explain</h2>', f'<p class="sub">{_e(note)}</p>' if note else "",
           '<div class="gallery">']
    for method, text, data in pictures:
        if data is None:
            out.append(f'<figure><div class="warn"><span class="method">{_e(method)}</span>: {_e(text)}</div></figure>')
            continue
        if bytes(data[:8]) != PNG_SIGNATURE:
            raise ValueError(f"the {method} picture is not a PNG")
        uri = "data:image/png;base64," + base64.b64encode(bytes(data)).decode("ascii")
        out.append(f'<figure><img alt="{_e(method)}" src="{uri}"><figcaption><span class="method">{_e(method)}'
                   f"</span> \u00b7 {_e(text)}</figcaption></figure>")
    out.append("</div>")
    return "".join(out)


def render_html(analysis, *, diagram: bool = True, explain=None, explain_note: str = "") -> str:
    return page_and_notice(analysis, diagram, explain, explain_note)[0]


def page_and_notice(analysis, diagram: bool = True, explain=None, explain_note: str = "") -> tuple[str, str]:
    """(html, why the diagram is missing or ""). `explain`: an Explain section of pictures,
    (method, what it explains, PNG bytes or None), computed by the caller; `explain_note` heads it."""
    net = analysis.network
    g = net.graph
    rows = analysis.layers
    tt = analysis.totals
    has_blocks = any(r.block for r in rows)
    fams = {r.name: family_of(r.type) for r in rows}
    svg, notice = _diagram_svg(net) if diagram else ("", "diagram not requested")

    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>netc report: {_e(net.name)}</title><style>{STYLE}{GALLERY_STYLE if explain else ''}</style>"
             "</head><body>",
             f"<h1>{_e(net.name)}</h1>",
             f'<div class="sub">{_e(Path(g.graph.get("path") or "").name)} \u00b7 {len(rows)} layers \u00b7 '
             f"batch {analysis.batch} \u00b7 {_e(analysis.dtype)} \u00b7 generated by netc</div>"]
    for loc, msg in g.graph.get("warnings", []):
        parts.append(f'<div class="warn">{_e(f"{loc}: " if loc else "")}warning: {_e(msg)}</div>')

    parts.append('<h2 id="totals">Totals</h2><table class="totals">')
    for label, exact, short in (
            ("layers", f"{tt['layers']:,}", ""),
            ("parameters", f"{tt['params']:,}", f"{human(tt['params'])} \u00b7 {human_bytes(tt['param_bytes'])}"),
            ("buffers", f"{tt['buffers']:,}", human_bytes(tt["buffer_bytes"])),
            ("MACs", f"{tt['macc']:,}", human(tt["macc"])),
            ("FLOPs", f"{tt['flops']:,}", human(tt["flops"])),
            ("activations (summed)", f"{tt['activation_bytes']:,} B", human_bytes(tt["activation_bytes"])),
            ("peak activations", f"{tt['peak_activation_bytes']:,} B",
             human_bytes(tt["peak_activation_bytes"]) + " (liveness-based reuse)")):
        parts.append(f'<tr><td>{label}</td><td class="n">{exact}</td><td>{_e(short)}</td></tr>')
    parts.append("</table>")

    fwd = [r for r in rows if r.forward]
    names = [r.name for r in fwd]
    colors = [FAMILY_STYLE[fams[r.name]][0] for r in fwd]
    present = sorted({fams[r.name] for r in fwd}, key=list(FAMILY_STYLE).index)
    parts.append('<h2 id="plots">Per layer</h2><div class="legend">' + "".join(
        f'<span><i class="chip" style="background:{FAMILY_STYLE[f][0]}"></i>{f}</span>' for f in present)
        + "</div>")
    parts.append(plot("MACs per layer", names, [r.macc for r in fwd], colors, human, plot_id="plot-macs"))
    parts.append(plot("parameters per layer", names, [r.params for r in fwd], colors, human,
                      plot_id="plot-params"))
    curve = live_bytes(analysis)
    parts.append(plot("activation memory: live bytes (line) and bytes allocated by each layer (bars)", names,
                      [r.activation_bytes for r in fwd], colors, human_bytes, curve=curve,
                      mark_peak=tt["peak_activation_bytes"], plot_id="plot-memory"))

    parts.append('<h2 id="diagram">Diagram</h2>')
    parts.append(f'<div class="diagram">{svg}</div>' if svg else f'<div class="warn">{_e(notice)}</div>')

    if explain:
        parts.append(_gallery(explain, explain_note))

    parts.append('<h2 id="layers-h">Layers</h2><p class="sub">click a header to sort</p>')
    parts.append('<table class="layers" id="layers"><thead><tr>' + "".join(
        f'<th data-key="{k}" data-num="{int(num)}">{h}</th>' for k, h, num in COLUMNS
        if k != "block" or has_blocks) + "</tr></thead><tbody>")
    for i, r in enumerate(rows):
        rf = r.receptive_field
        cells = [
            ("n", i, str(i)),
            ("", None, _e(r.name)),
            ("", None, f'<i class="chip" style="background:{FAMILY_STYLE[fams[r.name]][0]}"></i>{_e(r.type)}'),
            *((("", None, _e(r.block)),) if has_blocks else ()),
            ("", None, _e(shape_text(r.output_shapes))),
            ("n", r.params, human(r.params) if r.params else "-"),
            ("n", r.macc, human(r.macc) if r.macc else "-"),
            ("n", r.flops, human(r.flops) if r.flops else "-"),
            ("n", r.activation_bytes, human_bytes(r.activation_bytes) if r.activation_bytes else "-"),
            ("n", max(rf), f"{rf[0]}" if rf[0] == rf[1] else f"{rf[0]}x{rf[1]}"),
        ]
        tds = "".join(f'<td class="n" data-v="{v}" title="{v:,}">{text}</td>' if cls else f"<td>{text}</td>"
                      for cls, v, text in cells)
        parts.append(f'<tr data-i="{i}"{"" if r.forward else " class=off"}>{tds}</tr>')
    parts.append("</tbody></table>")
    parts.append(f"<script>{SCRIPT}</script></body></html>\n")
    return "\n".join(parts), notice
