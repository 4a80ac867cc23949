"""Where the model looks: class activation maps, one entry point for every method.

>>> import onnxviz
>>> m = onnxviz.load("models/demo.onnx")                                      # doctest: +SKIP
>>> c = onnxviz.cam(m, "models/demo_sample.png", method="grad", labels="models/demo_labels.txt")  # doctest: +SKIP
>>> c.heatmap.shape, c.raw.shape, c.weights.shape, c.target, c.names         # doctest: +SKIP
((1, 64, 64), (1, 8, 8), (1, 64), array([6]), ('red_shape',))
>>> c                      # in a notebook: the heatmap over the image, titled   # doctest: +SKIP

The methods, one small file each over :mod:`.base`, with pytorch-grad-cam 1.5.7's formulas
(its results are matched in ``tests/test_cam_torch.py``):

===============  ===============  ========================================================
``method``       paper            what runs
===============  ===============  ========================================================
``auto``         (the default)    Grad-CAM, else AblationCAM where no gradient can be built
``eigen``        EigenCAM         one forward run to the layer, an SVD per image; no class
``score``        ScoreCAM         one forward run per channel (the masked inputs, batched)
``ablation``     AblationCAM      one forward run, then the graph after the layer per channel
``grad``         Grad-CAM         one session: forward and backward (:func:`onnxviz.gradients`)
``grad++``       Grad-CAM++       the same
``xgrad``        XGradCAM         the same
``layer``        LayerCAM         the same
``hires``        HiResCAM         the same
``guided-grad``  Guided Grad-CAM  Grad-CAM, and guided backprop (``saliency(method="guided")``)
===============  ===============  ========================================================

Every method but ``eigen`` first runs the model forward for the class scores: ``target=None``
explains each image's top class. The class score is the model output for that class, or the
logit a final ``Softmax`` reads (:mod:`onnxviz.classes`). EigenCAM explains no class (its map
is the same for every class): it runs the model only up to the layer, its ``target`` is -1
and its ``score`` NaN, and a ``target`` given to it is refused.

``layer``: a conv layer as everywhere (its feature map: index, name, ONNX name), or any
tensor name of the graph, such as a ResNet block's output after its residual ``Add`` and
``Relu``. A tensor made by ``Transpose(0, 2, 3, 1)`` (tf2onnx's NCHW → NHWC before a
``Flatten``) is taken at that Transpose's input: the same values, channels first. Default: the
last tensor with height and width on the way back from the class scores, before the global
pooling or flatten (VGG: the last pool; ResNet: the last block's output); for a model without
class output, the last conv layer's feature map.

Guided Grad-CAM (``method="guided-grad"``): ``heatmap``, ``raw`` and ``weights`` are
Grad-CAM's, and ``guided`` is guided backprop's gradient at the input times the heatmap (every
input channel), as pytorch-grad-cam's example draws it (``deprocess_image(cam_mask * gb)``).

Known limits: 2-D maps only (a layer's tensor ``(N, C, h, w)``); one layer per map; ScoreCAM
masks the input tensor after preprocessing, as pytorch-grad-cam does.
"""

from __future__ import annotations

import warnings

import numpy as np

from .. import preprocess as prep
from ..classes import class_scores, class_tensors, read_labels
from ..errors import (GradientError, ImageError, LayerError, ModelError, OnnxvizError, OnnxvizWarning,
                      UnsupportedModelError, format_shape)
from ..features import _other_feeds, _ready_tensor, input_tensor, run_tensors
from ..graph.index import node_attr
from .ablation import AblationCAM
from .base import Cam, CamMethod, Context, fit_batch, heatmap, need
from .eigen import EigenCAM
from .gradients import Score, _tensor_of, gradients
from .grad import GradCAM
from .gradpp import GradCAMPlusPlus
from .hires import HiResCAM
from .layer import LayerCAM
from .score import ScoreCAM
from .xgrad import XGradCAM

__all__ = ["cam", "Cam", "METHODS", "default_layer"]

#: ``method=`` → the class that computes it; ``guided-grad`` is Grad-CAM, multiplied after.
METHODS: dict[str, type[CamMethod]] = {
    "eigen": EigenCAM, "score": ScoreCAM, "ablation": AblationCAM, "grad": GradCAM, "grad++": GradCAMPlusPlus,
    "xgrad": XGradCAM, "layer": LayerCAM, "hires": HiResCAM, "guided-grad": GradCAM,
}
#: ``method="auto"`` (the default): Grad-CAM, one forward and backward run for all its maps;
#: where the gradient cannot be built (an op on the path without a backward rule), AblationCAM,
#: which runs forward only (the graph after the layer, once per channel), with a warning saying why.
AUTO, AUTO_FALLBACK = "grad", "ablation"
_OPTIONS = {"batch_size": 32, "top_channels": None, "sign_correction": False}  # option → its default
_GUIDED = "guided-grad"


