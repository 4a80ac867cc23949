"""Backward rules of ops that move values without computing: reshapes, transposes, concat/split,
slices and pads.

Each rule is ``fn(e, node, dy) -> [dx per input]`` (see :class:`onnxviz.graph.emit.Rule`).
``Slice`` and non-constant ``Pad`` modes are gathers along each axis by a known index list,
so their gradient scatters ``dy`` back (:meth:`onnxviz.graph.emit.Emitter.scatter_axis`),
summing where ``reflect``/``edge``/``wrap`` pads read a value twice.

>>> RULES[("", "Transpose")].fn(e, transpose_node, ["dy"])   # doctest: +SKIP
['onnxviz_grad/Transpose_3']

Known limits: ``Slice`` and non-constant ``Pad`` need constant starts/ends/pads and static
dims on the axes they touch.
"""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedModelError
from .emit import Rule
from .index import node_attr

__all__ = ["RULES"]


def reshape_back(e, node, dy):
    """Flatten / Reshape / Squeeze / Unsqueeze (a classifier's Flatten before its Gemm): dx = dy
    reshaped to x's shape."""
    x = node.input[0]
    return [e.like(dy[0], x)] + [None] * (len(node.input) - 1)


def expand(e, node, dy):
    """Expand (a broadcast made explicit by exporters): dx = dy summed back to x's shape."""
    return [e.unbroadcast(dy[0], node.input[0], node.output[0]), None]


def transpose(e, node, dy):
    """Transpose (tf2onnx's NHWC input → NCHW): dx = dy transposed by the inverse permutation."""
    x = node.input[0]
    perm = node_attr(node, "perm", None)
    if perm is None:
        perm = list(range(e.rank(x, node)))[::-1]
    return [e.op("Transpose", [dy[0]], perm=[int(i) for i in np.argsort(perm)])]


def concat(e, node, dy):
    """Concat (Inception's branches, DenseNet): each input gets its piece of dy, split at the
    inputs' sizes along the axis (read at run time)."""
    axis = node_attr(node, "axis")
    at = e.ints([axis])
    sizes = e.op("Concat", [e.op("Gather", [e.shape(x), at]) for x in node.input], axis=0)
    return list(e.op("Split", [dy[0], sizes], outputs=len(node.input), axis=axis) if len(node.input) > 1 else [dy[0]])


def split(e, node, dy):
    """Split (ShuffleNet's channel split, TorchScript's chunk): dx = the outputs' gradients
    concatenated (zeros for an output the objective does not read)."""
    axis = node_attr(node, "axis", 0)
    parts = [g if g is not None else e.zeros(e.shape(y), like=node.input[0]) for g, y in zip(dy, node.output)]
    return [e.op("Concat", parts, axis=axis), None]


def slice_(e, node, dy):
    """Slice (YOLOv5's Focus layer x[..., ::2, ::2]; a BGR flip x[:, ::-1]; crops): dy scattered
    back to the positions each axis read (a zero padding when they are contiguous)."""
    x = node.input[0]
    r = e.rank(x, node)
    ins = list(node.input) + [""] * (5 - len(node.input))
    starts = e.value(ins[1], node, "starts")
    ends = e.value(ins[2], node, "ends")
    axes = e.value(ins[3], node, "axes")
    steps = e.value(ins[4], node, "steps")
    axes = list(range(len(starts))) if axes is None else [int(a) % r for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    g = dy[0]
    for a, st, en, sp in zip(axes, starts, ends, steps):
        dim = e.static(x, node, [a])[0]
        g = e.scatter_axis(g, a, np.arange(*slice(int(st), int(en), int(sp)).indices(dim)), dim, r, add=False)
    return [g] + [None] * (len(node.input) - 1)


_NUMPY_MODES = {"reflect": "reflect", "edge": "edge", "wrap": "wrap"}


def pad(e, node, dy):
    """Pad (explicit padding before a conv; ``reflect`` in style-transfer nets): constant mode:
    dx = dy padded by −pads (a crop); other modes: dy scattered back, summed where the pad
    re-reads a value (numpy's ``np.pad`` index map)."""
    mode = node_attr(node, "mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    ins = list(node.input) + [""] * (4 - len(node.input))
    if mode == "constant":
        extra = ["", ins[3]] if ins[3] else []
        return [e.op("Pad", [dy[0], e.op("Neg", [ins[1]])] + extra), None, None, None][:len(node.input)]
    if mode not in _NUMPY_MODES:
        raise UnsupportedModelError(f"Pad '{node.name}' has mode '{mode}'; its gradient is not supported")
    x = node.input[0]
    r = e.rank(x, node)
    pads = [int(p) for p in e.value(ins[1], node, "pads")]
    axes = e.value(ins[3], node, "axes")
    axes = list(range(r)) if axes is None else [int(a) % r for a in axes]
    k = len(axes)
    g = dy[0]
    for a, before, after in zip(axes, pads[:k], pads[k:]):
        if before == 0 and after == 0:
            continue
        if before < 0 or after < 0:
            raise UnsupportedModelError(f"Pad '{node.name}' crops in mode '{mode}'; its gradient is not supported")
        dim = e.static(x, node, [a])[0]
        index = np.pad(np.arange(dim), (before, after), mode=_NUMPY_MODES[mode])
        g = e.scatter_axis(g, a, index, dim, r, add=True)
    return [g] + [None] * (len(node.input) - 1)


RULES = {
    ("", "Flatten"): Rule(reshape_back), ("", "Reshape"): Rule(reshape_back), ("", "Squeeze"): Rule(reshape_back),
    ("", "Unsqueeze"): Rule(reshape_back), ("", "Expand"): Rule(expand), ("", "Transpose"): Rule(transpose),
    ("", "Concat"): Rule(concat, inputs=None), ("", "Split"): Rule(split),
    ("", "Slice"): Rule(slice_), ("", "Pad"): Rule(pad),
}
