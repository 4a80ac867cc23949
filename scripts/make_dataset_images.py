"""A folder of images for `onnxviz dataset`: the demo generator's shapes (``demo_shapes.py``),
crops and flips of the photo matplotlib ships, and (``--broken``) broken files: empty, not an
image, truncated, over Pillow's decompression-bomb limit. Offline, reproducible.

    python scripts/make_dataset_images.py -o images/ [--shapes 1800] [--photos 200] [--size 64]
                                          [--jpeg] [--broken]

The tests (``tests/test_dataset.py``), the benchmark (``bench_dataset.py``) and the README's
picture use it.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import zlib

import matplotlib.cbook
import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))

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


def make_images(folder, shapes: int = 24, photos: int = 8, broken: bool = True, seed: int = 0, size: int = 64,
                jpeg: bool = False) -> list:
    """Write the images into ``folder`` and return the paths of the good ones: ``shapes`` of the
    demo generator (every 4th resized to 1.5×1.25 its size and back by the pass, every 5th a
    JPEG, a third in a sub-folder; all JPEG with ``jpeg``), ``photos`` square crops of
    matplotlib's photo flipped, and the :data:`BROKEN` files."""
    sys.path.insert(0, HERE)
    try:
        import demo_shapes
    finally:
        sys.path.remove(HERE)
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(folder, "shapes", "more"), exist_ok=True)
    good = []
    for k in range(shapes):
        img = Image.fromarray(demo_shapes.make_sample_image(seed * 1000 + k, size=size))
        if k % 4 == 3 and not jpeg:
            img = img.resize((size * 3 // 2, size * 5 // 4), Image.BILINEAR)        # resized back by the pass
        sub = "shapes/more" if k % 3 == 0 else "shapes"
        path = os.path.join(folder, sub, f"shape{k:05d}.{'jpg' if jpeg or k % 5 == 4 else 'png'}")
        img.save(path, quality=90) if path.endswith(".jpg") else img.save(path)
        good.append(path)
    if photos:
        os.makedirs(os.path.join(folder, "photos"), exist_ok=True)
        photo = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    for k in range(photos):
        side = int(rng.integers(80, 300))
        x, y = int(rng.integers(0, photo.width - side)), int(rng.integers(0, photo.height - side))
        crop = photo.crop((x, y, x + side, y + side))
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT if k % 2 else Image.FLIP_TOP_BOTTOM)
        path = os.path.join(folder, "photos", f"hopper{k:03d}.{'png' if k % 2 else 'jpg'}")
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", required=True, help="folder to write into (made if missing)")
    p.add_argument("--shapes", type=int, default=1800, help="demo-generator images (default 1800: 200 a class)")
    p.add_argument("--photos", type=int, default=200, help="crops of matplotlib's photo (default 200)")
    p.add_argument("--size", type=int, default=64, help="side of the generated images (default 64)")
    p.add_argument("--jpeg", action="store_true", help="every generated image as JPEG")
    p.add_argument("--broken", action="store_true", help="add the four broken files")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    good = make_images(a.output, a.shapes, a.photos, a.broken, a.seed, a.size, a.jpeg)
    print(f"wrote {len(good)} images{' and 4 broken files' if a.broken else ''} into {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