def _check_options(key: str, method: CamMethod, given: dict) -> None:
    for name, value in given.items():
        if name in method.options or value == _OPTIONS[name]:
            continue
        takers = [k for k, m in METHODS.items() if name in m.options]
        raise OnnxvizError(f"{name}= does not apply to method '{key}' ({method.title}); "
                           f"method{'s' if len(takers) > 1 else ''} {', '.join(repr(t) for t in takers)} "
                           f"take{'' if len(takers) > 1 else 's'} it")
    for name in ("batch_size", "top_channels"):
        value = given[name]
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise OnnxvizError(f"{name} must be a whole number, 1 or more, not {value!r}")


def _is_nhwc_view(node) -> bool:
    return node is not None and node.op_type == "Transpose" and node_attr(node, "perm") == [0, 2, 3, 1]


def _dims(model, shape: tuple, tensor: str):
    """The dims of ``tensor`` at input ``shape`` (batch 1), or ``None`` if no stage sizes them."""
    inp = model.input
    shapes = model.shapes({inp.name: (1,) + tuple(shape[1:])})
    if shapes.get(tensor) is None:
        shapes.size([tensor])
    return shapes.get(tensor)


def _spatial(dims) -> bool:
    return dims is not None and len(dims) == 4 and all(isinstance(d, int) for d in dims[2:]) and dims[2] * dims[3] > 1


def _per_class(dims) -> bool:
    """Whether a tensor of ``dims`` can hold one score per class and image (unknown: it can)."""
    if dims is None:
        return True
    dims = list(dims)
    while len(dims) > 2 and dims[-1] == 1:
        dims.pop()
    return len(dims) == 2


def default_layer(model, shape: tuple | None = None) -> str:
    """The tensor :func:`cam` explains when no layer is given (see the module), at input
    ``shape`` (default: the model's image size)."""
    inp = model.input
    if shape is None:
        h, w = inp.size
        shape = (1, h, w, 3) if inp.layout == "NHWC" else (1, 3, h, w)
    index = model._index
    for start in class_tensors(model):
        if not _per_class(_dims(model, shape, start)):
            continue
        cur = start
        for _ in range(256):
            node = index.producers.get(cur)
            if not _is_nhwc_view(node) and _spatial(_dims(model, shape, cur)):
                return cur
            if node is None:
                break
            cur = next((i for i in node.input if i and not index.is_constant(i)), "")
        break
    return model.layers[-1].tensor


def _layer_tensor(model, layer, shape: tuple) -> str:
    """``layer`` → the tensor to explain, its height and width checked where shapes are known."""
    if layer is None:
        return default_layer(model, shape)
    tensor = _tensor_of(model, layer)
    if tensor in {i.name for i in model._index.inputs}:
        raise LayerError(f"'{layer}' is an input of the model; a CAM is a map inside the network, such as "
                         f"'{default_layer(model, shape)}' (the default)")
    node = model._index.producers.get(tensor)
    if _is_nhwc_view(node):
        tensor = node.input[0]
    dims = _dims(model, shape, tensor)
    if dims is not None and not _spatial(dims):
        _no_extent(model, layer, tensor, dims[1:], shape)
    return tensor


def _no_extent(model, layer, tensor: str, dims, shape) -> None:
    named = f"'{layer}'" + (f" (tensor '{tensor}')" if str(layer) != tensor else "")
    why = ("no height and width are left (global pooling or a flatten comes before it)" if len(dims) < 3
           or (len(dims) == 3 and all(isinstance(d, int) for d in dims[1:]) and dims[1] * dims[2] == 1)
           else "a CAM needs a (C, H, W) map per image")
    raise LayerError(f"layer {named} is {format_shape(dims) or 'a scalar'} per image: {why}; give a layer "
                     f"with a spatial map, such as '{default_layer(model, shape)}' (the default)")


def _input(model, images, preprocess, size) -> tuple[np.ndarray, np.ndarray | None]:
    """``(input tensor, the images at the input size as (N, H, W, 3) uint8, or None)``."""
    inp = model.input
    if inp is None:
        raise ModelError(f"'{model.path}' has no graph input to feed an image to")
    if isinstance(images, np.ndarray) and images.ndim == len(inp.shape):
        if preprocess is not None or size is not None:
            raise ImageError(f"an input array of shape {tuple(images.shape)} is fed to '{inp.name}' as is; "
                             "preprocess= and size= apply to images only (drop them)")
        x = _ready_tensor(model, images)
        return x, _picture(x, inp.layout)
    x = input_tensor(model, images, preprocess=preprocess, size=size)
    hw = x.shape[1:3] if inp.layout == "NHWC" else x.shape[2:4]
    return x, prep.to_tensor(images, size=hw, layout="NHWC", preset="raw").astype(np.uint8)


