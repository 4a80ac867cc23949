"""The ``onnxviz`` command: parse, call the library, report. The only place that prints or exits.

    onnxviz summary  MODEL [--json]
    onnxviz filters  MODEL [--layer L]... [--max N] [--rgb] -o OUT
    onnxviz features MODEL IMAGE [--layer L]... [--max N] [--preprocess P] [--size H W]
                     [--raw-conv] [--shared] [--max-memory SIZE] [--feed NAME=FILE.npy]... -o OUT
    onnxviz check    MODEL [IMAGE] [--preprocess P] [--size H W] [--max-memory SIZE]
                     [--feed NAME=FILE.npy]... [--json]
    onnxviz demo     [-o OUTDIR]
    onnxviz report   MODEL IMAGE... [--layer L]... [--labels FILE] [--cam METHOD] [--patterns]
                     [--dataset DIR] [--max N] [--top K] [--top-channels K] [--preprocess P]
                     [--size H W] [--max-memory SIZE] [--max-size SIZE] -o REPORT.html
    onnxviz saliency MODEL IMAGE [--method M] [--class C] [--preprocess P] [--size H W] -o OUT
    onnxviz patterns MODEL --layer L [--max N | --channels C,C,…] [--size S] [--steps N] [--lr LR]
                     [--jitter J] [--start keras|gray] [--revive] [--seed S] -o OUT
    onnxviz stats    MODEL [IMAGE...] [--layer L]... [--top K] [--preprocess P] [--size H W]
                     [--max-memory SIZE] [--feed NAME=FILE.npy]... [--json]
    onnxviz cam      MODEL IMAGE... [--method M] [--layer L] [--class C | --top K] [--labels FILE]
                     [--top-channels K] [--batch N] [--sign-correction] [--cmap NAME] [--alpha A]
                     [--full-size] [--preprocess P] [--size H W] [--max-memory SIZE] -o OUT.png
    onnxviz dataset  MODEL SOURCE --layer L... [--top K] [--batch N] [--workers N] [--resume]
                     [--engine local|ray] [--address ADDR] [--max N] [--checkpoint-every N]
                     [--preprocess P] [--size H W] [--max-memory SIZE] -o OUTDIR

``features --overlay C`` draws channel C of each layer over the image instead of the mosaic.

IMAGE may be a ``.npy`` array of the model input's shape, fed as is (1-D and 3-D conv nets).

Exit codes: 0 success; 1 failure, with one ``error: …`` line on stderr (a traceback only
with ``--debug``); 2 bad usage. ``main(argv)`` returns the code instead of exiting, so it
can be tested in-process.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from .. import __version__
from ..errors import OnnxvizError, OnnxvizWarning
from ..errors import format_shape
from .common import (PRESETS, _feeds, _input_options, _inputs, _load_npy, _positive, _size, _targets, _write,
                     progress)
# the explanation commands (saliency, patterns, stats, cam) live in .explain; their method
# lists are named here too, where the tests compare them with the library's
from .explain import (CAM_METHODS, SALIENCY_METHODS, _cam, _cam_parser, _gradient_parsers, _patterns,  # noqa: F401
                      _saliency, _stats, _stats_parser)

__all__ = ["main", "progress", "CAM_METHODS", "SALIENCY_METHODS", "PRESETS"]


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of an error")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bar on stderr")
    p = argparse.ArgumentParser(
        prog="onnxviz", parents=[common],
        description="See the filters and feature maps of any ONNX convolutional network.")
    p.add_argument("--version", action="version", version=f"onnxviz {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("summary", parents=[common], help="list the conv layers of a model")
    s.add_argument("model", metavar="MODEL")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")

    layer_help = ("a layer by index, name, ONNX name or glob (block*_conv3); repeat for several")
    f = sub.add_parser("filters", parents=[common], help="draw a layer's filters")
    f.add_argument("model", metavar="MODEL")
    f.add_argument("--layer", action="append", metavar="L", help=layer_help + "; default: the first")
    f.add_argument("--max", type=_positive, metavar="N", help="filters to draw (default 16, 64 with --rgb)")
    f.add_argument("--rgb", action="store_true", help="each 3-channel filter as one colour image")
    f.add_argument("-o", "--output", required=True, metavar="OUT", help="PNG to write")

    m = sub.add_parser("features", parents=[common], help="draw feature maps for an image")
    m.add_argument("model", metavar="MODEL")
    m.add_argument("image", metavar="IMAGE",
                   help="an image file, or a .npy array of the model input's shape, fed as is "
                        "(the way to feed 1-D and 3-D conv nets)")
    m.add_argument("--layer", action="append", metavar="L",
                   help=layer_help + "; default: the last conv of every stage")
    m.add_argument("--max", type=_positive, default=64, metavar="N", help="maps per layer (default 64)")
    _input_options(m)
    m.add_argument("--raw-conv", action="store_true", help="the conv output, before bias/BN/activation")
    m.add_argument("--shared", action="store_true", help="one colour scale for all maps of a layer")
    m.add_argument("--overlay", type=int, metavar="C", help="channel C of each layer over the image, not the mosaic")
    m.add_argument("-o", "--output", required=True, metavar="OUT", help="PNG to write")
    c = sub.add_parser("check", parents=[common],
                       help="is this model supported? every layer through filters and feature maps")
    c.add_argument("model", metavar="MODEL")
    c.add_argument("image", metavar="IMAGE", nargs="?",
                   help="an image or a .npy input tensor (default: a sample photo, or a random "
                        "tensor for models whose input is not an image)")
    _input_options(c)
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    d = sub.add_parser("demo", parents=[common], help="the whole tour on the shipped demo model, offline")
    d.add_argument("-o", "--output", default="onnxviz-demo", metavar="OUTDIR",
                   help="folder to write into (default ./onnxviz-demo)")
    _report_parser(sub, common, layer_help)
    _gradient_parsers(sub, common)
    _stats_parser(sub, common, layer_help)
    _cam_parser(sub, common)
    _dataset_parser(sub, common, layer_help)
    return p


# ---------------------------------------------------------------- onnxviz report (issue 14)

def _report_parser(sub, common, layer_help: str) -> None:
    r = sub.add_parser("report", parents=[common],
                       help="one self-contained HTML page: model card, filters, maps, classes")
    r.add_argument("model", metavar="MODEL")
    r.add_argument("image", metavar="IMAGE", nargs="+", help="images to show the model (one that cannot "
                   "be decoded is named in the report, and the others go on)")
    r.add_argument("--layer", action="append", metavar="L",
                   help=layer_help + "; default: the last conv of every stage")
    r.add_argument("--labels", metavar="FILE", help="class names, one a line (default: the model's "
                   "onnxviz.labels metadata, else class indices)")
    r.add_argument("--cam", metavar="METHOD", default="auto", choices=("auto", "none") + CAM_METHODS,
                   help=f"class activation maps of each image's top 3 classes: auto (Grad-CAM, else AblationCAM "
                        f"where no gradient can be built), none, or one of {', '.join(CAM_METHODS)}")
    r.add_argument("--patterns", action="store_true", help="what each filter responds to (gradient ascent)")
    r.add_argument("--dataset", metavar="DIR", help="the -o folder of 'onnxviz dataset': its top-K patches")
    r.add_argument("--max", type=_positive, default=64, metavar="N", help="maps per layer and image (default 64)")
    r.add_argument("--top", type=_positive, default=5, metavar="K", help="classes listed per image (default 5)")
    r.add_argument("--top-channels", type=_positive, default=8, metavar="K",
                   help="channels ranked by mean activation, per layer and image (default 8)")
    r.add_argument("--preprocess", choices=PRESETS, metavar="P",
                   help=f"one of {', '.join(PRESETS)} (default: the model's metadata, else raw)")
    r.add_argument("--size", type=_positive, nargs=2, metavar=("H", "W"),
                   help="input size for models with dynamic spatial dims")
    r.add_argument("--max-memory", type=_size, metavar="SIZE",
                   help="refuse, before running, maps that would need more memory than this (default 2G)")
    r.add_argument("--max-size", type=_size, metavar="SIZE",
                   help="refuse a report larger than this, naming what to drop (default 25M)")
    r.add_argument("-o", "--output", required=True, metavar="REPORT.html", help="HTML file to write")


def _report(args) -> int:
    import os

    from ..errors import format_bytes
    from ..model import load
    from ..output import check_target
    from ..report import MAX_SIZE, report

    check_target(args.output, protect=[args.model, *args.image])
    model = load(args.model)
    layers = model.select(args.layer) if args.layer else model.stage_ends()
    path = report(model, args.image, args.output, layers=layers, labels=args.labels, cam=args.cam,
                  patterns=args.patterns, dataset=args.dataset, max_channels=args.max, top=args.top,
                  top_channels=args.top_channels, preprocess=args.preprocess,
                  size=tuple(args.size) if args.size else None, max_bytes=args.max_memory,
                  max_size=args.max_size or MAX_SIZE, progress=progress(args, 2 + len(layers), "report"))
    print(f"wrote {path}  ({format_bytes(os.path.getsize(path))}, {len(layers)} layers)")
    return 0


# ------------------------------------------------------------------ gradients (issue 12)


# ---------------------------------------------------------------- onnxviz stats (issue 11)


# ------------------------------------------------------------- class activation maps (issue 11)


def _check_overlay(args, source) -> None:
    from ..errors import ImageError

    if args.overlay < 0:
        raise ImageError(f"--overlay {args.overlay}: a channel is a whole number, 0 or more")
    if not isinstance(source, str):
        raise ImageError("--overlay draws a map over an image; give an image file, not a .npy array")


def _overlays(args, model, path: str, maps: dict, paths: dict) -> list:
    """``features --overlay C``: channel C of each layer's map over the image at the input size."""
    import numpy as np

    from .. import preprocess as prep
    from ..errors import LayerError, UnsupportedModelError
    from ..render.overlay import channel_overlay

    pictures = []
    for name, fm in maps.items():
        if fm.ndim != 4:
            raise UnsupportedModelError(f"--overlay draws 2-D maps over an image; layer '{name}' is {fm.ndim - 2}-D")
        if args.overlay >= fm.shape[1]:
            raise LayerError(f"channel {args.overlay} is out of range: layer '{name}' has {fm.shape[1]} channels "
                             f"(0–{fm.shape[1] - 1})")
    inp = model.input
    size = tuple(args.size) if args.size else tuple(inp.size)
    photo = prep.to_tensor(path, size=size, layout="NHWC", preset="raw")[0].astype(np.uint8)
    c = args.overlay
    for name, fm in maps.items():
        title = f"{name}: channel {c} of {fm.shape[1]} ({fm.shape[2]}×{fm.shape[3]}) over the image"
        pictures.append((paths[name], lambda fm=fm, title=title: channel_overlay(photo, fm[0, c], title),
                         f"{name}: channel {c} over the image"))
    return pictures


