"""load(): the layer table, friendly names, input layout, and refusals of bad files."""

import json

import numpy as np
import pytest
from onnx import TensorProto, helper

import onnxviz
from builders import Net, save, vgg_like
from conftest import sha


def test_layers_of_a_plain_model(vgg):
    net, path = vgg
    m = onnxviz.load(path)
    assert [l.name for l in m.layers] == ["b1c1", "b1c2", "b2c1"]
    first = m.layers[0]
    assert (first.index, first.op, first.filter_shape, first.group) == (0, "Conv", (4, 3, 3, 3), 1)
    assert first.strides == (1, 1) and first.dilations == (1, 1)
    assert first.conv_output == "b1c1_out" and first.tensor == "relu_1_out" and first.activation == "Relu"
    assert [l.output_shape for l in m.layers] == [(4, 16, 16), (4, 16, 16), (6, 8, 8)]
    assert m.input.layout == "NCHW" and m.input.size == (16, 16) and m.input.size_from == "model"
    assert [l.name for l in m.stage_ends()] == ["b1c2", "b2c1"]


def test_load_reads_no_weight_bytes(tmp_path):
    """Large inline weights become references into the file itself; nothing is loaded."""
    net = Net((1, 3, 16, 16))
    net.conv(3, 64, name="big")  # 64*3*3*3*4 = 6912 bytes > INLINE_LIMIT
    path = save(net.model(), tmp_path / "m.onnx")
    m = onnxviz.load(path)
    w = m.proto.graph.initializer[0]
    assert w.data_location == TensorProto.EXTERNAL and not w.raw_data
    info = {e.key: e.value for e in w.external_data}
    assert info["location"] == "m.onnx" and int(info["length"]) == 6912
    assert m.proto.ByteSize() < 2000
    np.testing.assert_array_equal(m.filters("big"), net.weights["big"][0])


def test_lookup_by_index_name_node_tensor_and_glob(vgg):
    m = onnxviz.load(vgg[1])
    assert m.layer(1).name == m.layer("-2").name == "b1c2"
    assert m.layer("relu_4_out").name == "b2c1"
    assert m.layer("b2c1_out").name == "b2c1"
    assert [l.name for l in m.select(["b1*"])] == ["b1c1", "b1c2"]
    assert [l.name for l in m.select(["b2c1", "0", "b2c1"])] == ["b2c1", "b1c1"]


def test_unknown_layer_lists_the_layers(vgg):
    m = onnxviz.load(vgg[1])
    with pytest.raises(onnxviz.LayerError) as e:
        m.layer("conv9")
    assert str(e.value) == "no layer 'conv9'; layers are: b1c1, b1c2, b2c1"
    with pytest.raises(onnxviz.LayerError, match="no layer '7'"):
        m.layer(7)


def test_feature_tensor_follows_bias_bn_and_activation(tmp_path):
    net = Net((1, 3, 8, 8))
    c = net.conv(3, 4, name="c1", bias=False)
    scale = net.init("bn.s", np.ones(4, np.float32))
    bias = net.init("bn.b", np.zeros(4, np.float32))
    bn = net.node("BatchNormalization", [c, scale, bias, bias, scale], name="bn")
    add = net.node("Add", [bn, net.init("k", np.ones((4, 1, 1), np.float32))], name="bias")
    net.cur = net.node("LeakyRelu", [add], name="act", alpha=0.1)
    m = onnxviz.load(save(net.model(), tmp_path / "m.onnx"))
    assert (m.layers[0].conv_output, m.layers[0].tensor, m.layers[0].activation) == ("c1_out", "act_out", "LeakyRelu")


