"""Weights computed from constants: folded once by onnx's reference evaluator, bounded, cached.

Expected values are computed here in numpy from the arrays the graphs were built from.
"""

import numpy as np
import onnx.reference
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxviz
from builders import Net, save
from onnxviz.graph import fold as fold_module
from onnxviz.graph import weights
from onnxviz.graph.weights import constant_value

R = np.random.default_rng(11)
W = R.standard_normal((4, 3, 3, 3)).astype(np.float32)
I64 = lambda *v: np.array(v, np.int64)  # noqa: E731


def _conv_on(net, w_name):
    net.cur = net.node("Conv", ["input", w_name], name="c", pads=[1, 1, 1, 1])
    net.act()


def _model(tmp_path, chain, shape=(1, 3, 8, 8), name="m.onnx"):
    net = Net(shape)
    _conv_on(net, chain(net))
    return onnxviz.load(save(net.model(), tmp_path / name))


def _const_of_shape(net):
    return net.node("ConstantOfShape", [net.init("s", I64(4, 3, 3, 3))], name="fill",
                    value=numpy_helper.from_array(np.array([0.25], np.float32)))


def _range_reshape(net):
    r = net.node("Range", [net.init("a", np.float32(0)), net.init("b", np.float32(108)),
                           net.init("d", np.float32(1))], name="range")
    return net.node("Reshape", [r, net.init("s", I64(4, 3, 3, 3))], name="shape_it")


def _static_shape(net):
    """The weight's input-channel count is read off the (static) input's shape at run time."""
    c = net.node("Gather", [net.node("Shape", ["input"], name="shape"), net.init("one", I64(1))], name="cin")
    dims = net.node("Concat", [net.init("o", I64(4)), c, net.init("k", I64(3, 3))], name="dims", axis=0)
    return net.node("Reshape", [net.init("flat", W.ravel()), dims], name="to_oihw")


def _computed_limit(net):
    """Range's length is known only once its limit is computed: the fold sizes it in two rounds."""
    limit = net.node("ReduceSum", [net.init("ones", np.ones(108, np.float32))], name="count", keepdims=0)
    r = net.node("Range", [net.init("a", np.float32(0)), limit, net.init("d", np.float32(1))], name="range")
    return net.node("Reshape", [r, net.init("s", I64(4, 3, 3, 3))], name="shape_it")


def _if_branch(net):
    """An If on a constant condition, whose branches read the weight from the outer graph."""
    out = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, [4, 3, 3, 3])  # noqa: E731
    then = helper.make_graph([helper.make_node("Identity", ["w"], ["t"])], "then", [], [out("t")])
    other = helper.make_graph([helper.make_node("Neg", ["w"], ["e"])], "else", [], [out("e")])
    net.init("w", W)
    return net.node("If", [net.init("cond", np.array(False))], name="choose", then_branch=then, else_branch=other)


