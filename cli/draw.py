"""`netc draw` and `netc report`: a diagram or an HTML page of the model (with --explain, a gallery
of explain pictures), written to a file."""
from __future__ import annotations

import argparse
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


# the Explain gallery, in this order; features and filters are the first convolution's
REPORT_METHODS = ("saliency", "guided-backprop", "gradcam", "guided-gradcam", "occlusion", "features", "filters")


def explain_gallery(args, net) -> tuple[list, str]:
    """([(method, what it explains, PNG bytes or None)], a line heading them) for the image of
    --explain: one batch-1 compile keeping every value serves every method; the class is the
    one occlusion finds (--target or the top class); a method the network cannot do is a note."""
    from ..runtime import pictures
    from ..runtime.explain import class_count, first_conv, score_blob
    from .explain import _image, _labels, _picture
    ex = net.compile(weights=args.weights, seed=args.seed, batch=1, keep_every=True)
    x, order = _image(args, net, ex)
    image = x[0]
    if image.ndim != 3:
        raise NetcError(f"--explain needs an image input [C, H, W]; this network takes {list(x.shape)}")
    side = min(image.shape[1:])
    window = min(max(4, side // 8), side)
    labels = _labels(args, class_count(ex, score_blob(net)))
    name = Path(net.graph.graph["path"]).stem if net.graph.graph.get("language") == "onnx" else net.name
    stride = max(1, window // 2)
    done = {"occlusion": ex.explain("occlusion", image, args.target, window=window, stride=stride, labels=labels)}
    k = done["occlusion"][1]["target"]          # --target checked once: a bad one ends the command
    for method in REPORT_METHODS:
        if method in done:
            continue
        try:
            layer = first_conv(net) if method in ("features", "filters") else None
            done[method] = ex.explain(method, image, k, layer, labels=labels)
        except NetcError as e:
            print(f"warning: the report shows no {method}: {plain(e.message)}", file=sys.stderr)
            done[method] = (None, e.message)
    gallery = []
    for method in REPORT_METHODS:
        out, info = done[method]
        if out is None:
            gallery.append((method, info, None))
            continue
        text = pictures.explained(info, labels, out.shape)
        gallery.append((method, text, pictures.png(_picture(method, out, image, order), f"{name} · {method} · {text}")))
    note = (f"{Path(args.explain).name}: class {k}" + (f" {labels[k]}" if labels and k < len(labels) else "")
            + (" (--target)" if args.target is not None else " (the top class)")
            + f"; occlusion window {window}, stride {stride}; ")
    if args.weights is None and net.graph.graph.get("weights") is None:
        note += f"random weights (seed {args.seed}): the pictures show an untrained network"
        print(f"note: {note.rsplit('; ', 1)[1]}; --weights FILE explains a trained one", file=sys.stderr)
    else:
        note += f"weights {Path(args.weights).name}" if args.weights else "the model file's own weights"
    return gallery, note


def report_command(args) -> int:
    from ..compiler.html_report import page_and_notice
    if args.explain:      # read as explain reads --input; checked against the output with the other inputs
        args = argparse.Namespace(**{**vars(args), "input": [args.explain], "method": "explain"})
    check_output(args.output, args)
    net = load_model(args)
    gallery, note = None, ""
    if args.explain:
        from ..runtime.files import regular_file
        regular_file(Path(args.explain), "input" if args.explain.endswith(".npy") else "image")
        gallery, note = explain_gallery(args, net)
    analysis = net.analyze(batch=getattr(args, "batch", 1))      # after explain's compile (batch 1)
    page, notice = page_and_notice(analysis, explain=gallery, explain_note=note)
    if notice:
        print(f"warning: the report has no diagram: {plain(notice)}", file=sys.stderr)
    try:
        Path(args.output).write_text(page, encoding="utf-8")
    except OSError as e:
        raise NetcError(f"cannot write {args.output}: {e.strerror}") from None
    return 0
