"""Which images a dataset pass reads: a folder, a text file of paths, or a glob.

>>> paths, rejected = list_images("photos/")            # every image file below it, sorted  # doctest: +SKIP
>>> paths, rejected = list_images("train.txt")          # one path a line                   # doctest: +SKIP
>>> paths, rejected = list_images("photos/**/*.jpg")    # a glob, recursive with **          # doctest: +SKIP

===========  ==================================================================================
folder       every file below it (symbolic links to files included, to folders not followed)
             whose name ends in one of :data:`IMAGE_EXTENSIONS` (any case), sorted by path
text file    one path a line (UTF-8), relative ones to the file's folder; blank lines and
             lines starting with ``#`` left out; a path listed twice is read once
glob         the files it matches (``**``: any depth), sorted, whatever their extension
a list       (in Python) these paths, in this order; a path given twice is read once
===========  ==================================================================================

Paths are made absolute, so a pass can be resumed from another working folder (and read by
workers on other machines that share the file system). A name with a line break cannot be a
line of ``index.txt``: it is ``rejected`` (path and why), and listed as skipped.

Known limits: an unreadable sub-folder is left out without a word (``os.walk``'s way).
"""

from __future__ import annotations

import glob
import os

from ..errors import ImageError

__all__ = ["list_images", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
                    ".pbm", ".pnm")


def _folder(folder: str) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found += [os.path.join(root, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)]
    if not found:
        raise ImageError(f"no images in '{folder}' (files ending {', '.join(IMAGE_EXTENSIONS[:5])}, …, "
                         "looked for in every sub-folder)")
    return found


def _text(path: str) -> list[str]:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise ImageError(f"cannot read '{path}': {e.strerror or e}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ImageError(f"'{path}' is not a text file of image paths (one a line, UTF-8): it is not UTF-8 "
                         "(a single image? give its folder, or a glob)") from None
    base = os.path.dirname(os.path.abspath(path))
    lines = [line.rstrip("\r") for line in text.split("\n")]
    found = [os.path.join(base, line) for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not found:
        raise ImageError(f"'{path}' lists no image paths (one a line; blank lines and # comments are left out)")
    return list(dict.fromkeys(found))


def list_images(source) -> tuple[list[str], list[tuple[str, str]]]:
    """``(paths, rejected)``: the absolute image paths of ``source`` (a folder, a text file of
    paths, a glob, or a list of paths) in the order they are numbered, and ``(path, why)`` for
    names that cannot be listed. A source that does not exist, cannot be read, or holds no
    images raises :class:`~onnxviz.errors.ImageError`."""
    if isinstance(source, (list, tuple)):
        found = list(dict.fromkeys(os.fspath(p) for p in source))
        if not found:
            raise ImageError("the list of images is empty")
        return _named(found)
    source = os.fspath(source)
    if os.path.isdir(source):
        if not os.access(source, os.R_OK | os.X_OK):
            raise ImageError(f"cannot read the folder '{source}': permission denied")
        found = _folder(source)
    elif os.path.exists(source):
        found = _text(source)
    elif glob.has_magic(source):
        found = sorted(p for p in glob.glob(source, recursive=True) if os.path.isfile(p))
        if not found:
            raise ImageError(f"the glob '{source}' matches no files")
    else:
        raise ImageError(f"image source '{source}' does not exist; give a folder of images, a text file of "
                         "image paths (one a line) or a glob such as 'photos/**/*.jpg'")
    return _named(found)


def _named(found: list) -> tuple[list, list]:
    """Absolute paths, and the names ``index.txt`` cannot hold."""
    paths, rejected = [], []
    for p in found:
        p = os.path.abspath(p)
        if "\n" in p or "\r" in p:
            rejected.append((repr(p), "its name has a line break, which index.txt cannot hold"))
        else:
            paths.append(p)
    return paths, rejected