CASES = {
    "ConstantOfShape": (_const_of_shape, np.full((4, 3, 3, 3), 0.25, np.float32)),
    "Expand": (lambda net: net.node("Expand", [net.init("col", W[:, :1, :1, :1]), net.init("s", I64(4, 3, 3, 3))],
                                    name="expand"), np.broadcast_to(W[:, :1, :1, :1], (4, 3, 3, 3))),
    "Tile": (lambda net: net.node("Tile", [net.init("w1", W[:2]), net.init("r", I64(2, 1, 1, 1))], name="tile"),
             np.tile(W[:2], (2, 1, 1, 1))),
    "Concat": (lambda net: net.node("Concat", [net.init("a", W[:1]), net.init("b", W[1:])], name="cat", axis=0), W),
    "Range": (_range_reshape, np.arange(108, dtype=np.float32).reshape(4, 3, 3, 3)),
    "Gather": (lambda net: net.node("Gather", [net.init("bank", np.concatenate([W, W[::-1]])),
                                              net.init("idx", I64(0, 1, 2, 3))], name="pick"), W),
    "Slice": (lambda net: net.node("Slice", [net.init("bank", np.concatenate([W, -W])), net.init("st", I64(4)),
                                             net.init("en", I64(8)), net.init("ax", I64(0))], name="cut"), -W),
    "arithmetic": (lambda net: net.node("Sin", [net.node("Mul", [net.init("w", W), net.init("k", np.float32(2))],
                                                         name="scale")], name="sin"), np.sin(W * 2)),
    "Shape of a static tensor": (_static_shape, W),
    "If on a constant": (_if_branch, -W),
    "a size known after a first round": (_computed_limit, np.arange(108, dtype=np.float32).reshape(4, 3, 3, 3)),
    "Cast of a fold (fast path over it)": (
        lambda net: net.node("Cast", [net.node("Mul", [net.init("w16", W.astype(np.float16)),
                                                       net.init("k16", np.float16(0.5))], name="half")],
                             name="cast", to=TensorProto.FLOAT),
        (W.astype(np.float16) * np.float16(0.5)).astype(np.float32)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_computed_weights_are_folded(tmp_path, case):
    chain, expected = CASES[case]
    m = _model(tmp_path, chain)
    assert m.layers[0].filter_shape == (4, 3, 3, 3)  # from shape inference, nothing folded at load
    assert not m._index.folded
    np.testing.assert_allclose(m.filters(0), expected, rtol=1e-6)


def test_folded_once_and_kept_and_the_copy_is_the_callers(tmp_path, monkeypatch):
    runs = []
    real = onnx.reference.ReferenceEvaluator.run
    monkeypatch.setattr(onnx.reference.ReferenceEvaluator, "run",
                        lambda self, *a, **k: runs.append(1) or real(self, *a, **k))
    m = _model(tmp_path, _const_of_shape)
    first = m.filters(0)
    first[:] = 7  # the caller's own array
    np.testing.assert_array_equal(m.filters(0), np.full((4, 3, 3, 3), 0.25, np.float32))
    assert len(runs) == 1 and list(m._index.folded) == ["fill_out"]


def test_the_cache_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(fold_module, "CACHE_BYTES", 700)  # the two weights: 432 and 576 bytes
    net = Net((1, 3, 8, 8))
    for k in range(2):
        fill = net.node("ConstantOfShape", [net.init(f"s{k}", I64(4, 3 if k == 0 else 4, 3, 3))], name=f"fill{k}",
                        value=numpy_helper.from_array(np.array([k], np.float32)))
        net.cur = net.node("Conv", [net.cur, fill], name=f"c{k}", pads=[1, 1, 1, 1])
    m = onnxviz.load(save(net.model(), tmp_path / "m.onnx"))
    m.filters(0), m.filters(1)
    assert list(m._index.folded) == ["fill1_out"]  # the older one dropped; folded again if asked
    np.testing.assert_array_equal(m.filters(0), np.zeros((4, 3, 3, 3), np.float32))


def test_bias_scale_and_zero_point_are_folded_too(tmp_path):
    q = R.integers(0, 255, (4, 3, 3, 3)).astype(np.uint8)
    scale = np.array([0.5, 0.25, 0.125, 1.0], np.float32)
    nodes = [helper.make_node("Mul", ["half_scale", "two"], ["ws"], name="scale"),  # w_scale computed
             helper.make_node("Expand", ["zp1", "four"], ["wz"], name="zp"),      # zero point computed
             helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], name="qc")]
    inits = [numpy_helper.from_array(a, n) for a, n in [
        (scale / 2, "half_scale"), (np.float32(2), "two"), (np.array([128], np.uint8), "zp1"), (I64(4), "four"),
        (np.float32(0.1), "xs"), (np.uint8(128), "xz"), (q, "w"), (np.float32(0.2), "ys"), (np.uint8(128), "yz")]]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.UINT8, None)], initializer=inits)
    m = onnxviz.load(save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "q.onnx"))
    expected = (q.astype(np.float32) - 128) * scale[:, None, None, None]
    np.testing.assert_allclose(m.filters("qc"), expected, rtol=1e-6)


