"""Open an ONNX model and describe its convolutions, without reading its weight bytes.

:func:`load` is the entry point: it walks the file's protobuf encoding, keeps the graph and
skips the weights (see :mod:`onnxviz._wire`), then builds, once, the typed lookups every
later step uses (producers, consumers, initializers) and the table of conv layers.

>>> import onnxviz
>>> m = onnxviz.load("models/demo.onnx")                     # doctest: +SKIP
>>> [layer.name for layer in m.layers][:2]                   # doctest: +SKIP
['block1_conv1', 'block1_conv2']
>>> m.filters("block1_conv1").shape                          # doctest: +SKIP
(16, 3, 3, 3)
>>> fm = m.feature_maps("photo.jpg", layers="block1_*")      # doctest: +SKIP

A layer's *feature map* is the tensor after its activation. From the conv output the chain
goes region by region, each the smallest set of elementwise nodes (constants, QDQ pairs,
normalisations and a ``Reshape`` that is undone included) after which the values flow on
through one tensor again: a bias ``Add``/``Mul``/``Sub``/``Div`` with a constant,
``BatchNormalization``/``InstanceNormalization``, GroupNorm (``Reshape → InstanceNormalization
→ Reshape``, its shape from ``Shape(x)`` or a constant), then one activation — an op
(``Relu``, ``Clip``, ``Gelu``, ``Mish``, …) or an expression of the tensor that converges
again (``x * Sigmoid(x)``, TorchScript's ``x·(1+erf(x/√2))·0.5`` and ``x·tanh(softplus(x))``).
``Layer.activation`` names it: ``Relu``, ``x*Sigmoid(x)``, ``Gelu``, ``GroupNorm+Relu``, ….
Reading only a tensor's shape or type (``Shape``, ``CastLike``) is no use of it; any other
consumer that cannot join — a conv, pooling, ``Concat``, a residual ``Add`` or a gate ``Mul``
whose other input is computed elsewhere, a fan-out that does not converge within 16 nodes —
ends the chain.

Quantized models (``onnxruntime.quantization``), by conv op — feature maps are always
float32, filters ``(q - zero_point) · scale`` (see :mod:`onnxviz.weights`; a ``ConvInteger``
whose weight scale is not in the graph gives ``q - zero_point``, with a warning):

=================  ================================  ========================================
op (quantizer)     feature map                       ``raw_conv=True``
=================  ================================  ========================================
``Conv`` in QDQ    the ``DequantizeLinear`` after    the float ``Conv`` output before its
(static QDQ)       the output ``QuantizeLinear``:    ``QuantizeLinear``: onnxruntime cannot
                   onnxruntime keeps the             fuse that conv then (much slower, see
                   ``QLinearConv`` fusion            BENCHMARKS.md), and it is the
                                                     unrounded value
``QLinearConv``    its uint8/int8 output (a folded   the same tensor (the graph has no
(QOperator)        ``Relu`` included), dequantized   pre-activation one), dequantized
                   with its own output scale and
                   zero point (inputs 6, 7)
``ConvInteger``    after ``Cast → Mul`` by the       the ``Mul`` output: the int32
(dynamic)          scales, bias ``Add`` and the      accumulator times ``x_scale · w_scale``,
                   activation (float tensors)        before the bias
=================  ================================  ========================================

Model metadata (``metadata_props``) that onnxviz reads — ``scripts/keras_export.py`` writes it:

=========================  ==========================================================
``onnxviz.preprocess``     preset name: ``caffe``, ``torch``, ``tf``, ``unit`` or ``raw``
``onnxviz.channel_order``  ``RGB`` or ``BGR``: what the first conv sees (default: from preset)
``onnxviz.input_size``     ``"H,W"``, used when the input's spatial dims are dynamic
``onnxviz.layer_names``    JSON object: conv node name (or weight name) → friendly name
``onnxviz.source``         free text: where the model came from
``onnxviz.weights``        free text: ``imagenet``, ``random``, a file name
=========================  ==========================================================

Known limits: only the main graph's convolutions are layers (not those inside If/Loop
bodies); images go to rank-4 inputs only: a 1-D or 3-D conv net (rank-3 or rank-5 input)
takes a ready input tensor instead (see :mod:`onnxviz.features`), and its input line in the
summary says so instead of an image size.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import warnings
from dataclasses import dataclass, field

import onnx

from ._wire import read_model
from .errors import LayerError, ModelError, OnnxvizWarning, UnsupportedModelError, listing

__all__ = ["load", "Model", "Layer", "CONV_OPS", "META"]

#: Convolution op types onnxviz treats as layers, by domain.
CONV_OPS = {
    ("", "Conv"), ("", "ConvTranspose"), ("", "QLinearConv"), ("", "ConvInteger"),
    ("com.microsoft", "FusedConv"), ("com.microsoft", "NhwcFusedConv"),
}

#: metadata_props keys (see the module docstring).
META = {
    "preprocess": "onnxviz.preprocess",
    "channel_order": "onnxviz.channel_order",
    "input_size": "onnxviz.input_size",
    "layer_names": "onnxviz.layer_names",
    "source": "onnxviz.source",
    "weights": "onnxviz.weights",
}

DEFAULT_SIZE = (224, 224)

# The feature chain (see feature_tensor): ops it may pass, by role.
_PASS_CONST = {"Add", "Mul", "Sub", "Div"}          # with a constant: bias / scale
_NORMS = {"BatchNormalization", "InstanceNormalization", "GroupNormalization", "LayerNormalization"}
_ACTIVATIONS = {
    "Relu", "LeakyRelu", "PRelu", "Clip", "HardSwish", "Tanh", "Elu", "Selu", "Gelu",
    "Sigmoid", "HardSigmoid", "Softplus", "Mish", "ThresholdedRelu", "Celu", "FastGelu",
    "QuickGelu", "Softsign", "Shrink",
}
_ELEMENTWISE = _PASS_CONST | _ACTIVATIONS | {
    "Pow", "Sqrt", "Reciprocal", "Exp", "Log", "Neg", "Abs", "Sign", "Erf", "Floor", "Ceil",
    "Round", "Max", "Min", "Sum", "Mean", "Where", "Identity",
}
_BOOLEAN = {"Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Equal", "Not", "And", "Or", "Xor"}
# Same values, other layout or encoding: a region through them must end where they are undone.
_TRANSPARENT = {"Identity", "Reshape", "QuantizeLinear", "DequantizeLinear"}
_REGION_OPS = _ELEMENTWISE | _BOOLEAN | _NORMS | _TRANSPARENT
_REGION_LIMIT = 16   # nodes in one region of the chain (a decomposed GELU is 5, tanh-GELU 8)
_CHAIN_LIMIT = 32    # regions in one chain
# Nodes an image passes on its way from the graph input to the first conv.
_INPUT_PATH = {"Transpose", "Cast", "Identity", "Sub", "Add", "Mul", "Div", "Pad",
               "QuantizeLinear", "DequantizeLinear", "Reshape", "Resize", "Unsqueeze"}
_TF_OPS = ("convolution", "Conv2D", "BiasAdd", "depthwise", "conv2d_transpose",
           "Conv2DBackpropInput", "Conv1D", "Conv3D", "separable_conv2d", "merged_input",
           "ReadVariableOp", "Relu", "batchnorm", "FusedBatchNormV3")


@dataclass(frozen=True)
class Layer:
    """One convolution of the main graph, in graph order."""

    index: int                       # 0 = first conv
    name: str                        # friendly and unique: block1_conv1, layer1.0.conv1
    node: str                        # the ONNX node name
    op: str                          # Conv, ConvTranspose, QLinearConv, ConvInteger, FusedConv
    filter_shape: tuple              # (O, I/group, *kernel); ConvTranspose: (I, O/group, *kernel)
    group: int
    tensor: str                      # feature map: after bias / norm / activation
    conv_output: str                 # the raw conv output tensor
    output_shape: tuple | None       # (C, H, W) of ``tensor`` at the model's input size
    strides: tuple = ()
    dilations: tuple = ()
    weight: str = ""                 # the weight input tensor's name
    activation: str = ""             # what ended the chain: Relu, x*Sigmoid(x), … or ''
    folded: str = ""                 # what the exporter folded into the weights: BatchNorm, or ''
    node_index: int = field(default=-1, repr=False, compare=False)

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in (
            "index", "name", "node", "op", "filter_shape", "group", "strides", "dilations",
            "tensor", "conv_output", "output_shape", "weight", "activation", "folded")}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


class _Index:
    """Typed lookups over the main graph, built once."""

    def __init__(self, graph: onnx.GraphProto):
        self.nodes = list(graph.node)
        self.initializers = {t.name: t for t in graph.initializer}
        given = {i.name: "a graph input" for i in graph.input} | {n: "an initializer" for n in self.initializers}
        self.producers: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.nodes:
            if not node.output:
                raise ModelError(f"the graph is broken: node '{node.name}' ({node.op_type}) has no outputs")
            for out in node.output:
                if out in self.producers:
                    raise ModelError(f"the graph is broken: tensor '{out}' is the output of two nodes, "
                                     f"'{self.producers[out].name}' and '{node.name}' (each tensor is made once)")
                if out in given:
                    raise ModelError(f"the graph is broken: tensor '{out}' is both {given[out]} and the output "
                                     f"of node '{node.name}' (each tensor is made once)")
                if out:
                    self.producers[out] = node
            for inp in node.input:
                if inp:
                    self.consumers.setdefault(inp, []).append(node)
        self.outputs = {o.name for o in graph.output}
        self.inputs = [i for i in graph.input if i.name not in self.initializers]
        self.positions = {id(n): k for k, n in enumerate(self.nodes)}  # graph order
        self.meta: dict[str, bool] = {}  # _is_meta's answers, the same for every conv

    def is_constant(self, name: str) -> bool:
        if name in self.initializers:
            return True
        node = self.producers.get(name)
        return node is not None and node.op_type == "Constant"

    def only_consumer(self, name: str):
        users = self.consumers.get(name, [])
        if len(users) != 1 or name in self.outputs:
            return None
        return users[0]


def weight_input(node: onnx.NodeProto) -> str:
    """The name of a conv node's weight input (``QLinearConv``: input 3, else 1), or ``''``."""
    at = 3 if node.op_type == "QLinearConv" else 1
    return node.input[at] if len(node.input) > at else ""


