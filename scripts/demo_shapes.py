"""Synthetic images for the onnxviz demo CNN (numpy only: no TensorFlow, no Pillow).

Nine classes, chosen so that a small CNN's first-layer 3x3 filters have to become
oriented-edge and colour detectors:

====================  =====================================================================
class                 image
====================  =====================================================================
stripes_horizontal    a grating of two random colours, bands running left-right (±10°)
stripes_vertical      ... bands running top-bottom
stripes_diag_up       ... bands running bottom-left to top-right ("/")
stripes_diag_down     ... bands running top-left to bottom-right ("\\")
checkerboard          an axis-aligned checkerboard of two random colours, cells 4-11 px
dots                  a jittered grid of round dots on a plain background
red_shape             one disc/square/triangle/ellipse in a red hue on a greyish background
green_shape           ... in a green hue
blue_shape            ... in a blue hue
====================  =====================================================================

Colours of the pattern classes are random (any hue), so only orientation/structure tells
them apart; the three shape classes differ only by hue. Every image gets random
brightness and Gaussian pixel noise. All randomness comes from ``numpy.random.Generator``
seeded by the caller, so every image, data set and sample is reproducible.

API::

    from demo_shapes import CLASSES, make_image, make_dataset, make_sample_image, write_png
    img = make_sample_image(3)                  # uint8 (64, 64, 3), class CLASSES[3 % 9]
    x, y = make_dataset(100, seed=1)            # 900 images, labels 0..8

Command line: ``python scripts/demo_shapes.py --seed 3 -o sample.png`` writes one sample.
"""

from __future__ import annotations

import argparse
import struct
import sys
import zlib

import numpy as np

CLASSES = (
    "stripes_horizontal",
    "stripes_vertical",
    "stripes_diag_up",
    "stripes_diag_down",
    "checkerboard",
    "dots",
    "red_shape",
    "green_shape",
    "blue_shape",
)
SIZE = 64

# direction along which a grating's intensity varies (image coords, y pointing down), degrees
_STRIPE_NORMAL = {"stripes_horizontal": 90.0, "stripes_vertical": 0.0,
                  "stripes_diag_up": 45.0, "stripes_diag_down": -45.0}
_SHAPE_HUE = {"red_shape": 0.0, "green_shape": 1 / 3, "blue_shape": 2 / 3}


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], np.float32)


def _luma(c: np.ndarray) -> float:
    return float(0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2])


def _two_colours(rng: np.random.Generator, min_contrast: float = 0.3):
    """Two random colours whose luminances differ by at least ``min_contrast``."""
    while True:
        a = _hsv_to_rgb(rng.random(), rng.uniform(0.0, 1.0), rng.uniform(0.1, 1.0))
        b = _hsv_to_rgb(rng.random(), rng.uniform(0.0, 1.0), rng.uniform(0.1, 1.0))
        if abs(_luma(a) - _luma(b)) >= min_contrast:
            return a, b


def _grid(size: int):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return xx, yy


def _stripes(rng, size, normal_deg):
    xx, yy = _grid(size)
    theta = np.deg2rad(normal_deg + rng.uniform(-10, 10))
    period = rng.uniform(6.0, 14.0)
    t = xx * np.cos(theta) + yy * np.sin(theta)
    wave = np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
    v = 0.5 + 0.5 * np.tanh(wave * rng.uniform(2.0, 8.0))  # soft square wave: clear edges
    a, b = _two_colours(rng)
    return a * (1 - v[..., None]) + b * v[..., None]


def _checkerboard(rng, size):
    xx, yy = _grid(size)
    cell = rng.integers(4, 12)
    ox, oy = rng.integers(0, cell, size=2)
    v = (((xx + ox) // cell + (yy + oy) // cell) % 2).astype(np.float32)
    a, b = _two_colours(rng)
    return a * (1 - v[..., None]) + b * v[..., None]


def _dots(rng, size):
    xx, yy = _grid(size)
    spacing = rng.uniform(9.0, 16.0)
    radius = spacing * rng.uniform(0.2, 0.33)
    v = np.zeros((size, size), np.float32)
    n = int(size / spacing) + 2
    off = rng.uniform(0, spacing, size=2)
    for i in range(-1, n):
        for j in range(-1, n):
            cx = off[0] + i * spacing + rng.uniform(-1.5, 1.5)
            cy = off[1] + j * spacing + rng.uniform(-1.5, 1.5)
            d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
            v = np.maximum(v, np.clip(radius + 0.5 - d, 0, 1))  # anti-aliased disc
    a, b = _two_colours(rng)
    return a * (1 - v[..., None]) + b * v[..., None]


def _shape_mask(rng, size):
    xx, yy = _grid(size)
    r = rng.uniform(0.14, 0.3) * size
    cx, cy = rng.uniform(r, size - r, size=2)
    kind = rng.integers(0, 4)
    if kind == 0:    # disc
        d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) - r
    elif kind == 1:  # square, rotated
        a = rng.uniform(0, np.pi / 2)
        u = (xx - cx) * np.cos(a) + (yy - cy) * np.sin(a)
        w = -(xx - cx) * np.sin(a) + (yy - cy) * np.cos(a)
        d = np.maximum(np.abs(u), np.abs(w)) - r * 0.85
    elif kind == 2:  # triangle, rotated: max over three half-planes
        a0 = rng.uniform(0, 2 * np.pi)
        d = np.max([(xx - cx) * np.cos(a0 + k * 2 * np.pi / 3) + (yy - cy) * np.sin(a0 + k * 2 * np.pi / 3)
                    for k in range(3)], axis=0) - r * 0.6
    else:            # ellipse, rotated
        a = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(a) + (yy - cy) * np.sin(a)
        w = -(xx - cx) * np.sin(a) + (yy - cy) * np.cos(a)
        d = (np.sqrt((u / r) ** 2 + (w / (0.55 * r)) ** 2) - 1.0) * r * 0.55
    return np.clip(0.5 - d, 0, 1)


def _shape(rng, size, hue):
    # greyish, low-saturation background with a faint smooth texture
    bg = _hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.15), rng.uniform(0.25, 0.85))
    xx, yy = _grid(size)
    tex = 0.06 * np.sin(xx / rng.uniform(5, 15) + rng.uniform(0, 6)) * np.cos(yy / rng.uniform(5, 15))
    img = np.clip(bg[None, None, :] + tex[..., None], 0, 1)
    h = (hue + rng.uniform(-0.04, 0.04)) % 1.0
    fg = _hsv_to_rgb(h, rng.uniform(0.65, 1.0), rng.uniform(0.55, 1.0))
    m = _shape_mask(rng, size)[..., None]
    return img * (1 - m) + fg * m


