"""Is my model supported? Run every conv layer through filters and feature maps, and say.

:func:`check` takes each layer through everything onnxviz does with it — read and dequantize
its filters, draw them, compute its feature map for one input, draw that — and records, per
layer, what it found (shapes, value ranges, near-zero filters, silent channels) or, when a
step fails, the one-line reason. Nothing is written to disk. Near-zero (dead) filters and
silent channels are :mod:`onnxviz.stats`'s: a filter whose L2 norm is at most
:data:`~onnxviz.stats.DEAD` times the layer's largest, a channel ≤ 0 at every position.

>>> import onnxviz
>>> from onnxviz.check import check, report_text
>>> report = check(onnxviz.load("model.onnx"), "photo.jpg")     # doctest: +SKIP
>>> report["supported"], report["layers"][0]["filters"]          # doctest: +SKIP
(13, {'shape': [64, 3, 3, 3], 'min': -0.67, 'max': 0.61, 'near_zero': 0, 'drawn': True})
>>> print(report_text(report))                                   # doctest: +SKIP

Without an input, an image model gets matplotlib's sample photo (``grace_hopper.jpg``) and a
model whose input is not an image (1-D or 3-D convs) a seeded random tensor of its input's
shape (dynamic dims: 1 for the batch, 64 for the others), refused before it is made if no
layer's feature map would fit the memory budget with it; an input whose shape the graph does
not give at all gets no default (pass a ``.npy`` array). Feature maps are computed for all
layers in one run; if that fails, layer by layer, so one unsupported layer does not hide the
others (a 2-channel image input, which onnxviz cannot make images for, fails every layer).

Known limits: "drawn" means the picture was composed in memory (not encoded as PNG); the
check runs the model once per failing layer, which can be slow for big models that fail.
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np

from .errors import ImageError, OnnxvizError, OnnxvizWarning, ResourceError, format_bytes, format_shape
from .model import Model, load
from .stats import dead_filters, filter_norms, silent_channels

__all__ = ["check", "report_text"]

_RANDOM_SIDE = 64  # the size of a dynamic dim in the random tensor for non-image inputs


def _default_input(model: Model, max_bytes=None):
    """(input, description): the sample photo for image models, else a random tensor.

    The random tensor is refused before it is made (:class:`ResourceError`) when even the
    layer that needs the least memory would not fit the budget with it (the estimate of
    :func:`onnxviz.budget.estimate`); an input with no shape at all cannot get one.
    """
    from .budget import estimate, memory_budget

    inp = model.input
    if inp is not None and not inp.shape:
        raise ImageError(f"the model input '{inp.name}' has no shape in the graph (not even a rank), so check "
                         "cannot make a test input for it; pass one as IMAGE: a .npy array of the shape the "
                         "model takes")
    if inp is not None and len(inp.shape) != 4:
        shape = [d if isinstance(d, int) and d > 0 else (1 if k == 0 else _RANDOM_SIDE)
                 for k, d in enumerate(inp.shape)]
        limit = memory_budget(max_bytes)
        needs = [] if limit is None else [(estimate(model, [layer.tensor], tuple(shape))["total"], layer.name)
                                          for layer in model.layers]
        sized = [(need, name) for need, name in needs if need is not None]  # the others: feature_maps says why
        need, layer = min(sized) if sized else (0, "")
        if sized and need > limit:
            size = format_bytes(4 * math.prod(shape))
            raise ResourceError(
                f"check's default input for '{inp.name}' is a random tensor {format_shape(shape)} ({size}), "
                f"and with it even the layer that needs the least memory ('{layer}') would need "
                f"{format_bytes(need)}; the budget is {format_bytes(limit)}: pass a smaller input as IMAGE "
                "(a .npy array), or raise the budget with --max-memory, max_bytes= or ONNXVIZ_MAX_BYTES")
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        return x, f"a random normal tensor {format_shape(shape)} (seed 0)"
    from matplotlib import cbook

    path = str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    return path, f"{os.path.basename(path)} (matplotlib's sample photo)"


def _filters_report(model: Model, layer) -> dict:
    from .render import filter_image

    try:
        w = model.filters(layer)
    except OnnxvizError as e:
        return {"error": f"filters: {e}"}
    info = {"shape": list(w.shape)}
    if not np.isfinite(w).all():
        return {**info, "error": f"filters: {int((~np.isfinite(w)).sum())} weights are NaN or infinite"}
    near_zero = dead_filters(filter_norms(w, layer.group, layer.op == "ConvTranspose"))
    info.update(min=float(w.min()), max=float(w.max()), near_zero=int(near_zero.sum()))
    try:
        filter_image(w, layer.name)
    except OnnxvizError as e:
        return {**info, "error": f"filters cannot be drawn: {e}"}
    return {**info, "drawn": True}


def _maps_report(fm) -> dict:
    from .render import feature_map_image

    if isinstance(fm, str):
        return {"error": fm}
    info = {"shape": list(fm.shape[1:])}
    if not np.isfinite(fm).all():
        return {**info, "error": f"feature map: {int((~np.isfinite(fm)).sum())} values are NaN or infinite"}
    info.update(min=float(fm.min()), max=float(fm.max()), silent=int(silent_channels(fm).sum()))
    try:
        feature_map_image(fm, spatial=fm.ndim - 2)
    except OnnxvizError as e:
        return {**info, "error": f"feature map cannot be drawn: {e}"}
    return {**info, "drawn": True}


def _all_maps(model: Model, source, kwargs) -> dict:
    """``{layer name: array or error text}``: one run for all layers, else one per layer."""
    try:
        return model.feature_maps(source, None, **kwargs)
    except ImageError:  # the input's fault, not the model's: the caller hears it
        raise
    except OnnxvizError:
        pass
    out = {}
    for layer in model.layers:
        try:
            out.update(model.feature_maps(source, [layer], **kwargs))
        except ImageError:
            raise
        except OnnxvizError as e:
            out[layer.name] = f"feature map: {e}"
    return out


def check(model, image=None, *, preprocess: str | None = None, size=None, feeds=None,
          max_bytes=None) -> dict:
    """A JSON-ready report on every layer of ``model`` (a :class:`Model` or a path).

    ``image``: what :meth:`Model.feature_maps` accepts (a path, an array, a ready tensor);
    ``None`` for the default input (see the module docstring). An input that cannot be read
    raises :class:`~onnxviz.errors.ImageError`, as in ``feature_maps``: that is a problem of
    the input, not of the model. ``max_bytes``: the memory budget of ``feature_maps`` (a
    layer over it is reported as such), also applied to the default input before it is made.
    """
    if not isinstance(model, Model):
        model = load(model)
    if image is None:
        image, described = _default_input(model, max_bytes)
    elif isinstance(image, (str, os.PathLike)):
        described = os.fspath(image)
    else:
        described = f"an array {format_shape(np.shape(image))}"
    kwargs = {"preprocess": preprocess, "size": size, "max_bytes": max_bytes, "feeds": feeds}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", OnnxvizWarning)
        maps = _all_maps(model, image, kwargs)
        layers = []
        for layer in model.layers:
            f = _filters_report(model, layer)
            m = _maps_report(maps.get(layer.name, "feature map: not computed"))
            layers.append({"index": layer.index, "name": layer.name, "op": layer.op,
                           "folded": layer.folded, "filters": f, "features": m,
                           "ok": "error" not in f and "error" not in m})
    inp = model.input
    return {
        "path": model.path,
        "input": None if inp is None else {"name": inp.name, "layout": inp.layout, "shape": list(inp.shape)},
        "fed": described,
        "warnings": sorted({str(w.message) for w in caught if issubclass(w.category, OnnxvizWarning)}),
        "layers": layers,
        "supported": sum(l["ok"] for l in layers),
    }


def _cell(part: dict, kind: str) -> str:
    if "error" in part and "shape" not in part:
        return "-"
    text = format_shape(part["shape"])
    if "min" in part:
        text += f" [{part['min']:.3g}, {part['max']:.3g}]"
    count = part.get("near_zero" if kind == "filters" else "silent", 0)
    if count:
        text += f", {count} {'near zero' if kind == 'filters' else 'silent'}"
    return text


def report_text(report: dict) -> str:
    """The table ``onnxviz check`` prints for a :func:`check` report."""
    inp = report["input"]
    lines = [f"model   {report['path']}",
             f"input   {inp['name']} {inp['layout']} {inp['shape']}  fed: {report['fed']}" if inp
             else "input   none"]
    lines += [f"warning {w}" for w in report["warnings"]]
    rows = [("#", "layer", "op", "filters [min, max]", "feature map [min, max]", "status")]
    problems = []
    for l in report["layers"]:
        errors = [p["error"] for p in (l["filters"], l["features"]) if "error" in p]
        rows.append((str(l["index"]), l["name"], l["op"] + (" (BN folded)" if l["folded"] else ""),
                     _cell(l["filters"], "filters"), _cell(l["features"], "features"),
                     "ok" if l["ok"] else "NOT SHOWN"))
        problems += [f"  {l['name']}: {e}" for e in errors]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    if problems:
        lines += ["problems:"] + problems
    n = len(report["layers"])
    lines.append(f"{report['supported']} of {n} layers fully supported"
                 + (" (filters and feature maps computed and drawn)" if report["supported"] == n else ""))
    return "\n".join(lines)