def node_attr(node: onnx.NodeProto, name: str, default=None):
    """The value of attribute ``name`` of ``node``, or ``default``."""
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _follow_qdq(index: _Index, name: str) -> str:
    """Through a ``QuantizeLinear → DequantizeLinear`` pair: the DequantizeLinear output.

    Several equal pairs (the same scale, zero point and attributes: the quantizer's
    ``DedicatedQDQPair`` option gives one per consumer) give the first: their values are equal.
    """
    def same(nodes, op, source):
        return nodes and all(n.op_type == op and n.input[0] == source and list(n.input[1:]) ==
                             list(nodes[0].input[1:]) and list(n.attribute) == list(nodes[0].attribute)
                             for n in nodes)

    qs = index.consumers.get(name, [])
    if name in index.outputs or not same(qs, "QuantizeLinear", name):
        return name
    q = qs[0]
    dqs = index.consumers.get(q.output[0], [])
    if q.output[0] not in index.outputs and same(dqs, "DequantizeLinear", q.output[0]):
        return dqs[0].output[0]
    return name


_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                onnx.TensorProto.BFLOAT16}
# com.microsoft activations on quantized tensors: (X, X_scale, X_zp, Y_scale, Y_zp)
QLINEAR_ACTIVATIONS = {"QLinearLeakyRelu": "LeakyRelu", "QLinearSigmoid": "Sigmoid"}


