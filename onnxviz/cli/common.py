"""What the command line's commands share: the input options and their parsing, the output
targets and writing, the ``--feed`` arrays, and the progress bar. Part of :mod:`onnxviz.cli`,
the only place that prints (here: the tqdm bar on stderr)."""

from __future__ import annotations

import argparse
import sys


PRESETS = ("caffe", "torch", "tf", "unit", "raw")  # checked against preprocess.PRESETS in tests


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _size(text: str) -> int | str:
    from ..budget import parse_size

    if text.strip().lower() == "off":
        return "off"  # no budget (memory_budget: None)

    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _input_options(p: argparse.ArgumentParser) -> None:
    """What ``features`` and ``check`` share: how the input is made and fed, and the budget."""
    p.add_argument("--preprocess", choices=PRESETS, metavar="P",
                   help=f"one of {', '.join(PRESETS)} (default: the model's metadata, else raw)")
    p.add_argument("--size", type=_positive, nargs=2, metavar=("H", "W"),
                   help="input size for models with dynamic spatial dims")
    p.add_argument("--max-memory", type=_size, metavar="SIZE",
                   help="refuse, before running, maps that would need more memory than this, e.g. 512M or "
                        "8G, or 'off' (default 2G, or the ONNXVIZ_MAX_BYTES environment variable)")
    p.add_argument("--feed", action="append", type=_feed_arg, metavar="NAME=FILE.npy",
                   help="an array for another model input the layers need; repeat for several")


def _inputs(args, model=None) -> list[str]:
    """Every file the command reads (an output must be none of them): model, its data, image, feeds."""
    return [args.model, *(model.files() if model is not None else []), getattr(args, "image", None),
            *(path for _, path in getattr(args, "feed", None) or [])]


def _targets(args, model, names: list[str]) -> dict[str, str]:
    """``{layer: PNG path}``, every path checked before any work."""
    from ..output import check_target, layer_paths

    paths = layer_paths(args.output, names)
    for p in paths.values():
        check_target(p, protect=_inputs(args, model))
    return paths


def _write(pictures: list) -> None:
    """Write ``(path, draw, note)`` PNGs all at once (``draw()`` makes the picture; they are
    drawn and encoded side by side): all of them, or (on a failure) none."""
    from ..output import write_all
    from ..render import png_all

    data = png_all(draw for _, draw, _ in pictures)
    written = write_all({path: png for (path, _, _), png in zip(pictures, data)})
    for path, (_, _, note) in zip(written, pictures):
        print(f"wrote {path}  ({note})")


def _feed_arg(text: str) -> tuple[str, str]:
    """``--feed NAME=FILE.npy`` → ``(NAME, FILE.npy)``."""
    name, eq, path = text.partition("=")
    if not eq or not name or not path:
        raise argparse.ArgumentTypeError(f"'{text}' is not NAME=FILE.npy")
    return name, path


def _load_npy(path: str):
    """A numpy array from a ``.npy`` file (no pickles); :class:`ImageError` if it cannot be."""
    import math
    import os

    import numpy as np

    from ..errors import ImageError

    if not os.path.isfile(path):
        raise ImageError(f"array file '{path}' does not exist")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
        if magic.startswith(b"PK"):
            raise ImageError(f"'{path}' is a .npz archive; give a .npy file holding one array")
        if magic != b"\x93NUMPY":
            raise ImageError(f"'{path}' is not a .npy file (it does not start with numpy's .npy header)")
        with open(path, "rb") as fh:  # the header's size claim, checked before numpy allocates it
            version = np.lib.format.read_magic(fh)
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = header(fh)
            held = os.path.getsize(path) - fh.tell()
        needed = math.prod(shape) * dtype.itemsize
        if not dtype.hasobject and needed > held:
            raise ImageError(f"'{path}' is truncated: its header says shape {tuple(shape)} of {dtype} "
                             f"({needed:,} bytes), the file holds {held:,}")
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise ImageError(f"'{path}' holds Python objects (a pickle); onnxviz reads plain numeric "
                             ".npy arrays only") from None
        raise ImageError(f"'{path}' is not a .npy array numpy can read: {e}") from None
    except (OSError, EOFError) as e:
        raise ImageError(f"'{path}' is not a .npy array numpy can read: {e}") from None
    return arr


def _feeds(pairs) -> dict | None:
    """``--feed NAME=FILE.npy`` pairs (see :func:`_feed_arg`) → ``{NAME: array}``, or ``None``
    for none; a name given twice is refused before any file is read."""
    from ..errors import ImageError

    seen = set()
    for name, _ in pairs or []:
        if name in seen:
            raise ImageError(f"--feed {name}= is given twice; give each input once")
        seen.add(name)
    return {name: _load_npy(path) for name, path in pairs} if pairs else None


def progress(args, total: int, desc: str, unit: str = "it"):
    """A progress callback for long library calls: ``callback(done)`` with ``done`` counting up to
    ``total``; a tqdm bar on stderr, or ``None`` (no bar) with ``--quiet`` or when stderr is not
    a terminal. The library takes it as ``progress=`` and never draws anything itself."""
    if getattr(args, "quiet", False) or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, delay=2.0)

    def update(done: int) -> None:
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update
