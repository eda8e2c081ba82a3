"""Understanding a ConvNet: a layer's filters and feature maps, the occlusion experiment
(Zeiler & Fergus 2013), and the gradient maps of the backward pass (runtime/backward.py):
saliency (Simonyan et al. 2014), deconvnet (Zeiler & Fergus), guided backpropagation
(Springenberg et al. 2015), Grad-CAM and guided Grad-CAM (Selvaraju et al. 2017). Each returns
numpy arrays (the raw maps); runtime/pictures.py draws them.

The score of class c is the input of the network's final Softmax when there is one (the logit,
as the papers use it), else the network's output.
"""
from __future__ import annotations

import numpy as np

from ..compiler.errors import NetcError, did_you_mean
from ..compiler.layers import REGISTRY

MAX_OCCLUSIONS = 1 << 16          # occluded copies: a window of 1 pixel at stride 1 on 256x256


def score_blob(net) -> str:
    """The blob holding the class scores: the final Softmax's input, else the last output."""
    g = net.graph
    forward = [n for n in g.nodes if REGISTRY[g.nodes[n]["type"]].forward and not REGISTRY[g.nodes[n]["type"]].source]
    if not forward:
        raise NetcError("this network computes nothing to explain")
    last = forward[-1]
    d = g.nodes[last]
    if REGISTRY[d["type"]].scores_in:
        return d["bottoms"][0]
    return d["tops"][0]


def layer_blob(net, layer: str) -> str:
    """A layer's output blob (after the in-place layers that follow it, as --blobs gives it)."""
    g = net.graph
    if layer not in g.nodes:
        names = [n for n in g.nodes if not REGISTRY[g.nodes[n]["type"]].source]
        raise NetcError(f'no layer named "{layer}"' + did_you_mean(layer, names))
    return g.nodes[layer]["tops"][0]


def class_count(ex, score: str) -> int:
    """How many classes the score blob holds per item, from the analyzed shapes."""
    key = ex.blob_key[score]
    return int(np.prod(ex.network.graph.nodes[key[0]]["shapes"][key[1]][1:]))


def class_index(target, n_classes: int, labels=None) -> int:
    """--target as an index or a class name (default: decided by the caller)."""
    if isinstance(target, str) and not target.lstrip("-").isdigit():
        names = list(labels or [])
        hits = [k for k, name in enumerate(names) if name.lower() == target.lower()]
        if not hits:
            raise NetcError(f'no class named "{target}"' + did_you_mean(target, names))
        return hits[0]
    k = int(target)
    if not 0 <= k < n_classes:
        raise NetcError(f"class {k} is out of range: the network scores {n_classes} classes (0 to {n_classes - 1})")
    return k


def scores(ex, blob: str, x: np.ndarray) -> np.ndarray:
    """[N, classes] of `blob` for the batch x (run in chunks of the executable's batch)."""
    name = ex.required_inputs[0]
    batch = ex.input_shape(name)[0]
    out = []
    for start in range(0, len(x), batch):
        chunk = x[start:start + batch]
        if len(chunk) < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), 0)])
        got = ex.run({name: chunk}, blobs=[blob] if blob not in ex.outputs else ())[blob]
        out.append(got.reshape(batch, -1)[:min(batch, len(x) - start)])
    return np.concatenate(out)


def occlusion(ex, blob: str, image: np.ndarray, target: int, window: int, stride: int,
              baseline: float = 0.0) -> np.ndarray:
    """[H', W']: score_c(image) - score_c(image with a window x window square, all channels, set
    to `baseline`) at positions 0, S, 2S, ... wherever the window fits."""
    c, h, w = image.shape
    if window > min(h, w):
        raise NetcError(f"the occlusion window {window} is larger than the {w}x{h} input")
    rows, cols = (h - window) // stride + 1, (w - window) // stride + 1
    if rows * cols > MAX_OCCLUSIONS:
        raise NetcError(f"{rows}x{cols} occluded copies: past {MAX_OCCLUSIONS:,}; use a larger --stride")
    base = scores(ex, blob, image[None])[0, target]
    out = np.empty(rows * cols, np.float64)
    per = max(ex.input_shape(ex.required_inputs[0])[0], 16)
    positions = [(i * stride, j * stride) for i in range(rows) for j in range(cols)]
    for start in range(0, len(positions), per):
        part = positions[start:start + per]
        copies = np.repeat(image[None], len(part), 0)
        for k, (top, left) in enumerate(part):
            copies[k, :, top:top + window, left:left + window] = baseline
        out[start:start + len(part)] = base - scores(ex, blob, copies)[:, target]
    return out.reshape(rows, cols)