def convinteger_scaling(index: _Index, conv_output: str):
    """``(Cast node, Mul node)`` after a ``ConvInteger``, or ``None``.

    ``quantize_dynamic`` writes ``ConvInteger → Cast(float) → Mul(·, x_scale · w_scale) →
    [bias Add]``: the ``Mul`` output is the float conv output (before bias).
    """
    producer = index.producers.get(conv_output)
    if producer is None or producer.op_type != "ConvInteger":
        return None
    cast = index.only_consumer(conv_output)
    if cast is None or cast.op_type != "Cast" or node_attr(cast, "to") not in _FLOAT_TYPES:
        return None
    mul = index.only_consumer(cast.output[0])
    if mul is None or mul.op_type != "Mul" or len(mul.input) != 2:
        return None
    return cast, mul


def _follow_qlinear(index: _Index, name: str) -> tuple[str, str]:
    """From a ``QLinearConv`` output: through a quantized activation (``QLinearLeakyRelu``, …)
    and a ``DequantizeLinear``, where present. ``(tensor, activation)``."""
    activation = ""
    user = index.only_consumer(name)
    if user is not None and user.domain == "com.microsoft" and user.op_type in QLINEAR_ACTIVATIONS \
            and user.input[0] == name:
        name, activation = user.output[0], QLINEAR_ACTIVATIONS[user.op_type]
        user = index.only_consumer(name)
    if user is not None and user.op_type == "DequantizeLinear" and user.input[0] == name:
        name = user.output[0]
    return name, activation


def _is_meta(index: _Index, name: str, depth: int = 0) -> bool:
    """Whether ``name``'s values are fixed once the input's *shape* is: made from constants
    (an initializer, a ``Constant``, the ``Reshape`` of an initializer that ``quantize_dynamic``
    writes for a bias), ``Shape``/``Size`` of any tensor and ``CastLike`` targets only (a shape
    side branch, a constant cast to the conv output's type). Answers are kept in ``index.meta``."""
    if not name or index.is_constant(name):
        return True
    cache = index.meta
    if name not in cache:
        node = index.producers.get(name)
        if node is None or depth >= 12 or not node.input or any(a.g.node or a.graphs for a in node.attribute):
            cache[name] = False
        elif node.op_type in ("Shape", "Size"):
            cache[name] = True
        elif node.op_type == "CastLike":
            cache[name] = _is_meta(index, node.input[0], depth + 1)
        else:
            cache[name] = all(_is_meta(index, i, depth + 1) for i in node.input)
    return cache[name]


def _value_users(index: _Index, name: str) -> list:
    """The nodes that read ``name``'s values: not ``Shape``/``Size`` of it, nor a ``CastLike``
    to its type."""
    users = []
    for node in index.consumers.get(name, []):
        if node.op_type in ("Shape", "Size") or (node.op_type == "CastLike" and node.input[0] != name):
            continue
        if all(node is not u for u in users):
            users.append(node)
    return users


def _same_shape(index: _Index, entry: str, end: str, shapes: dict | None) -> bool:
    """Whether ``end`` has ``entry``'s shape: ``Reshape(·, Shape(entry))``, or by inference
    (the batch aside: inference runs at batch 1, a static export may say otherwise)."""
    node = index.producers[end]
    shape_of = index.producers.get(node.input[1]) if node.op_type == "Reshape" and len(node.input) > 1 else None
    if shape_of is not None and shape_of.op_type == "Shape" and shape_of.input[0] == entry \
            and node_attr(shape_of, "start", 0) == 0 and node_attr(shape_of, "end") is None:
        return True
    a, b = (shapes or {}).get(entry), (shapes or {}).get(end)
    return bool(a) and bool(b) and len(a) == len(b) and tuple(a[1:]) == tuple(b[1:])


def _region(index: _Index, entry: str, shapes: dict | None):
    """The smallest elementwise region after ``entry``: ``(end, nodes)`` or ``None``.

    Nodes join in graph order while every input is ``entry``, a tensor of the region, or
    shape-fixed (:func:`_is_meta`), and the op is elementwise, a normalisation, a QDQ node or a
    ``Reshape``. The region ends as soon as exactly one of its tensors is read outside it: that
    is ``end``. A consumer that cannot join (a conv, pooling, ``Concat``, a residual ``Add`` or
    a gate ``Mul`` whose other input is computed elsewhere), a graph output, or more than
    :data:`_REGION_LIMIT` nodes without converging, gives ``None``. ``end`` is a float tensor,
    and with a ``Reshape`` in the region has ``entry``'s shape.
    """
    if entry in index.outputs:
        return None
    inside, nodes, taken = [entry], [], set()

    def joins(node):
        if node.op_type not in _REGION_OPS or not node.output[0] or any(
                o and (o in index.outputs or index.consumers.get(o)) for o in node.output[1:]):
            return False
        data = [i for i in node.input if i in inside]
        if node.op_type in _NORMS or node.op_type in ("Reshape", "QuantizeLinear", "DequantizeLinear"):
            return data == [node.input[0]] and all(_is_meta(index, i) for i in node.input[1:])
        return bool(data) and all(i in inside or _is_meta(index, i) for i in node.input)

    while len(nodes) < _REGION_LIMIT:
        ready = [n for t in inside for n in _value_users(index, t) if id(n) not in taken and joins(n)]
        if not ready:
            return None
        node = min(ready, key=lambda n: index.positions[id(n)])
        nodes.append(node)
        taken.add(id(node))
        inside.append(node.output[0])
        ends = [t for t in inside if t in index.outputs
                or any(id(u) not in taken for u in _value_users(index, t))]
        if len(ends) == 1 and ends[0] != entry:
            end = ends[0]
            op = index.producers[end].op_type
            if op != "QuantizeLinear" and op not in _BOOLEAN and (
                    not any(n.op_type == "Reshape" for n in nodes) or _same_shape(index, entry, end, shapes)):
                return end, nodes
        elif not ends:
            return None
    return None


