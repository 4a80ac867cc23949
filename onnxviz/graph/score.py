"""Which tensor holds a classifier's class scores: the logits, before a final Softmax.

>>> from onnxviz.graph.score import class_score_tensor
>>> class_score_tensor(index)              # doctest: +SKIP
'vgg16_1/predictions_1/Add:0'

A class score is the model output for that class, or — when the output is a ``Softmax``
(through ``Identity``, ``Flatten``, ``Reshape``, ``Squeeze``, a ``Cast`` or a QDQ pair) — the logit that
the Softmax reads (Grad-CAM's and saliency's convention: probabilities saturate).

Known limits: the first graph output is the classifier's; a ``LogSoftmax`` output is kept as
the score (log-probabilities do not saturate).
"""

from __future__ import annotations

from .index import Index

__all__ = ["class_score_tensor"]

_THROUGH = {"Identity", "Flatten", "Reshape", "Squeeze", "Cast", "QuantizeLinear", "DequantizeLinear"}


def class_score_tensor(index: Index, graph_outputs: list[str]) -> str:
    """The class-score tensor of the graph whose outputs are ``graph_outputs`` (in order)."""
    out = graph_outputs[0]
    cur = out
    for _ in range(8):
        node = index.producers.get(cur)
        if node is None:
            break
        if node.op_type == "Softmax":
            return node.input[0]
        if node.op_type not in _THROUGH:
            break
        cur = node.input[0]
    return out
