"""Pictures of explain's folder methods (Pillow): a sheet of top patches with their receptive-field
boxes, one row per unit, and a t-SNE map drawn with thumbnails."""
from __future__ import annotations

import numpy as np

TILE = 72            # pixels per patch tile
THUMB = 40           # pixels per t-SNE thumbnail
CANVAS = 960


def _pil(rgb01: np.ndarray):
    from PIL import Image
    return Image.fromarray((np.clip(rgb01, 0, 1) * 255).round().astype(np.uint8))


def patch_sheet(images: dict, rows: np.ndarray) -> np.ndarray:
    """uint8 [U * TILE, k * TILE, 3]: tile (u, j) is the input around box rows[u, j, 2:6] (with
    half the box's size of context on each side), the box drawn in red. `images`: index ->
    [H, W, 3] in [0, 1]."""
    from PIL import Image, ImageDraw
    units, k = rows.shape[:2]
    sheet = Image.new("RGB", (k * (TILE + 2), units * (TILE + 2)), "white")
    for u in range(units):
        for j in range(k):
            image, _, top, left, bottom, right = rows[u, j]
            img = images[int(image)]
            h, w = img.shape[:2]
            bh, bw = bottom - top, right - left
            ct, cl = max(0, int(top - bh / 2)), max(0, int(left - bw / 2))
            cb, cr = min(h, int(np.ceil(bottom + bh / 2))), min(w, int(np.ceil(right + bw / 2)))
            tile = _pil(img[ct:cb, cl:cr])
            sy, sx = TILE / max(1, cb - ct), TILE / max(1, cr - cl)
            tile = tile.resize((TILE, TILE), Image.BILINEAR)
            ImageDraw.Draw(tile).rectangle([(left - cl) * sx, (top - ct) * sy,
                                            (right - cl) * sx - 1, (bottom - ct) * sy - 1], outline=(255, 0, 0))
            sheet.paste(tile, (j * (TILE + 2) + 1, u * (TILE + 2) + 1))
    return np.asarray(sheet)


def tsne_map(points: np.ndarray, thumbs: list) -> np.ndarray:
    """uint8 [CANVAS, CANVAS, 3]: each thumbnail ([h, w, 3] in [0, 1]) at its point, the points
    scaled to the canvas (aspect kept), later ones drawn over earlier ones."""
    from PIL import Image
    canvas = Image.new("RGB", (CANVAS, CANVAS), "white")
    lo, hi = points.min(axis=0), points.max(axis=0)
    scale = (CANVAS - THUMB) / max(float((hi - lo).max()), 1e-12)
    for (x, y), t in zip(points, thumbs):
        thumb = _pil(t)
        thumb.thumbnail((THUMB, THUMB))
        canvas.paste(thumb, (int((x - lo[0]) * scale), int((y - lo[1]) * scale)))
    return np.asarray(canvas)