def _describe(index: _Index, entry: str, nodes: list) -> tuple[str, str]:
    """``(kind, name)`` of a region: kind ``pass`` (QDQ pairs, ``Identity``), ``affine`` (bias,
    scale, normalisation, reshapes), ``scale`` (one ``Mul``/``Div`` by a scalar constant) or
    ``activation``."""
    values = {entry} | {n.output[0] for n in nodes}
    ops = [n.op_type for n in nodes if n.op_type not in _TRANSPARENT]
    if not ops and all(n.op_type != "Reshape" for n in nodes):
        return "pass", ""

    def affine(n):
        data = [i for i in n.input if i in values]
        if n.op_type in _NORMS or n.op_type in _TRANSPARENT:
            return True
        return n.op_type in _PASS_CONST and len(n.input) == 2 and len(data) == 1 \
            and (n.op_type != "Div" or n.input[0] in values)

    if all(affine(n) for n in nodes):
        if ops in (["Mul"], ["Div"]):
            node = next(n for n in nodes if n.op_type in ("Mul", "Div"))
            if _is_scalar(index, next(i for i in node.input if i not in values)):
                return "scale", ""
        if "GroupNormalization" in ops or ("InstanceNormalization" in ops
                                          and any(n.op_type == "Reshape" for n in nodes)):
            return "affine", "GroupNorm"  # TorchScript and dynamo: Reshape → InstanceNorm → Reshape
        return "affine", "LayerNorm" if "LayerNormalization" in ops else ""
    named = [op for op in ops if op in _ACTIVATIONS]
    pairs = sum(1 for n in nodes if n.op_type == "Mul" and sum(i in values for i in n.input) == 2)
    if len(ops) == 1:
        return "activation", ops[0]
    if "Erf" in ops:
        return "activation", "Gelu"
    if "Softplus" in ops and "Tanh" in ops:
        return "activation", "Mish"
    if "Tanh" in ops and ("Pow" in ops or pairs >= 2):      # x · (1 + tanh(√(2/π)(x + 0.044715 x³))) / 2
        return "activation", "Gelu"
    if "Abs" in ops and "Div" in ops and not named:
        return "activation", "Softsign"
    if len(ops) == 2 and ops[0] in _ACTIVATIONS and ops[1] == "Mul" and pairs == 1:
        return "activation", f"x*{ops[0]}(x)"   # SiLU, HardSwish written out (QDQ pairs aside)
    if len(named) == 1 and all(affine(n) or n.op_type in _BOOLEAN or n.op_type in ("Where", named[0])
                               for n in nodes):
        return "activation", named[0]           # e.g. dynamo's Softplus(β, threshold)
    return "activation", "·".join(dict.fromkeys(ops))


def _is_scalar(index: _Index, name: str, depth: int = 0) -> bool:
    """Whether ``name`` is a one-element constant (through casts, ``Identity`` and QDQ)."""
    init = index.initializers.get(name)
    if init is not None:
        return all(d == 1 for d in init.dims)
    node = index.producers.get(name)
    if node is None or depth > 4:
        return False
    if node.op_type == "Constant":
        value = node_attr(node, "value")
        if isinstance(value, onnx.TensorProto):
            return all(d == 1 for d in value.dims)
        return any(a.name in ("value_float", "value_int") for a in node.attribute)
    if node.op_type in ("Cast", "CastLike", "Identity", "QuantizeLinear", "DequantizeLinear"):
        return _is_scalar(index, node.input[0], depth + 1)
    return False


