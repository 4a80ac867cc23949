"""Shape inference: the one place that sizes tensors, for the layer table and the memory guard.

>>> from onnxviz.graph.shapes import infer_shapes
>>> infer_shapes(proto, model.input)["block1_conv1/Relu:0"]       # doctest: +SKIP
(1, 224, 224, 64)

Known limits: onnx's shape inference only; tensors it cannot size are missing.
"""

from __future__ import annotations

import onnx

from .index import dims as value_dims
from .inputs import InputInfo

__all__ = ["infer_shapes", "tensor_types"]


def infer_shapes(proto: onnx.ModelProto, inp: InputInfo | None, size=None, batch: int = 1) -> dict:
    """``{tensor: dims}`` from onnx shape inference with the input fixed to ``batch × size``."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(proto)
    if inp is not None and len(inp.shape) == 4:
        h, w = size or inp.size
        for vi in fixed.graph.input:
            if vi.name == inp.name:
                dims = vi.type.tensor_type.shape.dim
                c_axis = 3 if inp.layout == "NHWC" else 1
                want = [batch, h, w] if inp.layout == "NHWC" else [batch, None, h, w]
                axes = [0, 1, 2] if inp.layout == "NHWC" else [0, 1, 2, 3]
                for axis, value in zip(axes, want):
                    if value is not None and axis != c_axis:
                        dims[axis].Clear()
                        dims[axis].dim_value = value
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed, strict_mode=False, data_prop=True)
    except Exception:  # inference is best effort: shapes are then unknown
        return {}
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        dims = value_dims(vi)
        if dims:
            shapes[vi.name] = dims
    return shapes



def tensor_types(proto: onnx.ModelProto, fixed: tuple) -> dict:
    """``{tensor: (dims, elem_type)}`` from onnx shape inference with the graph inputs of
    ``fixed`` (``(name, shape)`` pairs) set to those shapes."""
    proto_copy = onnx.ModelProto()
    proto_copy.CopyFrom(proto)
    proto = proto_copy
    want = dict(fixed)
    for vi in proto.graph.input:
        if vi.name in want:
            shape = vi.type.tensor_type.shape
            del shape.dim[:]
            for d in want[vi.name]:
                shape.dim.add().dim_value = int(d)
    del proto.graph.value_info[:]  # an exporter's shapes are for its own input size
    for vi in proto.graph.output:
        vi.type.tensor_type.ClearField("shape")
    values = list(proto.graph.input)
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
        values = list(inferred.graph.value_info) + list(inferred.graph.output) + values
    except Exception:  # inference is best effort: the rest is estimated (see onnxviz.budget)
        pass
    return {vi.name: (value_dims(vi), vi.type.tensor_type.elem_type) for vi in values
            if vi.type.tensor_type.HasField("shape")}
