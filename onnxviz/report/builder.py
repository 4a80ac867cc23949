"""Build a report: decode the images, compute the maps and the class scores, draw and encode
every picture, and write one self-contained HTML file.

>>> import onnxviz
>>> onnxviz.report("vgg16.onnx", ["cat.jpg", "dog.jpg"], "report.html")        # doctest: +SKIP
'report.html'
>>> data = build(m, ["cat.jpg"], layers=["block1_conv2"], labels="labels.txt")  # doctest: +SKIP
>>> data.images[0].predictions[0]["name"]                                      # doctest: +SKIP
'tabby'

Steps, in order: (1) every image is decoded on its own — one that fails is named on the page
and the others go on (none left: :class:`~onnxviz.errors.ImageError`); (2) the layers' maps
and the class scores, in one onnxruntime run (:mod:`onnxviz.classes`; a model without a
class output says so on the page, and its maps are still shown); (3) the names of the top
classes; (4) per layer its filters, and per image its maps: the first ``max_channels``
channels and the ``top_channels`` of highest mean (:mod:`onnxviz.stats`), each a
colour-mapped palette PNG on its own scale; (5) the optional sections (:mod:`.sections`);
(6) the page (:mod:`.html`), checked against ``max_size``, then written atomically through
:mod:`onnxviz.output`.

Pictures are encoded in a thread pool (zlib releases the GIL): VGG16's 720 tiles took
0.78 s with 2 threads and 0.90 s with 1 on a loaded 2-core machine (load average 8;
``scripts/bench_report.py``, BENCHMARKS.md); the numpy normalisation stays on the caller's
thread. The one run of (2) saves a second session and forward pass: 4.1 s in all, not 5.9.

A layer's maps for one image are downscaled by an integer factor, each pixel the mean of a
block, when they would take more than :data:`MAX_GRID_PIXELS` (or a map more than
:data:`MAX_SIDE` a side); the page says so. VGG16's 64 block1 maps of 224×224 (3.2 M pixels)
stay at full resolution.

Known limits: images go to rank-4 image inputs only (a 1-D or 3-D conv net has no report);
``feeds=`` for models with other inputs is not offered.
"""

from __future__ import annotations

import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from .. import __version__
from .. import preprocess as prep
from ..classes import class_scores, class_tensors, read_labels, top_classes
from ..errors import (ImageError, LayerError, OnnxvizError, OnnxvizWarning, ResourceError,
                      UnsupportedModelError, format_bytes, listing)
from ..features import resolve_preset
from ..model import Model, load
from ..output import check_target, write_atomic
from ..render import filter_image, png_bytes
from ..render.colormaps import lut
from ..render.encode import indexed_png
from ..stats import channel_stats, silent_channels, top_channels
from .card import model_card
from .data import ImagePage, LayerPage, MapGrid, Picture, Report, Tile
from .html import render
from .sections import PROVIDERS, Context, check_cam, check_dataset

__all__ = ["build", "report", "MAX_SIZE", "MAX_GRID_PIXELS", "MAX_SIDE"]

#: The largest report written by default (``max_size=``, ``--max-size``): VGG16 with 2
#: images and its 5 default layers is 8.2 MB.
MAX_SIZE = 25 * 2**20
#: One layer's maps for one image are downscaled above this many pixels in all.
MAX_GRID_PIXELS = 4_000_000
#: ... or when one map is larger than this a side.
MAX_SIDE = 1024


def _name(src, k: int) -> str:
    if isinstance(src, (str, os.PathLike)):
        return os.path.basename(os.fspath(src)) or os.fspath(src)
    return f"image {k}"


def _decode(images) -> tuple[list[ImagePage], list[np.ndarray]]:
    """Every image decoded on its own: pages (an error for those that failed), good pixels."""
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    if not items:
        raise ImageError("no image given; a report needs at least one image")
    pages, arrays = [], []
    for k, src in enumerate(items):
        page = ImagePage(_name(src, k))
        try:
            arrays.append(prep.load_image(src))
        except ImageError as e:
            page.error = str(e)
        pages.append(page)
    if not arrays:
        reasons = "; ".join(p.error for p in pages)
        raise ImageError(f"no image can be used: {reasons}" if len(pages) > 1 else reasons)
    return pages, arrays


def _photo(arr: np.ndarray, size: tuple) -> bytes:
    """The image as the model sees it (resized, before preprocessing), as PNG."""
    pixels = np.clip(np.asarray(arr, np.float32), 0, 255).astype(np.uint8)
    return png_bytes(Image.fromarray(pixels).resize((size[1], size[0]), Image.BILINEAR))


