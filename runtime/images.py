"""Images -> a network's input blob as the model was trained to see them (`Preprocess`): Caffe's
DataTransformer (BGR, 0-255, (x - mean) * scale, a mean file's image) or torchvision's (RGB,
/255, mean and std), resized and center-cropped; the model's input says which, the command line
may say otherwise.

Any mode becomes the model's channel count the way Caffe's OpenCV reader would: gray is
replicated to three channels, alpha is dropped, palettes are expanded, 16-bit samples keep their
high byte; a 1-channel model gets luminance. A file that is missing, not an image, truncated or
a decompression bomb (more than Pillow's MAX_IMAGE_PIXELS: refused, never just warned about)
is a NetcError naming the file.
"""
from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

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


def _read(path: str, channels: int, data: bytes | None = None):
    """The decoded image (from the file, or from its bytes `data` when given) in mode RGB
    (channels 3) or L (channels 1)."""
    import io
    from PIL import Image
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            stream = path if data is None else io.BytesIO(data)
            img = Image.open(stream)
            img.load()
        except FileNotFoundError:
            raise NetcError(f"cannot read image {path}: no such file") from None
        except IsADirectoryError:
            raise NetcError(f"cannot read image {path}: it is a directory") from None
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
            raise NetcError(f"refusing image {path}: {e}") from None
        except (OSError, ValueError, SyntaxError) as e:   # unidentified, truncated, corrupt
            why = str(e) if data is None else str(e).replace(repr(stream), repr(path))   # as read from the file
            raise NetcError(f"cannot read image {path}: {why}") from None
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


@dataclass
class Preprocess:
    """How an image becomes input values: y = (x * pixel_scale - mean) / std * scale, x the
    0-255 pixels in `color_order` after resizing (`resize`: None covers the input keeping the
    aspect, or to the mean image's size when there is one; an int sizes the shorter side; (H, W)
    exactly) and a center crop to the input. Caffe's DataTransformer is pixel_scale 1, std 1, BGR;
    torchvision's is RGB, pixel_scale 1/255, ImageNet's mean and std."""
    color_order: str = "BGR"
    pixel_scale: float = 1.0
    mean: tuple = (0.0,)
    mean_image: np.ndarray | None = None     # a Caffe mean file's [C, H, W], centre-cropped
    std: tuple = (1.0,)
    scale: float = 1.0
    resize: int | tuple | None = None
    crop: bool = True
    layout: str = "NCHW"

    @classmethod
    def of(cls, attrs: dict) -> "Preprocess":
        """What a model's input says (Caffe's transform_param, netc's extensions)."""
        mean_image = None
        if attrs.get("mean_file") and not attrs.get("mean_value"):
            from pathlib import Path
            from .caffemodel import read_mean_file
            path = Path(attrs["mean_file"])
            if path.is_file():
                mean_image = read_mean_file(path)
            else:
                print(f"warning: mean_file {plain(attrs['mean_file'])} not found; give it with --mean FILE "
                      f"(no mean is subtracted)", file=sys.stderr)
        return cls(color_order=attrs.get("color_order") or "BGR", pixel_scale=attrs.get("pixel_scale") or 1.0,
                   mean=tuple(attrs.get("mean_value") or (0.0,)), mean_image=mean_image,
                   std=tuple(attrs.get("std_value") or (1.0,)), scale=attrs.get("scale") or 1.0,
                   layout=attrs.get("layout") or "NCHW")

    def describe(self, shape) -> str:
        _, c, h, w = nchw(shape, self)
        size = (f"cover {w}x{h} keeping the aspect" if self.resize is None and self.mean_image is None else
                f"{self.mean_image.shape[2]}x{self.mean_image.shape[1]} (the mean image's size)" if self.resize is None
                else f"shorter side {self.resize}" if isinstance(self.resize, int) else f"{self.resize[1]}x{self.resize[0]}")
        parts = [f"resize to {size}", f"center crop {w}x{h}" if self.crop else "no crop",
                 "gray" if c == 1 else self.color_order]
        if self.pixel_scale != 1:
            parts.append(f"x {self.pixel_scale:.6g}")
        if self.mean_image is not None:
            parts.append("minus the mean image")
        elif any(self.mean):
            parts.append(f"minus mean {_numbers(self.mean)}")
        if any(v != 1 for v in self.std):
            parts.append(f"divided by std {_numbers(self.std)}")
        if self.scale != 1:
            parts.append(f"x {self.scale:.6g}")
        if self.layout != "NCHW":
            parts.append(f"fed {self.layout}")
        return ", ".join(parts)


def nchw(shape, prep: "Preprocess") -> tuple:
    """The input's shape in N, C, H, W order, whatever its layout."""
    if len(shape) != 4:
        raise NetcError(f"the network input has shape {list(shape)}; images feed a 4-D input "
                        f"({'N, H, W, C' if prep.layout == 'NHWC' else 'N, C, H, W'})")
    return (shape[0], shape[3], shape[1], shape[2]) if prep.layout == "NHWC" else tuple(shape)


def _numbers(values) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in values) + "]"


