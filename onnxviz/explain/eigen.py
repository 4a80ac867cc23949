"""EigenCAM (Muhammad & Yeasin 2020): the activations projected on their first principal component.

Per image, the ``(h·w, C)`` matrix of activations (NaN → 0), each channel centred on its
mean over the pixels, is projected on its first right singular vector ``VT[0]``; the map is
that projection (pytorch-grad-cam's ``get_2d_projection``). No class is involved: it works on
any model, a detector or a style-transfer net included, and runs the model only up to the
layer (VGG16: not its 470 MB classifier).

The sign of a singular vector is arbitrary. Left as LAPACK gives it, the map equals
pytorch-grad-cam's, sign included; ``sign_correction=True`` flips a map whose most negative
value is larger in size than its most positive one (Seg-Eigen-CAM's eq. 13, pytorch-grad-cam's
``get_2d_projection_with_sign_correction``), so the salient region comes out positive.

>>> c = onnxviz.cam(m, "photo.jpg", method="eigen")                      # doctest: +SKIP
>>> c.weights is None, c.raw.shape                                         # doctest: +SKIP
(True, (1, 14, 14))

pytorch-grad-cam calls ``np.linalg.svd(M, full_matrices=True)``, whose ``U`` is ``(h·w)²``
floats: 39 MB at 56×56, and 7.4 s against 1.8 s for 3136×512 (measured once, loaded machine).
``full_matrices=False`` gives the same ``VT`` (LAPACK ``gesdd`` runs the same QR and
bidiagonalisation) with a ``U`` of ``h·w × min(h·w, C)``: on 280 random ReLU-like matrices of 14
shapes from 16×8 to 3136×512, ``VT[0]`` had the same sign every time and differed by at most
3e-17. The routes without any ``U`` (the SVD of the QR's ``R``, the eigenvectors of ``MᵀM``)
give the same vector up to its sign, which differed from LAPACK's in 33 of 140 cases for the
first: not used, since the sign is what makes the map equal pytorch-grad-cam's.
"""

from __future__ import annotations

import numpy as np

from .base import CamMethod

__all__ = ["EigenCAM", "projection"]


def projection(acts: np.ndarray, sign_correction: bool = False) -> np.ndarray:
    """``(N, C, h, w)`` → ``(N, h, w)`` float32: each image's projection on its first principal component."""
    maps = []
    for a in np.nan_to_num(np.asarray(acts, np.float32), nan=0.0, posinf=np.inf, neginf=-np.inf):
        m = a.reshape(a.shape[0], -1).T
        m = m - m.mean(axis=0)
        vt = np.linalg.svd(m, full_matrices=False)[2]
        p = (m @ vt[0]).reshape(a.shape[1:])
        if sign_correction and abs(p.min()) > abs(p.max()):
            p = -p
        maps.append(p)
    return np.asarray(maps, np.float32)


class EigenCAM(CamMethod):
    title = "EigenCAM"
    needs_class = False
    options = ("sign_correction",)

    def cam_image(self, ctx):
        return projection(ctx.acts, ctx.sign_correction), None
