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
Adding a kind is one function and one row of :data:`PROVIDERS`. The CAM and pattern
methods are not part of this version of onnxviz: their providers say so on the page, and
warn, when asked for (the CAM one first says when the model has no class output, which is
true of any version).

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

__all__ = ["Context", "PROVIDERS", "check_dataset", "cam_sections", "pattern_sections", "dataset_sections"]

_PNG = b"\x89PNG\r\n\x1a\n"


@dataclass
class Context:
    """What a provider may use: the model, the report's layers and images, the class scores."""

    model: object
    layers: list                        # onnxviz Layer, in report order
    images: list                        # data.ImagePage (``error`` set for images not used)
    scores: np.ndarray | None = None    # (N used images, K), or None: no class output
    options: dict = field(default_factory=dict)   # cam=METHOD, patterns=bool, dataset=DIR


def _everywhere(ctx: Context, scope: str, section: Section) -> dict:
    keys = [l.name for l in ctx.layers] if scope == "layer" else [
        k for k, page in enumerate(ctx.images) if not page.error]
    return {key: section for key in keys}


def _unavailable(option: str, why: str) -> str:
    """An option that was asked for and cannot be honoured: said on the page and as a warning."""
    warnings.warn(f"{option}: {why}", OnnxvizWarning, stacklevel=3)
    return why


def cam_sections(ctx: Context) -> dict:
    title = "Class activation maps"
    method = ctx.options.get("cam")
    if not method:
        why = "not requested (give --cam METHOD)"
    elif ctx.scores is None:
        why = _unavailable(f"--cam {method}", "not available for a model without a class output")
    else:
        why = _unavailable(f"--cam {method}", "not available: this version of onnxviz has no class activation maps")
    return _everywhere(ctx, "image", Section("cam", title, absent=why))


def pattern_sections(ctx: Context) -> dict:
    why = (_unavailable("--patterns", "not available: this version of onnxviz has no filter patterns")
           if ctx.options.get("patterns") else "not requested (give --patterns)")
    return _everywhere(ctx, "layer", Section("patterns", "Filter patterns", absent=why))


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
