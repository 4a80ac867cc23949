"""Backward rules of layers: convolutions, normalisations, pooling, reductions, Gemm/MatMul, Softmax.

Each rule is ``fn(e, node, dy) -> [dx per input]`` (see :class:`onnxviz.graph.emit.Rule`); only
the data input is differentiated (weights are constants). Convolutions go both ways:

* ``Conv``'s ``dx`` with stride 1 is a ``Conv`` of ``dy`` with the weights flipped and their
  in/out channels swapped (per group), padded by ``d·(k − 1) − pad``: onnxruntime runs it in
  its blocked NCHWc layout. Measured (256→256 3×3 at 56², 2 cores): 14–15 ms, the forward
  conv 13–18 ms, ``ConvTranspose`` 21–25 ms. Except into fewer than 8 channels (the first
  conv's RGB input), which the blocked layout does not fit: a ``ConvTranspose`` there (Keras
  VGG16 at 200², 64 → 3: the whole patterns step 529 against 537 ms per image, one thread).
  With a stride, ``dx`` is a ``ConvTranspose`` with
  the same weights, pads and ``output_padding = H − (s(H_out − 1) + d(k − 1) + 1 − pads)``
  (one stride-1 polyphase ``Conv`` + ``DepthToSpace`` was tried: ResNet18's gradient took the
  same time, 215 against 211 ms median, so it is not used).
* ``ConvTranspose``'s ``dx`` is a ``Conv`` with the same weights, strides and pads.

>>> RULES[("", "Conv")].fn(e, conv_node, ["dy"])          # doctest: +SKIP
['onnxviz_grad/Conv_12', None, None]

Known limits: spatial dims must be static (shape inference at the input shape gives them);
``MaxPool`` with ``storage_order=1`` and ``BatchNormalization`` in training mode are refused.
"""

from __future__ import annotations

import numpy as np
import onnx

from ..errors import UnsupportedModelError
from .emit import Rule
from .index import node_attr
from .rules_pointwise import activation_from_output

__all__ = ["RULES"]

_INT64_MIN = -(2 ** 63)


# ------------------------------------------------------------------ convolutions

