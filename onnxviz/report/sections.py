"""The report's optional sections: one provider per kind, each filling a layer's or an image's
page with :class:`~onnxviz.report.data.Section` values, or saying plainly why it cannot.

=========  =======  =================================================================
kind       placed   provider, and what it shows
=========  =======  =================================================================
cam        image    class activation maps for the top classes (``--cam METHOD``)
patterns   layer    what each filter responds to, by gradient ascent (``--patterns``)
dataset    layer    the top-K dataset patches of ``onnxviz dataset … -o DIR`` (``--dataset DIR``)
=========  =======  =================================================================

A provider takes the :class:`Context` and returns ``{layer name or image index: Section}``.
Adding a kind is one function and one row of :data:`PROVIDERS`. A kind asked for that cannot
be shown says why on the page, and warns (a model without a class output has no CAM).

A dataset folder holds, as ``onnxviz dataset`` writes it: ``index.txt`` (one image path a
line), and per layer ``<layer>.png`` (top-K patches, one row per channel) and ``<layer>.npz``
(``count`` and per-channel arrays), ``<layer>`` being the layer name made file-safe as
:func:`onnxviz.output.layer_stems` makes it over the model's layers.

>>> ctx = Context(model, layers, images, scores=None, options={"dataset": "runs/ds"})   # doctest: +SKIP
>>> dataset_sections(ctx)["block3_conv2"].title                                       # doctest: +SKIP
'Dataset: top patches'

Known limits: a dataset PNG is embedded as it is (its size counts against the report's budget).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import OnnxvizError, OnnxvizWarning, listing
from ..output import layer_stems
from .data import Picture, Section

__all__ = ["Context", "PROVIDERS", "check_dataset", "check_cam", "cam_sections", "pattern_sections", "dataset_sections"]

_PNG = b"\x89PNG\r\n\x1a\n"


@dataclass
class Context:
    """What a provider may use: the model, the report's layers and images, the class scores."""

    model: object
    layers: list                        # onnxviz Layer, in report order
    images: list                        # data.ImagePage (``error`` set for images not used)
    scores: np.ndarray | None = None    # (N used images, K), or None: no class output
    options: dict = field(default_factory=dict)   # cam=METHOD, patterns=bool, dataset=DIR, max_bytes,
    #                                               preprocess, size, labels: as the report was asked
    arrays: list = field(default_factory=list)    # the used images' pixels (H×W×3), as decoded


def _everywhere(ctx: Context, scope: str, section: Section) -> dict:
    keys = [l.name for l in ctx.layers] if scope == "layer" else [
        k for k, page in enumerate(ctx.images) if not page.error]
    return {key: section for key in keys}


def _unavailable(option: str, why: str) -> str:
    """An option that was asked for and cannot be honoured: said on the page and as a warning."""
    warnings.warn(f"{option}: {why}", OnnxvizWarning, stacklevel=3)
    return why


#: Classes per image the CAM section explains: the top ones.
CAM_CLASSES = 3


def check_cam(method) -> None:
    """A one-line :class:`OnnxvizError` unless ``method`` is a report's CAM choice."""
    from ..explain.cam import METHODS

    if method is not None and method not in ("auto", "none", *METHODS):
        raise OnnxvizError(f"unknown CAM method '{method}'; methods are: auto, none, {', '.join(METHODS)}")


def cam_sections(ctx: Context) -> dict:
    """Per image, the class activation maps of its top :data:`CAM_CLASSES` classes over the
    image (``cam``: a method of :func:`onnxviz.cam`, ``"auto"`` its default: Grad-CAM, else
    AblationCAM where no gradient can be built; ``None``/``"none"``: no maps). EigenCAM explains no class: one map
    per image."""
    title = "Class activation maps"
    asked = ctx.options.get("cam") or "none"
    if asked == "none":
        return _everywhere(ctx, "image", Section("cam", title, absent="not requested (give --cam METHOD)"))
    check_cam(asked)
    if ctx.scores is None and asked != "eigen":
        why = "not available for a model without a class output"
        return _everywhere(ctx, "image", Section("cam", title, absent=(
            why + " (EigenCAM explains none and works: --cam eigen)" if asked == "auto"
            else _unavailable(f"--cam {asked}", why))))
    try:
        c, note = _cams(ctx, asked)
    except OnnxvizError as e:
        option = "the report's class activation maps" if asked == "auto" else f"--cam {asked}"
        return _everywhere(ctx, "image", Section("cam", title, absent=_unavailable(option, str(e))))
    per = len(c.heatmap) // len(ctx.arrays)
    out = {}
    from ..render import png_bytes
    from ..render.overlay import cam_picture

    for j, key in enumerate(k for k, page in enumerate(ctx.images) if not page.error):
        titles = [c.caption(i).rsplit(", image ", 1)[0] for i in range(j * per, (j + 1) * per)]
        pictures = tuple(Picture(t, png_bytes(cam_picture(c, i, title=t)))
                         for t, i in zip(titles, range(j * per, (j + 1) * per)))
        out[key] = Section("cam", f"{title} ({c.title})", pictures=pictures, note=note)
    return out


