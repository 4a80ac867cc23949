"""Per-channel statistics of feature maps, and the channels that respond most to an image.

>>> import onnxviz
>>> from onnxviz.stats import channel_stats, top_channels
>>> fm = m.feature_maps(["cat.jpg", "dog.jpg"], layers="block5_conv3")      # doctest: +SKIP
>>> s = channel_stats(fm["block5_conv3"])                                   # doctest: +SKIP
>>> s["mean"].shape, s["max"].shape, s["active"].shape                      # doctest: +SKIP
((2, 512), (2, 512), (2, 512))
>>> top_channels(fm["block5_conv3"], k=3, image=1)                           # doctest: +SKIP
array([311,  47, 150])

Maps are ``(N, C, …)`` float32 (any number of spatial axes). Per image and channel:

==========  ================================================================
``mean``    the mean over positions
``max``     the maximum over positions
``min``     the minimum over positions (the low end of the channel's colour scale)
``active``  the fraction of positions > 0 (after a ReLU: how often it fires)
==========  ================================================================

A channel's rank for an image is its ``mean`` (ties: the lower channel index first), so a
channel that fires weakly everywhere can outrank one that fires strongly in one place; pass
``by="max"`` for the other view.

Known limits: statistics are computed in float64 and returned as float32; NaN maps give NaN.
"""

from __future__ import annotations

import numpy as np

from .errors import OnnxvizError

__all__ = ["channel_stats", "top_channels", "STATS"]

STATS = ("mean", "max", "min", "active")


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


def top_channels(maps, k: int = 8, image: int = 0, by: str = "mean", stats: dict | None = None) -> np.ndarray:
    """The ``k`` channels of highest ``by`` (a :data:`STATS` name) for image ``image``, best first.

    ``stats``: :func:`channel_stats` of ``maps`` if already computed (then ``maps`` may be ``None``).
    """
    if by not in STATS:
        raise OnnxvizError(f"unknown statistic '{by}'; statistics are: {', '.join(STATS)}")
    values = (stats or channel_stats(maps))[by]
    if not -len(values) <= image < len(values):
        raise OnnxvizError(f"image {image} is out of range; the batch has {len(values)}")
    order = np.argsort(-values[image].astype(np.float64), kind="stable")  # ties: lower index first
    return order[:max(0, int(k))]
