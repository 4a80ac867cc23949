"""The one shape inference: every tensor's dims and type at one input shape, stage by stage.

The layer table (:mod:`onnxviz.model`), ``onnxviz summary``/``check`` and the memory guard
(:mod:`onnxviz.budget`) all size tensors here, through :meth:`onnxviz.model.Model.shapes`
(which caches one :class:`Shapes` per model and input shape):

>>> from onnxviz.graph.shapes import Shapes
>>> s = Shapes(proto, {"input": (1, 3, 224, 224)}, fallbacks=runtime_stages)   # doctest: +SKIP
>>> s.size(["/4/Relu_output_0"])         # what stays unsized after every stage  # doctest: +SKIP
[]
>>> s.dims("/4/Relu_output_0"), s.sized_by["/4/Relu_output_0"]                 # doctest: +SKIP
((1, 64, 56, 56), 'session')

Stages, in order; each sizes only what the ones before left unknown (a tensor is *sized*
when every dim is a whole number):

1. ``onnx``: onnx's shape inference (with data propagation) on a copy whose pinned inputs
   have the given shape and whose exporter ``value_info`` is removed: it was written for the
   exporter's own input size. Models of IR version 3 are inferred as IR 4, which only lifts
   the rule that initializers be listed among the inputs (onnx reads an initializer's shape
   only from IR 4 on, so a converter's IR-3 model whose weights are not inputs would
   otherwise size nothing). Then ``exporter``: the exporter's ``value_info`` is taken for
   tensors inference left unsized, if the pinned inputs have the sizes the model declares
   (an exporter's shapes are for its own input size; a named dim the pinned inputs bind, such
   as a dynamic batch ``N``, is filled in) and it contradicts inference nowhere (one shape
   that does disqualifies all of it); inference then runs once more from them. The backward
   graph (:mod:`onnxviz.graph.backward`) writes every gradient's shape there this way.
2. ``symbolic``, 3. ``session``: the ``fallbacks`` the caller gives (``onnxviz.runtime``'s
   onnxruntime symbolic shape inference, then the shapes an onnxruntime session infers when
   it is built on the model with the unknown tensors as outputs). The graph layer imports no
   onnxruntime: ``fallbacks`` is a callable returning ``[(stage name, stage)]``, called only
   when stage 1 leaves a wanted tensor unsized, and only when every pinned input is fully
   pinned (a dynamic length left open cannot be sized by a session either). A stage takes
   the pinned model (weights as typed inputs: no weight byte is read) and the names to size.

Nothing is ever guessed from a node's inputs: a tensor no stage can size stays unsized, and
the caller says so (see :func:`onnxviz.budget.check_budget`).

Known limits: tensors inside If/Loop/Scan bodies are not sized; a data-dependent dim
(``NonZero``, a ``Reshape`` to a computed shape no stage can follow) stays unsized.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import OnnxvizError
from .index import body_inputs
from .index import dims as value_dims

__all__ = ["Shapes", "is_static"]

def is_static(dims) -> bool:
    """Whether ``dims`` (a tuple, or ``None``) are all whole numbers."""
    return dims is not None and all(isinstance(d, int) and d >= 0 for d in dims)


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    new = onnx.ModelProto()
    new.CopyFrom(model)
    return new


def _set_dims(vi: onnx.ValueInfoProto, dims) -> None:
    shape = vi.type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        if isinstance(d, int):
            shape.dim.add().dim_value = d
        else:
            shape.dim.add().dim_param = str(d)


def _pin(proto: onnx.ModelProto, feeds: dict) -> onnx.ModelProto:
    """A copy with the inputs of ``feeds`` at those dims, no ``value_info``, output shapes
    cleared (their types kept), and IR 4 at least."""
    pinned = _copy(proto)
    graph = pinned.graph
    for vi in graph.input:
        if vi.name in feeds:
            _set_dims(vi, feeds[vi.name])
    del graph.value_info[:]
    for vi in graph.output:
        vi.type.tensor_type.ClearField("shape")
    pinned.ir_version = max(pinned.ir_version, 4)
    return pinned


def _onnx_types(model: onnx.ModelProto) -> dict:
    """``{name: (dims, elem_type)}`` from onnx shape inference: best effort, ``{}`` if it fails."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # onnx raises on graphs it cannot read at all; the next stages try them
        return {}
    graph = inferred.graph
    return {vi.name: (value_dims(vi), vi.type.tensor_type.elem_type)
            for vi in list(graph.input) + list(graph.value_info) + list(graph.output)
            if vi.type.tensor_type.HasField("shape")}


