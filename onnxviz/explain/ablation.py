"""AblationCAM (Desai & Ramaswamy 2020): each channel weighs the score lost when it is removed.

``w_c = (S − S_c) / S``, ``S`` the target score, ``S_c`` the score with channel ``c`` of the
layer ablated (pytorch-grad-cam's ``AblationCAM``). The graph is split at the layer
(:func:`onnxviz.graph.rewrite.tail`): the layer's activations are computed once, then only
the part of the network after it runs, in batches of ablated copies. (pytorch-grad-cam runs
the whole network once per ablated channel; on VGG16 at block5_conv3 the part after the layer
is its classifier, see BENCHMARKS.md.) Tensors computed before the layer that the tail also
reads (a skip connection around an arbitrary tensor) are computed once too and fed.

The ablated value, as pytorch-grad-cam's ``AblationLayer``: 0 when the image's activations at
the layer have 0 as their minimum (after a ReLU), else ``min − 1e7``. Its ``AblationLayer``
takes that minimum over the batch it is filling, copies it has already ablated included, so
the k-th copy of each batch of ``batch_size`` gets ``min − k·1e7`` (k = 1, 2, …): onnxviz
gives channel ``c`` the value ``min − (c mod batch_size + 1)·1e7`` (float32, subtracted one
1e7 at a time as there), so its weights equal pytorch-grad-cam's at the same ``batch_size``
(32 by default on both sides) whatever batches the memory budget leaves onnxviz to run.

>>> c = onnxviz.cam(m, "photo.jpg", method="ablation", layer="block5_conv3")   # doctest: +SKIP

Known limits: a model with a fixed batch size runs its tail at that batch; the score must
depend on the layer (it does, for a layer on the way to it).
"""

from __future__ import annotations

import numpy as np

from .. import runtime
from ..features import run_tensors
from ..graph.inputs import InputInfo
from ..graph.index import Index
from ..graph.rewrite import tail, tail_inputs
from ..model import cached_shapes
from .base import CamMethod, fit_batch, need, run_fixed
from .gradients import cached

__all__ = ["AblationCAM", "ablation_values"]

ABLATION = np.float32(1e7)


def ablation_values(acts: np.ndarray, batch_size: int) -> np.ndarray:
    """``(C,)`` float32: the value each channel of one image's ``(C, h, w)`` activations is set to."""
    c = acts.shape[0]
    low = np.float32(acts.min())
    if low == 0:
        return np.zeros(c, np.float32)
    steps = np.empty(batch_size, np.float32)
    for k in range(batch_size):
        low = np.float32(low - ABLATION)
        steps[k] = low
    return steps[np.arange(c) % batch_size]


class _Tail:
    """The part after the split, as :func:`onnxviz.budget.estimate` reads a model."""

    def __init__(self, proto, base_dir: str, layer: str, dtype, shape: tuple):
        self.proto, self._index = proto, Index(proto.graph, base_dir)
        elem = next(i.type.tensor_type.elem_type for i in proto.graph.input if i.name == layer)
        self.input = InputInfo(layer, "NCHW", ("N",) + tuple(shape[1:]), elem, tuple(shape[2:4]), "model")
        self._shape_cache: dict = {}

    def shapes(self, feeds=None):
        return cached_shapes(self.proto, self._shape_cache, feeds)


class AblationCAM(CamMethod):
    title = "AblationCAM"
    options = ("batch_size",)

    def weights(self, ctx):
        model, layer, out = ctx.model, ctx.layer, ctx.score_tensor
        acts = ctx.acts.astype(ctx.act_dtype, copy=False)
        n, c = acts.shape[:2]
        inputs = {model.input.name: ctx.x, **ctx.feeds}
        others = tail_inputs(model.proto, layer, [out])
        made = [o for o in others if o not in inputs]
        values = {**{o: inputs[o] for o in others if o in inputs},
                  **dict(zip(made, run_tensors(model, ctx.x, tuple(made), ctx.feeds, fast=True) if made else ()))}
        types = {name: (v.dtype, (None,) + v.shape[1:]) for name, v in ((layer, acts), *values.items())}
        part = cached(model, ("cam-tail", layer, out, acts.shape[1:]), lambda: _Tail(
            tail(model.proto, layer, [out], types), model.base_dir, layer, acts.dtype, acts.shape))
        sess = cached(model, ("cam-tail-session", layer, out, acts.shape[1:]),
                      lambda: runtime.session(part.proto, model.base_dir))
        inp = model.input
        fixed = inp.shape[0] if inp.shape and isinstance(inp.shape[0], int) and inp.shape[0] > 0 else 0
        size = int(ctx.batch_size)
        per_item = sum(v[:1].nbytes for v in values.values())  # the other inputs, one copy per item
        step = fixed or fit_batch("AblationCAM", max(1, size), lambda b: need(
            part, [out], (b,) + acts.shape[1:], {k: v[:1] for k, v in values.items()},
            extra=(b - 1) * per_item), ctx.max_bytes)
        original = ctx.scores[np.arange(n), ctx.target]
        ablated = np.zeros((n, c), np.float32)

        def run(block, feeds):
            return runtime.run(sess, {layer: block, **feeds}, [out])

        for i in range(n):
            fill = ablation_values(acts[i], size)
            extra = {k: np.repeat(v[i:i + 1], step, axis=0) for k, v in values.items()}
            for lo in range(0, c, step):
                chans = np.arange(lo, min(c, lo + step))
                block = np.repeat(acts[i:i + 1], len(chans), axis=0)
                block[np.arange(len(chans)), chans] = fill[chans, None, None]
                got = run_fixed(run, block, {k: v[:len(chans)] for k, v in extra.items()}, fixed)[0]
                ablated[i, chans] = np.asarray(got, np.float32).reshape(len(chans), -1)[:, ctx.target[i]]
                ctx.tick(i * c + chans[-1] + 1, n * c)
        return ((original[:, None] - ablated) / original[:, None]).astype(np.float32)
