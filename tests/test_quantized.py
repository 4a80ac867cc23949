"""Quantized models made by onnxruntime.quantization: QDQ, QOperator (QLinearConv), dynamic (ConvInteger).

One small float model (conv-Relu, depthwise conv-Relu, pool, conv-LeakyRelu, 1×1 conv) is
quantized three ways. For each: filters are ``(q - zero_point) · scale`` from the quantized
model's own initializers, within half a step of the float weights; feature maps are float32
and equal the same graph run by onnxruntime with optimisations off; the tensors onnxviz
fetches keep onnxruntime's quantized fusions.
"""

import collections
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxviz
from builders import Net, save
from conftest import reference
from onnxviz import runtime
from onnxviz.graph import rewrite as graph
from onnxviz.errors import OnnxvizWarning

quantization = pytest.importorskip("onnxruntime.quantization")

SIZE = 32
NAMES = ["c1", "dw", "c3", "c4"]


def _float_model(path):
    net = Net(("N", 3, SIZE, SIZE), seed=3)
    net.conv(3, 8, name="c1"); net.act()
    net.conv(8, 8, name="dw", group=8); net.act(); net.pool()
    net.conv(8, 16, name="c3"); net.act("LeakyRelu", alpha=0.1)
    net.conv(16, 8, name="c4", k=1, pad=0)
    save(net.model(), path)
    return net


class _Reader(quantization.CalibrationDataReader):
    """A few seeded random inputs, distributed like the test images (uniform in [0, 1))."""

    def __init__(self):
        r = np.random.default_rng(0)
        self._batches = iter([{"input": r.random((1, 3, SIZE, SIZE), dtype=np.float32)} for _ in range(8)])

    def get_next(self):
        return next(self._batches, None)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """``(net, {kind: path})`` for kind in qdq, qoperator, dynamic."""
    d = tmp_path_factory.mktemp("quantized")
    net = _float_model(d / "float.onnx")
    quantization.quant_pre_process(str(d / "float.onnx"), str(d / "prep.onnx"))
    paths = {k: d / f"{k}.onnx" for k in ("qdq", "qoperator", "dynamic")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # reduce_range: 7-bit weights, as onnxruntime advises for CPUs without VNNI. On AVX2 the
        # fused u8s8 QLinearConv sums pairs of products in int16 (vpmaddubsw), which saturates
        # with 8-bit weights: measured 25 steps off the float reference on an AVX2 EPYC, while
        # an AVX-512 Xeon stays within one. With 7 bits no pair can saturate on either.
        quantization.quantize_static(str(d / "prep.onnx"), str(paths["qdq"]), _Reader(),
                                     quant_format=quantization.QuantFormat.QDQ, per_channel=True,
                                     reduce_range=True)
        quantization.quantize_static(str(d / "prep.onnx"), str(paths["qoperator"]), _Reader(),
                                     quant_format=quantization.QuantFormat.QOperator, per_channel=True,
                                     activation_type=quantization.QuantType.QUInt8)
        quantization.quantize_dynamic(str(d / "prep.onnx"), str(paths["dynamic"]), op_types_to_quantize=["Conv"])
    return net, paths


def _graph(path):
    g = onnx.load(str(path)).graph
    producers = {o: n for n in g.node for o in n.output}
    consumers = collections.defaultdict(list)
    for n in g.node:
        for i in n.input:
            consumers[i].append(n)
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    return g, producers, consumers, inits


def _images(n=16, seed=5):
    imgs = (np.random.default_rng(seed).random((n, SIZE, SIZE, 3)) * 255).astype(np.uint8)
    return list(imgs), (imgs.astype(np.float32) / 255).transpose(0, 3, 1, 2)


def _per_channel(v, ndim=4):
    v = np.asarray(v, np.float32)
    return v.reshape((-1,) + (1,) * (ndim - 1)) if v.size > 1 else v


def _expected_filters(kind, layer, g, producers, inits):
    """``(q - zero_point) · scale`` in float32, read from the quantized model by the test itself."""
    node = next(n for n in g.node if n.name == layer.node)
    if kind == "qdq":
        dq = producers[node.input[1]]
        q, scale, zp = (inits[i] for i in dq.input)
    elif kind == "qoperator":
        q, scale, zp = inits[node.input[3]], inits[node.input[4]], inits[node.input[5]]
    else:  # quantize_dynamic names the weight scale '<weight>_scale' and multiplies it in after a Cast
        q, zp = inits[node.input[1]], inits[node.input[3]]
        scale = inits[node.input[1].replace("_quantized", "_scale")]
    return (q.astype(np.float32) - _per_channel(zp)) * _per_channel(scale), np.asarray(scale, np.float32)


@pytest.mark.parametrize("kind", ["qdq", "qoperator", "dynamic"])
def test_filters_are_dequantized_weights(models, kind):
    net, paths = models
    m = onnxviz.load(paths[kind])
    g, producers, _, inits = _graph(paths[kind])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the scale is found: no fallback warning
        for layer, name in zip(m.layers, NAMES):
            got = m.filters(layer.name)
            want, scale = _expected_filters(kind, layer, g, producers, inits)
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, want)
            w_float = net.weights[name][0]
            half_step = _per_channel(scale) / 2
            assert (np.abs(got - w_float) <= half_step * (1 + 1e-6)).all()
            assert not np.array_equal(got, w_float)  # it is the quantized weight, not the float one


