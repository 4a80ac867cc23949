"""Fold a tensor computed from constants alone: once, by onnx's reference evaluator, bounded.

Some exporters compute weights in the graph instead of storing them: the ONNX Model Zoo's
Caffe2 classics fill every weight with ``ConstantOfShape``; others ``Expand``, ``Tile``,
``Concat``, ``Range``, ``Gather``, ``Slice`` or do arithmetic on constants, or read the
``Shape`` of a tensor whose shape is static. :func:`fold` extracts the sub-graph that makes
one tensor (back to initializers, ``Constant`` nodes and static shapes), sizes every tensor
in it with onnx's shape inference *before* running anything, refuses the fold if they would
take more than :data:`MAX_FOLD_BYTES`, and runs it with :class:`onnx.reference.ReferenceEvaluator`.
The result is kept in the :class:`~onnxviz.graph.index.Index` (up to :data:`CACHE_BYTES`), so
a weight is folded once however often it is asked for.

>>> import onnxviz
>>> from onnxviz.graph.fold import fold, runtime_dependency
>>> from onnxviz.graph.weights import read_tensor
>>> m = onnxviz.load(".../onnx/backend/test/data/light/light_vgg19.onnx")     # doctest: +SKIP
>>> read = lambda t: read_tensor(m._index.initializers[t], m._index.base_dir)   # doctest: +SKIP
>>> fold(m._index, "conv1_1_w_0", read).shape     # ConstantOfShape(conv1_1_w_0__SHAPE)  # doctest: +SKIP
(64, 3, 3, 3)
>>> runtime_dependency(m._index, "r0")            # a conv output: made from the image   # doctest: +SKIP
"graph input 'data_0' (read by Conv node 'n0')"

The reference evaluator, not onnxruntime: it is onnx's own, runs a sub-graph of any opset
without a session, and on these folds is as fast (the time is numpy's); BENCHMARKS.md,
"Computed weights", has the figures.

Known limits: ``Shape`` of a tensor with any symbolic dim is not a constant, even where only
its static dims are used (``Gather(Shape(x), 1)`` on an ``N×3×H×W`` input); a tensor whose
shape onnx's inference cannot give even once its inputs are known (``NonZero``, ``Unique``,
a ``Loop`` of unknown trip count) cannot be bounded, and so is refused; ops outside the
ai.onnx domain are not folded (the reference evaluator does not know com.microsoft's);
random ops (``RandomNormal``, …) are not constants; model-local functions are not folded.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import ModelError, UnsupportedModelError, format_bytes
from .index import Index, body_inputs, dims

__all__ = ["fold", "fold_shape", "runtime_dependency", "FoldError", "MAX_FOLD_BYTES", "CACHE_BYTES"]

#: A fold whose tensors (its constant inputs, every intermediate and the result, all held at
#: once as the reference evaluator does) would take more than this is refused before it runs.
MAX_FOLD_BYTES = 1 << 30
#: Folded tensors kept per model; past this, the oldest are dropped (and folded again if asked),
#: and a larger one is not kept at all (keeping it would cost a copy of it: see :func:`fold`).
CACHE_BYTES = 256 << 20
#: Ops whose output changes from run to run: never constants.
RANDOM_OPS = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
              "Multinomial", "Bernoulli"}
_SMALL = 1 << 16  # constant inputs up to this many bytes are given to shape inference by value


#: A ``Constant`` with one of these attributes is read as it is (a sparse or string one is run).
PLAIN_CONSTANT = ("value", "value_float", "value_floats", "value_int", "value_ints")


def is_plain_constant(node: onnx.NodeProto) -> bool:
    """A ``Constant`` node whose value is read straight from its attribute."""
    return node.op_type == "Constant" and any(a.name in PLAIN_CONSTANT for a in node.attribute)


class FoldError(UnsupportedModelError):
    """A tensor made from constants that onnxviz does not fold: over the bound, or not sizable."""


class _NotConstant(Exception):
    """What ``name`` depends on at run time (the message)."""


class _Cone:
    """The nodes that make a tensor from constants, in graph order, and their constant leaves.

    ``leaves``: initializer and ``Constant`` outputs (read by the caller's ``read``) and
    ``Shape``/``Size`` outputs of statically shaped tensors (values here, in ``values``).
    """

    def __init__(self, index: Index, name: str):
        self.nodes: list[onnx.NodeProto] = []
        self.leaves: set[str] = set()
        self.values: dict[str, np.ndarray] = {}
        graph_inputs = {i.name for i in index.inputs}
        seen, stack, taken = set(), [(name, None)], set()
        while stack:
            t, reader = stack.pop()
            if not t or t in seen:
                continue
            seen.add(t)
            node = index.producers.get(t)
            if t in index.initializers or (node is not None and is_plain_constant(node)):
                self.leaves.add(t)
                continue
            if node is None:
                what = "graph input" if t in graph_inputs else "tensor"
                by = f" (read by {reader.op_type} node '{reader.name}')" if reader is not None else ""
                raise _NotConstant(f"{what} '{t}'{by}" + ("" if t in graph_inputs else ", which nothing makes"))
            if node.op_type in RANDOM_OPS:
                raise _NotConstant(f"a {node.op_type} node '{node.name}' (random at each run)")
            if node.domain not in ("", "ai.onnx"):
                raise _NotConstant(f"a {node.domain}.{node.op_type} node '{node.name}', which onnx's reference "
                                   "evaluator does not run")
            shape = _static_shape(index, node)
            if shape is not None:
                self.leaves.add(t)
                self.values[t] = shape
                continue
            if id(node) not in taken:
                taken.add(id(node))
                self.nodes.append(node)
            outer = [i for i in sorted(body_inputs(node) - set(node.input))  # an If/Loop body's reads from outside
                     if i in index.producers or i in index.initializers or i in graph_inputs]
            stack.extend((i, node) for i in [*node.input, *outer])
        self.nodes.sort(key=lambda n: index.positions[id(n)])


def _static_shape(index: Index, node: onnx.NodeProto) -> np.ndarray | None:
    """The value of a ``Shape``/``Size`` node whose input's shape is static, else ``None``."""
    if node.op_type not in ("Shape", "Size") or not node.input or index.is_constant(node.input[0]):
        return None
    shape = _static_shapes(index).get(node.input[0])
    if shape is None or not all(isinstance(d, int) for d in shape):
        return None
    if node.op_type == "Size":
        return np.array(math.prod(shape), np.int64)
    attrs = {a.name: a.i for a in node.attribute}  # Shape-15's start/end clamp as Python slices do
    return np.array(shape[attrs.get("start", 0):attrs.get("end")], np.int64)


def _static_shapes(index: Index) -> dict:
    """``{tensor: dims}`` from onnx's shape inference on the graph as it is (no input size
    fixed, so a symbolic dim stays symbolic): the shapes that hold for every run. Once per index."""
    if index.static is None:
        proto = helper.make_model(index.graph, opset_imports=index.opset_import)
        try:
            g = onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True).graph
            found = [*g.value_info, *g.input, *g.output]
        except Exception:  # best effort: then only the inputs' declared shapes (not stale value_info)
            found = list(index.graph.input)
        index.static = {vi.name: dims(vi) for vi in found if vi.type.tensor_type.HasField("shape")}
    return index.static


