"""Saliency: which input pixels the class score is most sensitive to, from gradients alone.

Four methods, with captum's formulas (``captum.attr``: Saliency, NoiseTunnel(smoothgrad),
IntegratedGradients, GuidedBackprop), run as ONNX backward graphs in onnxruntime:

* ``gradient`` (Simonyan et al. 2014): ``∂S_c/∂x``;
* ``smoothgrad`` (Smilkov et al. 2017): the mean of ``∂S_c/∂x`` at ``x + ε``, ``n`` samples,
  ``ε ~ N(0, σ²)`` with ``σ = noise · (max x − min x)`` per image (the paper's noise level);
  the noise is ``np.random.default_rng(seed).standard_normal((N, n, *x.shape[1:])) · σ``;
* ``integrated`` (Sundararajan et al. 2017): ``(x − b) · Σᵢ wᵢ ∂S_c/∂x (b + αᵢ(x − b))`` with
  captum's default Gauss–Legendre nodes ``αᵢ`` and weights ``wᵢ`` (``steps`` of them) and
  baseline ``b`` (default zeros, as captum's); completeness, ``Σ values ≈ S_c(x) − S_c(b)``,
  is reported as ``delta = Σ values − (S_c(x) − S_c(b))`` per image;
* ``guided`` (Springenberg et al. 2015): the gradient with every ReLU passing back only
  positive gradients through positive inputs.

``S_c`` is the class score (the logit before a final Softmax; :func:`~onnxviz.explain.gradients.score_tensor`);
``target=None`` takes each image's top class.

>>> import onnxviz
>>> m = onnxviz.load("models/demo.onnx")                             # doctest: +SKIP
>>> a = onnxviz.saliency(m, "photo.jpg", method="smoothgrad")        # doctest: +SKIP
>>> a.values.shape, a.heatmap.shape, a.target                        # doctest: +SKIP
((1, 64, 64, 3), (1, 64, 64), array([4]))

``values`` are raw, float32, in the input tensor's own layout and scale (a caffe model's
gradient is per BGR mean-subtracted unit); ``heatmap`` is for drawing: ``max`` over channels
of ``|values|``, divided by its 99th percentile and clipped to [0, 1] (captum's
visualisation clips the top 2% likewise).

Known limits: the score of one class per image; images go to rank-4 inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import runtime
from ..errors import OnnxvizError
from ..graph.rewrite import sub_model
from ..render.notebook import Pictured
from .gradients import Score, cached, gradients, input_tensor, score_tensor

__all__ = ["Attribution", "saliency", "METHODS", "class_scores"]

METHODS = ("gradient", "smoothgrad", "integrated", "guided")


@dataclass(frozen=True)
class Attribution(Pictured):
    """The result of :func:`saliency` (in a notebook: each image's heatmap)."""

    values: np.ndarray           # (N, *input) float32: the attribution, in the input's layout and scale
    heatmap: np.ndarray          # (N, H, W) float32 in [0, 1], for drawing
    target: np.ndarray           # (N,) int: the class of each image
    score: np.ndarray            # (N,) float32: the class score at the image
    method: str
    delta: np.ndarray | None = None  # integrated: Σ values − (S(x) − S(baseline)), per image

    def _pictures(self) -> list:
        from ..render.patterns import heatmap_image

        def draw(k):
            title = f"{self.method} saliency of class {int(self.target[k])} (score {float(self.score[k]):.4g})"
            return lambda: heatmap_image(self.heatmap[k], title)

        return [(f"image {k}", draw(k)) for k in range(len(self.heatmap))]


def class_scores(model, x: np.ndarray) -> np.ndarray:
    """The class scores ``(N, K)`` of a ready input tensor (one cached forward session)."""
    tensor = score_tensor(model)
    sess = cached(model, ("scores", tensor), lambda: runtime.session(sub_model(model.proto, [tensor]), model.base_dir))
    inp = model.input
    fixed = inp.shape[0] if inp.shape and isinstance(inp.shape[0], int) and inp.shape[0] > 0 else 0
    step = fixed or len(x)
    parts = []
    for lo in range(0, len(x), step):
        part = x[lo:lo + step]
        pad = step - len(part)
        if pad:  # a fixed batch size: fill the last run
            part = np.concatenate([part, np.zeros((pad,) + part.shape[1:], part.dtype)])
        parts.append(runtime.run(sess, {inp.name: part}, [tensor])[0][:step - pad])
    return np.asarray(np.concatenate(parts), np.float32).reshape(len(x), -1)


def _heatmap(values: np.ndarray, layout: str) -> np.ndarray:
    mag = np.abs(values).max(axis=3 if layout == "NHWC" else 1)
    top = np.percentile(mag.reshape(len(mag), -1), 99, axis=1).reshape(-1, 1, 1)
    return np.clip(np.divide(mag, top, out=np.zeros_like(mag), where=top > 0), 0, 1).astype(np.float32)


def _repeat(x: np.ndarray, k: int) -> np.ndarray:
    return np.repeat(x, k, axis=0)


def saliency(model, images, target=None, method: str = "gradient", *, n: int = 25, noise: float = 0.15,
             seed: int = 0, baseline=None, steps: int = 50, batch: int = 16, preprocess=None, size=None,
             max_bytes=None, progress=None) -> Attribution:
    """The saliency of ``target`` (a class, one per image, or ``None``: the top class) for
    ``images`` (paths, PIL images, arrays, or a ready input tensor). See the module.

    ``n``, ``noise``, ``seed``: SmoothGrad's samples, noise level and noise seed; ``baseline``,
    ``steps``: Integrated Gradients' baseline (an input tensor, a number, or zeros) and nodes;
    ``batch``: images per onnxruntime run; ``progress``: ``callback(runs done)``.
    """
    if method not in METHODS:
        raise OnnxvizError(f"unknown saliency method '{method}'; methods are: {', '.join(METHODS)}")
    x = input_tensor(model, images, preprocess, size)
    count = len(x)
    score = class_scores(model, x)
    if target is None:
        target = score.argmax(1)
    target = np.broadcast_to(np.asarray(target), (count,)) if np.ndim(target) == 0 else np.asarray(target)
    kw = dict(batch=batch, max_bytes=max_bytes, progress=progress)
    delta = None
    if method in ("gradient", "guided"):
        at, grads = gradients(model, x, Score(target), guided=method == "guided", **kw)
        values = grads[model.input.name]
    elif method == "smoothgrad":
        if n < 1 or noise < 0:
            raise OnnxvizError(f"smoothgrad needs n ≥ 1 samples and noise ≥ 0, not n={n}, noise={noise}")
        spread = (x.reshape(count, -1).max(1) - x.reshape(count, -1).min(1)).reshape((-1,) + (1,) * (x.ndim - 1))
        eps = np.random.default_rng(seed).standard_normal((count, n) + x.shape[1:]).astype(np.float32)
        noisy = (x[:, None] + eps * (noise * spread)[:, None]).reshape((count * n,) + x.shape[1:])
        _, grads = gradients(model, noisy.astype(x.dtype), Score(_repeat(target, n)), **kw)
        values = grads[model.input.name].reshape((count, n) + x.shape[1:]).mean(1)
        at = None
    else:
        if steps < 1:
            raise OnnxvizError(f"integrated gradients need steps ≥ 1, not {steps}")
        base = np.zeros_like(x) if baseline is None else np.broadcast_to(np.asarray(baseline, x.dtype), x.shape)
        nodes, weights = np.polynomial.legendre.leggauss(steps)  # captum's "gausslegendre", on [0, 1]
        alphas, weights = 0.5 * (1 + nodes), 0.5 * weights
        path = (base[:, None] + alphas.reshape((1, -1) + (1,) * (x.ndim - 1)) * (x - base)[:, None])
        _, grads = gradients(model, path.reshape((count * steps,) + x.shape[1:]).astype(x.dtype),
                             Score(_repeat(target, steps)), **kw)
        g = grads[model.input.name].reshape((count, steps) + x.shape[1:]).astype(np.float64)
        values = ((x - base) * np.tensordot(weights, g, axes=([0], [1]))).astype(np.float32)
        picked = np.arange(count), target
        delta = (values.reshape(count, -1).sum(1, dtype=np.float64)
                 - (score[picked] - class_scores(model, np.ascontiguousarray(base))[picked])).astype(np.float32)
        at = None
    values = np.asarray(values, np.float32)
    at = score[np.arange(count), target] if at is None else at
    return Attribution(values, _heatmap(values, model.input.layout), target.astype(np.int64),
                       np.asarray(at, np.float32), method, delta)
