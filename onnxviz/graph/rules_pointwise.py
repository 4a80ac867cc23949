"""Backward rules of elementwise ops: activations, arithmetic with broadcasting, pass-through.

Each rule is ``fn(e, node, dy) -> [dx per input]`` (see :class:`onnxviz.graph.emit.Rule`),
where ``dy[0]`` is the gradient of the node's output; the comments give the formula and the
model the rule was made for. Ties at a kink follow PyTorch (``Relu``: 0 at ``x = 0``;
``Clip``: 1 at the bounds; ``HardSwish``: ``x/3 + 1/2`` on ``[-3, 3]``).

>>> RULES[("", "Relu")].fn(e, relu_node, ["dy"])          # doctest: +SKIP
['onnxviz_grad/Where_7']

Known limits: ``Pow`` only with a constant exponent; ``Dropout`` as in inference (identity).
"""

from __future__ import annotations

import math

import onnx

from ..errors import UnsupportedModelError
from .emit import Rule
from .index import node_attr

__all__ = ["RULES", "activation_from_output"]


def _input(node, k: int) -> str:
    return node.input[k] if len(node.input) > k else ""


# ------------------------------------------------------------------ activations

def positive(e, y: str) -> str:
    """[y > 0] for a ReLU's output ``y`` ≥ 0, in ``y``'s type.

    float32: ``HardSigmoid(y, α = 3e38, β = 0)`` = min(1, 3e38·y), exactly 1 for every y ≥
    3.4e-39 (all normal floats): onnxruntime keeps it, and the Mul after it, in its blocked
    NCHWc layout between the convs, where Greater and Cast make it reorder both tensors (3
    reorders per layer; measured on a conv → mask → conv chain, 4×64×112²: 216–279 ms against
    249–400 ms). Other types (float16 would overflow α): Greater, Cast.
    """
    if e.elem(y) == onnx.TensorProto.FLOAT:
        return e.op("HardSigmoid", [y], alpha=3e38, beta=0.0)
    return e.op("Cast", [e.cmp("Greater", y, 0)], to=e.elem(y))


def relu(e, node, dy):
    """Relu (VGG16): dx = dy·[y > 0] (= [x > 0]; read from the output, so that onnxruntime still
    fuses the conv before it with its Relu). Guided backprop (captum's GuidedBackprop):
    max(dy, 0)·[y > 0]."""
    y = node.output[0]
    g = e.op("Relu", [dy[0]]) if e.guided else dy[0]
    return [e.op("Mul", [g, positive(e, y)])]


def leaky_relu(e, node, dy):
    """LeakyRelu (YOLO, tf2onnx's Keras LeakyReLU): dx = dy if x > 0 else α·dy."""
    x, alpha = node.input[0], node_attr(node, "alpha", 0.01)
    return [e.where(e.cmp("Greater", x, 0), dy[0], e.op("Mul", [dy[0], e.const(alpha, like=x)]))]


def prelu(e, node, dy):
    """PRelu (a learned slope per channel, torch nn.PReLU): dx = dy if x > 0 else slope·dy."""
    x, slope = node.input[0], node.input[1]
    return [e.where(e.cmp("Greater", x, 0), dy[0], e.op("Mul", [dy[0], slope])), None]


def clip(e, node, dy):
    """Clip (ReLU6 of MobileNet, Keras ReLU(6) via tf2onnx): dx = dy·[min ≤ x ≤ max] (torch's clamp)."""
    x = node.input[0]
    conds = [e.op(op, [x, b]) for op, b in (("GreaterOrEqual", _input(node, 1)), ("LessOrEqual", _input(node, 2))) if b]
    if not conds:
        return [dy[0]]
    cond = conds[0] if len(conds) == 1 else e.op("And", conds)
    return [e.where(cond, dy[0])]


def elu(e, node, dy):
    """Elu: y = x (x > 0), α(eˣ − 1) else; dx = dy·(1 if x > 0 else y + α)."""
    x, y, alpha = node.input[0], node.output[0], node_attr(node, "alpha", 1.0)
    return [e.where(e.cmp("Greater", x, 0), dy[0], e.mul(dy[0], e.op("Add", [y, e.const(alpha, like=y)])))]


