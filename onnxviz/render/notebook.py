"""Results that show themselves as pictures in notebooks: one small mixin for result types.

A result type (``feature_maps``' dict, and ``Cam``, ``Attribution``, ``Patterns`` dataclasses)
inherits :class:`Pictured` and overrides one hook, :meth:`Pictured._pictures`, which lists
``(title, draw)`` pairs, ``draw()`` making a PIL image. Nothing is drawn until Jupyter asks:

>>> from dataclasses import dataclass
>>> @dataclass
... class Cam(Pictured):
...     heatmap: np.ndarray
...     def _pictures(self):
...         return [(f"image {k}", lambda k=k: overlay_image(self.heatmap[k])) for k in range(len(self.heatmap))]

One picture is shown as ``image/png``; several as one ``text/html`` block of titled
``<img src="data:…">`` (the HTML is :func:`onnxviz.report.html.gallery_html`'s, the only place
that writes HTML); each is drawn once, and only one of the two forms is produced, so a
notebook stores every picture once. Past :data:`MAX_SHOWN` pictures the block says how many
more there are.

Known limits: the mixin adds no fields and no ``__init__``, so it fits dataclasses and dict
subclasses alike; a result that cannot be drawn (a 4-D+ map) shows its text form instead.
"""

from __future__ import annotations

import abc

from ..errors import OnnxvizError
from .encode import png_bytes

__all__ = ["Pictured", "MAX_SHOWN"]

#: The most pictures a result shows inline; the rest are counted, not drawn.
MAX_SHOWN = 16


class Pictured(abc.ABC):
    """Mixin: ``_repr_png_`` for one picture, ``_repr_html_`` for several (see the module)."""

    @abc.abstractmethod
    def _pictures(self) -> list:
        """``[(title, draw), …]``: ``draw()`` returns a PIL image. The one hook to override."""

    def _repr_png_(self):
        pictures = list(self._pictures())
        if len(pictures) != 1:
            return None
        try:
            return png_bytes(pictures[0][1]())
        except OnnxvizError:  # e.g. a 4-D convolution's maps: no picture, the text form stays
            return None

    def _repr_html_(self):
        pictures = list(self._pictures())
        if len(pictures) < 2:
            return None
        from ..report.html import gallery_html

        try:
            shown = [(title, png_bytes(draw())) for title, draw in pictures[:MAX_SHOWN]]
        except OnnxvizError:
            return None
        return gallery_html(shown, more=len(pictures) - len(shown))