def make_image(cls: int | str, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """One image of class ``cls`` (index or name): uint8 (size, size, 3), RGB."""
    name = CLASSES[cls] if isinstance(cls, (int, np.integer)) else cls
    if name not in CLASSES:
        raise ValueError(f"unknown class {cls!r}; classes: {', '.join(CLASSES)}")
    if name in _STRIPE_NORMAL:
        img = _stripes(rng, size, _STRIPE_NORMAL[name])
    elif name == "checkerboard":
        img = _checkerboard(rng, size)
    elif name == "dots":
        img = _dots(rng, size)
    else:
        img = _shape(rng, size, _SHAPE_HUE[name])
    img = img * rng.uniform(0.8, 1.15) + rng.normal(0, 0.03, img.shape)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def make_sample_image(seed: int, cls: int | str | None = None, size: int = SIZE) -> np.ndarray:
    """A reproducible sample: class ``CLASSES[seed % 9]`` unless ``cls`` is given."""
    rng = np.random.default_rng([seed, 12345])
    return make_image(seed % len(CLASSES) if cls is None else cls, rng, size)


DEMO_QUADRANTS = ("red_shape", "stripes_vertical", "checkerboard", "blue_shape")


def make_demo_sample(seed: int = 3, size: int = SIZE) -> np.ndarray:
    """The image ``onnxviz demo`` ships (``models/demo_sample.png``): four classes in a 2x2 grid.

    Each quadrant is a ``size/2`` image of one of :data:`DEMO_QUADRANTS`, so one picture shows
    which channels answer colour, which vertical edges, which a texture.
    """
    half = size // 2
    tiles = [make_sample_image(seed + k, cls, half) for k, cls in enumerate(DEMO_QUADRANTS)]
    return np.concatenate([np.concatenate(tiles[:2], axis=1), np.concatenate(tiles[2:], axis=1)], axis=0)


def make_dataset(n_per_class: int, seed: int, size: int = SIZE):
    """(images uint8 (N, size, size, 3), labels int64 (N,)), classes interleaved."""
    rng = np.random.default_rng(seed)
    n = n_per_class * len(CLASSES)
    x = np.empty((n, size, size, 3), np.uint8)
    y = np.tile(np.arange(len(CLASSES)), n_per_class)
    for i in range(n):
        x[i] = make_image(int(y[i]), rng, size)
    return x, y.astype(np.int64)


def write_png(path, img: np.ndarray) -> None:
    """Write an HxWx3 (or HxW) uint8 array as PNG with zlib only."""
    img = np.ascontiguousarray(img, np.uint8)
    if img.ndim == 2:
        img = img[..., None]
    h, w, c = img.shape
    colour_type = {1: 0, 3: 2, 4: 6}[c]
    raw = b"".join(b"\0" + img[r].tobytes() for r in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour_type, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(raw, 9)))
        f.write(chunk(b"IEND", b""))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Write one synthetic demo image as PNG.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--class", dest="cls", choices=CLASSES, default=None,
                   help="default: CLASSES[seed %% 9]")
    p.add_argument("--size", type=int, default=SIZE)
    p.add_argument("--demo-sample", action="store_true",
                   help=f"the 2x2 grid of {', '.join(DEMO_QUADRANTS)} that onnxviz demo ships")
    p.add_argument("-o", "--output", required=True)
    a = p.parse_args(argv)
    try:
        img = make_demo_sample(a.seed, a.size) if a.demo_sample else make_sample_image(a.seed, a.cls, a.size)
        write_png(a.output, img)
    except OSError as e:
        print(f"error: cannot write {a.output}: {e.strerror or e}", file=sys.stderr)
        return 1
    name = "demo sample (2x2 grid)" if a.demo_sample else a.cls or CLASSES[a.seed % len(CLASSES)]
    print(f"wrote {a.output} ({a.size}x{a.size}, class {name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
