"""onnxruntime, and only here: sessions built from in-memory models, CPU by default.

A model opened by :func:`onnxviz.load` keeps its weights on disk as external-data references
(into the model file itself, or into its external-data files). Sessions are built from the
serialized sub-model with ``session.model_external_initializers_file_folder_path`` set to the
model's folder, so onnxruntime reads exactly the initializers the sub-model uses, straight
from the original files: no copy of the weights is written anywhere, and nothing is written
into the model's folder.

>>> sess = session(sub_proto, "/models")                  # doctest: +SKIP
>>> run(sess, {"input": x}, ["block1_conv1/Relu:0"])      # doctest: +SKIP

Graph optimisations stay on (level ``ORT_ENABLE_ALL``): asking for the post-activation
tensor of a conv keeps the Conv+activation fusion.
"""

from __future__ import annotations

import onnx
import onnxruntime as ort

from .errors import ModelError

__all__ = ["session", "run", "providers"]

_EXTERNAL_FOLDER = "session.model_external_initializers_file_folder_path"


def providers() -> list[str]:
    """Execution providers to use: the CPU one (the only one onnxviz promises)."""
    return ["CPUExecutionProvider"]


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def session(model: onnx.ModelProto, base_dir: str, *, threads: int = 0) -> ort.InferenceSession:
    """An ``InferenceSession`` for ``model`` whose external data lives in ``base_dir``."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    options.add_session_config_entry(_EXTERNAL_FOLDER, base_dir)
    try:
        return ort.InferenceSession(model.SerializeToString(), options, providers=providers())
    except Exception as e:  # onnxruntime raises its own exception types (Fail, InvalidGraph, …)
        raise ModelError(f"onnxruntime cannot load the model: {_one_line(e)}") from None


def run(sess: ort.InferenceSession, feeds: dict, outputs: list[str]) -> list:
    """Run ``sess``; onnxruntime's errors become one-line :class:`ModelError`."""
    try:
        return sess.run(outputs, feeds)
    except Exception as e:
        raise ModelError(f"onnxruntime failed to run the model: {_one_line(e)}") from None
