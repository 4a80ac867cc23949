"""What each filter responds to: gradient ascent on the input, batched over channels.

With ``jitter=0`` this is exactly the loop of the Keras example "Visualizing what convnets
learn" (F. Chollet, keras.io), one image per channel, all channels of a batch in one
onnxruntime run:

1. start (:func:`initial`): ``(u − 0.5) · 0.25`` in the input space, ``u`` uniform in [0, 1)
   (``tf.random.uniform``'s role; here ``np.random.default_rng(seed).random((K, H, W, C),
   float32)``, drawn for all channels at once, channels last, then laid out as the input is).
   ``start="gray"`` instead: the image that is for a [−1, 1] input, mid-gray pixels
   ``127.5 + (u − 0.5)·0.25·127.5``, preprocessed as the model's images are (for a ``unit`` or
   ``raw`` model the Keras start is a black image, on which many ReLU channels are dead);
   or an array ``(K, *input)``: the images to start from, in the input's space and layout
   (one step from another loop's image: the step-by-step comparison of the tests);
2. objective: the mean of the channel's feature map away from a ``border`` (2) pixel border;
3. ``steps`` (30) times: ``x += lr · g / ‖g‖₂`` (``tf.math.l2_normalize``: ε = 1e-12 on the
   squared norm; per image), ``lr`` 10;
4. shown de-processed: minus the mean, over the std (+1e-5), × 0.15, the ``crop`` (25) pixel
   border cut off, + 0.5, clipped to [0, 1], × 255, as uint8 RGB (a BGR model's flipped).

The image stays in the model's input space (its preprocessing: the start is small noise
around 0 there), so the pattern is what the network sees, shown de-processed.

>>> import onnxviz
>>> m = onnxviz.load("models/demo.onnx")                              # doctest: +SKIP
>>> p = onnxviz.patterns(m, "block3_conv2", size=64)                  # doctest: +SKIP
>>> p.images.shape, p.activation.shape                                # doctest: +SKIP
((64, 32, 32, 3), (64,))

Options from the Lucid literature (Olah et al., "Feature Visualization", Distill 2017):
``jitter=j`` rolls the image by a random shift of up to ``j`` pixels before each step (the
gradient is rolled back), which suppresses the high-frequency checkerboards of strided convs.
``revive=True``: a channel whose ReLU is off everywhere on the image (its objective is 0, so
the Keras loop's gradient is 0 and the image never moves) climbs the mean of its ReLU's input
instead, until it fires; channels alive at the start run the Keras loop unchanged.

Speed: the gradient graph is built for this loop (see BENCHMARKS.md, "Gradients"): the layer's
conv is computed for each image's channel alone (``Term(one=True)``,
:mod:`onnxviz.graph.restrict`), 2×2 MaxPools stay in onnxruntime's blocked layout by sharing
the gradient between tied maxima (``shared_ties``; from noise, a tie is a float32 rounding
accident, as the argmax flips that make this loop and TF's drift apart slowly), and the final
objective is a forward-only run.

Known limits: images go to rank-4 (image) inputs only; a fixed-size model takes its own size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import preprocess as prep
from ..errors import LayerError, OnnxvizError
from ..features import _NP_TYPES, _input_size, resolve_preset
from ..graph.backward import Term
from ..graph.index import META
from ..render.notebook import Pictured
from .gradients import _tensor_of, runner

__all__ = ["Patterns", "patterns", "deprocess", "initial"]

_DEFAULT_SIZE = 128


@dataclass(frozen=True)
class Patterns(Pictured):
    """The result of :func:`patterns`: one image per channel (in a notebook: one grid)."""

    images: np.ndarray       # (K, H', W', 3) uint8 RGB: de-processed, the border cropped
    activation: np.ndarray   # (K,) float32: the objective at the final image
    channels: np.ndarray     # (K,) int: the channel of each image
    layer: str               # the layer (or tensor) asked for
    inputs: np.ndarray       # (K, *input) float32: the final images, in the model's input space and layout
    history: np.ndarray      # (steps, K) float32: the objective at each step, before its update


    def _pictures(self) -> list:
        from ..render.patterns import patterns_image

        return [(f"{self.layer}: patterns", lambda: patterns_image(self.images, self.channels,
                                                                    f"{self.layer}: patterns"))]


def deprocess(img: np.ndarray, crop: int = 25, bgr: bool = False) -> np.ndarray:
    """The Keras example's ``deprocess_image`` of one ``(H, W, C)`` image → uint8 RGB."""
    img = np.asarray(img, np.float64)
    img = (img - img.mean()) / (img.std() + 1e-5) * 0.15
    if crop:
        img = img[crop:-crop, crop:-crop]
    img = np.clip(img + 0.5, 0, 1) * 255
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif bgr:
        img = img[..., ::-1]
    return np.clip(img, 0, 255).astype(np.uint8)


def initial(model, count: int, size: tuple, seed: int = 0, start: str = "keras") -> np.ndarray:
    """The starting images of :func:`patterns`, ``(count, *input)`` float32 (see the module)."""
    inp = model.input
    nhwc = inp.layout == "NHWC"
    c_dim = inp.shape[3] if nhwc else inp.shape[1]
    c_in = c_dim if isinstance(c_dim, int) and c_dim > 0 else 3
    u = np.random.default_rng(seed).random((count, *size, c_in if start == "keras" else 3), dtype=np.float32)
    if start == "keras":
        x = (u - 0.5) * 0.25
        return x if nhwc else np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    if start != "gray":
        raise OnnxvizError(f"start must be 'keras' or 'gray', not {start!r}")
    pixels = list(127.5 + (u - 0.5) * np.float32(0.25 * 127.5))
    return prep.to_tensor(pixels, size=tuple(size), layout=inp.layout, preset=resolve_preset(model, None),
                          channels=c_in, dtype=np.float32)


