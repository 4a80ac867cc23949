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
tensor of a conv keeps the Conv+activation fusion. Except one, for large models: see
:data:`LARGE_WEIGHTS`.
"""

from __future__ import annotations

import os
import re

import onnx

# onnxruntime 1.32 writes a telemetry session file ('.ses') into $TMPDIR as it is imported;
# onnxviz writes only where it is told to. (No effect if onnxruntime was imported before.)
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
import onnxruntime as ort  # noqa: E402

from .errors import ModelError
from .graph.weights import check_external

__all__ = ["session", "run", "providers"]

_EXTERNAL_FOLDER = "session.model_external_initializers_file_folder_path"

#: From this many bytes of weights in a session, onnxruntime's ``NchwcTransformer`` is turned
#: off. When the session is built it copies every conv weight into a blocked layout (3–5 s
#: per GB), holding for a while up to ~4× the tensor being converted, and keeps the copies:
#: the weights end up in anonymous memory instead of the memory-mapped file pages that
#: onnxruntime otherwise uses in place. Measured on a 2.15 GB model (BENCHMARKS.md, "Large
#: models"): its deepest layer (2051 MiB of weights) took 7–9 s and 2897 MiB peak RSS with
#: it, 1.2 s and 2140 MiB without; a 256 MiB layer 1.6 s and 1105 MiB with it, 0.5 s and
#: 346 MiB without. Models below the limit keep it: VGG16's convs (56 MB of weights) run
#: ~25% faster blocked, for ~0.1 s more of session build.
LARGE_WEIGHTS = 256 << 20


def providers() -> list[str]:
    """Execution providers to use: the CPU one (the only one onnxviz promises)."""
    return ["CPUExecutionProvider"]


_ORT_CODE = re.compile(r"\[ONNXRuntimeError\] : \d+ : \w+ : ")
# "file.cc:123 Function " or "/src/file.h:46 void ns::Function(args) ": where in onnxruntime's C++
_CPP_WHERE = re.compile(r"(?:\S+/)?\w+\.(?:cc|h|cpp):\d+ (?:(?:[\w:<>~*&]+ )?[\w:<>~]+\([^()]*\)|\w+) ")
_OPSET = re.compile(r"Opset (\d+) is under development.*domain (\S+) is till opset (\d+)")
_UNKNOWN_OP = re.compile(r"Fatal error: ([\w.]*):(\w+)\((-?\d+)\) is not a registered function/op")


def _one_line(e: Exception) -> str:
    """onnxruntime's message on one line, without its error code and C++ source locations."""
    text = _CPP_WHERE.sub("", _ORT_CODE.sub("", str(e))).strip()
    m = _OPSET.search(text)
    if m:
        return (f"the model uses {m.group(2)} opset {m.group(1)}; onnxruntime {ort.__version__} supports "
                f"up to opset {m.group(3)}")
    m = _UNKNOWN_OP.search(text)
    if m:
        domain = m.group(1) or "ai.onnx"
        return (f"op {domain}:{m.group(2)} is unknown to onnxruntime {ort.__version__} (a custom op, or "
                "one from a newer opset or an op domain the model does not import)")
    lines = text.splitlines()
    return lines[0] if lines else type(e).__name__


def session(model: onnx.ModelProto, base_dir: str, *, threads: int = 0) -> ort.InferenceSession:
    """An ``InferenceSession`` for ``model`` whose external data lives in ``base_dir``."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 4  # errors come back as exceptions; the log would repeat them on stderr
    if threads:
        options.intra_op_num_threads = threads
    options.add_session_config_entry(_EXTERNAL_FOLDER, base_dir)
    check_external(model, base_dir)  # before onnxruntime reads any file (it checks less in older versions)
    extra = {"disabled_optimizers": ["NchwcTransformer"]} if weight_bytes(model) >= LARGE_WEIGHTS else {}
    try:
        return ort.InferenceSession(model.SerializeToString(), options, providers=providers(), **extra)
    except Exception as e:  # onnxruntime raises its own exception types (Fail, InvalidGraph, …)
        raise ModelError(f"onnxruntime cannot load the model: {_one_line(e)}") from None


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the main graph's initializers, inline or external (never read to count them)."""
    total = 0
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            length = next((e.value for e in t.external_data if e.key == "length"), "")
            total += int(length) if length.isdigit() else 0
        else:
            total += t.ByteSize()
    return total


def run(sess: ort.InferenceSession, feeds: dict, outputs: list[str]) -> list:
    """Run ``sess``; onnxruntime's errors become one-line :class:`ModelError`."""
    try:
        return sess.run(outputs, feeds)
    except Exception as e:
        raise ModelError(f"onnxruntime failed to run the model: {_one_line(e)}") from None
