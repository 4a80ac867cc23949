"""ScoreCAM (Wang et al. 2020): each channel weighs the score of the input masked by it.

For each channel ``c`` of the layer: its map upsampled to the input size (bilinear, corners
aligned, as torch's ``UpsamplingBilinear2d``), min–max normalised, ``(m − min) / (max − min +
1e-8)``, multiplies the input (every input channel); the masked inputs run through the model in
batches of ``batch_size``, and the weights are the softmax over channels of their target
scores (pytorch-grad-cam's ``ScoreCAM``). ``top_channels=K`` masks only the ``K`` channels of
highest variance (Faster Score-CAM); the others weigh 0, and the softmax is over the ``K``.

>>> c = onnxviz.cam(m, "photo.jpg", method="score", top_channels=64)     # doctest: +SKIP

Memory is bounded by the batch: masks are made batch by batch, and the batch is halved until
a run fits the memory budget. A channel whose map is constant (a dead ReLU) masks the input
to zero: the score of the zero input is computed once and shared (exact: the mask is 0).
The session keeps onnxruntime's memory arena, and its NCHWc layout for convs whose weights
allow it (:func:`onnxviz.runtime.blocked`: VGG16's, with its 470 MB classifier): it runs
hundreds of times.

Known limits: the score of one class per image; the masks multiply the input tensor as the
model takes it (after preprocessing), as pytorch-grad-cam does.
"""

from __future__ import annotations

import numpy as np

from .. import runtime
from ..graph.rewrite import sub_model
from .base import CamMethod, bilinear, fit_batch, need, run_fixed
from .gradients import cached

__all__ = ["ScoreCAM", "top_variance"]


def top_variance(acts: np.ndarray, k: int | None) -> np.ndarray:
    """``(N, K)`` indices of the ``k`` channels of highest variance per image (all, in order, for ``None``)."""
    n, c = acts.shape[:2]
    if k is None or k >= c:
        return np.broadcast_to(np.arange(c), (n, c))
    var = acts.reshape(n, c, -1).var(axis=2)
    return np.sort(np.argsort(-var, axis=1, kind="stable")[:, :k], axis=1)


def _scorer(ctx):
    """``run(x) → (B, K)`` class scores, from a cached session of the model pruned to them."""
    model, tensor = ctx.model, ctx.score_tensor

    def make():
        sub = sub_model(model.proto, [tensor])
        return runtime.session(sub, model.base_dir, blocked=runtime.blocked(sub))

    sess = cached(model, ("cam-scores", tensor), make)
    inp = model.input
    needed = {i.name for i in sess.get_inputs()}
    fixed = inp.shape[0] if inp.shape and isinstance(inp.shape[0], int) and inp.shape[0] > 0 else 0
    feeds = {k: v for k, v in ctx.feeds.items() if k in needed}

    def run(x):
        out = run_fixed(lambda a, _: runtime.run(sess, {inp.name: a, **feeds}, [tensor]), x, {}, fixed)
        return np.asarray(out[0], np.float32).reshape(len(x), -1)
    return run


def _masked(x: np.ndarray, maps: np.ndarray, nhwc: bool) -> np.ndarray:
    """Each input of ``x`` times its ``(h, w)`` map, upsampled to the input (corners aligned) and
    min–max normalised as pytorch-grad-cam does: ``(m − min) / (max − min + 1e-8)``."""
    size = x.shape[1:3] if nhwc else x.shape[2:4]
    masks = bilinear(maps, size, corners=True)
    low = masks.min(axis=(1, 2), keepdims=True)
    masks = (masks - low) / (masks.max(axis=(1, 2), keepdims=True) - low + np.float32(1e-8))
    return (x * (masks[..., None] if nhwc else masks[:, None])).astype(x.dtype, copy=False)


class ScoreCAM(CamMethod):
    title = "ScoreCAM"
    options = ("batch_size", "top_channels")

    def weights(self, ctx):
        acts, x = ctx.acts, ctx.x
        n, c = acts.shape[:2]
        chosen = top_variance(acts, ctx.top_channels)
        flat = acts.reshape(n, c, -1)
        constant = flat.max(axis=2) == flat.min(axis=2)
        work = [(i, ch) for i in range(n) for ch in chosen[i] if not constant[i, ch]]
        scores = np.zeros((n, c), np.float32)
        run = _scorer(ctx)
        if any(constant[i, ch] for i in range(n) for ch in chosen[i]):  # the zero input's score, once
            zero = run(np.zeros((1,) + x.shape[1:], x.dtype))[0]
            scores[constant] = zero[np.broadcast_to(ctx.target[:, None], (n, c))[constant]]
        h, w = ctx.size
        pixels = h * w * 4
        step = fit_batch("ScoreCAM", max(1, int(ctx.batch_size)), lambda b: need(
            ctx.model, [ctx.score_tensor], (b,) + x.shape[1:], ctx.feeds, extra=3 * b * pixels), ctx.max_bytes)
        nhwc = ctx.model.input.layout == "NHWC"
        for lo in range(0, len(work), step):
            items, chans = (np.array(v) for v in zip(*work[lo:lo + step]))
            got = run(_masked(x[items], acts[items, chans], nhwc))
            scores[items, chans] = got[np.arange(len(items)), ctx.target[items]]
            ctx.tick(lo + len(items), len(work))
        picked = np.take_along_axis(scores, chosen, axis=1).astype(np.float64)
        soft = np.exp(picked - picked.max(axis=1, keepdims=True))
        weights = np.zeros((n, c), np.float32)
        np.put_along_axis(weights, chosen, (soft / soft.sum(axis=1, keepdims=True)).astype(np.float32), axis=1)
        return weights
