"""Graph rewrites: pure functions ``ModelProto -> new ModelProto``; the input is never mutated.

* :func:`expose` makes intermediate tensors graph outputs, typed by onnx shape inference.
  A tensor that inference leaves untyped is added as an output with no type: onnxruntime
  infers it when the session is built (that is the "ask a session" fallback, and it is
  cheaper than a trial run).
* :func:`prune` keeps only the nodes the requested outputs need (``onnx.utils.Extractor``),
  so asking for ``block1_conv1`` of VGG16 runs block 1 only. onnxruntime does not prune by
  itself: fetching one output of a session still runs the whole graph.
* :func:`uint8_activations` turns int8 activation QuantizeLinear → DequantizeLinear pairs
  into uint8 ones with the same values, so that exposing a tensor of a QDQ model keeps
  onnxruntime's quantized fusions (``QLinearConv``) on x86.
* :func:`sub_model` is all three, the form :mod:`onnxviz.features` uses.
* :func:`tail` splits a graph at a tensor: the part after it, with that tensor (and what else
  made before it the part reads: :func:`tail_inputs`) as inputs. AblationCAM runs only that part.

>>> sub = sub_model(model_proto, ["block1_conv1/Relu:0"])    # doctest: +SKIP
>>> [o.name for o in sub.graph.output]                      # doctest: +SKIP
['block1_conv1/Relu:0']

Initializers stay as they are (external-data references included): no weight is copied or
written anywhere. Known limit: a tensor that lives inside an If/Loop/Scan body cannot be
exposed and raises :class:`LayerError`.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.utils
from onnx import numpy_helper

from ..errors import LayerError
from .index import body_inputs

__all__ = ["expose", "prune", "uint8_activations", "sub_model", "tail", "tail_inputs"]


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


def _int8_zero_point(node: onnx.NodeProto, initializers: dict) -> onnx.TensorProto | None:
    """The inline int8 zero-point initializer of a QuantizeLinear / DequantizeLinear, or ``None``."""
    if node.domain not in ("", "ai.onnx") or len(node.input) < 3 or \
            any(a.name == "output_dtype" for a in node.attribute):
        return None
    t = initializers.get(node.input[2])
    if t is None or t.data_type != onnx.TensorProto.INT8 or t.data_location == onnx.TensorProto.EXTERNAL:
        return None
    return t


def _subgraph_inputs(graph: onnx.GraphProto) -> set:
    """Names read by nodes inside the If/Loop/Scan bodies of ``graph`` (at any depth)."""
    return set().union(*(body_inputs(node) for node in graph.node))


def uint8_activations(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its int8 activation Q → DQ pairs made uint8: every value stays the same.

    With ``q_u8 = q_s8 + 128`` and every zero point ``+ 128``, each DequantizeLinear gives the
    same float output, bit for bit (and QuantizeLinear saturates at the same values).
    onnxruntime makes this very rewrite itself on x86 (``QDQS8ToU8Transformer``: its fast
    ``QLinearConv`` kernels want uint8 activations), but only where a QuantizeLinear has a
    single consumer. Exposing a layer's DequantizeLinear output gives it a second one
    (onnxruntime copies the DequantizeLinear for the next node), so without this the pair
    stays int8 and that layer and the next run as float ``Conv`` (measured: see BENCHMARKS.md).

    Converted: a ``QuantizeLinear`` with an inline int8 zero-point initializer whose output is
    not a graph output, is not read inside an If/Loop body, and is read only by
    ``DequantizeLinear`` nodes with inline int8 zero-point initializers; the int8 zero points
    nothing reads any more are dropped. Everything else stays as it is; a model with nothing
    to convert is returned as is (not copied).
    """
    graph = model.graph
    if not any(n.op_type == "QuantizeLinear" for n in graph.node):  # a float model: nothing to do
        return model
    inits = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output} | _subgraph_inputs(graph)  # names to leave alone
    consumers: dict[str, list[int]] = {}
    for k, node in enumerate(graph.node):
        for name in node.input:
            if name:
                consumers.setdefault(name, []).append(k)
    plan = []  # (Q node index, [DQ node indices])
    for k, node in enumerate(graph.node):
        if node.op_type != "QuantizeLinear" or _int8_zero_point(node, inits) is None:
            continue
        out = node.output[0]
        users = consumers.get(out, [])
        if out in outputs or not users:
            continue
        if all(graph.node[u].op_type == "DequantizeLinear" and graph.node[u].input[0] == out
               and _int8_zero_point(graph.node[u], inits) is not None for u in users):
            plan.append((k, users))
    if not plan:
        return model
    new = _copy(model)
    taken = {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output} | \
        {i.name for i in graph.input}
    converted: dict[str, str] = {}

    def as_uint8(zp_name: str) -> str:
        if zp_name not in converted:
            name, n = f"{zp_name}_uint8", 0
            while name in taken:
                n += 1
                name = f"{zp_name}_uint8_{n}"
            taken.add(name)
            value = numpy_helper.to_array(inits[zp_name]).astype(np.int16) + 128
            new.graph.initializer.append(numpy_helper.from_array(value.astype(np.uint8), name))
            converted[zp_name] = name
        return converted[zp_name]

    retyped = set()
    for q, users in plan:
        for k in (q, *users):
            node = new.graph.node[k]
            node.input[2] = as_uint8(node.input[2])
        retyped.add(new.graph.node[q].output[0])
    for vi in new.graph.value_info:  # shape inference may have typed the Q outputs int8
        if vi.name in retyped and vi.type.tensor_type.elem_type == onnx.TensorProto.INT8:
            vi.type.tensor_type.elem_type = onnx.TensorProto.UINT8
    used = {i for n in new.graph.node for i in n.input} | outputs | {i.name for i in new.graph.input}
    keep = [t for t in new.graph.initializer if t.name not in converted or t.name in used]
    if len(keep) != len(new.graph.initializer):  # the int8 zero points nothing reads any more
        del new.graph.initializer[:]
        new.graph.initializer.extend(keep)
    return new


