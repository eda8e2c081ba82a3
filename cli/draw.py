"""`netc draw` and `netc report`: a diagram or an HTML page of the model, written to a file."""
from __future__ import annotations

import sys
from pathlib import Path

from ..compiler.errors import NetcError
from ..compiler.report import plain
from .common import check_output, load_model


def draw_command(args) -> int:
    from ..compiler.diagram import draw
    check_output(args.output, args)
    net = load_model(args)

    def warn(e: NetcError):
        print(e.render().replace(": error: ", ": warning: drawing without shapes: ", 1), file=sys.stderr)

    draw(net, args.output, rankdir=args.rankdir, collapse=args.collapse, detail=args.detail,
         batch=getattr(args, "batch", 1), on_warning=warn)
    return 0


def report_command(args) -> int:
    from ..compiler.html_report import page_and_notice
    check_output(args.output, args)
    net = load_model(args)
    analysis = net.analyze(batch=getattr(args, "batch", 1))
    page, notice = page_and_notice(analysis)
    if notice:
        print(f"warning: the report has no diagram: {plain(notice)}", file=sys.stderr)
    try:
        Path(args.output).write_text(page, encoding="utf-8")
    except OSError as e:
        raise NetcError(f"cannot write {args.output}: {e.strerror}") from None
    return 0
