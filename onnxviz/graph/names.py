"""Friendly layer names: the source framework's own, one small rule per exporter.

>>> from onnxviz.graph.names import friendly_names
>>> friendly_names(index, [(node, weight)], metadata)         # doctest: +SKIP
['block1_conv1']

Rules, tried in this order for each conv (the node's name and its weight's name both count:
exporters name a conv after what was fused into it):

* ``onnxviz.layer_names`` metadata: a JSON object, conv node name or weight name → name;
* PyTorch parameter names (``features.0.weight`` → ``features.0``), dynamo's recorded
  ``pkg.torch.onnx.name_scopes``, TorchScript node scopes (``/layer1/layer1.0/conv1/Conv`` →
  ``layer1.0.conv1``);
* tf2onnx's Keras scopes (``vgg16_1/block1_conv1_1/convolution`` → ``block1_conv1``);
* else the node name, else ``conv_<k>``. A name already taken gets the node name or ``#<k>``.

:func:`folded_into` reads the same evidence to say what the exporter folded into a conv's
weights (a BatchNorm).
"""

from __future__ import annotations

import json
import re
import warnings

import onnx

from ..errors import OnnxvizWarning
from .index import META

__all__ = ["friendly_names", "folded_into"]

_TF_OPS = ("convolution", "Conv2D", "BiasAdd", "depthwise", "conv2d_transpose",
           "Conv2DBackpropInput", "Conv1D", "Conv3D", "separable_conv2d", "merged_input",
           "ReadVariableOp", "Relu", "batchnorm", "FusedBatchNormV3")


def _torchscript_name(node_name: str) -> str | None:
    """``/layer1/layer1.0/conv1/Conv`` → ``layer1.0.conv1``."""
    if not node_name.startswith("/"):
        return None
    segments = [s for s in node_name.split("/") if s][:-1]
    if not segments:
        return None
    # A child of a Sequential/ModuleList is scoped '<its parent's own scope>.<index>':
    # '/layer1/layer1.1/downsample/downsample.0/Conv' → layer1 . 1 . downsample . 0
    pieces, prev = [], ""
    for seg in segments:
        pieces.append(seg[len(prev) + 1:] if prev and seg.startswith(prev + ".") else seg)
        prev = seg
    return ".".join(pieces)


def _dynamo_name(node: onnx.NodeProto) -> str | None:
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = json.loads(p.value.replace("'", '"'))
            except ValueError:
                return None
            scopes = [s for s in scopes if s]
            return scopes[-1] if scopes else None
    return None


def _torch_weight_name(weight: str) -> str | None:
    """``features.0.weight`` → ``features.0`` (a PyTorch parameter name)."""
    m = re.fullmatch(r"((?:[A-Za-z_][\w]*|\d+)(?:\.(?:[A-Za-z_][\w]*|\d+))*)\.weight", weight)
    return m.group(1) if m else None


def _tf_layer(name: str) -> str | None:
    """The Keras layer scope in a tf2onnx name: ``vgg16_1/block1_conv1_1/convolution`` → ``block1_conv1_1``."""
    if "/" not in name or name.startswith("/"):
        return None
    segments = name.split(":")[0].split("/")
    for i, seg in enumerate(segments):
        if i > 0 and any(seg == op or seg.startswith(op) for op in _TF_OPS):
            return segments[i - 1]
    return segments[-2] if len(segments) >= 2 else None


_TORCHSCRIPT_COMPUTED = re.compile(r"onnx::(?:Conv|ConvTranspose)_\d+")


def folded_into(node: onnx.NodeProto, weight: str) -> str:
    """What the exporter folded into this conv's weights: ``"BatchNorm"``, or ``""``.

    Then :meth:`Model.filters` returns the folded weights (``w · γ/√(σ²+ε)``), not the
    framework's parameter. Evidence, by exporter: the dynamo exporter records its rewrite
    (``pkg.onnxscript.rewriter.rule_name`` = ``FuseBatchNormIntoConv``); the TorchScript
    exporter names a weight it computed ``onnx::Conv_<n>`` instead of the parameter's name,
    which in an eval-mode export is its Conv+BatchNorm fusion; tf2onnx names a BN-folded conv
    after the BN's scope (``…/bn_Conv1_1/batchnorm/mul_1``).
    """
    for p in node.metadata_props:
        if p.key == "pkg.onnxscript.rewriter.rule_name" and "BatchNorm" in p.value:
            return "BatchNorm"
    if node.name.startswith("/") and _TORCHSCRIPT_COMPUTED.fullmatch(weight):
        return "BatchNorm"
    if "/" in node.name and not node.name.startswith("/") and "batchnorm" in node.name.lower():
        return "BatchNorm"
    return ""



def friendly_names(convs: list, metadata: dict) -> list[str]:
    """One unique friendly name per conv node (see the design's naming rules)."""
    mapping = {}
    if metadata.get(META["layer_names"]):
        try:
            mapping = json.loads(metadata[META["layer_names"]])
        except ValueError:
            warnings.warn(f"model metadata '{META['layer_names']}' is not JSON; ignored", OnnxvizWarning)
        if not isinstance(mapping, dict):
            mapping = {}
        mapping = {k: v for k, v in mapping.items() if isinstance(v, str)}  # names are text
    names: list[str | None] = []
    tf_scopes: list[str | None] = []
    node_names = []
    for node, weight in convs:
        node_name, given = node.name, (node.name, weight)
        if node.op_type in ("QLinearConv", "ConvInteger"):  # onnxruntime.quantization's renames
            weight = re.sub(r"_quantized$", "", weight)
            node_name = re.sub(r"_quant$", "", node_name)
        node_names.append(node_name)
        name = next((mapping[k] for k in (*given, node_name, weight) if k in mapping), None)
        if not name:
            name = _torch_weight_name(weight) or _dynamo_name(node) or _torchscript_name(node_name)
        names.append(name)
        tf_scopes.append(None if name else (_tf_layer(weight) or _tf_layer(node_name)))
    # Keras 3 under tf2onnx scopes every layer call as '<layer>_1'; strip that suffix only when
    # *every* tf-style scope has it, so that a real layer named 'conv_1' (scope 'conv_1_1') stays.
    scoped = [s for s in tf_scopes if s]
    strip = bool(scoped) and all(re.search(r"_\d+$", s) for s in scoped)
    for i, scope in enumerate(tf_scopes):
        if scope:
            names[i] = re.sub(r"_\d+$", "", scope) if strip else scope
    out, seen = [], set()
    for (node, _), node_name, name in zip(convs, node_names, names):
        name = name or node_name or f"conv_{len(out)}"
        if name in seen:
            name = node.name if node.name and node.name not in seen else f"{name}#{len(out)}"
        seen.add(name)
        out.append(name)
    return out