def sub_model(model: onnx.ModelProto, names) -> onnx.ModelProto:
    """:func:`expose`, :func:`prune`, :func:`uint8_activations`: the smallest model that
    outputs ``names``, ready for onnxruntime."""
    return uint8_activations(prune(expose(model, names), names))


def _reach(graph: onnx.GraphProto, sources: set) -> set:
    """Every tensor computed from ``sources`` (graph order is topological)."""
    reached = set(sources)
    for node in graph.node:
        if any(i in reached for i in node.input) or (body_inputs(node) & reached):
            reached.update(o for o in node.output if o)
    return reached


def _split(graph: onnx.GraphProto, at: str, outputs) -> tuple[list, list[str]]:
    """``(nodes after the split that outputs need, the tensors made before it they read)``."""
    _check_names(graph, [at, *outputs])
    initializers = {t.name for t in graph.initializer}
    inputs = {i.name for i in graph.input if i.name not in initializers}
    after = _reach(graph, {at})
    varying = _reach(graph, inputs)  # what depends on a graph input: the rest is constant
    for name in outputs:
        if name not in after:
            raise LayerError(f"tensor '{name}' does not depend on tensor '{at}', so nothing after '{at}' "
                             "changes it; choose a tensor it is computed from")
    producers = {o: node for node in graph.node for o in node.output if o}
    keep, others, stack, seen = set(), set(), list(outputs), set()
    while stack:
        name = stack.pop()
        if name in seen or not name or name == at or name in initializers:
            continue
        seen.add(name)
        node = producers.get(name)
        if node is None or (name in varying and name not in after):  # made before the split
            others.add(name)
        elif id(node) not in keep:  # after the split, or constant (a Reshape's shape)
            keep.add(id(node))
            stack.extend(node.input)
            stack.extend(body_inputs(node))
    position = {o: k for k, n in enumerate(graph.node) for o in n.output}
    return ([n for n in graph.node if id(n) in keep],
            sorted(others, key=lambda n: position.get(n, -1)))  # graph inputs first, then graph order


def tail_inputs(model: onnx.ModelProto, at: str, outputs) -> list[str]:
    """The tensors made before ``at`` that computing ``outputs`` from ``at`` also reads (a skip
    connection around it, the image input), in graph order: :func:`tail`'s other inputs."""
    return _split(model.graph, at, list(outputs))[1]


def tail(model: onnx.ModelProto, at: str, outputs, types: dict) -> onnx.ModelProto:
    """The part of ``model`` after tensor ``at``: a new model computing ``outputs`` from ``at``
    and :func:`tail_inputs` (its other inputs, after ``at``). Nodes that depend on no graph
    input (a Reshape's shape computed from constants) come along.

    ``types``: ``{input name: (numpy dtype, shape)}`` for ``at`` and the other inputs; a first
    dim of ``None`` becomes the batch dim ``N``.

    >>> at = "/layer4/layer4.1/relu_1/Relu_output_0"
    >>> part = tail(proto, at, ["logits"], {at: (np.float32, (None, 512, 7, 7))})   # doctest: +SKIP
    >>> [n.op_type for n in part.graph.node]                                         # doctest: +SKIP
    ['GlobalAveragePool', 'Flatten', 'Gemm']
    """
    graph = model.graph
    nodes, others = _split(graph, at, list(outputs))
    new = onnx.ModelProto()
    new.CopyFrom(model)
    g = new.graph
    used = {i for n in nodes for i in n.input} | set().union(set(), *(body_inputs(n) for n in nodes))
    # no value_info: an exporter's may pin a batch the tail does not run at; onnxruntime infers it
    del g.node[:], g.input[:], g.output[:], g.value_info[:], g.initializer[:]
    g.node.extend(nodes)
    for name in [at, *others]:
        dtype, shape = types[name]
        g.input.append(onnx.helper.make_tensor_value_info(
            name, onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype)),
            ["N" if k == 0 and d is None else d for k, d in enumerate(shape)]))
    g.output.extend(onnx.ValueInfoProto(name=o) for o in outputs)
    g.initializer.extend(t for t in graph.initializer if t.name in used)
    if new.ir_version < 4:  # IR < 4 lists initializers among inputs; IR 4 lifts that rule only
        new.ir_version = 4
    return new
