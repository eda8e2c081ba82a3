"""`netc explain`: pictures (PNG) and raw maps (.npy) of what a network computes."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..compiler.errors import NetcError
from ..compiler.report import plain
from .common import check_output, load_model
from .run import _input_source, _read_input, imagenet_classes, preprocessing, read_labels

OCCLUSION_BATCH = 16


def _image(args, net, ex) -> np.ndarray:
    """The one input image (or .npy item) as the network's input array [1, ...], preprocessed."""
    x = _read_input(args, net)
    if x is None:
        raise NetcError(f"--method {args.method} needs an input: --input IMAGE (or X.npy)")
    name = ex.required_inputs[0]
    shape = (1, *ex.input_shape(name)[1:])
    if isinstance(x, list):
        if len(x) != 1:
            raise NetcError(f"--method {args.method} explains one image; got {len(x)}")
        from ..runtime.images import load_images
        prep = preprocessing(args, _input_source(net, ex)[1])
        print(f"note: preprocessing: {prep.describe(shape)}", file=sys.stderr)
        return load_images(x, shape, prep), prep.color_order
    if tuple(x.shape[1:]) != tuple(shape[1:]):
        raise NetcError(f"the input array is {list(x.shape)}; the network takes {list(shape)}")
    return x[:1].astype(np.float32), "RGB"


def _labels(args, n: int):
    if args.labels:
        return read_labels(args.labels)
    return imagenet_classes() if n == 1000 else None


def explain_command(args) -> int:
    from ..runtime import explain, pictures
    check_output(args.output, args, others=[args.save_map])
    if args.save_map:
        check_output(args.save_map, args)
    net = load_model(args)
    name = Path(net.graph.graph["path"]).stem if net.graph.graph.get("language") == "onnx" else net.name
    if args.method == "filters":
        layer = args.layer or explain.first_conv(net)
        ex = net.compile(weights=args.weights, seed=args.seed)
        w = explain.filters(net, ex.weights, layer)
        if w.shape[1] == 3:
            pixels = pictures.grid(w.transpose(0, 2, 3, 1), each=False)     # first layer: RGB tiles
        else:
            shown = w[:64]
            pixels = pictures.grid(shown.reshape(-1, *w.shape[2:]), cols=w.shape[1], each=False)
        caption, out = f"{name} · {layer} · filters {list(w.shape)}", w
    else:
        score = explain.score_blob(net)
        layer = args.layer
        blob = explain.layer_blob(net, layer) if layer else score
        batch = OCCLUSION_BATCH if args.method == "occlusion" else 1
        ex = net.compile(weights=args.weights, seed=args.seed, batch=batch, blobs=sorted({blob, score}))
        x, order = _image(args, net, ex)
        if args.method == "features":
            if not layer:
                raise NetcError("--method features needs --layer NAME (a layer whose output to show)")
            out = explain.features(ex, blob, x[0])
            maps = out if out.ndim == 3 else out.reshape(-1, 1, 1)
            pixels = pictures.grid(maps)
            caption = f"{name} · {layer} · features {list(out.shape)}"
        else:                                   # occlusion
            if layer:
                raise NetcError("--method occlusion occludes the input; it takes no --layer")
            s = explain.scores(ex, score, x)[0]
            labels = _labels(args, s.size)
            k = int(np.argmax(s)) if args.target is None else explain.class_index(args.target, s.size, labels)
            out = explain.occlusion(ex, score, x[0], k, args.window, args.stride, args.baseline)
            pixels = pictures.heat_over(pictures.display_image(x[0], order), out)
            label = f" {labels[k]}" if labels and k < len(labels) else ""
            caption = (f"{name} · occlusion {args.window}x{args.window}/{args.stride} · class {k}{label} "
                       f"(score {s[k]:.3g}; largest drop {out.max():.3g})")
    pictures.save(args.output, pixels, caption)
    if args.save_map:
        np.save(args.save_map, out)
    print(f"wrote {plain(args.output)}" + (f" and {plain(args.save_map)}" if args.save_map else "")
          + f": {args.method}, map {list(np.shape(out))}")
    if args.weights is None and net.graph.graph.get("weights") is None:
        print(f"note: random weights (seed {args.seed}): the pictures show an untrained network; "
              "--weights FILE explains a trained one", file=sys.stderr)
    return 0


def add_parser(sub, model_args, positive, natural) -> None:
    p = sub.add_parser("explain", help="pictures of what the network computes: filters, feature maps, occlusion",
                       description="Understand a ConvNet: a convolution's filters, a layer's feature maps for "
                       "an image, or the occlusion experiment (Zeiler & Fergus 2013: how much the class score "
                       "drops when a square of the input is hidden). Writes a PNG and, with --save-map, the raw "
                       "map as .npy.")
    model_args(p)
    p.add_argument("--method", required=True, choices=("filters", "features", "occlusion"))
    p.add_argument("--input", nargs="+", help="the image (or X.npy) to explain")
    p.add_argument("--layer", help="filters: the convolution (default: the first); features: the layer to show")
    p.add_argument("--target", help="occlusion: class index or name (default: the top class)")
    p.add_argument("--window", type=positive, default=8, help="occlusion: the hidden square's side (default 8)")
    p.add_argument("--stride", type=positive, default=4, help="occlusion: its step (default 4)")
    p.add_argument("--baseline", type=float, default=0.0,
                   help="occlusion: the value hidden pixels take, in the input's units after preprocessing (default 0)")
    p.add_argument("--weights", help=".npz or .caffemodel weights (default: the file's own, else seeded random)")
    p.add_argument("--seed", type=natural, default=0)
    p.add_argument("--labels", help="class names, one per line (default for 1000 classes: ImageNet's)")
    p.add_argument("-o", "--output", required=True, help="the picture, FILE.png")
    p.add_argument("--save-map", dest="save_map", metavar="FILE.npy", help="the raw map as a .npy file")
    g = p.add_argument_group("image preprocessing (as for run)")
    for flag, kw in (("--mean", {}), ("--std", {}), ("--scale", {"type": float, "default": None}),
                     ("--pixels", {"choices": ("0-255", "0-1"), "default": None}),
                     ("--channels", {"choices": ("rgb", "bgr"), "default": None}), ("--resize", {}),
                     ("--crop", {"choices": ("center", "none"), "default": None})):
        g.add_argument(flag, **kw)
