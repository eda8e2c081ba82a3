"""The `netc` command: parse arguments, call the API, print. Every command's code lives in this
package (common.py loads the model and prints its warnings for all of them).

Heavy modules (numba, graphviz, the report writer) are imported inside the command that
needs them, so `netc analyze` starts fast.
"""
from __future__ import annotations

import argparse
import os
import sys

from ..compiler.errors import NetcError
from .common import preprocessing_flags

EXIT_USER_ERROR = 2


def at_least(low: int):
    """An argparse type: an integer >= `low` (argparse then exits 2 naming the option)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {v}" if low else f"must be 0 or more, got {v}")
        return v
    return parse


positive, natural = at_least(1), at_least(0)


def input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    name, eq, dims = text.rpartition("=")
    sizes = dims.lower().replace("×", "x").split("x")
    if not eq or not name or not all(d.isdigit() and len(d) <= 15 and int(d) > 0 for d in sizes):
        raise argparse.ArgumentTypeError(f"expected NAME=NxCxHxW with positive sizes, e.g. data=1x3x368x368; got {text!r}")
    return name, tuple(int(d) for d in sizes)


def _model(p):
    p.add_argument("model", help="a .prototxt, .net or .onnx file, or a zoo model name (netc zoo list)")
    p.add_argument("--phase", choices=("test", "train"), default="test",
                   help="which Caffe phase's layers to keep (default: test)")
    p.add_argument("--input-shape", dest="input_shape", action="append", type=input_shape, default=[],
                   metavar="NAME=NxCxHxW", help="give an input another shape (placeholder inputs sized at "
                   "run time, e.g. data=1x3x368x368); repeat it for several inputs; N is the batch")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("netc")
    except PackageNotFoundError:
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="netc", description="Analyze, draw and run neural networks "
                                 "written as Caffe .prototxt or native .net files.")
    ap.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")
    ap.add_argument("--version", action="version", version=f"netc {_version()}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("analyze", help="per-layer shapes, params, MACs, memory, receptive fields")
    _model(p)
    p.add_argument("--batch", type=positive, default=1)
    p.add_argument("--dtype", choices=("float32", "float16", "int8"), default="float32")
    p.add_argument("--format", choices=("table", "json", "csv", "markdown"), default=None,
                   help="default: from -o's suffix (.json, .csv, .md), else table")
    p.add_argument("--training", nargs="?", const="sgd", choices=("sgd", "momentum", "adam"),
                   help="also report the memory of a training step with this optimizer, and the backward "
                   "plan of the gradients netc computes (explain's), per layer and in total")
    p.add_argument("--depth", type=natural, default=None,
                   help="table: group layers by .net block path up to this depth")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")

    p = sub.add_parser("convert", help="convert between .prototxt and .net")
    _model(p)
    p.add_argument("--to", choices=("net", "prototxt"), default=None,
                   help="target language (default: the other one)")
    p.add_argument("-o", "--output")

    p = sub.add_parser("fmt", help="print a .net file in canonical form")
    p.add_argument("model")
    p.add_argument("--check", action="store_true", help="exit 1 if the file is not canonical")

    p = sub.add_parser("zoo", help="the bundled classic networks")
    p.add_argument("action", choices=("list",), nargs="?", default="list")

    p = sub.add_parser("draw", help="architecture diagram (Graphviz)")
    _model(p)
    p.add_argument("-o", "--output", required=True, help="FILE.svg, .png, .pdf or .dot")
    p.add_argument("--rankdir", choices=("TB", "LR", "BT", "RL"), default="TB")
    p.add_argument("--collapse", default=None, help="comma-separated .net block names (or 'all') to fold")
    p.add_argument("--detail", choices=("none", "shapes", "full"), default="shapes")
    p.add_argument("--batch", type=positive, default=1)

    p = sub.add_parser("report", help="self-contained HTML report: diagram, table, plots (and explain pictures)")
    _model(p)
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--batch", type=positive, default=1)
    e = p.add_argument_group("explain pictures (with --explain)")
    e.add_argument("--explain", metavar="IMAGE", help="add an Explain gallery for this image (or X.npy): saliency, "
                   "guided backprop, Grad-CAM, guided Grad-CAM, occlusion, the first convolution's features and filters")
    e.add_argument("--weights", help=".npz or .caffemodel weights (default: the file's own, else seeded random)")
    e.add_argument("--seed", type=natural, default=0, help="seed of the random weights")
    e.add_argument("--target", help="class index or name to explain (default: the top class)")
    e.add_argument("--labels", help="class names, one per line (default for 1000 classes: ImageNet's)")
    preprocessing_flags(p, "report")

    p = sub.add_parser("run", help="execute the network (numba CPU kernels, or CUDA with --gpu)")
    _model(p)
    p.add_argument("--weights", help=".npz or .caffemodel weights (default: seeded random weights, said so)")
    p.add_argument("--input", nargs="+", help="X.npy (the whole input array), image files (one per batch item), "
                   "or a folder of images (with --output preds.csv|.jsonl|.parquet: a row per image)")
    p.add_argument("--batch", type=positive, default=None,
                   help="batch size (default: the number of images, else 1; a folder: 8)")
    p.add_argument("--seed", type=natural, default=0, help="seed of the random weights and of a random input")
    p.add_argument("-o", "--output", help="write the network's output blob to this .npy file (a folder: the "
                   "predictions, .csv, .jsonl or .parquet)")
    p.add_argument("--blobs", help="comma-separated blob names to save (with --blobs-out; a folder: as array "
                   "columns of .parquet or .jsonl rows)")
    p.add_argument("--blobs-out", dest="blobs_out", metavar="FILE.npz",
                   help="write the --blobs to this .npz file")
    p.add_argument("--top", type=positive, default=None, help="print the K best classes of each item")
    p.add_argument("--labels", help="class names, one per line (default for 1000 classes: ImageNet's, built in)")
    preprocessing_flags(p, "run")
    f = p.add_argument_group("folders of images (--input DIR/)")
    f.add_argument("--recursive", action="store_true", help="also the images of its subfolders")
    f.add_argument("--resume", action="store_true", help="append the images the output does not have yet")
    f.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="run on a Ray cluster (Ray Data map_batches over netc.Predictor actors): ADDRESS of its "
                   "head (e.g. 10.0.0.5:6379 or auto), none: a local cluster on this machine's cores")
    f.add_argument("--actors", type=positive, default=None,
                   help="--ray: how many Predictor actors (default: one per CPU, or per GPU with --gpu)")
    p.add_argument("--profile", action="store_true", help="time each generated step (median of 5 runs)")
    p.add_argument("--gpu", action="store_true",
                   help="run the CUDA target (numba-cuda; NUMBA_ENABLE_CUDASIM=1: the simulator)")
    p.add_argument("--tune", action="store_true",
                   help="with --gpu: time each GEMM layer's tiles on this GPU and use the fastest (cached per GPU model)")

    p = sub.add_parser("bench", help="time the generated kernels")
    _model(p)
    p.add_argument("--batch", type=positive, default=1)
    p.add_argument("--iters", type=positive, default=20)
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--gpu", action="store_true", help="time the CUDA target")
    p.add_argument("--tune", action="store_true",
                   help="with --gpu: time each GEMM layer's tiles on this GPU and use the fastest (cached per GPU model)")

    p = sub.add_parser("build", help="write the generated kernel sources (cuda: also PTX and a manifest)")
    _model(p)
    p.add_argument("--target", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--arch", default="sm_90", help="cuda: GPU architecture of the PTX (sm_80, sm_90, ...)")
    p.add_argument("-j", "--jobs", type=positive, default=None,
                   help="cuda: processes compiling kernels (default: NETC_COMPILE_JOBS or every core)")
    p.add_argument("--tiles", default=None,
                   help="cuda: GEMM tiles from a tuning cache that --tune wrote on a GPU (~/.cache/netc/autotune/*.json)")
    p.add_argument("--batch", type=positive, default=1)
    p.add_argument("-o", "--output", required=True)

    p = sub.add_parser("export", help="write the network with its weights as an ONNX model")
    _model(p)
    p.add_argument("-o", "--output", required=True, help="FILE.onnx")
    p.add_argument("--weights", help=".npz or .caffemodel (default: seeded random weights, as run uses)")
    p.add_argument("--seed", type=natural, default=0)
    p.add_argument("--opset", type=positive, default=17, help="ONNX opset, 13 to 21 (default 17)")
    p.add_argument("--batch", type=positive, default=1)
    p.add_argument("--dynamic-batch", dest="dynamic_batch", action="store_true",
                   help="a symbolic first dimension N on every input and output")

    p = sub.add_parser("weights", help="list the weight keys a model expects; `weights convert SRC -o DST` "
                       "turns a .caffemodel into an .npz and back",
                       usage="netc weights MODEL\n       netc weights convert SRC -o DST [--model MODEL]")
    _model(p)
    p.add_argument("source", nargs="?", help=argparse.SUPPRESS)
    p.add_argument("-o", "--output", help="convert: the file to write (.npz or .caffemodel)")
    p.add_argument("--model", dest="for_model", default=None,
                   help="convert: the model the weights belong to (needed to write a .caffemodel; makes "
                   "reading one exact)")

    from .explain import add_parser as add_explain
    add_explain(sub, _model, positive, natural)

    p = sub.add_parser("layers", help="every layer type: family, aliases, parameters, cost rule, targets")
    p.add_argument("--family", default=None, help="only this family (conv, pool, activation, ...)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from ..runtime import progress
    progress.enable(sys.stderr.isatty() and os.environ.get("NETC_PROGRESS", "1") != "0")
    try:
        return COMMANDS[args.command](args) or 0
    except NetcError as e:
        if args.debug:
            raise
        print(e.render(), file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


def _load(args):
    from .common import load_model
    return load_model(args)


def _write(text: str, path: str | None) -> None:
    from .common import write_output
    write_output(text, path)


FORMAT_OF_SUFFIX = {".json": "json", ".csv": "csv", ".md": "markdown", ".markdown": "markdown"}


def cmd_analyze(args):
    from ..compiler import report
    from .common import check_output
    if args.output:
        check_output(args.output, args)
    if args.format is None:       # -o x.json: the format its suffix names; else the table
        suffix = args.output and os.path.splitext(args.output)[1].lower()
        args.format = FORMAT_OF_SUFFIX.get(suffix, "table")
    if args.training and args.format == "csv":
        raise NetcError("--training adds a summary that CSV's one row per layer has no place for: "
                        "use --format json, markdown or table")
    net = _load(args)
    analysis = net.analyze(batch=args.batch, dtype=args.dtype)
    training = analysis.training_memory(args.training) if args.training else None
    backward = None
    if args.training:
        from ..compiler.backward_plan import explain_backward_plan
        backward = explain_backward_plan(net)
    if args.format == "table" and not args.output:
        report.print_table(analysis, training=training, depth=args.depth, backward=backward)
        return 0
    _write(report.render(analysis, args.format, training=training, depth=args.depth, backward=backward), args.output)
    return 0


def cmd_convert(args):
    from .common import check_output
    if args.output:
        check_output(args.output, args)
    net = _load(args)
    to = args.to or ("prototxt" if net.graph.graph["language"] == "net" else "net")
    _write(net.to_net() if to == "net" else net.to_prototxt(), args.output)
    _say_dropped(net)
    return 0


def _say_dropped(net) -> None:
    """What of a Caffe file the converted one lacks, so nobody trains from it unawares."""
    from ..compiler.errors import plain
    dropped = net.graph.graph.get("dropped") or {}
    if not dropped:
        return
    lines = [f"warning: {plain(net.graph.graph['path'])}: the converted model leaves out what inference does not use:"]
    for kind, names in dropped.items():
        shown = ", ".join(plain(n) for n in names[:4]) + (f", ... ({len(names)} layers)" if len(names) > 4 else "")
        lines.append(f"  {kind}: {shown}")
    print("\n".join(lines), file=sys.stderr)


def cmd_fmt(args):
    from ..compiler.netlang import format_source
    from ..compiler.network import read_text, resolve
    path = resolve(args.model)
    if not str(path).endswith(".net"):
        raise NetcError(f"netc fmt formats .net files; {path.name} is not one "
                        f"(netc convert {path.name} --to net writes it as one)")
    text = read_text(path)
    out = format_source(text, str(path))
    if args.check:
        return 0 if out == text else 1
    sys.stdout.write(out)
    return 0


def cmd_export(args):
    from .common import check_output
    check_output(args.output, args)
    net = _load(args)
    path = net.export_onnx(args.output, weights=args.weights, seed=args.seed, opset=args.opset,
                           batch=args.batch, dynamic_batch=args.dynamic_batch)
    from ..compiler.errors import plain
    for note in net.graph.graph.get("weight_notes", []):   # paths and layer names: data, escaped
        print(f"note: {plain(note)}", file=sys.stderr)
    if args.weights is None and net.graph.graph.get("weights") is None:
        print(f"note: random weights (seed {args.seed}); --weights FILE exports a trained network", file=sys.stderr)
    print(f"wrote {plain(str(path))}")
    return 0


def cmd_zoo(args):
    from .zoo import print_zoo
    print_zoo()
    return 0


def cmd_draw(args):
    from .draw import draw_command
    return draw_command(args)


def cmd_report(args):
    from .draw import report_command
    return report_command(args)


def cmd_run(args):
    from .predict import folder_run, is_folder_run
    if is_folder_run(args):
        return folder_run(args)
    from .run import run_command
    return run_command(args)


def cmd_bench(args):
    from .run import bench_command
    return bench_command(args)


def cmd_build(args):
    from .run import build_command
    return build_command(args)


def cmd_weights(args):
    from .run import weights_command
    return weights_command(args)


def cmd_explain(args):
    from .explain import explain_command
    return explain_command(args)


def cmd_layers(args):
    from .layers import layers_command
    return layers_command(args)


COMMANDS = {name[4:]: fn for name, fn in globals().items() if name.startswith("cmd_")}
