"""onnxviz: see what a convolutional network has learned — from its ONNX file alone.

>>> import onnxviz
>>> m = onnxviz.load("models/vgg16.onnx")                     # doctest: +SKIP
>>> m.layers[0]                                               # doctest: +SKIP
Layer(index=0, name='block1_conv1', node=..., op='Conv', filter_shape=(64, 3, 3, 3), ...)
>>> m.filters("block1_conv1").shape                           # doctest: +SKIP
(64, 3, 3, 3)
>>> fm = m.feature_maps("bird.jpg", layers=["block1_conv1", "block5_conv3"])   # doctest: +SKIP
>>> onnxviz.plot_feature_maps(fm["block5_conv3"], "block5_conv3")              # doctest: +SKIP

Importing onnxviz loads neither onnxruntime nor matplotlib; they come in when first needed.
"""

from .errors import (ImageError, LayerError, ModelError, OnnxvizError, OnnxvizWarning,
                     OutputError, ResourceError, UnsupportedModelError)
from .model import Layer, Model, load

__version__ = "0.1.0"

__all__ = [
    "load", "Model", "Layer", "plot_filters", "plot_feature_maps", "save_png",
    "OnnxvizError", "ModelError", "UnsupportedModelError", "LayerError", "ImageError",
    "OutputError", "ResourceError", "OnnxvizWarning", "__version__",
    "report", "dataset",
    # gradients (issue 12)
    "saliency", "Attribution", "patterns", "Patterns", "gradients",
    # statistics (issue 11)
    "stats",
    # class activation maps (issue 11)
    "cam", "Cam",
]

_LAZY = {"plot_filters": "render", "plot_feature_maps": "render", "save_png": "render",
         # gradients (issue 12)
         "saliency": "explain.saliency", "Attribution": "explain.saliency", "patterns": "explain.patterns",
         "Patterns": "explain.patterns", "gradients": "explain.gradients",
         # class activation maps (issue 11)
         "cam": "explain.cam", "Cam": "explain.cam"}


def __getattr__(name):
    if name in ("report", "stats", "dataset"):  # modules callable as their function: report(model, images,
        import importlib                        # path, **kw), stats(model, images=None, …), dataset(…)

        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'onnxviz' has no attribute '{name}'")