def test_feature_tensor_gate_pattern_and_stops(tmp_path):
    net = Net((1, 3, 8, 8))
    c = net.conv(3, 4, name="c1")
    sig = net.node("Sigmoid", [c], name="sig")
    silu = net.node("Mul", [c, sig], name="silu")
    net.cur = silu
    c2 = net.conv(4, 4, name="c2")
    res = net.node("Add", [c2, silu], name="residual")  # not a constant: ends the chain
    net.cur = net.node("Relu", [res], name="r")
    c3 = net.conv(4, 4, name="c3")
    net.node("Relu", [c3], name="a"), net.node("Relu", [c3], name="b")  # fan-out
    m = onnxviz.load(save(net.model(outputs=["a_out", "b_out"]), tmp_path / "m.onnx"))
    got = {l.name: (l.tensor, l.activation) for l in m.layers}
    assert got == {"c1": ("silu_out", "x*Sigmoid(x)"), "c2": ("c2_out", ""), "c3": ("c3_out", "")}


def test_feature_tensor_through_qdq_pairs(tmp_path):
    net = Net((1, 3, 8, 8))
    c = net.conv(3, 4, name="c1")
    s, z = net.init("s", np.float32(0.05)), net.init("z", np.uint8(128))
    q = net.node("QuantizeLinear", [c, s, z], name="q1")
    dq = net.node("DequantizeLinear", [q, s, z], name="dq1")
    net.cur = net.node("Relu", [dq], name="act")
    q2 = net.node("QuantizeLinear", [net.cur, s, z], name="q2")
    net.cur = net.node("DequantizeLinear", [q2, s, z], name="dq2")
    m = onnxviz.load(save(net.model(), tmp_path / "m.onnx"))
    assert m.layers[0].tensor == "dq2_out"


def _const(net, name, value):
    return net.init(name, np.asarray(value, np.float32))


def test_feature_tensor_through_written_out_gelu_mish_and_groupnorm(tmp_path):
    """TorchScript's decompositions: the chain converges again after each of them."""
    net = Net((1, 3, 8, 8))
    x = net.conv(3, 4, name="gelu_conv")  # x·(1+erf(x/√2))·0.5
    e = net.node("Erf", [net.node("Div", [x, _const(net, "sqrt2", 2 ** 0.5)])])
    m = net.node("Mul", [x, net.node("Add", [e, _const(net, "one", 1.0)])])
    net.cur = net.node("Mul", [m, _const(net, "half", 0.5)], name="gelu")
    x = net.conv(4, 4, name="mish_conv")  # x·tanh(softplus(x))
    net.cur = net.node("Mul", [x, net.node("Tanh", [net.node("Softplus", [x])])], name="mish")
    x = net.conv(4, 4, name="gn_conv", bias=False)  # Reshape → InstanceNorm → Reshape(Shape(x))
    r = net.node("Reshape", [x, net.init("groups", np.array([0, 2, -1], np.int64))])
    n = net.node("InstanceNormalization", [r, _const(net, "g1", [1, 1]), _const(net, "b0", [0, 0])])
    r = net.node("Reshape", [n, net.node("Shape", [x])])
    a = net.node("Add", [net.node("Mul", [r, _const(net, "gamma", np.ones((4, 1, 1)))]),
                         _const(net, "beta", np.zeros((4, 1, 1)))])
    net.cur = net.node("Relu", [a], name="gn_relu")
    x = net.conv(4, 4, name="gn_static")  # dynamo: constant shapes, checked by shape inference
    r = net.node("Reshape", [x, net.init("grouped", np.array([1, 2, -1], np.int64))])
    n = net.node("InstanceNormalization", [r, "g1", "b0"])
    net.cur = net.node("Reshape", [n, net.init("back", np.array([1, 4, 8, 8], np.int64))], name="gn")
    m = onnxviz.load(save(net.model(), tmp_path / "m.onnx"))
    got = {l.name: (l.tensor, l.activation) for l in m.layers}
    assert got == {"gelu_conv": ("gelu_out", "Gelu"), "mish_conv": ("mish_out", "Mish"),
                   "gn_conv": ("gn_relu_out", "GroupNorm+Relu"), "gn_static": ("gn_out", "GroupNorm")}
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    fm, raw = m.feature_maps(x), m.feature_maps(x, raw_conv=True)
    g = raw["gelu_conv"].astype(np.float64)
    from math import erf
    np.testing.assert_allclose(fm["gelu_conv"], 0.5 * g * (1 + np.vectorize(erf)(g / 2 ** 0.5)), rtol=1e-5, atol=1e-6)
    v = raw["gn_conv"].reshape(1, 2, -1)
    v = ((v - v.mean(-1, keepdims=True)) / np.sqrt(v.var(-1, keepdims=True) + 1e-5)).reshape(1, 4, 8, 8)
    np.testing.assert_allclose(fm["gn_conv"], np.maximum(v, 0), rtol=1e-4, atol=1e-5)


