"""Open an ONNX model and describe its convolutions, without reading its weight bytes.

:func:`load` is the entry point: it walks the file's protobuf encoding, keeps the graph and
skips the weights (see :mod:`onnxviz.graph.wire`), then builds, once, the typed lookups every
later step uses (producers, consumers, initializers) and the table of conv layers.

>>> import onnxviz
>>> m = onnxviz.load("models/demo.onnx")                     # doctest: +SKIP
>>> [layer.name for layer in m.layers][:2]                   # doctest: +SKIP
['block1_conv1', 'block1_conv2']
>>> m.filters("block1_conv1").shape                          # doctest: +SKIP
(16, 3, 3, 3)
>>> fm = m.feature_maps("photo.jpg", layers="block1_*")      # doctest: +SKIP

A layer's *feature map* is the tensor after its activation (bias, BatchNorm and other norms
included; a residual ``Add``, fan-out, pooling or ``Concat`` ends it): the rule is
:mod:`onnxviz.graph.chain`'s. Friendly names come from :mod:`onnxviz.graph.names`, shapes
from :mod:`onnxviz.graph.shapes`, the image input from :mod:`onnxviz.graph.inputs`.

Quantized models (``onnxruntime.quantization``), by conv op — feature maps are always
float32, filters ``(q - zero_point) · scale`` (see :mod:`onnxviz.weights`; a ``ConvInteger``
whose weight scale is not in the graph gives ``q - zero_point``, with a warning):

=================  ================================  ========================================
op (quantizer)     feature map                       ``raw_conv=True``
=================  ================================  ========================================
``Conv`` in QDQ    the ``DequantizeLinear`` after    the float ``Conv`` output before its
(static QDQ)       the output ``QuantizeLinear``:    ``QuantizeLinear``: onnxruntime cannot
                   onnxruntime keeps the             fuse that conv then (much slower, see
                   ``QLinearConv`` fusion            BENCHMARKS.md), and it is the
                                                     unrounded value
``QLinearConv``    its uint8/int8 output (a folded   the same tensor (the graph has no
(QOperator)        ``Relu`` included), dequantized   pre-activation one), dequantized
                   with its own output scale and
                   zero point (inputs 6, 7)
``ConvInteger``    after ``Cast → Mul`` by the       the ``Mul`` output: the int32
(dynamic)          scales, bias ``Add`` and the      accumulator times ``x_scale · w_scale``,
                   activation (float tensors)        before the bias
=================  ================================  ========================================

Model metadata (``metadata_props``) that onnxviz reads — ``scripts/keras_export.py`` writes it:

=========================  ==========================================================
``onnxviz.preprocess``     preset name: ``caffe``, ``torch``, ``tf``, ``unit`` or ``raw``
``onnxviz.channel_order``  ``RGB`` or ``BGR``: what the first conv sees (default: from preset)
``onnxviz.input_size``     ``"H,W"``, used when the input's spatial dims are dynamic
``onnxviz.layer_names``    JSON object: conv node name (or weight name) → friendly name
``onnxviz.source``         free text: where the model came from
``onnxviz.weights``        free text: ``imagenet``, ``random``, a file name
=========================  ==========================================================

Known limits: only the main graph's convolutions are layers (not those inside If/Loop
bodies); images go to rank-4 inputs only: a 1-D or 3-D conv net (rank-3 or rank-5 input)
takes a ready input tensor instead (see :mod:`onnxviz.features`), and its input line in the
summary says so instead of an image size.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field

import onnx

from .errors import LayerError, ModelError, UnsupportedModelError, format_shape, listing
from .graph.chain import feature_tensor
from .graph.index import CONV_OPS, META, Index, is_conv, node_attr, weight_input
from .graph.inputs import find_input
from .graph.names import folded_into, friendly_names
from .graph.receptive import Field, field_text, receptive_fields
from .graph.shapes import Shapes, is_static
from .graph.weights import constant_shape, conv_filters, external_path
from .graph.wire import read_model

__all__ = ["load", "Model", "Layer", "CONV_OPS", "META"]


@dataclass(frozen=True)
class Layer:
    """One convolution of the main graph, in graph order."""

    index: int                       # 0 = first conv
    name: str                        # friendly and unique: block1_conv1, layer1.0.conv1
    node: str                        # the ONNX node name
    op: str                          # Conv, ConvTranspose, QLinearConv, ConvInteger, FusedConv
    filter_shape: tuple              # (O, I/group, *kernel); ConvTranspose: (I, O/group, *kernel)
    group: int
    tensor: str                      # feature map: after bias / norm / activation
    conv_output: str                 # the raw conv output tensor
    output_shape: tuple | None       # (C, H, W) of ``tensor`` at the model's input size
    strides: tuple = ()
    dilations: tuple = ()
    weight: str = ""                 # the weight input tensor's name
    activation: str = ""             # what ended the chain: Relu, x*Sigmoid(x), … or ''
    folded: str = ""                 # what the exporter folded into the weights: BatchNorm, or ''
    receptive_field: Field | None = field(default=None, repr=False)  # of ``tensor``, in input pixels
    node_index: int = field(default=-1, repr=False, compare=False)

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in (
            "index", "name", "node", "op", "filter_shape", "group", "strides", "dilations",
            "tensor", "conv_output", "output_shape", "weight", "activation", "folded")}
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
        d["receptive_field"] = self.receptive_field.as_dict() if self.receptive_field else None
        return d



def _conv_attrs(node: onnx.NodeProto) -> tuple:
    """``(group, strides, dilations)`` of a conv node, checked: a broken model says so here."""
    group = node_attr(node, "group", 1)
    if not isinstance(group, int) or group < 1:
        raise ModelError(f"conv '{node.name}' has group={group!r}; it must be a whole number, 1 or more")
    found = [group]
    for name in ("strides", "dilations"):
        value = node_attr(node, name, ()) or ()
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) for v in value):
            raise ModelError(f"conv '{node.name}' has {name}={value!r}; it must be a list of whole numbers")
        found.append(tuple(value))
    return tuple(found)


def _check_conv_inputs(index: Index, node: onnx.NodeProto, weight: str) -> None:
    """A conv without data or weight input, or whose weight nothing provides, is a broken model."""
    if not node.input or not node.input[0]:
        raise ModelError(f"conv '{node.name}' has no data input; the graph is broken")
    graph_inputs = {i.name for i in index.inputs}
    if not weight or not (weight in index.initializers or weight in index.producers or weight in graph_inputs):
        raise ModelError(f"conv '{node.name}' takes its weights from '{weight}', which no initializer, "
                         "node or graph input provides; the graph is broken")



# ---------------------------------------------------------------- the model

class Model:
    """An opened ONNX model: its graph (no weight bytes), input, and conv layer table.

    Use :func:`load` to make one. ``Model`` is read-only: nothing here writes to the model's
    file or folder.
    """

    def __init__(self, proto: onnx.ModelProto, path: str = "<memory>", base_dir: str | None = None):
        self.proto = proto
        self.path = os.fspath(path)
        # The real folder (a symbolic link to a model resolved): external data is looked up beside the real file
        self.base_dir = base_dir or os.path.dirname(os.path.realpath(self.path))
        self.metadata = {p.key: p.value for p in proto.metadata_props}
        graph = proto.graph
        nchwc = next((n for n in graph.node if n.domain == "com.microsoft.nchwc"), None)
        if nchwc is not None:
            raise UnsupportedModelError(
                f"'{self.path}' was saved by onnxruntime after its NCHWc layout optimisation "
                f"(node '{nchwc.name}' is {nchwc.domain}.{nchwc.op_type}): its weight bytes are "
                "blocked while their dims still say OIHW; save it with graph optimisation level "
                "'extended' or lower, or use the original export"
            )
        self._index = Index(graph, self.base_dir, proto.opset_import)
        convs = []
        for i, node in enumerate(self._index.nodes):
            if is_conv(node):
                if not node.output[0]:
                    raise ModelError(f"the graph is broken: conv '{node.name}' ({node.op_type}) has an "
                                     "empty output name, so nothing can read what it computes")
                convs.append((node, weight_input(node), i))
                _check_conv_inputs(self._index, node, convs[-1][1])
        if not convs:
            ops = sorted({n.op_type for n in graph.node})
            raise ModelError(
                f"'{self.path}' has no convolution (Conv, ConvTranspose, QLinearConv, "
                f"ConvInteger, FusedConv); its ops are: {listing(ops) or 'none'}"
            )
        self.input = find_input(self._index, convs[0][0], self.metadata)
        names = friendly_names([(n, w) for n, w, _ in convs], self.metadata)
        self._shape_cache: dict = {}
        shapes = self.shapes(self._table_feeds())
        chains = [feature_tensor(self._index, node.output[0], shapes) for node, _, _ in convs]
        shapes.size([t for (t, _), (node, _, _) in zip(chains, convs)] + [n.output[0] for n, _, _ in convs])
        fields = self._receptive_fields(shapes)
        layers = []
        for k, ((node, weight, i), name) in enumerate(zip(convs, names)):
            out = node.output[0]
            tensor, activation = chains[k]
            w_dims = self._weight_dims(weight, shapes)
            if (w_dims or weight in self._index.initializers) and len(w_dims) < 3:
                raise ModelError(f"the weight of conv '{node.name}' ('{weight}') has shape "
                                 f"{format_shape(w_dims) if w_dims else '() (a scalar)'}; a convolution "
                                 "weight has rank 3 or more (O, I/group, *kernel)")
            group, strides, dilations = _conv_attrs(node)
            fm = next((d for d in (shapes.get(tensor), shapes.get(out)) if d and is_static(d[1:])), None)
            layers.append(Layer(
                index=k, name=name, node=node.name, op=node.op_type,
                filter_shape=w_dims, group=group,
                tensor=tensor, conv_output=out,
                output_shape=tuple(fm[1:]) if fm else None,
                strides=strides, dilations=dilations,
                weight=weight, activation=activation, folded=folded_into(node, weight),
                receptive_field=fields.get(tensor), node_index=i,
            ))
        self.layers: list[Layer] = layers
        self._by_key: dict[str, Layer] = {}
        for layer in reversed(layers):  # friendly names win over node/tensor names
            for key in (layer.tensor, layer.conv_output, layer.node, layer.name):
                if key:
                    self._by_key[key] = layer
        self._sessions: dict = {}
        #: Options of the onnxruntime sessions :meth:`feature_maps` builds (``threads=``,
        #: ``spin=``, ``arena=`` (off unless set): see :func:`onnxviz.runtime.session`); sessions
        #: are kept per options.
        self.session_options: dict = {}

    def __repr__(self) -> str:
        return f"<onnxviz.Model '{self.path}': {len(self.layers)} conv layers>"

    def _repr_html_(self) -> str:
        """The model card and the layer table, for notebooks (HTML from :mod:`onnxviz.report.html`)."""
        from .report.card import model_card
        from .report.html import model_card_html

        return model_card_html(model_card(self), heading="h3", standalone=True)

    def files(self) -> list[str]:
        """Every file this model reads: its own and its initializers' external-data files.

        Outputs must never be one of them (``onnxviz`` refuses such an ``-o``). A location
        that :func:`onnxviz.graph.weights.external_path` refuses is left out: reading it fails anyway.
        """
        found = [os.path.realpath(self.path)]
        for tensor in self._index.initializers.values():
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                try:
                    found.append(external_path(tensor, self.base_dir)[0])
                except ModelError:
                    continue
        return list(dict.fromkeys(found))

    def shapes(self, feeds: dict | None = None) -> Shapes:
        """The one shape inference (:mod:`onnxviz.graph.shapes`) with the graph inputs of
        ``feeds`` (``{name: dims}``) pinned, cached per model and input shape (8 kept).

        Stage 1 (onnx) runs here; :meth:`Shapes.size` runs onnxruntime's stages (imported
        only then) for what it leaves unsized.

        >>> m.shapes({"input": (1, 3, 224, 224)}).dims("/4/Relu_output_0")   # doctest: +SKIP
        (1, 64, 56, 56)
        """
        return cached_shapes(self.proto, self._shape_cache, feeds)

    def _table_feeds(self) -> dict:
        """The input at the layer table's size: batch 1 (or the model's fixed batch); an image
        input at its size, 3 channels where the graph leaves them open; another rank only if
        its other dims are fixed (a dynamic length has no size to show maps at)."""
        inp = self.input
        if inp is None or not inp.shape:
            return {}
        fixed = [d if isinstance(d, int) and d > 0 else None for d in inp.shape]
        if len(fixed) == 4:
            h, w = inp.size
            rest = [h, w, fixed[3] or 3] if inp.layout == "NHWC" else [fixed[1] or 3, h, w]
        elif all(fixed[1:]):
            rest = fixed[1:]
        else:
            return {}
        return {inp.name: (fixed[0] or 1, *rest)}

    def _receptive_fields(self, shapes: Shapes) -> dict:
        """Every tensor's receptive field at the layer table's input size (:mod:`onnxviz.graph.receptive`);
        ``{}`` for an input whose spatial size is not fixed."""
        inp, feeds = self.input, self._table_feeds()
        if inp is None or inp.name not in feeds:
            return {}
        dims = feeds[inp.name]
        spatial = tuple(inp.size) if len(dims) == 4 else tuple(dims[2:])
        return receptive_fields(self._index, inp.name, inp.layout, shapes, spatial)

    def _weight_dims(self, weight: str, shapes: Shapes) -> tuple:
        init = self._index.initializers.get(weight)
        if init is not None:
            return tuple(init.dims)
        if is_static(shapes.dims(weight)):
            return tuple(shapes.dims(weight))
        try:  # shape inference on the weight's own constant sub-graph: nothing folded at load
            return constant_shape(self._index, weight) or ()
        except ModelError:
            return ()

    # ------------------------------------------------------------ lookups

    def layer(self, key) -> Layer:
        """One layer by index, friendly name, ONNX node name or tensor name."""
        found = self.select([key])
        if len(found) != 1:
            raise LayerError(f"'{key}' matches {len(found)} layers ({listing(l.name for l in found)}); name one")
        return found[0]

    def select(self, keys=None) -> list[Layer]:
        """Layers for a list of keys (index, name, ONNX name or glob), in the order asked.

        ``None`` means every layer. An unknown key raises :class:`LayerError`, listing the layers.
        """
        if keys is None:
            return list(self.layers)
        if isinstance(keys, (str, int)):
            keys = [keys]
        chosen: list[Layer] = []
        for key in keys:
            matches = self._match(key)
            if not matches:
                raise LayerError(
                    f"no layer '{key}'; layers are: {listing((l.name for l in self.layers), 40)}"
                )
            chosen.extend(m for m in matches if m not in chosen)
        return chosen

    def _match(self, key) -> list[Layer]:
        if isinstance(key, Layer):
            return [key] if key in self.layers else []
        if isinstance(key, int) or (isinstance(key, str) and re.fullmatch(r"-?\d+", key.strip())):
            i = int(key)
            if -len(self.layers) <= i < len(self.layers):
                return [self.layers[i]]
            if isinstance(key, int) or key not in self._by_key:
                return []
        key = str(key)
        if key in self._by_key:
            return [self._by_key[key]]
        if any(c in key for c in "*?["):
            return [l for l in self.layers if fnmatch.fnmatchcase(l.name, key)
                    or fnmatch.fnmatchcase(l.node, key)]
        return []

    def receptive_field(self, layer, size=None) -> Field | None:
        """A layer's receptive field in input pixels (:mod:`onnxviz.graph.receptive`), at the
        image size ``size`` ``(H, W)`` (default: the layer table's; ``auto_pad=SAME`` and
        reshapes can depend on it); ``None`` where no rule gives it."""
        layer, inp = self.layer(layer), self.input
        feeds = self._table_feeds()
        if size is None or inp is None or tuple(size) == tuple(inp.size) or inp.name not in feeds \
                or len(feeds[inp.name]) != 4:
            return layer.receptive_field
        n, *rest = feeds[inp.name]
        dims = (n, *size, rest[2]) if inp.layout == "NHWC" else (n, rest[0], *size)
        return receptive_fields(self._index, inp.name, inp.layout, self.shapes({inp.name: dims}),
                                tuple(size)).get(layer.tensor)

    def stage_ends(self) -> list[Layer]:
        """The last conv of every stage: where the next conv's spatial size differs, and the last.

        Without known output shapes there are no stages to tell apart: the last conv only.
        """
        if any(l.output_shape is None for l in self.layers):
            return [self.layers[-1]]
        return [layer for layer, nxt in zip(self.layers, self.layers[1:] + [None])
                if nxt is None or layer.output_shape[1:] != nxt.output_shape[1:]]

    # ------------------------------------------------------------ the verbs

    def filters(self, layer) -> "np.ndarray":  # noqa: F821
        """Float32 filters ``(O, I/group, kH, kW)`` of one layer (see :mod:`onnxviz.graph.weights`)."""
        return conv_filters(self._index, self.layer(layer))

    def feature_maps(self, images, layers=None, *, preprocess=None, size=None, raw_conv=False,
                     feeds=None, max_bytes=None, also=()) -> dict:
        """``{layer name: float32 (N, C, H, W)}`` for an image or a batch of them.

        ``images`` may also be a ready input tensor (an array of the input's rank), and
        ``feeds={name: array}`` gives the model's other inputs; ``max_bytes`` is the memory
        budget; ``also`` other tensors fetched in the same run (the result's ``also`` dict).
        See :func:`onnxviz.features.feature_maps`.
        """
        from .features import feature_maps
        return feature_maps(self, images, layers, preprocess=preprocess, size=size, raw_conv=raw_conv,
                            feeds=feeds, max_bytes=max_bytes, also=also)

    def summary_text(self) -> str:
        """The layer table ``onnxviz summary`` prints: file, input, one row per conv."""
        return summary_text(self.summary())

    def summary(self) -> dict:
        """A JSON-ready description: file, input, preprocessing, and every layer."""
        inp = self.input
        return {
            "path": self.path,
            "producer": f"{self.proto.producer_name} {self.proto.producer_version}".strip(),
            "opset": {o.domain or "ai.onnx": o.version for o in self.proto.opset_import},
            "input": None if inp is None else {
                "name": inp.name, "layout": inp.layout, "shape": list(inp.shape),
                "size": list(inp.size), "size_from": inp.size_from,
            },
            "preprocess": self.metadata.get(META["preprocess"]),
            "metadata": {k: v for k, v in self.metadata.items() if k != META["layer_names"]},
            "layers": [l.as_dict() for l in self.layers],
        }



def cached_shapes(proto: onnx.ModelProto, cache: dict, feeds: dict | None = None) -> Shapes:
    """:class:`Shapes` of ``proto`` with ``feeds`` (``{name: dims}``) pinned, kept in ``cache``
    (8 per cache): the one shape inference for any graph, the backward graph's included."""
    key = tuple(sorted((k, tuple(v)) for k, v in (feeds or {}).items()))
    found = cache.get(key)
    if found is None:
        if len(cache) >= 8:
            cache.pop(next(iter(cache)))
        found = cache[key] = Shapes(proto, dict(key), _runtime_stages)
    return found


def _runtime_stages() -> list:
    """onnxruntime's shape stages, imported only when onnx inference leaves a tensor unsized."""
    from . import runtime

    return runtime.shape_stages()


def summary_text(info: dict) -> str:
    """The layer table of :meth:`Model.summary_text`, from a :meth:`Model.summary` dict."""
    lines = [f"model   {info['path']}  ({info['producer'] or 'unknown producer'}, "
             f"opset {info['opset'].get('ai.onnx', '?')})"]
    inp = info["input"]
    if inp and len(inp["shape"]) not in (0, 4):  # a 1-D / 3-D conv net: no images
        lines.append(f"input   {inp['name']}  {inp['shape']}  takes no image: feed an array of this shape")
    elif inp:
        lines.append(f"input   {inp['name']}  {inp['layout']} {inp['shape']}  images → {format_shape(inp['size'])} "
                     f"({inp['size_from']})  preprocess: {info['preprocess'] or 'none given (raw)'}")
    folded = any(l.get("folded") for l in info["layers"])  # the column only when it says something
    rows = [("#", "layer", "op", "filters", "group", "stride", "feature map", "RF", "after")
            + (("folded in",) if folded else ())]
    for l in info["layers"]:
        rows.append((str(l["index"]), l["name"], l["op"], format_shape(l["filter_shape"]), str(l["group"]),
                     ",".join(map(str, l["strides"])) or "1", format_shape(l["output_shape"]),
                     field_text(l.get("receptive_field")), l["activation"] or "-")
                    + ((l.get("folded") or "-",) if folded else ()))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def load(path) -> Model:
    """Open ``path`` without reading its weight bytes; raise :class:`ModelError` if unusable.

    >>> m = load("models/demo.onnx")                 # doctest: +SKIP
    >>> m.layers[0].name, m.layers[0].filter_shape   # doctest: +SKIP
    ('block1_conv1', (16, 3, 3, 3))
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ModelError(f"a model path must be a str or os.PathLike, not {type(path).__name__}")
    proto = read_model(path)
    if not proto.HasField("graph") and proto.ir_version > 0:
        raise ModelError(f"'{os.fspath(path)}' is an ONNX model without a graph: nothing to show")
    if not proto.HasField("graph"):
        raise ModelError(f"'{os.fspath(path)}' is not an ONNX model: it has neither a graph nor an IR version "
                         "(a tensor, graph or other protobuf message saved on its own?)")
    if not proto.graph.node:
        raise ModelError(f"'{os.fspath(path)}' has an empty graph: no nodes, so no convolution")
    if proto.ir_version <= 0:
        raise ModelError(f"'{os.fspath(path)}' is not an ONNX model: it has no IR version")
    return Model(proto, path)