class Decoder:
    """One image file -> the input item [C, H, W] (or [H, W, C] for NHWC inputs); the model's
    shape and preprocessing are checked once, when it is made. Pillow releases the GIL while it
    decodes and resizes, so threads calling one Decoder overlap."""

    def __init__(self, shape: tuple, prep: "Preprocess | dict"):
        try:
            import PIL  # noqa: F401
        except ImportError:
            raise NetcError("reading images needs Pillow, which netc installs: from the netc checkout, "
                            "pip install .") from None
        if isinstance(prep, dict):
            prep = Preprocess.of(prep)
        self.prep = prep
        _, c, h, w = nchw(shape, prep)
        if c not in (1, 3):
            raise NetcError(f"the network input has {c} channels; images give 1 or 3")
        self.chw = (c, h, w)
        self.mean, self.std = (np.asarray(v, np.float32) for v in (prep.mean, prep.std))
        for name, v in (("mean", self.mean), ("std", self.std)):
            if v.size not in (1, c):
                raise NetcError(f"{v.size} {name} value(s) for {c} channels")
        self.mean_crop = None
        if prep.mean_image is not None:
            mc, mh, mw = prep.mean_image.shape
            if mc != c or mh < h or mw < w:
                raise NetcError(f"the mean image is {mc}x{mh}x{mw}; the input needs {c} channels and at least {h}x{w}")
            top, left = (mh - h) // 2, (mw - w) // 2
            self.mean_crop = prep.mean_image[:, top:top + h, left:left + w]

    def __call__(self, path: str, data: bytes | None = None) -> np.ndarray:
        """The item for the image file `path` (decoded from `data`, its bytes, when given)."""
        return self.prepare(_read(path, self.chw[0], data), path)

    def prepare(self, img, path: str) -> np.ndarray:
        """The item for a decoded image (mode RGB or L, as _read gives it)."""
        from PIL import Image
        prep, (c, h, w) = self.prep, self.chw
        size = _target_size(img.size, (h, w), prep)
        if size[0] * size[1] > 64 * h * w + (1 << 22):
            raise NetcError(f"image {path} ({img.size[0]}x{img.size[1]}) would be resized to "
                            f"{size[0]}x{size[1]} to cover the {w}x{h} input: too elongated")
        img = img.resize(size, Image.BILINEAR)
        if size[0] < w or size[1] < h:
            raise NetcError(f"image {path} resized to {size[0]}x{size[1]} is smaller than the {w}x{h} input")
        left, top = (img.size[0] - w) // 2, (img.size[1] - h) // 2
        a = np.asarray(img.crop((left, top, left + w, top + h)), np.float32)
        if c == 1:
            a = a[None]
        else:
            a = a.transpose(2, 0, 1) if prep.color_order == "RGB" else a[:, :, ::-1].transpose(2, 0, 1)
        a = a * np.float32(prep.pixel_scale)
        a = a - (self.mean_crop if self.mean_crop is not None else self.mean.reshape(-1, 1, 1))
        a = a / self.std.reshape(-1, 1, 1) * np.float32(prep.scale)
        return a.transpose(1, 2, 0) if prep.layout == "NHWC" else a


def from_array(decoder: Decoder, path: str, pixels: np.ndarray) -> np.ndarray:
    """The item for an image already decoded to uint8 [H, W] or [H, W, 3 or 4] (as Ray Data's
    read_images gives it), made the model's channel count as _read makes a file's."""
    from PIL import Image
    a = np.asarray(pixels)
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
        raise NetcError(f"image {plain(path)}: expected uint8 pixels [H, W] or [H, W, 3], got {a.dtype} {list(a.shape)}")
    img = Image.fromarray(a[..., 0] if a.ndim == 3 and a.shape[2] == 1 else a)
    return decoder.prepare(img.convert("RGB" if decoder.chw[0] == 3 else "L"), path)


def load_images(paths: list[str], shape: tuple, prep: "Preprocess | dict") -> np.ndarray:
    decode = Decoder(shape, prep)
    return np.stack([decode(p) for p in paths]).astype(np.float32, copy=False) if paths else \
        np.empty((0, *shape[1:]), np.float32)


def _target_size(size: tuple, hw: tuple, prep: Preprocess) -> tuple[int, int]:
    """(width, height) to resize to before the center crop."""
    (iw, ih), (h, w) = size, hw
    if not prep.crop:
        return w, h
    if prep.resize is None and prep.mean_image is not None:
        return prep.mean_image.shape[2], prep.mean_image.shape[1]
    if prep.resize is None:
        r = max(w / iw, h / ih)                       # the smallest scale that covers h x w
        return max(w, round(iw * r)), max(h, round(ih * r))
    if isinstance(prep.resize, int):                  # torchvision's Resize(256): the shorter side
        r = prep.resize / min(iw, ih)
        return max(1, round(iw * r)), max(1, round(ih * r))
    return prep.resize[1], prep.resize[0]


IMAGENET_CLASSES = 1000


def imagenet_classes() -> list[str]:
    """The 1000 ILSVRC-2012 class names shipped with netc (runtime/data/SOURCE.md)."""
    return (Path(__file__).resolve().parent / "data" / "imagenet_classes.txt") \
        .read_text(encoding="utf-8").splitlines()
