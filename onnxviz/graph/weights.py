"""Find a convolution's weights wherever an exporter hid them, as float32.

A conv's weight input is usually an initializer, but exporters and optimisers also produce:
a ``Constant`` node, an ``Identity`` of a constant, a ``Cast`` from float16, a
``DequantizeLinear`` of int8 weights (per tensor or per channel), a ``Transpose`` or
``Reshape`` of a constant, or any of these with the bytes in an external-data file.
:func:`constant_value` folds such a chain back to a numpy array in numpy (the fast path),
reading from disk only the tensors on the chain; :func:`conv_filters` applies it to a layer.
Anything else computed from constants alone (``ConstantOfShape``, ``Expand``, ``Tile``,
``Concat``, ``Range``, arithmetic, the ``Shape`` of a statically shaped tensor, …) is folded
once by onnx's reference evaluator, bounded in size and cached (:mod:`onnxviz.graph.fold`).

>>> import onnxviz
>>> m = onnxviz.load("models/vgg16.onnx")                  # doctest: +SKIP
>>> conv_filters(m._index, m.layer("block1_conv1")).shape         # doctest: +SKIP
(64, 3, 3, 3)
>>> zoo = onnxviz.load(".../onnx/backend/test/data/light/light_squeezenet.onnx")   # doctest: +SKIP
>>> constant_value(zoo._index, "fire2/squeeze1x1_w_0").shape   # ConstantOfShape: folded   # doctest: +SKIP
(16, 64, 1, 1)

Quantized convs: ``QLinearConv`` weights are dequantized with the node's own ``w_scale`` and
``w_zero_point`` (inputs 4 and 5, per tensor or per output channel). A ``ConvInteger`` carries
no scale: ``quantize_dynamic`` multiplies its output by ``x_scale · w_scale`` after a
``Cast`` (see :func:`onnxviz.graph.chain.convinteger_scaling`); the constant factor of that product
is the weight scale (a per-channel one is laid along axis 0). When no such factor can be
found, the filters are ``w - zero_point`` (integer levels) and an :class:`OnnxvizWarning`
says so.

Known limits: weights that depend on a graph input (computed at run time) are refused, with
the input named; see :mod:`onnxviz.graph.fold` for what cannot be folded.
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import ModelError, OnnxvizWarning, UnsupportedModelError
from .chain import convinteger_scaling
from .fold import PLAIN_CONSTANT, FoldError, fold_shape, is_plain_constant, runtime_dependency
from .fold import fold as fold_constant
from .index import Index, node_attr

_MAX_DEPTH = 16

# External tensors of these types are read straight into a numpy array (little-endian on disk).
_DIRECT = {getattr(onnx.TensorProto, t): f"<{c}" for t, c in (
    ("FLOAT", "f4"), ("DOUBLE", "f8"), ("FLOAT16", "f2"), ("INT8", "i1"), ("UINT8", "u1"),
    ("INT16", "i2"), ("UINT16", "u2"), ("INT32", "i4"), ("UINT32", "u4"), ("INT64", "i8"),
    ("UINT64", "u8"), ("BOOL", "?"))}


def external_path(tensor: onnx.TensorProto, base_dir: str) -> tuple[str, int, int | None]:
    """Where an external tensor's bytes are: ``(path, offset, length)``, checked to stay in ``base_dir``."""
    info = {e.key: e.value for e in tensor.external_data}
    location = info.get("location", "")
    if "\x00" in location:
        raise ModelError(f"initializer '{tensor.name}' has an external data location with a NUL byte "
                         f"({location!r}); it must be a file name inside the model's folder")
    if not location or os.path.isabs(location) or location.startswith(("/", "\\")):
        raise ModelError(
            f"initializer '{tensor.name}' has external data location '{location}'; "
            "it must be a relative path inside the model's folder"
        )
    folder = os.path.realpath(base_dir)
    path = os.path.realpath(os.path.join(folder, location))
    plain = os.path.normpath(os.path.join(folder, location))
    if os.path.commonpath([folder, path]) != folder and os.path.commonpath([folder, plain]) == folder:
        raise ModelError(
            f"initializer '{tensor.name}' has external data location '{location}', a symbolic link "
            f"to '{path}', outside the model's folder '{base_dir}'; refused"
        )
    if os.path.commonpath([folder, path]) != folder:
        raise ModelError(
            f"initializer '{tensor.name}' has external data location '{location}', which "
            f"leads outside the model's folder '{base_dir}'; refused"
        )
    if os.path.exists(path) and not os.path.isfile(path):  # a FIFO would block the read forever
        raise ModelError(f"initializer '{tensor.name}' has external data location '{location}', which "
                         "is not a regular file (a folder, device or pipe); refused")
    try:  # onnxruntime refuses an empty offset or length: so does onnxviz, for filters too
        offset = int(info["offset"]) if "offset" in info else 0
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise ModelError(
            f"initializer '{tensor.name}' has a non-numeric external data offset or length "
            f"({info.get('offset', '')!r}, {info.get('length', '')!r}); they count bytes"
        ) from None
    if any(d < 0 for d in tensor.dims) or math.prod(tensor.dims) > 2**56:
        raise ModelError(f"initializer '{tensor.name}' has dims {list(tensor.dims)}; each must be 0 or more, "
                         "and their product fit in a file")
    if offset < 0 or (length is not None and length < 0):
        raise ModelError(f"initializer '{tensor.name}' has a negative external data offset or length "
                         f"({offset}, {length}); they count bytes from the start of the file")
    return path, offset, length