def _picture(x: np.ndarray, layout: str) -> np.ndarray | None:
    """A ready tensor as pictures to draw over: each image min–max scaled, grey or 3 channels."""
    if x.ndim != 4:
        return None
    t = np.asarray(x if layout == "NHWC" else x.transpose(0, 2, 3, 1), np.float32)
    if t.shape[3] not in (1, 3):
        return None
    low = t.min(axis=(1, 2, 3), keepdims=True)
    span = t.max(axis=(1, 2, 3), keepdims=True) - low
    t = np.divide(t - low, span, out=np.zeros_like(t), where=span > 0)
    return np.repeat((t * 255 + 0.5).astype(np.uint8), 3 // t.shape[3], axis=3)


def _forward(model, x: np.ndarray, tensors: tuple, feeds: dict, max_bytes) -> list:
    """The values of ``tensors`` for ``x``, in as many runs as the memory budget asks."""
    step = fit_batch("forward", len(x), lambda b: need(model, tensors, (b,) + x.shape[1:], feeds), max_bytes)
    parts = [run_tensors(model, x[lo:lo + step], tensors, feeds, fast=True) for lo in range(0, len(x), step)]
    return [np.concatenate([p[k] for p in parts]) for k in range(len(tensors))]


class _NoClass(UnsupportedModelError):
    """A method that explains a class score, on a model without one; ``reason``: why not."""

    def __init__(self, key: str, title: str, reason: str):
        super().__init__(f"method '{key}' ({title}) explains a class score, and {reason}; "
                         "EigenCAM (method 'eigen') needs none")
        self.reason = reason


def _scores(model, values: dict, key: str, method: CamMethod):
    """``(scores (N, K), ClassOutput)``; without a class output, the method says why it needs one."""
    try:
        return class_scores(model, values=values)
    except UnsupportedModelError as e:
        raise _NoClass(key, method.title, str(e)) from None


def _targets(target, scores, n: int) -> np.ndarray:
    if scores is None:  # EigenCAM
        if target is not None:
            raise OnnxvizError(f"target={target!r}: EigenCAM explains no class (its map is the same for every "
                               "class); leave target out")
        return np.full(n, -1, np.int64)
    if target is None:
        return scores.argmax(axis=1).astype(np.int64)
    t = np.asarray(target)
    if t.ndim == 0:
        t = np.full(n, t.item() if t.dtype != object else target)
    if t.shape != (n,):
        raise OnnxvizError(f"target has {t.size} values for {n} images; give one class, or one per image")
    if t.dtype == bool or not np.issubdtype(t.dtype, np.integer):
        raise OnnxvizError(f"a class is a whole number, not {target!r}")
    k = scores.shape[1]
    bad = t[(t < 0) | (t >= k)]
    if bad.size:
        raise OnnxvizError(f"class {int(bad[0])} is out of range: the model scores {k} classes (0–{k - 1})")
    return t.astype(np.int64)


def cam(model, images, method: str = "auto", layer=None, target=None, *, batch_size: int = 32,
        top_channels: int | None = None, sign_correction: bool = False, preprocess=None, size=None,
        labels=None, feeds=None, max_bytes=None, progress=None) -> Cam:
    """The class activation map of ``target`` (a class, one per image, or ``None``: each
    image's top class) at ``layer`` for ``images``, by ``method`` (see the module).

    ``images``: what :func:`onnxviz.features.feature_maps` takes, a ready input tensor
    included; ``batch_size``: masked inputs (``score``), ablated copies (``ablation``) or images
    (gradient methods) per onnxruntime run, halved until a run fits the memory budget
    ``max_bytes``; ``top_channels``: ScoreCAM masks only the K channels of highest variance;
    ``sign_correction``: EigenCAM flips a map whose negative part is the larger; ``labels``:
    a file of class names, one a line (default: the ``onnxviz.labels`` metadata, else the
    indices); ``feeds``: the model's other inputs; ``progress``: ``callback(done, total)`` over
    the runs of ``score`` and ``ablation``. ``method="auto"``: Grad-CAM, else AblationCAM where
    no gradient can be built (:data:`AUTO`); the result's ``method`` says which ran.
    """
    if method == "auto":
        kw = dict(batch_size=batch_size, top_channels=top_channels, sign_correction=sign_correction,
                  preprocess=preprocess, size=size, labels=labels, feeds=feeds, max_bytes=max_bytes,
                  progress=progress)
        try:
            return cam(model, images, AUTO, layer, target, **kw)
        except _NoClass as e:  # no class to explain: AblationCAM cannot either
            raise _NoClass("auto", "Grad-CAM, else AblationCAM", e.reason) from None
        except GradientError as e:  # only the gradient is missing: AblationCAM runs forward
            warnings.warn(f"AblationCAM instead of Grad-CAM (method 'auto'): Grad-CAM needs a gradient, and {e}",
                          OnnxvizWarning, stacklevel=2)
            return cam(model, images, AUTO_FALLBACK, layer, target, **kw)
    if method not in METHODS:
        raise OnnxvizError(f"unknown CAM method '{method}'; methods are: auto, {', '.join(METHODS)}")
    impl = METHODS[method]()
    _check_options(method, impl, {"batch_size": batch_size, "top_channels": top_channels,
                                  "sign_correction": sign_correction})
    x, pictures = _input(model, images, preprocess, size)
    others = _other_feeds(model, feeds)
    tensor = _layer_tensor(model, layer, x.shape)
    ctx, names = _context(model, impl, method, x, tensor, target, labels, others, max_bytes, batch_size)
    if ctx.acts.ndim != 4 or ctx.acts.shape[2] * ctx.acts.shape[3] <= 1:
        _no_extent(model, layer if layer is not None else tensor, tensor, ctx.acts.shape[1:], x.shape)
    ctx.top_channels, ctx.sign_correction, ctx.progress = top_channels, bool(sign_correction), progress
    raw, weights = impl.cam_image(ctx)
    heat = heatmap(raw, ctx.size)
    n = len(x)
    score = (np.full(n, np.nan, np.float32) if ctx.scores is None
             else ctx.scores[np.arange(n), ctx.target].astype(np.float32))
    owner = model._by_key.get(tensor)
    return Cam(heatmap=heat, raw=np.asarray(raw, np.float32), weights=weights, target=ctx.target, score=score,
               layer=tensor, method=method, title="Guided Grad-CAM" if method == _GUIDED else impl.title,
               names=names, images=pictures,
               guided=_guided(model, x, ctx.target, heat, batch_size, max_bytes) if method == _GUIDED else None,
               layer_name=owner.name if owner is not None and owner.tensor == tensor else "")


def _context(model, impl: CamMethod, key: str, x, tensor: str, target, labels, feeds: dict, max_bytes,
             batch_size: int) -> tuple[Context, tuple]:
    """One forward run (the class scores, and the layer's activations for a forward method),
    the targets and their names, and for a gradient method ``∂S/∂A`` (:func:`onnxviz.gradients`)."""
    classes = class_tensors(model) if impl.needs_class else ()  # EigenCAM: no class, no classifier run
    wanted = tuple(dict.fromkeys(classes if impl.uses_gradients else (tensor, *classes)))
    values = dict(zip(wanted, _forward(model, x, wanted, feeds, max_bytes)))
    scores, out = _scores(model, {c: values[c] for c in classes}, key, impl) if classes else (None, None)
    targets = _targets(target, scores, len(x))
    names = _names(model, labels, scores, targets)
    grads, act_dtype = None, np.float32
    if impl.uses_gradients:
        _, g, a = gradients(model, x, Score(targets, tensor=out.tensor), wrt=tensor, batch=batch_size,
                            feeds=feeds or None, max_bytes=max_bytes, return_activations=True)
        acts, grads = a[tensor], g[tensor]
    else:
        act_dtype = values[tensor].dtype
        acts = np.asarray(values[tensor], np.float32)
    hw = tuple(x.shape[1:3] if model.input.layout == "NHWC" else x.shape[2:4])
    return Context(model=model, x=x, layer=tensor, acts=acts, size=hw, target=targets, scores=scores,
                   score_tensor=out.tensor if out else None, grads=grads, act_dtype=act_dtype, feeds=feeds,
                   batch_size=int(batch_size), max_bytes=max_bytes), names


def _guided(model, x, targets, heat, batch_size: int, max_bytes) -> np.ndarray:
    """Guided Grad-CAM: guided backprop's gradient at the input, channels last, times the heatmap."""
    from .saliency import saliency

    g = saliency(model, x, targets, "guided", batch=batch_size, max_bytes=max_bytes).values
    g = np.moveaxis(g, 1, -1) if model.input.layout == "NCHW" else g
    return (g * heat[..., None]).astype(np.float32)


def _names(model, labels, scores, targets) -> tuple:
    if scores is None:  # EigenCAM
        if labels is not None:
            raise OnnxvizError("labels name classes, and EigenCAM explains none; leave them out")
        return ("",) * len(targets)
    found = read_labels(model, labels, scores.shape[1])
    return tuple(found[t] if found else str(int(t)) for t in targets)
