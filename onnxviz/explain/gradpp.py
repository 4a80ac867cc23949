"""Grad-CAM++ (Chattopadhyay et al. 2018, eq. 19): positive gradients weighted per pixel.

With ``g = ∂S/∂A``: ``α = g² / (2g² + Σ_ij A · g³ + 1e-6)`` (0 where ``g = 0``) and
``w_c = Σ_ij α · ReLU(g)``, pytorch-grad-cam's ``GradCAMPlusPlus`` (its closed form for an
exponential score: gradients of higher order as powers of the first).

>>> onnxviz.cam(m, "photo.jpg", method="grad++")                      # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from .base import GradientMethod

__all__ = ["GradCAMPlusPlus"]


class GradCAMPlusPlus(GradientMethod):
    title = "Grad-CAM++"

    def weights(self, ctx):
        g, a = ctx.grads, ctx.acts
        g2 = g * g
        total = a.sum(axis=(2, 3), keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):  # where g = 0: α is 0 whatever the division gives
            alpha = np.where(g != 0, g2 / (2 * g2 + total * (g2 * g) + np.float32(1e-6)), np.float32(0))
        return (np.maximum(g, 0) * alpha).sum(axis=(2, 3), dtype=np.float32)
