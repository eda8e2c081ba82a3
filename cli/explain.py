"""`netc explain`: pictures (PNG) and raw maps (.npy) of what a network computes."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..compiler.errors import NetcError
from ..compiler.report import plain
from .common import check_output, load_model, preprocessing_flags
from .run import _input_source, _read_input, imagenet_classes, preprocessing, read_labels

OCCLUSION_BATCH = 16
FOLDER_BATCH = 8


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
    if method == "class-model":
        return (pictures.display_image(out, order) * 255).round().astype(np.uint8)
    image = pictures.display_image(x, order)
    if method in ("occlusion", "gradcam"):
        return pictures.heat_over(image, out)
    if method == "saliency":                     # Simonyan et al.: max |gradient| over channels
        return pictures.grid(np.abs(out).max(axis=0)[None])
    return (pictures.display_image(out, order) * 255).round().astype(np.uint8)


def _bounds(prep, c: int):
    """The per-channel range a preprocessed pixel can take (class-model clips to it)."""
    mean = np.broadcast_to(np.asarray(prep.mean, np.float64) if prep.mean_image is None
                           else prep.mean_image.reshape(c, -1).mean(axis=1), (c,))
    std = np.broadcast_to(np.asarray(prep.std, np.float64), (c,))
    lo, hi = ((v * prep.pixel_scale - mean) / std * prep.scale for v in (0.0, 255.0))
    return lo, hi


def _folder(args, net, ex):
    """The folder's image paths and a decoder for them (--images DIR)."""
    from ..runtime.folder import image_files
    from ..runtime.images import Decoder
    if not args.images:
        raise NetcError(f"--method {args.method} walks a folder of images: --images DIR/")
    paths = image_files(args.images, args.recursive)
    prep = preprocessing(args, _input_source(net, ex)[1])
    shape = ex.input_shape(ex.required_inputs[0])
    print(f"note: {len(paths)} images; preprocessing: {prep.describe(shape)}", file=sys.stderr)
    return paths, Decoder(shape, prep), prep


def explain_command(args) -> int:
    from ..runtime import pictures, progress
    from ..runtime.explain import FOLDER_METHODS, GRADIENT_RULES
    check_output(args.output, args, others=[args.save_map])
    if args.save_map:
        check_output(args.save_map, args)
    net = load_model(args)
    name = Path(net.graph.graph["path"]).stem if net.graph.graph.get("language") == "onnx" else net.name
    batch = OCCLUSION_BATCH if args.method == "occlusion" else FOLDER_BATCH if args.method in FOLDER_METHODS else 1
    ex = net.compile(weights=args.weights, seed=args.seed, batch=batch,
                     keep_every=args.method in (*GRADIENT_RULES, "gradcam", "guided-gradcam", "class-model"))
    options = {"window": args.window, "stride": args.stride, "baseline": args.baseline, "seed": args.seed}
    x, order, paths = None, "RGB", None
    if args.method in FOLDER_METHODS:
        paths, decode, prep = _folder(args, net, ex)
        order = prep.color_order
        units = [int(u) for u in args.units.split(",")] if args.units else None
        bar = progress.ticker(len(paths), f"{args.method} over {plain(args.images)}", unit="images")
        options.update(images=paths, decode=decode, k=args.k, units=units, progress=bar)
    elif args.method == "class-model":
        prep = preprocessing(args, _input_source(net, ex)[1])
        order = prep.color_order
        c = ex.input_shape(ex.required_inputs[0])[1]
        if args.input:
            x, order = _image(args, net, ex)
        bar = progress.ticker(args.steps, "class-model: gradient ascent", unit="steps")
        options.update(steps=args.steps, lr=args.lr, decay=args.decay, blur_every=args.blur_every,
                       sigma=args.blur, bounds=_bounds(prep, c), progress=bar)
    elif args.method != "filters":
        x, order = _image(args, net, ex)
    labels = read_labels(args.labels) if args.labels else None
    if labels is None and args.method not in ("filters", "features", *FOLDER_METHODS):
        from ..runtime.explain import class_count, score_blob
        labels = _labels(args, class_count(ex, score_blob(net)))
    try:
        out, info = ex.explain(args.method, None if x is None else x[0], args.target, args.layer, labels=labels,
                               **options)
    finally:
        if options.get("progress") is not None:
            options["progress"].close()
    caption = f"{name} · {args.method} · {pictures.explained(info, labels, out.shape)}"
    if paths is not None:
        picture = _folder_picture(args.method, out, info, paths, options["decode"], order)
    else:
        picture = _picture(args.method, out, None if x is None else x[0], order)
    pictures.save(args.output, picture, caption)
    if args.save_map:
        np.save(args.save_map, out)
    print(f"wrote {plain(args.output)}" + (f" and {plain(args.save_map)}" if args.save_map else "")
          + f": {args.method}, map {list(np.shape(out))}")
    for _, error in sorted(info.get("errors", {}).items()):
        print(f"warning: skipped {plain(error)}", file=sys.stderr)
    if info.get("errors"):
        print(f"note: {len(info['errors'])} of {len(paths)} images could not be read", file=sys.stderr)
    if args.method == "class-model" and info.get("start_score") is not None:
        print(f"class-model: score of class {info['target']} went {info['start_score']:.4g} -> "
              f"{info['score']:.4g} in {args.steps} steps")
    if args.weights is None and net.graph.graph.get("weights") is None:
        print(f"note: random weights (seed {args.seed}): the pictures show an untrained network; "
              "--weights FILE explains a trained one", file=sys.stderr)
    return 0


