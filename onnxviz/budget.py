"""The memory guard: what a feature-map call will need, known before anything runs.

>>> from onnxviz.budget import check_budget, estimate
>>> estimate(model, ["block5_conv3/Relu:0"], (1, 224, 224, 3), images=True)["total"]   # doctest: +SKIP
43450368
>>> check_budget(model, tensors, (8, 2000, 2000, 3), "2G")    # doctest: +SKIP
Traceback (most recent call last):
ResourceError: these feature maps would need 9.3 GiB at input 8×2000×2000×3 (…); the budget is 2.0 GiB: …

The memory budget (``max_bytes=``, ``--max-memory``, ``ONNXVIZ_MAX_BYTES``; 2 GiB by
default) is checked before anything runs, on shapes inferred at the actual input shape (a
ready tensor's own, an image's ``size``): the input, the maps, and the largest set of
intermediate tensors the pruned sub-graph holds at once, simulated node by node
(:func:`estimate`, :func:`_run_peak`). Measured (BENCHMARKS.md, "Memory budget"): peak RSS is
the process (~80 MiB) plus the weights plus 1.03–1.06 × the estimate for 2-D nets, up to
1.4 × when onnxruntime's CPU arena keeps a freed tensor's pages while it places the next
elsewhere (not in every run); 0.7 × for a 1-D net's all-layer request (no NCHWc copies there).

Known limits: the estimate does not look inside If/Loop bodies, and a tensor shape
inference cannot size is counted as large as its node's inputs, a guess the refusal message
owns up to.
"""

from __future__ import annotations

import math
import os
import re
import weakref

import numpy as np
import onnx

from .errors import OnnxvizError, ResourceError, format_bytes, format_shape
from .graph.index import CONV_OPS, body_inputs, node_attr, weight_input
from .graph.shapes import tensor_types

__all__ = ["MAX_BYTES", "parse_size", "memory_budget", "estimate", "check_budget", "PREPROCESS_COPIES"]

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



_SHAPES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # Model → {fixed shapes: types}

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



def _run_peak(model, tensors, types: dict, base: int) -> tuple[int, int, int]:
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
        stack.extend(i for i in list(node.input) + sorted(body_inputs(node)) if i)
    nodes = [wanted[k] for k in sorted(wanted)]
    const = set(index.initializers)
    last = {}
    for pos, node in enumerate(nodes):
        ins = [i for i in node.input if i]
        if node.op_type == "Constant" or (ins and all(i in const for i in ins)
                                          and not any(a.g.node or a.graphs for a in node.attribute)):
            const.update(o for o in node.output if o)  # folded by onnxruntime at load: a weight
        for i in ins + sorted(body_inputs(node)):
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


def estimate(model, tensors, shape: tuple, other_feeds: dict | None = None,
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
    cache = _SHAPES.setdefault(model, {})
    if pinned not in cache:
        if len(cache) >= 8:
            cache.pop(next(iter(cache)))
        cache[pinned] = tensor_types(model.proto, pinned)
    types = cache[pinned]
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


def check_budget(model, tensors, shape: tuple, max_bytes, feeds=None,
                  images: bool = False) -> None:
    """Refuse, before anything is computed, a call that would need more memory than the
    budget: the figure is :func:`estimate`'s (the input, the maps, and the intermediate
    tensors the sub-graph holds at once while it runs) for fetching ``tensors``."""
    limit = memory_budget(max_bytes)
    est = estimate(model, tensors, tuple(shape), feeds, images)
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


