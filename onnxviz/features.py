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
are channel-first), keyed by friendly layer name in the order asked; 1-D and 3-D
convolutions give ``(N, C, L)`` and ``(N, C, D, H, W)``. A float16 model's maps are
float32 too (its own float16 values, widened).

Quantized models are float32 too, and fetched where onnxruntime keeps its quantized
fusions: a QDQ layer at the ``DequantizeLinear`` after its ``QuantizeLinear`` (int8
activation pairs are made uint8 first, values unchanged: :func:`onnxviz.graph.rewrite.uint8_activations`),
a ``QLinearConv`` at its own quantized output, dequantized here in numpy with its
``y_scale``/``y_zero_point``, a ``ConvInteger`` at the float tensor after its scale ``Mul``,
bias and activation. ``raw_conv=True`` per quantized op: see the table in :mod:`onnxviz.model`.

What can be fed:

* images (path, PIL image, ``H×W`` / ``H×W×C`` array, or a list of them) — to a rank-4
  input only, preprocessed as :mod:`onnxviz.preprocess` says;
* a ready input tensor: a numpy array whose ``ndim`` equals the input's rank (``(N, C, L)``
  for a 1-D conv net, a 4-D array for an image net, ``(N, C, D, H, W)`` for a 3-D one), in
  the input's own layout, fed as is after a cast to the input's dtype (no preset, no
  resize). Its static dims must match the input's (the batch may be any size). An image is
  never 4-D, so there is no ambiguity: a 4-D array is a tensor, never a batch of images;
