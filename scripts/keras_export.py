"""Low-memory export of a Keras 3 CNN to ONNX (tf2onnx), with onnxviz metadata.

Usage::

    from keras_export import export_keras_model
    info = export_keras_model(model, "models/vgg16.onnx", preprocess="caffe",
                              channel_order="BGR", source="keras.applications.VGG16 ...",
                              weights_desc="imagenet")

Why not the plain path
----------------------
``tf2onnx.convert.from_keras(model, input_signature=...)`` freezes the model: every variable
becomes a TensorFlow ``Const`` in a GraphDef, which is then copied by grappler, by tf2onnx's
own graph (numpy arrays), by its optimizers (``optimize_graph`` deep-copies the whole graph
before every optimizer pass so that it can roll back on error) and by protobuf
serialisation. For VGG16 (138 M parameters, 553 MB of float32) that is OOM-killed at 24 GB;
``large_model=True`` still peaks at ~17.8 GB.

Technique used here: weights as graph inputs, then written back
-----------------------------------------------------------------
1. **Architecture only.** A ``tf.function`` is traced around ``model.stateless_call``
   (Keras 3), with the image *and every Keras variable* (trainable and non-trainable, in
   ``model.trainable_variables + model.non_trainable_variables`` order) as function
   arguments named ``w0, w1, ...``. Nothing is captured, so freezing finds no variables and
   tf2onnx converts a graph without a single large constant (VGG16: 0.6 s, +50 MB).
   Each weight arrives in ONNX as a graph input, followed by the layout ops that tf2onnx
   inserts when a weight is not constant (``Transpose`` HWIO->OIHW for Conv kernels,
   ``Reshape``+``Transpose`` for depthwise kernels, the BatchNorm arithmetic
   ``Add/Sqrt/Reciprocal/Mul/Sub`` on gamma/beta/mean/variance, ...). Constant *tensors*
   a layer captured at trace time (e.g. ``keras.layers.Normalization``'s mean/variance in
   EfficientNet) also come out as inputs; they are treated like weights.
2. **Write the real weights in.** Every weight input is replaced by the variable's actual
   value, and every node whose inputs are all constant (i.e. the weight-only sub-graphs of
   step 1) is evaluated once with ``onnx.reference`` - exactly what tf2onnx would have done,
   op by op, because the ops are tf2onnx's own. A weight value is read from its variable
   when first needed and dropped after its last use; weights used as they are (Dense
   kernels) are not even read until they are written to the file.
3. **Tidy with tf2onnx's own optimiser**, still without the big tensors: constants that only
   feed a Conv/ConvTranspose weight or bias slot or a MatMul/Gemm weight are shown to the
   optimiser as typed graph inputs (it never needs their values), everything else (BN
   scale/shift, shapes, pads) as real constants. The transpose optimiser then removes the
   NCHW<->NHWC ``Transpose`` pairs around each conv exactly as in a normal tf2onnx export.
4. **Write** the small graph with ``SerializeToString`` and stream the big tensors after it
   as extra ``GraphProto.initializer`` fields, one tensor in memory at a time (protobuf
   allows a repeated field's entries anywhere in a message; ``onnx.load``, the ONNX checker
   with ``full_check``, onnxruntime and the onnxviz loader all read it). Above 1.8 GB of
   weights the tensors go to ``<name>.onnx.data`` (ONNX external data) instead.
5. **Self-check** (``check=True``): every Conv's weight must equal its Keras kernel
   (transposed HWIO->OIHW, depthwise (kh,kw,C,m)->(C*m,1,kh,kw)), which also proves the
   layer-name mapping; then Keras and onnxruntime run one random preprocessed image and
   ``max|keras - onnx| / max|keras|`` over the outputs must be <= 1e-4. Only then is the
   temporary file renamed to ``out_path``.

Full VGG16 (138 M parameters): ~7 s for the export (~10 s for the whole CLI run with
imports and model building) and a 2.99 GB peak RSS, of which 1.9 GB is TensorFlow + Keras
building the model before the export starts and ~0.5 GB the onnxruntime self-check session.

Differences from a plain tf2onnx export (all deliberate):
- BatchNorm is *not* folded into the preceding conv's weights (in the plain path grappler's
  ``MulConvPushDown`` does that, and the conv then gets a generated name such as
  ``Conv__339`` with weight ``.../Conv1_1/convolution/merged_input:0``). Here each Conv node keeps the Keras kernel as is,
  so ``filters()`` shows the Keras filters, followed by ``Mul`` (BN scale) and ``Add``
  (BN shift) with per-channel constants. onnxruntime fuses them again when it loads.
- Node names carry no model-name prefix (``block1_conv1_1/BiasAdd`` rather than
  ``vgg16_1/block1_conv1_1/BiasAdd``) because ``stateless_call`` does not open the
  model's name scope. Conv nodes are named after the TF op tf2onnx made them from: a conv
  with bias merged into it after the ``BiasAdd`` (``block1_conv1_1/BiasAdd``), one without
  after the ``Conv2D`` (``Conv1_1/convolution``), a depthwise one ``.../depthwise``. Nobody
  should parse them: see ``onnxviz.layer_names`` below.

Graph interface: one input named after the Keras ``InputLayer``, float32, **NHWC** (as
tf2onnx makes it; a Transpose to NCHW follows inside), batch dimension dynamic (``"N"``);
outputs named after the Keras output layers (e.g. ``predictions``).

Metadata written (read by the onnxviz loader): ``onnxviz.preprocess``,
``onnxviz.channel_order``, ``onnxviz.input_size`` (``"H,W"``), ``onnxviz.layer_names``,
``onnxviz.source``, ``onnxviz.weights``. ``onnxviz.layer_names`` maps every Conv node name of
the final graph to its Keras layer. It is *not* derived from node names: each Conv's weight
initializer is traced back (through the folded Transpose/Reshape) to the ``wN`` input,
i.e. to the Keras variable, whose owning layer gives the name. A layer that owns several
conv kernels (SeparableConv2D) gets ``layer/depthwise_kernel`` etc.; a layer called twice
gets ``layer``, ``layer_2``...

NumPy 2: tf2onnx 1.17 still calls ``np.product`` (removed in NumPy 2.0); see
``_import_tf2onnx``, the only place that deals with it.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

# onnxviz is installed with the export extra: its presets and protobuf varint are the ones used
# here, so the self-check preprocesses exactly as onnxviz will.
from onnxviz.graph.wire import encode_varint as _varint
from onnxviz.preprocess import PRESETS as PREPROCESS_PRESETS
from onnxviz.preprocess import apply_preset
CHANNEL_ORDERS = ("BGR", "RGB")
META_PREFIX = "onnxviz."
# Above this many bytes of weights the model is saved with ONNX external data.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
# ops whose outputs are never folded even if all inputs are constant
_NO_FOLD_PREFIXES = ("Random", "Multinomial", "Bernoulli", "If", "Loop", "Scan")



def _rss_gb() -> float:
    try:
        import psutil
        return psutil.Process().memory_info().rss / 1e9
    except Exception:  # psutil is optional
        return float("nan")


class ExportError(RuntimeError):
    """A conversion or self-check failure; the message is one line for the user."""


def _import_tf2onnx():
    """Import tf2onnx, after making it work with NumPy 2.

    tf2onnx 1.17 calls ``np.product`` (an alias removed in NumPy 2.0) in
    ``graph.py`` (the large-model / external-tensor path) and ``tfjs_utils.py``; re-creating
    the alias is the only change needed. This is the one place that does it.
    """
    if not hasattr(np, "product"):
        np.product = np.prod
    import tf2onnx  # noqa: E402  (must come after the alias)

    import logging
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    return tf2onnx


# --------------------------------------------------------------------------- preprocessing
def preprocess_image(img_uint8: np.ndarray, preset: str) -> np.ndarray:
    """HxWx3 uint8 RGB -> float32 HxWx3 as the model expects: onnxviz's own presets."""
    if preset not in PREPROCESS_PRESETS:
        raise ExportError(f"unknown preprocess {preset!r}; expected one of {', '.join(PREPROCESS_PRESETS)}")
    return apply_preset(img_uint8.astype(np.float32), preset).astype(np.float32)