def _bgr(model) -> bool:
    order = model.metadata.get(META["channel_order"], "").upper()
    return order == "BGR" or (not order and model.metadata.get(META["preprocess"]) == "caffe")


def patterns(model, layer, channels=None, *, size=None, steps: int = 30, lr: float = 10.0, seed: int = 0,
             batch: int = 16, jitter: int = 0, border: int = 2, crop: int = 25, start="keras",
             revive: bool = False, max_bytes=None, progress=None) -> Patterns:
    """Gradient-ascent images for ``channels`` (default: all) of ``layer``: see the module.

    ``size``: the image side (default the model's fixed size, else 128); ``batch``: channels
    per onnxruntime run (halved until the memory budget allows); ``crop``: pixels cut from
    each side for display (at most a quarter of the side); ``progress``: ``callback(steps done)``
    counting up to ``steps × K``.
    """
    inp = model.input
    if inp is None or len(inp.shape) != 4:
        raise OnnxvizError("patterns need an image input (rank 4); this model's input is "
                           f"{list(inp.shape) if inp else 'missing'}")
    hw = _input_size(model, size if size is not None else (None if inp.size_from == "model" else _DEFAULT_SIZE))
    if int(steps) < 1 or lr <= 0:
        raise OnnxvizError(f"steps must be 1 or more and lr positive, not steps={steps}, lr={lr}")
    nhwc = inp.layout == "NHWC"
    c_dim = inp.shape[3] if nhwc else inp.shape[1]
    c_in = c_dim if isinstance(c_dim, int) and c_dim > 0 else 3
    shape = (1, *hw, c_in) if nhwc else (1, c_in, *hw)
    tensor = _tensor_of(model, layer)
    terms = (Term("channel", tensor, int(border), one=True),)  # one channel per image: its conv alone
    act = model._index.producers.get(tensor)
    if revive and act is not None and act.op_type == "Relu":
        terms += (Term("channel", act.input[0], int(border), one=True),)
    run = runner(model, terms, (inp.name,), shape, shared_ties=True)  # from noise, a tie is a rounding accident
    count = run.graph.sizes[0]
    chosen = np.arange(count) if channels is None else np.atleast_1d(np.asarray(channels))
    if chosen.size == 0 or not np.issubdtype(chosen.dtype, np.integer):
        raise OnnxvizError(f"channels must be whole numbers, not {channels!r}")
    bad = chosen[(chosen < 0) | (chosen >= count)]
    if bad.size:
        raise LayerError(f"channel {int(bad[0])} is out of range: layer '{layer}' has {count} channels "
                         f"(0–{count - 1})")
    k = len(chosen)
    if isinstance(start, str):
        x = initial(model, k, hw, seed, start)
    else:
        x = np.array(start, np.float32)  # a copy: the caller's array is not moved
        if x.shape != (k, *shape[1:]):
            raise OnnxvizError(f"start must be 'keras', 'gray' or an array of shape {[k, *shape[1:]]} "
                               f"(one image per channel, as the input is laid out), not shape {list(x.shape)}")
    dtype = _NP_TYPES[inp.elem_type]
    step_b = run.batch_for((min(batch, k), *x.shape[1:]), min(max(1, int(batch)), k), max_bytes)
    shake = np.random.default_rng(seed + 1)
    axes = (1, 2) if nhwc else (2, 3)
    history = np.zeros((int(steps), k), np.float32)
    final = np.zeros(k, np.float32)
    for lo in range(0, k, step_b):
        part = x[lo:lo + step_b]
        one_hot = np.zeros((len(part), count), run.seed_dtype(0))
        one_hot[np.arange(len(part)), chosen[lo:lo + step_b]] = 1
        seeds = [one_hot] + ([one_hot.copy()] if len(terms) > 1 else [])  # the revival term: dead images only
        for s in range(int(steps)):
            shift = tuple(int(v) for v in shake.integers(-jitter, jitter + 1, 2)) if jitter else (0, 0)
            seen = np.roll(part, shift, axes) if jitter else part
            _, (g,), _, (values, *_) = run.run(seen.astype(dtype, copy=False), seeds, terms=True)
            if len(terms) > 1:
                seeds[1] = one_hot * (values <= 0)[:, None]
            g = np.asarray(g, np.float32)
            if jitter:
                g = np.roll(g, (-shift[0], -shift[1]), axes)
            norm = np.sqrt(np.maximum((g.reshape(len(g), -1) ** 2).sum(1), 1e-12))
            part = part + lr * g / norm.reshape((-1,) + (1,) * (g.ndim - 1))
            history[s, lo:lo + len(part)] = values
            if progress is not None:
                progress(lo * int(steps) + (s + 1) * len(part))
        x[lo:lo + step_b] = part
        final[lo:lo + len(part)] = run.values(part.astype(dtype, copy=False),
                                              [one_hot] + [one_hot * 0] * (len(terms) - 1))[0]
    crop = max(0, min(int(crop), min(hw) // 4))
    bgr = _bgr(model)
    pictures = np.stack([deprocess(img if nhwc else img.transpose(1, 2, 0), crop, bgr) for img in x])
    return Patterns(pictures, final, chosen, str(layer), x.astype(np.float32), history)
