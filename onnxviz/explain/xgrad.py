"""XGradCAM (Fu et al. 2020): gradients weighted by the normalised activations.

``w_c = Σ_ij ∂S/∂A_cij · A_cij / (Σ_ij A_cij + 1e-7)`` (pytorch-grad-cam's ``XGradCAM``).

>>> onnxviz.cam(m, "photo.jpg", method="xgrad")                       # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from .base import GradientMethod

__all__ = ["XGradCAM"]


class XGradCAM(GradientMethod):
    title = "XGradCAM"

    def weights(self, ctx):
        a = ctx.acts
        total = a.sum(axis=(2, 3), keepdims=True)
        return (ctx.grads * a / (total + np.float32(1e-7))).sum(axis=(2, 3), dtype=np.float32)