# --------------------------------------------------------------------------- Keras side
def _input_layer_name(model) -> str:
    try:
        return model.inputs[0]._keras_history.operation.name
    except Exception:  # pragma: no cover - unusual models
        return "input"


def _output_names(model, n: int) -> list[str]:
    names = []
    try:
        names = [t._keras_history.operation.name for t in model.outputs]
    except Exception:
        pass
    if len(names) != n or len(set(names)) != n:
        names = ["output"] if n == 1 else [f"output_{i}" for i in range(n)]
    return names


def _variable_owners(model, variables) -> dict[int, tuple[str, str, bool]]:
    """index of variable -> (Keras layer name, attribute/variable name, is depthwise)."""
    by_id = {}
    # pre-order over nested layers: an inner layer overwrites its container's claim
    for layer in model._flatten_layers(include_self=False, recursive=True):
        for attr in ("kernel", "depthwise_kernel", "pointwise_kernel", "bias",
                     "depthwise_bias", "pointwise_bias"):
            try:
                v = getattr(layer, attr, None)
            except Exception:
                v = None
            if v is not None and hasattr(v, "path"):
                # Keras 3 DepthwiseConv2D keeps its (kh, kw, C, m) kernel in ``kernel``
                depthwise = attr == "depthwise_kernel" or (
                    attr == "kernel" and type(layer).__name__.startswith("DepthwiseConv"))
                by_id[id(v)] = (layer.name, attr, depthwise)
    owners = {}
    for i, v in enumerate(variables):
        if id(v) in by_id:
            owners[i] = by_id[id(v)]
        else:  # Keras 3 variable paths are "<layer path>/<variable name>"
            parts = str(getattr(v, "path", v.name)).split("/")
            owners[i] = (parts[-2] if len(parts) > 1 else parts[0], parts[-1], False)
    return owners


