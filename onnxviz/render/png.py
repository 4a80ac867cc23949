"""Pictures to files and Figures: atomic PNG saving, and matplotlib Figures for notebooks
(the encoding itself is :mod:`.encode`'s).

>>> save_png(feature_map_image(maps, "block1_conv1"), "maps.png")     # doctest: +SKIP
'maps.png'
"""

from __future__ import annotations

import numpy as np

from ..output import write_atomic
from .encode import indexed_png, png_bytes

__all__ = ["png_bytes", "save_png", "to_figure", "indexed_png"]


def to_figure(img, dpi: int = 100):
    """A matplotlib ``Figure`` showing ``img`` pixel for pixel (no pyplot, no window); notebooks
    show it once, as these exact pixels (see :mod:`onnxviz.render.figure`)."""
    from .figure import Figure  # matplotlib only now, not for PNG-only commands

    fig = Figure(figsize=(img.width / dpi, img.height / dpi), dpi=dpi)
    fig.figimage(np.asarray(img), xo=0, yo=0, origin="upper")
    fig.onnxviz_image = img  # save_png writes these pixels directly
    return fig


def save_png(picture, path) -> str:
    """Write a PIL image or a ``Figure`` as PNG, atomically; return the path."""
    return write_atomic(path, png_bytes(picture))
