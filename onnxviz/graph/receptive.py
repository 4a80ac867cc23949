"""Receptive fields: which input pixels one position of a tensor depends on, from the graph alone.

For every tensor computed from the image input, per spatial axis (H, W):

==========  ================================================================================
``size``    how many input pixels one position's field spans
``jump``    how far apart, in input pixels, the fields of two neighbouring positions are
            (the product of the strides on the way)
``offset``  the input coordinate of the first pixel of position 0's field: negative where
            padding reaches outside the image. Position ``p`` covers
            ``offset + p·jump … offset + p·jump + size − 1``.
==========  ================================================================================

>>> from onnxviz.graph.receptive import receptive_fields
>>> fields = receptive_fields(index, "input_image", "NHWC", shapes, (64, 64))   # doctest: +SKIP
>>> fields["block3_conv2_1/Relu:0"]                                              # doctest: +SKIP
Field(size=(32, 32), jump=(4, 4), offset=(-14, -14), whole=False)

The walk goes once through the graph in order, from the image input, one rule per op (the
table :data:`RULES`, each rule with the example it was made for). A conv or pooling window
of kernel ``k``, dilation ``d``, stride ``s`` and leading pad ``p`` gives
``size + (d·(k−1))·jump``, ``jump·s`` and ``offset − p·jump``; its ``auto_pad`` (``SAME_UPPER``,
``SAME_LOWER``) is resolved at the tensor's inferred size. Where paths meet (a residual
``Add``, an Inception ``Concat``) the union is taken: the lowest start and the highest end,
the largest jump. A global pooling, a ``Flatten``, a reshape that does not keep the spatial
axes, a ``Gemm``/``MatMul``, a reduction or softmax over a spatial axis, and normalisations
over positions (``InstanceNormalization``, ``GroupNormalization``, ``LayerNormalization``)
make a field *whole*: the value depends on every pixel; so does anything computed from a whole
field, whatever the op (a squeeze-and-excitation gate multiplies the map by a whole-field
vector; a style-transfer net's InstanceNormalization makes its every layer whole). Constants and the
model's other inputs do not count.

Spatial axes are followed as positions from the end (``-2, -1`` in NCHW, ``-3, -2`` in
NHWC), so broadcasting, ``Transpose`` and reshapes that keep the trailing spatial dims
(ShuffleNet's channel shuffle) keep them.

The field is the standard one, a box that assumes every position on the way exists. At the
image's borders padding stands for positions that do not, so a box reaching out of the image
can hold a pixel or two its position does not depend on; and the union of two paths whose
boxes do not nest is L-shaped, the field its bounding box. Checked against onnxruntime, one
pixel changed at a time (``tests/test_receptive.py``): VGG-, ResNet- (downsample branch) and
Inception-like nets, strided, dilated, padded and ``SAME`` convs, the demo model, and the
onnx wheel's nine Model Zoo classics.

Known limits: upsampling (``ConvTranspose``, ``Resize``, ``Upsample``, ``DepthToSpace``) and
slicing or concatenating along a spatial axis have no rule: the field of such a tensor, and
of anything after it, is unknown (``None``). A reflect or edge ``Pad`` counts as a constant
one (the mirrored pixels are not added to the field). ``auto_pad=SAME`` needs the tensor's
inferred size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import OnnxvizError
from .index import Index, node_attr
from .weights import constant_value

__all__ = ["Field", "Fields", "receptive_fields", "field_text", "RULES"]


@dataclass(frozen=True)
class Field:
    """One position's receptive field in the input, per spatial axis (H, W for images).

    A *whole* field depends on every input pixel: ``size`` is the input's size, ``jump``
    zero and ``offset`` zero.
    """

    size: tuple
    jump: tuple
    offset: tuple
    whole: bool = False

    def box(self, position) -> tuple:
        """``((start, stop), …)`` per axis, in input pixels (``stop`` exclusive) of the field of
        ``position`` (a tuple of feature-map indices); the whole input for a whole field."""
        if self.whole:
            return tuple((0, s) for s in self.size)
        return tuple((o + p * j, o + p * j + s) for o, p, j, s in zip(self.offset, position, self.jump, self.size))

    def as_dict(self) -> dict:
        return {"size": list(self.size), "jump": list(self.jump), "offset": list(self.offset), "whole": self.whole}

    def text(self) -> str:
        """``32×32``, or ``whole``."""
        return field_text(self.as_dict())


def field_text(field: dict | None) -> str:
    """A field as :meth:`Field.as_dict` gives it (a summary row's), as the layer table shows it:
    ``32×32``, ``whole``, or ``?`` (``None``: no rule gives it)."""
    if not field:
        return "?"
    return "whole" if field.get("whole") else "×".join(map(str, field["size"]))


@dataclass(frozen=True)
class _Value:
    """What the walk knows of a tensor: its spatial axes (from the end) and its field."""

    axes: tuple
    field: Field | None          # None: unknown
    why: str = ""                # why unknown


class _Walk:
    """The state of one walk: the index, the shapes, the input size, and every tensor's value."""

    def __init__(self, index: Index, shapes, input_size: tuple):
        self.index, self.shapes, self.input_size = index, shapes, tuple(input_size)
        self.opset = next((o.version for o in index.opset_import if o.domain in ("", "ai.onnx")), 0)

    def rank(self, name: str):
        dims = self.shapes.get(name) if self.shapes is not None else None
        return len(dims) if dims else None

    def dims(self, name: str):
        return self.shapes.get(name) if self.shapes is not None else None

    def whole(self) -> Field:
        n = len(self.input_size)
        return Field(self.input_size, (0,) * n, (0,) * n, whole=True)

    def constant(self, name: str):
        """A small constant input's value (pads, axes), or ``None``."""
        try:
            return constant_value(self.index, name, fold=False)
        except OnnxvizError:  # a constant that cannot be read: the rule says it cannot tell
            return None


def _unknown(why: str, axes=()) -> _Value:
    return _Value(tuple(axes), None, why)


def _union(walk: _Walk, node, ins: list) -> _Value:
    """Paths that meet: the lowest start, the highest end, the largest jump (same axes)."""
    for v in ins:
        if v.field is None:
            return v
    if any(v.field.whole for v in ins):
        return _Value(next((v.axes for v in ins if not v.field.whole), ins[0].axes), walk.whole())
    axes = ins[0].axes
    if any(v.axes != axes for v in ins):
        return _unknown(f"{node.op_type} node '{node.name}' joins tensors whose spatial axes differ", axes)
    fields = [v.field for v in ins]
    start = tuple(min(f.offset[a] for f in fields) for a in range(len(axes)))
    end = tuple(max(f.offset[a] + f.size[a] for f in fields) for a in range(len(axes)))
    jump = tuple(max(f.jump[a] for f in fields) for a in range(len(axes)))
    return _Value(axes, Field(tuple(e - s for s, e in zip(start, end)), jump, start))


def _pointwise(walk, node, ins):
    """Elementwise and per-channel ops: the union of their inputs (``Relu``; a residual ``Add``)."""
    return _union(walk, node, ins)


def _whole(walk, node, ins):
    """Every position mixes all of them (``GlobalAveragePool``, ``Flatten``, ``Gemm``)."""
    bad = next((v for v in ins if v.field is None), None)
    return bad if bad is not None else _Value((), walk.whole())


def _no_rule(walk, node, ins):
    """Upsampling and the like (``ConvTranspose``, ``Resize``): no rule, the field is unknown."""
    return _unknown(f"{node.op_type} node '{node.name}' has no receptive-field rule")


def _pads(walk: _Walk, node, spatial: int, dims_in, kernel, strides, dilations):
    """The leading pad of each spatial axis: ``pads``, or ``auto_pad`` at the inferred size."""
    auto = node_attr(node, "auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    if auto in ("NOTSET", ""):
        pads = node_attr(node, "pads", None) or [0] * (2 * spatial)
        return tuple(pads[:spatial])
    if auto == "VALID":
        return (0,) * spatial
    sizes = tuple(dims_in[-spatial:]) if dims_in else ()
    if len(sizes) != spatial or not all(isinstance(s, int) and s > 0 for s in sizes):
        return None
    begin = []
    for n, k, s, d in zip(sizes, kernel, strides, dilations):
        total = max((math.ceil(n / s) - 1) * s + d * (k - 1) + 1 - n, 0)
        begin.append(total // 2 if auto == "SAME_UPPER" else total - total // 2)
    return tuple(begin)


def _window(walk, node, ins):
    """A conv or a pooling window over the trailing axes (``Conv`` 3×3 pad 1; ``MaxPool`` 2×2 stride 2)."""
    data = ins[0]
    if data.field is None:
        return data
    kernel = node_attr(node, "kernel_shape", None)
    if kernel is None:  # a Conv without kernel_shape: its weight's dims
        at = 3 if node.op_type == "QLinearConv" else 1
        w = node.input[at] if len(node.input) > at else ""
        init = walk.index.initializers.get(w)
        wdims = tuple(init.dims) if init is not None else tuple(walk.dims(w) or ())
        kernel = wdims[2:] if len(wdims) > 2 and all(isinstance(d, int) for d in wdims) else None
    if not kernel:
        return _unknown(f"{node.op_type} node '{node.name}' has no kernel shape to read", data.axes)
    spatial = len(kernel)
    if data.field.whole:
        return _Value(tuple(range(-spatial, 0)), data.field)
    if data.axes != tuple(range(-spatial, 0)):
        return _unknown(f"{node.op_type} node '{node.name}' slides over axes that are not the image's", data.axes)
    strides = tuple(node_attr(node, "strides", None) or [1] * spatial)
    dilations = tuple(node_attr(node, "dilations", None) or [1] * spatial)
    explicit = node_attr(node, "pads", None)
    if len(strides) != spatial or len(dilations) != spatial or (explicit and len(explicit) != 2 * spatial) \
            or not all(isinstance(v, int) and v > 0 for v in (*kernel, *strides, *dilations)):
        return _unknown(f"{node.op_type} node '{node.name}' has kernel, strides, dilations or pads that do not fit",
                        data.axes)
    pads = _pads(walk, node, spatial, walk.dims(node.input[0]), kernel, strides, dilations)
    if pads is None:
        return _unknown(f"{node.op_type} node '{node.name}' pads SAME at a size shape inference does not give",
                        data.axes)
    f = data.field
    size = tuple(s + d * (k - 1) * j for s, d, k, j in zip(f.size, dilations, kernel, f.jump))
    offset = tuple(o - p * j for o, p, j in zip(f.offset, pads, f.jump))
    jump = tuple(j * s for j, s in zip(f.jump, strides))
    return _Value(data.axes, Field(size, jump, offset))


def _axis(walk, node, name: str, default: int, ins):
    """The node's ``axis`` attribute as a position from the end, or ``None`` (rank unknown)."""
    axis = node_attr(node, name, default)
    if axis < 0:
        return axis
    rank = walk.rank(node.input[0])
    return axis - rank if rank else None


def _along(walk, node, ins, default: int = 0, *, spatial: str = "unknown"):
    """Ops along one ``axis`` (``Concat`` of Inception branches on channels; ``Split``; ``Softmax``
    over classes): along a spatial axis ``spatial`` says what happens (``whole`` or ``unknown``)."""
    axis = _axis(walk, node, "axis", default, ins)
    axes = next((v.axes for v in ins if v.field is not None and not v.field.whole), ins[0].axes)
    if axis is None or axis in axes:
        if spatial == "whole" and axis is not None:
            return _whole(walk, node, ins)
        return _unknown(f"{node.op_type} node '{node.name}' works along a spatial axis", axes)
    return _union(walk, node, ins)


def _concat(walk, node, ins):
    """Inception: branches joined on the channel axis (their union); along a spatial axis: unknown."""
    return _along(walk, node, ins, 1)


def _split(walk, node, ins):
    """ShuffleNet's channel split; along a spatial axis: unknown."""
    return _along(walk, node, ins, 0)


def _softmax(walk, node, ins):
    """A softmax over channels keeps the field; over positions (or opset < 13's flattening from
    ``axis``, default 1) it is whole."""
    if walk.opset and walk.opset < 13:
        axis = _axis(walk, node, "axis", 1, ins)
        axes = ins[0].axes
        if axis is None or (axes and axis <= max(axes)):
            return _whole(walk, node, ins)
        return _union(walk, node, ins)
    return _along(walk, node, ins, -1, spatial="whole")


def _reduce(walk, node, ins):
    """``ReduceMean`` over H, W (a global pooling) is whole; over channels it keeps the field."""
    data = ins[0]
    axes = node_attr(node, "axes", None)
    if axes is None and len(node.input) > 1 and node.input[1]:
        value = walk.constant(node.input[1])
        axes = None if value is None else [int(a) for a in value.reshape(-1)]
        if value is None:
            return _unknown(f"{node.op_type} node '{node.name}' reduces over axes computed at run time", data.axes)
    if not axes:  # every axis (or, with noop_with_empty_axes, none)
        return data if node_attr(node, "noop_with_empty_axes", 0) else _whole(walk, node, ins)
    rank = walk.rank(node.input[0])
    ends = {a if a < 0 else (a - rank if rank else None) for a in axes}
    if None in ends or ends & set(data.axes):
        return _whole(walk, node, ins)
    return _union(walk, node, ins) if node_attr(node, "keepdims", 1) else \
        _unknown(f"{node.op_type} node '{node.name}' drops an axis", data.axes)


def _arg_reduce(walk, node, ins):
    """``ArgMax`` over channels keeps the field (a segmentation's labels); over positions, whole."""
    axis = _axis(walk, node, "axis", 0, ins)
    if axis is None or axis in ins[0].axes:
        return _whole(walk, node, ins)
    return _union(walk, node, ins) if node_attr(node, "keepdims", 1) else \
        _unknown(f"{node.op_type} node '{node.name}' drops an axis", ins[0].axes)


def _norm_over(walk, node, ins):
    """``LayerNormalization`` from ``axis`` (default −1) on: whole if that covers a spatial axis."""
    axis = _axis(walk, node, "axis", -1, ins)
    if axis is None or (ins[0].axes and axis <= max(ins[0].axes)):
        return _whole(walk, node, ins)
    return _union(walk, node, ins)


def _transpose(walk, node, ins):
    """tf2onnx's ``Transpose(0, 3, 1, 2)`` from NHWC to NCHW: the spatial axes move with it."""
    data = ins[0]
    perm = node_attr(node, "perm", None)
    if data.field is None:
        return data
    rank = len(perm) if perm else walk.rank(node.input[0])
    if not rank:
        return _unknown(f"Transpose node '{node.name}' of unknown rank", data.axes)
    perm = list(perm) if perm else list(range(rank))[::-1]
    return _Value(tuple(perm.index(a + rank) - rank for a in data.axes), data.field)


def _reshape(walk, node, ins):
    """ShuffleNet's channel shuffle (``Reshape`` to N×g×C/g×H×W and back) keeps the trailing
    spatial dims: the field stays. A reshape that merges them away is a flatten: whole."""
    data = ins[0]
    if data.field is None or data.field.whole:
        return _Value((), data.field) if data.field is not None else data
    before, after = walk.dims(node.input[0]), walk.dims(node.output[0])
    if not before or not after:
        return _unknown(f"{node.op_type} node '{node.name}' has no inferred shape", data.axes)
    k = len(data.axes)
    trailing = data.axes == tuple(range(-k, 0))
    kept = [before[a] for a in data.axes]
    if trailing and len(after) >= k and list(after[-k:]) == kept and all(isinstance(d, int) for d in kept):
        return _Value(data.axes, data.field)
    return _whole(walk, node, ins)


def _pad(walk, node, ins):
    """An explicit ``Pad`` before a conv (tf2onnx, Caffe2): the field shifts by the leading pad."""
    data = ins[0]
    if data.field is None or data.field.whole:
        return data
    pads = node_attr(node, "pads", None)
    if pads is None and len(node.input) > 1 and node.input[1]:
        value = walk.constant(node.input[1])
        pads = None if value is None else [int(p) for p in value.reshape(-1)]
    if pads is None:
        return _unknown(f"Pad node '{node.name}' has pads computed at run time", data.axes)
    count = len(pads) // 2
    ends = list(range(-count, 0))  # the padded axes, from the end: all of them unless `axes` says
    if len(node.input) > 3 and node.input[3]:
        value, rank = walk.constant(node.input[3]), walk.rank(node.input[0])
        if value is None or not rank:
            return _unknown(f"Pad node '{node.name}' pads axes it cannot tell", data.axes)
        ends = [int(a) % rank - rank for a in value.reshape(-1)]
    begin = dict(zip(ends, pads[:count]))
    f = data.field
    offset = tuple(o - int(begin.get(a, 0)) * j for o, a, j in zip(f.offset, data.axes, f.jump))
    return _Value(data.axes, Field(f.size, f.jump, offset))


def _same_spatial(walk, node, ins):
    """``Slice``/``Gather``/``Squeeze`` that leave the spatial dims as they were (a channel slice)
    keep the field; one that cuts a spatial axis has no rule."""
    data = ins[0]
    if data.field is None or data.field.whole:
        return data
    before, after = walk.dims(node.input[0]), walk.dims(node.output[0])
    k = len(data.axes)
    if before and after and len(after) >= k and data.axes == tuple(range(-k, 0)) \
            and list(after[-k:]) == [before[a] for a in data.axes]:
        return _Value(data.axes, data.field)
    return _unknown(f"{node.op_type} node '{node.name}' cuts a spatial axis", data.axes)


_WINDOWS = ("Conv", "ConvInteger", "QLinearConv", "FusedConv", "MaxPool", "AveragePool", "LpPool",
            "QLinearAveragePool")
_GLOBAL = ("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "QLinearGlobalAveragePool", "Flatten",
           "Gemm", "MatMul", "MatMulInteger", "QLinearMatMul", "Einsum", "InstanceNormalization",
           "GroupNormalization", "MeanVarianceNormalization")
_POINTWISE = (
    "Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu",
    "Celu", "Gelu", "Mish", "Softplus", "Softsign", "ThresholdedRelu", "Shrink", "Erf", "Exp", "Log",
    "Abs", "Neg", "Sqrt", "Reciprocal", "Pow", "Floor", "Ceil", "Round", "Sign", "Add", "Sub", "Mul", "Div",
    "Sum", "Max", "Min", "Mean", "Where", "Identity", "Cast", "CastLike", "Dropout", "BatchNormalization",
    "QuantizeLinear", "DequantizeLinear", "Not", "And", "Or", "Xor", "Greater", "Less", "Equal",
    "GreaterOrEqual", "LessOrEqual", "LRN", "QuickGelu", "FastGelu", "BiasGelu", "QLinearAdd",
    "QLinearMul", "QLinearLeakyRelu", "QLinearSigmoid", "DynamicQuantizeLinear", "Expand",
)
_SHAPE_ONLY = ("Shape", "Size")
_NO_RULE = ("ConvTranspose", "Resize", "Upsample", "DepthToSpace", "SpaceToDepth", "MaxUnpool", "Col2Im",
            "GridSample", "RoiAlign", "MaxRoiPool", "Tile")

#: op → rule: ``rule(walk, node, inputs) → value``, ``inputs`` the values of the node's inputs
#: that come from the image (constants and other model inputs left out). Each rule's
#: docstring names the case it was made for. An op not here has no rule: unknown.
RULES = {
    **{op: _window for op in _WINDOWS},
    **{op: _whole for op in _GLOBAL},
    **{op: _pointwise for op in _POINTWISE},
    **{op: _no_rule for op in _NO_RULE},
    "Concat": _concat, "QLinearConcat": _concat, "Split": _split,
    "Softmax": _softmax, "LogSoftmax": _softmax, "Hardmax": _softmax,
    **{op: _reduce for op in ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1",
                              "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")},
    "ArgMax": _arg_reduce, "ArgMin": _arg_reduce,
    "LayerNormalization": _norm_over,
    "Transpose": _transpose,
    "Reshape": _reshape, "Squeeze": _reshape, "Unsqueeze": _reshape,
    "Pad": _pad,
    "Slice": _same_spatial, "Gather": _same_spatial,
}


class Fields(dict):
    """``{tensor: Field or None}``; ``why[tensor]``: why a field is ``None`` (the first op
    on its way that has no rule)."""

    why: dict


def receptive_fields(index: Index, input_name: str, layout: str, shapes, input_size: tuple) -> Fields:
    """``{tensor: Field or None}`` for every tensor computed from the image input ``input_name``.

    ``layout``: ``NCHW`` or ``NHWC`` (a rank-3 or rank-5 input is channel-first); ``shapes``:
    an :class:`onnxviz.graph.shapes.Shapes` (``get(name)`` → dims) for ``auto_pad`` and
    reshapes, or ``None``; ``input_size``: the input's spatial size, given as the size of a
    whole field. ``None`` means no rule gives the field (see the module's known limits).
    """
    walk = _Walk(index, shapes, input_size)
    n = len(input_size)
    axes = tuple(range(-n - 1, -1)) if layout == "NHWC" else tuple(range(-n, 0))
    values = {input_name: _Value(axes, Field((1,) * n, (1,) * n, (0,) * n))}
    for node in index.nodes:
        ins = [values[i] for i in node.input if i in values]
        if not ins or node.op_type in _SHAPE_ONLY:
            continue  # constants, other inputs, and what only reads a shape, depend on no pixel
        domain = node.domain if node.domain not in ("ai.onnx",) else ""
        rule = RULES.get(node.op_type) if domain in ("", "com.microsoft") else None
        if any(v.field is not None and v.field.whole for v in ins) and rule not in (_window, _transpose):
            rule = _whole  # what is computed from a whole field is whole, whatever the op (an upsampling too)
        try:
            value = rule(walk, node, ins) if rule is not None else \
                _unknown(f"{node.op_type} node '{node.name}' has no receptive-field rule")
        except (TypeError, ValueError, IndexError, AttributeError, ZeroDivisionError):  # a broken node: no field
            value = _unknown(f"{node.op_type} node '{node.name}' has attributes its rule cannot read")
        for out in node.output:
            if out:
                values[out] = value
    fields = Fields((name, v.field) for name, v in values.items())
    fields.why = {name: v.why for name, v in values.items() if v.field is None}
    return fields
