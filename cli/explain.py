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


def _picture(method, out, x, order):
    """The method's picture: tiles, or the map over the image."""
    from ..runtime import pictures
    if method == "filters":
        if out.shape[1] == 3:
            return pictures.grid(out.transpose(0, 2, 3, 1), each=False)         # first layer: RGB tiles
        return pictures.grid(out[:64].reshape(-1, *out.shape[2:]), cols=out.shape[1], each=False)
    if method == "features":
        return pictures.grid(out if out.ndim == 3 else out.reshape(-1, 1, 1))
    image = pictures.display_image(x, order)
    if method in ("occlusion", "gradcam"):
        return pictures.heat_over(image, out)
    if method == "saliency":                     # Simonyan et al.: max |gradient| over channels
        return pictures.grid(np.abs(out).max(axis=0)[None])
    return (pictures.display_image(out, order) * 255).round().astype(np.uint8)


def explain_command(args) -> int:
    from ..runtime import pictures
    from ..runtime.explain import GRADIENT_RULES
    check_output(args.output, args, others=[args.save_map])
    if args.save_map:
        check_output(args.save_map, args)
    net = load_model(args)
    name = Path(net.graph.graph["path"]).stem if net.graph.graph.get("language") == "onnx" else net.name
    batch = OCCLUSION_BATCH if args.method == "occlusion" else 1
    ex = net.compile(weights=args.weights, seed=args.seed, batch=batch,
                     keep_every=args.method in (*GRADIENT_RULES, "gradcam", "guided-gradcam"))
    x, order = (None, "RGB") if args.method == "filters" else _image(args, net, ex)
    labels = read_labels(args.labels) if args.labels else None
    if labels is None and args.method not in ("filters", "features"):
        from ..runtime.explain import class_count, score_blob
        labels = _labels(args, class_count(ex, score_blob(net)))
    out, info = ex.explain(args.method, None if x is None else x[0], args.target, args.layer, window=args.window,
                           stride=args.stride, baseline=args.baseline, labels=labels)
    caption = f"{name} · {args.method}"
    if "layer" in info:
        caption += f" · {info['layer']}"
    if "target" in info:
        k = info["target"]
        caption += f" · class {k}" + (f" {labels[k]}" if labels and k < len(labels) else "") + \
            f" (score {info['score']:.3g})"
    caption += f" · map {list(out.shape)}"
    pictures.save(args.output, _picture(args.method, out, None if x is None else x[0], order), caption)
    if args.save_map:
        np.save(args.save_map, out)
    print(f"wrote {plain(args.output)}" + (f" and {plain(args.save_map)}" if args.save_map else "")
          + f": {args.method}, map {list(np.shape(out))}")
    if args.weights is None and net.graph.graph.get("weights") is None:
        print(f"note: random weights (seed {args.seed}): the pictures show an untrained network; "
              "--weights FILE explains a trained one", file=sys.stderr)
    return 0


def add_parser(sub, model_args, positive, natural) -> None:
    from ..runtime.explain import METHODS
    p = sub.add_parser("explain", help="pictures of what the network computes: filters, features, occlusion, "
                       "saliency, deconvnet, guided backprop, Grad-CAM",
                       description="Understand a ConvNet. filters: a convolution's kernels; features: a layer's "
                       "maps for an image; occlusion (Zeiler & Fergus 2013): how much the class score drops when "
                       "a square of the input is hidden; saliency (Simonyan et al. 2014): d score / d input; "
                       "deconvnet and guided-backprop: the same through the papers' ReLU rules; gradcam "
                       "(Selvaraju et al. 2017) at a layer, guided-gradcam its product with guided backprop. The "
                       "score is the input of the final Softmax. Sanity checks (Adebayo et al. 2018): saliency "
                       "and Grad-CAM change when the weights are re-randomized, guided backprop largely does "
                       "not, so it shows the image more than the model. Writes a PNG and, with --save-map, the "
                       "raw map as .npy.")
    model_args(p)
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--input", nargs="+", help="the image (or X.npy) to explain")
    p.add_argument("--layer", help="filters: the convolution (default: the first); features: the layer to show; "
                   "gradcam: the layer (default: the last convolution larger than 1x1)")
    p.add_argument("--target", help="class index or name to explain (default: the top class)")
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
