"""Images -> a network's input blob, the way Caffe's DataTransformer prepares them: BGR channel
order, resized (shorter side) and center-cropped, then (x - mean_value) * scale when the Data
layer's transform_param says so."""
from __future__ import annotations

import sys

import numpy as np

from ..compiler.errors import NetcError


def load_images(paths: list[str], shape: tuple, attrs: dict) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise NetcError("reading images needs Pillow (pip install pillow)") from None
    _, c, h, w = shape
    if c not in (1, 3):
        raise NetcError(f"the network input has {c} channels; images give 1 or 3")
    mean = np.asarray(attrs.get("mean_value") or (0.0,), np.float32)
    if mean.size not in (1, c):
        raise NetcError(f"transform_param has {mean.size} mean_value(s) for {c} channels")
    if attrs.get("mean_file") and not attrs.get("mean_value"):
        print(f"warning: mean_file {attrs['mean_file']} is not read; no mean is subtracted", file=sys.stderr)
    scale = attrs.get("scale") or 1.0
    out = np.empty((len(paths), c, h, w), np.float32)
    for k, path in enumerate(paths):
        try:
            img = Image.open(path)
            img = img.convert("RGB" if c == 3 else "L")
        except (OSError, ValueError) as e:
            raise NetcError(f"cannot read image {path}: {e}") from None
        side = max(h, w)
        r = side / min(img.size)
        img = img.resize((max(w, round(img.size[0] * r)), max(h, round(img.size[1] * r))), Image.BILINEAR)
        left, top = (img.size[0] - w) // 2, (img.size[1] - h) // 2
        a = np.asarray(img.crop((left, top, left + w, top + h)), np.float32)
        a = a[None] if c == 1 else a[:, :, ::-1].transpose(2, 0, 1)   # RGB -> Caffe's BGR
        out[k] = (a - mean.reshape(-1, 1, 1)) * scale
    return out