def _summary(args) -> int:
    from ..model import load

    model = load(args.model)
    print(json.dumps(model.summary(), indent=2) if args.json else model.summary_text())
    return 0


def _filters(args) -> int:
    from ..model import load
    from ..output import check_target
    from ..render import filter_image

    check_target(args.output, protect=_inputs(args))
    model = load(args.model)
    layers = model.select(args.layer if args.layer else [0])
    paths = _targets(args, model, [l.name for l in layers])
    _write([(paths[l.name], lambda l=l: filter_image(model, l, max=args.max, rgb=args.rgb),
             f"{l.name}: filters {format_shape(l.filter_shape)}") for l in layers])
    return 0


def _features(args) -> int:
    from ..errors import ImageError
    from ..model import load
    from ..output import check_target
    from ..render import feature_map_image

    check_target(args.output, protect=_inputs(args))
    model = load(args.model)
    layers = model.select(args.layer) if args.layer else model.stage_ends()
    paths = _targets(args, model, [l.name for l in layers])
    source = args.image
    if args.image.lower().endswith(".npy"):
        if args.preprocess or args.size:
            raise ImageError(f"--preprocess and --size apply to images; the array '{args.image}' "
                             "is fed as is (drop them)")
        source = _load_npy(args.image)
        inp = model.input
        if inp is not None and inp.shape and source.ndim != len(inp.shape):
            raise ImageError(f"the array '{args.image}' has shape {source.shape}; the model input "
                             f"'{inp.name}' has shape {list(inp.shape)}: give an array of that rank")
    if args.overlay is not None:
        _check_overlay(args, source)
    maps = model.feature_maps(source, layers, preprocess=args.preprocess,
                              size=tuple(args.size) if args.size else None, raw_conv=args.raw_conv,
                              feeds=_feeds(args.feed), max_bytes=args.max_memory)
    if args.overlay is not None:
        _write(_overlays(args, model, source, maps, paths))
        return 0
    _write([(paths[name], lambda fm=fm, name=name: feature_map_image(fm, name, max=args.max, shared=args.shared,
                                                                       spatial=fm.ndim - 2),
             f"{name}: {format_shape(fm.shape[1:])}") for name, fm in maps.items()])
    return 0