def _layer_steps(layer, producers, inits):
    """The QuantizeLinear steps on the chain from the conv to the layer's tensor (QDQ)."""
    steps, cur = [], layer.tensor
    while cur != layer.conv_output and cur in producers:
        node = producers[cur]
        if node.op_type == "QuantizeLinear":
            steps.append(float(inits[node.input[1]]))
        cur = node.input[0]
    return steps


def test_qdq_feature_maps_equal_the_unoptimised_graph_within_one_step_per_requantization(models):
    _, paths = models
    m = onnxviz.load(paths["qdq"])
    _, producers, _, inits = _graph(paths["qdq"])
    imgs, x = _images()
    fm = m.feature_maps(imgs, preprocess="unit")
    ref = reference(paths["qdq"], [l.tensor for l in m.layers], x)
    for layer in m.layers:
        got, want = fm[layer.name], ref[layer.tensor]
        assert got.dtype == np.float32 and got.shape == want.shape
        step = float(inits[producers[layer.tensor].input[1]])
        diff = (got.astype(np.float64) - want) / step
        # Both are DequantizeLinear outputs on the same grid: they differ by whole steps, where
        # the fused QLinearConv's integer requantization and the float Conv + QuantizeLinear round
        # a value at a .5 boundary differently. Measured (16 and 3×64 images): at most 1 step for
        # a plain conv, 2 output steps for c3 (its conv step is 1.7 of its LeakyRelu's step), and
        # ≥ 99.97% of the values bit-equal. Bound: one step of each requantization on the chain.
        assert np.allclose(diff, np.round(diff), atol=1e-3)
        assert np.abs(got - want).max() <= sum(_layer_steps(layer, producers, inits)) * (1 + 1e-6)
        assert (got == want).mean() >= 0.999


def _dequantized_reference(path, m, x):
    """The same graph with optimisations off; integer tensors dequantized by the test."""
    _, producers, _, inits = _graph(path)
    ref = reference(path, [l.tensor for l in m.layers], x)
    out = {}
    for layer in m.layers:
        v = ref[layer.tensor]
        if v.dtype.kind in "iu":
            node = producers[layer.tensor]
            at = (6, 7) if node.op_type == "QLinearConv" else (3, 4)  # QLinearLeakyRelu: Y_scale, Y_zp
            scale, zp = inits[node.input[at[0]]], inits[node.input[at[1]]]
            v = (v.astype(np.float32) - np.float32(zp)) * np.float32(scale)
        out[layer.name] = v
    return out


@pytest.mark.parametrize("kind", ["qoperator", "dynamic"])
def test_qoperator_and_dynamic_feature_maps_equal_the_unoptimised_graph(models, kind):
    _, paths = models
    m = onnxviz.load(paths[kind])
    imgs, x = _images()
    fm = m.feature_maps(imgs, preprocess="unit")
    want = _dequantized_reference(paths[kind], m, x)
    for layer in m.layers:
        assert fm[layer.name].dtype == np.float32
        # Measured: bit-equal (the same QLinearConv kernels run either way; the dynamic graph
        # has no fusion to make).
        np.testing.assert_array_equal(fm[layer.name], want[layer.name])
    if kind == "qoperator":  # the intermediate layers are quantized tensors, dequantized by onnxviz
        assert [m.layer(n).tensor.endswith("_quantized") for n in m.select()[:3]] == [True] * 3