def runtime_dependency(index: Index, name: str) -> str | None:
    """What makes ``name`` known only at run time (``"graph input 'x' (read by Mul node 'm')"``),
    or ``None`` when it is made from constants alone and :func:`fold` can compute it."""
    try:
        _Cone(index, name)
    except _NotConstant as e:
        return str(e)
    return None


def fold(index: Index, name: str, read: Callable[[str], np.ndarray], max_bytes: int | None = None):
    """The value of ``name`` if it is computed from constants alone, else ``None``.

    ``read(tensor)`` gives an initializer's or ``Constant``'s value (read from disk only then).
    Raises :class:`FoldError` when the fold would need more than ``max_bytes`` (default
    :data:`MAX_FOLD_BYTES`) or cannot be sized, :class:`ModelError` when the graph is wrong
    (shape inference or the reference evaluator fails on it). The value is cached in
    ``index.folded`` (a copy is returned), unless it is larger than :data:`CACHE_BYTES`: then
    it is folded again if asked again.
    """
    if name in index.folded:
        index.folded.move_to_end(name)
        return index.folded[name].copy()
    try:
        cone = _Cone(index, name)
    except _NotConstant:
        return None
    value = _Fold(index, cone, name, read, MAX_FOLD_BYTES if max_bytes is None else max_bytes).run()
    return _remember(index, name, value)


def fold_shape(index: Index, name: str, read: Callable[[str], np.ndarray]) -> tuple | None:
    """The dims of ``name`` if it is made from constants and onnx's shape inference on its
    sub-graph alone can size it, else ``None``. Nothing is run; only constants of up to 64 KiB
    are read (shape inputs). For a model whose own inference fails (an exporter's stale value_info)."""
    try:
        cone = _Cone(index, name)
    except _NotConstant:
        return None
    return _Fold(index, cone, name, read, 0).shape()


