"""The model card as plain data: where the model comes from, its input, size and layer table.

>>> from onnxviz.report.card import model_card
>>> card = model_card(onnxviz.load("models/demo.onnx"))       # doctest: +SKIP
>>> card["parameters"], card["layers"][0]["name"]             # doctest: +SKIP
(72665, 'block1_conv1')

The layer table is :meth:`onnxviz.Model.summary`'s rows as they are: a field a later version
adds to :meth:`onnxviz.Layer.as_dict` (a receptive field, say) is a new column of the report
without a change here (see :data:`onnxviz.report.html.COLUMNS`). Reads no weight bytes and
runs nothing, so a notebook's ``Model._repr_html_`` is instant.

Known limits: "parameters" counts the elements of every initializer and ``Constant`` tensor
except int64, bool and string ones (shapes and axes); a shared weight counts once.
"""

from __future__ import annotations

import math
import os

import onnx

from ..graph.index import META

__all__ = ["model_card", "METADATA_HIDDEN", "METADATA_MAX"]

#: Metadata keys the card leaves out (already shown elsewhere, or long machine data).
METADATA_HIDDEN = (META["layer_names"], META["labels"])
#: Longer metadata values are cut to this many characters (the card says how long they were).
METADATA_MAX = 400
_NOT_PARAMETERS = {onnx.TensorProto.INT64, onnx.TensorProto.BOOL, onnx.TensorProto.STRING}


def _parameters(model) -> int:
    tensors = list(model._index.initializers.values())
    for node in model._index.nodes:
        if node.op_type == "Constant":
            tensors += [a.t for a in node.attribute if a.type == onnx.AttributeProto.TENSOR]
    return sum(math.prod(t.dims) for t in tensors if t.data_type not in _NOT_PARAMETERS)


def _cut(value: str) -> str:
    if len(value) <= METADATA_MAX:
        return value
    return f"{value[:METADATA_MAX]}… ({len(value):,} characters)"


def model_card(model) -> dict:
    """A JSON-ready card: :meth:`Model.summary` plus file size, parameters and channel order."""
    from ..render.filters import model_channel_order

    info = model.summary()
    try:
        size = os.path.getsize(model.path)
    except OSError:
        size = None
    info.update(
        file=os.path.basename(model.path),
        file_bytes=size,
        ir_version=model.proto.ir_version,
        graph=model.proto.graph.name,
        parameters=_parameters(model),
        channel_order=model_channel_order(model),
        metadata={k: _cut(v) for k, v in info["metadata"].items() if k not in METADATA_HIDDEN},
        outputs=[o.name for o in model.proto.graph.output],
    )
    return info
