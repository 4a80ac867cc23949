"""feature_maps(): values against numpy and against an Extractor sub-model; the graph rewrite."""

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxviz
from builders import Net, conv_ref, relu, save, vgg_like
from conftest import assert_close, reference
from onnxviz import preprocess
from onnxviz.graph import rewrite as graph


def _img(h=16, w=16, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def _nchw(img, scale=1 / 255):
    return (img.astype(np.float32) * scale).transpose(2, 0, 1)[None]


def test_first_layers_equal_a_numpy_convolution(vgg):
    net, path = vgg
    img = _img()
    fm = onnxviz.load(path).feature_maps(img, layers=["b1c1", "b1c2"])
    w1, b1 = net.weights["b1c1"]
    w2, b2 = net.weights["b1c2"]
    a1 = relu(conv_ref(_nchw(img), w1, b1, pad=1))
    assert_close(fm["b1c1"], a1, 1e-5)
    assert_close(fm["b1c2"], relu(conv_ref(a1, w2, b2, pad=1)), 1e-5)
    assert fm["b1c1"].dtype == np.float32 and list(fm) == ["b1c1", "b1c2"]


def test_raw_conv_is_before_the_activation(vgg):
    net, path = vgg
    img = _img()
    fm = onnxviz.load(path).feature_maps(img, "b1c1", raw_conv=True)
    assert_close(fm["b1c1"], conv_ref(_nchw(img), *net.weights["b1c1"], pad=1), 1e-5)
    assert fm["b1c1"].min() < 0


def _check_all_layers(path, img, x, preprocess_name="unit", input_name=None, **kw):
    m = onnxviz.load(path)
    fm = m.feature_maps(img, preprocess=preprocess_name, **kw)
    ref = reference(path, [l.tensor for l in m.layers], x, input_name)
    for layer in m.layers:
        assert_close(fm[layer.name], ref[layer.tensor])
    return m, fm


def test_nhwc_model_with_tf2onnx_transpose(tmp_path):
    net = Net((1, 16, 16, 3), name="input_1")
    net.cur = net.node("Transpose", ["input_1"], name="t", perm=[0, 3, 1, 2])
    net.conv(3, 4, name="model_1/c1_1/convolution"); net.act()
    net.conv(4, 4, name="model_1/c2_1/convolution"); net.act(); net.pool()
    path = save(net.model(), tmp_path / "nhwc.onnx")
    img = _img()
    m, fm = _check_all_layers(path, img, img[None].astype(np.float32) / 255)
    assert [l.name for l in m.layers] == ["c1", "c2"] and fm["c1"].shape == (1, 4, 16, 16)


def test_conv_bn_relu(tmp_path):
    net = Net((1, 3, 16, 16))
    c = net.conv(3, 4, name="c", bias=False)
    r = np.random.default_rng(5)
    params = [net.init(n, v) for n, v in [("g", r.random(4, np.float32) + 0.5), ("b", r.random(4, np.float32)),
                                           ("mu", r.random(4, np.float32)), ("var", r.random(4, np.float32) + 0.5)]]
    net.cur = net.node("BatchNormalization", [c] + params, name="bn")
    net.act()
    path = save(net.model(), tmp_path / "bn.onnx")
    img = _img()
    m, _ = _check_all_layers(path, img, _nchw(img))
    assert m.layers[0].activation == "Relu"


def test_depthwise_and_conv_transpose(tmp_path):
    net = Net((1, 3, 16, 16))
    net.conv(3, 6, name="c"); net.act()
    net.conv(6, 6, name="dw", group=6, stride=2); net.act("HardSwish")
    wt = np.random.default_rng(2).standard_normal((6, 3, 2, 2)).astype(np.float32)
    net.cur = net.node("ConvTranspose", [net.cur, net.init("wt", wt)], name="up", strides=[2, 2])
    net.act("Sigmoid")
    path = save(net.model(), tmp_path / "dw.onnx")
    img = _img()
    m, fm = _check_all_layers(path, img, _nchw(img))
    assert fm["dw"].shape == (1, 6, 8, 8) and fm["up"].shape == (1, 3, 16, 16)


def test_fp16_weights_behind_cast(tmp_path):
    net = Net((1, 3, 16, 16))
    w16 = (np.random.default_rng(1).standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float16)
    cast = net.node("Cast", [net.init("w16", w16)], name="cast", to=TensorProto.FLOAT)
    net.cur = net.node("Conv", ["input", cast], name="c", pads=[1, 1, 1, 1])
    net.act()
    path = save(net.model(), tmp_path / "fp16.onnx")
    img = _img()
    _, fm = _check_all_layers(path, img, _nchw(img))
    assert_close(fm["c"], relu(conv_ref(_nchw(img), w16.astype(np.float32), pad=1)), 1e-5)


def test_qdq_weights(tmp_path):
    net = Net((1, 3, 16, 16))
    q = np.random.default_rng(1).integers(-100, 100, (4, 3, 3, 3)).astype(np.int8)
    scale = np.array([0.01, 0.02, 0.005, 0.01], np.float32)
    dq = net.node("DequantizeLinear", [net.init("q", q), net.init("s", scale), net.init("z", np.zeros(4, np.int8))],
                  name="dq", axis=0)
    net.cur = net.node("Conv", ["input", dq], name="c", pads=[1, 1, 1, 1])
    net.act()
    path = save(net.model(), tmp_path / "qdq.onnx")
    img = _img()
    m, fm = _check_all_layers(path, img, _nchw(img))
    w = q.astype(np.float32) * scale[:, None, None, None]
    assert_close(fm["c"], relu(conv_ref(_nchw(img), w, pad=1)), 1e-5)
    np.testing.assert_allclose(m.filters("c"), w, rtol=1e-6)


def test_external_data_model_writes_nothing(tmp_path):
    net, model = vgg_like()
    folder = tmp_path / "model"
    folder.mkdir()
    path = save(model, folder / "ext.onnx", external=True)
    before = sorted(p.name for p in folder.iterdir())
    img = _img()
    _check_all_layers(path, img, _nchw(img))
    assert sorted(p.name for p in folder.iterdir()) == before == ["ext.onnx", "ext.onnx.data"]


def test_dynamic_batch_and_spatial_dims(tmp_path):
    net = Net(("N", 3, "H", "W"))
    net.conv(3, 4, name="c1"); net.act()
    net.conv(4, 5, name="c2", stride=2); net.act()
    path = save(net.model(), tmp_path / "dyn.onnx")
    imgs = [_img(30, 40, 1), _img(12, 12, 2), _img(20, 20, 3)]
    m = onnxviz.load(path)
    fm = m.feature_maps(imgs, preprocess="unit", size=(12, 20))
    x = np.concatenate([preprocess.to_tensor(i, size=(12, 20), preset="unit") for i in imgs])
    ref = reference(path, [l.tensor for l in m.layers], x)
    assert fm["c1"].shape == (3, 4, 12, 20) and fm["c2"].shape == (3, 5, 6, 10)
    for l in m.layers:
        assert_close(fm[l.name], ref[l.tensor])


def test_fixed_batch_of_one_runs_a_batch_in_chunks(vgg):
    net, path = vgg
    imgs = [_img(seed=s) for s in range(3)]
    fm = onnxviz.load(path).feature_maps(imgs, "b1c1")
    assert fm["b1c1"].shape == (3, 4, 16, 16)
    for k, img in enumerate(imgs):
        assert_close(fm["b1c1"][k], relu(conv_ref(_nchw(img), *net.weights["b1c1"], pad=1))[0], 1e-5)


def test_fixed_size_cannot_be_overridden(vgg):
    with pytest.raises(onnxviz.ImageError, match=r"has a fixed input size 16×16; size 32×32 cannot be used"):
        onnxviz.load(vgg[1]).feature_maps(_img(), size=(32, 32))


def test_preset_from_metadata_else_raw_with_a_warning(tmp_path):
    net, model = vgg_like()
    path = save(model, tmp_path / "plain.onnx")
    m = onnxviz.load(path)
    img = _img()
    with pytest.warns(onnxviz.OnnxvizWarning, match="model has no 'onnxviz.preprocess' metadata; feeding raw"):
        fm = m.feature_maps(img, "b1c1")
    assert_close(fm["b1c1"], relu(conv_ref(_nchw(img, 1.0), *net.weights["b1c1"], pad=1)), 1e-5)
    net2, model2 = vgg_like(metadata={"onnxviz.preprocess": "caffe"})
    m2 = onnxviz.load(save(model2, tmp_path / "caffe.onnx"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fm2 = m2.feature_maps(img, "b1c1")
    x = img.astype(np.float32)[:, :, ::-1] - np.array([103.939, 116.779, 123.68], np.float32)
    assert_close(fm2["b1c1"], relu(conv_ref(x.transpose(2, 0, 1)[None], *net2.weights["b1c1"], pad=1)), 1e-5)


def test_sessions_are_cached_per_set_of_layers(vgg):
    m = onnxviz.load(vgg[1])
    m.feature_maps(_img(), ["b1c1"])
    m.feature_maps(_img(seed=1), ["b1c1"])
    m.feature_maps(_img(), ["b1c1", "b2c1"])
    assert len(m._sessions) == 2


# ------------------------------------------------------------------ graph rewrites

def test_sub_model_prunes_to_what_the_layer_needs_and_never_mutates(vgg):
    m = onnxviz.load(vgg[1])
    before = m.proto.SerializeToString()
    sub = graph.sub_model(m.proto, [m.layer("b1c1").tensor])
    assert m.proto.SerializeToString() == before
    assert [n.op_type for n in sub.graph.node] == ["Conv", "Relu"]
    assert sorted(t.name for t in sub.graph.initializer) == ["b1c1.bias", "b1c1.weight"]
    assert [o.name for o in sub.graph.output] == ["relu_1_out"]
    out = sub.graph.output[0].type.tensor_type
    assert out.elem_type == TensorProto.FLOAT and [d.dim_value for d in out.shape.dim] == [1, 4, 16, 16]


def test_expose_skips_existing_outputs_and_types_new_ones(vgg):
    m = onnxviz.load(vgg[1])
    last = m.proto.graph.output[0].name
    new = graph.expose(m.proto, [last, "relu_2_out"])
    assert [o.name for o in new.graph.output] == [last, "relu_2_out"]
    assert len(m.proto.graph.output) == 1


def test_tensor_inside_an_if_body_is_a_clear_error(vgg):
    m = onnxviz.load(vgg[1])
    body = helper.make_graph([helper.make_node("Identity", ["relu_1_out"], ["inner"])], "then", [],
                             [helper.make_tensor_value_info("inner", TensorProto.FLOAT, None)])
    proto = onnx.ModelProto()
    proto.CopyFrom(m.proto)
    proto.graph.initializer.append(numpy_helper.from_array(np.array(True), "cond"))
    proto.graph.node.append(helper.make_node("If", ["cond"], ["picked"], name="branch",
                                             then_branch=body, else_branch=body))
    with pytest.raises(onnxviz.LayerError) as e:
        graph.expose(proto, ["inner"])
    assert str(e.value) == ("tensor 'inner' is inside the body of If node 'branch'; "
                            "only tensors of the main graph can be exposed")


def test_fused_conv_untyped_by_onnx_is_typed_by_the_session(tmp_path):
    """com.microsoft FusedConv: onnx shape inference cannot type it, onnxruntime can: the
    session stage of the one shape inference sizes it for the layer table (before: no shape,
    and no activation named), and the feature-map session types the exposed output."""
    net = Net((1, 3, 16, 16))
    w = (np.random.default_rng(9).standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32)
    b = np.linspace(-0.5, 0.5, 4).astype(np.float32)
    net.cur = net.node("FusedConv", ["input", net.init("w", w), net.init("b", b)], name="fused",
                       domain="com.microsoft", activation="Relu", pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    net.conv(4, 4, name="after"); net.act()
    model = net.model()
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    m = onnxviz.load(save(model, tmp_path / "fused.onnx"))
    assert [(l.op, l.output_shape, l.activation) for l in m.layers] == [
        ("FusedConv", (4, 16, 16), "Relu"), ("Conv", (4, 16, 16), "Relu")]
    assert m.shapes(m._table_feeds()).sized_by["fused_out"] == "session"
    sub = graph.expose(m.proto, ["fused_out"])
    assert not sub.graph.output[-1].type.HasField("tensor_type")  # left for onnxruntime to type
    img = _img()
    fm = m.feature_maps(img, ["fused", "after"], preprocess="unit")
    assert_close(fm["fused"], relu(conv_ref(_nchw(img), w, b, pad=1)), 1e-5)
    assert fm["after"].shape == (1, 4, 16, 16)
