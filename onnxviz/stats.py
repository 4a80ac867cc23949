"""Per-layer statistics: filter norms and dead filters, per-channel figures of feature maps,
silent channels and the channels that respond most — the one place :mod:`onnxviz.check`,
the report and ``onnxviz stats`` take them from.

>>> import onnxviz
>>> m = onnxviz.load("vgg16.onnx")                                          # doctest: +SKIP
>>> s = onnxviz.stats(m, ["cat.jpg", "dog.jpg"], layers="block5_*")        # doctest: +SKIP
>>> s.layers["block5_conv3"].norms.shape, s.layers["block5_conv3"].dead.sum()   # doctest: +SKIP
((512,), 0)
>>> s.layers["block5_conv3"].top(3)             # over both images          # doctest: +SKIP
array([311,  47, 150])
>>> s.as_dict(top=3)["layers"][0]["silent"]     # JSON-ready                # doctest: +SKIP
[12, 407]

Without images, :func:`stats` gives the filter statistics only (no model run). The array
functions work on plain arrays:

>>> from onnxviz.stats import channel_stats, top_channels, filter_norms, dead_filters
>>> fm = m.feature_maps(["cat.jpg", "dog.jpg"], layers="block5_conv3")      # doctest: +SKIP
>>> channel_stats(fm["block5_conv3"])["mean"].shape                         # doctest: +SKIP
(2, 512)
>>> top_channels(fm["block5_conv3"], k=3, image=1)                           # doctest: +SKIP
array([311,  47, 150])
>>> dead_filters(filter_norms(m.filters("block1_conv1"))).sum()             # doctest: +SKIP
0

Maps are ``(N, C, …)`` float32 (any number of spatial axes). Per image and channel:

==========  ================================================================
``mean``    the mean over positions
``max``     the maximum over positions
``min``     the minimum over positions (the low end of the channel's colour scale)
``active``  the fraction of positions > 0 (after a ReLU: how often it fires)
==========  ================================================================

A channel's rank for an image is its ``mean`` (ties: the lower channel index first), so a
channel that fires weakly everywhere can outrank one that fires strongly in one place; pass
``by="max"`` for the other view. Over several images (``image=None``) a channel's ``mean``
and ``active`` are averaged over the images (they all have the same positions), its ``max``
is the largest and its ``min`` the smallest.

Filters: the L2 norm of each output channel's weights. A ``Conv``'s filters are
``(O, I/group, k…)``, one row per output channel. A ``ConvTranspose``'s are
``(I, O/group, k…)``: output channel ``o = g·O/group + j`` of group ``g`` is made by the
weights ``[g·I/group:(g+1)·I/group, j]``, and its norm is theirs, so norms are per output
channel there too. A filter is **dead** when its norm is at most :data:`DEAD` times the
layer's largest (all of them when every norm is 0). A channel is **silent** when it is ≤ 0
at every position of every image given (after a ReLU: it never fires).

Known limits: statistics are computed in float64 and returned as float32; NaN maps give NaN
and are never silent; NaN weights make no filter dead. :func:`stats` runs the model once per
image given (a ready input tensor counts as one, whatever its batch), so the maps of one
image at a time are held in memory.
"""

from __future__ import annotations

import os
import sys
import types
from dataclasses import dataclass, field

import numpy as np

from .errors import OnnxvizError, format_shape

__all__ = ["channel_stats", "top_channels", "silent_channels", "filter_norms", "dead_filters",
           "stats", "Stats", "LayerStats", "stats_text", "STATS", "DEAD"]

STATS = ("mean", "max", "min", "active")
DEAD = 1e-3  # a filter whose L2 norm is ≤ this fraction of the layer's largest is dead (near-zero weights)

# how each statistic is pooled over images: means and firing rates averaged, extremes kept
_POOL = {"mean": np.mean, "max": np.max, "min": np.min, "active": np.mean}


# ---------------------------------------------------------------- arrays in, arrays out

def _check(maps) -> np.ndarray:
    maps = np.asarray(maps)
    if maps.ndim < 3 or maps.size == 0:
        raise OnnxvizError(f"channel statistics need maps of shape (N, C, …) with positions; got {maps.shape}")
    return maps


def channel_stats(maps) -> dict[str, np.ndarray]:
    """``{"mean", "max", "min", "active"}``, each float32 ``(N, C)``, for maps ``(N, C, …)``."""
    maps = _check(maps)
    flat = maps.reshape(maps.shape[0], maps.shape[1], -1)
    return {
        "mean": flat.mean(axis=2, dtype=np.float64).astype(np.float32),
        "max": flat.max(axis=2).astype(np.float32),
        "min": flat.min(axis=2).astype(np.float32),
        "active": (flat > 0).mean(axis=2, dtype=np.float64).astype(np.float32),
    }


