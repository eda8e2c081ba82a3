"""Images -> a network's input blob, the way Caffe's DataTransformer prepares them: BGR channel
order, resized (shorter side) and center-cropped, then (x - mean_value) * scale when the Data
layer's transform_param says so.

Any mode becomes the model's channel count the way Caffe's OpenCV reader would: gray is
replicated to three channels, alpha is dropped, palettes are expanded, 16-bit samples keep their
high byte; a 1-channel model gets luminance. A file that is missing, not an image, truncated or
a decompression bomb (more than Pillow's MAX_IMAGE_PIXELS: refused, never just warned about)
is a NetcError naming the file.
"""
from __future__ import annotations

import sys
import warnings

import numpy as np

from ..compiler.errors import NetcError, plain

WIDE = {"I;16", "I;16L", "I;16B", "I;16N", "I"}   # integer samples above 8 bits


def _eight_bit(img, Image):
    """16-bit (and 32-bit integer) gray -> 8-bit by the high byte, as OpenCV's imread does;
    Pillow's own convert would clip everything above 255 to white."""
    a = np.asarray(img).astype(np.int64)
    if a.size and (a.min() < 0 or a.max() > 65535):
        raise ValueError(f"pixel values {a.min()}..{a.max()} do not fit 16 bits")
    return Image.fromarray((a >> 8).astype(np.uint8), "L")


def _read(path: str, channels: int):
    """The decoded image in mode RGB (channels 3) or L (channels 1)."""
    from PIL import Image
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(path)
            img.load()
        except FileNotFoundError:
            raise NetcError(f"cannot read image {path}: no such file") from None
        except IsADirectoryError:
            raise NetcError(f"cannot read image {path}: it is a directory") from None
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
            raise NetcError(f"refusing image {path}: {e}") from None
        except (OSError, ValueError, SyntaxError) as e:   # unidentified, truncated, corrupt
            raise NetcError(f"cannot read image {path}: {e}") from None
    try:
        if img.mode in WIDE:
            img = _eight_bit(img, Image)
        elif img.mode == "F":
            raise ValueError("floating-point pixels have no fixed range; give the input as .npy")
        elif img.mode in ("P", "PA"):
            img = img.convert("RGBA")  # palette (with or without transparency) -> colors
        return img.convert("RGB" if channels == 3 else "L")
    except ValueError as e:
        raise NetcError(f"cannot use image {path} (mode {img.mode}): {e}") from None


def load_images(paths: list[str], shape: tuple, attrs: dict) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise NetcError("reading images needs Pillow, which netc installs: from the netc checkout, "
                        "pip install .") from None
    if len(shape) != 4:
        raise NetcError(f"the network input has shape {list(shape)}; images feed a 4-D input (N, C, H, W)")
    _, c, h, w = shape
    if c not in (1, 3):
        raise NetcError(f"the network input has {c} channels; images give 1 or 3")
    mean = np.asarray(attrs.get("mean_value") or (0.0,), np.float32)
    if mean.size not in (1, c):
        raise NetcError(f"transform_param has {mean.size} mean_value(s) for {c} channels")
    if attrs.get("mean_file") and not attrs.get("mean_value"):
        print(f"warning: mean_file {plain(attrs['mean_file'])} is not read; no mean is subtracted", file=sys.stderr)
    scale = attrs.get("scale") or 1.0
    out = np.empty((len(paths), c, h, w), np.float32)
    for k, path in enumerate(paths):
        img = _read(path, c)
        r = max(w / img.size[0], h / img.size[1])        # the smallest scale that covers h x w
        size = (max(w, round(img.size[0] * r)), max(h, round(img.size[1] * r)))
        if size[0] * size[1] > 64 * h * w + (1 << 22):
            raise NetcError(f"image {path} ({img.size[0]}x{img.size[1]}) would be resized to "
                            f"{size[0]}x{size[1]} to cover the {w}x{h} input: too elongated")
        img = img.resize(size, Image.BILINEAR)
        left, top = (img.size[0] - w) // 2, (img.size[1] - h) // 2
        a = np.asarray(img.crop((left, top, left + w, top + h)), np.float32)
        a = a[None] if c == 1 else a[:, :, ::-1].transpose(2, 0, 1)   # RGB -> Caffe's BGR
        out[k] = (a - mean.reshape(-1, 1, 1)) * scale
    return out
