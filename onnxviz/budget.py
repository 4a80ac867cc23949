"""The memory guard: what a feature-map call will need, known before anything runs.

>>> from onnxviz.budget import check_budget, estimate
>>> estimate(model, ["block5_conv3/Relu:0"], (1, 224, 224, 3), images=True)["total"]   # doctest: +SKIP
43450368
>>> check_budget(model, tensors, (8, 2000, 2000, 3), "2G")    # doctest: +SKIP
Traceback (most recent call last):
ResourceError: these feature maps would need 9.3 GiB at input 8×2000×2000×3 (…); the budget is 2.0 GiB: …

The memory budget (``max_bytes=``, ``--max-memory``, ``ONNXVIZ_MAX_BYTES``; 2 GiB by
default, ``off`` for none) is checked before anything runs, on shapes inferred at the actual
input shape (a ready tensor's own, an image's ``size``) by the one shape inference
(:meth:`onnxviz.model.Model.shapes`): the input, the maps, and the largest set of buffers
the pruned sub-graph holds at once, simulated node by node as onnxruntime's CPU provider
holds them (:mod:`onnxviz.memplan`: NCHWc copies, ConvTranspose's column buffer, float16
computed in float32). Feature-map sessions run without onnxruntime's arena (see
:func:`onnxviz.runtime.session`), so that the process holds what the run holds. Measured
(BENCHMARKS.md, "Memory guard", ``scripts/bench_budget.py``): peak RSS minus the process
before the run (Python, onnxruntime, the model, its session and weights) is 0.94-1.26 × the
estimate on VGG-like nets from 224² to 2000², a 1-D net, an fp16 MobileNetV3, a FusedConv
ResNet18 and an opset-7 style-transfer net at 720², for requests above ~30 MiB (below, the
session's own allocations move the figure by a few MiB).

Nothing is guessed: a request that holds a tensor no stage of shape inference can size is
refused as such ("cannot be sized: tensor … of op … has no inferable shape"), with what to do.

Known limits: the estimate does not look inside If/Loop bodies; kernel scratch buffers other
than ConvTranspose's are not counted; see :mod:`onnxviz.memplan`.
"""

from __future__ import annotations

import math
import os
import re

import numpy as np
import onnx

from .errors import ModelError, OnnxvizError, ResourceError, format_bytes, format_shape
from .memplan import itemsize, plan, run_peak, unmade

__all__ = ["MAX_BYTES", "parse_size", "memory_budget", "estimate", "check_budget", "PREPROCESS_COPIES"]

#: The memory budget of one :func:`feature_maps` call, unless ``max_bytes=`` or the
#: ``ONNXVIZ_MAX_BYTES`` environment variable (``512M``, ``4G``, bytes) says otherwise.
MAX_BYTES = 2 * 2**30
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_size(text) -> int | None:
    """Bytes from ``512M``, ``4G``, ``1.5GiB``, ``64k`` or ``1000000`` (K, M, G, T: powers of
    1024); ``None`` from ``off`` (no budget: nothing is checked)."""
    if str(text).strip().lower() == "off":
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(?:i?b)?\s*", str(text), re.IGNORECASE)
    value = int(float(m.group(1)) * _UNITS[m.group(2).lower()]) if m else 0
    if value < 1:
        raise ValueError(f"'{text}' is not a size such as 512M, 4G or 1000000 (bytes), nor 'off'")
    return value



def memory_budget(max_bytes=None) -> int | None:
    """The budget in bytes: ``max_bytes`` (a number, ``"4G"``, or ``"off"``: ``None``), else
    ``ONNXVIZ_MAX_BYTES``, else :data:`MAX_BYTES`."""
    if max_bytes is None:
        env = os.environ.get("ONNXVIZ_MAX_BYTES", "").strip()
        if not env:
            return MAX_BYTES
        try:
            return parse_size(env)
        except ValueError:
            raise OnnxvizError(f"the environment variable ONNXVIZ_MAX_BYTES='{env}' is not a size such "
                               "as 512M, 4G or 1000000 (bytes), nor 'off'") from None
    if isinstance(max_bytes, str) and max_bytes.strip().lower() == "off":
        return None
    try:
        value = parse_size(max_bytes) if isinstance(max_bytes, str) else int(max_bytes)
    except (TypeError, ValueError):
        value = 0
    if value < 1 or (not isinstance(max_bytes, str) and value != max_bytes):
        raise OnnxvizError(f"max_bytes must be a whole number of bytes, a size such as '4G', or 'off', "
                           f"not {max_bytes!r}")
    return value



#: Full-size copies of an image batch that preprocessing holds at once (the stacked float32
#: pixels, the preset's result, the laid-out tensor): see :func:`onnxviz.preprocess.to_tensor`.
PREPROCESS_COPIES = 3


