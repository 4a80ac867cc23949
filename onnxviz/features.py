"""Feature maps: the activations of conv layers for an image, by onnxruntime.

The glue of :mod:`onnxviz.graph` (expose the layers' tensors, prune to what they need),
:mod:`onnxviz.runtime` (a cached session per set of requested tensors) and
:mod:`onnxviz.preprocess` (image → input tensor, preset from the model's metadata).

>>> import onnxviz
>>> m = onnxviz.load("models/demo.onnx")                               # doctest: +SKIP
>>> fm = m.feature_maps("photo.jpg", layers=["block1_conv1", "block3_*"])  # doctest: +SKIP
>>> fm["block1_conv1"].shape                                           # doctest: +SKIP
(1, 16, 64, 64)

Results are float32 ``(N, C, H, W)`` whatever the model's input layout (ONNX convolutions
are channel-first), keyed by friendly layer name in the order asked.

Known limits: the model's image input must be rank 4; a model that needs inputs besides the
image for the requested layers is refused; 1-D and 3-D convolutions give ``(N, C, L)`` and
``(N, C, D, H, W)`` arrays (drawing them is not supported).
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx

from . import graph, runtime
from . import preprocess as prep
from .errors import ImageError, ModelError, OnnxvizWarning, UnsupportedModelError
from .model import META, Model

__all__ = ["feature_maps", "resolve_preset"]

_NP_TYPES = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16,
             onnx.TensorProto.DOUBLE: np.float64}


def resolve_preset(model: Model, preprocess_name: str | None) -> str:
    """The preset to use: the one asked for, else the model's metadata, else ``raw`` (warned)."""
    if preprocess_name is not None:
        if preprocess_name not in prep.PRESETS:
            raise ImageError(f"unknown preprocessing preset '{preprocess_name}'; presets are: "
                             f"{', '.join(prep.PRESETS)}")
        return preprocess_name
    meta = model.metadata.get(META["preprocess"])
    if meta:
        if meta not in prep.PRESETS:
            raise ModelError(f"model metadata {META['preprocess']}='{meta}' is not a preset; presets "
                             f"are: {', '.join(prep.PRESETS)} (override it with preprocess=)")
        return meta
    warnings.warn(
        f"model has no '{META['preprocess']}' metadata; feeding raw 0-255 pixels (choose a preset: "
        f"{', '.join(prep.PRESETS)})", OnnxvizWarning, stacklevel=3)
    return "raw"


def _input_size(model: Model, size) -> tuple[int, int]:
    inp = model.input
    if size is None:
        return tuple(inp.size)
    try:
        h, w = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    except (TypeError, ValueError, IndexError):
        raise ImageError(f"size must be (height, width) in pixels, not {size!r}") from None
    if h < prep.MIN_SIDE or w < prep.MIN_SIDE:
        raise ImageError(f"size {h}×{w} is too small; at least {prep.MIN_SIDE}×{prep.MIN_SIDE}")
    if inp.size_from == "model" and (h, w) != tuple(inp.size):
        raise ImageError(f"model '{model.path}' has a fixed input size {inp.size[0]}×{inp.size[1]}; "
                         f"size {h}×{w} cannot be used")
    return h, w


def _session(model: Model, tensors: tuple):
    key = tensors
    sess = model._sessions.get(key)
    if sess is None:
        sub = graph.sub_model(model.proto, list(tensors))
        others = [i.name for i in sub.graph.input if i.name != model.input.name]
        if others:
            raise UnsupportedModelError(
                f"these layers also need the model input(s) {', '.join(others)}; onnxviz feeds "
                f"only the image input '{model.input.name}'")
        sess = runtime.session(sub, model.base_dir)
        if len(model._sessions) >= 8:  # a small cache: a session holds its weights in memory
            model._sessions.pop(next(iter(model._sessions)))
        model._sessions[key] = sess
    return sess


def feature_maps(model: Model, images, layers=None, *, preprocess=None, size=None,
                 raw_conv: bool = False) -> dict:
    """``{layer name: float32 (N, C, H, W)}`` for ``images`` at ``layers`` (``None``: all).

    ``images``: a path, PIL image, ``H×W×C`` array, or a list of them (a batch).
    ``preprocess``: a preset name (see :mod:`onnxviz.preprocess`), or ``None`` for the
    model's metadata (else a warning and ``raw``). ``size``: ``(H, W)`` for models whose
    spatial dims are dynamic. ``raw_conv``: the conv output before bias/BN/activation.
    """
    chosen = model.select(layers)
    inp = model.input
    if inp is None:
        raise ModelError(f"'{model.path}' has no graph input to feed an image to")
    if len(inp.shape) != 4:
        raise UnsupportedModelError(
            f"the model input '{inp.name}' has shape {list(inp.shape)}; onnxviz feeds images to "
            "rank-4 inputs (N, C, H, W) or (N, H, W, C)")
    preset = resolve_preset(model, preprocess)
    hw = _input_size(model, size)
    c_dim = inp.shape[3] if inp.layout == "NHWC" else inp.shape[1]
    channels = c_dim if isinstance(c_dim, int) and c_dim > 0 else 3
    dtype = _NP_TYPES.get(inp.elem_type)
    if dtype is None:
        raise UnsupportedModelError(
            f"the model input '{inp.name}' has element type "
            f"{onnx.helper.tensor_dtype_to_string(inp.elem_type)}; onnxviz feeds float inputs")
    x = prep.to_tensor(images, size=hw, layout=inp.layout, preset=preset, channels=channels, dtype=dtype)
    tensors = [layer.conv_output if raw_conv else layer.tensor for layer in chosen]
    unique = tuple(dict.fromkeys(tensors))
    sess = _session(model, unique)
    batch_dim = inp.shape[0] if inp.shape else None
    step = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else len(x)
    chunks = []
    for start in range(0, len(x), step):
        part = x[start:start + step]
        pad = step - len(part)
        if pad:  # a fixed batch size: fill the last chunk, drop the filler after
            part = np.concatenate([part, np.zeros((pad,) + part.shape[1:], part.dtype)])
        out = runtime.run(sess, {inp.name: part}, list(unique))
        chunks.append([o[:len(o) - pad] if pad else o for o in out])
    values = [np.concatenate([c[i] for c in chunks]) if len(chunks) > 1 else chunks[0][i]
              for i in range(len(unique))]
    by_tensor = {t: np.asarray(v, dtype=np.float32) for t, v in zip(unique, values)}
    return {layer.name: by_tensor[t] for layer, t in zip(chosen, tensors)}

