"""Which graph input takes the image, in which layout, at which size.

>>> from onnxviz.graph.inputs import find_input
>>> find_input(index, first_conv, metadata)        # doctest: +SKIP
InputInfo(name='input_image', layout='NHWC', shape=('unk__0', 64, 64, 3), elem_type=1, size=(64, 64), size_from='model')

From the first conv's data input the walk goes back through the nodes an image passes on its
way in (``Transpose``, ``Cast``, normalising arithmetic, QDQ, ``Pad``, ``Resize``, …) to a
graph input. A ``Transpose(0, 3, 1, 2)`` on the way means the input is NHWC (tf2onnx), else
NCHW. The image size is the input's static spatial dims, else the ``onnxviz.input_size``
metadata, else 224×224.

Known limits: only rank-4 inputs take images; others are fed ready tensors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .index import META, Index, dims, node_attr

__all__ = ["InputInfo", "find_input", "DEFAULT_SIZE"]

DEFAULT_SIZE = (224, 224)
# Nodes an image passes on its way from the graph input to the first conv.
_INPUT_PATH = {"Transpose", "Cast", "Identity", "Sub", "Add", "Mul", "Div", "Pad",
               "QuantizeLinear", "DequantizeLinear", "Reshape", "Resize", "Unsqueeze"}


@dataclass(frozen=True)
class InputInfo:
    name: str
    layout: str                 # "NCHW" or "NHWC"
    shape: tuple                # dims as in the graph: ints, or strings for dynamic dims
    elem_type: int
    size: tuple                 # (H, W) used for images: static dims, else metadata, else 224
    size_from: str              # "model", "metadata" or "default"



def find_input(index: Index, first_conv, metadata: dict) -> InputInfo | None:
    by_name = {i.name: i for i in index.inputs}
    if not by_name:
        return None
    # Walk back from the first conv's data input to a graph input.
    cur, nhwc, seen = first_conv.input[0], False, 0
    while cur not in by_name and seen < 64:
        node = index.producers.get(cur)
        if node is None or node.op_type not in _INPUT_PATH:
            break
        if node.op_type == "Transpose" and node_attr(node, "perm") == [0, 3, 1, 2]:
            nhwc = True
        cur = next((i for i in node.input if i and not index.is_constant(i)), "")
        seen += 1
    vi = by_name.get(cur) or index.inputs[0]
    shape = dims(vi)
    layout = "NHWC" if nhwc else "NCHW"
    size, size_from = None, "model"
    if len(shape) == 4:
        hw = shape[1:3] if nhwc else shape[2:4]
        if all(isinstance(d, int) and d > 0 for d in hw):
            size = tuple(hw)
    if size is None:
        size, size_from = DEFAULT_SIZE, "default"
        meta = metadata.get(META["input_size"], "")
        m = re.fullmatch(r"\s*(\d+)\s*[,x×]\s*(\d+)\s*", meta)
        if m and int(m.group(1)) > 0 and int(m.group(2)) > 0:
            size, size_from = (int(m.group(1)), int(m.group(2))), "metadata"
    return InputInfo(vi.name, layout, shape, vi.type.tensor_type.elem_type, size, size_from)