# --------------------------------------------------------------------------- ONNX side
def _np_dtype_to_onnx(dt) -> int:
    from onnx import helper
    return helper.np_dtype_to_tensor_dtype(np.dtype(dt))


def _eval_node(node, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Evaluate one ONNX node on constant inputs, by the ONNX reference implementation."""
    from onnx.reference import ReferenceEvaluator
    outs = ReferenceEvaluator(node).run(None, {n: a for n, a in zip(node.input, arrays) if n})
    return [np.ascontiguousarray(o) for o in outs]


def _fold_weights(graph, weight_inputs: dict, load_weight):
    """Step 2: evaluate every node computable from initializers + weights alone.

    Returns (remaining nodes, const dict name->array, origins name->set(weight index)).
    Weight values are loaded lazily and released after their last consumer.
    """
    from onnx import numpy_helper

    consts: dict[str, np.ndarray | None] = {}
    origins: dict[str, frozenset] = {}
    for init in graph.initializer:
        consts[init.name] = numpy_helper.to_array(init)
        origins[init.name] = frozenset()
    for name, key in weight_inputs.items():
        consts[name] = None  # loaded lazily
        origins[name] = frozenset([key]) if isinstance(key, int) else frozenset()

    # remaining uses of every tensor (so that folded intermediates can be dropped)
    uses = defaultdict(int)
    for node in graph.node:
        for i in node.input:
            uses[i] += 1
    for o in graph.output:
        uses[o.name] += 1

    def get(name):
        a = consts[name]
        if a is None:
            a = consts[name] = load_weight(weight_inputs[name])
        return a

    def release(name):
        uses[name] -= 1
        if uses[name] <= 0 and name in consts:
            del consts[name]  # last consumer folded: free the array (e.g. the HWIO kernel)

    remaining = []
    for node in graph.node:
        foldable = (node.input and all((not i) or i in consts for i in node.input)
                    and not node.op_type.startswith(_NO_FOLD_PREFIXES)
                    and node.domain in ("", "ai.onnx"))
        if not foldable:
            remaining.append(node)
            continue
        outs = _eval_node(node, [get(i) if i else None for i in node.input])
        org = frozenset().union(*(origins[i] for i in node.input if i))
        for name, val in zip(node.output, outs):
            consts[name] = val
            origins[name] = org
        for i in node.input:
            if i:
                release(i)
    # forget whatever no remaining node / output uses
    needed = {i for n in remaining for i in n.input} | {o.name for o in graph.output}
    for name in list(consts):
        if name not in needed:
            del consts[name]
    # weights used as is (e.g. a Dense kernel by MatMul) are still None: loaded when written
    return remaining, consts, origins


# consumer slots whose constant the tf2onnx optimiser never needs to look at
_OPAQUE_SLOTS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "MatMul": (1,), "Gemm": (1, 2)}


def _opaque_consts(nodes, consts):
    """Names of constants that feed only weight/bias slots of Conv/MatMul/Gemm."""
    slots = defaultdict(list)
    for n in nodes:
        for k, i in enumerate(n.input):
            if i in consts:
                slots[i].append(k in _OPAQUE_SLOTS.get(n.op_type, ()))
    return {name for name, ok in slots.items() if all(ok)}


def _rename_dim(value_info, axis, new):
    dims = value_info.type.tensor_type.shape.dim
    if len(dims) > axis and not dims[axis].HasField("dim_value"):
        dims[axis].dim_param = new


# --------------------------------------------------------------------------- writing
def _tag(message_cls, field: str) -> bytes:
    """Protobuf key of a length-delimited field (wire type 2)."""
    number = message_cls.DESCRIPTOR.fields_by_name[field].number
    return _varint((number << 3) | 2)


def _tensor_header(name: str, shape, dtype):
    from onnx import TensorProto
    t = TensorProto()
    t.name = name
    t.dims.extend(int(d) for d in shape)
    t.data_type = _np_dtype_to_onnx(dtype)
    return t


def _write_model(skeleton, big_names, shapes, produce, path: Path, external_location=None):
    """Write ``skeleton`` plus the big initializers, one tensor in memory at a time.

    ``skeleton`` is a complete ModelProto except for the initializers named in
    ``big_names``; ``produce(name)`` returns each one's array when it is written, and the
    array is dropped right after. Inline: the bytes are appended as extra
    ``GraphProto.initializer`` fields (valid protobuf: a message may list a repeated field's
    entries anywhere), so the 0.5 GB VGG16 weights are never copied into a protobuf message
    nor into one serialised ``bytes``. External (``external_location``): raw data go to that
    file (4 KiB-aligned offsets) and the .onnx holds references.
    """
    import onnx
    from onnx import GraphProto, ModelProto, TensorProto

    if external_location is not None:
        data_path = path.parent / external_location
        with open(data_path, "wb") as f:
            for name in big_names:
                a = produce(name)
                pad = (-f.tell()) % 4096
                f.write(b"\0" * pad)
                offset = f.tell()
                f.write(memoryview(a).cast("B"))
                t = _tensor_header(name, a.shape, a.dtype)
                t.data_location = TensorProto.EXTERNAL
                for k, v in (("location", external_location), ("offset", str(offset)),
                             ("length", str(a.nbytes))):
                    e = t.external_data.add()
                    e.key, e.value = k, v
                skeleton.graph.initializer.append(t)
                del a
        onnx.save_model(skeleton, str(path))
        return

    # inline: compute every length first (from shapes only), then stream
    t_init, t_raw, t_graph = _tag(GraphProto, "initializer"), _tag(TensorProto, "raw_data"), _tag(ModelProto, "graph")
    entries = []
    for name in big_names:
        shape, dtype = shapes[name]
        head = _tensor_header(name, shape, dtype).SerializeToString()
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        tensor_len = len(head) + len(t_raw) + len(_varint(nbytes)) + nbytes
        entries.append((name, head, nbytes, tensor_len))
    graph_head = skeleton.graph.SerializeToString()
    graph_len = len(graph_head) + sum(len(t_init) + len(_varint(tl)) + tl for *_, tl in entries)
    top = ModelProto()
    top.CopyFrom(skeleton)
    top.ClearField("graph")
    with open(path, "wb") as f:
        f.write(top.SerializeToString())
        f.write(t_graph + _varint(graph_len) + graph_head)
        for name, head, nbytes, tensor_len in entries:
            a = produce(name)
            if a.nbytes != nbytes or not a.flags.c_contiguous or a.dtype.byteorder == ">":
                raise ExportError(f"internal error: tensor {name} is not {shapes[name]} C-contiguous LE")
            f.write(t_init + _varint(tensor_len) + head + t_raw + _varint(nbytes))
            f.write(memoryview(a).cast("B"))
            del a


# --------------------------------------------------------------------------- public API
def export_keras_model(model, out_path, *, preprocess: str, channel_order: str, source: str,
                       weights_desc: str, check: bool = True, input_size=None, opset: int = 17,
                       tolerance: float = 1e-4, seed: int = 0, verbose: bool = False, labels=None) -> dict:
    """Convert a single-input, channels-last Keras CNN to ONNX with low memory.

    Args:
        model: a built ``keras.Model`` (Keras 3, TensorFlow backend).
        out_path: the ``.onnx`` file to write (directories are created). Written only after
            the self-check passed (via a temporary file, then renamed).
        preprocess: one of ``caffe, torch, tf, unit, raw`` (see ``preprocess_image``).
        channel_order: ``BGR`` or ``RGB``: the order the first conv sees.
        source: free text for ``onnxviz.source``.
        weights_desc: ``imagenet``, ``random`` or the ``.h5`` file name.
        labels: the class names, one per output class, written as ``onnxviz.labels`` (a JSON
            list) so that onnxviz names the classes; ``None``: none written.
        check: run Keras and onnxruntime on one random preprocessed image and raise
            ``ExportError`` if the largest relative difference exceeds ``tolerance``; also
            check that every Conv's weights equal its Keras kernel (transposed to OIHW).
        input_size: ``(H, W)``; needed only when the Keras input has no fixed size.
        opset: ONNX opset.
        verbose: print phase timings and memory to stderr.

    Returns a dict: path, input_name, input_shape, output_names, layer_names, n_conv,
    n_params, weight_bytes, external_data, max_rel_diff, max_abs_diff, output_std,
    filters_checked, seconds (per phase).
    """
    if preprocess not in PREPROCESS_PRESETS:
        raise ExportError(f"preprocess must be one of {', '.join(PREPROCESS_PRESETS)}, got {preprocess!r}")
    if channel_order not in CHANNEL_ORDERS:
        raise ExportError(f"channel_order must be BGR or RGB, got {channel_order!r}")
    out_path = Path(out_path)
    timings = {}
    t0 = time.perf_counter()

    def log(msg):
        if verbose:
            import resource
            import sys
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
            print(f"[export {time.perf_counter() - t0:6.1f}s rss {_rss_gb():.2f} GB, peak so far "
                  f"{peak:.2f} GB] {msg}", file=sys.stderr)

    log("start")
    import tensorflow as tf
    from onnx import checker, helper, numpy_helper
    tf2onnx = _import_tf2onnx()
    from tf2onnx.graph import GraphUtil

    # ---- the Keras model's interface
    if len(model.inputs) != 1:
        raise ExportError(f"expected a model with one image input, got {len(model.inputs)} inputs")
    in_shape = tuple(model.inputs[0].shape)
    if len(in_shape) != 4:
        raise ExportError(f"expected an NHWC image input of rank 4, got shape {in_shape}")
    if in_shape[3] not in (1, 3, None):
        raise ExportError(f"expected a channels-last input with 1 or 3 channels, got shape {in_shape}")
    if input_size is None:
        if in_shape[1] is None or in_shape[2] is None:
            raise ExportError(f"the model's input size is not fixed ({in_shape}); pass input_size=(H, W)")
        input_size = (int(in_shape[1]), int(in_shape[2]))
    input_size = tuple(int(s) for s in input_size)
    channels = int(in_shape[3] or 3)
    input_name = _input_layer_name(model)
    out_names = _output_names(model, len(model.outputs))

    # the Keras side of the self-check, computed first (TF's memory pool is warm anyway)
    if check:
        x_check = check_input(input_size, channels, preprocess, seed)
        ref = [np.asarray(t) for t in _flatten(model(x_check, training=False))]
        log("Keras reference output")

    # ---- step 1: trace the architecture with every variable as a function argument
    tvars, ntvars = list(model.trainable_variables), list(model.non_trainable_variables)
    variables = tvars + ntvars
    w_names = [f"w{i}" for i in range(len(variables))]
    img_spec = tf.TensorSpec((None,) + in_shape[1:], tf.float32, name=input_name)
    w_specs = [tf.TensorSpec(tuple(v.shape), tf.as_dtype(v.dtype), name=n)
               for v, n in zip(variables, w_names)]
    n_t = len(tvars)

    def _fn(x, *ws):
        y, _ = model.stateless_call(list(ws[:n_t]), list(ws[n_t:]), x, training=False)
        ys = tf.nest.flatten(y)
        return {name: tf.identity(t, name=name) for name, t in zip(out_names, ys)}

    signature = [img_spec] + w_specs
    fn = tf.function(_fn, input_signature=signature, autograph=False)
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=signature, opset=opset)
    timings["convert"] = time.perf_counter() - t0
    log("converted architecture")

    g = proto.graph
    graph_inputs = {gi.name for gi in g.input}
    # graph input name -> variable index, or -> name of a captured constant tensor (e.g. the
    # mean/variance tensors of keras.layers.Normalization, which tf2onnx's from_function
    # leaves as inputs named after the capturing placeholder)
    weight_inputs = {n: i for i, n in enumerate(w_names) if n in graph_inputs}
    captured = {}
    for external, internal in fn.get_concrete_function(*signature).graph.captures:
        if external.dtype != tf.resource and internal.name in graph_inputs:
            captured[internal.name] = external
            weight_inputs[internal.name] = internal.name
    unknown = graph_inputs - set(weight_inputs) - {input_name}
    if unknown:
        raise ExportError(f"tf2onnx left unexpected graph inputs {sorted(unknown)}")

    # ---- step 2: write the real weights in and fold the weight-only sub-graphs
    t1 = time.perf_counter()

    def load_weight(key):
        src = variables[key] if isinstance(key, int) else captured[key]
        return np.ascontiguousarray(np.asarray(src.numpy()))

    def weight_shape(key):
        src = variables[key] if isinstance(key, int) else captured[key]
        return tuple(int(d) for d in src.shape), np.dtype(src.dtype.as_numpy_dtype
                                                          if hasattr(src.dtype, "as_numpy_dtype") else src.dtype)

    nodes, consts, origins = _fold_weights(g, weight_inputs, load_weight)
    timings["fold"] = time.perf_counter() - t1
    log("folded weights")

    # ---- step 3: tf2onnx's optimiser, with the conv/dense weights hidden as typed inputs
    t2 = time.perf_counter()
    opaque = _opaque_consts(nodes, consts)
    shapes = {}
    for name in consts:
        if consts[name] is None:  # a weight used as is: only its shape is needed for now
            shapes[name] = weight_shape(weight_inputs[name])
            if name not in opaque:
                consts[name] = load_weight(weight_inputs[name])
        else:
            shapes[name] = (consts[name].shape, consts[name].dtype)
    inputs = [gi for gi in g.input if gi.name not in weight_inputs]
    for name in sorted(opaque):
        shape, dtype = shapes[name]
        inputs.append(helper.make_tensor_value_info(name, _np_dtype_to_onnx(dtype), list(shape)))
    small_inits = [numpy_helper.from_array(a, name) for name, a in consts.items() if name not in opaque]
    tmp_model = helper.make_model(
        helper.make_graph(nodes, g.name, inputs, list(g.output), small_inits),
        opset_imports=list(proto.opset_import), ir_version=proto.ir_version,
        producer_name=proto.producer_name, producer_version=proto.producer_version)
    del proto, g, nodes
    skeleton = GraphUtil.optimize_model_proto(tmp_model, catch_errors=False)
    del tmp_model
    og = skeleton.graph
    checker.check_model(skeleton)  # structure check, with the big weights still as inputs
    used = {i for n in og.node for i in n.input} | {o.name for o in og.output}
    big_names = [gi.name for gi in og.input if gi.name in opaque and gi.name in used]
    keep_inputs = [gi for gi in og.input if gi.name not in opaque]
    del og.input[:]
    og.input.extend(keep_inputs)
    live = [init for init in og.initializer if init.name in used]
    if len(live) != len(og.initializer):
        del og.initializer[:]
        og.initializer.extend(live)
    timings["optimize"] = time.perf_counter() - t2
    log("optimized")

    # ---- interface tidying and metadata
    for vi in list(og.input) + list(og.output):
        _rename_dim(vi, 0, "N")
    owners = _variable_owners(model, variables)
    layer_names, conv_weights = _conv_layer_names(og, origins, owners)
    meta = {
        "preprocess": preprocess,
        "channel_order": channel_order,
        "input_size": f"{input_size[0]},{input_size[1]}",
        "layer_names": json.dumps(layer_names),
        "source": source,
        "weights": weights_desc,
    }
    if labels is not None:
        labels = [str(name) for name in labels]
        classes = og.output[0].type.tensor_type.shape.dim[-1].dim_value if og.output else 0
        if classes and len(labels) != classes:
            raise ExportError(f"{len(labels)} labels for a model of {classes} classes; give one name per class")
        meta["labels"] = json.dumps(labels)
    helper.set_model_props(skeleton, {META_PREFIX + k: str(v) for k, v in meta.items()})
    skeleton.doc_string = (f"{source}; weights: {weights_desc}; input NHWC float32 "
                           f"(N,{input_size[0]},{input_size[1]},{channels}), preprocess {preprocess}, "
                           f"{channel_order}")
    n_params = int(sum(int(np.prod(v.shape)) for v in variables))
    weight_bytes = (sum(len(i.raw_data) for i in og.initializer)
                    + sum(int(np.prod(shapes[n][0], dtype=np.int64)) * shapes[n][1].itemsize
                          for n in big_names))

    # every Conv must hold its Keras kernel, transposed as tf2onnx does (this also checks
    # the layer-name mapping: the weight was found through the variable it came from)
    filters_checked = 0
    if check:
        for node_name, (wname, vidx) in conv_weights.items():
            got = consts.get(wname)
            if got is None and wname in weight_inputs:   # a weight used as is
                got = load_weight(weight_inputs[wname])
            elif got is None:
                got = numpy_helper.to_array(next(i for i in og.initializer if i.name == wname))
            want = _keras_kernel_as_oihw(load_weight(vidx), owners[vidx][1], owners[vidx][2])
            if want is not None:
                if got.shape != want.shape or not np.array_equal(got, want):
                    raise ExportError(f"self-check failed: weights of Conv {node_name} differ from "
                                      f"Keras {layer_names[node_name]}.{owners[vidx][1]}")
                filters_checked += 1
        log(f"checked {filters_checked} conv weights against Keras kernels")

    # ---- save (temporary name first; renamed only after the self-check)
    t3 = time.perf_counter()
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"cannot create {out_path.parent}: {e.strerror or e}") from e
    tmp_path = out_path.with_name(out_path.name + ".tmp")
    external = weight_bytes > EXTERNAL_DATA_THRESHOLD
    data_path = out_path.with_name(out_path.name + ".data")

    def produce(name):
        a = consts.pop(name, None)
        if a is None:
            a = load_weight(weight_inputs[name])
        return a

    ok = False
    try:
        _write_model(skeleton, big_names, shapes, produce, tmp_path,
                     external_location=data_path.name if external else None)
        ok = True
    except OSError as e:
        raise ExportError(f"cannot write {tmp_path}: {e.strerror or e}") from e
    finally:
        if not ok:
            for leftover in (tmp_path, data_path if external else None):
                if leftover is not None and leftover.exists():
                    leftover.unlink()
    del skeleton, og
    consts.clear()
    timings["save"] = time.perf_counter() - t3
    log("saved")

    info = {
        "path": str(out_path), "input_name": input_name,
        "input_shape": ["N", input_size[0], input_size[1], channels],
        "output_names": out_names, "layer_names": layer_names, "n_conv": len(layer_names),
        "n_params": n_params, "weight_bytes": weight_bytes, "external_data": external,
        "max_rel_diff": None, "max_abs_diff": None, "output_std": None, "output_weak": None,
        "filters_checked": filters_checked,
    }
    try:
        if check:
            t4 = time.perf_counter()
            got = run_onnxruntime(tmp_path, input_name, out_names, x_check)
            rel, absd = compare_outputs(ref, got)
            timings["check"] = time.perf_counter() - t4
            info["max_rel_diff"], info["max_abs_diff"] = rel, absd
            info["output_std"] = float(max(np.std(a) for a in ref))
            info["output_weak"] = weak_output(ref)
            log("self-check done")
            if not rel <= tolerance:
                raise ExportError(f"self-check failed: Keras vs onnxruntime max relative difference "
                                  f"{rel:.3g} > {tolerance:g} (max abs {absd:.3g})")
        os.replace(tmp_path, out_path)
        if not external and data_path.exists():  # stale weights of an earlier > 1.8 GB export
            data_path.unlink()
    except BaseException:
        if external and data_path.exists():
            data_path.unlink()
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    timings["total"] = time.perf_counter() - t0
    info["seconds"] = {k: round(v, 2) for k, v in timings.items()}
    return info


def export_keras_model_plain(model, out_path, *, opset: int = 17, large_model: bool = False,
                             preprocess: str = "raw", check: bool = True, seed: int = 0) -> dict:
    """The ordinary tf2onnx path (``from_keras`` with the weights frozen into the graph).

    For comparison and measurements only: no onnxviz metadata, and it needs > 24 GB of RAM for
    VGG16 (17.8 GB with ``large_model=True``, which writes a zip of .onnx + external data).
    """
    import tensorflow as tf
    tf2onnx = _import_tf2onnx()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    in_shape = tuple(model.inputs[0].shape)
    name = _input_layer_name(model)
    t0 = time.perf_counter()
    spec = [tf.TensorSpec((None,) + in_shape[1:], tf.float32, name=name)]
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset,
                                          large_model=large_model, output_path=str(out_path))
    info = {"path": str(out_path), "input_name": proto.graph.input[0].name,
            "input_shape": ["N", in_shape[1], in_shape[2], in_shape[3]],
            "output_names": [o.name for o in proto.graph.output],
            "n_conv": sum(n.op_type == "Conv" for n in proto.graph.node),
            "max_rel_diff": None, "max_abs_diff": None, "external_data": False}
    out_names = info["output_names"]
    del proto
    info["seconds"] = {"convert": round(time.perf_counter() - t0, 2)}
    if check and not large_model:
        x = check_input((in_shape[1], in_shape[2]), in_shape[3], preprocess, seed)
        ref = [np.asarray(t) for t in _flatten(model(x, training=False))]
        got = run_onnxruntime(out_path, info["input_name"], out_names, x)
        info["max_rel_diff"], info["max_abs_diff"] = compare_outputs(ref, got)
        info["output_std"] = float(max(np.std(a) for a in ref))
        info["output_weak"] = weak_output(ref)
    return info


def _keras_kernel_as_oihw(k: np.ndarray, attr: str, depthwise: bool):
    """Keras 2-D conv kernel -> ONNX Conv weight layout, as tf2onnx lays it out."""
    if k.ndim != 4:
        return None
    if depthwise:                    # (kh, kw, C, m) -> (C*m, 1, kh, kw), channel c*m + j
        kh, kw, c, m = k.shape
        return np.ascontiguousarray(k.reshape(kh, kw, 1, c * m).transpose(3, 2, 0, 1))
    if attr in ("kernel", "pointwise_kernel"):  # HWIO -> OIHW
        return np.ascontiguousarray(k.transpose(3, 2, 0, 1))
    return None


def _conv_layer_names(graph, origins, owners):
    """Conv node name -> Keras layer name, via the weight each Conv reads (not node names).

    Returns (names, weights) where weights maps Conv node name -> (weight tensor name,
    variable index) for the Convs whose weight is a single Keras variable.
    """
    per_layer = defaultdict(list)  # layer -> [(node name, attr)]
    order = []
    weights = {}
    for node in graph.node:
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        src = sorted(origins.get(node.input[1], frozenset()))
        kern = [owners[i] for i in src]
        if len(kern) == 1:
            layer, attr, _ = kern[0]
            weights[node.name] = (node.input[1], src[0])
        else:  # not a Keras weight (or ambiguous): fall back on tf2onnx's name scope
            scope = node.name.split("/")
            layer = scope[-2] if len(scope) > 1 else node.name
            layer, attr = layer.rsplit("_", 1)[0] if layer.rsplit("_", 1)[-1].isdigit() else layer, "?"
        per_layer[layer].append((node.name, attr))
        order.append(node.name)
    names = {}
    for layer, convs in per_layer.items():
        attrs = [a for _, a in convs]
        if len(convs) == 1:
            names[convs[0][0]] = layer
        elif len(set(attrs)) == len(attrs):        # e.g. SeparableConv2D: two kernels
            for node_name, attr in convs:
                names[node_name] = f"{layer}/{attr}"
        else:                                      # a layer used more than once
            for k, (node_name, _) in enumerate(convs):
                names[node_name] = layer if k == 0 else f"{layer}_{k + 1}"
    return {n: names[n] for n in order}, weights


def check_input(input_size, channels, preprocess, seed=0) -> np.ndarray:
    """One random uint8 image, preprocessed: float32 (1, H, W, C)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=(input_size[0], input_size[1], 3), dtype=np.uint8)
    x = preprocess_image(img, preprocess)
    if channels == 1:
        x = x.mean(axis=-1, keepdims=True)
    return np.ascontiguousarray(x[None], dtype=np.float32)


