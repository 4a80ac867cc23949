"""Writing the backward graph: what every gradient rule of :mod:`onnxviz.graph.backward` uses.

An :class:`Emitter` collects the new nodes and constants of one backward graph, names them
so they never clash with the model's, and answers what rules need to know about a forward
tensor: its dims and element type (from shape inference at the actual input size), and the
value of a constant (``Slice`` starts, ``Pad`` pads). A rule is a :class:`Rule`: a function
``fn(e, node, dy) -> [dx or None per input]`` and which inputs it can differentiate.

>>> g = e.op("Mul", [dy, e.const(0.5, like=dy)])      # doctest: +SKIP
>>> dx = e.unbroadcast(g, like="bias")               # doctest: +SKIP

Every constant takes the element type of the tensor it is combined with (float16 models get
float16 constants), so the backward runs in the model's own precision.

Known limits: emitted ops need opset 16 (``ScatterElements`` with ``reduction="add"``); the
builder converts older models first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import UnsupportedModelError
from .weights import constant_value

__all__ = ["Emitter", "Rule", "PREFIX"]

PREFIX = "onnxviz_grad/"
_BOOL, _INT = onnx.TensorProto.BOOL, onnx.TensorProto.INT64
_NOT_FLOAT = {"Shape": _INT, "Size": _INT, "NonZero": _INT, "Equal": _BOOL, "Greater": _BOOL, "Less": _BOOL,
              "GreaterOrEqual": _BOOL, "LessOrEqual": _BOOL, "And": _BOOL, "Not": _BOOL, "Or": _BOOL}
_FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
           onnx.TensorProto.BFLOAT16}


@dataclass(frozen=True)
class Rule:
    """A backward rule: ``fn(e, node, dy)`` → one gradient (or ``None``) per input of ``node``.

    ``inputs``: the input positions it differentiates (``None``: all; a weight input on the
    path is an error); ``outputs``: the outputs that carry a gradient (``None``: the float ones);
    ``prepare``: ``fn(e, node) -> node``, the forward node as the rule needs it (MaxPool adds
    its Indices output); ``type_only``: inputs whose values the output does not depend on
    (``CastLike``'s second input gives only a type).
    """

    fn: Callable
    inputs: tuple | None = (0,)
    outputs: tuple | None = None
    prepare: Callable | None = None
    type_only: tuple = ()


class Emitter:
    """New nodes and initializers of one backward graph, and lookups about forward tensors."""

    def __init__(self, index, types: dict, opset: int, *, guided: bool = False, shared_ties: bool = False):
        self.index = index
        self.types = types          # {tensor: (dims, elem_type)} at the actual input shape
        self.opset = opset
        self.guided = guided
        self.shared_ties = shared_ties  # MaxPool: tied maxima may share the gradient (see rules_layers)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0
        self._shapes: dict[str, str] = {}
        self.gradients: set = set()   # gradient tensors, typed like their forward tensors
        self.shaped: set = set()      # other new tensors whose dims are known (see shaped_like)

    # ---------------------------------------------------------------- writing

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{PREFIX}{hint}_{self._count}"

    def op(self, op_type: str, inputs, outputs: int = 1, domain: str = "", elem: int = 0, **attrs):
        """Append a node; return its output name (or names, for ``outputs > 1``).

        The outputs are typed for later constants: ``elem`` if given, ``to`` for a cast, integers or booleans
        for shape ops and comparisons, else the type of the first typed input.
        """
        names = [self.name(op_type) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=names[0], domain=domain,
                                           **{k: v for k, v in attrs.items() if v is not None}))
        elem = elem or attrs.get("to") or _NOT_FLOAT.get(op_type) or next(
            (self.types[i][1] for i in inputs if i in self.types and self.types[i][1]), 0)
        for n in names:
            self.types[n] = (None, elem)
        return names[0] if outputs == 1 else names

    def const(self, value, like: str) -> str:
        """A constant in ``like``'s element type."""
        elem = self.elem(like)
        arr = np.asarray(value, dtype=helper.tensor_dtype_to_np_dtype(elem))
        name = self.name("const")
        self.initializers.append(numpy_helper.from_array(arr, name))
        return name

    def ints(self, values) -> str:
        """An int64 constant (a 1-D list, or a scalar)."""
        name = self.name("ints")
        self.initializers.append(numpy_helper.from_array(np.asarray(values, dtype=np.int64), name))
        return name

    # ---------------------------------------------------------------- lookups

    def elem(self, name: str) -> int:
        elem = self.types.get(name, ((), 0))[1]
        if not elem:
            raise UnsupportedModelError(f"the element type of tensor '{name}' is unknown (shape inference "
                                        "could not type it); its gradient cannot be built")
        return elem

    def is_float(self, name: str) -> bool:
        elem = self.types.get(name, ((), 0))[1]
        return not elem or elem in _FLOATS

    def dims(self, name: str) -> tuple | None:
        """Dims of ``name`` (ints, or strings for symbolic ones); ``None`` if the rank is unknown."""
        return self.types.get(name, (None, 0))[0]

    def typed(self, name: str, like: str) -> str:
        """Record that ``name`` (a gradient) has the dims and type of ``like`` (its tensor); the
        gradient of an integer tensor (a QuantizeLinear's) keeps its own float type."""
        dims, elem = self.types.get(like, (None, 0))
        if elem and elem not in _FLOATS:
            elem = self.types.get(name, (None, 0))[1]
        self.types[name] = (dims, elem)
        self.gradients.add(name)
        return name

    def shaped_like(self, name: str, like: str) -> str:
        """Record that the new tensor ``name`` has the dims of ``like`` (its own element type
        kept), so that the graph declares them: an op onnx cannot size (``MaxUnpool`` with a
        computed ``output_shape``) stays sizable for the memory guard and onnxruntime."""
        return self.sized(name, self.types.get(like, (None, 0))[0])

    def sized(self, name: str, dims) -> str:
        """Record the dims of the new tensor ``name`` (its element type kept): see :meth:`shaped_like`."""
        self.types[name] = (tuple(dims) if dims is not None else None, self.types.get(name, (None, 0))[1])
        self.shaped.add(name)
        return name

    def rank(self, name: str, node=None) -> int:
        dims = self.dims(name)
        if dims is None:
            where = f" (input of {node.op_type} '{node.name}')" if node is not None else ""
            raise UnsupportedModelError(f"the rank of tensor '{name}'{where} is unknown (shape inference "
                                        "could not size it); its gradient cannot be built")
        return len(dims)

    def static(self, name: str, node, axes=None) -> tuple:
        """The dims of ``name`` on ``axes`` (default: all but the batch), which must be known."""
        dims = self.dims(name) or ()
        axes = range(1, len(dims)) if axes is None else axes
        got = tuple(dims[a] for a in axes if a < len(dims))
        if not dims or len(got) != len(list(axes)) or not all(isinstance(d, int) and d >= 0 for d in got):
            raise UnsupportedModelError(
                f"the gradient of {node.op_type} '{node.name}' needs the static shape of '{name}', which "
                f"shape inference gives as {list(dims) if dims else 'unknown'}")
        return got

    def value(self, name: str, node, what: str) -> np.ndarray | None:
        """The value of a constant input (``''``: ``None``); a computed one is refused."""
        if not name:
            return None
        found = constant_value(self.index, name)
        if found is None:
            raise UnsupportedModelError(f"the gradient of {node.op_type} '{node.name}' needs its {what} "
                                        f"('{name}') to be a constant; it is computed at run time")
        return found

    # ---------------------------------------------------------------- helpers

    def shape(self, name: str) -> str:
        if name not in self._shapes:
            self._shapes[name] = self.op("Shape", [name])
        return self._shapes[name]

    def where(self, cond: str, a: str, b=0) -> str:
        """``cond ? a : b`` (``b`` a tensor, or 0) as ``a·c`` or ``b + c·(a − b)`` with ``c`` = cond
        cast to ``a``'s type: onnxruntime's ``Where`` is ~20× slower than that (measured, 4×64×112²
        float32, 2 cores: Where 48–51 ms; Greater 2.3, Cast 2.0–2.4, Mul 4.2 ms). Both branches
        must be finite."""
        c = self.op("Cast", [cond], to=self.elem(a))
        if not isinstance(b, str):
            if b != 0:
                raise ValueError("where() takes a tensor or 0 as its third argument")
            return self.op("Mul", [a, c])
        return self.op("Add", [b, self.op("Mul", [c, self.op("Sub", [a, b])])])

    def cmp(self, op: str, x: str, value) -> str:
        return self.op(op, [x, value if isinstance(value, str) else self.const(value, like=x)])

    def mul(self, *xs) -> str:
        out = xs[0]
        for x in xs[1:]:
            out = self.op("Mul", [out, x])
        return out

    def reduce(self, op: str, x: str, axes, keepdims: int = 1) -> str:
        """``op`` (ReduceSum/ReduceMean/…) over ``axes`` (a list, or a tensor name), opset-aware."""
        if op == "ReduceSum" or self.opset >= 18:
            ins = [x] + ([axes if isinstance(axes, str) else self.ints(list(axes))] if axes is not None else [])
            return self.op(op, ins, keepdims=keepdims)
        if isinstance(axes, str):
            raise UnsupportedModelError(f"{op} over computed axes needs opset 18")
        return self.op(op, [x], keepdims=keepdims, axes=list(axes) if axes is not None else None)

    def zeros(self, shape: str, like: str | None = None, elem: int | None = None) -> str:
        """Zeros of the (computed) ``shape`` in ``like``'s type (or ``elem``)."""
        elem = elem or self.elem(like)
        zero = numpy_helper.from_array(np.zeros(1, helper.tensor_dtype_to_np_dtype(elem)))
        return self.op("ConstantOfShape", [shape], value=zero, elem=elem)

    def like(self, g: str, x: str) -> str:
        """``g`` reshaped to ``x``'s shape."""
        return self.op("Reshape", [g, self.shape(x)])

    def unbroadcast(self, g: str, like: str, out: str) -> str:
        """``g`` (the gradient of ``out``, which broadcast ``like``) summed back to ``like``'s shape.

        Example: ``Mul(x (N,C,H,W), gate (N,C,1,1))``: the gate's gradient is ``g·x`` summed
        over H and W. Axes are found from the static shapes when they decide it, else at run
        time (``Shape`` comparisons and ``NonZero``, for symbolic dims).
        """
        a, y = self.dims(like), self.dims(out)
        if a is None or y is None:
            raise UnsupportedModelError(f"the ranks of '{like}' and '{out}' are unknown; the gradient of "
                                        "a broadcasting op cannot be built")
        if tuple(a) == tuple(y):
            return g
        lead = len(y) - len(a)
        axes = list(range(lead))
        decided = True
        for i, d in enumerate(a):
            o = y[lead + i]
            if d == 1 and o != 1:
                axes.append(lead + i)
            elif not (d == o or (isinstance(d, int) and d > 1)):
                decided = False
        if decided:
            if not axes:
                return g
            summed = self.reduce("ReduceSum", g, axes, keepdims=1)
            return self.like(summed, like) if lead else summed
        # symbolic dims: reduce where like's dim is 1 and the output's is not, found at run time
        shape_g = self.shape(out)
        tail = self.op("Slice", [shape_g, self.ints([lead]), self.ints([len(y)])]) if lead else shape_g
        one = self.ints(1)
        mask = self.op("And", [self.op("Equal", [self.shape(like), one]),
                               self.op("Not", [self.op("Equal", [tail, one])])])
        found = self.op("Add", [self.op("Reshape", [self.op("NonZero", [mask]), self.ints([-1])]), self.ints(lead)])
        all_axes = self.op("Concat", [self.ints(list(range(lead))), found], axis=0) if lead else found
        summed = self.op("ReduceSum", [g, all_axes], keepdims=1, noop_with_empty_axes=1)
        return self.like(summed, like)

    def scatter_axis(self, g: str, axis: int, index: np.ndarray, dim: int, rank: int, add: bool) -> str:
        """The adjoint of gathering ``x[..., index, ...]`` along ``axis`` (``x`` has ``dim`` there):
        ``g`` scattered back, summed where ``index`` repeats (``add``).

        Example: ``Slice(x, 1, 7, step 2)`` on an axis of 8 gathers ``[1, 3, 5]``; ``Pad`` in
        ``reflect`` mode by 2 on an axis of 4 gathers ``[2, 1, 0, 1, 2, 3, 2, 1]``.
        """
        index = np.asarray(index, np.int64)
        if not add and index.size and np.array_equal(index, np.arange(index[0], index[0] + index.size)):
            pads = [0] * (2 * rank)  # a contiguous run: zero padding around it
            pads[axis], pads[rank + axis] = int(index[0]), int(dim - index[0] - index.size)
            return self.op("Pad", [g, self.ints(pads)])
        shape_g = self.shape(g)
        view = [1] * rank
        view[axis] = index.size
        idx = self.op("Expand", [self.ints(index.reshape(view)), shape_g])
        parts = [self.op("Slice", [shape_g, self.ints([0]), self.ints([axis])]) if axis else None,
                 self.ints([dim]),
                 self.op("Slice", [shape_g, self.ints([axis + 1]), self.ints([rank])]) if axis + 1 < rank else None]
        target = self.op("Concat", [p for p in parts if p], axis=0)
        return self.scatter(target, idx, g, axis, add)

    def scatter(self, shape: str, index: str, g: str, axis: int, add: bool) -> str:
        """``ScatterElements(zeros(shape), index, g)``, summing repeats (``add``); onnxruntime has no
        float16 scatter-add, so a float16 ``g`` is summed in float32 then."""
        elem = self.elem(g)
        half = add and elem == onnx.TensorProto.FLOAT16
        src = self.op("Cast", [g], to=onnx.TensorProto.FLOAT) if half else g
        zeros = self.zeros(shape, elem=onnx.TensorProto.FLOAT if half else elem)
        out = self.op("ScatterElements", [zeros, index, src], axis=axis, reduction="add" if add else None)
        return self.op("Cast", [out], to=elem) if half else out
