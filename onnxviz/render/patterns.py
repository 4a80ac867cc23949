"""Gradient pictures: a grid of filter patterns, and a saliency heatmap beside its image.

>>> from onnxviz.render.patterns import patterns_image, saliency_image
>>> save_png(patterns_image(p.images, p.channels, "block3_conv2: patterns"), "patterns.png")  # doctest: +SKIP
>>> save_png(saliency_image(rgb, a.heatmap[0], "saliency (gradient), class 5"), "sal.png")     # doctest: +SKIP

Both take arrays only (uint8 RGB images, heatmaps in [0, 1]); small images are enlarged
(nearest) so that each tile is at least ``min_px`` pixels.

Known limits: one image per saliency picture; the heatmap is drawn beside the image, not
blended over it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..errors import OnnxvizError
from .colormaps import BACKGROUND, lut
from .mosaic import enlarge, grid, label_tiles, mosaic
from .png import to_figure
from .text import titled

__all__ = ["patterns_image", "saliency_image", "heatmap_image", "plot_patterns"]

_GAP = 2


def patterns_image(images: np.ndarray, channels, title: str = "", *, min_px: int = 96) -> Image.Image:
    """``(K, H, W, 3)`` uint8 patterns as one near-square grid, each tile labelled with its channel."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8 or not len(images):
        raise OnnxvizError(f"patterns must be a (K, H, W, 3) uint8 array, not {images.dtype} {images.shape}")
    tiles = enlarge(images, min_px)
    th, tw = tiles.shape[1:3]
    body = mosaic(tiles, gap=_GAP, fill=BACKGROUND[0])
    img, draw = titled(np.ascontiguousarray(body), title)
    label_tiles(draw, [str(int(c)) for c in channels], th, tw, _GAP, grid(len(tiles))[1])
    return img


def _colours(heatmap: np.ndarray, cmap: str) -> np.ndarray:
    return np.take(lut(cmap), (np.clip(np.nan_to_num(heatmap), 0, 1) * 255 + 0.5).astype(np.uint8), axis=0)


def saliency_image(rgb: np.ndarray, heatmap: np.ndarray, title: str = "", *, cmap: str = "inferno",
                   min_px: int = 192) -> Image.Image:
    """The image (``H×W×3`` uint8) and its heatmap (``H×W`` in [0, 1], in ``cmap``) side by side."""
    rgb, heatmap = np.asarray(rgb), np.asarray(heatmap, np.float32)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or heatmap.shape != rgb.shape[:2]:
        raise OnnxvizError(f"saliency_image takes an H×W×3 image and an H×W heatmap, not {rgb.shape} and "
                           f"{heatmap.shape}")
    pair = enlarge(np.stack([rgb.astype(np.uint8), _colours(heatmap, cmap)]), min_px)
    body = mosaic(pair, cols=2, gap=_GAP * 4, fill=BACKGROUND[0])
    return titled(np.ascontiguousarray(body), title)[0]


def heatmap_image(heatmap: np.ndarray, title: str = "", *, cmap: str = "inferno", min_px: int = 192) -> Image.Image:
    """A heatmap (``H×W`` in [0, 1]) alone, in ``cmap``: a saliency result without its image."""
    heatmap = np.asarray(heatmap, np.float32)
    if heatmap.ndim != 2:
        raise OnnxvizError(f"heatmap_image takes an H×W heatmap, not {heatmap.shape}")
    return titled(np.ascontiguousarray(enlarge(_colours(heatmap, cmap)[None], min_px)[0]), title)[0]


def plot_patterns(patterns, title: str = ""):
    """A :class:`~onnxviz.explain.patterns.Patterns` as a matplotlib ``Figure``."""
    return to_figure(patterns_image(patterns.images, patterns.channels, title or f"{patterns.layer}: patterns"))