def _per_channel(maps, image, by: str, stats: dict | None) -> np.ndarray:
    """``by`` per channel, float64 ``(C,)``: for image ``image``, or pooled over all (``None``)."""
    values = (stats or channel_stats(maps))[by]
    if image is None:
        return _POOL[by](values.astype(np.float64), axis=0)
    if not -len(values) <= image < len(values):
        raise OnnxvizError(f"image {image} is out of range; the batch has {len(values)}")
    return values[image].astype(np.float64)


def top_channels(maps, k: int = 8, image: int | None = 0, by: str = "mean", stats: dict | None = None) -> np.ndarray:
    """The ``k`` channels of highest ``by`` (a :data:`STATS` name) for image ``image`` (``None``:
    over all images), best first.

    ``stats``: :func:`channel_stats` of ``maps`` if already computed (then ``maps`` may be ``None``).
    """
    if by not in STATS:
        raise OnnxvizError(f"unknown statistic '{by}'; statistics are: {', '.join(STATS)}")
    order = np.argsort(-_per_channel(maps, image, by, stats), kind="stable")  # ties: lower index first
    return order[:max(0, int(k))]


def silent_channels(maps, image: int | None = None, stats: dict | None = None) -> np.ndarray:
    """Boolean ``(C,)``: the channels ≤ 0 at every position of every image (of image ``image``)."""
    return _per_channel(maps, image, "max", stats) <= 0