def estimate(model, tensors, shape: tuple, other_feeds: dict | None = None,
              images: bool = False) -> dict:
    """The memory one feature-map call needs, in bytes, before anything is computed.

    ``shape``: the whole input (batch first); ``other_feeds``: ``{name: array}``;
    ``images``: the input is made by preprocessing. Returns ``total`` and its parts:
    ``input`` (the input and the other feeds), ``maps`` (the requested maps, as returned),
    ``work`` (``total - input - maps``: the other tensors alive at once at the peak) and
    ``unsized`` (``[(tensor, node)]`` no shape inference can size; then ``total``, ``maps``
    and ``work`` are ``None``: there is no figure to give, and ``reason`` is onnxruntime's
    error when it cannot load the model at all, else ``''``). The total is the largest of

    * the run: :func:`onnxviz.memplan.run_peak` for one batch (shapes inferred at batch 1, or the model's
      fixed batch, and scaled to the batch of a run), plus the maps of earlier runs when a
      fixed batch size splits the images in several runs;
    * after it: the input and all maps (twice when several runs' maps are concatenated,
      plus their float32 copies when the model's maps are not float32);
    * preprocessing: :data:`PREPROCESS_COPIES` float32 copies of the input tensor.

    Not counted: the weights (onnxruntime maps external weights from their file) and the
    process itself (~80 MiB of Python, numpy, onnx and onnxruntime). Measured: see the
    module docstring.
    """
    inp = model.input
    elem = inp.elem_type
    n = int(shape[0]) if shape else 1
    fixed = inp.shape[0] if inp.shape and isinstance(inp.shape[0], int) and inp.shape[0] > 0 else 0
    step = fixed or n
    runs = -(-n // step)
    one = fixed or 1  # shapes are inferred at this batch and scaled to `step`
    feeds = {name: tuple(np.shape(v)) for name, v in (other_feeds or {}).items()}
    shapes = model.shapes({inp.name: (one,) + tuple(shape[1:]), **feeds})
    tensors = list(dict.fromkeys(tensors))
    nodes, const = plan(model._index, tensors)
    skip = const | unmade(nodes, tensors)
    unsized = shapes.size([o for node in nodes for o in node.output if o and o not in skip] + tensors)
    per_image = math.prod(shape[1:]) * itemsize(elem)
    feed_bytes = sum(np.asarray(v).nbytes for v in (other_feeds or {}).values())
    x_all = n * per_image
    pad = step * per_image if n % step else 0  # the last run's input, filled up to the fixed batch
    inputs = x_all + pad + feed_bytes
    if unsized:
        producers = model._index.producers
        return {"total": None, "input": inputs, "maps": None, "work": None,
                "unsized": [(t, producers.get(t)) for t in unsized], "reason": shapes.failure}
    peak, maps = run_peak(model._index, nodes, const, tensors, shapes, one * per_image + feed_bytes)
    scale = step / one
    run = int((peak - one * per_image - feed_bytes) * scale)
    maps_run = int(maps * scale)
    f32 = sum(math.prod(shapes.dims(t)) * 4 for t in tensors if shapes.types[t][1] != onnx.TensorProto.FLOAT)
    base = x_all + pad + feed_bytes
    total = max(base + run + (runs - 1) * maps_run,
                x_all + feed_bytes + (2 if runs > 1 else 1) * runs * maps_run + int(f32 * scale) * runs,
                PREPROCESS_COPIES * n * math.prod(shape[1:]) * 4 if images else 0)  # float32 pixels
    all_maps = runs * maps_run
    return {"total": total, "input": inputs, "maps": all_maps, "work": max(0, total - inputs - all_maps),
            "unsized": []}


def check_budget(model, tensors, shape: tuple, max_bytes, feeds=None,
                  images: bool = False) -> None:
    """Refuse, before anything is computed, a call that would need more memory than the
    budget: the figure is :func:`estimate`'s (the input, the maps, and the intermediate
    tensors the sub-graph holds at once while it runs) for fetching ``tensors``. A request
    with a tensor no shape inference can size is refused as such (no figure is made up),
    unless the budget is ``off``."""
    limit = memory_budget(max_bytes)
    if limit is None:
        return
    est = estimate(model, tensors, tuple(shape), feeds, images)
    if est["unsized"] and est["reason"]:  # onnxruntime cannot load it: that, not the budget
        raise ModelError(est["reason"])
    if est["unsized"]:
        name, node = est["unsized"][0]
        node = node or onnx.NodeProto(op_type="(none: a graph input)", name="")
        op = f"{node.domain}:{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
        k = len(est["unsized"]) - 1
        others = f" (and {k} more tensor{'s' if k != 1 else ''} after it)" if k else ""
        raise ResourceError(
            f"these feature maps cannot be sized at input {format_shape(shape)}: tensor '{name}' of op {op} "
            f"(node '{node.name}') has no inferable shape{others}, neither by onnx nor by onnxruntime, so "
            f"they cannot be checked against the budget of {format_bytes(limit)}: ask for layers before it, "
            "or run them unchecked with --max-memory off, max_bytes='off' or ONNXVIZ_MAX_BYTES=off")
    if est["total"] <= limit:
        return
    n = len(tensors)
    advice = "fewer layers or images or a smaller size" if images else "fewer layers or a smaller input array"
    raise ResourceError(
        f"these feature maps would need {format_bytes(est['total'])} at input {format_shape(shape)} "
        f"(input {format_bytes(est['input'])}, maps of {n} layer{'s' if n != 1 else ''} "
        f"{format_bytes(est['maps'])}, intermediate tensors held at the same time "
        f"{format_bytes(est['work'])}); the budget is {format_bytes(limit)}: ask for {advice}, "
        "or raise it with --max-memory, max_bytes= or ONNXVIZ_MAX_BYTES")