def _optimised_ops(monkeypatch, tmp_path, m, **kw):
    """The op types onnxruntime runs for the sub-model onnxviz builds for ``m.feature_maps(**kw)``."""
    seen = []
    real = runtime.session

    def spy(sub, base_dir, **kwargs):
        seen.append(sub)
        return real(sub, base_dir, **kwargs)

    monkeypatch.setattr(runtime, "session", spy)
    m._sessions.clear()
    m.feature_maps(_images(1)[0], preprocess="unit", **kw)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(seen[-1].SerializeToString(), so, providers=["CPUExecutionProvider"])
    return collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)


def test_qdq_feature_tensors_keep_the_qlinearconv_fusion(models, monkeypatch, tmp_path):
    _, paths = models
    m = onnxviz.load(paths["qdq"])
    _, producers, _, _ = _graph(paths["qdq"])
    for layer in m.layers:  # the DequantizeLinear after the layer's last QuantizeLinear
        dq = producers[layer.tensor]
        assert dq.op_type == "DequantizeLinear" and producers[dq.input[0]].op_type == "QuantizeLinear"
        assert layer.tensor != layer.conv_output
    ops = _optimised_ops(monkeypatch, tmp_path, m)
    assert ops["QLinearConv"] == 4 and ops["Conv"] == 0, ops
    # raw_conv=True asks for the float Conv outputs: onnxruntime cannot fuse those convs
    raw_ops = _optimised_ops(monkeypatch, tmp_path, m, raw_conv=True)
    assert raw_ops["Conv"] >= 1, raw_ops


@pytest.mark.parametrize("dedicated", [False, True])
def test_qdq_residual_fan_out(tmp_path, monkeypatch, dedicated):
    """A residual block: c1's output feeds c2 and the Add. With ``DedicatedQDQPair`` each
    consumer has its own Q → DQ pair; the layer's feature map is one of them (they are equal)."""
    net = Net(("N", 3, 16, 16), seed=5)
    net.conv(3, 8, name="c1"); net.act(); skip = net.cur
    net.conv(8, 8, name="c2"); net.act()
    net.conv(8, 8, name="c3")
    net.cur = net.node("Add", [net.cur, skip], name="res"); net.act()
    net.conv(8, 4, name="c4"); net.act()
    save(net.model(), tmp_path / "res.onnx")

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            r = np.random.default_rng(0)
            self.it = iter([{"input": r.random((1, 3, 16, 16), dtype=np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.it, None)

    path = tmp_path / "res_qdq.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantization.quantize_static(str(tmp_path / "res.onnx"), str(path), Reader(), per_channel=True,
                                     reduce_range=True,  # no int16 saturation on AVX2: see models()
                                     quant_format=quantization.QuantFormat.QDQ,
                                     extra_options={"DedicatedQDQPair": dedicated})
    m = onnxviz.load(path)
    _, producers, _, inits = _graph(path)
    assert all(producers[l.tensor].op_type == "DequantizeLinear" for l in m.layers)
    imgs = list((np.random.default_rng(6).random((8, 16, 16, 3)) * 255).astype(np.uint8))
    x = (np.stack(imgs).astype(np.float32) / 255).transpose(0, 3, 1, 2)
    fm = m.feature_maps(imgs, preprocess="unit")
    ref = reference(path, [l.tensor for l in m.layers], x)
    for layer in m.layers:
        step = float(inits[producers[layer.tensor].input[1]])
        diff = (fm[layer.name].astype(np.float64) - ref[layer.tensor]) / step
        assert np.allclose(diff, np.round(diff), atol=1e-3) and np.abs(diff).max() <= 1 + 1e-6
    # Fetching every feature map costs no fusion: onnxviz's sub-model runs at least as many
    # QLinearConv as the plain model (which loses some to onnxruntime's int8 → uint8 limit).
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "plain_optimised.onnx")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    plain = collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)
    ours = _optimised_ops(monkeypatch, tmp_path, m)
    assert ours["QLinearConv"] >= plain["QLinearConv"], (ours, plain)
    if not dedicated:
        assert ours["QLinearConv"] == 4 and ours["Conv"] == 0, ours


