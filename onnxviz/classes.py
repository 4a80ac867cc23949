"""Class scores: which model output holds them, the logit before a final Softmax, class names.

>>> import onnxviz
>>> from onnxviz.classes import class_scores, read_labels, top_classes
>>> m = onnxviz.load("models/demo.onnx")                                  # doctest: +SKIP
>>> scores, out = class_scores(m, x)          # x: features.input_tensor(m, images)  # doctest: +SKIP
>>> fm = m.feature_maps(images, also=class_tensors(m))      # or with the maps, one run  # doctest: +SKIP
>>> scores, out = class_scores(m, values=fm.also)                         # doctest: +SKIP
>>> out                                                                   # doctest: +SKIP
ClassOutput(tensor='predictions_1/BiasAdd:0', output='predictions', softmax=True)
>>> top_classes(scores, 3, read_labels(m, "labels.txt", scores.shape[1]), out.softmax)[0][0]  # doctest: +SKIP
{'index': 4, 'name': 'checkerboard', 'score': 11.2, 'probability': 0.998}

A class score is the model output for that class, or the logit before a final ``Softmax``
(or ``LogSoftmax``): from each graph output the walk goes back through the ops that only
reshape or pass a tensor on, one rule per op in :data:`PASS_THROUGH`, each with the
exporter that makes it. An output is a class output when its value, per image, is one score
per class: ``(N, K)`` with ``K ≥ 2``, trailing 1-sized axes allowed (``(N, K, 1, 1)``). The
first graph output that is one wins; a model with none (a feature extractor, a
style-transfer or segmentation net) raises :class:`~onnxviz.errors.UnsupportedModelError`
saying what its outputs are.

Class names, in this order: a labels file (one name per line; ``--labels FILE``), the model's
``onnxviz.labels`` metadata (a JSON list of names, or one name per line), else the indices.

Known limits: the decision is taken on the values of one run (shapes are often unknown
before); quantized integer outputs are read as their integer levels.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .budget import check_budget
from .errors import OnnxvizError, OnnxvizWarning, UnsupportedModelError, format_shape, listing
from .graph.index import META

__all__ = ["ClassOutput", "class_tensors", "class_scores", "read_labels", "top_classes"]

#: Ops between the logits' Softmax and a graph output that keep the scores as they are.
PASS_THROUGH = {
    "Identity": "tf2onnx's output renames (vgg16_1/predictions_1/Softmax:0 → an Identity)",
    "Reshape": "PyTorch's view/flatten after a 1×1-conv classifier (SqueezeNet)",
    "Flatten": "Caffe2 / ONNX Model Zoo nets ending in Softmax → Flatten",
    "Squeeze": "tf2onnx's 1×1-conv heads (MobileNet: Softmax → Squeeze)",
    "Cast": "float16 models widened to float32 at the output",
    "Dropout": "inference-mode Dropout left after the Softmax by older exporters",
}
_SOFTMAX = ("Softmax", "LogSoftmax")


@dataclass(frozen=True)
class ClassOutput:
    tensor: str      # whose values are the class scores: the Softmax's input when there is one
    output: str      # the graph output it leads to
    softmax: bool    # whether ``tensor`` is the logit before a final Softmax / LogSoftmax


def _logit_of(model, output: str) -> ClassOutput:
    """The tensor to score ``output`` by: the input of a final Softmax, else ``output`` itself."""
    cur = output
    for _ in range(16):
        node = model._index.producers.get(cur)
        if node is None or not node.input:
            break
        if node.op_type in _SOFTMAX and node.domain in ("", "ai.onnx"):
            return ClassOutput(node.input[0], output, True)
        if node.op_type not in PASS_THROUGH:
            break
        cur = node.input[0]
    return ClassOutput(output, output, False)


def _per_class(value: np.ndarray) -> np.ndarray | None:
    """``value`` as ``(N, K)`` scores if it is one score per class and image, else ``None``."""
    shape = list(value.shape)
    while len(shape) > 2 and shape[-1] == 1:
        shape.pop()
    if len(shape) != 2 or shape[1] < 2 or not np.issubdtype(value.dtype, np.number):
        return None
    return np.asarray(value, np.float32).reshape(shape)


def _candidates(model) -> list[ClassOutput]:
    outputs = [o.name for o in model.proto.graph.output]
    return [_logit_of(model, name) for name in outputs if name in model._index.producers]


def class_tensors(model) -> tuple:
    """The tensors :func:`class_scores` reads: one per graph output (its logit where there is one).
    Fetch them with the feature maps, in the same run: ``feature_maps(..., also=class_tensors(m))``."""
    return tuple(dict.fromkeys(c.tensor for c in _candidates(model)))


def class_scores(model, x: np.ndarray | None = None, *, values: dict | None = None,
                 max_bytes=None) -> tuple[np.ndarray, ClassOutput]:
    """``(scores (N, K) float32, ClassOutput)`` for the ready input tensor ``x``, or from
    ``values``, ``{tensor: array}`` of :func:`class_tensors` already fetched.

    Raises :class:`UnsupportedModelError` when no graph output is one score per class.
    """
    candidates = _candidates(model)
    if not candidates:
        outputs = [o.name for o in model.proto.graph.output]
        raise UnsupportedModelError(f"the model has no class output: no node makes its outputs "
                                    f"({listing(outputs) or 'none'})")
    if values is None:
        from .features import run_tensors

        tensors = class_tensors(model)
        check_budget(model, tensors, x.shape, max_bytes, images=True)
        values = dict(zip(tensors, run_tensors(model, x, tensors)))
    for c in candidates:
        scores = _per_class(values[c.tensor])
        if scores is not None:
            return scores, c
    shapes = listing(f"'{c.output}' is {format_shape(values[c.tensor].shape[1:]) or 'a scalar'}"
                     for c in candidates)
    raise UnsupportedModelError(f"the model has no class output (one score per class and image): {shapes} "
                                "per image")


def _lines(text: str) -> list[str]:
    names = [line.strip() for line in text.splitlines()]
    while names and not names[-1]:
        names.pop()
    return names


def _unreadable(e: Exception) -> str:
    if isinstance(e, FileNotFoundError):
        return "does not exist"
    if isinstance(e, IsADirectoryError):
        return "is a folder, not a text file"
    if isinstance(e, UnicodeDecodeError):
        return "is not UTF-8 text (one class name a line)"
    return f"cannot be read: {e.strerror or e}"


def read_labels(model, path=None, classes: int | None = None) -> list[str] | None:
    """Class names: from ``path`` (one a line), else the ``onnxviz.labels`` metadata, else ``None``.

    ``classes``: the number of classes the model scores; a labels file of another length is
    refused, metadata of another length is warned about and ignored.
    """
    if path is not None:
        shown = os.fspath(path)
        try:
            names = _lines(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise OnnxvizError(f"labels file '{shown}' {_unreadable(e)}") from None
        if not names:
            raise OnnxvizError(f"labels file '{shown}' is empty; give one class name a line")
        if classes is not None and len(names) != classes:
            raise OnnxvizError(f"labels file '{shown}' has {len(names)} name{'s' if len(names) != 1 else ''}; "
                               f"the model scores {classes} classes (one name a line, in class order)")
        return names
    meta = model.metadata.get(META["labels"], "")
    if not meta.strip():
        return None
    try:
        names = json.loads(meta)
    except ValueError:
        names = _lines(meta)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        names = None
    if names is None or (classes is not None and len(names) != classes):
        what = "is not a JSON list of names" if names is None else f"has {len(names)} names for {classes} classes"
        warnings.warn(f"model metadata {META['labels']} {what}; classes are shown by index",
                      OnnxvizWarning, stacklevel=2)
        return None
    return names


def top_classes(scores: np.ndarray, k: int, labels: list[str] | None = None,
                softmax: bool = False) -> list[list[dict]]:
    """Per image, its ``k`` best classes, best first: ``{index, name, score, probability}``.

    ``probability`` is the softmax of the scores when they are logits (``softmax=True``),
    else ``None`` (the scores are then the model's own outputs, whatever they mean).
    """
    scores = np.asarray(scores, np.float64)
    probs = None
    if softmax:
        e = np.exp(scores - scores.max(axis=1, keepdims=True))
        probs = e / e.sum(axis=1, keepdims=True)
    out = []
    for n in range(len(scores)):
        order = np.argsort(-scores[n], kind="stable")[:k]
        out.append([{"index": int(c), "name": labels[c] if labels else str(int(c)),
                     "score": float(scores[n, c]),
                     "probability": None if probs is None else float(probs[n, c])} for c in order])
    return out
