"""Every backward rule of onnxviz.graph.backward against a central finite difference.

Each case is a small graph built with onnx.helper. The gradient graph runs in onnxruntime, in
float64 where onnxruntime has float64 kernels for the op (then the tolerance is 1e-6 relative:
max |analytic − FD| / max |FD|), else in float32 (tolerance 1e-4). The finite difference is
always float64: onnx's reference evaluator on the same graph in float64, h = 1e-6, for every
element of every input differentiated. The objective is a random dense weighting of the
output (a ``score`` term with a dense seed), so every output element counts.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from onnxviz.graph.backward import RULES, Term, build

F64_TOL, F32_TOL, H = 1e-6, 1e-4, 1e-6
MS = "com.microsoft"


def node(op, inputs, outputs=("y",), **attrs):
    return helper.make_node(op, list(inputs), list(outputs), name=f"{op.lower()}_node", **attrs)


class Case:
    """``nodes`` computing ``y`` from ``inputs`` (``{name: array}``, all differentiated unless
    ``wrt`` says) and constants ``consts``; ``f32``: onnxruntime lacks the op in float64;
    ``reference``: other nodes for the reference evaluator (an op it does not know); ``shared_ties``:
    the builder's option (2×2 MaxPools in the blocked layout)."""

    def __init__(self, nodes, inputs, consts=None, wrt=None, f32=False, opset=18, reference=None, dims=None,
                 numpy=None, shared_ties=False):
        self.nodes, self.inputs, self.consts = nodes, inputs, consts or {}
        self.wrt = wrt or list(inputs)
        self.f32, self.opset, self.reference, self.dims, self.numpy = f32, opset, reference, dims or {}, numpy
        self.shared_ties = shared_ties

    def model(self, dtype, nodes=None):
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        ins = [helper.make_tensor_value_info(k, elem, list(self.dims.get(k, v.shape))) for k, v in self.inputs.items()]
        inits = [numpy_helper.from_array(v.astype(dtype) if v.dtype.kind == "f" else v, k) for k, v in self.consts.items()]
        g = helper.make_graph(nodes or self.nodes, "case", ins, [helper.make_tensor_value_info("y", elem, None)], inits)
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", self.opset), helper.make_opsetid(MS, 1)],
                                 ir_version=10)


_erf = np.vectorize(__import__("math").erf)  # float64 (the reference evaluator's Erf is not)


def _group_norm(x, groups, eps=1e-5):
    g = x.reshape(len(x), groups, -1)
    return ((g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + eps)).reshape(x.shape)


def r(*shape, seed=0, lo=None):
    a = np.random.default_rng(seed + sum(shape)).standard_normal(shape)
    return np.abs(a) + lo if lo is not None else a


def c(values):
    return np.asarray(values, np.int64)


