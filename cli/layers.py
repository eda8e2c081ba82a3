"""`netc layers`: every layer type netc knows, read from the layer classes themselves (family,
Caffe aliases, parameters with defaults, cost rule, which targets run it), so it cannot drift."""
from __future__ import annotations

import json
import sys

from ..compiler.layers import REGISTRY


def param_text(p) -> str:
    """`name=default`, `name: kind` when there is none; enums list their choices, repeated
    fields end in []."""
    kind = "/".join(p.choices) if p.kind == "enum" else p.kind
    if p.repeated:
        kind += "[]"
    if p.default is None or (p.repeated and not p.default):
        return f"{p.name}: {kind}"
    default = str(p.default).lower() if isinstance(p.default, bool) else p.default
    return f"{p.name}={default}" + (f" ({kind})" if p.kind == "enum" else "")


def describe(layer) -> dict:
    return {"type": layer.type, "family": layer.family, "aliases": list(layer.aliases),
            "params": [param_text(p) for p in layer.params], "cost": layer.cost,
            "cpu": layer.runs_on("cpu"), "cuda": layer.runs_on("cuda"), "inference": layer.forward}


def layers_command(args) -> int:
    rows = [describe(layer) for layer in sorted(REGISTRY.values(), key=lambda l: (l.family, l.type))]
    if args.family:
        rows = [r for r in rows if r["family"] == args.family]
    if args.format == "json":
        print(json.dumps(rows, indent=1))
        return 0
    out = sys.stdout
    for r in rows:
        runs = ", ".join(t for t in ("cpu", "cuda") if r[t]) or "analysis only"
        print(f"{r['type']}  [{r['family']}]  runs: {runs}" + ("" if r["inference"] else "  (training only)"), file=out)
        if r["aliases"]:
            print(f"    aliases: {', '.join(r['aliases'])}", file=out)
        if r["params"]:
            print(f"    params:  {', '.join(r['params'])}", file=out)
        print(f"    cost:    {r['cost']}", file=out)
    print(f"{len(rows)} layer types", file=out)
    return 0
