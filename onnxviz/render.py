"""Arrays to pictures — the only module that draws.

Pictures are composed with numpy (tiles, colour map, gaps) and annotated with Pillow (title,
channel indices), then either written as PNG (:func:`save_png`) or wrapped in a matplotlib
``Figure`` for notebooks (:func:`plot_filters`, :func:`plot_feature_maps`). Both show the
same pixels. Matplotlib's own image pipeline is not used to draw mosaics: for 64 maps of
224×224 it takes ~1 s and ~250 MB to resample an image that needs no resampling.

>>> import onnxviz
>>> m = onnxviz.load("models/demo.onnx")                          # doctest: +SKIP
>>> fig = onnxviz.plot_filters(m, "block1_conv1")                 # grey: filter × input channel
>>> fig = onnxviz.plot_filters(m, "block1_conv1", rgb=True)       # one colour image per filter
>>> fm = m.feature_maps("photo.jpg", layers="block1_conv1")
>>> img = feature_map_image(fm["block1_conv1"], "block1_conv1")  # a PIL image
>>> save_png(img, "maps.png")                                     # atomic write

Known limits: 2-D convolutions only (1-D and 3-D layers raise
:class:`~onnxviz.errors.UnsupportedModelError`); ``rgb=True`` needs 3 input channels.
"""

from __future__ import annotations

import io
import math
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .errors import OnnxvizError, UnsupportedModelError
from .output import write_atomic

__all__ = ["mosaic", "filter_image", "feature_map_image", "plot_filters", "plot_feature_maps",
           "save_png", "to_figure"]

_MIN_TILE_PX = 48          # small maps are enlarged (nearest) to at least this
_FILTER_CELL_PX = 36       # a kernel is drawn this large (3×3 → 12 px per weight)
_BACKGROUND = (255, 255, 255)
_TITLE_PX = 28


# ------------------------------------------------------------------ numpy helpers

def _normalise(x: np.ndarray, axes) -> np.ndarray:
    lo = x.min(axis=axes, keepdims=True)
    span = x.max(axis=axes, keepdims=True) - lo
    return np.divide(x - lo, span, out=np.zeros_like(x), where=span > 0)


def _grid(n: int, cols: int | None = None) -> tuple[int, int]:
    cols = cols or max(1, math.ceil(math.sqrt(n)))
    return math.ceil(n / cols), cols


def mosaic(tiles: np.ndarray, cols: int | None = None, gap: int = 1, fill=np.nan) -> np.ndarray:
    """Tile ``(n, h, w[, k])`` into one ``(rows·(h+gap)−gap, cols·(w+gap)−gap[, k])`` array.

    Cells are filled row by row, ``cols`` per row (default: near-square); gaps and empty
    cells get ``fill``.
    """
    n, h, w = tiles.shape[:3]
    rows, cols = _grid(n, cols)
    extra = tiles.shape[3:]
    padded = np.full((rows * cols, h + gap, w + gap) + extra, fill, tiles.dtype)
    padded[:n, :h, :w] = tiles
    grid = padded.reshape((rows, cols, h + gap, w + gap) + extra).swapaxes(1, 2)
    grid = grid.reshape((rows * (h + gap), cols * (w + gap)) + extra)
    return grid[:rows * (h + gap) - gap, :cols * (w + gap) - gap]


def _enlarge(tiles: np.ndarray, min_px: int) -> np.ndarray:
    """Nearest-neighbour enlargement of ``(n, h, w, …)`` tiles by an integer factor."""
    factor = max(1, math.ceil(min_px / max(tiles.shape[1], tiles.shape[2])))
    if factor == 1:
        return tiles
    return tiles.repeat(factor, axis=1).repeat(factor, axis=2)


_LUTS: dict[str, np.ndarray] = {}


def _lut(cmap: str) -> np.ndarray:
    if cmap not in _LUTS:
        import matplotlib

        try:
            cm = matplotlib.colormaps[cmap]
        except KeyError:
            raise OnnxvizError(f"unknown colour map '{cmap}'; try gray, viridis, magma, inferno") from None
        _LUTS[cmap] = (cm(np.linspace(0.0, 1.0, 256))[:, :3] * 255 + 0.5).astype(np.uint8)
    return _LUTS[cmap]