def _exporter_types(proto: onnx.ModelProto, bound: dict) -> dict:
    """The ``value_info`` and output shapes written into ``proto``, with the named dims that the
    pinned inputs bind (``{"N": 1}``: a dynamic batch) filled in."""
    graph = proto.graph
    return {vi.name: (tuple(bound.get(d, d) if isinstance(d, str) else d for d in value_dims(vi)),
                      vi.type.tensor_type.elem_type)
            for vi in list(graph.value_info) + list(graph.output) if vi.type.tensor_type.HasField("shape")}


def _bound_names(declared: dict, feeds: dict) -> dict:
    """``{dim name: size}`` for the named input dims the pinned ``feeds`` give one size each
    (a name given two sizes is bound to neither)."""
    seen: dict = {}
    for name, pinned in feeds.items():
        for d, size in zip(declared.get(name, ()), pinned):
            if isinstance(d, str) and d != "?":
                seen.setdefault(d, set()).add(size)
    return {d: sizes.pop() for d, sizes in seen.items() if len(sizes) == 1}


def _agrees(a: tuple, b: tuple) -> bool:
    """Whether two dims tuples can be the same shape (a name matches any number)."""
    return len(a) == len(b) and all(x == y for x, y in zip(a, b) if isinstance(x, int) and isinstance(y, int))


_CONSTANT_FORMS = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64,
                   "value_ints": np.int64}


def _constant_tensor(node: onnx.NodeProto) -> onnx.TensorProto | None:
    """A ``Constant`` node's value as a tensor named after its output (``None``: sparse, strings)."""
    for a in node.attribute:
        if a.name == "value":
            t = onnx.TensorProto()
            t.CopyFrom(a.t)
            t.name = node.output[0]
            return t
        if a.name in _CONSTANT_FORMS:
            value = onnx.helper.get_attribute_value(a)
            return numpy_helper.from_array(np.array(value, _CONSTANT_FORMS[a.name]), node.output[0])
    return None


def _for_fallbacks(model: onnx.ModelProto, names) -> onnx.ModelProto:
    """What the fallback stages read: only the nodes that compute ``names``; external-data
    initializers as typed graph inputs (their dims are needed, never their bytes, which stay
    in the file); ``Constant`` nodes as initializers (onnxruntime's symbolic inference reads
    only their ``value`` form: torch's ``value_ints`` stopped it at a GroupNorm's first node)."""
    producers = {o: n for n in model.graph.node for o in n.output if o}
    keep, stack = set(), list(names)
    while stack:
        node = producers.get(stack.pop())
        if node is not None and id(node) not in keep:
            keep.add(id(node))
            stack.extend(i for i in list(node.input) + sorted(body_inputs(node)) if i)
    new = _copy(model)
    graph = new.graph
    nodes, inits = [], [t for t in graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL]
    for node, kept in zip(graph.node, [id(n) in keep for n in model.graph.node]):
        constant = _constant_tensor(node) if kept and node.op_type == "Constant" else None
        if constant is not None:
            inits.append(constant)
        elif kept:
            nodes.append(node)
    listed = {i.name for i in graph.input}
    graph.input.extend(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                       for t in graph.initializer
                       if t.data_location == onnx.TensorProto.EXTERNAL and t.name not in listed)
    del graph.node[:], graph.initializer[:], graph.output[:]
    graph.node.extend(nodes)
    graph.initializer.extend(inits)
    graph.output.extend(onnx.ValueInfoProto(name=n) for n in dict.fromkeys(names) if n in producers)
    return new


