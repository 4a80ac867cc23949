"""Filters as pictures: one row per filter and one column per input channel (the classic
VGG16 walk-through), or each 3-channel filter as one RGB colour patch.

>>> img = filter_image(model, "block1_conv1", rgb=True)       # doctest: +SKIP
>>> fig = plot_filters(model, "block1_conv1")                 # a matplotlib Figure

Known limits: ``rgb=True`` needs 3 input channels; 4-D+ convolutions are refused.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from ..errors import OnnxvizError, UnsupportedModelError
from ..graph.index import META
from .colormaps import colour
from .mosaic import FILTER_CELL_PX, STRIP_PX, check_max, depth_index, depth_note, enlarge, kind, mosaic
from .png import to_figure
from .text import TITLE_PX, font, titled

__all__ = ["filter_image", "plot_filters", "model_channel_order"]


def _filters_of(model_or_filters, layer, channel_order):
    if hasattr(model_or_filters, "filters"):
        model = model_or_filters
        layer_obj = model.layer(0 if layer is None else layer)
        order = channel_order or model_channel_order(model)
        note = " (ConvTranspose: rows are input channels)" if layer_obj.op == "ConvTranspose" else ""
        return model.filters(layer_obj), layer_obj.name, order, note
    filters = np.asarray(model_or_filters, dtype=np.float32)
    if filters.ndim < 3:
        raise OnnxvizError(f"filters must be (O, I, kH, kW); got shape {filters.shape}")
    return filters, str(layer or "filters"), channel_order or "RGB", ""


def filter_image(model_or_filters, layer=None, *, max: int | None = None, rgb: bool = False,
                 channel_order: str | None = None, max_channels: int = 16,
                 cmap: str = "gray", depth: int | None = None) -> Image.Image:
    """The filters of one layer as a PIL image (see :func:`plot_filters`)."""
    filters, name, order, note = _filters_of(model_or_filters, layer, channel_order)
    spatial = filters.ndim - 2
    if spatial not in (1, 2, 3):
        raise UnsupportedModelError(f"layer '{name}' is a {kind(spatial)} convolution (filters "
                                    f"{filters.shape}); onnxviz draws 1-D, 2-D and 3-D convolutions")
    check_max(max)
    # One scale for the whole layer, applied only to the filters drawn: a 256 MB layer is
    # neither copied nor normalised whole (``unit`` below).
    norm = np.asarray(filters, dtype=np.float32)
    lo, hi = norm.min(), norm.max()

    def unit(t):
        return (t - lo) / (hi - lo) if hi > lo else np.zeros_like(t)

    if spatial == 1:    # (O, I, k): each kernel a 1×k strip
        norm = norm[:, :, None, :]
        kernel = f"1-D length {filters.shape[2]}"
    elif spatial == 3:  # (O, I, kD, kH, kW): one depth slice of every kernel
        d = depth_index(depth, filters.shape[2], f"layer '{name}'")
        kernel = f"{'×'.join(map(str, filters.shape[2:]))}, {depth_note(d, filters.shape[2], depth)}"
        norm = norm[:, :, d]
    else:
        kernel = f"{filters.shape[2]}×{filters.shape[3]}"
    if depth is not None and spatial != 3:
        raise OnnxvizError(f"depth= is for 3-D convolutions; layer '{name}' is {kind(spatial)}")
    o, i, kh, kw = norm.shape

    def grow(tiles):
        tiles = enlarge(tiles, FILTER_CELL_PX)
        if spatial == 1 and tiles.shape[1] < STRIP_PX:  # a strip thick enough to see
            tiles = tiles.repeat(math.ceil(STRIP_PX / tiles.shape[1]), axis=1)
        return tiles

    if rgb:
        if i != 3:
            raise OnnxvizError(f"rgb=True needs filters with 3 input channels; layer '{name}' has {i}")
        n = min(o, max or 64)
        tiles = unit(norm[:n]).transpose(0, 2, 3, 1)
        if order.upper() == "BGR":
            tiles = tiles[..., ::-1]
        tiles = grow((tiles * 255 + 0.5).astype(np.uint8))
        body = mosaic(tiles, gap=3, fill=255)
        title = f"{name}: first {n} of {o} filters {kernel}, as RGB colour{note}"
        return titled(body, title)[0]
    n, c = min(o, max or 16), min(i, max_channels)
    tiles = grow(unit(norm[:n, :c]).reshape(n * c, kh, kw))
    body = colour(mosaic(tiles, cols=c, gap=3), cmap)
    th, tw = tiles.shape[1:3]
    left, top_extra = 34, 18
    title = (f"{name}: first {n} of {o} filters (rows) × {c} of {i} input channels, "
             f"{kernel}, one scale{note}")
    img, draw = titled(body, title, left=left, top_extra=top_extra)
    face = font(11)
    names = list(order.upper()) if c == 3 and len(order) == 3 else [str(k) for k in range(c)]
    for k in range(c):
        draw.text((left + k * (tw + 3) + tw / 2, TITLE_PX + 9), names[k], fill=(60, 60, 60),
                  font=face, anchor="mm")
    for k in range(n):
        draw.text((left - 6, TITLE_PX + top_extra + k * (th + 3) + th / 2), str(k),
                  fill=(60, 60, 60), font=face, anchor="rm")
    return img


def model_channel_order(model) -> str:
    """``RGB`` or ``BGR``: the order the model's first conv sees (metadata, else from the preset)."""
    order = model.metadata.get(META["channel_order"], "").upper()
    if order in ("RGB", "BGR"):
        return order
    return "BGR" if model.metadata.get(META["preprocess"]) == "caffe" else "RGB"


def plot_filters(model_or_filters, layer=None, *, max: int | None = None, rgb: bool = False,
                 channel_order: str | None = None, max_channels: int = 16, cmap: str = "gray",
                 depth: int | None = None):
    """The filters of one layer as a matplotlib ``Figure``.

    Grey (default): the first ``max`` filters (16), one row each, one column per input
    channel (the first ``max_channels``), normalised min–max over the whole layer, as in the
    classic VGG16 walk-through. ``rgb=True``: each 3-channel filter as one colour image
    (the first ``max``, default 64), in true RGB order even when the model sees BGR (caffe).
    ``model_or_filters``: an :class:`onnxviz.Model` (``layer`` names the layer, default the
    first) or a ``(O, I, kH, kW)`` array. 1-D filters ``(O, I, k)`` are drawn the same way,
    each kernel a ``1×k`` strip; 3-D filters ``(O, I, kD, kH, kW)`` as their depth slice
    ``depth`` (default the middle one, ``kD // 2``), named in the title.
    """
    return to_figure(filter_image(model_or_filters, layer, max=max, rgb=rgb,
                                  channel_order=channel_order, max_channels=max_channels, cmap=cmap,
                                  depth=depth))

