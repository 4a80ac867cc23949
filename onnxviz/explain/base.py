"""Class activation maps: the result (:class:`Cam`) and the base class every method overrides one hook of.

The shape of pytorch-grad-cam's ``base_cam.py``. A method is a :class:`CamMethod` subclass
that overrides ONE hook:

* :meth:`CamMethod.weights`: ``(N, C)`` channel weights, the map being ``Σ_c w_c · A_c``
  (Grad-CAM, Grad-CAM++, XGradCAM, ScoreCAM, AblationCAM); or
* :meth:`CamMethod.cam_image`: the ``(N, h, w)`` map itself (EigenCAM, LayerCAM, HiResCAM);

and says in class attributes whether it needs ``∂S/∂A`` (``uses_gradients``: forward and
backward in one onnxruntime session, :func:`onnxviz.gradients`), whether it needs a class
score (``needs_class``), and which options it takes. Then, every method alike
(``BaseCAM.compute_cam_per_layer`` and ``aggregate_multi_layers`` for one layer):
``raw`` → ReLU → min–max scaled, ``(x − min) / (max + 1e-7)`` (``scale_cam_image``) → resized
to the input size, bilinear with half-pixel centres (``cv2.resize``'s ``INTER_LINEAR``) →
min–max scaled again: the ``heatmap``.

>>> class MeanCAM(CamMethod):          # every channel weighs the same
...     title = "mean activation"
...     def weights(self, ctx):
...         return np.ones(ctx.acts.shape[:2], np.float32)

Known limits: 2-D maps only (a layer's tensor ``(N, C, h, w)``); one layer per map.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..budget import estimate, memory_budget
from ..errors import ResourceError, format_bytes, format_shape
from ..render.notebook import Pictured

__all__ = ["Cam", "CamMethod", "GradientMethod", "Context", "bilinear", "scale", "heatmap", "fit_batch", "need",
           "run_fixed"]


@dataclass(frozen=True, eq=False)
class Cam(Pictured):
    """What :func:`onnxviz.cam` returns; a notebook shows it as the heatmap over each image."""

    heatmap: np.ndarray          # (N, H, W) float32 in [0, 1], at the input size
    raw: np.ndarray              # (N, h, w) float32 at the layer's resolution, before ReLU and scaling
    weights: np.ndarray | None   # (N, C) float32 channel weights (None: EigenCAM, LayerCAM, HiResCAM)
    target: np.ndarray           # (N,) int64: the class explained (-1: EigenCAM, which explains no class)
    score: np.ndarray            # (N,) float32: its score, the logit before a final Softmax (NaN: EigenCAM)
    layer: str                   # the tensor the map is of
    method: str                  # its key: eigen, score, ablation, grad, grad++, xgrad, layer, hires, guided-grad
    title: str = ""              # the method as shown: "Grad-CAM++"
    names: tuple = ()            # each target's class name (labels, else its index; "" for none)
    images: np.ndarray | None = field(default=None, repr=False)  # (N, H, W, 3) uint8: the images at the input size
    guided: np.ndarray | None = field(default=None, repr=False)  # guided-grad: (N, H, W, C) guided backprop × heatmap
    layer_name: str = ""         # the friendly name of the conv layer whose feature map ``layer`` is, if one

    def _pictures(self) -> list:
        from ..render.overlay import cam_picture

        return [(self.caption(k), lambda k=k: cam_picture(self, k)) for k in range(len(self.heatmap))]

    def caption(self, k: int = 0) -> str:
        """``Grad-CAM of class 'cat' (score 11.2) at block5_conv3``."""
        what = self.title or self.method
        if int(self.target[k]) >= 0:
            name = self.names[k] if k < len(self.names) and self.names[k] else str(int(self.target[k]))
            what += f" of class '{name}' (score {float(self.score[k]):.4g})"
        return f"{what} at {self.layer_name or self.layer}" + (f", image {k}" if len(self.heatmap) > 1 else "")


@dataclass
class Context:
    """What a method's hook reads: the input, the layer's activations (and gradients), the
    class scores and targets, and the options."""

    model: object
    x: np.ndarray                  # the input tensor (N, *input), in the model's layout and dtype
    layer: str                     # the tensor the map is of
    acts: np.ndarray               # (N, C, h, w) float32: its activations
    size: tuple                    # (H, W): the input's spatial size
    target: np.ndarray             # (N,) int64 classes
    scores: np.ndarray | None = None     # (N, K) float32 class scores at x (None: no class output)
    score_tensor: str | None = None      # the tensor holding them (the logit before a final Softmax)
    grads: np.ndarray | None = None      # (N, C, h, w) float32 ∂S/∂A, for uses_gradients methods
    act_dtype: object = np.float32       # the layer tensor's own dtype (float16 models)
    feeds: dict = field(default_factory=dict)   # the model's other inputs
    batch_size: int = 32
    top_channels: int | None = None
    sign_correction: bool = False
    max_bytes: object = None
    progress: object = None        # callback(done, total), for methods that run the model many times

    def tick(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(done, total)


class CamMethod:
    """A CAM method: override :meth:`weights` or :meth:`cam_image` (see the module)."""

    title = ""                  # as shown: "Grad-CAM"
    uses_gradients = False      # needs ∂S/∂A (ctx.grads)
    needs_class = True          # needs a class score (EigenCAM does not)
    options: tuple = ()         # the options of cam() it takes besides the common ones

    def weights(self, ctx: Context) -> np.ndarray:
        """``(N, C)`` channel weights: the hook of the methods that use the default :meth:`cam_image`
        (the others, EigenCAM, LayerCAM, HiResCAM, override that instead)."""
        raise TypeError(f"{type(self).__name__} overrides neither weights() nor cam_image(); a CAM method "
                        "overrides one of them")

    def cam_image(self, ctx: Context) -> tuple[np.ndarray, np.ndarray | None]:
        """``(raw (N, h, w), weights (N, C) or None)``; default: ``Σ_c w_c · A_c``."""
        w = np.asarray(self.weights(ctx), np.float32)
        return np.einsum("nc,nchw->nhw", w, ctx.acts, dtype=np.float32), w


class GradientMethod(CamMethod):
    """A method that reads ``ctx.grads``, ``∂S/∂A`` (``batch_size``: images per session run)."""

    uses_gradients = True
    options = ("batch_size",)


# ---------------------------------------------------------------- resizing and scaling

def _interp(n_in: int, n_out: int, corners: bool) -> np.ndarray:
    """``(n_out, n_in)`` bilinear weights: half-pixel centres clamped at the borders (``cv2.resize``
    ``INTER_LINEAR``), or ``corners``: the end pixels aligned (torch's ``UpsamplingBilinear2d``)."""
    at = np.arange(n_out, dtype=np.float64)
    if corners:
        src = at * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(n_out)
    else:
        src = (at + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0, n_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), lo), 1 - frac)
    np.add.at(m, (np.arange(n_out), hi), frac)
    return m.astype(np.float32)