def _folder_picture(method, out, info, paths, decode, order):
    """top-patches: the patch sheet; tsne: the map of thumbnails (images decoded again, as the
    network saw them)."""
    from ..runtime import picture_sets, pictures

    def shown(k):
        return pictures.display_image(decode(paths[k]), order)
    if method == "top-patches":
        return picture_sets.patch_sheet({int(k): shown(int(k)) for k in np.unique(out[:, :, 0])}, out)
    return picture_sets.tsne_map(out, [shown(k) for k in info["index"]])


def add_parser(sub, model_args, positive, natural) -> None:
    from ..runtime.explain import METHODS
    p = sub.add_parser("explain", help="pictures of what the network computes: filters, features, occlusion, "
                       "saliency, deconvnet, guided backprop, Grad-CAM, top patches, t-SNE, class models",
                       description="Understand a ConvNet. filters: a convolution's kernels; features: a layer's "
                       "maps for an image; occlusion (Zeiler & Fergus 2013): how much the class score drops when "
                       "a square of the input is hidden; saliency (Simonyan et al. 2014): d score / d input; "
                       "deconvnet and guided-backprop: the same through the papers' ReLU rules; gradcam "
                       "(Selvaraju et al. 2017) at a layer, guided-gradcam its product with guided backprop. The "
                       "score is the input of the final Softmax. Sanity checks (Adebayo et al. 2018): saliency "
                       "and Grad-CAM change when the weights are re-randomized, guided backprop largely does "
                       "not, so it shows the image more than the model. top-patches (Girshick et al. 2014): the image "
                       "patches of a folder that excite a layer's units most, cropped by the receptive fields; "
                       "tsne: a t-SNE map of a layer's codes over a folder; class-model (Simonyan et al. 2014, "
                       "Yosinski et al. 2015): an input grown by gradient ascent on a class score with L2 "
                       "decay and blur. Writes a PNG and, with --save-map, the raw map as .npy.")
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
    p.add_argument("--images", metavar="DIR", help="top-patches, tsne: the folder of images to walk")
    p.add_argument("--recursive", action="store_true", help="--images: also the subfolders")
    p.add_argument("-k", type=positive, default=9, help="top-patches: patches per unit (default 9)")
    p.add_argument("--units", help="top-patches: the channels to show, e.g. 0,5,7 (default: the first 8)")
    p.add_argument("--steps", type=positive, default=200, help="class-model: ascent steps (default 200)")
    p.add_argument("--lr", type=float, default=0.05,
                   help="class-model: step size as a fraction of the input's range (default 0.05)")
    p.add_argument("--decay", type=float, default=1e-3, help="class-model: L2 decay per step (default 0.001)")
    p.add_argument("--blur-every", dest="blur_every", type=natural, default=4,
                   help="class-model: blur every N steps (default 4; 0: never)")
    p.add_argument("--blur", type=float, default=0.5, help="class-model: the blur's sigma in pixels (default 0.5)")
    p.add_argument("-o", "--output", required=True, help="the picture, FILE.png")
    p.add_argument("--save-map", dest="save_map", metavar="FILE.npy", help="the raw map as a .npy file")
    preprocessing_flags(p, "explain")