def _check(args) -> int:
    from ..check import check, report_text
    from ..errors import listing

    source = args.image
    if source is not None and source.lower().endswith(".npy"):
        source = _load_npy(source)
    report = check(args.model, source, preprocess=args.preprocess,
                   size=tuple(args.size) if args.size else None, feeds=_feeds(args.feed),
                   max_bytes=args.max_memory)
    print(json.dumps(report, indent=2) if args.json else report_text(report))
    bad = [layer["name"] for layer in report["layers"] if not layer["ok"]]
    if bad:
        raise OnnxvizError(f"{len(bad)} of {len(report['layers'])} layers cannot be fully shown: "
                           f"{listing(bad)} (reasons above)")
    return 0


def _demo(args) -> int:
    from ..demo import demo_model_path, run_demo

    print(f"demo model: {demo_model_path()}")
    for what, path in run_demo(args.output):
        print(f"wrote {path}  ({what})")
    return 0


# ------------------------------------------------------------------ onnxviz dataset (issue 13)

DATASET_ENGINES = ("local", "ray")  # = dataset.ENGINES (a test checks): the parser imports no library module


def _dataset_parser(sub, common, layer_help: str) -> None:
    d = sub.add_parser("dataset", parents=[common],
                       help="which images (and patches) of a folder excite each channel most")
    d.add_argument("model", metavar="MODEL")
    d.add_argument("source", metavar="SOURCE",
                   help="a folder of images (searched recursively), a text file of image paths (one a line) "
                        "or a glob such as 'photos/**/*.jpg'")
    d.add_argument("--layer", action="append", required=True, metavar="L", help=layer_help)
    d.add_argument("--top", type=_positive, default=9, metavar="K", help="images kept per channel (default 9)")
    d.add_argument("--batch", type=_positive, default=32, metavar="N", help="images a run (default 32)")
    d.add_argument("--workers", type=_positive, metavar="N",
                   help="decoding threads (local engine) or actors (Ray); default: every core or CPU")
    d.add_argument("--resume", action="store_true", help="continue the interrupted pass whose checkpoint is in -o")
    d.add_argument("--engine", choices=DATASET_ENGINES, default="local", help="local (default) or ray")
    d.add_argument("--address", metavar="ADDR", help="the Ray cluster to join (default: start a local one)")
    d.add_argument("--max", type=_positive, default=32, metavar="N", help="channels drawn per layer (default 32)")
    d.add_argument("--checkpoint-every", type=_positive, default=1000, metavar="N",
                   help="images between checkpoints (default 1000)")
    d.add_argument("--preprocess", choices=PRESETS, metavar="P",
                   help=f"one of {', '.join(PRESETS)} (default: the model's metadata, else raw)")
    d.add_argument("--size", type=_positive, nargs=2, metavar=("H", "W"),
                   help="input size for models with dynamic spatial dims")
    d.add_argument("--max-memory", type=_size, metavar="SIZE",
                   help="refuse, before running, a batch whose maps would need more memory than this (default 2G)")
    d.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder to write (made if missing)")