def test_feature_tensor_shape_and_type_reads_are_no_fan_out(tmp_path):
    """dynamo without its optimiser: Clip's bounds are CastLike(constant, x); Shape(x) elsewhere."""
    net = Net((1, 3, 8, 8))
    x = net.conv(3, 4, name="c1")
    lo = net.node("CastLike", [_const(net, "zero", 0.0), x])
    hi = net.node("CastLike", [_const(net, "six", 6.0), x])
    net.node("Shape", [x], name="shape_only")
    net.cur = net.node("Clip", [x, lo, hi], name="relu6")
    m = onnxviz.load(save(net.model(), tmp_path / "m.onnx"))
    assert (m.layers[0].tensor, m.layers[0].activation) == ("relu6_out", "Clip")


def test_feature_tensor_after_the_activation_only_a_scalar_scale(tmp_path):
    net = Net((1, 3, 8, 8))
    net.conv(3, 4, name="c1")
    net.act("Relu")
    half = net.node("Mul", [net.cur, _const(net, "half", 0.5)], name="half")  # ·0.5: part of it
    net.cur = net.node("Add", [half, _const(net, "shift", np.ones((4, 1, 1)))], name="shift")
    net.cur = net.node("Relu", [net.cur], name="again")
    m = onnxviz.load(save(net.model(), tmp_path / "m.onnx"))
    assert (m.layers[0].tensor, m.layers[0].activation) == ("half_out", "Relu")


def test_feature_tensor_stops_at_a_residual_add_a_gate_from_elsewhere_and_a_fan_out(tmp_path):
    net = Net((1, 3, 8, 8))
    skip = net.conv(3, 4, name="c0")
    x = net.conv(4, 4, name="c1")  # x + tanh(x) would converge; x + skip does not
    t = net.node("Tanh", [x], name="t")
    net.cur = net.node("Add", [net.node("Add", [x, skip], name="residual"), t], name="sum")
    x = net.conv(4, 4, name="c2")  # SE: x · sigmoid(fc(pool(x))): the gate is computed elsewhere
    gate = net.node("Sigmoid", [net.conv(4, 4, k=1, pad=0, name="fc", x=net.node("GlobalAveragePool", [x]))],
                    name="gate")
    net.cur = net.node("Mul", [x, gate], name="se")
    x = net.conv(4, 4, name="c3")  # to two convs
    a, b = net.conv(4, 4, name="a", x=x), net.conv(4, 4, name="b", x=x)
    net.cur = net.node("Add", [a, b], name="join")
    net.conv(4, 4, name="c4")  # Relu, then a flatten Reshape: not undone, not part of the chain
    net.cur = net.node("Relu", [net.cur], name="r4")
    net.cur = net.node("Reshape", [net.cur, net.init("flat", np.array([1, -1], np.int64))], name="flat")
    m = onnxviz.load(save(net.model(), tmp_path / "m.onnx"))
    got = {l.name: (l.tensor, l.activation) for l in m.layers}
    assert got["c1"] == ("c1_out", "") and got["c2"] == ("c2_out", "") and got["c3"] == ("c3_out", "")
    assert got["fc"] == ("gate_out", "Sigmoid") and got["c4"] == ("r4_out", "Relu")