def test_qoperator_and_dynamic_fetches_keep_the_quantized_ops(models, monkeypatch, tmp_path):
    _, paths = models
    ops = _optimised_ops(monkeypatch, tmp_path, onnxviz.load(paths["qoperator"]))
    assert ops["QLinearConv"] == 4 and ops["Conv"] == 0, ops
    ops = _optimised_ops(monkeypatch, tmp_path, onnxviz.load(paths["dynamic"]))
    assert ops["ConvInteger"] == 4 and ops["Conv"] == 0, ops


def test_uint8_activations_is_exact_and_pure(models):
    _, paths = models
    proto = onnx.load(str(paths["qdq"]))
    before = proto.SerializeToString()
    dqs = [n.output[0] for n in proto.graph.node
           if n.op_type == "DequantizeLinear" and n.input[0].endswith("_QuantizeLinear_Output")]
    exposed = graph.expose(proto, dqs)
    converted = graph.uint8_activations(exposed)
    assert proto.SerializeToString() == before
    q_zps = [t for t in converted.graph.initializer if t.name.endswith("_uint8")]
    assert q_zps and all(t.data_type == TensorProto.UINT8 for t in q_zps)
    _, x = _images(4)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    outs = [ort.InferenceSession(p.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(dqs, {"input": x})
            for p in (exposed, converted)]
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)
    uint8_model = onnx.load(str(paths["qoperator"]))  # nothing to convert: returned as is
    assert graph.uint8_activations(uint8_model) is uint8_model


def test_summary_names_ops_and_shapes(models):
    net, paths = models
    # the quantizer's '<node>_quant' / '<weight>_quantized' renames do not leak into the names
    expected_names = {"qdq": NAMES, "qoperator": NAMES, "dynamic": NAMES}
    ops = {"qdq": "Conv", "qoperator": "QLinearConv", "dynamic": "ConvInteger"}
    # quantize_static folds each Relu into its output QuantizeLinear's range (nothing left to
    # name); LeakyRelu stays (QDQ), becomes QLinearLeakyRelu (QOperator) or stays float (dynamic).
    activations = {"qdq": ["", "", "LeakyRelu", ""], "qoperator": ["", "", "LeakyRelu", ""],
                   "dynamic": ["Relu", "Relu", "LeakyRelu", ""]}
    for kind, path in paths.items():
        info = onnxviz.load(path).summary()
        layers = info["layers"]
        assert [l["name"] for l in layers] == expected_names[kind]
        assert {l["op"] for l in layers} == {ops[kind]}
        assert [l["activation"] for l in layers] == activations[kind]
        assert [tuple(l["filter_shape"]) for l in layers] == [net.weights[n][0].shape for n in NAMES]
        assert [l["group"] for l in layers] == [1, 8, 1, 1]
        assert [tuple(l["output_shape"]) for l in layers] == [(8, 32, 32), (8, 32, 32), (16, 16, 16), (8, 16, 16)]


def test_raw_conv_per_quantized_op(models):
    _, paths = models
    imgs, x = _images(2)
    # QDQ: the float Conv output, before its QuantizeLinear (negative values: before the Relu)
    m = onnxviz.load(paths["qdq"])
    raw = m.feature_maps(imgs, "c1", preprocess="unit", raw_conv=True)["c1"]
    ref = reference(paths["qdq"], [m.layer("c1").conv_output], x)[m.layer("c1").conv_output]
    np.testing.assert_allclose(raw, ref, rtol=0, atol=1e-5)
    assert raw.min() < 0
    # QOperator: the graph has no pre-activation tensor: the dequantized QLinearConv output
    m = onnxviz.load(paths["qoperator"])
    a = m.feature_maps(imgs, preprocess="unit", raw_conv=True)
    b = m.feature_maps(imgs, preprocess="unit")
    for name in ("c1", "dw"):
        np.testing.assert_array_equal(a[name], b[name])
    # dynamic: the int32 accumulator times x_scale · w_scale, before the bias Add and the Relu
    m = onnxviz.load(paths["dynamic"])
    layer = m.layer("c1_quant")
    _, producers, consumers, _ = _graph(paths["dynamic"])
    mul = consumers[consumers[layer.conv_output][0].output[0]][0]
    raw = m.feature_maps(imgs, "c1_quant", preprocess="unit", raw_conv=True)["c1"]  # by node name
    np.testing.assert_array_equal(raw, reference(paths["dynamic"], [mul.output[0]], x)[mul.output[0]])
    assert raw.min() < 0 and raw.dtype == np.float32


