"""LayerCAM (Jiang et al. 2021): every pixel weighs its own positive gradient.

The map is ``Σ_c ReLU(∂S/∂A_c) ⊙ A_c``: no channel weights (pytorch-grad-cam's ``LayerCAM``).

>>> onnxviz.cam(m, "photo.jpg", method="layer", layer="block3_conv3")     # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from .base import GradientMethod

__all__ = ["LayerCAM"]


class LayerCAM(GradientMethod):
    title = "LayerCAM"

    def cam_image(self, ctx):
        return (np.maximum(ctx.grads, 0) * ctx.acts).sum(axis=1, dtype=np.float32), None