@pytest.mark.parametrize("length, converges", [(6, True), (20, False)])
def test_feature_tensor_region_size_is_bounded(tmp_path, length, converges):
    """x · f(x) with f a chain of ``length`` nodes: followed up to the bound, else the conv output."""
    net = Net((1, 3, 8, 8))
    x = net.conv(3, 4, name="c1")
    f = x
    for k in range(length):
        f = net.node("Neg" if k % 2 else "Abs", [f])
    net.cur = net.node("Mul", [x, f], name="prod")
    m = onnxviz.load(save(net.model(), tmp_path / "m.onnx"))
    layer = m.layers[0]
    assert (layer.tensor, layer.activation) == (("prod_out", "Abs·Neg·Mul") if converges else ("c1_out", ""))


def test_feature_tensor_silu_through_one_qdq_pair_per_consumer(tmp_path):
    """The quantizer's DedicatedQDQPair: x reaches Sigmoid and Mul through two equal pairs."""
    net = Net((1, 3, 8, 8))
    x = net.conv(3, 4, name="c1")
    s, z = net.init("s", np.float32(0.05)), net.init("z", np.uint8(128))

    def qdq(t, k):
        return net.node("DequantizeLinear", [net.node("QuantizeLinear", [t, s, z], name=f"q{k}"), s, z], name=f"dq{k}")

    sig = qdq(net.node("Sigmoid", [qdq(x, 1)], name="sig"), 3)
    net.cur = qdq(net.node("Mul", [qdq(x, 2), sig], name="silu"), 4)
    m = onnxviz.load(save(net.model(), tmp_path / "m.onnx"))
    assert (m.layers[0].tensor, m.layers[0].activation) == ("dq4_out", "x*Sigmoid(x)")


def test_friendly_names_torchscript_dynamo_and_metadata(tmp_path):
    net = Net((1, 3, 8, 8))
    net.conv(3, 4, name="/layer1/layer1.0/conv1/Conv", wname="onnx::Conv_12")
    net.conv(4, 4, name="/features/features.0/Conv", wname="onnx::Conv_13")
    net.conv(4, 4, name="node_conv2d", wname="features.3.0.weight")  # dynamo keeps param names
    net.conv(4, 4, name="node_conv2d_1", wname="val_7")
    net.nodes[-1].metadata_props.add(key="pkg.torch.onnx.name_scopes",
                                     value="['', 'layer2', 'layer2.0', 'layer2.0.bn1']")
    net.nodes[-1].metadata_props.add(key="pkg.onnxscript.rewriter.rule_name",
                                     value="FuseBatchNormIntoConv, RemoveOptionalBiasFromConv")
    net.conv(4, 4, name="renamed_by_metadata", wname="w5")
    net.conv(4, 4, name="/layer1/layer1.1/downsample/downsample.0/Conv", wname="layer1.1.downsample.0.weight")
    net.conv(4, 4, name="/features/features.0/features.0.0/Conv", wname="onnx::Conv_99")
    model = net.model(metadata={"onnxviz.layer_names": json.dumps({"w5": "head_conv"})})
    m = onnxviz.load(save(model, tmp_path / "m.onnx"))
    assert [l.name for l in m.layers] == ["layer1.0.conv1", "features.0", "features.3.0",
                                          "layer2.0.bn1", "head_conv", "layer1.1.downsample.0",
                                          "features.0.0"]
    # what the exporter folded into the weights: TorchScript's computed 'onnx::Conv_<n>'
    # weights, dynamo's recorded rewrite; a parameter name or a plain name is not folded
    assert [l.folded for l in m.layers] == ["BatchNorm", "BatchNorm", "", "BatchNorm", "", "", "BatchNorm"]
    assert "folded in" in m.summary_text().splitlines()[2]


