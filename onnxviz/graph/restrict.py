"""One channel per batch item: the objective's convolution computed for that channel alone.

The gradient-ascent loop of :mod:`onnxviz.explain.patterns` climbs the mean of one channel of a
layer per image (a one-hot seed row). The full layer computes every channel, forward and
backward, to use one. When the objective's tensor is a ``Conv`` (``group`` 1, 2-D, float32),
optionally followed by a ``Relu``, :func:`one_channel` writes instead, for each item ``n``
and its channel ``c = argmax |seed[n]|``:

* the conv's input unfolded to its patches, ``P = Conv(x, E, group = I)`` with ``E`` the
  ``I·kH·kW`` one-hot kernels and the conv's own strides, pads and dilations: ``(N, I·kH·kW, H', W')``;
* ``y[n] = W[c] · P[n]`` (a batched ``MatMul`` by the gathered filter), plus ``B[c]``, then the Relu;

and the objective weighs ``y`` by the row's sum. The backward rules differentiate these
nodes as any others (``MatMul``, then a grouped ``Conv`` for the unfold). Example: Keras VGG16's
``block5_conv3`` at 200² (512 → 512, 12²): patterns 532 ms per image against 547 with the full
conv (forward + input gradient, batch 8, one thread).

>>> t = one_channel(e, index, "block5_conv3/Relu:0", "onnxviz_seed_0")   # doctest: +SKIP
('onnxviz_grad/Relu_9', 'onnxviz_grad/ReduceSum_10')

Known limits: exact only when each seed row has at most one nonzero (the caller's promise);
any other producer (BatchNormalization, a fused or another activation, a grouped conv) gives
``None``, and the full layer is used.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from .emit import Emitter
from .index import Index, node_attr

__all__ = ["one_channel"]

_ATTRS = ("auto_pad", "dilations", "kernel_shape", "pads", "strides")


def _conv_of(index: Index, tensor: str):
    """``(conv node, relu or None)`` when ``tensor`` is a plain 2-D Conv's output, or its Relu's."""
    node = index.producers.get(tensor)
    relu = None
    if node is not None and node.op_type == "Relu" and node.domain in ("", "ai.onnx"):
        relu, node = node, index.producers.get(node.input[0])
    if node is None or node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or node_attr(node, "group", 1) != 1:
        return None
    return node, relu


def one_channel(e: Emitter, index: Index, tensor: str, seed: str):
    """``(y, weight)``: ``tensor``'s channel ``argmax |seed[n]|`` for each item, ``(N, 1, H', W')``,
    and the seed rows' sums ``(N, 1)``; ``None`` when ``tensor`` is not made so (module docstring)."""
    found = _conv_of(index, tensor)
    if found is None:
        return None
    conv, relu = found
    x, w = conv.input[0], conv.input[1]
    bias = conv.input[2] if len(conv.input) > 2 else ""
    wdims, ydims = e.dims(w), e.dims(conv.output[0])
    if (e.types.get(x, (None, 0))[1] != onnx.TensorProto.FLOAT or not wdims or len(wdims) != 4 or not ydims
            or not all(isinstance(d, int) and d > 0 for d in list(wdims) + list(ydims[1:]))):
        return None
    _, i, kh, kw = wdims
    _, _, ho, wo = ydims
    unfold = np.zeros((i * kh * kw, 1, kh, kw), np.float32)
    unfold[np.arange(i * kh * kw), 0, np.tile(np.repeat(np.arange(kh), kw), i), np.tile(np.arange(kw), i * kh)] = 1
    attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute if a.name in _ATTRS}
    patches = e.op("Conv", [x, e.const(unfold, like=x)], group=i, **attrs)
    patches = e.op("Reshape", [patches, e.ints([0, i * kh * kw, ho * wo])])
    pick = e.op("ArgMax", [e.op("Abs", [seed])], axis=1, keepdims=0)
    rows = e.op("Reshape", [e.op("Gather", [w, pick], axis=0), e.ints([0, 1, i * kh * kw])])
    y = e.op("Reshape", [e.op("MatMul", [rows, patches]), e.ints([0, 1, ho, wo])])
    if bias:
        y = e.op("Add", [y, e.op("Reshape", [e.op("Gather", [bias, pick], axis=0), e.ints([0, 1, 1, 1])])])
    if relu is not None:
        y = e.op("Relu", [y])
    return y, e.op("ReduceSum", [seed, e.ints([1])], keepdims=1)