def _tensors(graph: onnx.GraphProto):
    """Every tensor of ``graph``: initializers, sparse ones, node attributes, subgraphs'."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from _tensors(g)


def check_external(model: onnx.ModelProto, base_dir: str) -> None:
    """Check every external-data reference of ``model`` before anything reads one.

    Each location must stay inside ``base_dir`` once symbolic links are resolved (an absolute
    path, ``../``, or a link to elsewhere is refused), and name an existing file that holds
    the tensor's bytes. Nothing is opened: this runs before onnxruntime is handed the model.
    """
    for tensor in _tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            if tensor.raw_data:  # an inline tensor too can hold fewer bytes than its dims need
                _check_length(tensor, len(tensor.raw_data), _nbytes(tensor))
            continue
        path, offset, length = external_path(tensor, base_dir)
        shown = f"external data '{os.path.basename(path)}' of initializer '{tensor.name}'"
        try:
            size = os.path.getsize(path)
        except OSError as e:
            raise ModelError(f"{shown} cannot be read: {e.strerror or e}") from None
        expected = _nbytes(tensor)
        if length is None:
            length = expected
        _check_length(tensor, length, expected)
        if offset + length > size:
            raise ModelError(f"{shown} is truncated: needs {length} bytes at offset {offset}, file has {size}")


def _nbytes(tensor: onnx.TensorProto) -> int:
    """The bytes ``tensor``'s dims and data type call for."""
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except Exception:
        raise ModelError(f"tensor '{tensor.name}' has unknown data type {tensor.data_type}") from None
    return itemsize * math.prod(tensor.dims)


def _check_length(tensor: onnx.TensorProto, length: int, expected: int) -> None:
    """A tensor whose stored bytes (inline, or the external ``length``) are fewer than its dims need."""
    if length < expected:
        raise ModelError(
            f"initializer '{tensor.name}' holds {length:,} bytes of data, but its dims "
            f"{list(tensor.dims)} of {onnx.helper.tensor_dtype_to_string(tensor.data_type).split('.')[-1].lower()} need {expected:,}")


