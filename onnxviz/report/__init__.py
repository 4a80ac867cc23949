"""The HTML report: one self-contained page per model and images — the only package that
knows HTML.

>>> import onnxviz
>>> onnxviz.report("vgg16.onnx", ["cat.jpg", "dog.jpg"], "report.html")     # doctest: +SKIP
'report.html'

* :mod:`.builder`: :func:`report` and :func:`build` (images, maps, class scores, pictures);
* :mod:`.data`: what a report holds, and :class:`Picture` / :class:`Section`, the interface
  of the optional parts (CAM, patterns, dataset patches, a caller's own);
* :mod:`.sections`: the providers of those parts; :mod:`.card`: the model card's data;
* :mod:`.html` with ``report.css`` and ``report.js``: the page.

This package is itself callable: ``onnxviz.report(model, images, path, **kw)`` is
:func:`report` (the package and the function share the name ``onnxviz.report``).
"""

import sys
import types

from .builder import MAX_SIZE, build, report
from .data import Picture, Section

__all__ = ["report", "build", "Picture", "Section", "MAX_SIZE"]


class _CallableModule(types.ModuleType):
    """``onnxviz.report`` is both this package and :func:`report`: calling it calls the function."""

    def __call__(self, *args, **kwargs):
        return report(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