def selu(e, node, dy):
    """Selu (self-normalising nets): y = γx (x > 0), γα(eˣ − 1) else; dx = dy·(γ if x > 0 else y + γα)."""
    x, y = node.input[0], node.output[0]
    alpha = node_attr(node, "alpha", 1.67326319217681884765625)
    gamma = node_attr(node, "gamma", 1.05070102214813232421875)
    neg = e.mul(dy[0], e.op("Add", [y, e.const(gamma * alpha, like=y)]))
    return [e.where(e.cmp("Greater", x, 0), e.op("Mul", [dy[0], e.const(gamma, like=x)]), neg)]


def sigmoid(e, node, dy):
    """Sigmoid (SiLU's gate, squeeze-excitation gates): dx = dy·y·(1 − y)."""
    y = node.output[0]
    return [e.mul(dy[0], y, e.op("Sub", [e.const(1, like=y), y]))]


def hard_sigmoid(e, node, dy):
    """HardSigmoid (MobileNetV3's SE gate): y = clip(αx + β, 0, 1); dx = α·dy where 0 < αx + β < 1."""
    x, alpha, beta = node.input[0], node_attr(node, "alpha", 0.2), node_attr(node, "beta", 0.5)
    z = e.op("Add", [e.op("Mul", [x, e.const(alpha, like=x)]), e.const(beta, like=x)])
    inside = e.op("And", [e.cmp("Greater", z, 0), e.cmp("Less", z, 1)])
    return [e.where(inside, e.op("Mul", [dy[0], e.const(alpha, like=x)]))]


def hard_swish(e, node, dy):
    """HardSwish (MobileNetV3): y = x·clip(x/6 + ½, 0, 1); dx = 0 (x < −3), dy·(x/3 + ½) (x ≤ 3), dy."""
    x = node.input[0]
    mid = e.op("Mul", [dy[0], e.op("Add", [e.op("Mul", [x, e.const(1 / 3, like=x)]), e.const(0.5, like=x)])])
    return [e.where(e.cmp("GreaterOrEqual", x, -3.0), e.where(e.cmp("LessOrEqual", x, 3.0), mid, dy[0]))]


def tanh(e, node, dy):
    """Tanh (tanh-GELU, Mish): dx = dy·(1 − y²)."""
    y = node.output[0]
    return [e.mul(dy[0], e.op("Sub", [e.const(1, like=y), e.op("Mul", [y, y])]))]


def softplus(e, node, dy):
    """Softplus (Mish written out by TorchScript): dx = dy·σ(x)."""
    return [e.mul(dy[0], e.op("Sigmoid", [node.input[0]]))]


def _gauss(e, x, scale: float):
    """scale·exp(−x²/2) (for Gelu) — with scale 2/√π and x·√2 it is erf's derivative."""
    return e.op("Mul", [e.op("Exp", [e.op("Mul", [e.op("Mul", [x, x]), e.const(-0.5, like=x)])]), e.const(scale, like=x)])


def gelu(e, node, dy):
    """Gelu (opset 20; ConvNeXt, ViT): exact: dx = dy·(Φ(x) + x·φ(x)); ``approximate="tanh"``:
    y = ½x(1 + t), t = tanh(√(2/π)(x + 0.044715x³)), dx = dy·(½(1 + t) + ½x(1 − t²)√(2/π)(1 + 3·0.044715x²))."""
    x = node.input[0]
    if node_attr(node, "approximate", "none") in ("tanh", b"tanh"):
        c = math.sqrt(2 / math.pi)
        x2 = e.op("Mul", [x, x])
        inner = e.op("Mul", [e.op("Add", [x, e.mul(x2, x, e.const(0.044715, like=x))]), e.const(c, like=x)])
        t = e.op("Tanh", [inner])
        half = e.const(0.5, like=x)
        left = e.op("Mul", [e.op("Add", [e.const(1, like=x), t]), half])
        dinner = e.op("Mul", [e.op("Add", [e.const(1, like=x), e.op("Mul", [x2, e.const(3 * 0.044715, like=x)])]),
                              e.const(c, like=x)])
        right = e.mul(half, x, e.op("Sub", [e.const(1, like=x), e.op("Mul", [t, t])]), dinner)
        return [e.mul(dy[0], e.op("Add", [left, right]))]
    cdf = e.op("Mul", [e.op("Add", [e.const(1, like=x), e.op("Erf", [e.op("Mul", [x, e.const(1 / math.sqrt(2), like=x)])])]),
                       e.const(0.5, like=x)])
    return [e.mul(dy[0], e.op("Add", [cdf, e.mul(x, _gauss(e, x, 1 / math.sqrt(2 * math.pi)))]))]