# ---------------------------------------------------------------- hand-made ConvInteger graphs

def _conv_integer_model(path, scale_kind):
    """DynamicQuantizeLinear → ConvInteger → Cast → Mul(·, S) → Add(bias) → Relu, S as asked."""
    r = np.random.default_rng(4)
    wq = r.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    w_scale = np.array([0.01, 0.02, 0.005, 0.04], np.float32)
    inits = [numpy_helper.from_array(wq, "wq"), numpy_helper.from_array(np.int8(0), "wzp"),
             numpy_helper.from_array(w_scale.reshape(1, 4, 1, 1), "w_scale"),
             numpy_helper.from_array(np.float32(0.05), "folded_scale"),
             numpy_helper.from_array(r.standard_normal((1, 4, 1, 1)).astype(np.float32), "bias")]
    nodes = [helper.make_node("DynamicQuantizeLinear", ["input"], ["xq", "xs", "xzp"], name="dql"),
             helper.make_node("ConvInteger", ["xq", "wq", "xzp", "wzp"], ["acc"], name="ci", pads=[1] * 4)]
    if scale_kind == "per_channel":
        nodes += [helper.make_node("Mul", ["xs", "w_scale"], ["s"], name="scales"),
                  helper.make_node("Cast", ["acc"], ["accf"], name="cast", to=TensorProto.FLOAT),
                  helper.make_node("Mul", ["accf", "s"], ["scaled"], name="mul")]
        last = "scaled"
    elif scale_kind == "folded":  # one constant: x_scale · w_scale already multiplied
        nodes += [helper.make_node("Cast", ["acc"], ["accf"], name="cast", to=TensorProto.FLOAT),
                  helper.make_node("Mul", ["accf", "folded_scale"], ["scaled"], name="mul")]
        last = "scaled"
    else:  # no scaling at all: the int32 accumulator goes on
        nodes += [helper.make_node("Cast", ["acc"], ["accf"], name="cast", to=TensorProto.FLOAT)]
        last = "accf"
    nodes += [helper.make_node("Add", [last, "bias"], ["biased"], name="add"),
              helper.make_node("Relu", ["biased"], ["out"], name="relu")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], initializer=inits)
    save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return wq, w_scale


def test_conv_integer_per_channel_scale(tmp_path):
    path = tmp_path / "ci.onnx"
    wq, w_scale = _conv_integer_model(path, "per_channel")
    m = onnxviz.load(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(m.filters(0), wq.astype(np.float32) * w_scale[:, None, None, None])
    layer = m.layers[0]
    assert (layer.op, layer.tensor, layer.activation) == ("ConvInteger", "out", "Relu")
    x = np.random.default_rng(0).random((1, 3, 8, 8), dtype=np.float32)
    img = (x[0].transpose(1, 2, 0) * 255).round().astype(np.uint8)
    x = img.astype(np.float32).transpose(2, 0, 1)[None] / 255
    fm = m.feature_maps(img, preprocess="unit")[layer.name]
    np.testing.assert_array_equal(fm, reference(path, ["out"], x)["out"])


@pytest.mark.parametrize("kind", ["folded", "none"])
def test_conv_integer_without_a_weight_scale_warns_and_gives_levels(tmp_path, kind):
    path = tmp_path / "ci.onnx"
    wq, _ = _conv_integer_model(path, kind)
    m = onnxviz.load(path)
    with pytest.warns(OnnxvizWarning, match=r"ConvInteger whose weight scale is not in the graph.*w - zero_point"):
        w = m.filters(0)
    np.testing.assert_array_equal(w, wq.astype(np.float32))
    if kind == "none":  # no Cast → Mul: the feature map is the int32 accumulator (warned), as float32
        layer = m.layers[0]
        assert layer.tensor == layer.conv_output == "acc"
        img = (np.random.default_rng(1).random((8, 8, 3)) * 255).astype(np.uint8)
        with pytest.warns(OnnxvizWarning, match="integer levels"):
            fm = m.feature_maps(img, preprocess="unit")[layer.name]
        assert fm.dtype == np.float32 and np.array_equal(fm, fm.round())
