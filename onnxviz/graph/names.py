"""Friendly layer names: the source framework's own, one small rule per exporter.

>>> from onnxviz.graph.names import friendly_names
>>> friendly_names([(node, "fire2/squeeze1x1_w_0")], {})        # doctest: +SKIP
['fire2/squeeze1x1']

:data:`RULES` is the table: one rule per exporter, tried in its order for each conv, each
with the example it was made for (``tests/test_names.py`` runs every example). The node's
name and its weight's name both count: exporters name a conv after what was fused into it.
The first rule that gives a name wins; with none, the node name, else ``conv_<k>``.
onnxruntime's quantizer renames are undone first (``<node>_quant``, ``<weight>_quantized``).

A name is made unique only when the framework's own names collide (two convs of one Keras
``SeparableConv2D`` under tf2onnx, say): the later conv takes its node name, else
``<name>#<k>`` (``k`` its layer index).

:func:`folded_into` reads the same evidence to say what the exporter folded into a conv's
weights (a BatchNorm).

Known limits: a CNTK model exported without user-given names, an old (torch ≤ 1.12)
TorchScript export whose weight is a number, and a PyTorch 0.3 export (no node names at all)
carry nothing better than ``Convolution28``, ``Conv_0`` and ``conv_0``.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from typing import Callable

import onnx

from ..errors import OnnxvizWarning
from .index import META

__all__ = ["friendly_names", "folded_into", "RULES", "Rule", "Example"]


@dataclass(frozen=True)
class Conv:
    """What a rule sees of one conv: its node, its node and weight names with the quantizer's
    renames undone, the weight name as written, and the ``onnxviz.layer_names`` metadata."""

    node: onnx.NodeProto
    name: str
    weight: str
    written: str
    mapping: dict


@dataclass(frozen=True)
class Example:
    """A conv an exporter really wrote (``node`` and ``weight`` names, and the node's
    ``name_scopes`` metadata or the model's ``layer_names``) and the name it ``gives``."""

    node: str
    weight: str
    gives: str
    scopes: str = ""
    layer_names: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Rule:
    """One exporter's rule: ``find(conv)`` gives the name or ``None``; ``finish`` (optional)
    rewrites all the names this rule gave in one model at once."""

    exporter: str
    find: Callable[[Conv], str | None]
    example: Example
    finish: Callable[[list], list] | None = None


def _metadata(conv: Conv) -> str | None:
    """``onnxviz.layer_names`` (written by ``scripts/keras_export.py``): node or weight name → name."""
    keys = (conv.node.name, conv.written, conv.name, conv.weight)
    return next((conv.mapping[k] for k in keys if k in conv.mapping), None)


def _torch_parameter(conv: Conv) -> str | None:
    """A PyTorch parameter name, kept by both exporters: ``features.0.weight`` → ``features.0``."""
    m = re.fullmatch(r"((?:[A-Za-z_]\w*|\d+)(?:\.(?:[A-Za-z_]\w*|\d+))*)\.weight", conv.weight)
    return m.group(1) if m else None


def _dynamo(conv: Conv) -> str | None:
    """The dynamo exporter's ``pkg.torch.onnx.name_scopes``: the innermost module path."""
    for p in conv.node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = json.loads(p.value.replace("'", '"'))
            except ValueError:
                return None
            scopes = [s for s in scopes if isinstance(s, str) and s]
            return scopes[-1] if scopes else None
    return None


def _torchscript(conv: Conv) -> str | None:
    """TorchScript (torch ≥ 1.13) node scopes: ``/layer1/layer1.0/conv1/Conv`` → ``layer1.0.conv1``."""
    if not conv.name.startswith("/"):
        return None
    segments = [s for s in conv.name.split("/") if s][:-1]
    if not segments:
        return None
    # A child of a Sequential/ModuleList is scoped '<its parent's own scope>.<index>':
    # '/layer1/layer1.1/downsample/downsample.0/Conv' → layer1 . 1 . downsample . 0
    pieces, prev = [], ""
    for seg in segments:
        pieces.append(seg[len(prev) + 1:] if prev and seg.startswith(prev + ".") else seg)
        prev = seg
    return ".".join(pieces)


def _caffe2(conv: Conv) -> str | None:
    """Caffe2 (the ONNX Model Zoo classics): blob ``<layer>_w`` at SSA version ``_0``, under a
    ``gpu_<N>/`` device scope for nets trained on several GPUs: ``gpu_0/res2_0_branch2a_w_0``."""
    m = re.fullmatch(r"(?:gpu_\d+/)?([^:]+)_w_0", conv.weight)
    return m.group(1) if m else None


def _mxnet(conv: Conv) -> str | None:
    """MXNet/Gluon (the Model Zoo's ResNet v1/v2, MobileNetV2, VGG…): ``<layer>_weight``,
    the node ``<layer>_fwd``."""
    m = re.fullmatch(r"([^/:.]+)_weight", conv.weight)
    return m.group(1) if m and conv.name in ("", f"{m.group(1)}_fwd", m.group(1)) else None


def _onnxmltools(conv: Conv) -> str | None:
    """onnxmltools' Keras and CoreML converters: node = the layer's name made C-style (a CoreML
    layer ``conv1/7x7_s2`` from Caffe becomes ``conv1_7x7_s2``), weight ``<node>_W``."""
    m = re.fullmatch(r"(.+)_W\d*", conv.weight)
    return m.group(1) if m and conv.name in ("", m.group(1)) else None


def _keras2onnx(conv: Conv) -> str | None:
    """keras2onnx (its own Keras converters): node = the Keras layer, weights ``W``, ``W1``, …"""
    return conv.name if conv.name and re.fullmatch(r"W\d*", conv.weight) else None


def _cntk(conv: Conv) -> str | None:
    """CNTK: node = the function's name or uid (``Convolution28``), weight a ``Parameter<n>`` uid."""
    return conv.name if conv.name and re.fullmatch(r"Parameter\d+", conv.weight) else None


def _old_torchscript(conv: Conv) -> str | None:
    """TorchScript before torch 1.13: nodes ``<Op>_<n>``; a weight it computed (a folded
    BatchNorm) is a number, ``193``. The node name is all there is."""
    return conv.name if re.fullmatch(r"[A-Za-z]+_\d+", conv.name) and conv.weight.isdigit() else None


_TF_OPS = ("convolution", "Conv2D", "BiasAdd", "depthwise", "conv2d_transpose",
           "Conv2DBackpropInput", "Conv1D", "Conv3D", "separable_conv2d", "merged_input",
           "ReadVariableOp", "Relu", "batchnorm", "FusedBatchNormV3")


def _tf_scope(name: str) -> str | None:
    """The Keras layer scope in a tf2onnx name: ``vgg16_1/block1_conv1_1/convolution`` → ``block1_conv1_1``."""
    if "/" not in name or name.startswith("/"):
        return None
    segments = name.split(":")[0].split("/")
    for i, seg in enumerate(segments):
        if i > 0 and any(seg == op or seg.startswith(op) for op in _TF_OPS):
            return segments[i - 1]
    return segments[-2] if len(segments) >= 2 else None


def _tf2onnx(conv: Conv) -> str | None:
    """tf2onnx's TensorFlow scopes, the weight's first (a BN-folded conv's node is named after the BN)."""
    return _tf_scope(conv.weight) or _tf_scope(conv.name)


def _keras3_suffix(names: list) -> list:
    """Keras 3 under tf2onnx scopes every layer call ``<layer>_1``: the suffix goes only when
    *every* tf2onnx scope has one, so that a real layer named ``conv_1`` (scope ``conv_1_1``) stays."""
    if all(re.search(r"_\d+$", n) for n in names):
        return [re.sub(r"_\d+$", "", n) for n in names]
    return names


#: The rules, in the order they are tried.
RULES = (
    Rule("onnxviz metadata", _metadata,
         Example("renamed_by_metadata", "w5", "head_conv", layer_names={"w5": "head_conv"})),
    Rule("PyTorch parameter", _torch_parameter, Example("node_conv2d", "features.3.0.weight", "features.3.0")),
    Rule("PyTorch dynamo", _dynamo, Example("node_conv2d_1", "val_7", "layer2.0.bn1",
                                            scopes="['', 'layer2', 'layer2.0', 'layer2.0.bn1']")),
    Rule("TorchScript", _torchscript, Example("/layer1/layer1.0/conv1/Conv", "onnx::Conv_12", "layer1.0.conv1")),
    Rule("Caffe2", _caffe2, Example("n4", "gpu_0/res2_0_branch2a_w_0", "res2_0_branch2a")),
    Rule("MXNet", _mxnet, Example("resnetv15_stage1_conv0_fwd", "resnetv15_stage1_conv0_weight",
                                  "resnetv15_stage1_conv0")),
    Rule("onnxmltools (Keras, CoreML)", _onnxmltools, Example("conv1_7x7_s2", "conv1_7x7_s2_W", "conv1_7x7_s2")),
    Rule("keras2onnx", _keras2onnx, Example("block1_conv1", "W", "block1_conv1")),
    Rule("CNTK", _cntk, Example("Convolution28", "Parameter5", "Convolution28")),
    Rule("TorchScript (torch < 1.13)", _old_torchscript, Example("Conv_0", "193", "Conv_0")),
    Rule("tf2onnx (Keras, TensorFlow)", _tf2onnx,
         Example("vgg16_1/block1_conv1_1/convolution", "vgg16_1/block1_conv1_1/convolution/ReadVariableOp:0",
                 "block1_conv1"), finish=_keras3_suffix),
)


def _layer_names(metadata: dict) -> dict:
    """The ``onnxviz.layer_names`` mapping (text values only), or ``{}`` with a warning if not JSON."""
    text = metadata.get(META["layer_names"])
    if not text:
        return {}
    try:
        mapping = json.loads(text)
    except ValueError:
        warnings.warn(f"model metadata '{META['layer_names']}' is not JSON; ignored", OnnxvizWarning)
        return {}
    return {k: v for k, v in mapping.items() if isinstance(v, str) and v} if isinstance(mapping, dict) else {}


def _undo_quantizer(node: onnx.NodeProto, weight: str) -> tuple[str, str]:
    """onnxruntime.quantization's renames: ``<node>_quant`` and ``<weight>_quantized``."""
    if node.op_type in ("QLinearConv", "ConvInteger"):
        return re.sub(r"_quant$", "", node.name), re.sub(r"_quantized$", "", weight)
    return node.name, weight


def friendly_names(convs: list, metadata: dict) -> list[str]:
    """One unique friendly name per conv: ``convs`` are ``(node, weight name)`` pairs in graph order."""
    mapping = _layer_names(metadata)
    found = []  # (rule index, name) per conv
    for node, weight in convs:
        conv = Conv(node, *_undo_quantizer(node, weight), weight, mapping)
        found.append(next(((k, name) for k, rule in enumerate(RULES) if (name := rule.find(conv))),
                          (None, conv.name)))
    names = [name for _, name in found]
    for k, rule in enumerate(RULES):
        mine = [i for i, (r, _) in enumerate(found) if r == k]
        if rule.finish and mine:
            for i, name in zip(mine, rule.finish([names[i] for i in mine])):
                names[i] = name
    out, seen = [], set()
    for (node, _), name in zip(convs, names):
        name = name or f"conv_{len(out)}"
        if name in seen:
            name = node.name if node.name and node.name not in seen else f"{name}#{len(out)}"
        seen.add(name)
        out.append(name)
    return out


_TORCHSCRIPT_COMPUTED = re.compile(r"onnx::(?:Conv|ConvTranspose)_\d+")


def folded_into(node: onnx.NodeProto, weight: str) -> str:
    """What the exporter folded into this conv's weights: ``"BatchNorm"``, or ``""``.

    Then :meth:`Model.filters` returns the folded weights (``w · γ/√(σ²+ε)``), not the
    framework's parameter. Evidence, by exporter: the dynamo exporter records its rewrite
    (``pkg.onnxscript.rewriter.rule_name`` = ``FuseBatchNormIntoConv``); the TorchScript
    exporter names a weight it computed ``onnx::Conv_<n>`` instead of the parameter's name,
    which in an eval-mode export is its Conv+BatchNorm fusion (before torch 1.13: a number,
    ``193``, on a node ``Conv_<n>``); tf2onnx names a BN-folded conv after the BN's scope
    (``…/bn_Conv1_1/batchnorm/mul_1``).
    """
    for p in node.metadata_props:
        if p.key == "pkg.onnxscript.rewriter.rule_name" and "BatchNorm" in p.value:
            return "BatchNorm"
    if node.name.startswith("/") and _TORCHSCRIPT_COMPUTED.fullmatch(weight):
        return "BatchNorm"
    if re.fullmatch(r"(?:Conv|ConvTranspose)_\d+", node.name) and weight.isdigit():
        return "BatchNorm"
    if "/" in node.name and not node.name.startswith("/") and "batchnorm" in node.name.lower():
        return "BatchNorm"
    return ""