def run_onnxruntime(onnx_path, input_name, output_names, x):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    # one inference only: pre-packing the weights would just hold a second copy of them
    opts.add_session_config_entry("session.disable_prepacking", "1")
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    got = sess.run(list(output_names), {input_name: x})
    del sess
    return got


def weak_output(ref) -> bool:
    """True if the output says little about the graph: (nearly) constant, or a saturated
    one-hot softmax (random weights do that), so that equal outputs prove little."""
    for a in ref:
        a = np.asarray(a, np.float64)
        if a.size and np.std(a) < 1e-6:
            return True
        if (a.ndim == 2 and np.allclose(a.sum(axis=-1), 1.0, atol=1e-3)
                and np.min(np.max(a, axis=-1)) > 1 - 1e-5):
            return True
    return False


def compare_outputs(ref, got):
    """(max |ref - got| / max |ref|, max |ref - got|) over all outputs."""
    if len(got) != len(ref):
        raise ExportError(f"self-check: Keras has {len(ref)} outputs, ONNX has {len(got)}")
    rel = absd = 0.0
    for a, b in zip(ref, got):
        if a.shape != b.shape:
            raise ExportError(f"self-check: output shape {b.shape} != Keras {a.shape}")
        d = float(np.max(np.abs(a.astype(np.float64) - b)))
        absd = max(absd, d)
        rel = max(rel, d / max(float(np.max(np.abs(a))), 1e-12))
    return rel, absd


def _flatten(y):
    if isinstance(y, dict):
        return [y[k] for k in y]
    if isinstance(y, (list, tuple)):
        return list(y)
    return [y]