X = r(2, 3, 5, 6)
CASES = {
    # activations
    "Relu": Case([node("Relu", ["x"])], {"x": X}),
    "LeakyRelu": Case([node("LeakyRelu", ["x"], alpha=0.1)], {"x": X}, f32=True),
    "PRelu": Case([node("PRelu", ["x", "s"])], {"x": X}, {"s": r(3, 1, 1)}),
    "Clip": Case([node("Clip", ["x", "lo", "hi"])], {"x": X}, {"lo": np.array(-0.5), "hi": np.array(0.7)}),
    "Clip-max-only": Case([node("Clip", ["x", "", "hi"])], {"x": X}, {"hi": np.array(0.3)}),
    "Elu": Case([node("Elu", ["x"], alpha=0.8)], {"x": X}, f32=True),
    "Selu": Case([node("Selu", ["x"])], {"x": X}, f32=True),
    "Sigmoid": Case([node("Sigmoid", ["x"])], {"x": X}),
    "HardSigmoid": Case([node("HardSigmoid", ["x"], alpha=0.3, beta=0.4)], {"x": X * 2}, f32=True),
    "HardSwish": Case([node("HardSwish", ["x"])], {"x": X * 3}, f32=True),
    "Tanh": Case([node("Tanh", ["x"])], {"x": X}),
    "Softplus": Case([node("Softplus", ["x"])], {"x": X}, f32=True),
    "Gelu": Case([node("Gelu", ["x"])], {"x": X}, f32=True, opset=20,
                 numpy=lambda x: 0.5 * x * (1 + _erf(x / np.sqrt(2)))),
    "Gelu-tanh": Case([node("Gelu", ["x"], approximate="tanh")], {"x": X}, f32=True, opset=20),
    "Erf": Case([node("Erf", ["x"])], {"x": X}, f32=True, numpy=_erf),
    "Mish": Case([node("Mish", ["x"])], {"x": X}, f32=True),
    # arithmetic, broadcasting
    "Add": Case([node("Add", ["x", "b"])], {"x": X, "b": r(3, 1, 1)}),
    "Add-lead": Case([node("Add", ["x", "b"])], {"x": X, "b": r(6)}),
    "Sum": Case([node("Sum", ["x", "b", "d"])], {"x": X, "b": r(3, 1, 1), "d": r(1, 6)}),
    "Sub": Case([node("Sub", ["x", "b"])], {"x": X, "b": r(1, 3, 1, 6)}),
    "Mul": Case([node("Mul", ["x", "g"])], {"x": X, "g": r(2, 3, 1, 1)}),
    "Mul-symbolic": Case([node("Mul", ["x", "g"])], {"x": X, "g": r(2, 3, 1, 1)},
                         dims={"x": ("N", 3, 5, 6), "g": ("M", 3, "A", "B")}),
    "Div": Case([node("Div", ["x", "d"])], {"x": X, "d": r(3, 1, 1, lo=0.5)}),
    "Pow-int": Case([node("Pow", ["x", "p"])], {"x": X}, {"p": np.array(3.0)}),
    "Pow-frac": Case([node("Pow", ["x", "p"])], {"x": r(2, 3, 4, lo=0.2)}, {"p": np.array(2.5)}),
    # pass-through
    "Identity": Case([node("Identity", ["x"])], {"x": X}),
    "CastLike": Case([node("CastLike", ["x", "t"])], {"x": X}, {"t": np.zeros(1)}),
    "CastLike-type-only": Case([node("CastLike", ["k", "x"], ("kk",)), node("Add", ["x", "kk"])], {"x": X},
                               {"k": r(6)}),
    "Dropout": Case([node("Dropout", ["x"], ("y", "mask"))], {"x": X}),
    "Expand": Case([node("Expand", ["x", "s"])], {"x": r(3, 1, 6)}, {"s": c([2, 3, 5, 6])}),
    # norms
    "BatchNormalization": Case([node("BatchNormalization", ["x", "g", "b", "m", "v"], epsilon=1e-3)], {"x": X},
                               {"g": r(3), "b": r(3), "m": r(3), "v": r(3, lo=0.5)}),
    "InstanceNormalization": Case([node("InstanceNormalization", ["x", "g", "b"])], {"x": X}, {"g": r(3), "b": r(3)},
                                  f32=True),
    "LayerNormalization": Case([node("LayerNormalization", ["x", "g", "b"])], {"x": X}, {"g": r(6), "b": r(6)}),
    "LayerNormalization-axis1": Case([node("LayerNormalization", ["x", "g", "b"], axis=1)], {"x": X},
                                     {"g": r(3, 5, 6), "b": r(3, 5, 6)}),
    "GroupNormalization-18": Case([node("GroupNormalization", ["x", "g", "b"], num_groups=2)], {"x": r(2, 4, 3, 5)},
                                  {"g": r(2), "b": r(2)}, f32=True),
    "GroupNormalization-21": Case([node("GroupNormalization", ["x", "g", "b"], num_groups=2)], {"x": r(2, 4, 3, 5)},
                                  {"g": r(4), "b": r(4)}, f32=True, opset=21,  # its reference works in float32
                                  numpy=lambda x: _group_norm(x, 2) * r(4)[:, None, None] + r(4)[:, None, None]),
    # pooling and reductions
    "MaxPool": Case([node("MaxPool", ["x"], kernel_shape=[2, 2], strides=[2, 2])], {"x": X}),
    "MaxPool-ceil-pads": Case([node("MaxPool", ["x"], kernel_shape=[2, 2], strides=[2, 2], pads=[1, 0, 0, 0],
                                    ceil_mode=1)], {"x": X}),
    "MaxPool-overlap": Case([node("MaxPool", ["x"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])], {"x": X}),
    "MaxPool-ceil-dilated": Case([node("MaxPool", ["x"], kernel_shape=[2, 2], strides=[2, 2], dilations=[2, 1],
                                       ceil_mode=1)], {"x": X}),
    "MaxPool-tiled": Case([node("MaxPool", ["x"], kernel_shape=[2, 2], strides=[2, 2])], {"x": X}, f32=True,
                          shared_ties=True),  # the blocked rule (an odd side: one row no window covers)
    "MaxPool-tiled-even": Case([node("MaxPool", ["x"], kernel_shape=[2, 2], strides=[2, 2])], {"x": r(2, 8, 4, 6)},
                               f32=True, shared_ties=True),
    "MaxPool-indices": Case([node("MaxPool", ["x"], ("y", "i"), kernel_shape=[2, 3], strides=[2, 2])], {"x": X}),
    "AveragePool": Case([node("AveragePool", ["x"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])], {"x": X},
                        f32=True),
    "AveragePool-include-pad": Case([node("AveragePool", ["x"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                                          count_include_pad=1)], {"x": X}, f32=True),
    "AveragePool-ceil": Case([node("AveragePool", ["x"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)], {"x": X},
                             f32=True),
    "AveragePool-same": Case([node("AveragePool", ["x"], kernel_shape=[3, 2], strides=[2, 2], auto_pad="SAME_UPPER")],
                             {"x": X}, f32=True),
    "GlobalAveragePool": Case([node("GlobalAveragePool", ["x"])], {"x": X}, f32=True),
    "GlobalMaxPool": Case([node("GlobalMaxPool", ["x"])], {"x": X}, f32=True),
    "ReduceMean-attr": Case([node("ReduceMean", ["x"], axes=[2, 3], keepdims=0)], {"x": X}, opset=17),
    "ReduceMean-input": Case([node("ReduceMean", ["x", "a"], keepdims=1)], {"x": X}, {"a": c([1, -1])}),
    "ReduceSum": Case([node("ReduceSum", ["x", "a"], keepdims=0)], {"x": X}, {"a": c([1])}),
    "ReduceSum-all": Case([node("ReduceSum", ["x"], keepdims=1)], {"x": X}),
    "ReduceMax": Case([node("ReduceMax", ["x", "a"], keepdims=0)], {"x": X}, {"a": c([2, 3])}),
    "ReduceMax-all": Case([node("ReduceMax", ["x"], keepdims=1)], {"x": X}),
    # linear
    "Gemm": Case([node("Gemm", ["a", "b", "c"], alpha=0.7, beta=1.3)], {"a": r(2, 4), "b": r(4, 3), "c": r(3)}),
    "Gemm-transA": Case([node("Gemm", ["a", "b"], transA=1)], {"a": r(4, 2), "b": r(4, 3)}),
    "Gemm-transB": Case([node("Gemm", ["a", "b", "c"], transB=1, beta=0.5)], {"a": r(2, 4), "b": r(3, 4), "c": r(2, 3)}),
    "Gemm-both": Case([node("Gemm", ["a", "b"], transA=1, transB=1, alpha=2.0)], {"a": r(4, 2), "b": r(3, 4)}),
    "MatMul": Case([node("MatMul", ["a", "b"])], {"a": r(2, 4)}, {"b": r(4, 3)}),
    "MatMul-batched": Case([node("MatMul", ["a", "b"])], {"a": r(2, 3, 4), "b": r(4, 5)}),
    "MatMul-vector": Case([node("MatMul", ["a", "b"])], {"a": r(2, 3, 4), "b": r(4)}),
    "Softmax": Case([node("Softmax", ["x"], axis=1)], {"x": X}),
    "LogSoftmax": Case([node("LogSoftmax", ["x"])], {"x": X}),
    # shapes
    "Flatten": Case([node("Flatten", ["x"], axis=2)], {"x": X}),
    "Reshape": Case([node("Reshape", ["x", "s"])], {"x": X}, {"s": c([2, -1, 10])}),
    "Squeeze": Case([node("Squeeze", ["x", "a"])], {"x": r(2, 1, 4)}, {"a": c([1])}),
    "Unsqueeze": Case([node("Unsqueeze", ["x", "a"])], {"x": r(2, 4)}, {"a": c([0, 2])}),
    "Transpose": Case([node("Transpose", ["x"], perm=[0, 2, 3, 1])], {"x": X}),
    "Concat": Case([node("Concat", ["x", "k", "z"], axis=1)], {"x": X, "z": r(2, 2, 5, 6)}, {"k": r(2, 1, 5, 6)}),
    "Split": Case([node("Split", ["x", "s"], ("a", "b", "d"), axis=3), node("Add", ["a", "d"])], {"x": X},
                  {"s": c([2, 2, 2])}),
    "Slice": Case([node("Slice", ["x", "st", "en", "ax", "sp"])], {"x": X},
                  {"st": c([1, -1]), "en": c([5, -100]), "ax": c([3, 2]), "sp": c([2, -2])}),
    "Slice-contiguous": Case([node("Slice", ["x", "st", "en"])], {"x": X}, {"st": c([0, 1, 1]), "en": c([2, 3, 4])}),
    "Pad": Case([node("Pad", ["x", "p"])], {"x": X}, {"p": c([0, 0, 1, 2, 0, 0, 2, 1])}),
    "Pad-crop": Case([node("Pad", ["x", "p"])], {"x": X}, {"p": c([0, 0, 1, -2, 0, 0, 2, -1]), "st": c([2]),
                                                          "en": c([5]), "a3": c([3]), "pp": c([0, 0, 1, 0, 0, 0, 2, 0])},
                     reference=[node("Slice", ["x", "st", "en", "a3"], ("s",)), node("Pad", ["s", "pp"])]),
    "Pad-reflect": Case([node("Pad", ["x", "p"], mode="reflect")], {"x": X}, {"p": c([0, 0, 2, 3, 0, 0, 1, 4])}),
    "Pad-edge-axes": Case([node("Pad", ["x", "p", "", "a"], mode="edge")], {"x": X}, {"p": c([2, 1, 3, 0]),
                                                                                      "a": c([2, 3])}),
    "Pad-wrap": Case([node("Pad", ["x", "p"], mode="wrap")], {"x": X}, {"p": c([0, 0, 1, 2, 0, 0, 2, 1])}, opset=19),
}


def _conv_cases():
    w = r(4, 3, 3, 3)
    x = r(2, 3, 7, 8)
    cases = {
        "Conv": ([], {"pads": [1, 1, 1, 1]}, w),
        "Conv-stride2": ([], {"pads": [1, 1, 1, 1], "strides": [2, 2]}, w),
        "Conv-stride2-valid-odd": ([], {"strides": [2, 3]}, w),
        "Conv-dilated": ([], {"dilations": [2, 1], "pads": [2, 1, 2, 1]}, w),
        "Conv-wide-pads": ([], {"pads": [3, 0, 4, 1]}, w),
        "Conv-same-upper": ([], {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, r(4, 3, 4, 3)),
        "Conv-same-lower": ([], {"auto_pad": "SAME_LOWER"}, r(4, 3, 2, 2)),
        "Conv-groups": ([], {"group": 3, "pads": [1, 1, 1, 1]}, r(6, 1, 3, 3)),
        "Conv-groups2-stride": ([], {"group": 2, "strides": [2, 1]}, r(4, 2, 3, 3), r(2, 4, 7, 8)),
        "Conv-stem-7x7-stride2": ([], {"strides": [2, 2], "pads": [3, 3, 3, 3]}, r(4, 3, 7, 7), r(2, 3, 11, 12)),
        "Conv-groups-stride2": ([], {"group": 2, "strides": [2, 2], "pads": [1, 0, 0, 1]}, r(6, 2, 3, 3),
                                r(2, 4, 9, 8)),
        "Conv-stride3-5x5": ([], {"strides": [3, 3], "pads": [2, 1, 0, 2]}, r(4, 3, 5, 5), r(2, 3, 10, 11)),
        # 8 input channels or more: dx is a Conv with flipped weights (fewer: a ConvTranspose)
        "Conv-8in": ([], {"pads": [1, 1, 1, 1]}, r(4, 8, 3, 3), r(2, 8, 6, 7)),
        "Conv-8in-dilated-pads": ([], {"dilations": [2, 1], "pads": [2, 0, 1, 1]}, r(4, 8, 3, 3), r(2, 8, 6, 7)),
        "Conv-8in-groups": ([], {"group": 2, "pads": [1, 1, 1, 1]}, r(6, 4, 3, 3), r(2, 8, 6, 7)),
        "Conv-8in-depthwise": ([], {"group": 8, "pads": [1, 1, 1, 1]}, r(8, 1, 3, 3), r(2, 8, 6, 7)),
    }
    out = {}
    for name, (_, attrs, weight, *data) in cases.items():
        out[name] = Case([node("Conv", ["x", "w", "b"], **attrs)], {"x": data[0] if data else x},
                         {"w": weight, "b": r(weight.shape[0])}, f32=True)
    out["Conv-1d"] = Case([node("Conv", ["x", "w"], strides=[2], pads=[1, 2])], {"x": r(2, 3, 9)}, {"w": r(4, 3, 3)}, f32=True)
    out["Conv-3d"] = Case([node("Conv", ["x", "w"], pads=[1, 1, 1, 1, 1, 1])], {"x": r(1, 2, 3, 4, 4)},
                          {"w": r(3, 2, 3, 3, 3)}, f32=True)
    t = r(3, 2, 3, 3)
    out["ConvTranspose"] = Case([node("ConvTranspose", ["x", "w"], strides=[2, 2], pads=[1, 1, 1, 1],
                                      output_padding=[1, 0])], {"x": r(2, 3, 4, 5)}, {"w": t}, f32=True)
    tg = r(3, 2, 3, 3)
    per_group = [node("Split", ["x"], ("x0", "x1", "x2"), axis=1, num_outputs=3),
                 node("Split", ["w"], ("w0", "w1", "w2"), axis=0, num_outputs=3)] + [
        node("ConvTranspose", [f"x{k}", f"w{k}"], (f"t{k}",), dilations=[2, 1]) for k in range(3)] + [
        node("Concat", ["t0", "t1", "t2"], ("t",), axis=1), node("Add", ["t", "b4"])]
    out["ConvTranspose-groups"] = Case([node("ConvTranspose", ["x", "w", "b"], group=3, dilations=[2, 1])],
                                       {"x": r(2, 3, 4, 5)}, {"w": tg, "b": r(6), "b4": r(6).reshape(6, 1, 1)},
                                       f32=True, reference=per_group)
    out["ConvTranspose-same"] = Case([node("ConvTranspose", ["x", "w"], strides=[2, 2], auto_pad="SAME_UPPER")],
                                     {"x": r(2, 3, 4, 5)}, {"w": r(3, 2, 4, 3)}, f32=True)
    out["ConvTranspose-output-shape"] = Case([node("ConvTranspose", ["x", "w"], strides=[3, 2], output_shape=[12, 10])],
                                             {"x": r(2, 3, 4, 5)}, {"w": t}, f32=True,  # pads as the spec says
                                             reference=[node("ConvTranspose", ["x", "w"], strides=[3, 2], pads=[0, 1, 0, 0])])
    for act, params, ref in (("Relu", None, [node("Relu", ["s"])]),
                             ("LeakyRelu", [0.2], [node("LeakyRelu", ["s"], alpha=0.2)]),
                             ("Sigmoid", None, [node("Sigmoid", ["s"])]), ("Tanh", None, [node("Tanh", ["s"])]),
                             ("Clip", [-0.5, 0.5], [node("Clip", ["s", "lo", "hi"])]),
                             ("HardSigmoid", [0.3, 0.4], [node("HardSigmoid", ["s"], alpha=0.3, beta=0.4)])):
        fused = helper.make_node("FusedConv", ["x", "w", "b", "z"], ["y"], name="fused", domain=MS, activation=act,
                                 pads=[1, 1, 1, 1], **({"activation_params": params} if params else {}))
        plain = [node("Conv", ["x", "w", "b"], ("cv",), pads=[1, 1, 1, 1]), node("Add", ["cv", "z"], ("s",))] + ref
        out[f"FusedConv-{act}"] = Case([fused], {"x": x, "z": r(2, 4, 7, 8)}, {"w": w, "b": r(4), "lo": np.array(-0.5),
                                                                          "hi": np.array(0.5)}, f32=True, reference=plain)
    return out


CASES.update(_conv_cases())


def _session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _reference(case: Case):
    """``inputs → y`` in float64: numpy, or onnx's reference evaluator (on a decomposition)."""
    if case.numpy is not None:
        return lambda values: case.numpy(*values.values())
    model = case.model(np.float64, case.reference)
    if case.reference:  # the reference evaluator reads y from the decomposition's last node
        model.graph.node[-1].output[0] = "y"
    ref = ReferenceEvaluator(model)
    return lambda values: ref.run(["y"], values)[0]


def _finite_difference(case: Case, seed: np.ndarray, name: str) -> np.ndarray:
    forward = _reference(case)
    feeds = {k: v.astype(np.float64) for k, v in case.inputs.items()}

    def f(values):
        return float((forward(values).reshape(len(seed), -1) * seed).sum())

    grad = np.zeros_like(feeds[name])
    for i in np.ndindex(grad.shape):
        keep = feeds[name][i]
        feeds[name][i] = keep + H
        up = f(feeds)
        feeds[name][i] = keep - H
        down = f(feeds)
        feeds[name][i] = keep
        grad[i] = (up - down) / (2 * H)
    return grad


def _probe(model, feeds, names) -> dict:
    """Types of tensors onnx cannot infer (after FusedConv), from an onnxruntime run."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    out = _session(probe).run(names, feeds)
    return {n: (a.shape, helper.np_dtype_to_tensor_dtype(a.dtype)) for n, a in zip(names, out)}


def _rel(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - b).max() / max(np.abs(b).max(), 1e-12))


@pytest.mark.parametrize("key", list(CASES))
def test_rule_matches_finite_difference(key):
    case = CASES[key]
    dtype = np.float32 if case.f32 else np.float64
    model = case.model(dtype)
    feeds = {k: v.astype(dtype) for k, v in case.inputs.items()}
    graph = build(model, [Term("score", "y")], case.wrt, probe=lambda names: _probe(model, feeds, names),
                  shared_ties=case.shared_ties)
    sess = _session(graph.model)
    y = _session(model).run(["y"], feeds)[0]
    assert _rel(y, _reference(case)({k: v.astype(np.float64) for k, v in case.inputs.items()})) <= 1e-5
    n = y.shape[0] if y.ndim else 1
    seed = np.random.default_rng(1).standard_normal((n, y.size // n))
    out = sess.run([graph.objective] + [graph.grads[w] for w in case.wrt], {**feeds, graph.seeds[0]: seed.astype(dtype)})
    assert out[0].dtype == dtype and out[0].shape == (n,)
    np.testing.assert_allclose(out[0], (y.reshape(n, -1) * seed).sum(1), rtol=1e-5, atol=1e-6)
    tol = F32_TOL if case.f32 else F64_TOL
    for w, got in zip(case.wrt, out[1:]):
        want = _finite_difference(case, seed, w)
        assert got.dtype == dtype and got.shape == want.shape
        assert _rel(got, want) <= tol, (w, _rel(got, want))


def test_max_pool_ties_go_to_the_first_maximum_or_are_shared_when_asked():
    """Ties: the first maximum gets dy (torch, TF); with shared_ties (the blocked rule for VGG's 2×2
    pools in float32) a window with k equal maxima gives each dy/k."""
    x = np.array([[[[1, 1, 2, 0, 5], [1, 1, 0, 2, 5], [3, 0, 4, 4, 5]]]], np.float32)  # (1, 1, 3, 5): 2 windows
    case = Case([node("MaxPool", ["x"], kernel_shape=[2, 2], strides=[2, 2])], {"x": x}, f32=True)
    seed = np.array([[6.0, 10.0]], np.float32)
    first, shared = np.zeros_like(x), np.zeros_like(x)
    first[0, 0, 0, 0], first[0, 0, 0, 2] = 6, 10
    shared[0, 0, :2, :2] = 6 / 4                   # four tied maxima
    shared[0, 0, 0, 2] = shared[0, 0, 1, 3] = 10 / 2  # two
    for ties, want in ((False, first), (True, shared)):
        graph = build(case.model(np.float32), [Term("score", "y")], ["x"], shared_ties=ties)
        dx = _session(graph.model).run([graph.grads["x"]], {"x": x, graph.seeds[0]: seed})[0]
        np.testing.assert_allclose(dx, want, rtol=1e-6)


def test_every_rule_has_a_case():
    """The table and the cases agree: no rule goes untested (Q/DQ and Cast: test_backward.py)."""
    tested = {n.op_type for case in CASES.values() for n in case.nodes}
    untested = {op for _, op in RULES} - tested - {"QuantizeLinear", "DequantizeLinear", "Cast"}
    assert untested == set()