* ``feeds={name: array}``: the model's other inputs, when the requested layers need them
  (cast to each input's dtype, static dims checked).

The memory budget (``max_bytes=``, ``--max-memory``, ``ONNXVIZ_MAX_BYTES``; 2 GiB by
default) is checked before anything runs: see :mod:`onnxviz.budget`.

Known limits: images go to rank-4 inputs only (a 1-D or 3-D conv net takes a tensor); a
layer that needs a model input that is not given is refused with a message naming it; the
budget's estimate does not look inside If/Loop bodies, and a request holding a tensor no
shape inference can size is refused as such (``--max-memory off`` runs it unchecked).
"""

from __future__ import annotations

import warnings
from types import MappingProxyType

import numpy as np
import onnx

from . import preprocess as prep
from . import runtime
from .budget import check_budget
from .errors import ImageError, ModelError, OnnxvizWarning, UnsupportedModelError, listing
from .graph.chain import QLINEAR_ACTIVATIONS, convinteger_scaling
from .graph.index import META, dims, node_attr
from .graph.rewrite import sub_model
from .graph.weights import constant_value, dequantize
from .render.notebook import Pictured

__all__ = ["feature_maps", "resolve_preset", "input_tensor", "run_tensors", "FeatureMaps"]

_NP_TYPES = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16,
             onnx.TensorProto.DOUBLE: np.float64}


class FeatureMaps(dict, Pictured):
    """What :func:`feature_maps` returns: a plain ``{layer name: float32 (N, C, H, W)}`` dict
    that a notebook shows as pictures, one mosaic per layer and image (see
    :mod:`onnxviz.render.notebook`). ``also``: the values of the extra tensors asked for."""

    also = MappingProxyType({})  # set per result by feature_maps(..., also=...)

    def _pictures(self) -> list:
        from .render.mosaic import feature_map_image

        def draw(name, maps, k):
            return lambda: feature_map_image(maps, name, image=k, spatial=maps.ndim - 2)

        pictures = []
        for name, maps in self.items():
            for k in range(len(maps)):
                title = f"{name} (image {k})" if len(maps) > 1 else name
                pictures.append((title, draw(title, maps, k)))
        return pictures


def resolve_preset(model, preprocess_name: str | None) -> str:
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


def _input_size(model, size) -> tuple[int, int]:
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


def _channels(inp) -> int:
    """Channels of the image input: its static channel dim, else 3."""
    c_dim = inp.shape[3] if inp.layout == "NHWC" else inp.shape[1]
    return c_dim if isinstance(c_dim, int) and c_dim > 0 else 3


def input_tensor(model, images, *, preprocess=None, size=None) -> np.ndarray:
    """The input tensor ``feature_maps`` would feed for ``images``: decoded, resized to the
    model's input size (or ``size``), preprocessed (``preprocess``, else the model's metadata)
    and laid out as the input wants, in its dtype.

    >>> input_tensor(m, ["cat.jpg", "dog.png"]).shape                  # doctest: +SKIP
    (2, 224, 224, 3)

    Known limits: rank-4 (image) inputs of a float type only, as :func:`feature_maps`.
    """
    inp = model.input
    dtype = _NP_TYPES.get(inp.elem_type) if inp is not None else None
    if inp is None or len(inp.shape) != 4 or dtype is None:
        raise ImageError(f"the model input {repr(inp.name) if inp else '(none)'} does not take images "
                         "(a rank-4 float input does)")
    return prep.to_tensor(images, size=_input_size(model, size), layout=inp.layout,
                          preset=resolve_preset(model, preprocess), channels=_channels(inp), dtype=dtype)


def _fit(value, name: str, shape: tuple, elem_type: int, what: str, batch_free: bool) -> np.ndarray:
    """``value`` as an array for the model input ``name`` (``shape``, ``elem_type``), checked."""
    try:
        arr = np.asarray(value)
    except Exception:
        arr = None
    if arr is None or arr.dtype == object or not (np.issubdtype(arr.dtype, np.number)
                                                  or arr.dtype == np.bool_):
        kind = type(value).__name__ if arr is None or arr.dtype == object else f"dtype {arr.dtype}"
        raise ImageError(f"{what} for model input '{name}' is {kind}; give a numeric numpy array")
    if np.iscomplexobj(arr):
        raise ImageError(f"{what} for model input '{name}' is complex; give a real numpy array")
    if shape and arr.ndim != len(shape):
        raise ImageError(f"{what} for model input '{name}' has shape {tuple(arr.shape)}; the input "
                         f"has shape {list(shape)} (rank {len(shape)})")
    for axis, (got, want) in enumerate(zip(arr.shape, shape)):
        if axis == 0 and batch_free:
            if got < 1:
                raise ImageError(f"{what} for model input '{name}' has an empty batch (shape "
                                 f"{tuple(arr.shape)})")
            continue
        if isinstance(want, int) and want > 0 and got != want:
            raise ImageError(f"{what} for model input '{name}' has shape {tuple(arr.shape)}, which does "
                             f"not fit the input's shape {list(shape)}: axis {axis} must be {want}")
    try:
        dtype = _NP_TYPES.get(elem_type) or onnx.helper.tensor_dtype_to_np_dtype(elem_type)
    except Exception:
        raise UnsupportedModelError(
            f"model input '{name}' has element type {elem_type}, which onnxviz cannot feed") from None
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ImageError(f"{what} for model input '{name}' has NaN or infinite values")
    return np.ascontiguousarray(arr, dtype=dtype)


def _ready_tensor(model, arr: np.ndarray) -> np.ndarray:
    inp = model.input
    try:
        return _fit(arr, inp.name, inp.shape, inp.elem_type, "the input array", batch_free=True)
    except ImageError as e:
        if len(inp.shape) != 4:
            raise
        raise ImageError(f"{e} (a 4-D array is fed as the input tensor itself; give a batch of "
                         "images as a list of H×W×C arrays)") from None


def _other_feeds(model, feeds) -> dict:
    """``feeds`` checked against the model's inputs and cast to their dtypes."""
    if feeds is None:
        return {}
    if not hasattr(feeds, "items"):
        raise ImageError(f"feeds must be a dict {{input name: array}}, not a {type(feeds).__name__}")
    inputs = {i.name: i for i in model._index.inputs}
    out = {}
    for name, value in feeds.items():
        if name not in inputs:
            raise ImageError(f"feeds: the model has no input '{name}'; its inputs are: "
                             f"{listing(inputs)}")
        if model.input is not None and name == model.input.name:
            raise ImageError(f"feeds: '{name}' is the image input; pass it as the images argument "
                             "(an image, or an array of the input's shape), not in feeds")
        vi = inputs[name]
        out[name] = _fit(value, name, dims(vi), vi.type.tensor_type.elem_type, "the feed",
                         batch_free=False)
    return out


