"""onnxruntime, and only here: sessions built from in-memory models, CPU by default.

A model opened by :func:`onnxviz.load` keeps its weights on disk as external-data references
(into the model file itself, or into its external-data files). Sessions are built from the
serialized sub-model with ``session.model_external_initializers_file_folder_path`` set to the
model's folder, so onnxruntime reads exactly the initializers the sub-model uses, straight
from the original files: no copy of the weights is written anywhere, and nothing is written
into the model's folder.

>>> sess = session(sub_proto, "/models")                  # doctest: +SKIP
>>> run(sess, {"input": x}, ["block1_conv1/Relu:0"])      # doctest: +SKIP

:func:`shape_stages` gives :mod:`onnxviz.graph.shapes` its two onnxruntime-backed stages.

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

__all__ = ["session", "run", "providers", "shape_stages", "blocked"]

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


def session(model: onnx.ModelProto, base_dir: str, *, threads: int = 0, arena: bool = True,
            blocked: bool | None = None, spin: bool = True) -> ort.InferenceSession:
    """An ``InferenceSession`` for ``model`` whose external data lives in ``base_dir``.

    ``threads``: onnxruntime's intra-op threads (0: every core). ``spin=False``: its idle
    threads sleep instead of spinning, leaving the cores to other work between runs (a dataset
    pass decodes the next batch meanwhile: on 2 cores, 570 images/s against 433 with spinning,
    ``scripts/bench_dataset.py``).

    ``arena=False`` turns onnxruntime's CPU memory arena off (feature-map sessions do, for
    the memory guard): the arena keeps every page a run touched, and a freed buffer serves
    only a request no larger than itself, so the peak RSS runs past the tensors alive at
    once by however the sizes of the run's buffers fall. Measured (``scripts/bench_budget.py``,
    BENCHMARKS.md, "Memory guard"): a style-transfer net at 720² held 407 MiB with the arena
    and 307 without, for 243 MiB alive at once; a ResNet18 at batch 8, all layers, 115-133
    MiB with it and 96 without, for 82. A first run takes as long either way (VGG16:
    0.70-1.14 s both, on a shared machine); repeated runs of one session are 11-38% slower
    without it (their pages are mapped again each run).

    ``blocked``: onnxruntime's NCHWc layout for convs; ``None``: on below :data:`LARGE_WEIGHTS`
    of weights. A session run hundreds of times (ScoreCAM) turns it on whatever the size."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 4  # errors come back as exceptions; the log would repeat them on stderr
    options.enable_cpu_mem_arena = arena
    if threads:
        options.intra_op_num_threads = threads
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry(_EXTERNAL_FOLDER, base_dir)
    check_external(model, base_dir)  # before onnxruntime reads any file (it checks less in older versions)
    if blocked is None:
        blocked = weight_bytes(model) < LARGE_WEIGHTS
    extra = {} if blocked else {"disabled_optimizers": ["NchwcTransformer"]}
    try:
        return ort.InferenceSession(model.SerializeToString(), options, providers=providers(), **extra)
    except Exception as e:  # onnxruntime raises its own exception types (Fail, InvalidGraph, …)
        raise ModelError(f"onnxruntime cannot load the model: {_one_line(e)}") from None


def weight_bytes(model: onnx.ModelProto, convs: bool = False) -> int:
    """Bytes of the main graph's initializers, inline or external (never read to count them);
    ``convs``: only the weights convolutions read (what the NCHWc layout copies)."""
    total = 0
    read = {n.input[1] for n in model.graph.node if convs and n.op_type in _BLOCKED_OPS and len(n.input) > 1}
    for t in model.graph.initializer:
        if convs and t.name not in read:
            continue
        if t.data_location == onnx.TensorProto.EXTERNAL:
            length = next((e.value for e in t.external_data if e.key == "length"), "")
            total += int(length) if length.isdigit() else 0
        else:
            total += t.ByteSize()
    return total


_BLOCKED_OPS = {"Conv", "FusedConv", "ConvTranspose"}


