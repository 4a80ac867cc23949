"""Typed lookups over a model's main graph, built once: the bottom of the graph layer.

Every other module of :mod:`onnxviz.graph` reads the graph through an :class:`Index` instead
of walking ``graph.node`` again: who makes a tensor, who reads it, which tensors are
initializers, the graph's own inputs and outputs, and each node's position in graph order.

>>> import onnx
>>> from onnxviz.graph.index import Index, node_attr
>>> index = Index(onnx.load("models/demo.onnx").graph, "models")     # doctest: +SKIP
>>> index.producers["block1_conv1/Relu:0"].op_type                    # doctest: +SKIP
'Relu'

Building an index also checks what every later step relies on: each tensor is made once
(not by two nodes, not by a node and an initializer or a graph input), every node has an
output. A graph that breaks those rules raises :class:`~onnxviz.errors.ModelError` here.

Known limits: the index covers the main graph; If/Loop/Scan bodies are read only through
:func:`body_inputs` (the names they use from outside).
"""

from __future__ import annotations

from collections import OrderedDict

import onnx
from onnx import helper

from ..errors import ModelError

__all__ = ["Index", "CONV_OPS", "META", "node_attr", "weight_input", "dims", "body_inputs", "is_conv"]

#: Convolution op types onnxviz treats as layers, by domain.
CONV_OPS = {
    ("", "Conv"), ("", "ConvTranspose"), ("", "QLinearConv"), ("", "ConvInteger"),
    ("com.microsoft", "FusedConv"), ("com.microsoft", "NhwcFusedConv"),
}

#: metadata_props keys onnxviz reads (see :mod:`onnxviz.model`).
META = {
    "preprocess": "onnxviz.preprocess",
    "channel_order": "onnxviz.channel_order",
    "input_size": "onnxviz.input_size",
    "layer_names": "onnxviz.layer_names",
    "labels": "onnxviz.labels",
    "source": "onnxviz.source",
    "weights": "onnxviz.weights",
}


class Index:
    """Typed lookups over ``graph``; ``base_dir`` is where its external data lives, and
    ``opset_import`` the model's (for the sub-graphs :mod:`onnxviz.graph.fold` runs; default:
    the installed onnx's latest)."""

    def __init__(self, graph: onnx.GraphProto, base_dir: str = ".", opset_import=()):
        self.base_dir = base_dir
        self.graph = graph
        self.opset_import = list(opset_import) or [helper.make_opsetid("", onnx.defs.onnx_opset_version())]
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
        self.meta: dict[str, bool] = {}  # chain._is_meta's answers, the same for every conv
        self.folded: OrderedDict = OrderedDict()  # fold.fold's results, oldest first (bounded there)
        self.static: dict | None = None  # fold._static_shapes, inferred when first needed

    def is_constant(self, name: str) -> bool:
        """An initializer or the output of a ``Constant`` node."""
        if name in self.initializers:
            return True
        node = self.producers.get(name)
        return node is not None and node.op_type == "Constant"

    def only_consumer(self, name: str):
        """The one node that reads ``name``, or ``None`` (several, none, or a graph output)."""
        users = self.consumers.get(name, [])
        if len(users) != 1 or name in self.outputs:
            return None
        return users[0]


def is_conv(node: onnx.NodeProto) -> bool:
    """Whether ``node`` is one of :data:`CONV_OPS`."""
    return (node.domain if node.domain != "ai.onnx" else "", node.op_type) in CONV_OPS


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


def dims(value_info) -> tuple:
    """A value info's dims: ints, or the dim's name (``'?'`` when unnamed); ``()`` without a shape."""
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return ()
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim)


def body_inputs(node: onnx.NodeProto) -> set:
    """Names read inside the If/Loop/Scan bodies of ``node``, at any depth."""
    names = set()
    for a in node.attribute:
        for body in ([a.g] if a.HasField("g") else []) + list(a.graphs):
            for inner in body.node:
                names.update(inner.input)
                names |= body_inputs(inner)
    return names