def _factor(n: int, h: int, w: int) -> int:
    f = 1
    while n * (h // f) * (w // f) > MAX_GRID_PIXELS or max(h, w) / f > MAX_SIDE:
        f += 1
    return f


def _indices(maps: np.ndarray, lo: np.ndarray, hi: np.ndarray, f: int) -> np.ndarray:
    """``(k, H, W)`` maps → uint8 colour indices on each map's own ``lo``–``hi`` scale, every
    ``f×f`` block averaged first."""
    k, h, w = maps.shape
    if f > 1:
        maps = maps[:, :h // f * f, :w // f * f].reshape(k, h // f, f, w // f, f).mean(axis=(2, 4))
    finite = np.isfinite(lo).all() and np.isfinite(hi).all()  # then so is every value between
    lo, span = lo[:, None, None], (hi - lo)[:, None, None]
    unit = np.divide(maps - lo, span, out=np.zeros(maps.shape, np.float32), where=span > 0)
    unit = np.clip(unit, 0, 1, out=unit) if finite else np.nan_to_num(np.clip(unit, 0, 1))
    return (unit * 255 + 0.5).astype(np.uint8)


class _Grid:
    """A layer's maps for one image while their PNGs are being encoded (see :func:`_grids`)."""

    def __init__(self, image, shown, best, stats, pngs, maps_shape, picture_shape, factor):
        self.image, self.shown, self.best, self.stats, self.pngs = image, shown, best, stats, pngs
        self.maps_shape, self.picture_shape, self.factor = maps_shape, picture_shape, factor

    def done(self, image_index: int) -> MapGrid:
        s, i = self.stats, self.image
        ph, pw = self.picture_shape

        def tile(ch):
            return Tile(ch, self.pngs[ch].result(), pw, ph, float(s["min"][i, ch]), float(s["max"][i, ch]),
                        float(s["mean"][i, ch]), float(s["active"][i, ch]))

        return MapGrid(image_index, [tile(ch) for ch in range(self.shown)], [tile(ch) for ch in self.best],
                       self.maps_shape[0], self.maps_shape[1:], self.factor,
                       int(silent_channels(None, i, s).sum()))


def _grids(maps: np.ndarray, max_channels: int, top: int, encode) -> list[_Grid]:
    """Per image: the first ``max_channels`` maps and the ``top`` channels by mean, submitted
    to ``encode`` (a list of index arrays → a list of futures of PNG bytes)."""
    n, c, h, w = maps.shape
    stats = channel_stats(maps)
    shown = min(c, max_channels)
    f = _factor(shown, h, w)
    grids = []
    for i in range(n):
        best = [int(ch) for ch in top_channels(None, top, image=i, stats=stats)]
        chans = list(range(shown)) + [ch for ch in best if ch >= shown]
        idx = _indices(maps[i, chans], stats["min"][i, chans], stats["max"][i, chans], f)
        grids.append(_Grid(i, shown, best, stats, dict(zip(chans, encode(list(idx)))), (c, h, w),
                           idx.shape[1:], f))
    return grids


def _filters(model, layer, encode):
    rgb = layer.index == 0 and len(layer.filter_shape) == 4 and layer.filter_shape[1] == 3
    try:
        img = filter_image(model, layer, rgb=rgb)
    except OnnxvizError as e:
        return None, f"not shown: {e}"
    title = "Filters, as RGB colour" if rgb else "Filters"
    return (title, encode([img], picture=True)[0]), ""


def _classes(model, values, failure: str, pages, labels, top):
    """Predictions onto the pages; returns (scores or None, the page's sentence about them)."""
    if values is not None:
        try:
            scores, out = class_scores(model, values=values)
        except UnsupportedModelError as e:
            failure = str(e)
    if failure:
        if labels is not None:
            warnings.warn(f"labels '{labels}' are not used: the model has no class output", OnnxvizWarning,
                          stacklevel=3)
        return None, f"not available: {failure}"
    names = read_labels(model, labels, scores.shape[1])
    for page, rows in zip([p for p in pages if not p.error], top_classes(scores, top, names, out.softmax)):
        page.predictions = rows
    what = (f"the logits before the final Softmax of output '{out.output}'" if out.softmax
            else f"output '{out.output}'")
    source = f"'{labels}'" if labels is not None else ("the model's onnxviz.labels metadata" if names
                                                      else "none given: class indices")
    return scores, f"scores are {what}; class names: {source}"


def _run(model, images, chosen, preprocess, size, max_bytes):
    """Decode, then the maps and the class scores in one run: (pages, arrays, preset, maps,
    class values or None, why there are none)."""
    pages, arrays = _decode(images)
    preset = resolve_preset(model, preprocess)
    kw = dict(preprocess=preset, size=size, max_bytes=max_bytes)
    try:
        maps = model.feature_maps(arrays, chosen, also=class_tensors(model), **kw)
        return pages, arrays, preset, maps, maps.also, ""
    except (LayerError, UnsupportedModelError) as e:  # the scores need what the maps do not
        return (pages, arrays, preset, model.feature_maps(arrays, chosen, **kw), None,
                f"the class scores cannot be computed: {e}")


def _notes(pages, caught) -> list[str]:
    """Unused images and onnxviz's warnings, one line each: for the page, and warned again
    (the command line prints them); other warnings are passed on as they were."""
    notes = [f"image '{p.name}' is not used: {p.error}" for p in pages if p.error]
    for w in caught:
        if issubclass(w.category, OnnxvizWarning):
            notes.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    notes = list(dict.fromkeys(notes))
    for note in notes:
        warnings.warn(note, OnnxvizWarning, stacklevel=3)
    return notes


def _draw(model, chosen, maps, pages, arrays, hw, max_channels, top_channels, workers, step):
    """Every picture, encoded in a thread pool: (layer pages, the first layer's filters or None)."""
    used = [k for k, p in enumerate(pages) if not p.error]
    palette = lut("viridis")
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        def encode(items, picture=False):
            fn = png_bytes if picture else (lambda a: indexed_png(a, palette))
            return [pool.submit(fn, item) for item in items]

        photos = [pool.submit(_photo, a, hw) for a in arrays]
        first = model.layers[0]
        first_filters = _filters(model, first, encode)[0] if first not in chosen else None
        layer_pages, pending = [], []
        for layer in chosen:
            fm = maps[layer.name]
            page = LayerPage(layer.as_dict())
            filters, page.filters_note = _filters(model, layer, encode)
            if fm.ndim != 4:
                page.maps_note = f"not shown: maps of shape {fm.shape} are not (N, C, H, W)"
            pending.append((page, filters, _grids(fm, max_channels, top_channels, encode) if fm.ndim == 4 else []))
            layer_pages.append(page)
            step()
        for k, future in zip(used, photos):  # every encoding is submitted: now wait for them
            pages[k].photo = future.result()
        for page, filters, grids in pending:
            page.filters = Picture(filters[0], filters[1].result()) if filters else None
            page.grids = [g.done(used[g.image]) for g in grids]
        if first_filters:
            title = first_filters[0]
            first_filters = Picture(f"First layer {first.name}: {title[0].lower()}{title[1:]}",
                                    first_filters[1].result())
    return layer_pages, first_filters


def build(model, images, *, layers=None, labels=None, top: int = 5, max_channels: int = 64,
          top_channels: int = 8, preprocess=None, size=None, cam="auto", patterns: bool = False,
          dataset=None, sections=None, max_bytes=None, workers: int | None = None, progress=None) -> Report:
    """A :class:`~onnxviz.report.data.Report` for ``model`` (a :class:`Model` or a path) and
    ``images`` (what :meth:`Model.feature_maps` takes, one or a list).

    ``layers``: layer keys (default: the last conv of every stage). ``labels``: a file of class
    names, one a line. ``top``: classes listed per image. ``max_channels``: maps shown per
    layer and image. ``top_channels``: the channels ranked by mean shown per layer and image.
    ``cam``, ``patterns``, ``dataset``: the optional sections (:mod:`.sections`): ``cam`` a
    method of :func:`onnxviz.cam`, ``"auto"`` (Grad-CAM, else AblationCAM) or ``"none"``.
    ``sections``: ``{layer key or image index: [Section, …]}`` of the caller's own, placed
    there (replacing the report's statement of the same kind). ``workers``: threads encoding
    PNGs (default: one per core). ``progress``: a callable(done), called after the run, the
    classes and each layer (2 + layers steps).
    """
    model = model if isinstance(model, Model) else load(model)
    if model.input is None or len(model.input.shape) != 4:
        raise UnsupportedModelError(f"a report needs a model with an image input (rank 4); "
                                    f"'{model.path}' takes {list(model.input.shape) if model.input else 'no input'}")
    if dataset is not None:
        dataset = check_dataset(dataset)
    check_cam(cam)
    if labels is not None:
        read_labels(model, labels)  # a missing or unreadable file, before any work
    chosen = model.select(layers) if layers else model.stage_ends()
    n_images = len(images) if isinstance(images, (list, tuple)) else 1
    placed = _placed(model, chosen, sections, n_images)
    done = 0

    def step():
        nonlocal done
        done += 1
        if progress:
            progress(done)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pages, arrays, preset, maps, values, failure = _run(model, images, chosen, preprocess, size, max_bytes)
        step()
        scores, classes = _classes(model, values, failure, pages, labels, top)
        step()
    notes = _notes(pages, caught)
    layer_pages, first_filters = _draw(model, chosen, maps, pages, arrays, _input_hw(model, size), max_channels,
                                       top_channels, workers, step)
    ctx = Context(model, chosen, pages, scores, {"cam": cam, "patterns": patterns, "dataset": dataset,
                                                     "max_bytes": max_bytes, "preprocess": preset, "size": size,
                                                     "labels": labels}, arrays)
    by_name = {p.row["name"]: p for p in layer_pages}
    with warnings.catch_warnings(record=True) as caught:  # what a section could not do: on the page too
        warnings.simplefilter("always")
        for _, scope, provider in PROVIDERS:
            for key, section in provider(ctx).items():
                (by_name[key] if scope == "layer" else pages[key]).sections.append(section)
    notes += [n for n in _notes([], caught) if n not in notes]
    for key, extra in placed.items():
        target = pages[key] if isinstance(key, int) else by_name[key]
        kinds = {s.kind for s in extra}
        target.sections = [s for s in target.sections if s.kind not in kinds] + list(extra)
    return Report(model_card(model), pages, layer_pages, classes=classes, preprocess=preset, notes=notes,
                  version=__version__, first_filters=first_filters)


def _input_hw(model, size) -> tuple:
    if size is None:
        return tuple(model.input.size)
    return (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))


def _placed(model, chosen, sections, n_images: int) -> dict:
    """The caller's ``sections``, keys checked: image indices as given, layer keys → names."""
    out = {}
    for key, extra in (sections or {}).items():
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            if not 0 <= key < n_images:
                raise OnnxvizError(f"sections: image {key} is out of range; {n_images} "
                                   f"image{'s are' if n_images != 1 else ' is'} given (0 to {n_images - 1})")
            out[int(key)] = list(extra)
            continue
        layer = model.layer(key)
        if layer not in chosen:
            raise LayerError(f"sections: layer '{layer.name}' is not in this report; its layers are: "
                             f"{listing(l.name for l in chosen)}")
        out[layer.name] = list(extra)
    return out


def _parts(data: Report) -> list[tuple[str, int]]:
    """What takes the room: (part, bytes as embedded), largest first."""
    def size(pngs):
        return sum(4 * math.ceil(len(p) / 3) for p in pngs)

    parts = [(f"layer {p.row['name']}", size([t.png for g in p.grids for t in g.tiles + g.top]
                                              + ([p.filters.png] if p.filters else [])
                                              + [x.png for s in p.sections for x in s.pictures]))
             for p in data.layers]
    parts.append(("the images", size([i.photo for i in data.images if i.photo]
                                     + [x.png for i in data.images for s in i.sections if s.kind != "cam"
                                        for x in s.pictures])))
    cams = size([x.png for i in data.images for s in i.sections if s.kind == "cam" for x in s.pictures])
    if cams:
        parts.append(("the class activation maps", cams))
    return sorted(parts, key=lambda p: -p[1])


def report(model, images, path, *, max_size=MAX_SIZE, **kw) -> str:
    """Build the report (see :func:`build`) and write it to ``path`` atomically; return ``path``.

    ``max_size``: the largest page written (bytes); a bigger one is refused, naming its
    largest parts, and nothing is written.
    """
    model = model if isinstance(model, Model) else load(model)
    protect = [*model.files(), *(os.fspath(i) for i in (images if isinstance(images, (list, tuple)) else [images])
                                 if isinstance(i, (str, os.PathLike)))]
    path = check_target(path, protect=protect)
    data = build(model, images, **kw)
    page = render(data).encode("utf-8")
    if len(page) > max_size:
        largest = _parts(data)
        parts = ", ".join(f"{name} {format_bytes(n)}" for name, n in largest[:3])
        n_images = sum(1 for i in data.images if not i.error)
        cams = any(name == "the class activation maps" for name, _ in largest)
        raise ResourceError(
            f"the report would be {format_bytes(len(page))}, over its budget of {format_bytes(max_size)}; "
            f"the largest parts are {parts}: drop layers (--layer), images ({n_images} now)"
            f"{',' if cams else ' or'} maps per layer (--max, {kw.get('max_channels', 64)} now)"
            f"{' or the class activation maps (--cam none)' if cams else ''}, or raise --max-size")
    return write_atomic(path, page)