def blocked(model: onnx.ModelProto) -> bool:
    """Whether a session run many times should use the NCHWc layout: when the weights it would
    copy into that layout, the convolutions', are under :data:`LARGE_WEIGHTS` (VGG16 with its
    classifier: 56 of 528 MB). Measured on VGG16 at 224², batch 1 (2 threads): 0.216 s a run
    blocked, 0.246 s not (the class activation maps' sessions use it)."""
    return weight_bytes(model, convs=True) < LARGE_WEIGHTS


def run(sess: ort.InferenceSession, feeds: dict, outputs: list[str]) -> list:
    """Run ``sess``; onnxruntime's errors become one-line :class:`ModelError`."""
    try:
        return sess.run(outputs, feeds)
    except Exception as e:
        raise ModelError(f"onnxruntime failed to run the model: {_one_line(e)}") from None


# ---------------------------------------------------------------- shape inference stages

def _elem_type(ort_type: str) -> int:
    """``'tensor(float16)'`` → ``onnx.TensorProto.FLOAT16`` (0 if unknown)."""
    name = ort_type[len("tensor("):-1] if ort_type.startswith("tensor(") else ""
    return onnx.TensorProto.DataType.Value(name.upper()) if name.upper() in onnx.TensorProto.DataType.keys() else 0


def _symbolic_class():
    """onnxruntime's ``SymbolicShapeInference``, loaded from its file: the package
    ``onnxruntime.tools`` imports torch when it is installed (1.7 s here), the module
    itself only sympy (0.35-0.5 s, measured: BENCHMARKS.md, "Shape inference")."""
    import importlib.util
    import sys

    name = "onnxviz._ort_symbolic_shape_infer"
    if name not in sys.modules:
        path = os.path.join(os.path.dirname(ort.__file__), "tools", "symbolic_shape_infer.py")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name].SymbolicShapeInference


def symbolic_shapes(model: onnx.ModelProto, names) -> dict:
    """``{name: (dims, elem_type)}`` from onnxruntime's symbolic shape inference (contrib ops
    it has a rule for, computed shapes onnx's data propagation does not follow).

    Driven step by step rather than through ``SymbolicShapeInference.infer_shapes``, which
    writes ``sym_shape_infer_temp.onnx`` into the working folder when it cannot size
    everything; what it sized before stopping is kept.
    """
    infer = _symbolic_class()(2**31 - 1, True, False, 0)
    try:
        infer._preprocess(model)
        while infer.run_:
            infer._infer_impl()
    except Exception:  # it stops at the first op it cannot follow (asserts): keep what it found
        pass
    known = getattr(infer, "known_vi_", {})
    out = {}
    for name in names:
        vi = known.get(name)
        if vi is not None and vi.type.tensor_type.HasField("shape"):
            dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                         for d in vi.type.tensor_type.shape.dim)
            out[name] = (dims, vi.type.tensor_type.elem_type)
    return out


def session_shapes(model: onnx.ModelProto, names) -> dict:
    """``{name: (dims, elem_type)}`` as an onnxruntime session infers them when it is built
    on ``model`` with ``names`` as extra outputs: every op onnxruntime registers (contrib
    ones included) has its shape rule there, and constant folding (the basic optimisation
    level) gives the shape tensors computed from constants. Nothing is run."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    have = {o.name for o in exposed.graph.output}
    exposed.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in have)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 4
    try:
        sess = ort.InferenceSession(exposed.SerializeToString(), options, providers=providers())
    except Exception as e:  # an op onnxruntime does not know: the run would fail the same way
        raise ModelError(f"onnxruntime cannot load the model: {_one_line(e)}") from None
    wanted = set(names)
    # onnxruntime gives [] both for a scalar and for a shape it could not infer: [] is no answer
    return {o.name: (tuple(d if isinstance(d, int) else (d or "?") for d in o.shape), _elem_type(o.type))
            for o in sess.get_outputs() if o.name in wanted and o.shape}


def shape_stages() -> list:
    """The fallback stages of :class:`onnxviz.graph.shapes.Shapes`, in order."""
    return [("symbolic", symbolic_shapes), ("session", session_shapes)]