def feature_tensor(index: _Index, conv_output: str, shapes: dict | None = None) -> tuple[str, str]:
    """``(tensor, activation)``: where the layer's feature map is, following the chain.

    From the conv output, region by region (see :func:`_region`): any number of affine ones
    (bias, scale, BatchNorm, InstanceNorm, GroupNorm written as ``Reshape → InstanceNorm →
    Reshape``, QDQ pairs), then one activation region — a single op, or an elementwise
    expression of the tensor that converges again (TorchScript's ``x·(1+erf(x/√2))``, ``x ·
    tanh(softplus(x))``, ``x·sigmoid(x)``) — and any ``Mul``/``Div`` by a scalar constant right
    after it (the ``·0.5`` of TorchScript's GELU). ``activation`` names what was passed:
    ``Relu``, ``x*Sigmoid(x)``, ``Gelu``, ``GroupNorm+Relu``, … or ``''``. ``shapes`` (from
    :func:`infer_shapes`) lets a region through a ``Reshape`` end where a constant shape undoes it.

    Quantized convs: a ``QLinearConv``'s feature map is its quantized output (or that of a
    ``QLinearLeakyRelu``/``QLinearSigmoid`` after it, or a ``DequantizeLinear`` after those,
    from which the float chain goes on); :mod:`onnxviz.features` dequantizes it with the
    node's own output scale and zero point. A ``ConvInteger``'s chain starts after its
    ``Cast → Mul`` by the scales (see :func:`convinteger_scaling`); without that pattern its
    feature map is the int32 accumulator.
    """
    cur = conv_output
    producer = index.producers.get(conv_output)
    if producer is not None and producer.op_type == "QLinearConv":
        cur, activation = _follow_qlinear(index, conv_output)
        if activation or getattr(index.producers.get(cur), "op_type", "") != "DequantizeLinear":
            return cur, activation
    elif producer is not None and producer.op_type == "ConvInteger":
        scaling = convinteger_scaling(index, conv_output)
        if scaling is None:
            return conv_output, ""
        cur = scaling[1].output[0]
    names, activated = [], False
    for _ in range(_CHAIN_LIMIT):
        region = _region(index, cur, shapes)
        if region is None:  # equal QDQ pairs, one per consumer, that do not converge: the first
            if _follow_qdq(index, cur) == cur:
                break
            cur = _follow_qdq(index, cur)
            continue
        kind, name = _describe(index, cur, region[1])
        if activated and kind not in ("pass", "scale"):
            break
        activated = activated or kind == "activation"
        if name:
            names.append(name)
        cur = region[0]
    return _follow_qdq(index, cur), "+".join(names)


# ---------------------------------------------------------------- friendly names

def _torchscript_name(node_name: str) -> str | None:
    """``/layer1/layer1.0/conv1/Conv`` → ``layer1.0.conv1``."""
    if not node_name.startswith("/"):
        return None
    segments = [s for s in node_name.split("/") if s][:-1]
    if not segments:
        return None
    # A child of a Sequential/ModuleList is scoped '<its parent's own scope>.<index>':
    # '/layer1/layer1.1/downsample/downsample.0/Conv' → layer1 . 1 . downsample . 0
    pieces, prev = [], ""
    for seg in segments:
        pieces.append(seg[len(prev) + 1:] if prev and seg.startswith(prev + ".") else seg)
        prev = seg
    return ".".join(pieces)


def _dynamo_name(node: onnx.NodeProto) -> str | None:
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = json.loads(p.value.replace("'", '"'))
            except ValueError:
                return None
            scopes = [s for s in scopes if s]
            return scopes[-1] if scopes else None
    return None


def _torch_weight_name(weight: str) -> str | None:
    """``features.0.weight`` → ``features.0`` (a PyTorch parameter name)."""
    m = re.fullmatch(r"((?:[A-Za-z_][\w]*|\d+)(?:\.(?:[A-Za-z_][\w]*|\d+))*)\.weight", weight)
    return m.group(1) if m else None


def _tf_layer(name: str) -> str | None:
    """The Keras layer scope in a tf2onnx name: ``vgg16_1/block1_conv1_1/convolution`` → ``block1_conv1_1``."""
    if "/" not in name or name.startswith("/"):
        return None
    segments = name.split(":")[0].split("/")
    for i, seg in enumerate(segments):
        if i > 0 and any(seg == op or seg.startswith(op) for op in _TF_OPS):
            return segments[i - 1]
    return segments[-2] if len(segments) >= 2 else None


_TORCHSCRIPT_COMPUTED = re.compile(r"onnx::(?:Conv|ConvTranspose)_\d+")


def folded_into(node: onnx.NodeProto, weight: str) -> str:
    """What the exporter folded into this conv's weights: ``"BatchNorm"``, or ``""``.

    Then :meth:`Model.filters` returns the folded weights (``w · γ/√(σ²+ε)``), not the
    framework's parameter. Evidence, by exporter: the dynamo exporter records its rewrite
    (``pkg.onnxscript.rewriter.rule_name`` = ``FuseBatchNormIntoConv``); the TorchScript
    exporter names a weight it computed ``onnx::Conv_<n>`` instead of the parameter's name,
    which in an eval-mode export is its Conv+BatchNorm fusion; tf2onnx names a BN-folded conv
    after the BN's scope (``…/bn_Conv1_1/batchnorm/mul_1``).
    """
    for p in node.metadata_props:
        if p.key == "pkg.onnxscript.rewriter.rule_name" and "BatchNorm" in p.value:
            return "BatchNorm"
    if node.name.startswith("/") and _TORCHSCRIPT_COMPUTED.fullmatch(weight):
        return "BatchNorm"
    if "/" in node.name and not node.name.startswith("/") and "batchnorm" in node.name.lower():
        return "BatchNorm"
    return ""


def _conv_attrs(node: onnx.NodeProto) -> tuple:
    """``(group, strides, dilations)`` of a conv node, checked: a broken model says so here."""
    group = node_attr(node, "group", 1)
    if not isinstance(group, int) or group < 1:
        raise ModelError(f"conv '{node.name}' has group={group!r}; it must be a whole number, 1 or more")
    found = [group]
    for name in ("strides", "dilations"):
        value = node_attr(node, name, ()) or ()
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) for v in value):
            raise ModelError(f"conv '{node.name}' has {name}={value!r}; it must be a list of whole numbers")
        found.append(tuple(value))
    return tuple(found)


def _check_conv_inputs(index: _Index, node: onnx.NodeProto, weight: str) -> None:
    """A conv without data or weight input, or whose weight nothing provides, is a broken model."""
    if not node.input or not node.input[0]:
        raise ModelError(f"conv '{node.name}' has no data input; the graph is broken")
    graph_inputs = {i.name for i in index.inputs}
    if not weight or not (weight in index.initializers or weight in index.producers or weight in graph_inputs):
        raise ModelError(f"conv '{node.name}' takes its weights from '{weight}', which no initializer, "
                         "node or graph input provides; the graph is broken")