def _dataset(args) -> int:
    from ..dataset import dataset
    from ..errors import OnnxvizError as Error

    if args.address and args.engine != "ray":
        raise Error("--address is for --engine ray (the cluster to join)")
    bar = []

    def update(done: int, total: int) -> None:
        if not bar:
            bar.append(progress(args, total, "dataset", "image"))
        if bar[0] is not None:
            bar[0](done)

    res = dataset(args.model, args.source, args.layer, top=args.top, engine=args.engine, out=args.output,
                  batch=args.batch, workers=args.workers, resume=args.resume, checkpoint_every=args.checkpoint_every,
                  max_channels=args.max, preprocess=args.preprocess, size=tuple(args.size) if args.size else None,
                  address=args.address, max_bytes=args.max_memory, progress=update)
    read = next(iter(res.values())).count
    rate = f", {res.images / res.seconds:,.0f} images/s" if res.seconds > 0 and res.images else ""
    print(f"wrote {res.out}: {len(res)} layer{'s' if len(res) != 1 else ''} over {read:,} images, "
          f"{len(res.skipped):,} skipped{' (skipped.txt says why)' if res.skipped else ''} "
          f"({res.seconds:.1f} s{rate})")
    return 0


_COMMANDS = {"summary": _summary, "filters": _filters, "features": _features, "check": _check,
             "demo": _demo, "report": _report, "saliency": _saliency, "patterns": _patterns,
             "stats": _stats, "cam": _cam, "dataset": _dataset}


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code (0 ok, 1 error, 2 usage)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on bad usage and 0 on --help/--version
        return int(e.code or 0)
    debug = getattr(args, "debug", False)
    seen: set[str] = set()

    def show(message, category, *_args, **_kw):
        """Warnings are printed as they happen, each once: always before a failure's error line."""
        if issubclass(category, OnnxvizWarning) and str(message) not in seen:
            seen.add(str(message))
            print(f"warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always", OnnxvizWarning)
        warnings.showwarning = show
        try:
            return _COMMANDS[args.command](args)
        except OnnxvizError as e:
            if debug:
                raise
            return _error(str(e))
        except KeyboardInterrupt:
            return _error("interrupted")
        except MemoryError:
            if debug:
                raise
            return _error("out of memory; try fewer layers, a smaller --size or a smaller batch")
        except Exception as e:  # a bug of ours: still one line, the traceback with --debug
            if debug:
                raise
            return _error(f"internal error: {type(e).__name__}: {' '.join(str(e).split())} "
                          "(run with --debug for the traceback)")


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1
