"""Grad-CAM (Selvaraju et al. 2017): each channel weighs its mean gradient.

``w_c = mean_{ij} ∂S/∂A_cij``, the map ``Σ_c w_c A_c`` (pytorch-grad-cam's ``GradCAM``).

>>> onnxviz.cam(m, "photo.jpg", method="grad", layer="block5_conv3").weights.shape   # doctest: +SKIP
(1, 512)
"""

from __future__ import annotations

import numpy as np

from .base import GradientMethod

__all__ = ["GradCAM"]


class GradCAM(GradientMethod):
    title = "Grad-CAM"

    def weights(self, ctx):
        return ctx.grads.mean(axis=(2, 3), dtype=np.float32)