def _colour(values01: np.ndarray, cmap: str) -> np.ndarray:
    """``[0, 1]`` values (NaN = background) → uint8 RGB through a 256-entry colour map."""
    nan = np.isnan(values01)
    idx = np.clip(np.nan_to_num(values01, nan=0.0) * 255 + 0.5, 0, 255).astype(np.uint8)
    rgb = _lut(cmap)[idx]
    rgb[nan] = _BACKGROUND
    return rgb


# ------------------------------------------------------------------ text

_FONTS: dict[int, ImageFont.ImageFont] = {}


def _font(px: int):
    if px not in _FONTS:
        try:
            import matplotlib

            path = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")
            _FONTS[px] = ImageFont.truetype(path, px)
        except OSError:
            _FONTS[px] = ImageFont.load_default(px)
    return _FONTS[px]


def _titled(body: np.ndarray, title: str, left: int = 0, top_extra: int = 0) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    """Place an RGB ``body`` under a title bar (and after a left margin); return image + drawer."""
    font = _font(13)
    title_w = int(font.getlength(title)) + 16
    h, w = body.shape[:2]
    top = _TITLE_PX + top_extra
    img = Image.new("RGB", (max(w + left, title_w), h + top), _BACKGROUND)
    img.paste(Image.fromarray(body), (left, top))
    draw = ImageDraw.Draw(img)
    draw.text((8, 7), title, fill=(0, 0, 0), font=font)
    return img, draw


# ------------------------------------------------------------------ pictures

def _require_2d(spatial, what: str):
    if len(spatial) != 2:
        kind = {1: "1-D", 3: "3-D"}.get(len(spatial), f"{len(spatial)}-D")
        raise UnsupportedModelError(f"{what} is a {kind} convolution; onnxviz draws 2-D convolutions only")


def _check_max(value):
    if value is not None and value < 1:
        raise OnnxvizError(f"max must be 1 or more, not {value}")


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
                 cmap: str = "gray") -> Image.Image:
    """The filters of one layer as a PIL image (see :func:`plot_filters`)."""
    filters, name, order, note = _filters_of(model_or_filters, layer, channel_order)
    _require_2d(filters.shape[2:], f"layer '{name}'")
    _check_max(max)
    o, i, kh, kw = filters.shape
    norm = _normalise(filters.astype(np.float32), None)  # one scale for the whole layer
    if rgb:
        if i != 3:
            raise OnnxvizError(f"rgb=True needs filters with 3 input channels; layer '{name}' has {i}")
        n = min(o, max or 64)
        tiles = norm[:n].transpose(0, 2, 3, 1)
        if order.upper() == "BGR":
            tiles = tiles[..., ::-1]
        tiles = _enlarge((tiles * 255 + 0.5).astype(np.uint8), _FILTER_CELL_PX)
        body = mosaic(tiles, gap=3, fill=255)
        title = f"{name}: first {n} of {o} filters {kh}×{kw}, as RGB colour{note}"
        return _titled(body, title)[0]
    n, c = min(o, max or 16), min(i, max_channels)
    tiles = _enlarge(norm[:n, :c].reshape(n * c, kh, kw), _FILTER_CELL_PX)
    body = _colour(mosaic(tiles, cols=c, gap=3), cmap)
    th, tw = tiles.shape[1:3]
    left, top_extra = 34, 18
    title = (f"{name}: first {n} of {o} filters (rows) × {c} of {i} input channels, "
             f"{kh}×{kw}, one scale{note}")
    img, draw = _titled(body, title, left=left, top_extra=top_extra)
    font = _font(11)
    names = list(order.upper()) if c == 3 and len(order) == 3 else [str(k) for k in range(c)]
    for k in range(c):
        draw.text((left + k * (tw + 3) + tw / 2, _TITLE_PX + 9), names[k], fill=(60, 60, 60),
                  font=font, anchor="mm")
    for k in range(n):
        draw.text((left - 6, _TITLE_PX + top_extra + k * (th + 3) + th / 2), str(k),
                  fill=(60, 60, 60), font=font, anchor="rm")
    return img


def model_channel_order(model) -> str:
    """``RGB`` or ``BGR``: the order the model's first conv sees (metadata, else from the preset)."""
    from .model import META

    order = model.metadata.get(META["channel_order"], "").upper()
    if order in ("RGB", "BGR"):
        return order
    return "BGR" if model.metadata.get(META["preprocess"]) == "caffe" else "RGB"


