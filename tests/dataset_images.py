"""A folder of test images for dataset passes: the demo generator's shapes, crops and flips of
the photo matplotlib ships, and broken files (empty, not an image, truncated, over Pillow's
decompression-bomb limit)."""

from __future__ import annotations

import os
import struct
import sys
import zlib

import matplotlib.cbook
import numpy as np
from PIL import Image

SCRIPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts")

#: name → what the skipped reason starts with
BROKEN = {
    "broken/empty.jpg": "image '{}' is empty (0 bytes)",
    "broken/text.png": "'{}' is not an image Pillow can decode",
    "broken/truncated.png": "image '{}' is truncated or corrupt",
    "broken/bomb.png": "image '{}' has 144,000,000 pixels, over Pillow's decompression-bomb limit",
}


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width × height`` and holds no pixel (an IHDR, an empty IDAT)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def make_images(folder, shapes: int = 24, photos: int = 8, broken: bool = True, seed: int = 0) -> list:
    """Write the images into ``folder`` (sub-folders, PNG and JPEG, several sizes); return the
    paths of the good ones."""
    sys.path.insert(0, SCRIPTS)
    try:
        import demo_shapes
    finally:
        sys.path.remove(SCRIPTS)
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(folder, "shapes", "more"), exist_ok=True)
    os.makedirs(os.path.join(folder, "photos"), exist_ok=True)
    good = []
    for k in range(shapes):
        img = Image.fromarray(demo_shapes.make_sample_image(seed * 1000 + k))
        if k % 4 == 3:
            img = img.resize((96, 80), Image.BILINEAR)        # resized back by the pass
        sub = "shapes/more" if k % 3 == 0 else "shapes"
        path = os.path.join(folder, sub, f"shape{k:03d}.{'jpg' if k % 5 == 4 else 'png'}")
        img.save(path, quality=95) if path.endswith(".jpg") else img.save(path)
        good.append(path)
    photo = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    for k in range(photos):
        side = int(rng.integers(80, 300))
        x, y = int(rng.integers(0, photo.width - side)), int(rng.integers(0, photo.height - side))
        crop = photo.crop((x, y, x + side, y + side))
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT if k % 2 else Image.FLIP_TOP_BOTTOM)
        path = os.path.join(folder, "photos", f"hopper{k:02d}.{'png' if k % 2 else 'jpg'}")
        crop.save(path)
        good.append(path)
    with open(os.path.join(folder, "notes.txt"), "w") as fh:   # not an image name: not listed
        fh.write("not an image\n")
    if broken:
        os.makedirs(os.path.join(folder, "broken"), exist_ok=True)
        open(os.path.join(folder, "broken", "empty.jpg"), "wb").close()
        with open(os.path.join(folder, "broken", "text.png"), "wb") as fh:
            fh.write(b"this is not a PNG file\n" * 4)
        data = open(good[0], "rb").read()
        with open(os.path.join(folder, "broken", "truncated.png"), "wb") as fh:
            fh.write(data[:len(data) // 2])
        with open(os.path.join(folder, "broken", "bomb.png"), "wb") as fh:
            fh.write(_png_header_only(12000, 12000))               # 1.6× Pillow's limit: only a warning there
    return good
