"""The dataset pass's picture: one row per channel, its top-K receptive-field patches, best first.

>>> img = patches_image(patches, present, channels=range(32), best=top_value[:32, 0],
...                     title="block3_conv2: top 9 of 1,000 images")          # doctest: +SKIP
>>> save_png(img, "block3_conv2.png")                                     # doctest: +SKIP

``patches``: ``(R, K, h, w, 3)`` uint8, one row of ``K`` patches per channel (what
:func:`onnxviz.dataset.patches.cut_patches` gives); ``present``: ``(R, K)`` bool, False where
a channel has fewer than K images (an empty cell). Each row is labelled on the left with its
channel and that channel's best value. Patches are drawn at least :data:`MIN_PX` pixels a
side (small receptive fields enlarged, nearest) and at most :data:`MAX_PX` (large ones shrunk,
bilinear), keeping their aspect.

Known limits: one picture per layer; its size is checked against :data:`onnxviz.render.MAX_PIXELS`
(``max`` channels fewer fit).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from ..errors import OnnxvizError
from .colormaps import BACKGROUND
from .mosaic import mosaic, paint_gaps
from .text import TITLE_PX, font, titled

__all__ = ["patches_image", "MIN_PX", "MAX_PX"]

MIN_PX = 40      # patches are enlarged (nearest, an integer factor) to at least this
MAX_PX = 96      # and shrunk (bilinear) to at most this, a side
_GAP = 2
_LABEL_PX = 58   # the left margin: channel and best value


def _tiles(patches: np.ndarray) -> np.ndarray:
    """``(n, h, w, 3)`` patches at the drawn size."""
    n, h, w = patches.shape[:3]
    side = max(h, w)
    if side > MAX_PX:
        th, tw = max(1, round(h * MAX_PX / side)), max(1, round(w * MAX_PX / side))
        return np.stack([np.asarray(Image.fromarray(p).resize((tw, th), Image.BILINEAR)) for p in patches])
    factor = max(1, math.ceil(MIN_PX / side))
    return patches.repeat(factor, axis=1).repeat(factor, axis=2)


def patches_image(patches: np.ndarray, present: np.ndarray, channels, best, title: str = "") -> Image.Image:
    """One row per channel of its ``K`` patches (see the module docstring), as a PIL image."""
    patches, present = np.asarray(patches), np.asarray(present, bool)
    if patches.ndim != 5 or patches.shape[-1] != 3 or patches.dtype != np.uint8 or present.shape != patches.shape[:2]:
        raise OnnxvizError(f"patches must be (rows, K, h, w, 3) uint8 with a (rows, K) mask, not {patches.dtype} "
                           f"{patches.shape} and {present.shape}")
    rows, k = patches.shape[:2]
    tiles = _tiles(patches.reshape(rows * k, *patches.shape[2:]))
    th, tw = tiles.shape[1:3]
    body = mosaic(tiles, cols=k, gap=_GAP, fill=BACKGROUND[0])
    for r, q in zip(*np.nonzero(~present)):  # empty cells
        body[r * (th + _GAP):r * (th + _GAP) + th, q * (tw + _GAP):q * (tw + _GAP) + tw] = BACKGROUND
    paint_gaps(body, rows * k, th, tw, _GAP, BACKGROUND, cols=k)
    img, draw = titled(np.ascontiguousarray(body), title, left=_LABEL_PX)
    big, small = font(11), font(9)
    for r, (channel, value) in enumerate(zip(channels, best)):
        y = TITLE_PX + r * (th + _GAP)
        draw.text((_LABEL_PX - 6, y + 2), str(int(channel)), fill=(0, 0, 0), font=big, anchor="ra")
        draw.text((_LABEL_PX - 6, y + 16), f"{float(value):.3g}", fill=(90, 90, 90), font=small, anchor="ra")
    return img
