"""Friendly names: every rule of the table on the example it was made for, in its order."""

import json

import pytest
from onnx import helper

import onnxviz
from builders import Net, save
from onnxviz.graph.names import RULES, Conv, folded_into, friendly_names


def _node(example):
    node = helper.make_node("Conv", ["x", example.weight], ["y"], name=example.node)
    if example.scopes:
        node.metadata_props.add(key="pkg.torch.onnx.name_scopes", value=example.scopes)
    return node


@pytest.mark.parametrize("rule", RULES, ids=[r.exporter for r in RULES])
def test_each_rule_names_its_example_and_no_earlier_rule_takes_it(rule):
    ex = rule.example
    node = _node(ex)
    assert friendly_names([(node, ex.weight)], {"onnxviz.layer_names": json.dumps(ex.layer_names)}) == [ex.gives]
    conv = Conv(node, ex.node, ex.weight, ex.weight, ex.layer_names)
    found = rule.find(conv)  # this rule itself gives it (tf2onnx: its scope, then the Keras 3 suffix goes)
    assert (rule.finish([found])[0] if rule.finish else found) == ex.gives
    earlier = RULES[:RULES.index(rule)]
    assert [r.exporter for r in earlier if r.find(conv)] == []


@pytest.mark.parametrize("weight, name", [
    ("conv1_1_w_0", "conv1_1"), ("fire2/squeeze1x1_w_0", "fire2/squeeze1x1"),
    ("gpu_0/res2_0_branch2a_w_0", "res2_0_branch2a"), ("inception_3a/1x1_w_0", "inception_3a/1x1")])
def test_caffe2_blob_names(weight, name):
    # onnx-caffe2 left the nodes unnamed in the Model Zoo files; the light models call them n0, n4, …
    for node_name in ("", "n3"):
        assert friendly_names([(helper.make_node("Conv", ["x", weight], ["y"], name=node_name), weight)], {}) == [name]


def test_suffixes_only_where_the_frameworks_own_names_collide(tmp_path):
    net = Net((1, 3, 8, 8))
    # tf2onnx: a Keras SeparableConv2D is two convs in one layer scope
    net.conv(3, 3, group=3, name="model/sep/separable_conv2d/depthwise", wname="model/sep/ReadVariableOp:0")
    net.conv(3, 4, k=1, pad=0, name="model/sep/separable_conv2d", wname="model/sep/ReadVariableOp_1:0")
    # two convs that both say 'c' and have no other name
    net.conv(4, 4, name="c", wname="W")
    net.conv(4, 4, name="unnamed", wname="c_W")
    net.nodes[-1].name = ""
    m = onnxviz.load(save(net.model(), tmp_path / "m.onnx"))
    assert [l.name for l in m.layers] == ["sep", "model/sep/separable_conv2d", "c", "c#3"]


def test_quantizer_renames_are_undone_before_the_rules():
    node = helper.make_node("QLinearConv", ["x", "s", "z", "fire2/squeeze1x1_w_0_quantized"], ["y"],
                            name="n3_quant")
    assert friendly_names([(node, "fire2/squeeze1x1_w_0_quantized")], {}) == ["fire2/squeeze1x1"]


def test_an_old_torchscript_computed_weight_is_a_folded_batchnorm():
    # torch < 1.13 names the weights it computed (Conv+BatchNorm in eval mode) with numbers
    conv = helper.make_node("Conv", ["x", "193"], ["y"], name="Conv_0")
    assert folded_into(conv, "193") == "BatchNorm"
    assert folded_into(conv, "conv1.weight") == ""  # a parameter, kept as it was
    assert folded_into(helper.make_node("Conv", ["0", "1"], ["2"], name=""), "1") == ""  # PyTorch 0.3: all numbers
