"""Find a convolution's weights wherever an exporter hid them, as float32.

A conv's weight input is usually an initializer, but exporters and optimisers also produce:
a ``Constant`` node, an ``Identity`` of a constant, a ``Cast`` from float16, a
``DequantizeLinear`` of int8 weights (per tensor or per channel), a ``Transpose`` or
``Reshape`` of a constant, or any of these with the bytes in an external-data file.
:func:`constant_value` folds such a chain back to a numpy array, reading from disk only the
tensors on the chain; :func:`conv_filters` applies it to a layer.

>>> import onnxviz
>>> m = onnxviz.load("models/vgg16.onnx")                  # doctest: +SKIP
>>> conv_filters(m, m.layer("block1_conv1")).shape         # doctest: +SKIP
(64, 3, 3, 3)

Known limits: weights computed from the input at run time are refused; ``ConvInteger``
weights are returned as ``w - zero_point`` (integer levels), because the op itself carries
no scale.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import numpy_helper

from .errors import ModelError, UnsupportedModelError
from .model import node_attr

_MAX_DEPTH = 16


def external_path(tensor: onnx.TensorProto, base_dir: str) -> tuple[str, int, int | None]:
    """Where an external tensor's bytes are: ``(path, offset, length)``, checked to stay in ``base_dir``."""
    info = {e.key: e.value for e in tensor.external_data}
    location = info.get("location", "")
    if not location or os.path.isabs(location) or location.startswith(("/", "\\")):
        raise ModelError(
            f"initializer '{tensor.name}' has external data location '{location}'; "
            "it must be a relative path inside the model's folder"
        )
    folder = os.path.realpath(base_dir)
    path = os.path.realpath(os.path.join(folder, location))
    if os.path.commonpath([folder, path]) != folder:
        raise ModelError(
            f"initializer '{tensor.name}' has external data location '{location}', which "
            f"leads outside the model's folder '{base_dir}'; refused"
        )
    try:
        offset = int(info.get("offset", 0) or 0)
        length = int(info["length"]) if info.get("length") else None
    except ValueError:
        raise ModelError(
            f"initializer '{tensor.name}' has a non-numeric external data offset or length"
        ) from None
    return path, offset, length


def read_tensor(tensor: onnx.TensorProto, base_dir: str) -> np.ndarray:
    """The value of an initializer or attribute tensor, reading external bytes only for it."""
    if tensor.data_location != onnx.TensorProto.EXTERNAL:
        try:
            return numpy_helper.to_array(tensor)
        except Exception as e:  # onnx raises several kinds for malformed tensors
            raise ModelError(f"tensor '{tensor.name}' cannot be decoded: {e}") from None
    path, offset, length = external_path(tensor, base_dir)
    count = int(np.prod(tensor.dims, dtype=np.int64))
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except Exception:
        raise ModelError(f"tensor '{tensor.name}' has unknown data type {tensor.data_type}") from None
    expected = count * itemsize
    if length is None:
        length = expected
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(length) if offset + length <= size else b""
    except OSError as e:
        raise ModelError(
            f"external data '{os.path.basename(path)}' of initializer '{tensor.name}' "
            f"cannot be read: {e.strerror or e}"
        ) from None
    if len(data) != length or length < expected:
        raise ModelError(
            f"external data '{os.path.basename(path)}' of initializer '{tensor.name}' is "
            f"truncated: needs {expected} bytes at offset {offset}, file has {size}"
        )
    inline = onnx.TensorProto()
    inline.CopyFrom(tensor)
    del inline.external_data[:]
    inline.data_location = onnx.TensorProto.DEFAULT
    inline.raw_data = data[:expected]
    return numpy_helper.to_array(inline)


def _dequantize(x, scale, zero_point, axis: int) -> np.ndarray:
    x = x.astype(np.float32)
    scale = np.asarray(scale, dtype=np.float32)
    zp = np.zeros_like(scale) if zero_point is None else np.asarray(zero_point, dtype=np.float32)
    if scale.ndim == 1 and scale.size > 1:
        shape = [1] * x.ndim
        shape[axis % x.ndim] = scale.size
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return (x - zp) * scale


def constant_value(model, name: str, _depth: int = 0) -> np.ndarray | None:
    """Fold the constant chain that produces tensor ``name``; ``None`` if it is not constant.

    ``model`` is an :class:`onnxviz.Model` (its typed lookups are used, built once at load).
    """
    if not name or _depth > _MAX_DEPTH:
        return None
    init = model._index.initializers.get(name)
    if init is not None:
        return read_tensor(init, model.base_dir)
    node = model._index.producers.get(name)
    if node is None:
        return None
    op = node.op_type
    ins = list(node.input)

    def value(i):
        return constant_value(model, ins[i], _depth + 1) if len(ins) > i and ins[i] else None

    if op == "Constant":
        for a in node.attribute:
            if a.name == "value":
                return read_tensor(a.t, model.base_dir)
            if a.name in ("value_float", "value_floats", "value_int", "value_ints"):
                return np.asarray(onnx.helper.get_attribute_value(a))
        return None
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
        return _dequantize(x, scale, value(2), node_attr(node, "axis", 1))
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


def conv_filters(model, layer) -> np.ndarray:
    """Float32 filters of ``layer`` as stored in ONNX: ``(O, I/group, *kernel)``.

    For ``ConvTranspose`` that is ONNX's ``(C_in, C_out/group, *kernel)``.
    """
    node = model._index.nodes[layer.node_index]
    ins = list(node.input)
    w_index = 3 if layer.op == "QLinearConv" else 1
    w_name = ins[w_index] if len(ins) > w_index else ""
    w = constant_value(model, w_name)
    if w is None:
        producer = model._index.producers.get(w_name)
        how = f"by a {producer.op_type} node '{producer.name}'" if producer is not None else "at run time"
        raise UnsupportedModelError(
            f"the weights of layer '{layer.name}' ('{w_name}') are computed {how}, not stored "
            "as a constant; onnxviz reads constant weights only"
        )
    if layer.op == "QLinearConv":
        scale = constant_value(model, ins[4])
        zp = constant_value(model, ins[5]) if len(ins) > 5 else None
        if scale is None:
            raise UnsupportedModelError(f"the weight scale of layer '{layer.name}' is not a constant")
        w = _dequantize(w, scale, zp, 0)
    elif layer.op == "ConvInteger":
        zp = constant_value(model, ins[3]) if len(ins) > 3 and ins[3] else None
        w = _dequantize(w, np.float32(1.0), zp, 0)
    w = np.ascontiguousarray(w, dtype=np.float32)
    if w.ndim < 3:
        raise ModelError(
            f"the weight of layer '{layer.name}' has shape {tuple(w.shape)}; a convolution "
            "weight has rank 3 or more (O, I/group, *kernel)"
        )
    return w