def _geometry(e, node, x: str, w: str, transposed: bool = False) -> dict:
    """Kernel, strides, dilations, group and explicit ``(begin, end)`` pads of a conv or pool."""
    kernel = node_attr(node, "kernel_shape", None)
    if kernel is None:
        kernel = list(e.static(w, node, range(2, e.rank(w, node))))
    n = len(kernel)
    strides = list(node_attr(node, "strides", None) or [1] * n)
    dil = list(node_attr(node, "dilations", None) or [1] * n)
    pads = list(node_attr(node, "pads", None) or [0] * (2 * n))
    auto = node_attr(node, "auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
    if transposed and (auto in ("SAME_UPPER", "SAME_LOWER") or node_attr(node, "output_shape", None)):
        h = e.static(x, node, range(2, 2 + n))
        y = e.static(node.output[0], node, range(2, 2 + n))
        out_pad = list(node_attr(node, "output_padding", None) or [0] * n)
        total = [s * (a - 1) + op + sp - b for s, a, op, sp, b in zip(strides, h, out_pad, span, y)]
        upper = auto == "SAME_UPPER"  # the spec: SAME_UPPER puts the odd pad at the end, else at the start
        pads = [t // 2 if upper else t - t // 2 for t in total] + [t - t // 2 if upper else t // 2 for t in total]
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        h = e.static(x, node, range(2, 2 + n))
        total = [max((-(-a // s) - 1) * s + sp - a, 0) for a, s, sp in zip(h, strides, span)]
        upper = auto == "SAME_UPPER"
        pads = [t // 2 if upper else t - t // 2 for t in total] + [t - t // 2 if upper else t // 2 for t in total]
    elif auto == "VALID":
        pads = [0] * (2 * n)
    if any(p < 0 for p in pads):
        raise UnsupportedModelError(f"{node.op_type} '{node.name}' has negative padding {pads}; its gradient "
                                    "is not supported")
    return {"kernel": list(kernel), "strides": strides, "dilations": dil, "pads": pads, "span": span,
            "group": node_attr(node, "group", 1), "n": n}


def _flipped(e, w: str, node, geo: dict) -> str:
    """``w`` (O, I/g, *k) as the weights of the transposed conv: (I, O/g, *k), kernels flipped."""
    o, i_g = e.static(w, node, (0, 1))
    g, n, k = geo["group"], geo["n"], geo["kernel"]
    if g == 1:
        t = e.op("Transpose", [w], perm=[1, 0] + list(range(2, 2 + n)))
    else:
        grouped = e.op("Reshape", [w, e.ints([g, o // g, i_g, *k])])
        t = e.op("Transpose", [grouped], perm=[0, 2, 1] + list(range(3, 3 + n)))
        t = e.op("Reshape", [t, e.ints([g * i_g, o // g, *k])])
    return e.op("Slice", [t, e.ints([-1] * n), e.ints([_INT64_MIN] * n), e.ints(list(range(2, 2 + n))),
                          e.ints([-1] * n)])


def _conv_dx(e, node, x: str, w: str, dy: str) -> str:
    """The gradient of ``Conv(x, w)`` at ``x``; ``dy`` is the gradient of its output."""
    geo = _geometry(e, node, x, w)
    n, pads = geo["n"], geo["pads"]
    flip_pads = [sp - 1 - p for sp, p in zip(geo["span"] * 2, pads)]
    narrow = e.static(w, node, (1,))[0] * geo["group"] < 8  # dx of few channels (an RGB input): ConvTranspose
    if all(s == 1 for s in geo["strides"]) and all(p >= 0 for p in flip_pads) and not narrow:
        return e.op("Conv", [dy, _flipped(e, w, node, geo)], dilations=geo["dilations"], group=geo["group"],
                    pads=flip_pads, kernel_shape=geo["kernel"])
    h = e.static(x, node, range(2, 2 + n))
    y = e.static(node.output[0], node, range(2, 2 + n))
    made = [s * (b - 1) + sp - pb - pe for s, b, sp, pb, pe in zip(geo["strides"], y, geo["span"], pads[:n], pads[n:])]
    return e.op("ConvTranspose", [dy, w], strides=geo["strides"], dilations=geo["dilations"], group=geo["group"],
                pads=pads, kernel_shape=geo["kernel"], output_padding=[a - m for a, m in zip(h, made)])


def conv(e, node, dy):
    """Conv (every CNN; groups: MobileNet's depthwise convs; strides, dilations, SAME pads: tf2onnx)."""
    return [_conv_dx(e, node, node.input[0], node.input[1], dy[0])] + [None] * (len(node.input) - 1)


def conv_transpose(e, node, dy):
    """ConvTranspose (decoders, U-Nets): dx = Conv(dy, w) with the same strides, dilations, group, pads."""
    x, w = node.input[:2]
    geo = _geometry(e, node, x, w, transposed=True)
    dx = e.op("Conv", [dy[0], w], strides=geo["strides"], dilations=geo["dilations"], group=geo["group"],
              pads=geo["pads"], kernel_shape=geo["kernel"])
    return [dx] + [None] * (len(node.input) - 1)


def fused_conv(e, node, dy):
    """com.microsoft FusedConv (onnxruntime's optimised models): y = act(conv(x, w) + b [+ z])."""
    pre = activation_from_output(e, node_attr(node, "activation", ""), node_attr(node, "activation_params", None),
                                 node.output[0], dy[0])
    out = [_conv_dx(e, node, node.input[0], node.input[1], pre)] + [None] * (len(node.input) - 1)
    if len(node.input) > 3 and node.input[3]:  # the summed input z
        out[3] = pre
    return out


# ------------------------------------------------------------------ normalisations

def _normalized_dx(e, g: str, x: str, axes: list, eps: float) -> str:
    """dx of x̂ = (x − μ)/σ over ``axes``, given ĝ = dy·scale: (ĝ − mean ĝ − x̂·mean(ĝ·x̂))/σ.

    Float16 tensors are worked in float32 (as LayerNormalization's ``stash_type`` does).
    """
    elem = e.elem(x)
    if elem == onnx.TensorProto.FLOAT16:
        g, x = (e.op("Cast", [t], to=onnx.TensorProto.FLOAT) for t in (g, x))
    centred = e.op("Sub", [x, e.reduce("ReduceMean", x, axes)])
    var = e.reduce("ReduceMean", e.op("Mul", [centred, centred]), axes)
    rstd = e.op("Reciprocal", [e.op("Sqrt", [e.op("Add", [var, e.const(eps, like=var)])])])
    xh = e.op("Mul", [centred, rstd])
    inner = e.op("Sub", [e.op("Sub", [g, e.reduce("ReduceMean", g, axes)]),
                         e.op("Mul", [xh, e.reduce("ReduceMean", e.op("Mul", [g, xh]), axes)])])
    dx = e.op("Mul", [inner, rstd])
    return e.op("Cast", [dx], to=elem) if elem == onnx.TensorProto.FLOAT16 else dx


def batch_norm(e, node, dy):
    """BatchNormalization in inference (dynamo optimize=False, tf2onnx): dx = dy·scale/√(var + ε),
    written as a BatchNormalization of dy with zero mean and bias."""
    if node_attr(node, "training_mode", 0):
        raise UnsupportedModelError(f"BatchNormalization '{node.name}' is in training mode; gradients are for "
                                    "inference graphs (export the model in eval mode)")
    _, scale, bias, mean, var = node.input[:5]
    zero = [e.op("Sub", [t, t]) for t in (bias, mean)]
    return [e.op("BatchNormalization", [dy[0], scale, zero[0], zero[1], var],
                 epsilon=node_attr(node, "epsilon", 1e-5))] + [None] * 4


def instance_norm(e, node, dy):
    """InstanceNormalization (TorchScript's GroupNorm: Reshape → InstanceNormalization → Reshape)."""
    x, scale = node.input[:2]
    r = e.rank(x, node)
    g = e.op("Mul", [dy[0], e.op("Unsqueeze", [scale, e.ints(list(range(1, r - 1)))])])
    return [_normalized_dx(e, g, x, list(range(2, r)), node_attr(node, "epsilon", 1e-5)), None, None]


def layer_norm(e, node, dy):
    """LayerNormalization (ConvNeXt's channels-last norm, ViT): normalised over ``axis`` … last."""
    x, scale = node.input[:2]
    r = e.rank(x, node)
    axis = node_attr(node, "axis", -1) % r
    g = e.op("Mul", [dy[0], scale])
    return [_normalized_dx(e, g, x, list(range(axis, r)), node_attr(node, "epsilon", 1e-5))] + [None] * (len(node.input) - 1)


def group_norm(e, node, dy):
    """GroupNormalization (opset 18: scale per group; 21: per channel): normalised over (N, G, C/G·H·W)."""
    x, scale = node.input[:2]
    r = e.rank(x, node)
    groups = node_attr(node, "num_groups")
    grouped = e.ints([0, groups, -1])
    if e.opset >= 21:
        g = e.op("Reshape", [e.op("Mul", [dy[0], e.op("Unsqueeze", [scale, e.ints(list(range(1, r - 1)))])]), grouped])
    else:
        g = e.op("Mul", [e.op("Reshape", [dy[0], grouped]), e.op("Unsqueeze", [scale, e.ints([1])])])
    dx = _normalized_dx(e, g, e.op("Reshape", [x, grouped]), [2], node_attr(node, "epsilon", 1e-5))
    return [e.like(dx, x), None, None]


# ------------------------------------------------------------------ pooling

def _with_indices(e, node):
    """MaxPool as the rule needs it: with its Indices output (added when the model has none),
    except for 2×2 windows that tile the input when ties may be shared (:func:`_tiled`)."""
    if (len(node.output) > 1 and node.output[1]) or _tiled(e, node):
        return node
    new = onnx.NodeProto()
    new.CopyFrom(node)
    del new.output[1:]
    new.output.append(e.name("indices"))
    return new


def _tiled(e, node) -> bool:
    """A float32 MaxPool of 2×2 windows, stride 2, no pads (VGG's), on a known (N, C, H, W), whose
    model reads no Indices output, in a graph built with ``shared_ties``: :func:`_max_pool_tiled`
    differentiates it."""
    x, kernel = node.input[0], node_attr(node, "kernel_shape", None)
    dims = e.dims(x) or ()
    if (not e.shared_ties or list(kernel or ()) != [2, 2] or e.types.get(x, (None, 0))[1] != onnx.TensorProto.FLOAT or len(dims) != 4
            or not all(isinstance(d, int) and d > 0 for d in dims[1:]) or (len(node.output) > 1 and node.output[1])):
        return False
    plain = node_attr(node, "auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET", b"VALID", "VALID")
    return (plain and list(node_attr(node, "strides", None) or []) == [2, 2] and not any(node_attr(node, "pads", None) or [])
            and list(node_attr(node, "dilations", None) or [1, 1]) == [1, 1] and not node_attr(node, "ceil_mode", 0)
            and not node_attr(node, "storage_order", 0))


#: ``1/(1 + s)`` for ``s`` = 0 … 3 other maxima in a window: the cubic through those four points,
#: ``1 + s·(−3/4 + s·(7/24 − s/24))``, exactly 1 at ``s = 0`` (no tie, the usual case).
_SHARE = (-1 / 24, 7 / 24, -3 / 4, 1.0)


def _max_pool_tiled(e, node, dy):
    """MaxPool of 2×2 windows that tile the input (VGG16's pools), ties shared (the builder's
    ``shared_ties``: patterns' gradient ascent): dx = up(dy / ties) · [x = up(y)],
    ``up`` the nearest-neighbour upsampling (Resize), so that every op stays in onnxruntime's
    blocked NCHWc layout: ``x − up(y)`` is a depthwise 1×1 Conv of weight −1 with ``x`` added in,
    ``[… = 0]`` a ``HardSigmoid(·, α = 3e38, β = 1)`` fused into it, the ties of each window an
    AveragePool of that mask, ``1/ties`` a cubic in it (:data:`_SHARE`: depthwise Convs and Muls). MaxPool with
    its Indices output runs outside the blocked layout, between reorders. Measured (Keras VGG16
    to block5_conv3 at 200², batch 8, one thread; forward + input gradient): 571 ms per image
    against 597 with Indices and MaxUnpool.

    Ties (a flat region) share dy evenly, as torch's ``amax`` does (torch's and TF's MaxPool give
    it all to the first maximum); values within 3.4e-39 of their window's maximum count as ties.
    """
    x, y = node.input[0], node.output[0]
    c, h, w = e.static(x, node)
    n, _, ph, pw = e.dims(y) or (None,) * 4
    if not all(isinstance(d, int) for d in (ph, pw)):
        ph, pw = h // 2, w // 2

    def affine(t: str, a: float, b: float, like: str) -> str:  # a·t + b, a depthwise 1×1 Conv
        out = e.op("Conv", [t, e.const(np.full((c, 1, 1, 1), a), like=x), e.const(np.full(c, b), like=x)],
                   group=c, kernel_shape=[1, 1])
        return e.shaped_like(out, like)

    def up(t: str) -> str:  # every window filled with its value; a row or column no window covers: 0
        u = e.sized(e.op("Resize", [t, "", e.const([1, 1, 2, 2], like=x)], mode="nearest",
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor"), (n, c, 2 * ph, 2 * pw))
        if (2 * ph, 2 * pw) != (h, w):
            u = e.shaped_like(e.op("Pad", [u, e.ints([0, 0, 0, 0, 0, 0, h - 2 * ph, w - 2 * pw])]), x)
        return u

    below = e.shaped_like(e.op("Add", [affine(up(y), -1.0, 0.0, x), x]), x)         # x − its window's max ≤ 0
    mask = e.shaped_like(e.op("HardSigmoid", [below], alpha=3e38, beta=1.0), x)       # 1 at the maxima
    ties = e.shaped_like(e.op("AveragePool", [mask], kernel_shape=[2, 2], strides=[2, 2]), y)  # maxima / 4
    others = affine(ties, 4.0, -1.0, y)                                                 # maxima − 1
    share = affine(others, _SHARE[0], _SHARE[1], y)
    for coef in _SHARE[2:]:
        share = affine(e.shaped_like(e.op("Mul", [share, others]), y), 1.0, coef, y)
    return [e.op("Mul", [up(e.shaped_like(e.op("Mul", [dy[0], share]), y)), mask])]


def max_pool(e, node, dy):
    """MaxPool (VGG16): dy goes to the argmax of each window (the first, among ties). 2×2 windows
    that tile the input, ties shared: :func:`_max_pool_tiled`. Otherwise through the Indices output (flat indices into the input):
    windows that do not overlap put it there with MaxUnpool; overlapping ones (ResNet's 3×3
    stride 2, Inception's 3×3 stride 1) sum their shares with ScatterElements: MaxUnpool assigns.
    Measured (4×64×112², 2 cores, loaded): MaxPool with Indices then MaxUnpool 53–84 ms, then
    ScatterElements 115–123 ms."""
    if node_attr(node, "storage_order", 0):
        raise UnsupportedModelError(f"MaxPool '{node.name}' has storage_order=1; its gradient is not supported")
    if _tiled(e, node):
        return _max_pool_tiled(e, node, dy)
    x = node.input[0]
    geo = _geometry(e, node, x, x)
    overlap = any(s < sp for s, sp in zip(geo["strides"], geo["span"]))
    if not overlap and all(d == 1 for d in geo["dilations"]):
        elem = e.elem(x)  # onnxruntime's MaxUnpool is float32 only
        g = dy[0] if elem == onnx.TensorProto.FLOAT else e.shaped_like(
            e.op("Cast", [dy[0]], to=onnx.TensorProto.FLOAT), node.output[0])
        out = e.shaped_like(e.op("MaxUnpool", [g, node.output[1], e.shape(x)], kernel_shape=geo["kernel"],
                                 strides=geo["strides"], pads=geo["pads"]), x)
        return [out if elem == onnx.TensorProto.FLOAT else e.op("Cast", [out], to=elem)]
    flat = e.op("Reshape", [e.op("Size", [x]), e.ints([1])])
    out = e.scatter(flat, e.op("Reshape", [node.output[1], e.ints([-1])]),
                    e.op("Reshape", [dy[0], e.ints([-1])]), 0, overlap)
    return [e.like(out, x)]


def _window_counts(h, y, geo) -> np.ndarray:
    """How many input (non-pad) positions each pooling window covers: (1, 1, *y)."""
    per_axis = []
    for a, b, k, s, d, pb in zip(h, y, geo["kernel"], geo["strides"], geo["dilations"], geo["pads"]):
        starts = np.arange(b)[:, None] * s - pb + np.arange(k)[None, :] * d
        per_axis.append(((starts >= 0) & (starts < a)).sum(1))
    counts = per_axis[0]
    for c in per_axis[1:]:
        counts = np.multiply.outer(counts, c)
    return counts[None, None].astype(np.float64)


def average_pool(e, node, dy):
    """AveragePool (ResNet's stem in some exports, Inception's pool branch; pads, ceil_mode,
    count_include_pad): each window's dy/divisor spread over its inputs by a ConvTranspose with a
    ones kernel. The divisor is onnxruntime's own: AveragePool(ones) / (inputs in the window)."""
    x = node.input[0]
    geo = _geometry(e, node, x, x)
    n = geo["n"]
    h = list(e.static(x, node, range(2, 2 + n)))
    y = list(e.static(node.output[0], node, range(2, 2 + n)))
    ones = e.const(np.ones([1, 1] + h), like=x)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    share = e.op("Div", [e.op("AveragePool", [ones], **attrs), e.const(_window_counts(h, y, geo), like=x)])
    per_map = e.op("Reshape", [e.op("Mul", [dy[0], share]), e.ints([-1, 1] + y)])
    spread = e.op("ConvTranspose", [per_map, e.const(np.ones([1, 1] + geo["kernel"]), like=x)],
                  strides=geo["strides"], dilations=geo["dilations"], pads=geo["pads"][:n] + [0] * n)
    made = [s * (b - 1) + sp - pb for s, b, sp, pb in zip(geo["strides"], y, geo["span"], geo["pads"][:n])]
    fitted = e.op("Pad", [spread, e.ints([0] * (n + 2) + [0, 0] + [a - m for a, m in zip(h, made)])])
    return [e.like(fitted, x)]


def _count(e, x: str, y: str) -> str:
    """Size(x) / Size(y) in x's type: the elements each output value summarises."""
    return e.op("Div", [*(e.op("Cast", [e.op("Size", [t])], to=e.elem(x)) for t in (x, y))])


def global_average_pool(e, node, dy):
    """GlobalAveragePool (ResNet, MobileNet heads): dx = dy/(H·W), spread over the map."""
    x, y = node.input[0], node.output[0]
    return [e.op("Div", [e.op("Expand", [dy[0], e.shape(x)]), _count(e, x, y)])]


def global_max_pool(e, node, dy):
    """GlobalMaxPool (some SE blocks): dy to the maximum, split evenly between ties (as torch's amax)."""
    x, y = node.input[0], node.output[0]
    r = e.rank(x, node)
    mask = e.op("Equal", [x, y])
    ties = e.reduce("ReduceSum", e.op("Cast", [mask], to=e.elem(x)), list(range(2, r)))
    return [e.where(mask, e.op("Div", [e.op("Expand", [dy[0], e.shape(x)]), ties]))]


def _reduced_back(e, node, dy: str, t: str):
    """``t`` (dy or y) with the reduced axes kept, so that it broadcasts against x; and the axes."""
    axes = node_attr(node, "axes", None)
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = node.input[1]
    if node_attr(node, "keepdims", 1) or axes is None:
        return t, axes
    return e.op("Unsqueeze", [t, axes if isinstance(axes, str) else e.ints(list(axes))]), axes


def reduce_sum(e, node, dy):
    """ReduceSum (a decomposed norm's sums; axes as attribute < 13, as input from 13)."""
    if _noop(node):
        return [dy[0], None]
    g, _ = _reduced_back(e, node, dy[0], dy[0])
    return [e.op("Expand", [g, e.shape(node.input[0])]), None]


def reduce_mean(e, node, dy):
    """ReduceMean (tf2onnx's GlobalAveragePooling2D, keepdims 0; the channel objective)."""
    if _noop(node):
        return [dy[0], None]
    x = node.input[0]
    g, _ = _reduced_back(e, node, dy[0], dy[0])
    return [e.op("Div", [e.op("Expand", [g, e.shape(x)]), _count(e, x, node.output[0])]), None]


def reduce_max(e, node, dy):
    """ReduceMax (tf2onnx's GlobalMaxPooling2D): dy to the maxima, split evenly between ties."""
    if _noop(node):
        return [dy[0], None]
    x = node.input[0]
    g, axes = _reduced_back(e, node, dy[0], dy[0])
    y, _ = _reduced_back(e, node, dy[0], node.output[0])
    mask = e.op("Equal", [x, y])
    ties = e.reduce("ReduceSum", e.op("Cast", [mask], to=e.elem(x)), axes, keepdims=1)
    return [e.where(mask, e.op("Div", [e.op("Expand", [g, e.shape(x)]), ties])), None]


def _noop(node) -> bool:
    has_axes = node_attr(node, "axes", None) is not None or (len(node.input) > 1 and node.input[1])
    return not has_axes and bool(node_attr(node, "noop_with_empty_axes", 0))


# ------------------------------------------------------------------ linear

def gemm(e, node, dy):
    """Gemm (fully connected layers): y = α·A'B' + β·C; dA' = α·dy·B'ᵀ, dB' = α·A'ᵀ·dy, dC = β·dy."""
    a, b = node.input[:2]
    c = node.input[2] if len(node.input) > 2 else ""
    alpha, beta = node_attr(node, "alpha", 1.0), node_attr(node, "beta", 1.0)
    ta, tb = node_attr(node, "transA", 0), node_attr(node, "transB", 0)
    g = dy[0]
    da = (e.op("Gemm", [b, g], alpha=alpha, transA=tb, transB=1) if ta else
          e.op("Gemm", [g, b], alpha=alpha, transB=1 - tb))
    db = (e.op("Gemm", [g, a], alpha=alpha, transA=1, transB=ta) if tb else
          e.op("Gemm", [a, g], alpha=alpha, transA=1 - ta))
    out = [da, db]
    if c:
        out.append(e.unbroadcast(e.op("Mul", [g, e.const(beta, like=c)]), c, node.output[0]))
    return out


def _swap_last(e, t: str, node) -> str:
    r = e.rank(t, node)
    return e.op("Transpose", [t], perm=list(range(r - 2)) + [r - 1, r - 2])


def matmul(e, node, dy):
    """MatMul (dynamo's Linear without bias folded into Gemm; batched heads): dA = dy·Bᵀ, dB = Aᵀ·dy,
    summed back over broadcast batch axes. A 1-D B: dA = dy[..., None]·B."""
    a, b = node.input[:2]
    y = node.output[0]
    ra, rb = e.rank(a, node), e.rank(b, node)
    if ra < 2:
        raise UnsupportedModelError(f"MatMul '{node.name}' has a 1-D first input; its gradient is not supported")
    if rb == 1:
        g = e.op("Unsqueeze", [dy[0], e.ints([-1])])
        return [e.op("Mul", [g, b]), e.reduce("ReduceSum", e.op("Mul", [g, a]), list(range(ra - 1)), keepdims=0)]
    da = e.unbroadcast(e.op("MatMul", [dy[0], _swap_last(e, b, node)]), a, y)
    db = e.unbroadcast(e.op("MatMul", [_swap_last(e, a, node), dy[0]]), b, y)
    return [da, db]


def softmax(e, node, dy):
    """Softmax (a classifier's last op, when the objective is its probability): dx = y·(dy − Σ dy·y)."""
    y = node.output[0]
    axis = node_attr(node, "axis", -1)
    total = e.reduce("ReduceSum", e.op("Mul", [dy[0], y]), [axis], keepdims=1)
    return [e.op("Mul", [y, e.op("Sub", [dy[0], total])])]


def log_softmax(e, node, dy):
    """LogSoftmax (log-probability objectives): dx = dy − exp(y)·Σ dy."""
    y = node.output[0]
    axis = node_attr(node, "axis", -1)
    total = e.reduce("ReduceSum", dy[0], [axis], keepdims=1)
    return [e.op("Sub", [dy[0], e.op("Mul", [e.op("Exp", [y]), total])])]


RULES = {
    ("", "Conv"): Rule(conv), ("", "ConvTranspose"): Rule(conv_transpose),
    ("com.microsoft", "FusedConv"): Rule(fused_conv, inputs=(0, 3)),
    ("", "BatchNormalization"): Rule(batch_norm, outputs=(0,)),
    ("", "InstanceNormalization"): Rule(instance_norm), ("", "LayerNormalization"): Rule(layer_norm, outputs=(0,)),
    ("", "GroupNormalization"): Rule(group_norm),
    ("", "MaxPool"): Rule(max_pool, outputs=(0,), prepare=_with_indices), ("", "AveragePool"): Rule(average_pool),
    ("", "GlobalAveragePool"): Rule(global_average_pool), ("", "GlobalMaxPool"): Rule(global_max_pool),
    ("", "ReduceSum"): Rule(reduce_sum), ("", "ReduceMean"): Rule(reduce_mean), ("", "ReduceMax"): Rule(reduce_max),
    ("", "Gemm"): Rule(gemm, inputs=(0, 1, 2)), ("", "MatMul"): Rule(matmul, inputs=(0, 1)),
    ("", "Softmax"): Rule(softmax), ("", "LogSoftmax"): Rule(log_softmax),
}