def read_tensor(tensor: onnx.TensorProto, base_dir: str) -> np.ndarray:
    """The value of an initializer or attribute tensor, reading external bytes only for it."""
    if tensor.data_location != onnx.TensorProto.EXTERNAL:
        if tensor.raw_data:
            _check_length(tensor, len(tensor.raw_data), _nbytes(tensor))
        try:
            return numpy_helper.to_array(tensor)
        except Exception as e:  # onnx raises several kinds for malformed tensors
            raise ModelError(f"tensor '{tensor.name}' cannot be decoded: {e}") from None
    path, offset, length = external_path(tensor, base_dir)
    count = int(np.prod(tensor.dims, dtype=np.int64))
    expected = _nbytes(tensor)
    if length is None:
        length = expected
    _check_length(tensor, length, expected)
    # Plain numeric types are read straight into the array: one copy of the tensor in memory
    # (not three, as bytes → raw_data → array), and no protobuf 2 GiB limit on one tensor.
    direct = tensor.data_type in _DIRECT
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            f.seek(offset)
            if offset + length > size or length < expected:
                data = None
            elif direct:
                data = np.empty(count, np.dtype(_DIRECT[tensor.data_type]))
                if f.readinto(memoryview(data).cast("B")) != expected:
                    data = None
            else:
                data = f.read(length)
    except OSError as e:
        raise ModelError(
            f"external data '{os.path.basename(path)}' of initializer '{tensor.name}' "
            f"cannot be read: {e.strerror or e}"
        ) from None
    if data is None or (not direct and len(data) != length):
        raise ModelError(
            f"external data '{os.path.basename(path)}' of initializer '{tensor.name}' is "
            f"truncated: needs {expected} bytes at offset {offset}, file has {size}"
        )
    if direct:
        return data.reshape(tuple(tensor.dims)).astype(data.dtype.newbyteorder("="), copy=False)
    inline = onnx.TensorProto()
    inline.CopyFrom(tensor)
    del inline.external_data[:]
    inline.data_location = onnx.TensorProto.DEFAULT
    inline.raw_data = data[:expected]
    return numpy_helper.to_array(inline)


def dequantize(x, scale, zero_point, axis: int = 1) -> np.ndarray:
    """``(x - zero_point) * scale`` in float32, as ONNX ``DequantizeLinear``: a 1-D scale or
    zero point of more than one value is laid along ``axis``."""
    x = np.asarray(x)

    def along_axis(v):
        v = np.asarray(v, dtype=np.float32)
        if v.ndim == 1 and v.size > 1:
            if not isinstance(axis, int) or not -x.ndim <= axis < x.ndim or x.shape[axis] != v.size:
                raise ModelError(f"a per-channel scale or zero point of {v.size} values does not fit axis "
                                 f"{axis!r} of a tensor of shape {tuple(x.shape)}")
            shape = [1] * x.ndim
            shape[axis % x.ndim] = v.size
            v = v.reshape(shape)
        elif v.size > 1:  # ONNX takes a scalar or a 1-D per-axis scale (blocked ones: same shape as x)
            try:
                np.broadcast_shapes(v.shape, x.shape)
            except ValueError:
                raise ModelError(f"a scale or zero point of shape {tuple(v.shape)} does not fit a tensor of "
                                 f"shape {tuple(x.shape)}; DequantizeLinear takes a scalar or a 1-D "
                                 "per-axis one") from None
        return v

    levels = x.astype(np.float32)
    if zero_point is not None:
        levels = levels - along_axis(zero_point)
    return (levels * along_axis(scale)).astype(np.float32)


def constant_value(index: Index, name: str, _depth: int = 0, *, fold: bool = True,
                   max_bytes: int | None = None) -> np.ndarray | None:
    """The value of tensor ``name`` if it is made from constants alone; ``None`` if not.

    ``index``: the graph's :class:`~onnxviz.graph.index.Index` (its ``base_dir`` is where external data is read).
    The fast path (initializer, ``Constant``, ``Identity``, ``Cast``, ``DequantizeLinear``,
    ``Transpose``, ``Reshape``, ``Squeeze``/``Unsqueeze``) runs in numpy; any other producer is
    folded by :func:`onnxviz.graph.fold.fold` (``fold=False``: not, ``None`` instead), within
    ``max_bytes`` (default :data:`onnxviz.graph.fold.MAX_FOLD_BYTES`). A chain that cannot be
    folded (a ``Transpose`` whose ``perm`` does not fit, a ``Cast`` to no type, shapes that do
    not broadcast, …) raises :class:`ModelError`; a fold over the bound :class:`UnsupportedModelError`.
    """
    try:
        return _fast(index, name, _depth, fold, max_bytes)
    except (ValueError, TypeError, IndexError, KeyError, ZeroDivisionError, OverflowError) as e:
        if _depth:  # said once, by the outermost call
            raise
        raise ModelError(f"the constant chain that makes '{name}' cannot be folded: "
                         f"{type(e).__name__}: {e}") from None