def erf(e, node, dy):
    """Erf (TorchScript's GELU: x·(1 + erf(x/√2))·½): dx = dy·(2/√π)·exp(−x²)."""
    x = node.input[0]
    return [e.mul(dy[0], _gauss(e, e.op("Mul", [x, e.const(math.sqrt(2), like=x)]), 2 / math.sqrt(math.pi)))]


def mish(e, node, dy):
    """Mish (opset 18; YOLOv4): y = x·tanh(sp(x)); dx = dy·(tanh(sp) + x·σ(x)·(1 − tanh(sp)²))."""
    x = node.input[0]
    t = e.op("Tanh", [e.op("Softplus", [x])])
    slope = e.mul(x, e.op("Sigmoid", [x]), e.op("Sub", [e.const(1, like=x), e.op("Mul", [t, t])]))
    return [e.mul(dy[0], e.op("Add", [t, slope]))]


def activation_from_output(e, act: str, params, y: str, dy: str) -> str:
    """The gradient through a fused activation (``FusedConv``'s), from its output ``y`` alone.

    Example: onnxruntime's saved ``FusedConv(activation="Relu")``: dx = dy·[y > 0].
    """
    act = act.decode() if isinstance(act, bytes) else act
    params = list(params or [])
    if act == "Relu":
        g = e.op("Relu", [dy]) if e.guided else dy
        return e.op("Mul", [g, positive(e, y)])
    if act == "LeakyRelu":
        alpha = params[0] if params else 0.01
        return e.where(e.cmp("Greater", y, 0), dy, e.op("Mul", [dy, e.const(alpha, like=y)]))
    if act == "Sigmoid":
        return e.mul(dy, y, e.op("Sub", [e.const(1, like=y), y]))
    if act == "Tanh":
        return e.mul(dy, e.op("Sub", [e.const(1, like=y), e.op("Mul", [y, y])]))
    if act == "Clip":
        lo, hi = (params + [-math.inf, math.inf])[:2] if len(params) >= 2 else (-math.inf, math.inf)
        return e.where(e.op("And", [e.cmp("Greater", y, lo), e.cmp("Less", y, hi)]), dy)
    if act == "HardSigmoid":
        alpha = params[0] if params else 0.2
        inside = e.op("And", [e.cmp("Greater", y, 0), e.cmp("Less", y, 1)])
        return e.where(inside, e.op("Mul", [dy, e.const(alpha, like=y)]))
    if not act:
        return dy
    raise UnsupportedModelError(f"no gradient rule for the fused activation '{act}'")


# ------------------------------------------------------------------ arithmetic

def add(e, node, dy):
    """Add (a bias, a residual connection, broadcasting (N,C,H,W) + (C,1,1)): dA = dB = dy, summed
    back over broadcast axes."""
    a, b = node.input[:2]
    y = node.output[0]
    return [e.unbroadcast(dy[0], a, y), e.unbroadcast(dy[0], b, y)]


def sum_(e, node, dy):
    """Sum (several residual branches at once; the objective's terms): each input gets dy, summed back."""
    return [e.unbroadcast(dy[0], x, node.output[0]) for x in node.input]


def sub(e, node, dy):
    """Sub (mean subtraction in the preprocessing): dA = dy, dB = −dy (summed back)."""
    a, b = node.input[:2]
    y = node.output[0]
    return [e.unbroadcast(dy[0], a, y), e.unbroadcast(e.op("Neg", [dy[0]]), b, y)]


def mul(e, node, dy):
    """Mul (squeeze-excitation: x·gate with gate (N,C,1,1); SiLU x·σ(x)): dA = dy·B, dB = dy·A."""
    a, b = node.input[:2]
    y = node.output[0]
    return [e.unbroadcast(e.op("Mul", [dy[0], b]), a, y), e.unbroadcast(e.op("Mul", [dy[0], a]), b, y)]


def div(e, node, dy):
    """Div (x/255 or x/std preprocessing; TorchScript's GELU x/√2): dA = dy/B, dB = −dy·y/B."""
    a, b = node.input[:2]
    y = node.output[0]
    ga = e.op("Div", [dy[0], b])
    gb = e.op("Neg", [e.op("Mul", [ga, y])])
    return [e.unbroadcast(ga, a, y), e.unbroadcast(gb, b, y)]