class Shapes:
    """Tensor dims and element types of ``proto`` with the graph inputs of ``feeds``
    (``{name: dims}``) pinned; stage 1 runs here, the fallbacks in :meth:`size`.

    ``types``: ``{name: (dims, elem_type)}`` (dims may hold names where a dim is unknown);
    ``sized_by``: ``{name: stage}`` for every sized tensor; ``unsized``: names the
    fallbacks were asked for and could not size; ``failure``: the error a stage gave when it
    could not run at all (onnxruntime cannot load the model), else ``''``.
    """

    def __init__(self, proto: onnx.ModelProto, feeds: dict | None = None, fallbacks=None):
        feeds = {k: tuple(v) for k, v in (feeds or {}).items()}
        self._pinned = _pin(proto, feeds)
        self._fallbacks = fallbacks if feeds and all(is_static(d) for d in feeds.values()) else None
        self._produced = {o for n in proto.graph.node for o in n.output if o}
        self.types: dict = {}
        self.sized_by: dict = {}
        self.unsized: set = set()
        self.failure = ""  # why a fallback stage could not run at all, if it said so
        self._merge({vi.name: (value_dims(vi), vi.type.tensor_type.elem_type) for vi in self._pinned.graph.input
                     if vi.type.tensor_type.HasField("shape")}, "input")
        self._merge(_onnx_types(self._pinned), "onnx")
        declared = {vi.name: value_dims(vi) for vi in proto.graph.input}
        same_size = all(is_static(declared.get(k, ())[1:]) and tuple(declared[k][1:]) == v[1:]
                        for k, v in feeds.items())
        trusted = self._trusted(_exporter_types(proto, _bound_names(declared, feeds))) if same_size else {}
        if trusted:
            seeded = _copy(self._pinned)
            for name, (dims, elem) in trusted.items():
                vi = onnx.helper.make_tensor_value_info(name, elem, list(dims))
                seeded.graph.value_info.append(vi)
            self._merge(trusted, "exporter")
            self._merge(_onnx_types(seeded), "onnx")

    def _trusted(self, exporter: dict) -> dict:
        """The exporter's shapes for what inference left unsized, unless one contradicts it."""
        for name, (dims, _) in exporter.items():
            known = self.types.get(name)
            if known is not None and not _agrees(known[0], dims):
                return {}
        return {name: t for name, t in exporter.items() if is_static(t[0]) and not self.sized(name)}

    def _merge(self, found: dict, stage: str) -> None:
        for name, (dims, elem) in found.items():
            dims = tuple(dims)
            old = self.types.get(name)
            if self.sized(name):
                continue
            if old is None or is_static(dims) or len(dims) and not len(old[0]):
                self.types[name] = (dims, elem or (old[1] if old else 0))
            if is_static(dims):
                self.sized_by[name] = stage
                self.unsized.discard(name)

    def sized(self, name: str) -> bool:
        return name in self.sized_by

    def dims(self, name: str):
        """The dims of ``name`` if sized, else ``None``."""
        return self.types[name][0] if self.sized(name) else None

    def get(self, name: str, default=None):
        """Dims as far as known (names for unknown dims), as a mapping would: for
        :func:`onnxviz.graph.chain.feature_tensor`."""
        t = self.types.get(name)
        return t[0] if t is not None else default

    def size(self, names) -> list:
        """Run the fallback stages for those of ``names`` still unsized; return those that stay so."""
        todo = [n for n in dict.fromkeys(names) if n and not self.sized(n) and n not in self.unsized]
        if todo and self._fallbacks is not None:
            model = None
            for stage, run in self._fallbacks():
                todo = [n for n in todo if not self.sized(n)]
                if not todo:
                    break
                model = model if model is not None else _for_fallbacks(self._pinned, todo)
                try:
                    found = run(model, [o.name for o in model.graph.output if not self.sized(o.name)])
                except OnnxvizError as e:  # the stage's own verdict (onnxruntime cannot load it)
                    self.failure, found = self.failure or str(e), {}
                except Exception:  # a fallback is best effort: what it cannot size stays unsized
                    found = {}
                self._merge({k: v for k, v in found.items() if k in set(todo)}, stage)
        self.unsized.update(n for n in todo if not self.sized(n))
        return [n for n in dict.fromkeys(names) if n and not self.sized(n)]

    def counts(self) -> dict:
        """``{stage: node outputs it sized}``, in the order stages sized their first."""
        out: dict = {}
        for name, stage in self.sized_by.items():
            if name in self._produced:
                out[stage] = out.get(stage, 0) + 1
        return out