def filter_norms(weights, group: int = 1, transposed: bool = False) -> np.ndarray:
    """Float32 ``(O,)``: the L2 norm of each output channel's weights.

    ``weights``: ``(O, I/group, k…)`` as :meth:`Model.filters` gives a ``Conv``'s, or with
    ``transposed=True`` a ``ConvTranspose``'s ``(I, O/group, k…)`` (see the module docstring).
    """
    w = np.asarray(weights, np.float64)
    squares = (w * w).reshape(w.shape[0], w.shape[1], -1).sum(axis=2)  # (O, I/g) or (I, O/g)
    if not transposed:
        return np.sqrt(squares.sum(axis=1)).astype(np.float32)
    if group < 1 or w.shape[0] % group:
        raise OnnxvizError(f"ConvTranspose weights {format_shape(w.shape)} cannot be split in {group} groups")
    per_group = squares.reshape(group, w.shape[0] // group, w.shape[1]).sum(axis=1)  # (g, O/g)
    return np.sqrt(per_group.reshape(-1)).astype(np.float32)


def dead_filters(norms, threshold: float = DEAD) -> np.ndarray:
    """Boolean ``(O,)``: the filters whose norm is ≤ ``threshold`` × the layer's largest."""
    norms = np.asarray(norms, np.float64)
    return norms <= threshold * norms.max(initial=0.0)


# ---------------------------------------------------------------- a model's layers

@dataclass
class LayerStats:
    """One layer's statistics: arrays, and :meth:`as_dict` for JSON.

    ``norms`` float32 ``(O,)`` and ``dead`` bool ``(O,)`` per output filter; with images,
    ``channels`` (:func:`channel_stats`: ``{"mean", "max", "min", "active"}`` float32
    ``(N, C)``) and ``silent`` bool ``(C,)``, else ``None``.
    """

    index: int
    name: str
    op: str
    norms: np.ndarray
    dead: np.ndarray
    channels: dict | None = None
    silent: np.ndarray | None = None

    def top(self, k: int = 8, image: int | None = None, by: str = "mean") -> np.ndarray:
        """The ``k`` channels of highest ``by``, for image ``image`` or (``None``) over all images."""
        if self.channels is None:
            raise OnnxvizError(f"layer '{self.name}' has no activation statistics; pass images to stats()")
        return top_channels(None, k, image, by, stats=self.channels)

    def as_dict(self, top: int = 8) -> dict:
        """JSON-ready: norms, dead filters, and with images per-image figures, silent and top channels."""
        d = {"index": self.index, "name": self.name, "op": self.op, "filters": len(self.norms),
             "norm": {"min": float(self.norms.min()), "max": float(self.norms.max()),
                      "mean": float(self.norms.mean(dtype=np.float64))},
             "norms": self.norms.tolist(), "dead": np.flatnonzero(self.dead).tolist()}
        if self.channels is None:
            return d
        mean = _per_channel(None, None, "mean", self.channels)
        return {**d, "channels": self.channels["mean"].shape[1],
                "silent": np.flatnonzero(self.silent).tolist(),
                "top": [{"channel": int(c), "mean": float(mean[c])} for c in self.top(top)],
                "images": [{"top": [{"channel": int(c), "mean": float(self.channels["mean"][i, c])}
                                    for c in self.top(top, i)],
                            **{k: v[i].tolist() for k, v in self.channels.items()}}
                           for i in range(len(self.channels["mean"]))]}


@dataclass
class Stats:
    """What :func:`stats` returns: ``layers`` ``{name: LayerStats}`` in the order asked, and
    the ``images`` fed (their names), empty for filter statistics only."""

    path: str
    images: list = field(default_factory=list)
    layers: dict = field(default_factory=dict)

    def as_dict(self, top: int = 8) -> dict:
        """JSON-ready: the model, the images, the dead-filter threshold and every layer."""
        return {"path": self.path, "images": list(self.images), "dead_threshold": DEAD,
                "layers": [s.as_dict(top) for s in self.layers.values()]}


def _items(images) -> list:
    """What to run one at a time: each of a list, else the one image or tensor given."""
    if images is None:
        return []
    return list(images) if isinstance(images, (list, tuple)) else [images]


def _name(item, k: int) -> str:
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    shape = np.shape(item) if isinstance(item, np.ndarray) else None
    return f"image {k}" + (f" (an array {format_shape(shape)})" if shape else "")


def stats(model, images=None, layers=None, *, preprocess=None, size=None, feeds=None, max_bytes=None,
          names=None, progress=None) -> Stats:
    """Statistics of ``layers`` (keys as :meth:`Model.select`; ``None``: every layer) of ``model``
    (a :class:`Model` or a path): filter norms and dead filters always, and for ``images``
    (what :meth:`Model.feature_maps` takes, or a list of those: each is run on its own) the
    per-channel figures, silent channels and top channels.

    ``names``: what to call the images in the result (default: their paths, else ``image k``);
    ``progress``: called with the count of steps done (one per layer's filters, one per image).
    """
    from .model import Model, load

    if not isinstance(model, Model):
        model = load(model)
    chosen = model.select(layers)
    items = _items(images)
    if names is not None and len(names) != len(items):
        raise OnnxvizError(f"{len(names)} names for {len(items)} images; give one name per image")
    result = Stats(model.path, list(names) if names is not None else [_name(it, k) for k, it in enumerate(items)])
    for done, layer in enumerate(chosen, 1):
        norms = filter_norms(model.filters(layer), layer.group, layer.op == "ConvTranspose")
        result.layers[layer.name] = LayerStats(layer.index, layer.name, layer.op, norms, dead_filters(norms))
        if progress:
            progress(done)
    parts = {layer.name: [] for layer in chosen}
    for k, item in enumerate(items, 1):
        maps = model.feature_maps(item, chosen, preprocess=preprocess, size=size, feeds=feeds,
                                  max_bytes=max_bytes)
        for name, fm in maps.items():
            parts[name].append(channel_stats(fm))
        if progress:
            progress(len(chosen) + k)
    for name, found in parts.items():
        if found:
            channels = {key: np.concatenate([f[key] for f in found]) for key in STATS}
            result.layers[name].channels = channels
            result.layers[name].silent = silent_channels(None, stats=channels)
    return result


# ---------------------------------------------------------------- the table

def _few(mask: np.ndarray, limit: int = 4) -> str:
    """``0``, or ``3 (7, 12, 40)``, or ``40 (1, 3, 5, 9, …)``: a count and the first channels."""
    found = np.flatnonzero(mask)
    if not len(found):
        return "0"
    shown = ", ".join(str(c) for c in found[:limit]) + (", …" if len(found) > limit else "")
    return f"{len(found)} ({shown})"


def stats_text(result: Stats, top: int = 5) -> str:
    """The table ``onnxviz stats`` prints: one row per layer."""
    n = len(result.images)
    lines = [f"model   {result.path}",
             f"images  {', '.join(result.images)}" if n else "images  none (filter statistics only)",
             f"dead filters: L2 norm ≤ {DEAD:g} × the layer's largest"
             + ("; silent channels: ≤ 0 at every position of " + ("the image" if n == 1 else f"all {n} images")
                if n else "")]
    head = ("#", "layer", "op", "filters", "L2 norm [min, max]", "dead")
    if n:
        head += ("silent", f"top {top} channels by mean" + (f" over the {n} images" if n > 1 else ""))
    rows = [head]
    for s in result.layers.values():
        row = (str(s.index), s.name, s.op, str(len(s.norms)),
               f"[{s.norms.min():.3g}, {s.norms.max():.3g}]", _few(s.dead))
        if n:
            mean = _per_channel(None, None, "mean", s.channels)
            row += (_few(s.silent), ", ".join(f"{c} ({mean[c]:.3g})" for c in s.top(top)))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


class _CallableModule(types.ModuleType):
    """``onnxviz.stats`` is both this module and :func:`stats`: calling the module calls the function."""

    def __call__(self, *args, **kwargs):
        return stats(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