def _cams(ctx: Context, asked: str):
    """The :class:`~onnxviz.explain.base.Cam` of every used image's top classes, in one call,
    and the section's note."""
    from ..explain.cam import AUTO, cam

    o = ctx.options
    kw = dict(preprocess=o.get("preprocess"), size=o.get("size"), labels=o.get("labels"),
              max_bytes=o.get("max_bytes"))
    if asked == "eigen":
        return cam(ctx.model, list(ctx.arrays), "eigen", **kw), "EigenCAM explains no class: one map per image"
    k = min(CAM_CLASSES, ctx.scores.shape[1])
    targets = np.argsort(-ctx.scores.astype(np.float64), axis=1, kind="stable")[:, :k].reshape(-1)
    images = [a for a in ctx.arrays for _ in range(k)]
    c = cam(ctx.model, images, asked, target=targets, **kw)  # auto: Grad-CAM, else AblationCAM (with a warning)
    fallback = " (AblationCAM: no gradient)" if asked == "auto" and c.method != AUTO else ""
    return c, f"the top {k} classes of each image{fallback}"


#: Channels per layer the report's pattern section draws (``--patterns`` asks for them).
PATTERN_CHANNELS = 16


def pattern_sections(ctx: Context) -> dict:
    """Per layer, the gradient-ascent patterns of its first :data:`PATTERN_CHANNELS` channels
    (:func:`onnxviz.explain.patterns.patterns`, the Keras example's loop: 30 steps, lr 10), as
    one grid; a layer whose gradient cannot be built says why."""
    title = "Filter patterns"
    if not ctx.options.get("patterns"):
        return _everywhere(ctx, "layer", Section("patterns", title, absent="not requested (give --patterns)"))
    from ..explain.patterns import patterns
    from ..render import png_bytes
    from ..render.patterns import patterns_image

    out = {}
    for layer in ctx.layers:
        count = layer.output_shape[0] if layer.output_shape else PATTERN_CHANNELS
        channels = list(range(min(PATTERN_CHANNELS, count)))
        try:
            p = patterns(ctx.model, layer.name, channels, max_bytes=ctx.options.get("max_bytes"))
        except OnnxvizError as e:
            out[layer.name] = Section("patterns", title, absent=_unavailable(f"--patterns ({layer.name})", str(e)))
            continue
        side = f"{p.images.shape[1]}×{p.images.shape[2]}"
        png = png_bytes(patterns_image(p.images, p.channels, f"{layer.name}: channels {channels[0]}–{channels[-1]}"))
        best = int(np.argmax(p.activation))
        out[layer.name] = Section("patterns", title, pictures=(Picture(
            f"{layer.name}: what channels {channels[0]}–{channels[-1]} respond to", png,
            f"{side} images grown by 30 steps of gradient ascent from noise; the highest mean activation "
            f"reached is channel {int(p.channels[best])}'s, {float(p.activation[best]):.3g}"),),
            note=f"the first {len(channels)} of {count} channels")
    return out


def check_dataset(folder) -> str:
    """``folder`` if it is a dataset-pass folder, else a one-line :class:`OnnxvizError`."""
    folder = os.fspath(folder)
    if not os.path.exists(folder):
        raise OnnxvizError(f"dataset folder '{folder}' does not exist; give the -o folder of "
                           "'onnxviz dataset MODEL SOURCE --layer L -o DIR'")
    if not os.path.isdir(folder):
        raise OnnxvizError(f"dataset folder '{folder}' is a file, not a folder; give the -o folder of "
                           "'onnxviz dataset'")
    if not os.path.isfile(os.path.join(folder, "index.txt")):
        raise OnnxvizError(f"'{folder}' is not a dataset-pass folder: it has no index.txt (make one with "
                           "'onnxviz dataset MODEL SOURCE --layer L -o DIR')")
    return folder


def _count(path: str) -> str:
    """``" over 1,234 images"`` from a layer's ``.npz``, or ``""`` when it cannot tell."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return f" over {int(data['count']):,} images" if "count" in data.files else ""
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def dataset_sections(ctx: Context) -> dict:
    folder = ctx.options.get("dataset")
    title = "Dataset: top patches"
    if not folder:
        return _everywhere(ctx, "layer", Section("dataset", title, absent="not requested (give --dataset DIR)"))
    names = os.listdir(folder)
    there = sorted({n[:-4] for n in names if n.endswith((".png", ".npz"))})
    out = {}
    stems = layer_stems([l.name for l in ctx.model.layers])
    for layer in ctx.layers:
        stem = stems[layer.name]
        path = os.path.join(folder, stem + ".png")
        if stem + ".png" not in names:
            out[layer.name] = Section("dataset", title, absent=(
                f"'{folder}' has no {stem}.png (its layers: {listing(there) or 'none'})"))
            continue
        try:
            with open(path, "rb") as fh:
                png = fh.read()
        except OSError as e:
            out[layer.name] = Section("dataset", title, absent=f"cannot read '{path}': {e.strerror or e}")
            continue
        if not png.startswith(_PNG):
            out[layer.name] = Section("dataset", title, absent=f"'{path}' is not a PNG file")
            continue
        caption = f"one row per channel, its best patches first{_count(os.path.join(folder, stem + '.npz'))}"
        out[layer.name] = Section("dataset", title, pictures=(Picture(f"{layer.name}: top dataset patches", png,
                                                                       caption),),
                                  note=f"from {folder}")
    return out


#: (kind, placed on, provider): the report asks each in turn.
PROVIDERS = (
    ("cam", "image", cam_sections),
    ("patterns", "layer", pattern_sections),
    ("dataset", "layer", dataset_sections),
)