def features(ex, blob: str, image: np.ndarray) -> np.ndarray:
    """[C, h, w] (or [units]): the blob for one image."""
    name = ex.required_inputs[0]
    batch = ex.input_shape(name)[0]
    x = np.repeat(image[None], batch, 0)
    return ex.run({name: x}, blobs=[blob] if blob not in ex.outputs else ())[blob][0]


def filters(net, weights: dict, layer: str) -> np.ndarray:
    """[out, in, kh, kw]: a convolution's kernels."""
    g = net.graph
    layer_blob(net, layer)
    d = g.nodes[layer]
    if not REGISTRY[d["type"]].kernels:
        convs = [n for n in g.nodes if REGISTRY[g.nodes[n]["type"]].kernels]
        raise NetcError(f'"{layer}" is a {d["type"]} layer; filters are a convolution\'s '
                        f'(this network\'s: {", ".join(convs[:5])}{" ..." if len(convs) > 5 else ""})')
    return np.asarray(weights[f"{layer}.weight"])


def first_conv(net) -> str:
    g = net.graph
    for n in g.nodes:
        if REGISTRY[g.nodes[n]["type"]].feature_conv:
            return n
    raise NetcError("this network has no convolution")


GRADIENT_RULES = {"saliency": "backprop", "deconvnet": "deconvnet", "guided-backprop": "guided"}
FOLDER_METHODS = ("top-patches", "tsne")
METHODS = ("filters", "features", "occlusion", *GRADIENT_RULES, "gradcam", "guided-gradcam", "class-model",
           *FOLDER_METHODS)


def _one(ex, image: np.ndarray) -> dict:
    name = ex.required_inputs[0]
    batch = ex.input_shape(name)[0]
    return {name: np.repeat(image[None], batch, 0)}


def _seed(ex, score: str, target: int) -> dict:
    """d score_c / d score: one at class c of the first item."""
    key = ex.blob_key[score]
    shape = ex.network.graph.nodes[key[0]]["shapes"][key[1]]
    seed = np.zeros(shape, np.float32)
    flat = seed.reshape(shape[0], -1)
    if not 0 <= target < flat.shape[1]:
        raise NetcError(f"class {target} is out of range: the network scores {flat.shape[1]} classes")
    flat[0, target] = 1
    return {key: seed}


def _score_of(ex, values, score: str, target: int, info: dict | None) -> None:
    if info is not None:
        info["score"] = float(values[ex.blob_key[score]].reshape(-1)[target])


def input_map(ex, score: str, image: np.ndarray, target: int, rule: str = "backprop", info=None) -> np.ndarray:
    """[C, H, W]: d score_c / d input, through every ReLU by `rule` (backprop: saliency,
    deconvnet, guided)."""
    from .backward import gradients
    key = ex.inputs[ex.required_inputs[0]]
    got, values = gradients(ex, _one(ex, image), _seed(ex, score, target), rule, wanted=[key])
    _score_of(ex, values, score, target, info)
    return got[key][0]


def gradcam(ex, score: str, image: np.ndarray, target: int, layer_top: str, info=None) -> np.ndarray:
    """[h, w] at the layer's resolution: ReLU(sum_k alpha_k A^k), alpha_k the spatial mean of
    d score_c / d A^k, A the layer's blob after its in-place layers."""
    from .backward import gradients
    key = ex.blob_key[layer_top]
    got, values = gradients(ex, _one(ex, image), _seed(ex, score, target), "backprop", wanted=[key])
    _score_of(ex, values, score, target, info)
    a, da = values[key][0], got[key][0]
    if a.ndim != 3:
        raise NetcError(f'Grad-CAM needs a spatial layer; "{layer_top}" holds {list(a.shape)} per image')
    alpha = da.mean(axis=(1, 2))
    return np.maximum((alpha[:, None, None] * a).sum(axis=0), 0)