def feature_map_image(maps: np.ndarray, name: str = "", *, max: int = 64, shared: bool = False,
                      image: int = 0, cmap: str = "viridis", labels: bool = True) -> Image.Image:
    """The first ``max`` maps of a layer as one near-square mosaic, as a PIL image.

    ``maps``: ``(N, C, H, W)`` (image ``image`` of the batch is drawn) or ``(C, H, W)``. Each
    map is normalised on its own (``shared=True``: one scale for all shown); a constant map
    is drawn at the colour map's low end. Each tile carries its channel index; the title
    gives the layer name and shape.
    """
    maps = np.asarray(maps)
    if maps.ndim == 4:
        if not -maps.shape[0] <= image < maps.shape[0]:
            raise OnnxvizError(f"image {image} is out of range; the batch has {maps.shape[0]}")
        maps = maps[image]
    if maps.ndim != 3:
        raise UnsupportedModelError(
            f"feature maps {name + ' ' if name else ''}have shape {maps.shape}; onnxviz draws "
            "2-D maps (N, C, H, W)")
    _check_max(max)
    c, h, w = maps.shape
    n = min(c, max)
    norm = _normalise(maps[:n].astype(np.float32, copy=False), None if shared else (1, 2))
    idx = (norm * 255 + 0.5).astype(np.uint8)
    tiles = _enlarge(idx, _MIN_TILE_PX)
    th, tw = tiles.shape[1:3]
    body = _lut(cmap)[mosaic(tiles, gap=2, fill=0)]
    body[mosaic(np.zeros((n, th, tw), bool), gap=2, fill=True)] = _BACKGROUND
    scale = "one scale for all" if shared else "each map on its own scale"
    title = f"{name + ': ' if name else ''}{c}×{h}×{w}, first {n} of {c} maps, {scale}"
    img, draw = _titled(body, title)
    if labels:
        font = _font(10 if tw >= 40 else 8)
        cols = _grid(n)[1]
        for k in range(n):
            r, q = divmod(k, cols)
            x, y = q * (tw + 2), _TITLE_PX + r * (th + 2)
            box = draw.textbbox((x + 2, y + 1), str(k), font=font)
            draw.rectangle((box[0] - 1, box[1] - 1, box[2] + 1, box[3] + 1), fill=(0, 0, 0))
            draw.text((x + 2, y + 1), str(k), fill=(255, 255, 255), font=font)
    return img


def to_figure(img: Image.Image, dpi: int = 100):
    """A matplotlib ``Figure`` showing ``img`` pixel for pixel (no pyplot, no window)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(img.width / dpi, img.height / dpi), dpi=dpi)
    fig.figimage(np.asarray(img), xo=0, yo=0, origin="upper")
    fig.onnxviz_image = img  # save_png writes these pixels directly
    return fig


def plot_filters(model_or_filters, layer=None, *, max: int | None = None, rgb: bool = False,
                 channel_order: str | None = None, max_channels: int = 16, cmap: str = "gray"):
    """The filters of one layer as a matplotlib ``Figure``.

    Grey (default): the first ``max`` filters (16), one row each, one column per input
    channel (the first ``max_channels``), normalised min–max over the whole layer, as in the
    classic VGG16 walk-through. ``rgb=True``: each 3-channel filter as one colour image
    (the first ``max``, default 64), in true RGB order even when the model sees BGR (caffe).
    ``model_or_filters``: an :class:`onnxviz.Model` (``layer`` names the layer, default the
    first) or a ``(O, I, kH, kW)`` array.
    """
    return to_figure(filter_image(model_or_filters, layer, max=max, rgb=rgb,
                                  channel_order=channel_order, max_channels=max_channels, cmap=cmap))


def plot_feature_maps(maps: np.ndarray, name: str = "", *, max: int = 64, shared: bool = False,
                      image: int = 0, cmap: str = "viridis", labels: bool = True):
    """The first ``max`` maps of a layer as a matplotlib ``Figure`` (see :func:`feature_map_image`)."""
    return to_figure(feature_map_image(maps, name, max=max, shared=shared, image=image,
                                       cmap=cmap, labels=labels))


def save_png(picture, path) -> str:
    """Write a PIL image or a ``Figure`` as PNG, atomically; return the path."""
    buf = io.BytesIO()
    img = getattr(picture, "onnxviz_image", picture)
    if isinstance(img, Image.Image):
        img.save(buf, format="PNG", compress_level=3)
    else:
        picture.savefig(buf, format="png")
    return write_atomic(path, buf.getvalue())