def pow_(e, node, dy):
    """Pow with a constant exponent c (tanh-GELU's x³, a decomposed norm's x²): dx = dy·c·x^(c−1)."""
    x, c = node.input[:2]
    c = e.op("Cast", [c], to=e.elem(x))
    return [e.mul(dy[0], c, e.op("Pow", [x, e.op("Sub", [c, e.const(1, like=x)])])), None]


def identity(e, node, dy):
    """Identity, and Dropout in inference (tf2onnx's and TorchScript's graphs keep them): dx = dy."""
    return [dy[0]]


def cast(e, node, dy):
    """Cast (a float16 model's float32 input cast down): dx = dy cast back to x's type."""
    return [e.op("Cast", [dy[0]], to=e.elem(node.input[0]))]


def cast_like(e, node, dy):
    """CastLike (dynamo's exports cast constants like the input): dx = dy cast back to x's type."""
    return [e.op("CastLike", [dy[0], node.input[0]]), None]


def straight_through(e, node, dy):
    """DequantizeLinear (QDQ models of onnxruntime's quantizer): the gradient passes straight through."""
    return [dy[0]]


_RANGES = {onnx.TensorProto.UINT8: (0, 255), onnx.TensorProto.INT8: (-128, 127),
           onnx.TensorProto.UINT16: (0, 65535), onnx.TensorProto.INT16: (-32768, 32767)}


def quantize(e, node, dy):
    """QuantizeLinear (QDQ models): straight through where x/scale + zero point rounds inside the
    integer range, 0 outside (torch's fake-quantize backward). The quantizer folds a ReLU into an
    output range starting at 0: this is its mask."""
    x, scale = node.input[:2]
    zp = _input(node, 2)
    elem = e.elem(zp) if zp else onnx.TensorProto.UINT8
    if elem not in _RANGES:
        return [dy[0], None, None][:len(node.input)]
    lo, hi = _RANGES[elem]
    r = e.rank(x, node)
    axis = node_attr(node, "axis", 1) % max(r, 1)

    def along(t: str) -> str:  # a per-axis scale or zero point, shaped to broadcast along `axis`
        t = e.op("Cast", [t], to=e.elem(x))
        per_axis = len(e.dims(node.input[1]) or ()) == 1 and r > 1
        return e.op("Reshape", [t, e.ints([-1] + [1] * (r - 1 - axis))]) if per_axis else t

    level = e.op("Round", [e.op("Div", [x, along(scale)])])
    if zp:
        level = e.op("Add", [level, along(zp)])
    inside = e.op("And", [e.cmp("GreaterOrEqual", level, float(lo)), e.cmp("LessOrEqual", level, float(hi))])
    return [e.where(inside, dy[0]), None, None][:len(node.input)]


RULES = {
    ("", "Relu"): Rule(relu), ("", "LeakyRelu"): Rule(leaky_relu), ("", "PRelu"): Rule(prelu),
    ("", "Clip"): Rule(clip), ("", "Elu"): Rule(elu), ("", "Selu"): Rule(selu),
    ("", "Sigmoid"): Rule(sigmoid), ("", "HardSigmoid"): Rule(hard_sigmoid), ("", "HardSwish"): Rule(hard_swish),
    ("", "Tanh"): Rule(tanh), ("", "Softplus"): Rule(softplus), ("", "Gelu"): Rule(gelu),
    ("com.microsoft", "Gelu"): Rule(gelu), ("", "Erf"): Rule(erf), ("", "Mish"): Rule(mish),
    ("", "Add"): Rule(add, inputs=(0, 1)), ("", "Sum"): Rule(sum_, inputs=None), ("", "Sub"): Rule(sub, inputs=(0, 1)),
    ("", "Mul"): Rule(mul, inputs=(0, 1)), ("", "Div"): Rule(div, inputs=(0, 1)), ("", "Pow"): Rule(pow_),
    ("", "Identity"): Rule(identity), ("", "Dropout"): Rule(identity, outputs=(0,)), ("", "Cast"): Rule(cast),
    ("", "CastLike"): Rule(cast_like, type_only=(1,)),
    ("", "QuantizeLinear"): Rule(quantize, outputs=(0,)),
    ("", "DequantizeLinear"): Rule(straight_through),
}
