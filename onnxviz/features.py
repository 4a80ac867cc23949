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
activation pairs are made uint8 first, values unchanged: :func:`onnxviz.graph.uint8_activations`),
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
default) is checked before anything runs, on shapes inferred at the actual input shape (a
ready tensor's own, an image's ``size``): the input, the maps, and the largest set of
intermediate tensors the pruned sub-graph holds at once, simulated node by node
(:func:`_estimate`, :func:`_run_peak`). Measured (BENCHMARKS.md, "Memory budget"): peak RSS is
the process (~80 MiB) plus the weights plus 1.03–1.06 × the estimate for 2-D nets, up to
1.4 × when onnxruntime's CPU arena keeps a freed tensor's pages while it places the next
elsewhere (not in every run); 0.7 × for a 1-D net's all-layer request (no NCHWc copies there).

Known limits: images go to rank-4 inputs only (a 1-D or 3-D conv net takes a tensor); a
layer that needs a model input that is not given is refused with a message naming it; the
budget's estimate does not look inside If/Loop bodies, and a tensor shape inference cannot
size is counted as large as its node's inputs, a guess the refusal message owns up to.
"""

from __future__ import annotations

import math
import os
import re
import warnings
import weakref

import numpy as np
import onnx

from . import graph, runtime
from . import preprocess as prep
from .errors import ImageError, ModelError, OnnxvizError, OnnxvizWarning, ResourceError, \
    UnsupportedModelError, listing
from .model import META, Model, _dims, format_shape
from .model import CONV_OPS, QLINEAR_ACTIVATIONS, convinteger_scaling, node_attr, weight_input
from .weights import constant_value, dequantize

__all__ = ["feature_maps", "resolve_preset", "MAX_BYTES", "memory_budget", "parse_size", "format_bytes"]

_NP_TYPES = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16,
             onnx.TensorProto.DOUBLE: np.float64}

#: The memory budget of one :func:`feature_maps` call, unless ``max_bytes=`` or the
#: ``ONNXVIZ_MAX_BYTES`` environment variable (``512M``, ``4G``, bytes) says otherwise.
MAX_BYTES = 2 * 2**30
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_size(text) -> int:
    """Bytes from ``512M``, ``4G``, ``1.5GiB``, ``64k`` or ``1000000`` (K, M, G, T: powers of 1024)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(?:i?b)?\s*", str(text), re.IGNORECASE)
    value = int(float(m.group(1)) * _UNITS[m.group(2).lower()]) if m else 0
    if value < 1:
        raise ValueError(f"'{text}' is not a size such as 512M, 4G or 1000000 (bytes)")
    return value