def friendly_names(index: _Index, convs: list, metadata: dict) -> list[str]:
    """One unique friendly name per conv node (see the design's naming rules)."""
    mapping = {}
    if metadata.get(META["layer_names"]):
        try:
            mapping = json.loads(metadata[META["layer_names"]])
        except ValueError:
            warnings.warn(f"model metadata '{META['layer_names']}' is not JSON; ignored", OnnxvizWarning)
        if not isinstance(mapping, dict):
            mapping = {}
        mapping = {k: v for k, v in mapping.items() if isinstance(v, str)}  # names are text
    names: list[str | None] = []
    tf_scopes: list[str | None] = []
    node_names = []
    for node, weight in convs:
        node_name, given = node.name, (node.name, weight)
        if node.op_type in ("QLinearConv", "ConvInteger"):  # onnxruntime.quantization's renames
            weight = re.sub(r"_quantized$", "", weight)
            node_name = re.sub(r"_quant$", "", node_name)
        node_names.append(node_name)
        name = next((mapping[k] for k in (*given, node_name, weight) if k in mapping), None)
        if not name:
            name = _torch_weight_name(weight) or _dynamo_name(node) or _torchscript_name(node_name)
        names.append(name)
        tf_scopes.append(None if name else (_tf_layer(weight) or _tf_layer(node_name)))
    # Keras 3 under tf2onnx scopes every layer call as '<layer>_1'; strip that suffix only when
    # *every* tf-style scope has it, so that a real layer named 'conv_1' (scope 'conv_1_1') stays.
    scoped = [s for s in tf_scopes if s]
    strip = bool(scoped) and all(re.search(r"_\d+$", s) for s in scoped)
    for i, scope in enumerate(tf_scopes):
        if scope:
            names[i] = re.sub(r"_\d+$", "", scope) if strip else scope
    out, seen = [], set()
    for (node, _), node_name, name in zip(convs, node_names, names):
        name = name or node_name or f"conv_{len(out)}"
        if name in seen:
            name = node.name if node.name and node.name not in seen else f"{name}#{len(out)}"
        seen.add(name)
        out.append(name)
    return out


# ---------------------------------------------------------------- input

@dataclass(frozen=True)
class InputInfo:
    name: str
    layout: str                 # "NCHW" or "NHWC"
    shape: tuple                # dims as in the graph: ints, or strings for dynamic dims
    elem_type: int
    size: tuple                 # (H, W) used for images: static dims, else metadata, else 224
    size_from: str              # "model", "metadata" or "default"


def _dims(value_info) -> tuple:
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return ()
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim)


def _find_input(index: _Index, first_conv, metadata: dict) -> InputInfo | None:
    by_name = {i.name: i for i in index.inputs}
    if not by_name:
        return None
    # Walk back from the first conv's data input to a graph input.
    cur, nhwc, seen = first_conv.input[0], False, 0
    while cur not in by_name and seen < 64:
        node = index.producers.get(cur)
        if node is None or node.op_type not in _INPUT_PATH:
            break
        if node.op_type == "Transpose" and node_attr(node, "perm") == [0, 3, 1, 2]:
            nhwc = True
        cur = next((i for i in node.input if i and not index.is_constant(i)), "")
        seen += 1
    vi = by_name.get(cur) or index.inputs[0]
    shape = _dims(vi)
    layout = "NHWC" if nhwc else "NCHW"
    size, size_from = None, "model"
    if len(shape) == 4:
        hw = shape[1:3] if nhwc else shape[2:4]
        if all(isinstance(d, int) and d > 0 for d in hw):
            size = tuple(hw)
    if size is None:
        size, size_from = DEFAULT_SIZE, "default"
        meta = metadata.get(META["input_size"], "")
        m = re.fullmatch(r"\s*(\d+)\s*[,x×]\s*(\d+)\s*", meta)
        if m and int(m.group(1)) > 0 and int(m.group(2)) > 0:
            size, size_from = (int(m.group(1)), int(m.group(2))), "metadata"
    return InputInfo(vi.name, layout, shape, vi.type.tensor_type.elem_type, size, size_from)


# ---------------------------------------------------------------- shapes