def test_the_fast_path_never_folds(tmp_path, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the reference evaluator was asked")
    monkeypatch.setattr(weights, "fold_constant", refuse)
    hwio = W.transpose(2, 3, 1, 0)
    def chain(net):
        dq = net.node("DequantizeLinear", [net.init("q", np.round(hwio * 50).astype(np.int8)),
                                           net.init("qs", np.float32(0.02))], name="dq")
        t = net.node("Transpose", [net.node("Identity", [dq], name="id")], name="tr", perm=[3, 2, 0, 1])
        return net.node("Reshape", [t, net.init("s", I64(0, 3, 3, 3))], name="r")
    m = _model(tmp_path, chain)
    np.testing.assert_allclose(m.filters(0), np.round(W * 50).astype(np.int8) * np.float32(0.02), rtol=1e-6)
    m = _model(tmp_path, _const_of_shape, name="fill.onnx")  # load sizes a computed weight without folding it
    assert m.layers[0].filter_shape == (4, 3, 3, 3)


def _refusal(m, kind=onnxviz.UnsupportedModelError):
    with pytest.raises(kind) as e:
        m.filters(0)
    return str(e.value)


def test_weights_that_depend_on_an_input_are_refused(tmp_path):
    def chain(net):
        gain = net.node("ReduceMean", ["input"], name="mean", keepdims=0)  # known only at run time
        return net.node("Mul", [net.init("w", W), gain], name="scale")
    assert _refusal(_model(tmp_path, chain)) == (
        "the weights of layer 'c' ('scale_out') depend on graph input 'input' (read by ReduceMean node 'mean'), "
        "so they exist only at run time; onnxviz shows weights stored in the file or computed from constants alone")


def test_a_symbolic_shape_is_not_a_constant(tmp_path):
    # the chain of "Shape of a static tensor", on an input of shape N×3×H×W: not static, so not folded
    m = _model(tmp_path, _static_shape, shape=("N", 3, "H", "W"))
    assert _refusal(m) == ("the weights of layer 'c' ('to_oihw_out') depend on graph input 'input' (read by Shape "
                           "node 'shape'), so they exist only at run time; onnxviz shows weights stored in the file "
                           "or computed from constants alone")


def test_random_weights_are_not_constants(tmp_path):
    m = _model(tmp_path, lambda net: net.node("RandomNormal", [], name="rand", shape=[4, 3, 3, 3]))
    assert "depend on a RandomNormal node 'rand' (random at each run)" in _refusal(m)


def test_a_fold_over_the_bound_is_refused_before_it_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx.reference.ReferenceEvaluator, "run", lambda *a, **k: pytest.fail("it ran"))
    net = Net((1, 3, 8, 8))
    big = net.node("ConstantOfShape", [net.init("s", I64(8192, 3, 128, 128))], name="big")  # 1.5 GiB of float32
    net.cur = net.node("Conv", ["input", big], name="c", pads=[64, 64, 64, 64])
    m = onnxviz.load(save(net.model(), tmp_path / "m.onnx"))
    assert m.layers[0].filter_shape == (8192, 3, 128, 128)  # load does not fold it
    assert _refusal(m) == ("the weights of layer 'c' are not folded: 'big_out' is computed from constants by 1 "
                           "node(s) whose tensors would take 1.5 GiB, more than the 1.0 GiB a fold may use; onnxviz "
                           "does not fold it")
    monkeypatch.undo()
    small = _model(tmp_path, _const_of_shape, name="small.onnx")._index  # 432 bytes + its 32-byte shape
    assert constant_value(small, "fill_out", max_bytes=464).shape == (4, 3, 3, 3)
    small.folded.clear()
    with pytest.raises(onnxviz.UnsupportedModelError, match=r"would take 464 bytes, more than the 463 bytes"):
        constant_value(small, "fill_out", max_bytes=463)


def test_a_size_known_only_by_running_is_refused(tmp_path):
    def chain(net):
        where = net.node("NonZero", [net.init("mask", np.ones(108, np.float32))], name="nz")
        flat = net.node("Cast", [where], name="f", to=TensorProto.FLOAT)
        return net.node("Reshape", [flat, net.init("s", I64(4, 3, 3, 3))], name="shape_it")
    assert _refusal(_model(tmp_path, chain)) == (  # the Cast's input is folded (the Cast is the fast path's)
        "the weights of layer 'c' are not folded: 'nz_out' is computed from constants, but its size (made by "
        "NonZero node 'nz') is not known before running it, so the fold cannot be bounded; onnxviz does not fold it")


def test_a_broken_constant_graph_says_what_is_wrong(tmp_path):
    m = _model(tmp_path, lambda net: net.node("Mul", [net.init("w", W), net.init("k", np.ones((2, 2), np.float32))],
                                              name="bad"))
    assert _refusal(m, onnxviz.ModelError) == (
                            "the constant sub-graph that makes 'bad_out' cannot be folded: Mul node 'bad': "
                            "[ShapeInferenceError] Inference error(s): (op_type:Mul, node name: bad): "
                            "[ShapeInferenceError] Incompatible dimensions")


def test_a_fold_the_evaluator_fails_on_says_so(tmp_path):
    # shape inference sizes it (4 indices), the evaluator finds index 99 out of range
    m = _model(tmp_path, lambda net: net.node("Gather", [net.init("bank", np.concatenate([W, W])),
                                                         net.init("idx", I64(0, 1, 2, 99))], name="pick"))
    assert _refusal(m, onnxviz.ModelError) == (
                            "the constant sub-graph that makes 'pick_out' (1 node(s)) cannot be folded by onnx's "
                            "reference evaluator: IndexError: index 99 is out of bounds for axis 0 with size 8")