def _remember(index: Index, name: str, value: np.ndarray) -> np.ndarray:
    """Keep ``value`` (the caller gets a copy of it); one larger than the whole cache is not
    kept, and is handed over as it is (a 411 MB weight: no second 411 MB)."""
    if value.nbytes > CACHE_BYTES:
        return value
    index.folded[name] = value
    while sum(v.nbytes for v in index.folded.values()) > CACHE_BYTES:
        index.folded.popitem(last=False)
    return value.copy()


def _nbytes(elem_type: int, shape) -> int | None:
    """Bytes of a tensor of ``elem_type`` and ``shape``; ``None`` if a dim is unknown."""
    if shape is None or not all(isinstance(d, int) and d >= 0 for d in shape):
        return None
    try:
        itemsize = helper.tensor_dtype_to_np_dtype(elem_type).itemsize
    except Exception:  # undefined or string type: sized as 8 bytes per element
        itemsize = 8
    return itemsize * math.prod(shape)


class _Fold:
    """One fold: size the cone, then run it (in rounds when a shape needs a value first)."""

    def __init__(self, index: Index, cone: _Cone, name: str, read, max_bytes: int):
        self.index, self.cone, self.name, self.read, self.max_bytes = index, cone, name, read, max_bytes
        self.values = dict(cone.values)          # tensor → array, known so far
        self.types: dict[str, tuple] = {}        # tensor → (elem_type, dims) of the leaves not read yet
        for leaf in cone.leaves - self.values.keys():
            self.types[leaf] = self._leaf_type(leaf)

    def _leaf_type(self, leaf: str) -> tuple:
        init = self.index.initializers.get(leaf)
        if init is not None:
            return init.data_type, tuple(init.dims)
        node = self.index.producers[leaf]
        for a in node.attribute:
            if a.name == "value" and a.HasField("t"):
                return a.t.data_type, tuple(a.t.dims)
        value = self.read(leaf)  # value_float(s) / value_int(s): small, read now
        if value is None:
            raise ModelError(f"the Constant node '{node.name}' that makes '{leaf}' has no value this can read")
        self.values[leaf] = np.asarray(value)
        return helper.np_dtype_to_tensor_dtype(self.values[leaf].dtype), self.values[leaf].shape

    def _read_small(self) -> None:
        """The small leaves, now: shape inference needs their values (shapes, axes, repeats)."""
        for leaf, (elem, shape) in list(self.types.items()):
            if leaf not in self.values and (_nbytes(elem, shape) or 0) <= _SMALL:
                self.values[leaf] = np.asarray(self._read(leaf))

    def shape(self) -> tuple | None:
        self._read_small()
        if self.name in self.values:
            return tuple(self.values[self.name].shape)
        model = self._sub_model(self.cone.nodes, [self.name], by_value=True)
        try:
            out = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True).graph.output[0]
        except Exception:  # not sizable without running
            return None
        shape = dims(out) if out.type.tensor_type.HasField("shape") else ()
        return tuple(shape) if shape and all(isinstance(d, int) for d in shape) else None

    def run(self) -> np.ndarray:
        self._read_small()
        if self.name in self.values:  # a Shape/Size of a static tensor: nothing to run
            return self.values[self.name]
        nodes = list(self.cone.nodes)
        while True:
            sizes = self._sizes(nodes)
            unknown = next((n for n in nodes if any(sizes.get(o) is None for o in n.output if o)), None)
            if unknown is None:
                self._check(nodes, sizes, self.name)
                return self._evaluate(nodes, [self.name])[self.name]
            # A shape onnx cannot give without a value: compute that node's inputs first, then size again.
            wanted = [i for i in unknown.input if i and i not in self.values]
            if not wanted:
                self._unsizable(unknown)
            before = [n for n in nodes if self.index.positions[id(n)] < self.index.positions[id(unknown)]]
            needed = _needed(before, wanted)
            self._check(needed, sizes, wanted[0])
            self.values.update(self._evaluate(needed, wanted))
            nodes = [n for n in nodes if not all(o in self.values for o in n.output if o)]

    def _unsizable(self, node: onnx.NodeProto):
        """Every input of ``node`` is known and still onnx cannot size its output: an error of the
        graph (strict inference says which), else an op whose output size depends on its values."""
        try:
            onnx.shape_inference.infer_shapes(self._sub_model([node], list(node.output), by_value=True),
                                              strict_mode=True, data_prop=True)
        except Exception as e:  # onnx's InferenceError, with the op's own complaint
            text = (str(e).strip().splitlines() or [""])[0][:300]
            raise ModelError(f"the constant sub-graph that makes '{self.name}' cannot be folded: {node.op_type} "
                             f"node '{node.name}': {text}") from None
        what = "its size" if self.name in node.output else f"the size of '{node.output[0]}'"
        raise FoldError(f"'{self.name}' is computed from constants, but {what} (made by {node.op_type} node "
                        f"'{node.name}') is not known before running it, so the fold cannot be bounded; onnxviz "
                        "does not fold it")

    def _read(self, leaf: str) -> np.ndarray:
        value = self.read(leaf)
        if value is None:
            raise ModelError(f"'{leaf}' cannot be read as a constant")
        return value

    def _external(self, nodes) -> list[str]:
        made = {o for n in nodes for o in n.output}
        used = []
        for n in nodes:
            outer = body_inputs(n) & (self.values.keys() | self.types.keys())
            used += [i for i in [*n.input, *sorted(outer)] if i and i not in made]
        return list(dict.fromkeys(used))

    def _sub_model(self, nodes, outputs, by_value: bool) -> onnx.ModelProto:
        """The nodes as a model: inputs known by value become initializers when ``by_value``
        (small ones only) and typed graph inputs otherwise."""
        inits, inputs = [], []
        for t in self._external(nodes):
            value = self.values.get(t)
            if by_value and value is not None and value.nbytes <= _SMALL:
                inits.append(numpy_helper.from_array(value, t))
                continue
            elem, shape = ((helper.np_dtype_to_tensor_dtype(value.dtype), value.shape) if value is not None
                           else self.types[t])
            inputs.append(helper.make_tensor_value_info(t, elem, list(shape)))
        graph = helper.make_graph(nodes, "fold", inputs, [helper.make_empty_tensor_value_info(o) for o in outputs],
                                  initializer=inits)
        return helper.make_model(graph, opset_imports=self.index.opset_import)

    def _sizes(self, nodes) -> dict:
        """``{tensor: bytes or None}`` for every output of ``nodes`` and every tensor they read."""
        sizes = {t: int(v.nbytes) for t, v in self.values.items()}
        sizes.update({t: _nbytes(*ty) for t, ty in self.types.items() if t not in sizes})
        model = self._sub_model(nodes, [self.name], by_value=True)
        try:
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True).graph
        except Exception:  # then every output's size is unknown
            inferred = model.graph
        for vi in [*inferred.value_info, *inferred.output]:
            t = vi.type.tensor_type
            if vi.name not in sizes and t.HasField("shape"):
                sizes[vi.name] = _nbytes(t.elem_type, dims(vi))
        return sizes

    def _check(self, nodes, sizes: dict, target: str) -> None:
        tensors = set(self._external(nodes)) | {o for n in nodes for o in n.output if o}
        total = sum(sizes.get(t) or 0 for t in tensors)
        if total > self.max_bytes:
            raise FoldError(
                f"'{target}' is computed from constants by {len(nodes)} node(s) whose tensors would take "
                f"{format_bytes(total)}, more than the {format_bytes(self.max_bytes)} a fold may use; onnxviz "
                "does not fold it")

    def _evaluate(self, nodes, outputs: list[str]) -> dict:
        from onnx.reference import ReferenceEvaluator  # 40 ms to import: only when something is folded

        feeds = {}
        for t in self._external(nodes):
            if t not in self.values:
                self.values[t] = np.asarray(self._read(t))
            feeds[t] = self.values[t]
        try:
            got = ReferenceEvaluator(self._sub_model(nodes, outputs, by_value=False)).run(outputs, feeds)
        except Exception as e:  # the evaluator raises whatever its op implementation raised
            text = (str(e).strip().splitlines() or [""])[0][:300]
            raise ModelError(f"the constant sub-graph that makes '{outputs[0]}' ({len(nodes)} node(s)) cannot be "
                             f"folded by onnx's reference evaluator: {type(e).__name__}: {text}") from None
        return {o: np.asarray(v) for o, v in zip(outputs, got)}


def _needed(nodes, wanted) -> list:
    """The nodes of ``nodes`` (graph order) that ``wanted`` needs."""
    made = {o: n for n in nodes for o in n.output}
    need, stack = set(), list(wanted)
    while stack:
        t = stack.pop()
        n = made.get(t)
        if n is not None and id(n) not in need:
            need.add(id(n))
            stack.extend([*n.input, *body_inputs(n)])
    return [n for n in nodes if id(n) in need]

