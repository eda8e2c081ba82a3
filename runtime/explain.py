"""Understanding a ConvNet from its forward pass: a layer's filters and feature maps, and the
occlusion experiment of Zeiler & Fergus (2013). Each returns numpy arrays (the raw maps);
runtime/pictures.py draws them.

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
    if d["type"] == "Softmax":
        return d["bottoms"][0]
    return d["tops"][0]


def layer_blob(net, layer: str) -> str:
    """A layer's output blob (after the in-place layers that follow it, as --blobs gives it)."""
    g = net.graph
    if layer not in g.nodes:
        names = [n for n in g.nodes if not REGISTRY[g.nodes[n]["type"]].source]
        raise NetcError(f'no layer named "{layer}"' + did_you_mean(layer, names))
    return g.nodes[layer]["tops"][0]


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
    if d["type"] not in ("Convolution", "ConvolutionDepthwise", "Deconvolution"):
        convs = [n for n in g.nodes if g.nodes[n]["type"] in ("Convolution", "ConvolutionDepthwise")]
        raise NetcError(f'"{layer}" is a {d["type"]} layer; filters are a convolution\'s '
                        f'(this network\'s: {", ".join(convs[:5])}{" ..." if len(convs) > 5 else ""})')
    return np.asarray(weights[f"{layer}.weight"])


def first_conv(net) -> str:
    g = net.graph
    for n in g.nodes:
        if g.nodes[n]["type"] in ("Convolution", "ConvolutionDepthwise"):
            return n
    raise NetcError("this network has no convolution")
