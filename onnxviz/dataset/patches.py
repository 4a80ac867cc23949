"""Receptive-field patches: the part of each top image that one position of a channel saw.

>>> patches, present = cut_patches(result, field, paths, (64, 64), channels=32)      # doctest: +SKIP
>>> patches.shape                                                                   # doctest: +SKIP
(32, 9, 32, 32, 3)

Each top image is decoded again and resized to the model's input size, as the model saw it
(before its preprocessing: RGB, 0–255), and the box of the receptive field of the position
of the channel's max (``top_yx``) is cut out: ``field.box(position)``
(:class:`onnxviz.graph.receptive.Field`). Where the box reaches out of the image (padding),
the patch is filled with mid-grey; a box larger than the image on an axis is the whole image
on that axis. A layer whose field is whole, or unknown (``None``), gets whole images.

Images are decoded once each, in threads. An image that cannot be decoded any more (moved or
changed since the pass) leaves an empty cell.

Known limits: 2-D layers of image inputs only.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import ImageError
from ..preprocess import to_tensor

__all__ = ["cut_patches", "crop", "FILL"]

FILL = 128   # grey, where a receptive field reaches out of the image


def crop(image: np.ndarray, box) -> np.ndarray:
    """``image[y0:y1, x0:x1]`` for ``box`` ``((y0, y1), (x0, x1))``, grey outside the image."""
    (y0, y1), (x0, x1) = box
    h, w = image.shape[:2]
    out = np.full((y1 - y0, x1 - x0, 3), FILL, np.uint8)
    ya, yb, xa, xb = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
    if ya < yb and xa < xb:
        out[ya - y0:yb - y0, xa - x0:xb - x0] = image[ya:yb, xa:xb]
    return out


def _box(field, position, size) -> tuple:
    """The patch box of ``position``: the field's, an axis whose field is larger than the image
    being the whole image; the whole image for a whole or unknown field."""
    if field is None or field.whole:
        return tuple((0, n) for n in size)
    return tuple((0, n) if b - a >= n else (a, b) for (a, b), n in zip(field.box(position), size))


def _load(path: str, size: tuple):
    try:
        x = to_tensor(path, size=size, layout="NHWC", preset="raw")[0]
    except ImageError:
        return None
    return np.clip(np.rint(x[:, :, :3] if x.shape[2] >= 3 else np.repeat(x, 3, axis=2)), 0, 255).astype(np.uint8)


def cut_patches(result: dict, field, paths: list, size: tuple, channels: int, workers: int = 0):
    """``(patches, present)`` for the first ``channels`` channels of a layer's ``result``
    (:meth:`onnxviz.dataset.state.LayerState.result`): ``(R, K, h, w, 3)`` uint8 and ``(R, K)``
    bool, ``present`` False for empty slots and images that cannot be decoded any more."""
    image, yx = result["top_image"][:channels], result["top_yx"][:channels]
    rows, k = image.shape
    wanted = sorted({int(i) for i in image.ravel() if i >= 0})
    with ThreadPoolExecutor(max(1, workers or os.cpu_count() or 1)) as pool:
        loaded = dict(zip(wanted, pool.map(lambda i: _load(paths[i], size), wanted)))
    boxes = [[_box(field, tuple(yx[r, q]), size) for q in range(k)] for r in range(rows)]
    ph, pw = (b - a for a, b in boxes[0][0]) if rows and k else (1, 1)
    patches = np.full((rows, k, ph, pw, 3), FILL, np.uint8)
    present = np.zeros((rows, k), bool)
    for r in range(rows):
        for q in range(k):
            img = loaded.get(int(image[r, q]))
            if img is not None:
                patches[r, q] = crop(img, boxes[r][q])
                present[r, q] = True
    return patches, present