def test_friendly_names_keras3_tf2onnx(tmp_path):
    net = Net((1, 3, 8, 8))
    net.conv(3, 4, name="vgg16_1/block1_conv1_1/convolution", wname="vgg16_1/block1_conv1_1/convolution/ReadVariableOp:0")
    net.conv(4, 4, name="model_1/conv_1_1/convolution", wname="model_1/conv_1_1/convolution/ReadVariableOp:0")
    # tf2onnx names a BN-folded conv after the BN; its weight keeps the conv's scope
    net.conv(4, 4, name="model_1/bn_Conv1_1/batchnorm/mul_1", wname="model_1/Conv1_1/convolution/merged_input:0")
    m = onnxviz.load(save(net.model(), tmp_path / "m.onnx"))
    assert [l.name for l in m.layers] == ["block1_conv1", "conv_1", "Conv1"]
    assert [l.folded for l in m.layers] == ["", "", "BatchNorm"]


def test_duplicate_names_are_made_unique(tmp_path):
    net = Net((1, 3, 8, 8))
    net.conv(3, 4, name="/a/b/Conv", wname="x1")
    net.conv(4, 4, name="/a/b/Conv_1", wname="x2")
    m = onnxviz.load(save(net.model(), tmp_path / "m.onnx"))
    names = [l.name for l in m.layers]
    assert names[0] == "a.b" and len(set(names)) == 2


def test_nhwc_input_behind_transpose(tmp_path):
    net = Net((1, 16, 16, 3), name="input_1")
    net.cur = net.node("Transpose", ["input_1"], name="t", perm=[0, 3, 1, 2])
    net.conv(3, 4, name="c"); net.act()
    m = onnxviz.load(save(net.model(), tmp_path / "m.onnx"))
    assert (m.input.name, m.input.layout, m.input.size) == ("input_1", "NHWC", (16, 16))


def test_dynamic_dims_use_metadata_size_else_224(tmp_path):
    net = Net(("N", 3, "H", "W"))
    net.conv(3, 4, name="c"); net.act()
    m = onnxviz.load(save(net.model(), tmp_path / "a.onnx"))
    assert (m.input.size, m.input.size_from) == ((224, 224), "default")
    assert m.layers[0].output_shape == (4, 224, 224)
    m = onnxviz.load(save(net.model(metadata={"onnxviz.input_size": "32,48"}), tmp_path / "b.onnx"))
    assert (m.input.size, m.input.size_from, m.layers[0].output_shape) == ((32, 48), "metadata", (4, 32, 48))


def test_old_ir_initializers_in_graph_input_are_not_inputs(tmp_path):
    net, model = vgg_like()
    model.ir_version = 3
    model.opset_import[0].version = 9
    for t in model.graph.initializer:
        model.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    m = onnxviz.load(save(model, tmp_path / "old.onnx"))
    assert m.input.name == "input" and [i.name for i in m._index.inputs] == ["input"]
    fm = m.feature_maps(np.zeros((16, 16, 3), np.uint8), "b2c1", preprocess="raw")
    assert fm["b2c1"].shape == (1, 6, 8, 8)


def test_nchwc_blocked_model_is_refused(tmp_path):
    net, model = vgg_like()
    model.graph.node.insert(0, helper.make_node("ReorderInput", ["input"], ["blocked"], name="reorder",
                                                domain="com.microsoft.nchwc"))
    with pytest.raises(onnxviz.UnsupportedModelError, match=r"NCHWc layout optimisation \(node 'reorder'"):
        onnxviz.load(save(model, tmp_path / "m.onnx"))


def test_load_never_modifies_the_model(vgg):
    before = sha(vgg[1])
    m = onnxviz.load(vgg[1])
    m.filters(0)
    m.feature_maps(np.zeros((16, 16, 3), np.uint8))
    assert sha(vgg[1]) == before
