"""Heatmaps over photos: a class activation map, or one channel's feature map, blended in.

>>> from onnxviz.render.overlay import overlay, overlay_image
>>> rgb = overlay(photo, c.heatmap[0], cmap="jet", alpha=0.5)            # doctest: +SKIP
>>> save_png(overlay_image(photo, c.heatmap[0], c.caption(0)), "cam.png")  # doctest: +SKIP

The heatmap (values in [0, 1], any size) is coloured by ``cmap`` and blended over the photo
(``H×W×3`` uint8): ``(1 − alpha)·photo + alpha·colour``. ``at="input"`` draws at the
heatmap's size (a CAM's is the model's input size: the photo is resized to it), ``at="photo"``
at the photo's own size (the heatmap resized to it, bilinear). A feature map is min–max
scaled first (:func:`channel_overlay`). Small pictures are enlarged (nearest) to ``min_px``.

Known limits: one image per picture; resizing is Pillow's bilinear (antialiased when shrinking).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..errors import OnnxvizError
from .colormaps import BACKGROUND, lut
from .mosaic import enlarge, grid, label_tiles, mosaic
from .text import titled

__all__ = ["overlay", "overlay_image", "channel_overlay", "cam_picture", "cam_sheet", "deprocess"]

_PLACES = ("input", "photo")


def _resized(values: np.ndarray, size: tuple) -> np.ndarray:
    """A float map resized to ``size`` (H, W), bilinear."""
    if values.shape == tuple(size):
        return values
    return np.asarray(Image.fromarray(np.ascontiguousarray(values, np.float32), "F").resize(
        (size[1], size[0]), Image.BILINEAR))


def _photo(photo) -> np.ndarray:
    photo = np.asarray(photo)
    if photo.ndim != 3 or photo.shape[2] != 3:
        raise OnnxvizError(f"the photo must be an H×W×3 array, not {photo.shape}")
    return photo if photo.dtype == np.uint8 else np.clip(photo, 0, 255).astype(np.uint8)


def overlay(photo, heat, *, cmap: str = "jet", alpha: float = 0.5) -> np.ndarray:
    """``photo`` (``H×W×3``) with ``heat`` (``h×w`` in [0, 1], resized to ``H×W``) coloured over it."""
    photo = _photo(photo)
    heat = np.asarray(heat, np.float32)
    if heat.ndim != 2:
        raise OnnxvizError(f"the heatmap must be an H×W array, not {heat.shape}")
    if not 0 <= alpha <= 1:
        raise OnnxvizError(f"alpha must be between 0 and 1, not {alpha}")
    heat = _resized(heat, photo.shape[:2])
    colours = np.take(lut(cmap), (np.clip(np.nan_to_num(heat), 0, 1) * 255 + 0.5).astype(np.uint8), axis=0)
    blend = (1 - alpha) * photo.astype(np.float32) + alpha * colours.astype(np.float32)
    return (blend + 0.5).astype(np.uint8)


def overlay_image(photo, heat, title: str = "", *, cmap: str = "jet", alpha: float = 0.5, at: str = "input",
                  min_px: int = 192, beside=None) -> Image.Image:
    """The overlay as a titled picture; ``at``: ``"input"`` (the heatmap's size) or ``"photo"``;
    ``beside``: another ``H×W×3`` uint8 picture drawn to its right (guided Grad-CAM)."""
    if at not in _PLACES:
        raise OnnxvizError(f"at must be one of {', '.join(_PLACES)}, not {at!r}")
    photo = _photo(photo)
    heat = np.asarray(heat, np.float32)
    if at == "input" and photo.shape[:2] != heat.shape:
        photo = np.asarray(Image.fromarray(photo).resize((heat.shape[1], heat.shape[0]), Image.BILINEAR))
    tiles = [overlay(photo, heat, cmap=cmap, alpha=alpha)]
    if beside is not None:
        tiles.append(np.asarray(Image.fromarray(_photo(beside)).resize(tiles[0].shape[1::-1], Image.BILINEAR)))
    body = mosaic(enlarge(np.stack(tiles), min_px), cols=len(tiles), gap=8, fill=BACKGROUND[0])
    return titled(np.ascontiguousarray(body), title)[0]


def channel_overlay(photo, fmap, title: str = "", *, cmap: str = "jet", alpha: float = 0.5) -> Image.Image:
    """One channel's feature map (``h×w``, any scale) min–max scaled, resized to ``photo`` (the
    image at the model's input size, or at its own) and drawn over it."""
    fmap = np.asarray(fmap, np.float32)
    low, span = float(fmap.min()), float(fmap.max() - fmap.min())
    scaled = (fmap - low) / span if span > 0 else np.zeros_like(fmap)
    photo = _photo(photo)
    return overlay_image(photo, _resized(scaled, photo.shape[:2]), title, cmap=cmap, alpha=alpha)


def deprocess(values: np.ndarray) -> np.ndarray:
    """A gradient image ``H×W×C`` as uint8 RGB, as pytorch-grad-cam's ``deprocess_image``:
    centred, over its std (+1e-5), × 0.1, + 0.5, clipped to [0, 1]."""
    v = np.asarray(values, np.float32)
    v = (v - v.mean()) / (v.std() + 1e-5) * 0.1 + 0.5
    v = (np.clip(v, 0, 1) * 255).astype(np.uint8)
    return np.repeat(v, 3, axis=2) if v.shape[2] == 1 else v[..., :3]


def cam_picture(cam, k: int = 0, *, cmap: str = "jet", alpha: float = 0.5, photo=None,
                at: str = "input", title: str | None = None) -> Image.Image:
    """Item ``k`` of a :class:`~onnxviz.explain.base.Cam`: its heatmap over ``photo`` (default:
    the image at the input size it keeps; a grey field without one), titled ``title`` (default
    :meth:`Cam.caption`: the method, the class and its score); guided Grad-CAM's product image
    beside it."""
    heat = cam.heatmap[k]
    if photo is None:
        photo = cam.images[k] if cam.images is not None else np.full(heat.shape + (3,), 128, np.uint8)
    beside = deprocess(cam.guided[k]) if cam.guided is not None else None
    return overlay_image(photo, heat, cam.caption(k) if title is None else title, cmap=cmap, alpha=alpha, at=at,
                         beside=beside)


def cam_sheet(cam, cols: int | None = None, *, cmap: str = "jet", alpha: float = 0.5, min_px: int = 192) -> Image.Image:
    """Every item of a :class:`~onnxviz.explain.base.Cam` in one picture: the overlays in a
    grid of ``cols`` columns (default near-square), each labelled with its class and score,
    under one title (the method and the layer).

    >>> c = onnxviz.cam(m, ["photo.jpg"] * 3, "grad", target=[1, 4, 6])     # doctest: +SKIP
    >>> save_png(cam_sheet(c), "three_classes.png")                          # doctest: +SKIP
    """
    heats = cam.heatmap
    photos = cam.images if cam.images is not None else np.full(heats.shape + (3,), 128, np.uint8)
    tiles = enlarge(np.stack([overlay(p, h, cmap=cmap, alpha=alpha) for p, h in zip(photos, heats)]), min_px)
    cols = cols or grid(len(tiles))[1]
    body = mosaic(tiles, cols=cols, gap=8, fill=BACKGROUND[0])
    img, draw = titled(np.ascontiguousarray(body), f"{cam.title or cam.method} at {cam.layer_name or cam.layer}")
    texts = [f"{cam.names[k] or int(cam.target[k])} ({float(cam.score[k]):.4g})" if int(cam.target[k]) >= 0
             else f"image {k}" for k in range(len(tiles))]
    label_tiles(draw, texts, tiles.shape[1], tiles.shape[2], 8, cols)
    return img