def upsample_nearest(m: np.ndarray, hw: tuple) -> np.ndarray:
    """Nearest-neighbour enlargement, pixel (y, x) from (y * h // H, x * w // W)."""
    h, w = m.shape
    rows = np.arange(hw[0]) * h // hw[0]
    cols = np.arange(hw[1]) * w // hw[1]
    return m[rows][:, cols]


def guided_gradcam(ex, score: str, image: np.ndarray, target: int, layer_top: str, info=None) -> np.ndarray:
    """[C, H, W]: guided backpropagation times Grad-CAM enlarged to the input (nearest, as
    Captum's GuidedGradCam)."""
    cam = gradcam(ex, score, image, target, layer_top, info)
    return input_map(ex, score, image, target, "guided") * upsample_nearest(cam, image.shape[1:])


def blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """[C, H, W] convolved per channel with a Gaussian of `sigma` pixels (reflected edges)."""
    r = max(1, int(np.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    pad = np.pad(x, ((0, 0), (r, r), (r, r)), mode="reflect")
    rows = sum(k[i] * pad[:, i:i + x.shape[1], :] for i in range(2 * r + 1))
    return sum(k[i] * rows[:, :, i:i + x.shape[2]] for i in range(2 * r + 1)).astype(np.float32)


def class_model(ex, score: str, start: np.ndarray, target: int, steps: int = 200, lr: float = 0.05,
                decay: float = 1e-3, blur_every: int = 4, sigma: float = 0.5, bounds=None,
                info=None, progress=None) -> np.ndarray:
    """[C, H, W]: the input grown from `start` by gradient ascent on score_c (Simonyan et al.
    2014), with the toolbox's regularizers (Yosinski et al. 2015): each step
    x <- (1 - decay) x + lr * span * g / rms(g), g = d score_c / d x, span the width of `bounds`
    (the input's valid range, 1 without), a Gaussian blur of `sigma` every `blur_every` steps,
    then clipped to `bounds` (lo, hi), each a number or a per-channel sequence. The step is
    normalized so one lr fits networks whose scores differ in scale."""
    x = np.array(start, np.float32)
    lo = hi = None
    if bounds is not None:
        lo, hi = (np.asarray(b, np.float32).reshape(-1, 1, 1) for b in bounds)
    span = float(np.mean(hi - lo)) if bounds is not None else 1.0
    first = {}
    for t in range(steps):
        g = input_map(ex, score, x, target, "backprop", first if t == 0 else None)
        x = (1 - decay) * x + np.float32(lr * span) * g / np.float32(np.sqrt(np.mean(g * g)) + 1e-30)
        if blur_every and sigma > 0 and (t + 1) % blur_every == 0:
            x = blur(x, sigma)
        if bounds is not None:
            x = np.clip(x, lo, hi)
        if progress is not None:
            progress.tick()
    if info is not None:
        info["start_score"] = first.get("score")
        info["score"] = float(input_score(ex, score, x, target))
    return x.astype(np.float32)


def input_score(ex, score: str, x: np.ndarray, target: int) -> float:
    name = ex.required_inputs[0]
    return float(ex.run(_one(ex, x), blobs=[score] if score not in ex.outputs else ())[score].reshape(
        ex.input_shape(name)[0], -1)[0, target])


def last_conv_blob(net) -> str:
    """The default Grad-CAM layer: the last convolution whose output is larger than 1x1."""
    g = net.graph
    found = None
    for n in g.nodes:
        d = g.nodes[n]
        if REGISTRY[d["type"]].feature_conv and len(d["shapes"][0]) == 4 \
                and d["shapes"][0][2] * d["shapes"][0][3] > 1:
            found = n
    if found is None:
        raise NetcError("no convolution with a spatial output to take Grad-CAM at; give --layer")
    return found


def explain(ex, method: str, image: np.ndarray | None, target=None, layer: str | None = None, *,
            window: int = 8, stride: int = 4, baseline: float = 0.0, labels=None, images=None, decode=None,
            k: int = 9, units=None, seed: int = 0, progress=None, **ascent) -> tuple[np.ndarray, dict]:
    """(raw map, what was explained: target class, layer, score) for one input item [C, H, W]
    by `method` (METHODS); gradient methods run on a sibling of `ex` that keeps every value.
    top-patches and tsne walk `images` (paths) read by `decode` (runtime/images.Decoder);
    class-model starts from `image` (or seeded noise) and takes class_model's options."""
    if method not in METHODS:
        raise NetcError(f'unknown explain method "{method}"' + did_you_mean(method, METHODS))
    net = ex.network
    if method == "filters":
        layer = layer or first_conv(net)
        return filters(net, ex.weights, layer), {"layer": layer}
    if method in FOLDER_METHODS:
        return _over_folder(ex, method, layer, images, decode, k, units, seed, progress)
    if method == "features":
        if not layer:
            raise NetcError("features needs a layer (--layer NAME) whose output to show")
        return features(ex, layer_blob(net, layer), image), {"layer": layer}
    score = score_blob(net)
    classes = class_count(ex, score)
    if method == "class-model":
        if layer:
            raise NetcError("class-model grows an input; it takes no layer")
        k = class_index(0 if target is None else target, classes, labels)
        shape = ex.input_shape(ex.required_inputs[0])[1:]
        bounds = ascent.get("bounds")
        span = float(np.mean(np.asarray(bounds[1]) - np.asarray(bounds[0]))) if bounds is not None else 1.0
        start = image if image is not None else \
            (np.random.default_rng(seed).standard_normal(shape) * 0.01 * span).astype(np.float32)
        info = {"target": k}
        grad_ex = ex if getattr(ex, "keep_every", False) else _keeping(ex)
        return class_model(grad_ex, score, start, k, info=info, progress=progress, **ascent), info
    if target is None or method == "occlusion":          # the top class needs a forward first
        s = scores(ex, score, image[None])[0]
        k = int(np.argmax(s)) if target is None else class_index(target, s.size, labels)
        info = {"target": k, "score": float(s[k])}
    else:                                                 # the backward's forward gives the score
        k = class_index(target, classes, labels)
        info = {"target": k}
    if method == "occlusion":
        if layer:
            raise NetcError("occlusion hides parts of the input; it takes no layer")
        return occlusion(ex, score, image, k, window, stride, baseline), info
    grad_ex = ex if getattr(ex, "keep_every", False) else _keeping(ex)
    if method in GRADIENT_RULES:
        if layer:
            raise NetcError(f"{method} is a map of the input; it takes no layer")
        return input_map(grad_ex, score, image, k, GRADIENT_RULES[method], info), info
    name = layer or last_conv_blob(net)
    top = layer_blob(net, name)
    info["layer"] = name
    fn = gradcam if method == "gradcam" else guided_gradcam
    return fn(grad_ex, score, image, k, top, info), info


def _over_folder(ex, method, layer, images, decode, k, units, seed, progress):
    from . import image_sets
    if not images or decode is None:
        raise NetcError(f"{method} walks a folder of images: --images DIR/")
    if not layer:
        raise NetcError(f"{method} needs a layer (--layer NAME)" + (", e.g. fc7" if method == "tsne" else ""))
    blob = layer_blob(ex.network, layer)
    if method == "top-patches":
        rows, errors = image_sets.top_patches(ex, blob, images, decode, k, units, progress)
        return rows, {"layer": layer, "errors": errors, "units": list(range(len(rows))) if units is None
                      else list(units)}
    got, index, errors = image_sets.codes(ex, blob, images, decode, progress)
    return image_sets.tsne(got, seed), {"layer": layer, "errors": errors, "index": index}


def _keeping(ex):
    """A batch-1 executable of the same network and weights keeping every value (cached)."""
    sibling = getattr(ex, "_keeping", None)
    if sibling is None:
        sibling = ex.network.compile(weights=ex.weights, batch=1, keep_every=True)
        ex._keeping = sibling
    return sibling
