"""Gradients of a model's outputs or activations, by onnxruntime alone: the one entry point.

:func:`gradients` builds the backward graph (:mod:`onnxviz.graph.backward`), runs forward and
backward in ONE onnxruntime session (cached on the model, like the feature-map sessions),
batch by batch, after the memory guard has sized the backward graph.

>>> import onnxviz
>>> from onnxviz.explain.gradients import Channel, Score, gradients
>>> m = onnxviz.load("models/demo.onnx")                                    # doctest: +SKIP
>>> values, grads = gradients(m, "photo.jpg", Score(3))                     # doctest: +SKIP
>>> grads["input_image"].shape                                              # doctest: +SKIP
(1, 64, 64, 3)
>>> values, grads, acts = gradients(m, x, Score([3, 5]), wrt="block3_conv2",
...                                 return_activations=True)                # doctest: +SKIP

The objective is a :class:`Score` (a class score: the logits, before a final Softmax), a
:class:`Channel` (the mean of one channel of a layer's feature map, optionally away from a
border), or a list of them (their sum; each has a ``weight``). ``index`` and ``weight`` take
one value for every batch item or one per item (filter k on image k). ``wrt`` is the input
(default), a layer (its feature map), any tensor name, or a list of them. Gradients come back
float32, in each tensor's own layout and scale (the input's: NHWC for tf2onnx models).

Quantized (QDQ) models: the gradient passes straight through QuantizeLinear/DequantizeLinear,
and an :class:`~onnxviz.OnnxvizWarning` says so.

Known limits: gradients w.r.t. the model's other inputs are not offered (``feeds=`` gives
their values); the backward graph is built for one input size (a new size builds a new one).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import onnx

from .. import preprocess as prep
from .. import runtime
from ..budget import estimate, memory_budget
from ..errors import (LayerError, OnnxvizError, OnnxvizWarning, ResourceError, UnsupportedModelError,
                      format_bytes, format_shape)
from ..features import _NP_TYPES, _input_size, _other_feeds, _ready_tensor, resolve_preset
from ..graph.backward import Term, build
from ..graph.index import Index
from ..graph.rewrite import sub_model
from ..graph.score import class_score_tensor
from ..model import cached_shapes

__all__ = ["Score", "Channel", "gradients", "input_tensor", "score_tensor", "GradientRunner", "runner", "cached"]


@dataclass(frozen=True)
class Score:
    """The value of ``tensor`` (default: the class scores) at ``index`` (a class), per item.

    A tensor of more than two dims is read flattened per item: ``index`` counts ``C·H·W``.
    """

    index: object
    tensor: str | None = None
    weight: object = 1.0


@dataclass(frozen=True)
class Channel:
    """The mean of channel ``index`` of ``layer``'s feature map (or a tensor), ``border``
    pixels left out on each side (the Keras example's objective: border 2)."""

    layer: object
    index: object
    border: int = 0
    weight: object = 1.0


def score_tensor(model) -> str:
    """The class-score tensor: the first output, or the logits before its final Softmax."""
    return class_score_tensor(model._index, [o.name for o in model.proto.graph.output])


def _tensor_of(model, key) -> str:
    """A layer key → its feature map; a tensor name (or the input's) → itself."""
    graph = model.proto.graph
    if isinstance(key, str) and (key in model._index.producers or key in {i.name for i in graph.input}):
        layer = model._by_key.get(key)
        return layer.tensor if layer is not None and key in (layer.name, layer.node) else key
    try:
        return model.layer(key).tensor
    except LayerError:
        raise LayerError(f"no layer or tensor '{key}'; layers are: "
                         f"{', '.join(l.name for l in model.layers[:40])}"
                         f"{', …' if len(model.layers) > 40 else ''} (or give any tensor name)") from None


def input_tensor(model, images, preprocess=None, size=None) -> np.ndarray:
    """Images (preprocessed as :func:`onnxviz.features.feature_maps` does) or a ready tensor."""
    inp = model.input
    if inp is None or _NP_TYPES.get(inp.elem_type) is None:
        raise UnsupportedModelError(f"'{model.path}' has no float input to differentiate with respect to")
    rank = len(inp.shape)
    if isinstance(images, np.ndarray) and images.ndim == rank:
        if preprocess is not None or size is not None:
            raise OnnxvizError(f"an input array of shape {tuple(images.shape)} is fed to '{inp.name}' as is; "
                               "preprocess= and size= apply to images only (drop them)")
        return _ready_tensor(model, images)
    if rank != 4:
        raise OnnxvizError(f"the model input '{inp.name}' has shape {list(inp.shape)} and cannot take an "
                           "image; pass a numpy array of that shape instead")
    c_dim = inp.shape[3] if inp.layout == "NHWC" else inp.shape[1]
    return prep.to_tensor(images, size=_input_size(model, size), layout=inp.layout,
                          preset=resolve_preset(model, preprocess),
                          channels=c_dim if isinstance(c_dim, int) and c_dim > 0 else 3,
                          dtype=_NP_TYPES[inp.elem_type])


def _probe(model, shape: tuple, others: dict):
    """The ``probe`` of :func:`onnxviz.graph.backward.build`: run the model for tensors onnx
    cannot type, at batch 1 and 2 (dims that change are the batch: symbolic ``N``)."""
    def probe(names):
        sub = sub_model(model.proto, names)
        sess = runtime.session(sub, model.base_dir)
        inp = model.input
        fixed = inp.shape[0] if inp.shape and isinstance(inp.shape[0], int) and inp.shape[0] > 0 else 0
        runs = []
        for n in ([fixed] if fixed else [1, 2]):
            x = np.random.default_rng(0).random((n,) + tuple(shape[1:])).astype(_NP_TYPES[inp.elem_type])
            feeds = {i.name: x if i.name == inp.name else others[i.name] for i in sess.get_inputs()}
            runs.append(runtime.run(sess, feeds, list(names)))
        types = {}
        for k, name in enumerate(names):
            a = runs[0][k]
            dims = tuple("N" if len(runs) > 1 and len(runs[1][k].shape) == a.ndim and runs[1][k].shape[i] != d
                         else int(d) for i, d in enumerate(a.shape))
            types[name] = (dims, onnx.helper.np_dtype_to_tensor_dtype(a.dtype))
        return types
    return probe


class _Budgeted:
    """The backward graph as :func:`onnxviz.budget.estimate` reads a model."""

    def __init__(self, proto, model):
        self.proto, self.input, self._index = proto, model.input, Index(proto.graph, model.base_dir)
        self._shape_cache: dict = {}

    def shapes(self, feeds: dict | None = None):
        return cached_shapes(self.proto, self._shape_cache, feeds)


class GradientRunner:
    """One built backward graph and its session: ``run(x, seeds)`` → (values, grads, fetched)."""

    def __init__(self, model, terms: tuple, wrt: tuple, shape: tuple, *, guided: bool = False,
                 fetch: tuple = (), others: dict | None = None, shared_ties: bool = False):
        inp = model.input
        pinned = {inp.name: ("N",) + tuple(shape[1:])}
        self.graph = build(model.proto, terms, list(wrt), shapes=pinned, fetch=fetch, guided=guided,
                           shared_ties=shared_ties,
                           base_dir=model.base_dir, probe=_probe(model, shape, others or {}))
        self.model, self.terms, self.wrt, self.fetch = model, terms, wrt, fetch
        self.session = runtime.session(self.graph.model, model.base_dir)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.dtype = _NP_TYPES[inp.elem_type]
        self._budgeted = _Budgeted(self.graph.model, model)  # estimate() caches its shapes on it
        self._forward = None  # the forward-only session of values(), made on first use

    def seed_dtype(self, k: int):
        elem = next(i for i in self.graph.model.graph.input if i.name == self.graph.seeds[k]).type.tensor_type.elem_type
        return onnx.helper.tensor_dtype_to_np_dtype(elem)

    def batch_for(self, shape: tuple, batch: int, max_bytes) -> int:
        """The largest batch ≤ ``batch`` whose run fits the memory budget (halving); refused at 1."""
        limit = memory_budget(max_bytes)
        outputs = [self.graph.objective, *self.graph.grads.values(), *self.fetch]
        probe = self._budgeted
        seeds = {s: np.zeros((1, n or 1), self.seed_dtype(k)) for k, (s, n) in
                 enumerate(zip(self.graph.seeds, self.graph.sizes))}
        if limit is None:  # max_bytes="off": nothing is checked
            return batch
        while True:
            est = estimate(probe, outputs, (batch,) + tuple(shape[1:]), seeds)
            if est["total"] is None:
                name, node = est["unsized"][0]
                raise ResourceError(
                    f"the gradient's tensors cannot be sized at input {format_shape(shape[1:])}: tensor '{name}'"
                    f"{f' of op {node.op_type}' if node is not None else ''} has no inferable shape, so the run "
                    f"cannot be checked against the budget of {format_bytes(limit)}: run it unchecked with "
                    "max_bytes='off', --max-memory off or ONNXVIZ_MAX_BYTES=off")
            if est["total"] <= limit:
                return batch
            if batch == 1:
                raise ResourceError(
                    f"one gradient would need {format_bytes(est['total'])} at input {format_shape(shape[1:])} "
                    f"(forward and backward tensors held at the same time {format_bytes(est['work'])}); the "
                    f"budget is {format_bytes(limit)}: use a smaller input size, or raise it with max_bytes=, "
                    "--max-memory or ONNXVIZ_MAX_BYTES")
            batch = max(1, batch // 2)

    def values(self, x: np.ndarray, seeds: list, others: dict | None = None) -> list:
        """The value of each term at ``x``, without the gradient: a session of the graph pruned to
        the forward (patterns' final objective: a whole gradient run costs 2.2× as much)."""
        g = self.graph
        if self._forward is None:
            self._forward = runtime.session(sub_model(g.model, list(g.values)), self.model.base_dir)
        inputs = {i.name for i in self._forward.get_inputs()}
        feeds = {self.model.input.name: x, **dict(zip(g.seeds, seeds)), **(others or {})}
        return runtime.run(self._forward, {k: v for k, v in feeds.items() if k in inputs}, list(g.values))

    def run(self, x: np.ndarray, seeds: list, others: dict | None = None, terms: bool = False) -> tuple:
        """One session run: objective values (N,), [grad per wrt], [fetched] (and with ``terms``,
        [value per term]); in the model's type."""
        g = self.graph
        feeds = {self.model.input.name: x, **{s: v for s, v in zip(g.seeds, seeds)},
                 **{k: v for k, v in (others or {}).items() if k in self.inputs}}
        own = [v for v in g.values if v != g.objective] if terms else []  # one term: its value is the objective
        out = runtime.run(self.session, {k: v for k, v in feeds.items() if k in self.inputs},
                          [g.objective, *g.grads.values(), *self.fetch, *own])
        k, f = len(g.grads), len(self.fetch)
        result = (out[0], out[1:1 + k], out[1 + k:1 + k + f])
        return result + ((out[1 + k + f:] or [out[0]]),) if terms else result


def cached(model, key, make):
    """``model._sessions[key]``, made by ``make()`` the first time (a small cache, as the
    feature-map sessions': a session holds its weights in memory)."""
    found = model._sessions.get(key)
    if found is None:
        found = make()
        if len(model._sessions) >= 8:
            model._sessions.pop(next(iter(model._sessions)))
        model._sessions[key] = found
    return found


def runner(model, terms: tuple, wrt: tuple, shape: tuple, *, guided=False, fetch=(), others=None,
           shared_ties=False) -> GradientRunner:
    """The cached :class:`GradientRunner` for this objective structure, wrt and input shape
    (``shared_ties``: see :mod:`onnxviz.graph.backward`)."""
    return cached(model, ("gradients", terms, wrt, tuple(shape[1:]), guided, fetch, shared_ties),
                  lambda: GradientRunner(model, terms, wrt, shape, guided=guided, fetch=fetch, others=others,
                                         shared_ties=shared_ties))


def _per_item(value, n: int, what: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim == 0:
        return np.full(n, arr.item())
    if arr.shape != (n,):
        raise OnnxvizError(f"{what} has {arr.size} values for {n} images; give one, or one per image")
    return arr


def _terms(model, objective, n: int) -> tuple[list, list]:
    """``(graph terms, [(term index, classes/channels per item, weights per item)])``."""
    parts = list(objective) if isinstance(objective, (list, tuple)) else [objective]
    if not parts:
        raise OnnxvizError("the objective is empty; give a Score, a Channel or a list of them")
    terms, picks = [], []
    for part in parts:
        if isinstance(part, Score):
            term = Term("score", score_tensor(model) if part.tensor is None else _tensor_of(model, part.tensor))
        elif isinstance(part, Channel):
            term = Term("channel", _tensor_of(model, part.layer), int(part.border))
        else:
            raise OnnxvizError(f"an objective term must be a Score or a Channel, not {type(part).__name__}")
        if term not in terms:
            terms.append(term)
        index = _per_item(part.index, n, "the class or channel index")
        if not np.issubdtype(index.dtype, np.integer):
            raise OnnxvizError(f"a class or channel index must be a whole number, not {part.index!r}")
        picks.append((terms.index(term), index.astype(np.int64), _per_item(part.weight, n, "the weight").astype(float),
                      part))
    return terms, picks


def _seeds(run: GradientRunner, picks, n: int) -> list:
    g = run.graph
    seeds = [np.zeros((n, size or 0), run.seed_dtype(k)) for k, size in enumerate(g.sizes)]
    for k, index, weight, part in picks:
        size = g.sizes[k]
        if size is None:
            raise UnsupportedModelError(f"the size of the objective tensor '{run.terms[k].tensor}' is unknown")
        bad = index[(index < 0) | (index >= size)]
        if bad.size:
            what, name = (("class", "classes") if isinstance(part, Score) else ("channel", "channels"))
            owner = (f"layer '{part.layer}'" if isinstance(part, Channel) else f"'{run.terms[k].tensor}'")
            raise LayerError(f"{what} {int(bad[0])} is out of range: {owner} has {size} {name} (0–{size - 1})")
        np.add.at(seeds[k], (np.arange(n), index), weight)
    return seeds


def gradients(model, x, objective, wrt=None, *, guided: bool = False, batch: int = 16, preprocess=None,
              size=None, feeds=None, max_bytes=None, progress=None, return_activations: bool = False):
    """``(objective values (N,), {wrt key: gradient})`` (and ``{wrt key: activation}`` with
    ``return_activations``): float32, each in its tensor's own layout and scale.

    ``x``: images (a path, PIL image, array or a list) or a ready input tensor; ``objective``:
    a :class:`Score`, a :class:`Channel` or a list of them (summed); ``wrt``: ``None`` (the
    input), a layer key, a tensor name, or a list; ``guided``: guided-backprop ReLUs;
    ``batch``: images per session run (halved until the memory budget ``max_bytes`` allows);
    ``progress``: ``callback(images done)``.
    """
    xt = input_tensor(model, x, preprocess, size)
    n = len(xt)
    keys = [model.input.name] if wrt is None else ([wrt] if isinstance(wrt, (str, int)) else list(wrt))
    resolved = {k: model.input.name if k == model.input.name else _tensor_of(model, k) for k in keys}
    tensors = tuple(dict.fromkeys(resolved.values()))
    terms, picks = _terms(model, objective, n)
    others = _other_feeds(model, feeds)
    run = runner(model, tuple(terms), tensors, xt.shape, guided=guided,
                 fetch=tensors if return_activations else (), others=others)
    if run.graph.quantized:
        warnings.warn("the model is quantized (QDQ): gradients pass straight through its QuantizeLinear/"
                      "DequantizeLinear nodes (the rounding has no gradient; values outside a QuantizeLinear's "
                      "range pass none)", OnnxvizWarning, stacklevel=2)
    seeds = _seeds(run, picks, n)
    inp = model.input
    fixed = inp.shape[0] if inp.shape and isinstance(inp.shape[0], int) and inp.shape[0] > 0 else 0
    step = fixed or run.batch_for(xt.shape, min(max(1, int(batch)), n), max_bytes)
    values, grads, acts = [], [], []
    for start in range(0, n, step):
        part = xt[start:start + step]
        pad = step - len(part) if fixed else 0
        chunk = [s[start:start + step] for s in seeds]
        if pad:  # a fixed batch size: fill the last chunk, drop the filler after
            part = np.concatenate([part, np.zeros((pad,) + part.shape[1:], part.dtype)])
            chunk = [np.concatenate([s, np.zeros((pad,) + s.shape[1:], s.dtype)]) for s in chunk]
        v, g, a = run.run(part, chunk, others)
        keep = len(part) - pad
        values.append(v[:keep])
        grads.append([t[:keep] for t in g])
        acts.append([t[:keep] for t in a])
        if progress is not None:
            progress(min(start + step, n))
    def gather(parts) -> dict:
        by_tensor = {t: np.concatenate([c[i] for c in parts]).astype(np.float32) for i, t in enumerate(tensors)}
        return {k: by_tensor[t] for k, t in resolved.items()}

    out = (np.concatenate(values).astype(np.float32), gather(grads))
    return out + (gather(acts),) if return_activations else out
