"""Dataset passes: which images, and which patches of them, excite each channel most.

>>> import onnxviz
>>> res = onnxviz.dataset("models/demo.onnx", "images/", ["block3_conv2"], top=9, out="ds")   # doctest: +SKIP

* :mod:`.run`: :func:`dataset`, the verb: outputs, checkpoints, resuming;
* :mod:`.sources`: which images (a folder, a text file of paths, a glob);
* :mod:`.state`: mergeable per-channel top-K and running statistics, checkpoints;
* :mod:`.stream`: the local engine; :mod:`.ray`: the Ray Data engine (imported only for it);
* :mod:`.patches`: the receptive-field patches of the top images.

This package is itself callable: ``onnxviz.dataset(model, source, layers, …)`` is
:func:`dataset` (the package and the function share the name ``onnxviz.dataset``).
"""

import sys
import types

from .run import CHECKPOINT, ENGINES, DatasetLayer, DatasetResult, dataset
from .state import Interrupted

__all__ = ["dataset", "DatasetLayer", "DatasetResult", "Interrupted", "ENGINES", "CHECKPOINT"]


class _CallableModule(types.ModuleType):
    """``onnxviz.dataset`` is both this package and :func:`dataset`: calling it calls the function."""

    def __call__(self, *args, **kwargs):
        return dataset(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