def infer_shapes(proto: onnx.ModelProto, inp: InputInfo | None, size=None, batch: int = 1) -> dict:
    """``{tensor: dims}`` from onnx shape inference with the input fixed to ``batch × size``."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(proto)
    if inp is not None and len(inp.shape) == 4:
        h, w = size or inp.size
        for vi in fixed.graph.input:
            if vi.name == inp.name:
                dims = vi.type.tensor_type.shape.dim
                c_axis = 3 if inp.layout == "NHWC" else 1
                want = [batch, h, w] if inp.layout == "NHWC" else [batch, None, h, w]
                axes = [0, 1, 2] if inp.layout == "NHWC" else [0, 1, 2, 3]
                for axis, value in zip(axes, want):
                    if value is not None and axis != c_axis:
                        dims[axis].Clear()
                        dims[axis].dim_value = value
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed, strict_mode=False, data_prop=True)
    except Exception:  # inference is best effort: shapes are then unknown
        return {}
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        dims = _dims(vi)
        if dims:
            shapes[vi.name] = dims
    return shapes


# ---------------------------------------------------------------- the model

class Model:
    """An opened ONNX model: its graph (no weight bytes), input, and conv layer table.

    Use :func:`load` to make one. ``Model`` is read-only: nothing here writes to the model's
    file or folder.
    """

    def __init__(self, proto: onnx.ModelProto, path: str = "<memory>", base_dir: str | None = None):
        self.proto = proto
        self.path = os.fspath(path)
        # The real folder (a symbolic link to a model resolved): external data is looked up beside the real file
        self.base_dir = base_dir or os.path.dirname(os.path.realpath(self.path))
        self.metadata = {p.key: p.value for p in proto.metadata_props}
        graph = proto.graph
        nchwc = next((n for n in graph.node if n.domain == "com.microsoft.nchwc"), None)
        if nchwc is not None:
            raise UnsupportedModelError(
                f"'{self.path}' was saved by onnxruntime after its NCHWc layout optimisation "
                f"(node '{nchwc.name}' is {nchwc.domain}.{nchwc.op_type}): its weight bytes are "
                "blocked while their dims still say OIHW; save it with graph optimisation level "
                "'extended' or lower, or use the original export"
            )
        self._index = _Index(graph)
        convs = []
        for i, node in enumerate(self._index.nodes):
            if (node.domain if node.domain != "ai.onnx" else "", node.op_type) in CONV_OPS:
                if not node.output[0]:
                    raise ModelError(f"the graph is broken: conv '{node.name}' ({node.op_type}) has an "
                                     "empty output name, so nothing can read what it computes")
                convs.append((node, weight_input(node), i))
                _check_conv_inputs(self._index, node, convs[-1][1])
        if not convs:
            ops = sorted({n.op_type for n in graph.node})
            raise ModelError(
                f"'{self.path}' has no convolution (Conv, ConvTranspose, QLinearConv, "
                f"ConvInteger, FusedConv); its ops are: {listing(ops) or 'none'}"
            )
        self.input = _find_input(self._index, convs[0][0], self.metadata)
        names = friendly_names(self._index, [(n, w) for n, w, _ in convs], self.metadata)
        shapes = infer_shapes(proto, self.input)
        layers = []
        for k, ((node, weight, i), name) in enumerate(zip(convs, names)):
            out = node.output[0]
            tensor, activation = feature_tensor(self._index, out, shapes)
            w_dims = self._weight_dims(weight, shapes)
            if (w_dims or weight in self._index.initializers) and len(w_dims) < 3:
                raise ModelError(f"the weight of conv '{node.name}' ('{weight}') has shape "
                                 f"{format_shape(w_dims) if w_dims else '() (a scalar)'}; a convolution "
                                 "weight has rank 3 or more (O, I/group, *kernel)")
            group, strides, dilations = _conv_attrs(node)
            fm = shapes.get(tensor) or shapes.get(out)
            layers.append(Layer(
                index=k, name=name, node=node.name, op=node.op_type,
                filter_shape=w_dims, group=group,
                tensor=tensor, conv_output=out,
                output_shape=tuple(fm[1:]) if fm and all(isinstance(d, int) for d in fm[1:]) else None,
                strides=strides, dilations=dilations,
                weight=weight, activation=activation, folded=folded_into(node, weight),
                node_index=i,
            ))
        self.layers: list[Layer] = layers
        self._by_key: dict[str, Layer] = {}
        for layer in reversed(layers):  # friendly names win over node/tensor names
            for key in (layer.tensor, layer.conv_output, layer.node, layer.name):
                if key:
                    self._by_key[key] = layer
        self._sessions: dict = {}

    def __repr__(self) -> str:
        return f"<onnxviz.Model '{self.path}': {len(self.layers)} conv layers>"

    def files(self) -> list[str]:
        """Every file this model reads: its own and its initializers' external-data files.

        Outputs must never be one of them (``onnxviz`` refuses such an ``-o``). A location
        that :func:`onnxviz.weights.external_path` refuses is left out: reading it fails anyway.
        """
        from .weights import external_path

        found = [os.path.realpath(self.path)]
        for tensor in self._index.initializers.values():
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                try:
                    found.append(external_path(tensor, self.base_dir)[0])
                except ModelError:
                    continue
        return list(dict.fromkeys(found))

    def _weight_dims(self, weight: str, shapes: dict) -> tuple:
        init = self._index.initializers.get(weight)
        if init is not None:
            return tuple(init.dims)
        if weight in shapes and all(isinstance(d, int) for d in shapes[weight]):
            return tuple(shapes[weight])
        from .weights import constant_value  # a Constant/Cast/DQ chain: fold it (small)
        try:
            value = constant_value(self, weight)
        except ModelError:
            value = None
        return tuple(value.shape) if value is not None else ()

    # ------------------------------------------------------------ lookups

    def layer(self, key) -> Layer:
        """One layer by index, friendly name, ONNX node name or tensor name."""
        found = self.select([key])
        if len(found) != 1:
            raise LayerError(f"'{key}' matches {len(found)} layers ({listing(l.name for l in found)}); name one")
        return found[0]

    def select(self, keys=None) -> list[Layer]:
        """Layers for a list of keys (index, name, ONNX name or glob), in the order asked.

        ``None`` means every layer. An unknown key raises :class:`LayerError`, listing the layers.
        """
        if keys is None:
            return list(self.layers)
        if isinstance(keys, (str, int)):
            keys = [keys]
        chosen: list[Layer] = []
        for key in keys:
            matches = self._match(key)
            if not matches:
                raise LayerError(
                    f"no layer '{key}'; layers are: {listing((l.name for l in self.layers), 40)}"
                )
            chosen.extend(m for m in matches if m not in chosen)
        return chosen

    def _match(self, key) -> list[Layer]:
        if isinstance(key, Layer):
            return [key] if key in self.layers else []
        if isinstance(key, int) or (isinstance(key, str) and re.fullmatch(r"-?\d+", key.strip())):
            i = int(key)
            if -len(self.layers) <= i < len(self.layers):
                return [self.layers[i]]
            if isinstance(key, int) or key not in self._by_key:
                return []
        key = str(key)
        if key in self._by_key:
            return [self._by_key[key]]
        if any(c in key for c in "*?["):
            return [l for l in self.layers if fnmatch.fnmatchcase(l.name, key)
                    or fnmatch.fnmatchcase(l.node, key)]
        return []

    def stage_ends(self) -> list[Layer]:
        """The last conv of every stage: where the next conv's spatial size differs, and the last.

        Without known output shapes there are no stages to tell apart: the last conv only.
        """
        if any(l.output_shape is None for l in self.layers):
            return [self.layers[-1]]
        return [layer for layer, nxt in zip(self.layers, self.layers[1:] + [None])
                if nxt is None or layer.output_shape[1:] != nxt.output_shape[1:]]

    # ------------------------------------------------------------ the verbs

    def filters(self, layer) -> "np.ndarray":  # noqa: F821
        """Float32 filters ``(O, I/group, kH, kW)`` of one layer (see :mod:`onnxviz.weights`)."""
        from .weights import conv_filters
        return conv_filters(self, self.layer(layer))

    def feature_maps(self, images, layers=None, *, preprocess=None, size=None, raw_conv=False,
                     feeds=None, max_bytes=None) -> dict:
        """``{layer name: float32 (N, C, H, W)}`` for an image or a batch of them.

        ``images`` may also be a ready input tensor (an array of the input's rank), and
        ``feeds={name: array}`` gives the model's other inputs; ``max_bytes`` is the memory
        budget. See :func:`onnxviz.features.feature_maps`.
        """
        from .features import feature_maps
        return feature_maps(self, images, layers, preprocess=preprocess, size=size, raw_conv=raw_conv,
                            feeds=feeds, max_bytes=max_bytes)

    def summary_text(self) -> str:
        """The layer table ``onnxviz summary`` prints: file, input, one row per conv."""
        return summary_text(self.summary())

    def summary(self) -> dict:
        """A JSON-ready description: file, input, preprocessing, and every layer."""
        inp = self.input
        return {
            "path": self.path,
            "producer": f"{self.proto.producer_name} {self.proto.producer_version}".strip(),
            "opset": {o.domain or "ai.onnx": o.version for o in self.proto.opset_import},
            "input": None if inp is None else {
                "name": inp.name, "layout": inp.layout, "shape": list(inp.shape),
                "size": list(inp.size), "size_from": inp.size_from,
            },
            "preprocess": self.metadata.get(META["preprocess"]),
            "metadata": {k: v for k, v in self.metadata.items() if k != META["layer_names"]},
            "layers": [l.as_dict() for l in self.layers],
        }


def format_shape(shape) -> str:
    """``(64, 3, 3, 3)`` → ``64×3×3×3``; ``?`` when unknown."""
    return "×".join(str(d) for d in shape) if shape else "?"


def summary_text(info: dict) -> str:
    """The layer table of :meth:`Model.summary_text`, from a :meth:`Model.summary` dict."""
    lines = [f"model   {info['path']}  ({info['producer'] or 'unknown producer'}, "
             f"opset {info['opset'].get('ai.onnx', '?')})"]
    inp = info["input"]
    if inp and len(inp["shape"]) not in (0, 4):  # a 1-D / 3-D conv net: no images
        lines.append(f"input   {inp['name']}  {inp['shape']}  takes no image: feed an array of this shape")
    elif inp:
        lines.append(f"input   {inp['name']}  {inp['layout']} {inp['shape']}  images → {format_shape(inp['size'])} "
                     f"({inp['size_from']})  preprocess: {info['preprocess'] or 'none given (raw)'}")
    folded = any(l.get("folded") for l in info["layers"])  # the column only when it says something
    rows = [("#", "layer", "op", "filters", "group", "stride", "feature map", "after")
            + (("folded in",) if folded else ())]
    for l in info["layers"]:
        rows.append((str(l["index"]), l["name"], l["op"], format_shape(l["filter_shape"]), str(l["group"]),
                     ",".join(map(str, l["strides"])) or "1", format_shape(l["output_shape"]),
                     l["activation"] or "-") + ((l.get("folded") or "-",) if folded else ()))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def load(path) -> Model:
    """Open ``path`` without reading its weight bytes; raise :class:`ModelError` if unusable.

    >>> m = load("models/demo.onnx")                 # doctest: +SKIP
    >>> m.layers[0].name, m.layers[0].filter_shape   # doctest: +SKIP
    ('block1_conv1', (16, 3, 3, 3))
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ModelError(f"a model path must be a str or os.PathLike, not {type(path).__name__}")
    proto = read_model(path)
    if not proto.HasField("graph") and proto.ir_version > 0:
        raise ModelError(f"'{os.fspath(path)}' is an ONNX model without a graph: nothing to show")
    if not proto.HasField("graph"):
        raise ModelError(f"'{os.fspath(path)}' is not an ONNX model: it has neither a graph nor an IR version "
                         "(a tensor, graph or other protobuf message saved on its own?)")
    if not proto.graph.node:
        raise ModelError(f"'{os.fspath(path)}' has an empty graph: no nodes, so no convolution")
    if proto.ir_version <= 0:
        raise ModelError(f"'{os.fspath(path)}' is not an ONNX model: it has no IR version")
    return Model(proto, path)
