"""PNG pictures of explain's maps (Pillow): tile grids, heat maps over the image, a caption
naming model, layer, method and class."""
from __future__ import annotations

import numpy as np

MAX_TILES = 4096
MIN_TILE = 48          # pixels: small maps are enlarged (nearest) to at least this


def _unit(a: np.ndarray) -> np.ndarray:
    """a scaled to [0, 1] (a constant array: 0.5)."""
    a = np.asarray(a, np.float64)
    lo, hi = float(a.min()), float(a.max())
    return np.full(a.shape, 0.5) if hi <= lo else (a - lo) / (hi - lo)


def _jet(t: np.ndarray) -> np.ndarray:
    """[..., 3] in [0, 1]: the jet colormap (blue, cyan, yellow, red) of t in [0, 1]."""
    t = np.clip(t, 0, 1)[..., None]
    r = np.clip(1.5 - np.abs(4 * t - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * t - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * t - 1), 0, 1)
    return np.concatenate([r, g, b], axis=-1)


def grid(tiles: np.ndarray, cols: int | None = None, each: bool = True) -> np.ndarray:
    """[K, h, w] (gray) or [K, h, w, 3] (color) tiles as one uint8 image, one pixel apart;
    `each`: every tile scaled to [0, 1] on its own (feature maps), else all together (filters)."""
    tiles = np.asarray(tiles, np.float64)[:MAX_TILES]
    k = len(tiles)
    tiles = np.stack([_unit(t) for t in tiles]) if each else _unit(tiles)
    h, w = tiles.shape[1:3]
    zoom = max(1, -(-MIN_TILE // max(h, w)))
    tiles = tiles.repeat(zoom, 1).repeat(zoom, 2)
    h, w = tiles.shape[1:3]
    cols = cols or int(np.ceil(np.sqrt(k)))
    rows = -(-k // cols)
    shape = (rows * (h + 1) - 1, cols * (w + 1) - 1) + tiles.shape[3:]
    out = np.ones(shape)
    for j, t in enumerate(tiles):
        r, c = divmod(j, cols)
        out[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = t
    return (out * 255).round().astype(np.uint8)


def heat_over(image_rgb: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The map (any size) stretched to the image, colored, blended over it: uint8 [H, W, 3]."""
    from PIL import Image
    h, w = image_rgb.shape[:2]
    stretched = np.asarray(Image.fromarray(_unit(heat).astype(np.float32), mode="F").resize((w, h), Image.BILINEAR))
    color = _jet(stretched)
    base = _unit(image_rgb) if image_rgb.dtype != np.uint8 else image_rgb / 255.0
    return ((1 - alpha) * base + alpha * color).clip(0, 1).__mul__(255).round().astype(np.uint8)


def display_image(x: np.ndarray, color_order: str = "RGB") -> np.ndarray:
    """A network input [C, H, W] (after preprocessing) as a viewable [H, W, 3] in [0, 1]."""
    img = _unit(x.transpose(1, 2, 0))
    if img.shape[2] == 1:
        img = img.repeat(3, 2)
    return img[:, :, ::-1] if color_order == "BGR" else img


def explained(info: dict, labels=None, shape=None) -> str:
    """What a picture explains, from explain's info: "layer L · class K NAME (score S) · map [..]"."""
    parts = [f"layer {info['layer']}"] if "layer" in info else []
    if "target" in info:
        k = info["target"]
        parts.append(f"class {k}" + (f" {labels[k]}" if labels and k < len(labels) else "")
                     + (f" (score {info['score']:.3g})" if "score" in info else ""))
    if shape is not None:
        parts.append(f"map {list(shape)}")
    return " · ".join(parts)


def png(pixels: np.ndarray, caption: str) -> bytes:
    """pixels (uint8 [H, W] or [H, W, 3]) under a caption line, as PNG bytes."""
    import io

    from PIL import Image, ImageDraw
    img = Image.fromarray(pixels).convert("RGB")
    if img.width < 320:
        scale = -(-320 // img.width)
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    per_line = max(20, (img.width - 8) // 6)            # Pillow's default font: ~6 px a character
    lines = [caption[k:k + per_line] for k in range(0, min(len(caption), 4 * per_line), per_line)]
    top = 14 * len(lines) + 6
    canvas = Image.new("RGB", (img.width, img.height + top), "white")
    canvas.paste(img, (0, top))
    draw = ImageDraw.Draw(canvas)
    for k, line in enumerate(lines):
        draw.text((4, 3 + 14 * k), line, fill="black")
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def save(path, pixels: np.ndarray, caption: str) -> None:
    """pixels under a caption line, as the PNG file `path`."""
    from pathlib import Path
    Path(path).write_bytes(png(pixels, caption))
