"""The matplotlib ``Figure`` onnxviz returns: one picture, pixel for pixel, shown once in notebooks.

>>> fig = onnxviz.plot_filters(m, "block1_conv1")      # doctest: +SKIP
>>> fig                                                # a notebook shows the picture, once

A plain ``Figure()`` made without pyplot shows as ``<Figure size … with 0 Axes>`` text in
Jupyter unless ``%matplotlib inline`` registered a formatter, and that formatter re-renders it
with ``bbox_inches='tight'``. This subclass gives the exact PNG of its picture through
``_repr_mimebundle_``, which IPython asks first, so no other PNG formatter runs. It is not
managed by pyplot, so the inline backend never shows it a second time at the end of a cell.

Known limits: other matplotlib formats (svg, pdf) registered by the user are still added
by IPython's own formatters.
"""

from __future__ import annotations

from matplotlib.figure import Figure as _Figure

from .encode import png_bytes

__all__ = ["Figure"]


class Figure(_Figure):
    """A matplotlib ``Figure`` holding one onnxviz picture (``onnxviz_image``, a PIL image)."""

    onnxviz_image = None

    def _repr_mimebundle_(self, include=None, exclude=None):
        if self.onnxviz_image is None:  # drawn on by the user as an ordinary figure
            return None
        return {"image/png": png_bytes(self.onnxviz_image), "text/plain": repr(self)}