def _fast(index: Index, name: str, _depth: int, fold: bool, max_bytes) -> np.ndarray | None:
    if not name:
        return None
    if _depth > _MAX_DEPTH:
        return _general(index, name, fold, max_bytes)
    init = index.initializers.get(name)
    if init is not None:
        return read_tensor(init, index.base_dir)
    node = index.producers.get(name)
    if node is None:
        return None
    op = node.op_type
    ins = list(node.input)

    def value(i):
        return constant_value(index, ins[i], _depth + 1, fold=fold, max_bytes=max_bytes) \
            if len(ins) > i and ins[i] else None

    if op not in _FAST or (op == "Constant" and not is_plain_constant(node)):
        return _general(index, name, fold, max_bytes)
    if op == "Constant":
        a = next(a for a in node.attribute if a.name in PLAIN_CONSTANT)
        return read_tensor(a.t, index.base_dir) if a.name == "value" else np.asarray(onnx.helper.get_attribute_value(a))
    if op == "Identity":
        return value(0)
    x = value(0)
    if x is None:
        return None
    if op == "Cast":
        return x.astype(onnx.helper.tensor_dtype_to_np_dtype(node_attr(node, "to")))
    if op == "DequantizeLinear":
        scale = value(1)
        if scale is None:
            return None
        return dequantize(x, scale, value(2), node_attr(node, "axis", 1))
    if op == "Transpose":
        perm = node_attr(node, "perm")
        return np.transpose(x, perm if perm is None else list(perm))
    if op == "Reshape":
        shape = value(1)
        if shape is None:
            return None
        shape = [x.shape[i] if s == 0 and not node_attr(node, "allowzero", 0) else int(s)
                 for i, s in enumerate(shape.tolist())]
        return x.reshape(shape)
    if op in ("Squeeze", "Unsqueeze"):
        axes = value(1) if len(ins) > 1 else node_attr(node, "axes")
        if axes is None:
            return np.squeeze(x) if op == "Squeeze" else None
        axes = [int(a) for a in np.asarray(axes).ravel()]
        return np.squeeze(x, tuple(axes)) if op == "Squeeze" else np.expand_dims(x, tuple(axes))
    return None


_FAST = {"Constant", "Identity", "Cast", "DequantizeLinear", "Transpose", "Reshape", "Squeeze", "Unsqueeze"}


def _general(index: Index, name: str, fold: bool, max_bytes) -> np.ndarray | None:
    """Any other producer: folded once by the reference evaluator (its leaves read by the fast path)."""
    if not fold:
        return None
    return fold_constant(index, name, lambda leaf: _fast(index, leaf, 0, False, None), max_bytes)


def constant_shape(index: Index, name: str) -> tuple | None:
    """The dims of a tensor made from constants, by shape inference on its sub-graph alone:
    nothing is folded, only small constants are read (:func:`onnxviz.graph.fold.fold_shape`)."""
    init = index.initializers.get(name)
    if init is not None:
        return tuple(init.dims)
    return fold_shape(index, name, lambda leaf: _fast(index, leaf, 0, False, None))


def _input_scale(index, name: str) -> str | None:
    """The scale tensor of a quantized conv input: from ``DynamicQuantizeLinear`` or ``QuantizeLinear``."""
    node = index.producers.get(name)
    if node is None:
        return None
    if node.op_type == "DynamicQuantizeLinear" and len(node.output) > 1:
        return node.output[1]
    if node.op_type == "QuantizeLinear" and len(node.input) > 1:
        return node.input[1]
    return None