def _fetched(model, layer, raw_conv: bool) -> str:
    """The tensor to fetch for ``layer`` (quantized convs: see :mod:`onnxviz.model`)."""
    if not raw_conv:
        return layer.tensor
    if layer.op == "ConvInteger":  # the accumulator times x_scale · w_scale, before the bias
        scaling = convinteger_scaling(model._index, layer.conv_output)
        if scaling is not None:
            return scaling[1].output[0]
    return layer.conv_output


def _as_float(model, tensor: str, value, layer_name: str) -> np.ndarray:
    """``value`` of ``tensor`` as float32; a quantized tensor is dequantized with the scale and
    zero point of the node that made it (``QLinearConv``: its ``y_scale``, ``y_zero_point``)."""
    value = np.asarray(value)
    if value.dtype.kind not in "iub":
        return np.asarray(value, dtype=np.float32)
    node = model._index.producers.get(tensor)
    op = node.op_type if node is not None else ""
    at = {"QLinearConv": (6, 7), "QuantizeLinear": (1, 2)}.get(op)
    if node is not None and node.domain == "com.microsoft" and op in QLINEAR_ACTIVATIONS:
        at = (3, 4)
    if at is not None and len(node.input) > at[0]:
        scale = constant_value(model._index, node.input[at[0]])
        zp_name = node.input[at[1]] if len(node.input) > at[1] else ""
        zero_point = constant_value(model._index, zp_name) if zp_name else None
        if scale is not None and (zero_point is not None or not zp_name):
            axis = node_attr(node, "axis", 1) if op == "QuantizeLinear" else 1
            return dequantize(value, scale, zero_point, axis)
    warnings.warn(
        f"layer '{layer_name}': tensor '{tensor}' ({op or 'no producer'}) is {value.dtype} and no "
        "constant output scale was found for it; its values are returned as float32 integer levels",
        OnnxvizWarning, stacklevel=4)
    return value.astype(np.float32)


def _session(model, tensors: tuple, fast: bool = False):
    key = (tensors, "fast" if fast else "", tuple(sorted(model.session_options.items())))
    sess = model._sessions.get(key)
    if sess is None:
        sub = sub_model(model.proto, list(tensors))
        # no arena unless asked: memory as the guard counts it
        sess = runtime.session(sub, model.base_dir, **{"arena": False, **model.session_options,
                                                       "blocked": runtime.blocked(sub) if fast else None})
        if len(model._sessions) >= 8:  # a small cache: a session holds its weights in memory
            model._sessions.pop(next(iter(model._sessions)))
        model._sessions[key] = sess
    return sess



def run_tensors(model, x: np.ndarray, tensors: tuple, extra: dict | None = None, fast: bool = False) -> list:
    """The values of ``tensors`` for the ready input tensor ``x`` (and ``extra`` feeds), as
    onnxruntime gives them, from a cached pruned session; a fixed batch size is filled in chunks.
    ``fast``: the NCHWc layout whenever the convs' weights allow it (:func:`onnxviz.runtime.blocked`).

    >>> run_tensors(m, x, ("block1_conv1/Relu:0",))[0].shape         # doctest: +SKIP
    (2, 64, 224, 224)
    """
    inp, extra = model.input, extra or {}
    tensors = tuple(tensors)
    sess = _session(model, tensors, fast)
    needed = [i.name for i in sess.get_inputs()]
    missing = [n for n in needed if n != inp.name and n not in extra]
    if missing:
        raise UnsupportedModelError(
            f"these layers also need the model input(s) {', '.join(repr(n) for n in missing)} besides "
            f"'{inp.name}'; give them with feeds={{name: array}} (on the command line, --feed NAME=FILE.npy)")
    others = {n: extra[n] for n in needed if n != inp.name}
    feed_image = inp.name in needed
    batch_dim = inp.shape[0] if inp.shape else None
    step = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else len(x)
    chunks = []
    for start in range(0, len(x), step):
        part = x[start:start + step]
        pad = step - len(part)
        if pad:  # a fixed batch size: fill the last chunk, drop the filler after
            part = np.concatenate([part, np.zeros((pad,) + part.shape[1:], part.dtype)])
        out = runtime.run(sess, {**others, **({inp.name: part} if feed_image else {})}, list(tensors))
        chunks.append([o[:len(o) - pad] if pad else o for o in out])
    values = [np.concatenate([c[i] for c in chunks]) if len(chunks) > 1 else chunks[0][i]
              for i in range(len(tensors))]
    return values


