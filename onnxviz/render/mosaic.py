"""Feature maps as pictures: one near-square mosaic of a layer's maps, each on its own
colour scale, its channel index in the corner; and the tiling every picture shares.

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

1-D and 3-D convolutions get a 2-D view. 1-D filters ``(O, I, k)``: the same grid as 2-D
filters, each kernel a ``1×k`` strip. 1-D maps ``(N, C, L)``: one horizontal strip per
channel, stacked top to bottom (pass ``spatial=1``: a 3-D array is otherwise one image's
``(C, H, W)``). 3-D filters and maps: their middle depth slice (``depth=`` picks another),
the slice index in the title.

Known limits: convolutions of 4 or more spatial dims raise
:class:`~onnxviz.errors.UnsupportedModelError`; a 3-D layer shows one depth slice per
picture; ``rgb=True`` needs 3 input channels.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from ..errors import OnnxvizError, ResourceError, UnsupportedModelError
from .colormaps import BACKGROUND, lut
from .png import to_figure
from .text import TITLE_PX, font, titled

__all__ = ["mosaic", "feature_map_image", "plot_feature_maps", "MAX_PIXELS", "label_tiles", "enlarge"]

_MIN_TILE_PX = 48          # small maps are enlarged (nearest) to at least this
FILTER_CELL_PX = 36       # a kernel is drawn this large (3×3 → 12 px per weight)
#: The largest picture drawn, in pixels: Pillow's own decompression-bomb threshold, so that
#: every PNG onnxviz writes can be opened again (and a mosaic stays a few hundred MB at most).
MAX_PIXELS = 89_478_485
STRIP_PX = 12             # a 1-D kernel or map is drawn as a strip this tall
_STRIP_MIN_W_PX = 192      # short 1-D maps are widened (nearest) to at least this
_STRIP_LABEL_PX = 30       # left margin for the channel numbers of 1-D maps



def normalise(x: np.ndarray, axes) -> np.ndarray:
    lo = x.min(axis=axes, keepdims=True)
    span = x.max(axis=axes, keepdims=True) - lo
    return np.divide(x - lo, span, out=np.zeros_like(x), where=span > 0)


def grid(n: int, cols: int | None = None) -> tuple[int, int]:
    cols = cols or max(1, math.ceil(math.sqrt(n)))
    return math.ceil(n / cols), cols


def mosaic(tiles: np.ndarray, cols: int | None = None, gap: int = 1, fill=np.nan) -> np.ndarray:
    """Tile ``(n, h, w[, k])`` into one ``(rows·(h+gap)−gap, cols·(w+gap)−gap[, k])`` array.

    Cells are filled row by row, ``cols`` per row (default: near-square); gaps and empty
    cells get ``fill``.
    """
    n, h, w = tiles.shape[:3]
    check_pixels(n, h, w, gap, cols)
    rows, cols = grid(n, cols)
    extra = tiles.shape[3:]
    padded = np.full((rows * cols, h + gap, w + gap) + extra, fill, tiles.dtype)
    padded[:n, :h, :w] = tiles
    laid = padded.reshape((rows, cols, h + gap, w + gap) + extra).swapaxes(1, 2)
    laid = laid.reshape((rows * (h + gap), cols * (w + gap)) + extra)
    return laid[:rows * (h + gap) - gap, :cols * (w + gap) - gap]


def check_pixels(n: int, h: int, w: int, gap: int, cols: int | None) -> None:
    """Refuse a mosaic over :data:`MAX_PIXELS`, naming the ``max`` that would fit.

    With ``cols`` fixed (a filter grid, 1-D strips) ``max`` counts rows; otherwise tiles.
    """
    def pixels(k: int) -> int:
        r, c = grid(max(k, 1), cols)
        return (r * (h + gap) - gap) * (c * (w + gap) - gap)

    total = pixels(n)
    if total <= MAX_PIXELS:
        return
    lo, hi = 0, (n if cols is None else -(-n // cols))  # largest count that fits, by bisection
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if pixels(mid * (cols or 1)) <= MAX_PIXELS else (lo, mid - 1)
    rows, width = grid(n, cols)
    advice = (f"draw at most {lo} (--max {lo} on the command line, max={lo} in Python)" if lo else
              f"even one tile of {h}×{w} is over it")
    raise ResourceError(
        f"this picture would be {width * (w + gap) - gap}×{rows * (h + gap) - gap} = {total:,} pixels, over "
        f"the limit of {MAX_PIXELS:,} (render.MAX_PIXELS); {advice}")


def paint_gaps(body: np.ndarray, n: int, th: int, tw: int, gap: int, colour, cols: int | None = None) -> None:
    """Paint, in place, the gaps and empty cells of a :func:`mosaic` of ``n`` tiles ``th×tw``.

    The same pixels as ``body[mosaic(zeros((n, th, tw), bool), cols, gap, fill=True)] = colour``,
    by slices instead of a boolean mask (a 64-map VGG16 mosaic: ~2 ms, not ~15 ms).
    """
    rows, cols = grid(n, cols)
    for r in range(1, rows):
        body[r * (th + gap) - gap:r * (th + gap)] = colour
    for q in range(1, cols):
        body[:, q * (tw + gap) - gap:q * (tw + gap)] = colour
    for k in range(n, rows * cols):  # the empty cells of the last row
        r, q = divmod(k, cols)
        body[r * (th + gap):r * (th + gap) + th, q * (tw + gap):q * (tw + gap) + tw] = colour


def enlarge(tiles: np.ndarray, min_px: int) -> np.ndarray:
    """Nearest-neighbour enlargement of ``(n, h, w, …)`` tiles by an integer factor."""
    factor = max(1, math.ceil(min_px / max(tiles.shape[1], tiles.shape[2])))
    if factor == 1:
        return tiles
    return tiles.repeat(factor, axis=1).repeat(factor, axis=2)


def kind(spatial: int) -> str:
    return f"{spatial}-D"


def depth_index(depth, size: int, what: str) -> int:
    """The depth slice to show of ``size``: ``depth`` (checked), else the middle one."""
    if depth is None:
        return size // 2
    if not isinstance(depth, (int, np.integer)) or not -size <= depth < size:
        raise OnnxvizError(f"depth {depth!r} is out of range for {what}; it has {size} depth slices "
                           f"(0 to {size - 1})")
    return int(depth) % size


def depth_note(d: int, size: int, chosen) -> str:
    return f"depth slice {d} of 0–{size - 1}{' (the middle)' if chosen is None else ''}"


def check_max(value):
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
        raise OnnxvizError(f"max must be a whole number, 1 or more, not {value!r}")


def feature_map_image(maps: np.ndarray, name: str = "", *, max: int = 64, shared: bool = False,
                      image: int = 0, cmap: str = "viridis", labels: bool = True,
                      spatial: int | None = None, depth: int | None = None) -> Image.Image:
    """The first ``max`` maps of a layer as one near-square mosaic, as a PIL image.

    ``maps``: ``(N, C, H, W)`` (image ``image`` of the batch is drawn) or ``(C, H, W)``. Each
    map is normalised on its own (``shared=True``: one scale for all shown); a constant map
    is drawn at the colour map's low end. Each tile carries its channel index; the title
    gives the layer name and shape.

    ``spatial``: the number of spatial axes (1, 2 or 3). By default a 5-D array is a 3-D
    layer's ``(N, C, D, H, W)``, a 4-D one ``(N, C, H, W)`` and a 3-D one ``(C, H, W)``; a 1-D
    layer's ``(N, C, L)`` needs ``spatial=1`` (the command line passes it). 1-D maps are
    drawn as one horizontal strip per channel (rows, top to bottom), one pixel column per
    sample (widened for short signals). 3-D maps are drawn as their depth slice ``depth``
    (default: the middle one, ``D // 2``), named in the title.
    """
    maps = np.asarray(maps)
    if spatial is None:
        spatial = {5: 3, 4: 2, 3: 2}.get(maps.ndim)
    elif spatial not in (1, 2, 3):
        raise OnnxvizError(f"spatial must be 1, 2 or 3 (the number of spatial axes), not {spatial!r}")
    if spatial is None or maps.ndim not in (spatial + 1, spatial + 2):
        raise UnsupportedModelError(
            f"feature maps {name + ' ' if name else ''}have shape {maps.shape}; onnxviz draws "
            "(N, C, L) maps (with spatial=1), (N, C, H, W) and (N, C, D, H, W), or one image's, without N")
    if maps.size == 0 or not (np.issubdtype(maps.dtype, np.number) or maps.dtype == np.bool_):
        raise OnnxvizError(f"feature maps {name + ' ' if name else ''}of shape {maps.shape} and dtype "
                           f"{maps.dtype} hold no numbers to draw")
    check_max(max)
    if maps.ndim == spatial + 2:
        if not -maps.shape[0] <= image < maps.shape[0]:
            raise OnnxvizError(f"image {image} is out of range; the batch has {maps.shape[0]}")
        maps = maps[image]
    if depth is not None and spatial != 3:
        raise OnnxvizError(f"depth= is for 3-D feature maps; these are {kind(spatial)} {maps.shape}")
    if spatial == 1:
        return _strip_image(maps, name, max=max, shared=shared, cmap=cmap, labels=labels)
    shape_text, slice_note = "×".join(map(str, maps.shape)), ""
    if spatial == 3:
        d = depth_index(depth, maps.shape[1], "these feature maps")
        slice_note = f", {depth_note(d, maps.shape[1], depth)}"
        maps = maps[:, d]
    check_max(max)
    c, h, w = maps.shape
    n = min(c, max)
    norm = normalise(maps[:n].astype(np.float32, copy=False), None if shared else (1, 2))
    idx = (norm * 255 + 0.5).astype(np.uint8)
    tiles = enlarge(idx, _MIN_TILE_PX)
    th, tw = tiles.shape[1:3]
    body = np.take(lut(cmap), mosaic(tiles, gap=2, fill=0), axis=0)  # 2× faster than lut[idx]
    paint_gaps(body, n, th, tw, 2, BACKGROUND)
    scale = "one scale for all" if shared else "each map on its own scale"
    title = f"{name + ': ' if name else ''}{shape_text}{slice_note}, first {n} of {c} maps, {scale}"
    img, draw = titled(body, title)
    if labels:
        label_tiles(draw, [str(k) for k in range(n)], th, tw, 2)
    return img


def label_tiles(draw, texts, th: int, tw: int, gap: int, cols: int | None = None) -> None:
    """White-on-black ``texts`` in the top-left corner of each tile of a :func:`mosaic` drawn
    under a title bar (tile ``k`` gets ``texts[k]``)."""
    face = font(10 if tw >= 40 else 8)
    cols = cols or grid(len(texts))[1]
    for k, text in enumerate(texts):
        r, q = divmod(k, cols)
        x, y = q * (tw + gap), TITLE_PX + r * (th + gap)
        box = draw.textbbox((x + 2, y + 1), text, font=face)
        draw.rectangle((box[0] - 1, box[1] - 1, box[2] + 1, box[3] + 1), fill=(0, 0, 0))
        draw.text((x + 2, y + 1), text, fill=(255, 255, 255), font=face)


def _strip_image(maps: np.ndarray, name: str, *, max: int, shared: bool, cmap: str,
                 labels: bool) -> Image.Image:
    """1-D maps ``(C, L)``: one strip per channel, ``STRIP_PX`` tall, top to bottom."""
    c, length = maps.shape
    n = min(c, max)
    check_pixels(n, STRIP_PX, length * math.ceil(_STRIP_MIN_W_PX / length), 1, 1)
    norm = normalise(maps[:n].astype(np.float32, copy=False), None if shared else (1,))
    idx = (norm * 255 + 0.5).astype(np.uint8)
    wide = math.ceil(_STRIP_MIN_W_PX / length)  # short signals: widen each sample (nearest)
    tiles = idx[:, None, :].repeat(STRIP_PX, axis=1).repeat(wide, axis=2)
    body = np.take(lut(cmap), mosaic(tiles, cols=1, gap=1, fill=0), axis=0)
    paint_gaps(body, n, *tiles.shape[1:3], 1, BACKGROUND, cols=1)
    scale = "one scale for all" if shared else "each map on its own scale"
    title = (f"{name + ': ' if name else ''}{c}×{length} (1-D), first {n} of {c} maps as rows, "
             f"{scale}")
    left = _STRIP_LABEL_PX if labels else 0
    img, draw = titled(body, title, left=left)
    if labels:
        face = font(9)
        for k in range(n):
            draw.text((left - 4, TITLE_PX + k * (STRIP_PX + 1) + STRIP_PX / 2), str(k),
                      fill=(60, 60, 60), font=face, anchor="rm")
    return img


def plot_feature_maps(maps: np.ndarray, name: str = "", *, max: int = 64, shared: bool = False,
                      image: int = 0, cmap: str = "viridis", labels: bool = True,
                      spatial: int | None = None, depth: int | None = None):
    """The first ``max`` maps of a layer as a matplotlib ``Figure`` (see :func:`feature_map_image`)."""
    return to_figure(feature_map_image(maps, name, max=max, shared=shared, image=image,
                                       cmap=cmap, labels=labels, spatial=spatial, depth=depth))

