"""Graph rewrites: pure functions ``ModelProto -> new ModelProto``; the input is never mutated.

* :func:`expose` makes intermediate tensors graph outputs, typed by onnx shape inference.
  A tensor that inference leaves untyped is added as an output with no type: onnxruntime
  infers it when the session is built (that is the "ask a session" fallback, and it is
  cheaper than a trial run).
* :func:`prune` keeps only the nodes the requested outputs need (``onnx.utils.Extractor``),
  so asking for ``block1_conv1`` of VGG16 runs block 1 only. onnxruntime does not prune by
  itself: fetching one output of a session still runs the whole graph.
* :func:`sub_model` is both, the form :mod:`onnxviz.features` uses.

>>> sub = sub_model(model_proto, ["block1_conv1/Relu:0"])    # doctest: +SKIP
>>> [o.name for o in sub.graph.output]                      # doctest: +SKIP
['block1_conv1/Relu:0']

Initializers stay as they are (external-data references included): no weight is copied or
written anywhere. Known limit: a tensor that lives inside an If/Loop/Scan body cannot be
exposed and raises :class:`LayerError`.
"""

from __future__ import annotations

import onnx
import onnx.utils

from .errors import LayerError

__all__ = ["expose", "prune", "sub_model"]


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    new = onnx.ModelProto()
    new.CopyFrom(model)
    return new


def _subgraph_owner(graph: onnx.GraphProto, name: str) -> onnx.NodeProto | None:
    """The top-level node whose If/Loop/Scan body produces ``name``, if any."""
    def produces(g: onnx.GraphProto) -> bool:
        for node in g.node:
            if name in node.output:
                return True
            for a in node.attribute:
                subs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
                if any(produces(s) for s in subs):
                    return True
        return False

    for node in graph.node:
        for a in node.attribute:
            subs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
            if any(produces(s) for s in subs):
                return node
    return None


def _check_names(graph: onnx.GraphProto, names) -> None:
    known = {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    for name in names:
        if name in known:
            continue
        owner = _subgraph_owner(graph, name)
        if owner is not None:
            raise LayerError(
                f"tensor '{name}' is inside the body of {owner.op_type} node '{owner.name}'; "
                "only tensors of the main graph can be exposed"
            )
        raise LayerError(f"tensor '{name}' is not produced by any node of the main graph")


def expose(model: onnx.ModelProto, names) -> onnx.ModelProto:
    """A copy of ``model`` whose graph outputs also include ``names`` (typed where known)."""
    names = list(dict.fromkeys(names))
    _check_names(model.graph, names)
    new = _copy(model)
    existing = {o.name for o in new.graph.output}
    wanted = [n for n in names if n not in existing]
    if not wanted:
        return new
    try:
        inferred = onnx.shape_inference.infer_shapes(new, strict_mode=False)
        typed = {vi.name: vi for vi in inferred.graph.value_info}
    except Exception:  # inference is best effort; onnxruntime types what is left
        typed = {}
    for name in wanted:
        vi = typed.get(name)
        if vi is not None and vi.type.tensor_type.elem_type:
            new.graph.output.append(vi)
        else:
            new.graph.output.append(onnx.ValueInfoProto(name=name))
    return new


def prune(model: onnx.ModelProto, outputs) -> onnx.ModelProto:
    """A new model computing only ``outputs`` (which must already be graph outputs)."""
    outputs = list(dict.fromkeys(outputs))
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in initializers]
    try:
        sub = onnx.utils.Extractor(model).extract_model(inputs, outputs)
    except ValueError:
        # Extractor refuses sparse initializers and quantization annotations: keep all nodes.
        sub = _copy(model)
        keep = [o for o in sub.graph.output if o.name in outputs]
        del sub.graph.output[:]
        sub.graph.output.extend(keep)
        return sub
    used = {i for n in sub.graph.node for i in n.input} | set(outputs)
    keep = [i for i in sub.graph.input if i.name in used]
    del sub.graph.input[:]
    sub.graph.input.extend(keep)
    sub.metadata_props.extend(model.metadata_props)
    if sub.ir_version < 4:
        # IR < 4 wants every initializer listed among the inputs, which Extractor drops;
        # IR 4 only lifts that rule, so the pruned graph means the same.
        sub.ir_version = 4
    return sub


def sub_model(model: onnx.ModelProto, names) -> onnx.ModelProto:
    """:func:`expose` then :func:`prune`: the smallest model that outputs ``names``."""
    return prune(expose(model, names), names)