def bilinear(maps: np.ndarray, size: tuple, corners: bool = False) -> np.ndarray:
    """``(N, h, w)`` → ``(N, H, W)`` float32, bilinear; ``corners``: align the corner pixels.

    Two small matrix products (``Ah · map · Awᵀ``): separable interpolation is exactly that."""
    h, w = maps.shape[-2:]
    rows, cols = _interp(h, size[0], corners), _interp(w, size[1], corners)
    return np.matmul(np.matmul(rows, np.asarray(maps, np.float32)), cols.T)


def scale(maps: np.ndarray) -> np.ndarray:
    """Each ``(h, w)`` map min–max scaled as pytorch-grad-cam's ``scale_cam_image``:
    ``(x − min) / (1e-7 + max(x − min))``, float32."""
    maps = np.asarray(maps, np.float32)
    shifted = maps - maps.min(axis=(-2, -1), keepdims=True)
    return shifted / (np.float32(1e-7) + shifted.max(axis=(-2, -1), keepdims=True))


def heatmap(raw: np.ndarray, size: tuple) -> np.ndarray:
    """``raw`` → ReLU → scaled → resized to ``size`` (half-pixel bilinear) → scaled again."""
    return scale(bilinear(scale(np.maximum(raw, 0)), size))


# ---------------------------------------------------------------- runs in batches

def fit_batch(what: str, batch: int, need, max_bytes) -> int:
    """The largest batch ≤ ``batch`` (halving) whose run fits the memory budget; ``need(b)`` is
    :func:`onnxviz.budget.estimate`'s dict for a run of ``b`` items plus ``extra`` bytes held
    beside it. Refused, saying what it would need, when even one item does not fit."""
    limit = memory_budget(max_bytes)
    if limit is None:
        return batch
    while True:
        est = need(batch)
        if est["total"] is None:
            name, node = est["unsized"][0]
            raise ResourceError(f"the {what} runs cannot be sized: tensor '{name}'"
                                f"{f' of op {node.op_type}' if node is not None else ''} has no inferable "
                                "shape, so they cannot be checked against the budget: run them unchecked with "
                                "max_bytes='off', --max-memory off or ONNXVIZ_MAX_BYTES=off")
        total = est["total"] + est.get("extra", 0)
        if total <= limit:
            return batch
        if batch == 1:
            raise ResourceError(f"one {what} run would need {format_bytes(total)} (input "
                                f"{format_shape(est['shape'])}); the budget is {format_bytes(limit)}: raise it "
                                "with max_bytes=, --max-memory or ONNXVIZ_MAX_BYTES")
        batch = max(1, batch // 2)


def need(model, tensors, shape: tuple, feeds=None, extra: int = 0) -> dict:
    """:func:`onnxviz.budget.estimate` of a run fetching ``tensors`` at input ``shape``, with
    ``extra`` bytes held beside it (``fit_batch``'s ``need``)."""
    est = estimate(model, list(tensors), tuple(shape), feeds)
    return {**est, "extra": extra, "shape": tuple(shape)}


def run_fixed(run, first: np.ndarray, others: dict, fixed: int) -> list:
    """``run(feeds)`` on ``first`` (and ``others``, each its rows), in chunks of a fixed batch
    size ``fixed`` (the last filled with zeros, the filler dropped after), or at once (0)."""
    if not fixed or len(first) == fixed:
        return run(first, others)
    parts = []
    for lo in range(0, len(first), fixed):
        chunk = [first[lo:lo + fixed], *(v[lo:lo + fixed] for v in others.values())]
        pad = fixed - len(chunk[0])
        if pad:
            chunk = [np.concatenate([c, np.zeros((pad,) + c.shape[1:], c.dtype)]) for c in chunk]
        out = run(chunk[0], dict(zip(others, chunk[1:])))
        parts.append([o[:fixed - pad] for o in out])
    return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]

