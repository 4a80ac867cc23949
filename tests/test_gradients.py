"""gradients(): its bad inputs (one-line errors, exact), float16 and quantized models, the
session cache, the memory guard and batching, older opsets, fixed batch sizes.

Values are checked against a float32 reference run of the same graph (the float16 model) or
against the float model (quantized models, straight-through: an exact check on a hand-made
QDQ graph, a similarity check on onnxruntime's quantizer's)."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxviz
from builders import Net, save, vgg_like
from conftest import assert_close
from onnxviz.errors import LayerError, OnnxvizWarning, ResourceError, UnsupportedModelError
from onnxviz.explain.gradients import Channel, Score, gradients
from onnxviz.explain.saliency import class_scores
from onnxviz.graph.backward import RULES

OPS = ", ".join(sorted({op for _, op in RULES}))


def classifier(shape=("N", 3, 16, 16), opset=17, extra=None, seed=0):
    """conv-relu-pool-conv-relu-GlobalAveragePool-Flatten-Gemm-Softmax: 5 classes."""
    net = Net(shape, seed=seed)
    net.conv(3, 4, name="c1"); net.act(); net.pool()
    net.conv(4, 6, name="c2"); net.act()
    if extra:
        extra(net)
    net.cur = net.node("GlobalAveragePool", [net.cur], name="gap")
    net.cur = net.node("Flatten", [net.cur], name="flat")
    w = net.init("fc.w", net.r.standard_normal((6, 5)).astype(np.float32))
    b = net.init("fc.b", net.r.standard_normal(5).astype(np.float32))
    net.cur = net.node("Gemm", [net.cur, w, b], name="fc")
    net.cur = net.node("Softmax", [net.cur], name="softmax", axis=1)
    return net.model(opset=opset)


@pytest.fixture
def model(tmp_path):
    return onnxviz.load(save(classifier(), tmp_path / "cls.onnx"))


def x_batch(n=3, seed=1, shape=(3, 16, 16)):
    return np.random.default_rng(seed).random((n, *shape)).astype(np.float32)


def test_score_is_the_logit_before_softmax(model):
    x = x_batch()
    values, grads = gradients(model, x, Score([0, 4, 2]))
    logits = class_scores(model, x)
    assert model._index.producers["fc_out"].op_type == "Gemm"
    assert_close(values, logits[np.arange(3), [0, 4, 2]], 1e-6)
    assert grads["input"].shape == x.shape and grads["input"].dtype == np.float32


def test_session_is_cached(model):
    x = x_batch()
    gradients(model, x, Score(1))
    before = dict(model._sessions)
    gradients(model, x_batch(seed=2), Score([3, 1, 0]), batch=2)  # other classes, another batch: same session
    assert model._sessions.keys() == before.keys() and all(model._sessions[k] is v for k, v in before.items())


def test_bad_inputs_are_one_line_errors(model):
    x = x_batch()
    with pytest.raises(LayerError) as e:
        gradients(model, x, Score(5))
    assert str(e.value) == "class 5 is out of range: 'fc_out' has 5 classes (0–4)"
    with pytest.raises(LayerError) as e:
        gradients(model, x, Channel("c2", [0, 6, 1]))
    assert str(e.value) == "channel 6 is out of range: layer 'c2' has 6 channels (0–5)"
    with pytest.raises(LayerError) as e:
        gradients(model, x, Channel("c2", 0, border=4))
    assert str(e.value) == ("a border of 4 pixels leaves nothing of the 8×8 maps of 'relu_3_out'; the border "
                            "can be at most 3")
    with pytest.raises(LayerError) as e:
        gradients(model, x, Score(0), wrt="nothing")
    assert str(e.value).startswith("no layer or tensor 'nothing'; layers are: c1, c2 (or give any tensor name)")
    with pytest.raises(LayerError) as e:  # the logits do not depend on what comes after them
        gradients(model, x, Score(0), wrt="softmax_out")
    assert str(e.value) == ("tensor 'softmax_out' does not reach the objective (score of 'fc_out'); "
                            "differentiate with respect to a tensor the objective is computed from")


def test_tensor_read_only_for_its_shape(tmp_path):
    def side(net):  # the second conv's map is reshaped to the shape of a side branch: no value flows from it
        shape = net.node("Shape", [net.node("Relu", [net.cur], name="side")], name="shape")
        net.cur = net.node("Reshape", [net.cur, shape], name="back")
    m = onnxviz.load(save(classifier(extra=side), tmp_path / "shape.onnx"))
    with pytest.raises(LayerError) as e:
        gradients(m, x_batch(), Score(0), wrt="side_out")
    assert str(e.value) == ("tensor 'side_out' reaches the objective (score of 'fc_out') only through values "
                            "that carry no gradient (shapes, comparisons, indices); differentiate with respect to "
                            "a tensor the objective is computed from")


def test_unsupported_op_on_the_path(tmp_path):
    m = onnxviz.load(save(classifier(extra=lambda net: net.act("Sin")), tmp_path / "sin.onnx"))
    with pytest.raises(UnsupportedModelError) as e:
        gradients(m, x_batch(), Score(0))
    assert str(e.value) == (
        "no gradient rule for Sin node 'sin_4' on the path 'input' → Conv 'c1' → Relu 'relu_1' → MaxPool 'maxpool_2' "
        "→ Conv 'c2' → … → GlobalAveragePool 'gap' → Flatten 'flat' → Gemm 'fc' → objective; ops with a rule: " + OPS)
    values, grads = gradients(m, x_batch(), Channel("c2", [0, 1, 2]))  # the Sin comes after: not on the path
    assert grads["input"].shape == (3, 3, 16, 16)


def test_weights_on_the_path(tmp_path):
    """A conv whose weights are computed from the input: the weight gradient is not built."""
    net = Net(("N", 3, 8, 8))
    w = net.node("Slice", ["input", net.init("s", np.array([0, 0, 0, 0])), net.init("e", np.array([3, 3, 3, 3]))],
                 name="weights")
    net.cur = net.node("Conv", ["input", w], name="dyn")
    m = onnxviz.load(save(net.model(), tmp_path / "dyn.onnx"))
    with pytest.raises(UnsupportedModelError) as e:
        gradients(m, np.ones((1, 3, 8, 8), np.float32), Score(0))
    assert str(e.value) == ("the gradient of Conv 'dyn' with respect to its input 1 ('weights_out') is not supported "
                            "(only input 0: weights are constants), and that input is on the path 'input' → Slice "
                            "'weights' → Conv 'dyn' → objective")


def test_memory_budget_sizes_the_batch(model):
    x = x_batch(8)
    want = gradients(model, x, Score(np.arange(8) % 5))
    got = gradients(model, x, Score(np.arange(8) % 5), max_bytes=60_000)  # fits 2 images a run, not 8
    assert_close(got[1]["input"], want[1]["input"], 1e-6)
    run = next(v for k, v in model._sessions.items() if k[0] == "gradients")
    assert run.batch_for(x.shape, 8, 60_000) < 8
    with pytest.raises(ResourceError) as e:
        gradients(model, x, Score(0), max_bytes=1000)
    assert str(e.value).startswith("one gradient would need ") and str(e.value).endswith(
        "the budget is 1000 bytes: use a smaller input size, or raise it with max_bytes=, --max-memory or "
        "ONNXVIZ_MAX_BYTES")


def test_old_opset_is_converted(tmp_path):
    new = onnxviz.load(save(classifier(opset=17), tmp_path / "new.onnx"))
    old = onnxviz.load(save(classifier(opset=11), tmp_path / "old.onnx"))
    x = x_batch()
    assert_close(gradients(old, x, Score(2))[1]["input"], gradients(new, x, Score(2))[1]["input"], 1e-6)


def test_fixed_batch_model(tmp_path):
    free = onnxviz.load(save(classifier(), tmp_path / "free.onnx"))
    one = onnxviz.load(save(classifier(shape=(1, 3, 16, 16)), tmp_path / "one.onnx"))
    x = x_batch(3)
    v1, g1 = gradients(one, x, Score([1, 2, 3]))
    v2, g2 = gradients(free, x, Score([1, 2, 3]))
    assert_close(v1, v2, 1e-6)
    assert_close(g1["input"], g2["input"], 1e-6)


def test_float16_model(tmp_path):
    """Computed in float16 (the model's type), returned float32; within float16's precision of float32."""
    from onnxconverter_common import float16

    f32 = classifier()
    m32 = onnxviz.load(save(f32, tmp_path / "f32.onnx"))
    x = x_batch()
    want = gradients(m32, x, [Score([1, 2, 3]), Channel("c2", 1, weight=0.5)], wrt=["input", "c1"])
    for keep in (False, True):  # keep_io_types: a float32 input Cast to float16 inside
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f16 = float16.convert_float_to_float16(f32, keep_io_types=keep)
        m16 = onnxviz.load(save(f16, tmp_path / f"f16_{keep}.onnx"))
        got = gradients(m16, x, [Score([1, 2, 3]), Channel("c2", 1, weight=0.5)], wrt=["input", "c1"])
        assert got[1]["input"].dtype == np.float32
        assert_close(got[0], want[0], 2e-2)
        for k in ("input", "c1"):
            assert_close(got[1][k], want[1][k], 2e-2)


# ------------------------------------------------------------------ quantized models

quantization = pytest.importorskip("onnxruntime.quantization")
STRAIGHT = ("the model is quantized (QDQ): gradients pass straight through its QuantizeLinear/DequantizeLinear "
            "nodes (the rounding has no gradient; values outside a QuantizeLinear's range pass none)")


def _qdq_conv(tmp_path, out_zero_point: int):
    """x → Q → DQ → Conv(DQ(w_q)) → Q → DQ, uint8, the output zero point as given."""
    r = np.random.default_rng(0)
    wq = r.integers(-100, 100, (4, 3, 3, 3)).astype(np.int8)
    inits = [numpy_helper.from_array(wq, "wq"), numpy_helper.from_array(np.array(0.01, np.float32), "ws"),
             numpy_helper.from_array(np.array(0.02, np.float32), "xs"), numpy_helper.from_array(np.array(128, np.uint8), "xz"),
             numpy_helper.from_array(np.array(0.05, np.float32), "ys"),
             numpy_helper.from_array(np.array(out_zero_point, np.uint8), "yz")]
    nodes = [helper.make_node("QuantizeLinear", ["input", "xs", "xz"], ["q"], name="q_in"),
             helper.make_node("DequantizeLinear", ["q", "xs", "xz"], ["dq"], name="dq_in"),
             helper.make_node("DequantizeLinear", ["wq", "ws"], ["w"], name="dq_w"),
             helper.make_node("Conv", ["dq", "w"], ["y"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["y", "ys", "yz"], ["qy"], name="q_out"),
             helper.make_node("DequantizeLinear", ["qy", "ys", "yz"], ["out"], name="dq_out")]
    g = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    return onnxviz.load(save(m, tmp_path / f"q{out_zero_point}.onnx")), wq.astype(np.float32) * 0.01


@pytest.mark.parametrize("zero_point", [128, 0])
def test_qdq_straight_through_equals_torch_fake_quantize(tmp_path, zero_point):
    """Straight through the rounding, none outside a QuantizeLinear's range (zero point 0: the
    quantizer's folded ReLU): the gradient of torch's fake-quantize graph, by autograd."""
    torch = pytest.importorskip("torch")
    qdq, w = _qdq_conv(tmp_path, zero_point)
    x = np.random.default_rng(1).random((2, 3, 8, 8)).astype(np.float32) * 6 - 3  # some beyond ±2.56
    with pytest.warns(OnnxvizWarning) as caught:
        _, got = gradients(qdq, x, Channel("out", [1, 3]))
    assert [str(w.message) for w in caught] == [STRAIGHT]
    xt = torch.from_numpy(x).requires_grad_(True)
    q = torch.fake_quantize_per_tensor_affine(xt, 0.02, 128, 0, 255)
    y = torch.nn.functional.conv2d(q, torch.from_numpy(w), padding=1)
    y = torch.fake_quantize_per_tensor_affine(y, 0.05, zero_point, 0, 255)
    y[[0, 1], [1, 3]].mean((1, 2)).sum().backward()
    assert (xt.grad == 0).any() and (xt.grad != 0).any()  # both ends of the input range are hit
    assert_close(got["input"], xt.grad.numpy(), 1e-5)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """The float classifier and its QDQ, QOperator and dynamic quantizations (onnxruntime's quantizer)."""
    d = tmp_path_factory.mktemp("q")
    save(classifier(), d / "float.onnx")
    quantization.quant_pre_process(str(d / "float.onnx"), str(d / "prep.onnx"))

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": x_batch(1, seed=s)} for s in range(8)])

        def get_next(self):
            return next(self.batches, None)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantization.quantize_static(str(d / "prep.onnx"), str(d / "qdq.onnx"), Reader(), per_channel=True,
                                     quant_format=quantization.QuantFormat.QDQ)
        quantization.quantize_static(str(d / "prep.onnx"), str(d / "qop.onnx"), Reader(), per_channel=True,
                                     quant_format=quantization.QuantFormat.QOperator,
                                     activation_type=quantization.QuantType.QUInt8)
        quantization.quantize_dynamic(str(d / "prep.onnx"), str(d / "dyn.onnx"), op_types_to_quantize=["Conv"])
    return {k: onnxviz.load(d / f"{k}.onnx") for k in ("float", "qdq", "qop", "dyn")}


def test_qdq_model_from_the_quantizer(quantized):
    """Close to the float model's gradient (the forward values differ by the rounding), except an
    image whose class score is clipped by its QuantizeLinear's range: no gradient at all there."""
    x = x_batch(4, seed=9)
    with pytest.warns(OnnxvizWarning, match="straight through"):
        _, got = gradients(quantized["qdq"], x, Score([0, 1, 2, 3]))
    _, want = gradients(quantized["float"], x, Score([0, 1, 2, 3]))
    alive = [k for k in range(4) if np.abs(got["input"][k]).max() > 0]
    assert len(alive) >= 3
    for k in alive:
        a, b = got["input"][k].ravel(), want["input"][k].ravel()
        assert np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b) > 0.95


@pytest.mark.parametrize("kind, op, hint", [
    ("qop", "QLinearConv", "a QOperator-quantized model; gradients pass straight through QDQ models only: quantize "
                           "with quant_format=QuantFormat.QDQ, or use the float model"),
    ("dyn", "DynamicQuantizeLinear", "a dynamically quantized model; gradients pass straight through QDQ models only: "
                                     "quantize statically with quant_format=QuantFormat.QDQ, or use the float model")])
def test_qoperator_and_dynamic_models_are_refused(quantized, kind, op, hint):
    m = quantized[kind]
    node = next(n for n in m.proto.graph.node if n.op_type == op)
    with pytest.raises(UnsupportedModelError) as e:
        gradients(m, x_batch(), Score(0))
    text = str(e.value)
    assert text.startswith(f"no gradient rule for {op} node '{node.name}' on the path 'input' → ")
    assert text.endswith(f" → objective: {hint}") and "\n" not in text


def test_budget_reads_the_backward_graph(model):
    """The memory guard is fed the backward model: it holds more at once than the forward."""
    from onnxviz.budget import estimate

    x = x_batch(8)
    gradients(model, x, Score(1))
    run = next(v for k, v in model._sessions.items() if k[0] == "gradients")
    seeds = {run.graph.seeds[0]: np.zeros((1, 5), np.float32)}
    backward = estimate(run._budgeted, [run.graph.objective, *run.graph.grads.values()], x.shape, seeds)
    forward = estimate(model, ["fc_out"], x.shape)
    assert backward["total"] > 1.5 * forward["total"]  # (a few emitted tensors onnx cannot size are guessed)