def convinteger_weight_scale(index: Index, node: onnx.NodeProto, out_channels: int) -> np.ndarray | None:
    """The weight scale of a ``ConvInteger`` (a scalar or ``(O,)``), from the graph, or ``None``.

    Found as the constant factor of ``Mul(x_scale, w_scale)`` that scales the conv's output
    (:func:`onnxviz.graph.chain.convinteger_scaling`); the factor that is the input's own scale
    (an output of the ``DynamicQuantizeLinear`` / input of the ``QuantizeLinear`` that
    feeds the conv) is never taken.
    """
    scaling = convinteger_scaling(index, node.output[0])
    if scaling is None:
        return None
    cast, mul = scaling
    factor = mul.input[1] if mul.input[0] == cast.output[0] else mul.input[0]
    product = index.producers.get(factor)
    if product is None or product.op_type != "Mul" or len(product.input) != 2:
        return None  # one fused constant (x_scale · w_scale): the weight scale alone is unknown
    x_scale = _input_scale(index, node.input[0])
    found = [v for v in (constant_value(index, f) for f in product.input if f != x_scale) if v is not None]
    if len(found) != 1 or not np.issubdtype(found[0].dtype, np.floating):
        return None
    scale = np.asarray(found[0], dtype=np.float32).reshape(-1)
    if scale.size == 1:
        return scale.reshape(())
    return scale if scale.size == out_channels else None


def conv_filters(index: Index, layer) -> np.ndarray:
    """Float32 filters of ``layer`` as stored in ONNX: ``(O, I/group, *kernel)``.

    For ``ConvTranspose`` that is ONNX's ``(C_in, C_out/group, *kernel)``. Quantized convs
    give ``(q - zero_point) · scale`` (see the module docstring for where the scale is found).
    """
    node = index.nodes[layer.node_index]
    ins = list(node.input)
    w_name = layer.weight
    try:
        w = constant_value(index, w_name)
    except FoldError as e:
        raise FoldError(f"the weights of layer '{layer.name}' are not folded: {e}") from None
    if w is None:
        raise UnsupportedModelError(
            f"the weights of layer '{layer.name}' ('{w_name}') depend on "
            f"{runtime_dependency(index, w_name) or 'the run'}, so they exist only at run time; onnxviz "
            "shows weights stored in the file or computed from constants alone")
    if layer.op == "QLinearConv":
        scale = constant_value(index, ins[4]) if len(ins) > 4 else None
        zp = constant_value(index, ins[5]) if len(ins) > 5 else None
        if scale is None:
            raise UnsupportedModelError(f"the weight scale of layer '{layer.name}' is not a constant")
        w = dequantize(w, scale, zp, 0)
    elif layer.op == "ConvInteger":
        zp = constant_value(index, ins[3]) if len(ins) > 3 and ins[3] else None
        scale = convinteger_weight_scale(index, node, w.shape[0]) if w.ndim else None
        if scale is None:
            warnings.warn(
                f"layer '{layer.name}' is a ConvInteger whose weight scale is not in the graph (no "
                "Cast → Mul by x_scale · w_scale with a constant w_scale after it); its filters are "
                "integer levels w - zero_point, not dequantized weights", OnnxvizWarning, stacklevel=3)
            scale = np.float32(1.0)
        w = dequantize(w, scale, zp, 0)
    w = np.ascontiguousarray(w, dtype=np.float32)
    if w.ndim < 3:
        raise ModelError(
            f"the weight of layer '{layer.name}' has shape {tuple(w.shape)}; a convolution "
            "weight has rank 3 or more (O, I/group, *kernel)"
        )
    if w.size == 0:
        raise ModelError(f"the weight of layer '{layer.name}' has shape {tuple(w.shape)}: no values, "
                         "nothing to show")
    return w
