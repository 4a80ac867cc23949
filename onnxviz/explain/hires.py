"""HiResCAM (Draelos & Carin 2020): the gradient times the activation, pixel by pixel.

The map is ``Σ_c ∂S/∂A_c ⊙ A_c``: no channel weights; for a model ending in global average
pooling and one linear layer, it is exactly the part of the score each position contributes
(pytorch-grad-cam's ``HiResCAM``).

>>> onnxviz.cam(m, "photo.jpg", method="hires")                       # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from .base import GradientMethod

__all__ = ["HiResCAM"]


class HiResCAM(GradientMethod):
    title = "HiResCAM"

    def cam_image(self, ctx):
        return (ctx.grads * ctx.acts).sum(axis=1, dtype=np.float32), None