def feature_maps(model, images, layers=None, *, preprocess=None, size=None,
                 raw_conv: bool = False, feeds=None, max_bytes=None, also=()) -> dict:
    """``{layer name: float32 (N, C, H, W)}`` for ``images`` at ``layers`` (``None``: all).

    ``images``: a path, PIL image, ``H×W×C`` array, or a list of them (a batch); or a
    ready input tensor, a numpy array whose ``ndim`` is the input's rank (fed as is after a
    dtype cast; the only way to feed a 1-D or 3-D conv net).
    ``preprocess``: a preset name (see :mod:`onnxviz.preprocess`), or ``None`` for the
    model's metadata (else a warning and ``raw``). ``size``: ``(H, W)`` for models whose
    spatial dims are dynamic. ``raw_conv``: the conv output before bias/BN/activation;
    for quantized convs (QDQ ``Conv``, ``QLinearConv``, ``ConvInteger``) see the table in
    :mod:`onnxviz.model` — in a QDQ model it costs onnxruntime's quantized fusion.
    ``feeds``: ``{input name: array}`` for the model's other inputs, if the layers need them.
    ``max_bytes``: the memory budget (bytes, or ``"4G"``; default :data:`MAX_BYTES`, or the
    ``ONNXVIZ_MAX_BYTES`` environment variable): a call whose input, maps and intermediate
    tensors would need more (shape inference at the actual input shape; see :func:`onnxviz.budget.estimate`)
    raises :class:`~onnxviz.errors.ResourceError` before anything is computed.
    ``also``: other tensor names to fetch in the same run (the class scores, for a report);
    their float32 values are the result's ``also`` dict, not keys of the result.
    """
    chosen = model.select(layers)
    inp = model.input
    if inp is None:
        raise ModelError(f"'{model.path}' has no graph input to feed an image to")
    dtype = _NP_TYPES.get(inp.elem_type)
    if dtype is None:
        known = inp.elem_type in onnx.TensorProto.DataType.values()
        raise UnsupportedModelError(
            f"the model input '{inp.name}' has element type "
            f"{onnx.TensorProto.DataType.Name(inp.elem_type) if known else inp.elem_type}; onnxviz feeds float inputs")
    tensors = [_fetched(model, layer, raw_conv) for layer in chosen]
    unique = tuple(dict.fromkeys([*tensors, *also]))
    rank = len(inp.shape)
    if isinstance(images, np.ndarray) and (images.ndim == rank or (not rank and images.ndim >= 4)):
        if preprocess is not None or size is not None:
            raise ImageError(f"an input array of shape {tuple(images.shape)} is fed to '{inp.name}' "
                             "as is; preprocess= and size= apply to images only (drop them)")
        x = _ready_tensor(model, images)
        extra = _other_feeds(model, feeds)
        check_budget(model, unique, x.shape, max_bytes, extra)
    elif rank != 4:
        raise ImageError(
            f"the model input '{inp.name}' has shape {list(inp.shape)} (rank {rank}) and cannot "
            "take an image; pass a numpy array of that shape instead (a .npy file on the command line)")
    else:
        preset = resolve_preset(model, preprocess)
        hw = _input_size(model, size)
        channels = _channels(inp)
        n = len(images) if isinstance(images, (list, tuple)) else 1
        extra = _other_feeds(model, feeds)
        check_budget(model, unique, (n, *hw, channels) if inp.layout == "NHWC" else (n, channels, *hw),
                      max_bytes, extra, images=True)
        x = prep.to_tensor(images, size=hw, layout=inp.layout, preset=preset, channels=channels, dtype=dtype)
    values = run_tensors(model, x, unique, extra)
    owner = {t: layer.name for layer, t in reversed(list(zip(chosen, tensors)))}
    by_tensor = {t: _as_float(model, t, v, owner.get(t, t)) for t, v in zip(unique, values)}
    result = FeatureMaps((layer.name, by_tensor[t]) for layer, t in zip(chosen, tensors))
    result.also = {t: by_tensor[t] for t in also}
    return result