def format_bytes(n: int) -> str:
    """``2147483648`` → ``2.0 GiB``."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def memory_budget(max_bytes=None) -> int:
    """The budget in bytes: ``max_bytes`` (a number or ``"4G"``), else ``ONNXVIZ_MAX_BYTES``, else :data:`MAX_BYTES`."""
    if max_bytes is None:
        env = os.environ.get("ONNXVIZ_MAX_BYTES", "").strip()
        if not env:
            return MAX_BYTES
        try:
            return parse_size(env)
        except ValueError:
            raise OnnxvizError(f"the environment variable ONNXVIZ_MAX_BYTES='{env}' is not a size such "
                               "as 512M, 4G or 1000000 (bytes)") from None
    try:
        value = parse_size(max_bytes) if isinstance(max_bytes, str) else int(max_bytes)
    except (TypeError, ValueError):
        value = 0
    if value < 1 or (not isinstance(max_bytes, str) and value != max_bytes):
        raise OnnxvizError(f"max_bytes must be a whole number of bytes or a size such as '4G', not {max_bytes!r}")
    return value


_SHAPES: "weakref.WeakKeyDictionary[Model, dict]" = weakref.WeakKeyDictionary()

#: Elementwise ops whose output onnxruntime writes over their one non-constant input when
#: nothing later reads it (its kernels may run in place, and a conv's bias, BatchNorm and
#: activation are fused into the conv): no new buffer is counted for them then.
_IN_PLACE = frozenset({
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
    "Softplus", "Softsign", "Clip", "ThresholdedRelu", "Gelu", "Mish", "Abs", "Neg", "Exp", "Log", "Sqrt",
    "Reciprocal", "Erf", "Add", "Sub", "Mul", "Div", "BatchNormalization", "Identity", "Dropout"})
_CONV_OP_TYPES = frozenset(op for _, op in CONV_OPS)
#: Full-size copies of an image batch that preprocessing holds at once (the stacked float32
#: pixels, the preset's result, the laid-out tensor): see :func:`onnxviz.preprocess.to_tensor`.
PREPROCESS_COPIES = 3


def _itemsize(elem_type: int) -> int:
    try:
        return max(1, np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).itemsize)
    except Exception:  # undefined or exotic types: count them as float32
        return 4


def _tensor_types(model: Model, fixed: tuple) -> dict:
    """``{tensor: (dims, elem_type)}`` from onnx shape inference with the graph inputs of
    ``fixed`` (``(name, shape)`` pairs) set to those shapes; cached per model and shapes."""
    cache = _SHAPES.setdefault(model, {})
    if fixed in cache:
        return cache[fixed]
    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    want = dict(fixed)
    for vi in proto.graph.input:
        if vi.name in want:
            shape = vi.type.tensor_type.shape
            del shape.dim[:]
            for d in want[vi.name]:
                shape.dim.add().dim_value = int(d)
    del proto.graph.value_info[:]  # an exporter's shapes are for its own input size
    for vi in proto.graph.output:
        vi.type.tensor_type.ClearField("shape")
    values = list(proto.graph.input)
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
        values = list(inferred.graph.value_info) + list(inferred.graph.output) + values
    except Exception:  # inference is best effort: the rest is estimated (see _run_peak)
        pass
    out = {vi.name: (_dims(vi), vi.type.tensor_type.elem_type) for vi in values
           if vi.type.tensor_type.HasField("shape")}
    if len(cache) >= 8:
        cache.pop(next(iter(cache)))
    cache[fixed] = out
    return out


def _run_peak(model: Model, tensors, types: dict, base: int) -> tuple[int, int, int]:
    """(peak bytes, bytes of ``tensors``, tensors guessed): one run of the sub-graph that
    computes ``tensors``, simulated in graph order on the shapes of ``types``.

    Live at each node: ``base`` (the inputs, held by the caller), each tensor from the node
    that makes it to the last node that reads it, and each requested tensor a second time,
    from the node that makes it to the end: it is a graph output, and onnxruntime computes a
    2-D conv in its blocked NCHWc layout and copies the map out of it (measured: a map alone
    costs twice its size at its peak). An op of :data:`_IN_PLACE` whose data input dies with
    it writes into that input's buffer (onnxruntime fuses a conv's activation into it) when
    that is its one non-constant input (a residual Add gets a new buffer).
    Weights and constants are not counted. A tensor whose shape inference does not know is
    counted as large as the node's data inputs together (a conv's: times its channel ratio).
    """
    index = model._index
    wanted, seen, stack = {}, set(), list(tensors)
    while stack:  # the nodes the tensors need (what graph.prune keeps)
        node = index.producers.get(stack.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        wanted[index.positions[id(node)]] = node
        stack.extend(i for i in list(node.input) + sorted(graph.body_inputs(node)) if i)
    nodes = [wanted[k] for k in sorted(wanted)]
    const = set(index.initializers)
    last = {}
    for pos, node in enumerate(nodes):
        ins = [i for i in node.input if i]
        if node.op_type == "Constant" or (ins and all(i in const for i in ins)
                                          and not any(a.g.node or a.graphs for a in node.attribute)):
            const.update(o for o in node.output if o)  # folded by onnxruntime at load: a weight
        for i in ins + sorted(graph.body_inputs(node)):
            last[i] = pos
    requested = set(tensors)
    sizes, held = {}, {}
    kept = peak = guessed = 0

    def known(name: str) -> int | None:
        dims, elem = types.get(name, ((), 0))
        if name in types and all(isinstance(d, int) and d >= 0 for d in dims):
            return math.prod(dims) * _itemsize(elem)
        return None

    def size(name: str, node, data) -> int:
        nonlocal guessed
        if known(name) is not None:
            return known(name)
        guessed += 1
        if node.op_type in ("Shape", "Size"):
            return 64
        ratio = 1.0
        w = index.initializers.get(weight_input(node)) if node.op_type in _CONV_OP_TYPES else None
        if w is not None and len(w.dims) >= 3 and min(w.dims) > 0:
            group = node_attr(node, "group", 1) or 1
            if node.op_type == "ConvTranspose":
                ratio = w.dims[1] * group / w.dims[0] * math.prod(node_attr(node, "strides", None) or [1])
            else:
                ratio = w.dims[0] / (w.dims[1] * group)
        return int(sum(sizes.get(i, known(i) or 0) for i in data) * ratio)

    for pos, node in enumerate(nodes):
        if all(o in const for o in node.output if o):
            continue
        data = [i for i in node.input if i and i not in const]
        for k, out in enumerate(o for o in node.output if o):
            b = sizes[out] = size(out, node, data)
            src = data[0] if data else None
            reuse = (k == 0 and node.op_type in _IN_PLACE and len(data) == 1 and src in held
                     and last.get(src) == pos and held[src] >= b)
            if reuse:
                b = held.pop(src)
            if out in requested:
                kept += sizes[out]  # the output, besides the buffer the op wrote
            held[out] = b
        peak = max(peak, base + kept + sum(held.values()))
        for name in [i for i in held if last.get(i, -1) <= pos]:  # read by nothing later
            del held[name]
    maps = sum(sizes.get(t, 0) for t in requested)
    return max(peak, base + kept), maps, guessed


def _estimate(model: Model, tensors, shape: tuple, other_feeds: dict | None = None,
              images: bool = False) -> dict:
    """The memory one feature-map call needs, in bytes, before anything is computed.

    ``shape``: the whole input (batch first); ``other_feeds``: ``{name: array}``;
    ``images``: the input is made by preprocessing. Returns ``total`` and its parts:
    ``input`` (the input and the other feeds), ``maps`` (the requested maps, as returned),
    ``work`` (``total - input - maps``: the other tensors alive at once at the peak) and
    ``guessed`` (tensors of unknown shape, see :func:`_run_peak`). The total is the largest of

    * the run: :func:`_run_peak` for one batch (shapes inferred at batch 1, or the model's
      fixed batch, and scaled to the batch of a run), plus the maps of earlier runs when a
      fixed batch size splits the images in several runs;
    * after it: the input and all maps (twice when several runs' maps are concatenated,
      plus their float32 copies when the model's maps are not float32);
    * preprocessing: :data:`PREPROCESS_COPIES` float32 copies of the input tensor.

    Not counted: the weights (onnxruntime maps external weights from their file) and the
    process itself (~80 MiB of Python, numpy, onnx and onnxruntime). Measured (BENCHMARKS.md,
    "Memory budget"; ``scripts/bench_budget.py``): peak RSS − process = 1.03–1.06 × ``total``
    for a VGG-like net at 224², 1000² and 2000², batches of 1 and 8; 1.37 in most runs of one
    case where onnxruntime's arena keeps a freed tensor's pages; 0.71 for a 1-D all-layer request.
    """
    inp = model.input
    elem = inp.elem_type
    n = int(shape[0]) if shape else 1
    fixed = inp.shape[0] if inp.shape and isinstance(inp.shape[0], int) and inp.shape[0] > 0 else 0
    step = fixed or n
    runs = -(-n // step)
    one = fixed or 1  # shapes are inferred at this batch and scaled to `step`
    feeds = {name: np.shape(v) for name, v in (other_feeds or {}).items()}
    pinned = ((inp.name, (one,) + tuple(shape[1:])),) + tuple(sorted(feeds.items()))
    types = _tensor_types(model, pinned)
    per_image = math.prod(shape[1:]) * _itemsize(elem)
    feed_bytes = sum(np.asarray(v).nbytes for v in (other_feeds or {}).values())
    x_all = n * per_image
    pad = step * per_image if n % step else 0  # the last run's input, filled up to the fixed batch
    peak, maps, guessed = _run_peak(model, list(dict.fromkeys(tensors)), types, one * per_image + feed_bytes)
    scale = step / one
    run_peak = int((peak - one * per_image - feed_bytes) * scale)
    maps_run = int(maps * scale)
    f32 = sum(math.prod(types[t][0]) * 4 for t in dict.fromkeys(tensors)
              if t in types and types[t][1] != onnx.TensorProto.FLOAT
              and all(isinstance(d, int) and d >= 0 for d in types[t][0]))
    base = x_all + pad + feed_bytes
    total = max(base + run_peak + (runs - 1) * maps_run,
                x_all + feed_bytes + (2 if runs > 1 else 1) * runs * maps_run + int(f32 * scale) * runs,
                PREPROCESS_COPIES * n * math.prod(shape[1:]) * 4 if images else 0)  # float32 pixels
    inputs = x_all + pad + feed_bytes
    all_maps = runs * maps_run
    return {"total": total, "input": inputs, "maps": all_maps, "work": max(0, total - inputs - all_maps),
            "guessed": guessed}


def _check_budget(model: Model, tensors, shape: tuple, max_bytes, feeds=None,
                  images: bool = False) -> None:
    """Refuse, before anything is computed, a call that would need more memory than the
    budget: the figure is :func:`_estimate`'s (the input, the maps, and the intermediate
    tensors the sub-graph holds at once while it runs) for fetching ``tensors``."""
    limit = memory_budget(max_bytes)
    est = _estimate(model, tensors, tuple(shape), feeds, images)
    if est["total"] <= limit:
        return
    k = est["guessed"]
    guessed = (f"; {k} tensor{'s' if k != 1 else ''} of unknown shape counted as large as "
               f"{'their' if k != 1 else 'its'} inputs" if k else "")
    n = len(tensors)
    advice = "fewer layers or images or a smaller size" if images else "fewer layers or a smaller input array"
    raise ResourceError(
        f"these feature maps would need {format_bytes(est['total'])} at input {format_shape(shape)} "
        f"(input {format_bytes(est['input'])}, maps of {n} layer{'s' if n != 1 else ''} "
        f"{format_bytes(est['maps'])}, intermediate tensors held at the same time "
        f"{format_bytes(est['work'])}{guessed}); the budget is {format_bytes(limit)}: ask for {advice}, "
        "or raise it with --max-memory, max_bytes= or ONNXVIZ_MAX_BYTES")


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


def _ready_tensor(model: Model, arr: np.ndarray) -> np.ndarray:
    inp = model.input
    try:
        return _fit(arr, inp.name, inp.shape, inp.elem_type, "the input array", batch_free=True)
    except ImageError as e:
        if len(inp.shape) != 4:
            raise
        raise ImageError(f"{e} (a 4-D array is fed as the input tensor itself; give a batch of "
                         "images as a list of H×W×C arrays)") from None


def _other_feeds(model: Model, feeds) -> dict:
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
        out[name] = _fit(value, name, _dims(vi), vi.type.tensor_type.elem_type, "the feed",
                         batch_free=False)
    return out


def _fetched(model: Model, layer, raw_conv: bool) -> str:
    """The tensor to fetch for ``layer`` (quantized convs: see :mod:`onnxviz.model`)."""
    if not raw_conv:
        return layer.tensor
    if layer.op == "ConvInteger":  # the accumulator times x_scale · w_scale, before the bias
        scaling = convinteger_scaling(model._index, layer.conv_output)
        if scaling is not None:
            return scaling[1].output[0]
    return layer.conv_output


def _as_float(model: Model, tensor: str, value, layer_name: str) -> np.ndarray:
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
        scale = constant_value(model, node.input[at[0]])
        zp_name = node.input[at[1]] if len(node.input) > at[1] else ""
        zero_point = constant_value(model, zp_name) if zp_name else None
        if scale is not None and (zero_point is not None or not zp_name):
            axis = node_attr(node, "axis", 1) if op == "QuantizeLinear" else 1
            return dequantize(value, scale, zero_point, axis)
    warnings.warn(
        f"layer '{layer_name}': tensor '{tensor}' ({op or 'no producer'}) is {value.dtype} and no "
        "constant output scale was found for it; its values are returned as float32 integer levels",
        OnnxvizWarning, stacklevel=4)
    return value.astype(np.float32)


def _session(model: Model, tensors: tuple):
    key = tensors
    sess = model._sessions.get(key)
    if sess is None:
        sub = graph.sub_model(model.proto, list(tensors))
        sess = runtime.session(sub, model.base_dir)
        if len(model._sessions) >= 8:  # a small cache: a session holds its weights in memory
            model._sessions.pop(next(iter(model._sessions)))
        model._sessions[key] = sess
    return sess


def feature_maps(model: Model, images, layers=None, *, preprocess=None, size=None,
                 raw_conv: bool = False, feeds=None, max_bytes=None) -> dict:
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
    tensors would need more (shape inference at the actual input shape; see :func:`_estimate`)
    raises :class:`~onnxviz.errors.ResourceError` before anything is computed.
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
    unique = tuple(dict.fromkeys(tensors))
    rank = len(inp.shape)
    if isinstance(images, np.ndarray) and (images.ndim == rank or (not rank and images.ndim >= 4)):
        if preprocess is not None or size is not None:
            raise ImageError(f"an input array of shape {tuple(images.shape)} is fed to '{inp.name}' "
                             "as is; preprocess= and size= apply to images only (drop them)")
        x = _ready_tensor(model, images)
        extra = _other_feeds(model, feeds)
        _check_budget(model, unique, x.shape, max_bytes, extra)
    elif rank != 4:
        raise ImageError(
            f"the model input '{inp.name}' has shape {list(inp.shape)} (rank {rank}) and cannot "
            "take an image; pass a numpy array of that shape instead (a .npy file on the command line)")
    else:
        preset = resolve_preset(model, preprocess)
        hw = _input_size(model, size)
        c_dim = inp.shape[3] if inp.layout == "NHWC" else inp.shape[1]
        channels = c_dim if isinstance(c_dim, int) and c_dim > 0 else 3
        n = len(images) if isinstance(images, (list, tuple)) else 1
        extra = _other_feeds(model, feeds)
        _check_budget(model, unique, (n, *hw, channels) if inp.layout == "NHWC" else (n, channels, *hw),
                      max_bytes, extra, images=True)
        x = prep.to_tensor(images, size=hw, layout=inp.layout, preset=preset, channels=channels, dtype=dtype)
    sess = _session(model, unique)
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
        out = runtime.run(sess, {**others, **({inp.name: part} if feed_image else {})}, list(unique))
        chunks.append([o[:len(o) - pad] if pad else o for o in out])
    values = [np.concatenate([c[i] for c in chunks]) if len(chunks) > 1 else chunks[0][i]
              for i in range(len(unique))]
    owner = {t: layer.name for layer, t in reversed(list(zip(chosen, tensors)))}
    by_tensor = {t: _as_float(model, t, v, owner[t]) for t, v in zip(unique, values)}
    return {layer.name: by_tensor[t] for layer, t in zip(chosen, tensors)}

