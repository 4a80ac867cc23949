"""The feature-map rule: where a conv layer's feature map is, after its bias, norm and activation.

A layer's *feature map* is the tensor after its activation. From the conv output the chain
goes region by region, each the smallest set of elementwise nodes (constants, QDQ pairs,
normalisations and a ``Reshape`` that is undone included) after which the values flow on
through one tensor again: a bias ``Add``/``Mul``/``Sub``/``Div`` with a constant,
``BatchNormalization``/``InstanceNormalization``, GroupNorm (``Reshape → InstanceNormalization
→ Reshape``, its shape from ``Shape(x)`` or a constant), then one activation — an op
(``Relu``, ``Clip``, ``Gelu``, ``Mish``, …) or an expression of the tensor that converges
again (``x * Sigmoid(x)``, TorchScript's ``x·(1+erf(x/√2))·0.5`` and ``x·tanh(softplus(x))``).
The activation is named: ``Relu``, ``x*Sigmoid(x)``, ``Gelu``, ``GroupNorm+Relu``, ….
Reading only a tensor's shape or type (``Shape``, ``CastLike``) is no use of it; any other
consumer that cannot join — a conv, pooling, ``Concat``, a residual ``Add`` or a gate ``Mul``
whose other input is computed elsewhere, a fan-out that does not converge within 16 nodes —
ends the chain.

>>> from onnxviz.graph.chain import feature_tensor
>>> feature_tensor(index, "block1_conv1/BiasAdd:0")       # doctest: +SKIP
('block1_conv1/Relu:0', 'Relu')

Quantized convs (``onnxruntime.quantization``): a ``QLinearConv``'s feature map is its own
quantized output (through a ``QLinearLeakyRelu``/``QLinearSigmoid`` and a ``DequantizeLinear``
where present); a ``ConvInteger``'s chain starts after its ``Cast → Mul`` by the scales
(:func:`convinteger_scaling`). See the table in :mod:`onnxviz.model`.

Known limits: a region is at most 16 nodes and a chain 32 regions; an activation written
out in more nodes than that ends the chain before it.
"""

from __future__ import annotations

import onnx

from .index import Index, node_attr

__all__ = ["feature_tensor", "convinteger_scaling", "follow_qdq", "QLINEAR_ACTIVATIONS"]

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
# onnxruntime's fused convs name their activation in an attribute: FusedConv(activation="Relu")
# (a ResNet18 saved at the "extended" optimisation level); the chain then passes no norm after it.
_FUSED = {"FusedConv", "NhwcFusedConv"}
_REGION_LIMIT = 16   # nodes in one region of the chain (a decomposed GELU is 5, tanh-GELU 8)
_CHAIN_LIMIT = 32    # regions in one chain


def follow_qdq(index: Index, name: str) -> str:
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


def convinteger_scaling(index: Index, conv_output: str):
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


def _follow_qlinear(index: Index, name: str) -> tuple[str, str]:
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


def _is_meta(index: Index, name: str, depth: int = 0) -> bool:
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


def _value_users(index: Index, name: str) -> list:
    """The nodes that read ``name``'s values: not ``Shape``/``Size`` of it, nor a ``CastLike``
    to its type."""
    users = []
    for node in index.consumers.get(name, []):
        if node.op_type in ("Shape", "Size") or (node.op_type == "CastLike" and node.input[0] != name):
            continue
        if all(node is not u for u in users):
            users.append(node)
    return users


def _same_shape(index: Index, entry: str, end: str, shapes: dict | None) -> bool:
    """Whether ``end`` has ``entry``'s shape: ``Reshape(·, Shape(entry))``, or by inference
    (the batch aside: inference runs at batch 1, a static export may say otherwise)."""
    node = index.producers[end]
    shape_of = index.producers.get(node.input[1]) if node.op_type == "Reshape" and len(node.input) > 1 else None
    if shape_of is not None and shape_of.op_type == "Shape" and shape_of.input[0] == entry \
            and node_attr(shape_of, "start", 0) == 0 and node_attr(shape_of, "end") is None:
        return True
    a, b = (shapes or {}).get(entry), (shapes or {}).get(end)
    return bool(a) and bool(b) and len(a) == len(b) and tuple(a[1:]) == tuple(b[1:])


def _region(index: Index, entry: str, shapes: dict | None):
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


def _describe(index: Index, entry: str, nodes: list) -> tuple[str, str]:
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


def _is_scalar(index: Index, name: str, depth: int = 0) -> bool:
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


def feature_tensor(index: Index, conv_output: str, shapes: dict | None = None) -> tuple[str, str]:
    """``(tensor, activation)``: where the layer's feature map is, following the chain.

    From the conv output, region by region (see :func:`_region`): any number of affine ones
    (bias, scale, BatchNorm, InstanceNorm, GroupNorm written as ``Reshape → InstanceNorm →
    Reshape``, QDQ pairs), then one activation region — a single op, or an elementwise
    expression of the tensor that converges again (TorchScript's ``x·(1+erf(x/√2))``, ``x ·
    tanh(softplus(x))``, ``x·sigmoid(x)``) — and any ``Mul``/``Div`` by a scalar constant right
    after it (the ``·0.5`` of TorchScript's GELU). ``activation`` names what was passed:
    ``Relu``, ``x*Sigmoid(x)``, ``Gelu``, ``GroupNorm+Relu``, … or ``''``; a ``FusedConv``'s
    own ``activation`` attribute comes first (``Relu``), and only scales may follow it. ``shapes`` (from
    :class:`onnxviz.graph.shapes.Shapes`) lets a region through a ``Reshape`` end where a constant shape undoes it.

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
    fused = node_attr(producer, "activation", b"") if producer is not None and producer.op_type in _FUSED else b""
    fused = fused.decode() if isinstance(fused, bytes) else str(fused)
    names, activated = [fused] if fused else [], bool(fused)
    for _ in range(_CHAIN_LIMIT):
        region = _region(index, cur, shapes)
        if region is None:  # equal QDQ pairs, one per consumer, that do not converge: the first
            if follow_qdq(index, cur) == cur:
                break
            cur = follow_qdq(index, cur)
            continue
        kind, name = _describe(index, cur, region[1])
        if activated and kind not in ("pass", "scale"):
            break
        activated = activated or kind == "activation"
        if name:
            names.append(name)
        cur = region[0]
    return follow_qdq(index, cur), "+".join(names)

