"""The reverse-mode gradient builder: an ONNX graph that computes an objective and its gradients.

onnxruntime's CPU package has no autodiff, so the gradient is written as ONNX: the forward
graph (pruned to what the objective needs), the objective, and one backward rule per op on
the path, run in one onnxruntime session.

>>> from onnxviz.graph.backward import Term, build
>>> g = build(proto, [Term("score", "logits")], ["input_image"],
...           shapes={"input_image": ("N", 224, 224, 3)})              # doctest: +SKIP
>>> g.seeds, g.objective, g.grads                                       # doctest: +SKIP
(('onnxviz_seed_0',), 'onnxviz_objective', {'input_image': 'onnxviz_grad_0'})

**Objective.** Per batch item ``n``, a sum over the terms, each weighted by its seed input
(fed at run time, so batch items may have different objectives, and the session does not
change with the class or channel):

* ``Term("score", T)``: ``Σ_k seed[n, k] · T[n].flatten()[k]`` — a one-hot seed is the class
  score ``T[n, c]`` (``T``: the logits, see :func:`onnxviz.graph.score.class_score_tensor`);
* ``Term("channel", T, border=b)``: ``Σ_c seed[n, c] · mean(T[n, c, b:-b, b:-b])`` — a one-hot
  seed is the mean activation of channel ``c`` away from a ``b``-pixel border. With ``one=True``
  (a promise: one nonzero per seed row) a conv's channel is computed alone
  (:mod:`onnxviz.graph.restrict`).

**Gradient.** Only the nodes between a ``wrt`` tensor and the objective are differentiated;
weights and other constant sub-expressions are not (no weight gradients). Each op's rule is
in :data:`RULES` (one small function per op, with the example it was made for); an op on
the path without one, a tensor that does not reach the objective, or a weight input on the
path is a one-line :class:`~onnxviz.errors.GradientError` (an ``UnsupportedModelError``) / :class:`LayerError`.
``guided=True`` applies guided backprop's ReLU rule (only positive gradients, through
positive inputs). ``shared_ties=True`` lets 2×2 MaxPools share the gradient evenly between
tied maxima instead of giving it to the first (torch's and TF's choice), which keeps their
gradient in onnxruntime's blocked layout: for callers whose inputs make ties a rounding
accident (gradient ascent from noise). Gradients are computed in the model's own float type (float16 too).

**Quantized models.** ``QuantizeLinear``/``DequantizeLinear`` pass the gradient straight
through (the rounding has none), except where a value falls outside the QuantizeLinear's
integer range (the clipped straight-through estimator, as torch's fake-quantize backward: a
ReLU that the quantizer folded into a range starting at 0 still masks the gradient):
:attr:`GradGraph.quantized` says so, for a warning.
``QLinearConv``/``ConvInteger`` (QOperator and dynamic quantization) have no rule: their
graphs hold no float conv to differentiate, and the error says to use a QDQ or float model.

**Opset.** The backward ops need opset 16 (``ScatterElements`` summing repeats, for
``MaxPool``): older models are converted with ``onnx.version_converter`` first.

Known limits: rules need static spatial dims (the builder infers shapes at the given input
shape; the batch may stay symbolic); If/Loop bodies are not differentiated.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import onnx
from onnx import helper

from ..errors import GradientError, LayerError, listing
from . import rules_layers, rules_pointwise, rules_shape
from .emit import PREFIX, Emitter
from .index import Index, body_inputs
from .restrict import one_channel

__all__ = ["Term", "GradGraph", "build", "RULES", "MIN_OPSET"]

MIN_OPSET = 16
OBJECTIVE = "onnxviz_objective"

#: The backward rules, one per op: ``(domain, op_type) → Rule``.
RULES = {**rules_pointwise.RULES, **rules_layers.RULES, **rules_shape.RULES}

#: What to say when an op without a rule is one of these.
_HINTS = {
    "QLinearConv": "a QOperator-quantized model; gradients pass straight through QDQ models only: "
                   "quantize with quant_format=QuantFormat.QDQ, or use the float model",
    "ConvInteger": "a dynamically quantized model; gradients pass straight through QDQ models only: "
                   "quantize statically with quant_format=QuantFormat.QDQ, or use the float model",
}
_HINTS["DynamicQuantizeLinear"] = _HINTS["ConvInteger"]
_HINTS["QLinearMatMul"] = _HINTS["QLinearConv"]


@dataclass(frozen=True)
class Term:
    """One term of the objective: ``kind`` ``"score"`` or ``"channel"`` of tensor ``tensor``.

    ``one``: each seed row has at most one nonzero (one channel per item, as patterns' loop):
    the channel's conv may be computed for that channel alone (:mod:`onnxviz.graph.restrict`).
    """

    kind: str
    tensor: str
    border: int = 0
    one: bool = False


@dataclass(frozen=True)
class GradGraph:
    """A built backward graph and the names a caller feeds and fetches."""

    model: onnx.ModelProto
    objective: str                     # output (N,): the objective of each batch item
    seeds: tuple                       # one input per term, (N, sizes[t]) in the tensor's float type
    grads: dict                        # wrt tensor → output name of its gradient
    sizes: tuple                       # per term: classes (score) or channels (channel); None unknown
    fetched: tuple = ()                # forward tensors also output (under their own names)
    values: tuple = ()                 # per term, the output (N,) of its own value
    quantized: bool = False            # QuantizeLinear/DequantizeLinear passed straight through
    path_ops: tuple = field(default=())  # op types differentiated, for the record


def _key(node) -> tuple:
    return ("" if node.domain in ("", "ai.onnx") else node.domain, node.op_type)


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _at_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` at opset :data:`MIN_OPSET` or later."""
    version = _opset(model)
    if version >= MIN_OPSET:
        new = onnx.ModelProto()
        new.CopyFrom(model)
        return new
    try:
        from onnx import version_converter
        return version_converter.convert_version(model, MIN_OPSET)
    except Exception as e:
        raise GradientError(
            f"gradients need opset {MIN_OPSET} or later; the model is opset {version} and onnx's version "
            f"converter failed on it: {' '.join(str(e).split())[:200]}") from None


def _pin_inputs(graph: onnx.GraphProto, shapes: dict) -> None:
    for vi in graph.input:
        if vi.name in shapes:
            dims = vi.type.tensor_type.shape
            del dims.dim[:]
            for d in shapes[vi.name]:
                if isinstance(d, int) and d >= 0:
                    dims.dim.add().dim_value = d
                else:
                    dims.dim.add().dim_param = str(d) if d is not None else "N"


def _infer(model: onnx.ModelProto, known: dict | None = None) -> dict:
    """``{tensor: (dims, elem_type)}``; dims ``None`` where the rank is unknown. ``known``:
    types found otherwise (a probe run), given to inference so that it goes on after them."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.value_info[:], probe.graph.output[:]  # a declared output without a shape stops inference
    if known:  # nodes whose outputs are known are left out: inference may not know their ops
        keep = [n for n in probe.graph.node if not all(o in known for o in n.output if o)]
        del probe.graph.node[:]
        probe.graph.node.extend(keep)
        probe.graph.input.extend(helper.make_tensor_value_info(name, elem, list(dims) if dims is not None else None)
                                 for name, (dims, elem) in known.items())
    try:
        probe = onnx.shape_inference.infer_shapes(probe, strict_mode=False, data_prop=True)
    except Exception:  # best effort: rules that need a shape say so
        pass
    types = {}
    for vi in list(probe.graph.value_info) + list(probe.graph.output) + list(probe.graph.input):
        t = vi.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                     for d in t.shape.dim) if t.HasField("shape") else None
        types[vi.name] = (dims, t.elem_type)
    for init in model.graph.initializer:
        types[init.name] = (tuple(init.dims), init.data_type)
    return types


def _objective(e: Emitter, terms, types_before: dict, index: Index) -> tuple[list[str], list[str]]:
    """Append the objective's nodes; return (seed input names, per-term values)."""
    seeds, values = [], []
    for k, term in enumerate(terms):
        seed = f"onnxviz_seed_{k}"
        weight = seed
        if term.kind == "score":
            x = e.op("Flatten", [term.tensor], axis=1)
        elif term.kind == "channel":
            dims = types_before.get(term.tensor, (None, 0))[0]
            if dims is not None and len(dims) < 3:
                raise LayerError(f"a channel objective needs an (N, C, H, W) tensor; '{term.tensor}' has "
                                 f"shape {list(dims)}")
            rank = len(dims) if dims is not None else 4
            x, axes = term.tensor, list(range(2, rank))
            picked = one_channel(e, index, term.tensor, seed) if term.one else None
            if picked is not None:
                x, weight = picked
            if term.border:
                b = int(term.border)
                x = e.op("Slice", [x, e.ints([b] * len(axes)), e.ints([-b] * len(axes)), e.ints(axes)])
            x = e.reduce("ReduceMean", x, axes, keepdims=0)
        else:
            raise ValueError(f"unknown objective term kind {term.kind!r}")
        # the weight laid out as x (Shape(x): the same symbolic dims), so that inference gives the
        # product x's own dims, and its gradient needs no broadcast axes found at run time (an
        # exporter's Reshape can rename the batch dim: dynamo's view before a Linear head)
        weight_like = e.op("Reshape", [weight, e.shape(x)])
        values.append(e.reduce("ReduceSum", e.op("Mul", [x, weight_like]), [1], keepdims=0))
        seeds.append(seed)
    return seeds, values


def _route(graph_nodes, start: str, node, live: set, goal: str, via: str = "") -> str:
    """``'x' → Conv 'c1' → TopK 't' → … → objective``: a shortest chain through ``node`` (and
    through the node that makes its input ``via``, when given)."""
    producers = {o: n for n in graph_nodes for o in n.output if o}
    consumers: dict = {}
    for n in graph_nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def chain(src: str, stop) -> list | None:
        seen, queue = {src: None}, deque([src])
        while queue:
            t = queue.popleft()
            for n in consumers.get(t, []):
                if stop(n):
                    back, cur = [n], t
                    while seen[cur] is not None:
                        back.append(seen[cur])
                        cur = seen[cur].input[[i in seen for i in seen[cur].input].index(True)]
                    return back[::-1]
                for o in n.output:
                    if o in live and o not in seen:
                        seen[o] = n
                        queue.append(o)
        return None

    maker = producers.get(via)
    head = (chain(start, lambda n: n is maker) + [node]) if maker is not None and chain(start, lambda n: n is maker) \
        else (chain(start, lambda n: n is node) or [node])
    tail = next((c for c in (chain(o, lambda n: goal in n.output) for o in node.output if o in live) if c), [])
    steps = [f"{n.op_type} '{n.name}'" for n in head + [n for n in tail if n is not node]
             if not n.name.startswith(PREFIX)]
    if len(steps) > 8:
        steps = steps[:4] + ["…"] + steps[-3:]
    return " → ".join([f"'{start}'"] + steps + ["objective"])


def _reach(graph_nodes, start: str, carries) -> set:
    """Tensors that depend on ``start`` through outputs that carry a gradient (graph order)."""
    found = {start}
    for node in graph_nodes:
        skip = getattr(RULES.get(_key(node)), "type_only", ())
        if any(i in found for k, i in enumerate(node.input) if i and k not in skip):
            found.update([o for k, o in enumerate(node.output) if o and carries(node, k, found)])
    return found


def _needed(graph_nodes, outputs) -> list:
    """The nodes that ``outputs`` need, in graph order (If/Loop bodies' outer names included)."""
    producers = {o: n for n in graph_nodes for o in n.output if o}
    keep, stack = set(), list(outputs)
    while stack:
        n = producers.get(stack.pop())
        if n is None or id(n) in keep:
            continue
        keep.add(id(n))
        stack.extend(i for i in list(n.input) + sorted(body_inputs(n)) if i)
    return [n for n in graph_nodes if id(n) in keep]


def build(model: onnx.ModelProto, terms, wrt, *, shapes: dict | None = None, fetch=(),
          guided: bool = False, shared_ties: bool = False, base_dir: str = ".", probe=None) -> GradGraph:
    """A new model computing the objective of ``terms`` and its gradient at each of ``wrt``.

    ``shapes``: ``{graph input: dims}`` to infer shapes at (a string for a symbolic batch);
    ``fetch``: forward tensors to output too; ``guided``: guided-backprop ReLUs; ``shared_ties``:
    see the module docstring;
    ``base_dir``: where the model's external data is (for constant ``Slice``/``Pad`` inputs).
    ``probe``: ``fn(tensors) -> {tensor: (dims, elem_type)}``, asked for the tensors the
    objective needs that onnx's shape inference cannot type (after an op it does not know,
    such as onnxruntime's ``FusedConv``); :mod:`onnxviz.explain.gradients` runs the model for
    them. ``model`` is never modified.
    """
    terms, wrt, fetch = tuple(terms), list(dict.fromkeys(wrt)), tuple(dict.fromkeys(fetch))
    if not terms:
        raise ValueError("an objective needs at least one term")
    proto = _at_opset(model)
    _pin_inputs(proto.graph, shapes or {})
    _check_names(proto.graph, [t.tensor for t in terms] + wrt + list(fetch))
    e = Emitter(None, {}, _opset(proto), guided=guided, shared_ties=shared_ties)
    known = _probed(proto, terms, probe)
    e.types.update(_infer(proto, known))
    seeds, values, sizes = _append_objective(e, proto, terms, dict(e.types), Index(proto.graph, base_dir))
    e.types.update(_infer(proto, known))
    e.index = Index(proto.graph, base_dir)
    nodes = list(proto.graph.node)
    reached, live, path = _path(e, nodes, terms, wrt)
    _check_rules(nodes, path, reached, live, wrt)
    prepared = {id(n): RULES[_key(n)].prepare(e, n) for n in path if RULES[_key(n)].prepare is not None}
    grads = _sweep(e, path, prepared, live)
    outputs = {}
    for k, w in enumerate(wrt):
        out = f"onnxviz_grad_{k}"
        e.nodes.append(helper.make_node("Identity", [_total(e, grads.get(w), w)], [out], name=PREFIX + out))
        outputs[w] = out
    new = _assemble(proto, e, [prepared.get(id(n), n) for n in nodes] + e.nodes,
                    [OBJECTIVE, *values, *outputs.values(), *fetch], {out: w for w, out in outputs.items()})
    ops = {n.op_type for n in path}
    return GradGraph(new, OBJECTIVE, seeds, outputs, sizes, fetch, values,
                     quantized=bool(ops & {"QuantizeLinear", "DequantizeLinear"}), path_ops=tuple(sorted(ops)))


def _check_names(graph: onnx.GraphProto, names) -> None:
    known = {o for n in graph.node for o in n.output if o} | {i.name for i in graph.input}
    for name in names:
        if name not in known:
            raise LayerError(f"tensor '{name}' is neither a graph input nor the output of a node of the "
                             "main graph")


def _probed(proto: onnx.ModelProto, terms, probe) -> dict:
    """Types the probe found for the tensors the objective needs that inference leaves untyped."""
    before = _infer(proto)
    untyped = [t for n in _needed(list(proto.graph.node), [t.tensor for t in terms]) for t in n.output
               if t and (before.get(t, (None, 0))[0] is None or not before[t][1])]
    return probe(list(dict.fromkeys(untyped))) if untyped and probe is not None else {}


def _append_objective(e: Emitter, proto: onnx.ModelProto, terms, types: dict, index: Index) -> tuple:
    """The objective's nodes and seed inputs, appended to ``proto``; ``(seeds, per-term value
    outputs, sizes)``."""
    graph = proto.graph
    sizes = _sizes(terms, types)
    _check_borders(terms, types)
    seeds, values = _objective(e, terms, types, index)
    total = values[0] if len(values) == 1 else e.op("Sum", values)
    e.nodes.append(helper.make_node("Identity", [total], [OBJECTIVE], name=PREFIX + "objective"))
    outputs = tuple(f"onnxviz_term_{k}" for k in range(len(terms))) if len(terms) > 1 else (OBJECTIVE,)
    if len(terms) > 1:
        e.nodes.extend(helper.make_node("Identity", [v], [o], name=PREFIX + o) for v, o in zip(values, outputs))
    for seed, term, size in zip(seeds, terms, sizes):  # a seed is (batch, the term's size)
        elem = types.get(term.tensor, (None, 0))[1]
        if not elem:
            raise GradientError(f"the element type of '{term.tensor}' is unknown (shape inference could "
                                        "not type it)")
        graph.input.append(helper.make_tensor_value_info(seed, elem, ["N", size]))
    graph.node.extend(e.nodes)
    graph.initializer.extend(e.initializers)
    e.nodes, e.initializers = [], []
    return tuple(seeds), outputs, sizes


def _path(e: Emitter, nodes, terms, wrt) -> tuple:
    """``(tensors reached from each wrt, the live tensors, the nodes to differentiate)``."""
    def carries(node, k: int, found: set) -> bool:
        rule = RULES.get(_key(node))
        if rule is not None and rule.outputs is not None:
            return k in rule.outputs
        if e.is_float(node.output[k]):
            return True
        if rule is None:  # a quantized op: its integers are the values
            return node.op_type in _HINTS or node.op_type.startswith(("QLinear", "QGemm"))
        x = node.input[0] if node.input else ""
        return x in found and not e.is_float(x)  # integers of a quantized tensor moved (Flatten, MaxPool)

    reached = {}
    needed = _needed(nodes, [OBJECTIVE])
    for w in wrt:
        reached[w] = _reach(nodes, w, carries)
        if OBJECTIVE not in reached[w]:
            reads = {i for n in needed for i in list(n.input) + sorted(body_inputs(n))}
            what = (f"reaches the objective ({_describe(terms)}) only through values that carry no gradient "
                    "(shapes, comparisons, indices)" if w in reads else
                    f"does not reach the objective ({_describe(terms)})")
            raise LayerError(f"tensor '{w}' {what}; differentiate with respect to a tensor the objective is "
                             "computed from")
    behind = {o for n in needed for o in n.output if o} | set(wrt) | {OBJECTIVE}
    live = set().union(*reached.values()) & behind
    path = [n for n in nodes if any(o in live for o in n.output if o) and
            any(i in live for k, i in enumerate(n.input) if i and k not in getattr(RULES.get(_key(n)), "type_only", ()))]
    return reached, live, path


def _check_rules(nodes, path, reached, live, wrt) -> None:
    """Every node on the path has a rule, for every input of it on the path."""
    for node in path:
        rule = RULES.get(_key(node))
        start = next(w for w in wrt if any(o in reached[w] for o in node.output))
        if rule is None:
            hint = _HINTS.get(node.op_type)
            raise GradientError(
                f"no gradient rule for {node.op_type} node '{node.name}' on the path "
                f"{_route(nodes, start, node, live, OBJECTIVE)}" + (f": {hint}" if hint else
                f"; ops with a rule: {listing(sorted({op for _, op in RULES}), 80)}"))
        for k, name in enumerate(node.input):
            if name in live and rule.inputs is not None and k not in rule.inputs + rule.type_only:
                raise GradientError(
                    f"the gradient of {node.op_type} '{node.name}' with respect to its input {k} ('{name}') is "
                    f"not supported (only input {', '.join(map(str, rule.inputs))}: weights are constants), and "
                    f"that input is on the path {_route(nodes, start, node, live, OBJECTIVE, via=name)}")


def _sweep(e: Emitter, path, prepared: dict, live: set) -> dict:
    """The reverse sweep: ``{tensor: [gradient contributions]}``, seeded with 1 at the objective."""
    one = helper.make_tensor("one", e.elem(OBJECTIVE), [1], [1.0])
    grads: dict[str, list] = {OBJECTIVE: [e.op("ConstantOfShape", [e.shape(OBJECTIVE)], value=one,
                                              elem=e.elem(OBJECTIVE))]}
    for node in reversed(path):
        node = prepared.get(id(node), node)
        dy = [_total(e, grads.get(o), o) if o in live else None for o in node.output]
        if all(d is None for d in dy):
            continue
        for k, dx in enumerate(RULES[_key(node)].fn(e, node, dy)):
            name = node.input[k] if k < len(node.input) else ""
            if dx is not None and name in live:
                grads.setdefault(name, []).append(e.typed(dx, name))
    return grads


def _assemble(proto: onnx.ModelProto, e: Emitter, nodes, wanted, typed_as: dict) -> onnx.ModelProto:
    """A new model: the nodes, initializers and inputs that ``wanted`` needs, and those outputs."""
    wanted = list(dict.fromkeys(wanted))
    kept = _needed(nodes, wanted)
    used = {i for n in kept for i in list(n.input) + sorted(body_inputs(n))}
    new = onnx.ModelProto()
    new.CopyFrom(proto)
    g = new.graph
    del g.node[:], g.output[:], g.value_info[:], g.initializer[:], g.input[:]
    g.node.extend(kept)
    g.initializer.extend(t for t in list(proto.graph.initializer) + e.initializers if t.name in used)
    g.input.extend(i for i in proto.graph.input if i.name in used or i.name in wanted)
    for name in wanted:  # a gradient has its tensor's type
        elem = e.types.get(typed_as.get(name, name), (None, 0))[1] or e.elem(OBJECTIVE)
        g.output.append(helper.make_tensor_value_info(name, elem, None))
    made = {o for n in kept for o in n.output} - set(wanted)
    for name in sorted((e.gradients | e.shaped) & made):  # their shapes: onnxruntime's layout passes, the guard
        dims, elem = e.types[name]
        if dims is not None and elem:
            g.value_info.append(helper.make_tensor_value_info(name, elem, list(dims)))
    if new.ir_version < 8:
        new.ir_version = 8
    return new


def _describe(terms) -> str:
    return " + ".join(f"{t.kind} of '{t.tensor}'" for t in terms)


def _sizes(terms, types) -> tuple:
    sizes = []
    for t in terms:
        dims = types.get(t.tensor, (None, 0))[0]
        tail = dims[1:] if dims and t.kind == "score" else (dims[1:2] if dims else None)
        ok = tail is not None and all(isinstance(d, int) and d > 0 for d in tail)
        size = 1
        for d in tail or ():
            size *= d if isinstance(d, int) else 1
        sizes.append(size if ok else None)
    return tuple(sizes)


def _check_borders(terms, types) -> None:
    for t in terms:
        dims = types.get(t.tensor, (None, 0))[0]
        spatial = [d for d in (dims or ())[2:] if isinstance(d, int)]
        if t.kind == "channel" and t.border and spatial and min(spatial) <= 2 * t.border:
            raise LayerError(f"a border of {t.border} pixels leaves nothing of the "
                             f"{'×'.join(map(str, dims[2:]))} maps of '{t.tensor}'; the border can be at most "
                             f"{(min(spatial) - 1) // 2}")


def _total(e: Emitter, parts, like: str):
    """The sum of a tensor's gradient contributions (``None``: none)."""
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else e.typed(e.op("Sum", parts), like)
