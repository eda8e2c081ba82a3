"""`netc run MODEL --input DIR/ --output preds.csv`: a row per image of a folder, on this
machine or (--ray) on a Ray cluster; a progress bar, a summary, --resume after an interruption."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from ..compiler.errors import NetcError
from ..compiler.report import plain
from .common import check_output
from .run import preprocessing, read_labels

FOLDER_BATCH = 8
FOLDER_TOP = 5


def is_folder_run(args) -> bool:
    return bool(args.input) and len(args.input) == 1 and Path(args.input[0]).is_dir()


def _refuse(args) -> None:
    for flag, given in (("--blobs-out", args.blobs_out), ("--profile", args.profile), ("--tune", args.tune),
                        ("--input-shape", args.input_shape)):
        if given:
            raise NetcError(f"{flag} is for named inputs; a folder run writes rows (--blobs adds array columns)")
    if not args.output:
        raise NetcError("a folder run writes a row per image: --output preds.csv (or .jsonl, .parquet)")
    if args.blobs and Path(args.output).suffix.lower() == ".csv":
        raise NetcError(f"--blobs {args.blobs.split(',')[0]} is an array per image: write Parquet or JSON Lines, not CSV")


def folder_run(args) -> int:
    from ..compiler.network import load
    from ..runtime import progress
    from ..runtime.folder import image_files
    from ..runtime.predict import Predictor, predict_folder
    from ..runtime.rows import open_rows
    _refuse(args)
    check_output(args.output, args)
    folder = args.input[0]
    paths = image_files(folder, args.recursive)
    if args.ray is not None:
        from ..runtime.cluster import ray_module
        ray_module()                                  # missing Ray: said before anything is compiled
    labels = read_labels(args.labels) if args.labels else None
    net = load(args.model)                             # the preprocessing defaults come from its input
    net.analyze(batch=1)
    prep = preprocessing(args, _input_attrs(net))
    change = {f.name: getattr(prep, f.name) for f in dataclasses.fields(prep)}
    blobs = [b for b in (args.blobs or "").split(",") if b]
    predictor = Predictor(args.model, weights=args.weights, target="cuda" if args.gpu else "cpu",
                          batch=args.batch or FOLDER_BATCH, top=args.top or FOLDER_TOP, blobs=blobs, labels=labels,
                          preprocess=change, seed=args.seed)
    if args.ray is None:        # compiled before the output is opened and before the clock starts
        ex = predictor.executable
        print(f"note: preprocessing: {predictor.decoder.prep.describe(ex.input_shape(ex.required_inputs[0]))}",
              file=sys.stderr)
    rows = open_rows(args.output, resume=args.resume)
    if rows.columns is not None:
        from ..runtime.predict import column_names
        try:
            rows.check_columns(column_names(net, predictor.settings["top"], blobs))
        except NetcError:
            rows.close()
            raise
    left = sum(p not in rows.done for p in paths)
    where = "on Ray" + (f" at {plain(args.ray)}" if args.ray else " (a local cluster)") if args.ray is not None \
        else "on this machine"
    print(f"note: {len(paths)} images in {plain(folder)}" + (f", {len(paths) - left} already in {plain(args.output)}"
          if args.resume and rows.done else "") + f"; {left} to do {where}, batch {predictor.settings['batch']}",
          file=sys.stderr)
    bar = progress.ticker(left, "images", unit="images")
    summary = None
    try:
        if args.ray is not None:
            from ..runtime.cluster import predict_on_ray
            summary = predict_on_ray(predictor, paths, rows, address=args.ray or None, actors=args.actors,
                                     gpu=args.gpu, progress=bar)
        else:
            summary = predict_folder(predictor, paths, rows, progress=bar)
    except KeyboardInterrupt:
        print(f"\ninterrupted: {rows.written} row(s) written to {plain(args.output)}; --resume does the rest",
              file=sys.stderr)
        return 130
    finally:
        if bar is not None:
            bar.close()
        rows.close()
    rate = summary["images"] / summary["seconds"] if summary["seconds"] > 0 else 0.0
    print(f"wrote {plain(args.output)}: {summary['images']} image(s) in {summary['seconds']:.1f} s "
          f"({rate:.1f} images/s), {summary['failed']} could not be read"
          + (f"; {summary['actors']} Ray actor(s)" if "actors" in summary else ""))
    if args.weights is None and net.graph.graph.get("weights") is None:
        print(f"note: random weights (seed {args.seed}): these predictions mean nothing; --weights FILE runs "
              "a trained network", file=sys.stderr)
    return 0


def _input_attrs(net) -> dict:
    """The attributes of the network's one image input (its preprocessing defaults)."""
    from ..compiler.layers import REGISTRY
    g = net.graph
    sources = [n for n in g.nodes if REGISTRY[g.nodes[n]["type"]].source]
    if not sources:
        raise NetcError("this network has no input to feed images to")
    return g.nodes[sources[0]]["attrs"]
