"""Text on pictures: the font (matplotlib's DejaVu Sans, found without importing matplotlib)
and the title bar every picture gets.

>>> img, draw = titled(body, "block1_conv1: 64×224×224")     # doctest: +SKIP

Known limits: one font; without matplotlib installed, Pillow's default bitmap font.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .colormaps import BACKGROUND

__all__ = ["font", "titled", "TITLE_PX"]

TITLE_PX = 28
_FONTS: dict[int, ImageFont.ImageFont] = {}


def font(px: int):
    """A TrueType font of ``px`` pixels (cached)."""
    if px not in _FONTS:
        try:  # matplotlib's DejaVu Sans, found without importing matplotlib (~0.1 s)
            spec = importlib.util.find_spec("matplotlib")
            folder = os.path.dirname(spec.origin) if spec and spec.origin else ""
            path = os.path.join(folder, "mpl-data", "fonts", "ttf", "DejaVuSans.ttf")
            _FONTS[px] = ImageFont.truetype(path, px)
        except (OSError, ImportError, ValueError):
            _FONTS[px] = ImageFont.load_default(px)
    return _FONTS[px]


def titled(body: np.ndarray, title: str, left: int = 0, top_extra: int = 0) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    """Place an RGB ``body`` under a title bar (and after a left margin); return image + drawer."""
    face = font(13)
    title_w = int(face.getlength(title)) + 16
    h, w = body.shape[:2]
    top = TITLE_PX + top_extra
    img = Image.new("RGB", (max(w + left, title_w), h + top), BACKGROUND)
    img.paste(Image.fromarray(body), (left, top))
    draw = ImageDraw.Draw(img)
    draw.text((8, 7), title, fill=(0, 0, 0), font=face)
    return img, draw


# ------------------------------------------------------------------ pictures

