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

from . import __version__
from .errors import OnnxvizError, OnnxvizWarning
from .errors import format_shape

__all__ = ["main"]

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
    from .budget import parse_size

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

    from .errors import format_bytes
    from .model import load
    from .output import check_target
    from .report import MAX_SIZE, report

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

def _channel_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of channel numbers") from None


SALIENCY_METHODS = ("gradient", "smoothgrad", "integrated", "guided")  # = explain.saliency.METHODS (a test checks)


def _gradient_parsers(sub, common) -> None:
    """``saliency`` and ``patterns``: gradients of the model, as ONNX backward graphs."""
    METHODS = SALIENCY_METHODS  # noqa: N806 (not imported: the parser must not load onnxruntime)
    s = sub.add_parser("saliency", parents=[common], help="which pixels the class score is sensitive to")
    s.add_argument("model", metavar="MODEL")
    s.add_argument("image", metavar="IMAGE", help="an image file, or a .npy input tensor of the model's shape")
    s.add_argument("--method", choices=METHODS, default="gradient", metavar="M",
                   help=f"one of {', '.join(METHODS)} (default gradient)")
    s.add_argument("--class", dest="target", type=int, metavar="C", help="the class (default: the top one)")
    s.add_argument("--samples", type=_positive, default=25, metavar="N", help="smoothgrad samples (default 25)")
    s.add_argument("--steps", type=_positive, default=50, metavar="N", help="integrated-gradient steps (default 50)")
    _input_options(s)
    s.add_argument("-o", "--output", required=True, metavar="OUT", help="PNG to write")
    t = sub.add_parser("patterns", parents=[common], help="the image each filter of a layer responds to most")
    t.add_argument("model", metavar="MODEL")
    t.add_argument("--layer", required=True, metavar="L", help="a layer by index, name or ONNX name")
    t.add_argument("--max", type=_positive, default=16, metavar="N", help="the first N channels (default 16)")
    t.add_argument("--channels", type=_channel_list, metavar="C,C,…", help="these channels instead of the first N")
    t.add_argument("--size", type=_positive, metavar="S", help="image side (default: the model's, else 128)")
    t.add_argument("--steps", type=_positive, default=30, metavar="N", help="gradient-ascent steps (default 30)")
    t.add_argument("--lr", type=float, default=10.0, metavar="LR", help="step length (default 10)")
    t.add_argument("--jitter", type=int, default=0, metavar="J", help="random shifts of up to J pixels per step")
    t.add_argument("--start", choices=("keras", "gray"), default="keras",
                   help="the Keras example's start, or mid-gray pixels preprocessed (default keras)")
    t.add_argument("--revive", action="store_true", help="channels dead at the start climb their ReLU's input")
    t.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    t.add_argument("--batch", type=_positive, default=16, metavar="B", help="channels per run (default 16)")
    t.add_argument("--max-memory", type=_size, metavar="SIZE", help="the memory budget (default 2G)")
    t.add_argument("-o", "--output", required=True, metavar="OUT", help="PNG to write")


def _display_image(args, model, x):
    """The picture saliency is drawn beside: the image at the input size, or a .npy tensor's RGB."""
    import numpy as np

    from . import preprocess as prep

    if not args.image.lower().endswith(".npy"):
        size = tuple(x.shape[1:3] if model.input.layout == "NHWC" else x.shape[2:4])
        return prep.to_tensor(args.image, size=size, layout="NHWC", preset="raw")[0].astype(np.uint8)
    t = x[0] if model.input.layout == "NHWC" else x[0].transpose(1, 2, 0)
    t = np.repeat(t[..., :1], 3, axis=2) if t.shape[2] != 3 else t
    span = float(t.max() - t.min()) or 1.0
    return ((t - t.min()) / span * 255).astype(np.uint8)


def _saliency(args) -> int:
    from .errors import ImageError
    from .explain.saliency import saliency
    from .model import load
    from .output import check_target
    from .render.patterns import saliency_image

    check_target(args.output, protect=_inputs(args))
    model = load(args.model)
    source = args.image
    if args.image.lower().endswith(".npy"):
        if args.preprocess or args.size:
            raise ImageError(f"--preprocess and --size apply to images; the array '{args.image}' is fed as is")
        source = _load_npy(args.image)
    if args.feed:
        raise ImageError("saliency takes no --feed: the class score must depend on the image alone")
    runs = {"smoothgrad": args.samples, "integrated": args.steps}.get(args.method, 1)
    a = saliency(model, source, args.target, args.method, n=args.samples, steps=args.steps,
                 preprocess=args.preprocess, size=tuple(args.size) if args.size else None,
                 max_bytes=args.max_memory, progress=progress(args, runs, f"saliency ({args.method})", "image"))
    from .explain.gradients import input_tensor
    x = input_tensor(model, source, args.preprocess, tuple(args.size) if args.size else None)
    title = f"{args.method} saliency of class {int(a.target[0])} (score {float(a.score[0]):.4g})"
    if a.delta is not None:
        title += f", completeness gap {float(a.delta[0]):.3g}"
    _write([(args.output, lambda: saliency_image(_display_image(args, model, x), a.heatmap[0], title),
             f"{args.method}, class {int(a.target[0])}")])
    return 0


def _patterns(args) -> int:
    from .explain.patterns import patterns
    from .model import load
    from .output import check_target
    from .render.patterns import patterns_image

    check_target(args.output, protect=_inputs(args))
    model = load(args.model)
    layer = model.layer(args.layer)
    count = layer.output_shape[0] if layer.output_shape else args.max
    channels = args.channels if args.channels else list(range(min(args.max, count)))
    p = patterns(model, layer.name, channels, size=args.size, steps=args.steps, lr=args.lr, seed=args.seed,
                 batch=args.batch, jitter=args.jitter, start=args.start, revive=args.revive,
                 max_bytes=args.max_memory, progress=progress(args, args.steps * len(channels), "patterns", "step"))
    title = (f"{layer.name}: what channels {_span(p.channels)} respond to ({args.steps} steps of gradient ascent, "
             f"lr {args.lr:g}{f', jitter {args.jitter}' if args.jitter else ''})")
    _write([(args.output, lambda: patterns_image(p.images, p.channels, title),
             f"{layer.name}: {len(p.channels)} patterns of {p.images.shape[1]}×{p.images.shape[2]}")])
    return 0


# ---------------------------------------------------------------- onnxviz stats (issue 11)

def _stats_parser(sub, common, layer_help: str) -> None:
    s = sub.add_parser("stats", parents=[common],
                       help="per layer: filter norms, dead filters; with images, silent and top channels")
    s.add_argument("model", metavar="MODEL")
    s.add_argument("image", metavar="IMAGE", nargs="*",
                   help="images (or .npy input tensors) for the activation statistics; none: filters only")
    s.add_argument("--layer", action="append", metavar="L", help=layer_help + "; default: every layer")
    s.add_argument("--top", type=_positive, default=5, metavar="K", help="top channels per layer (default 5)")
    _input_options(s)
    s.add_argument("--json", action="store_true", help="print JSON (every channel's figures) instead of a table")


def _stats(args) -> int:
    from .model import load
    from .stats import stats, stats_text

    model = load(args.model)
    layers = model.select(args.layer)
    sources = [_load_npy(p) if p.lower().endswith(".npy") else p for p in args.image]
    result = stats(model, sources or None, layers, preprocess=args.preprocess,
                   size=tuple(args.size) if args.size else None, feeds=_feeds(args.feed),
                   max_bytes=args.max_memory, names=args.image,
                   progress=progress(args, len(layers) + len(sources), "stats"))
    print(json.dumps(result.as_dict(args.top), indent=2) if args.json else stats_text(result, args.top))
    return 0


def _span(channels) -> str:
    c = [int(v) for v in channels]
    return f"{c[0]}–{c[-1]}" if c == list(range(c[0], c[-1] + 1)) and len(c) > 2 else ", ".join(map(str, c))


# ------------------------------------------------------------- class activation maps (issue 11)

# = explain.cam.METHODS (a test checks; not imported: the parser must not load onnxruntime)
CAM_METHODS = ("eigen", "score", "ablation", "grad", "grad++", "xgrad", "layer", "hires", "guided-grad")


def _cam_parser(sub, common) -> None:
    c = sub.add_parser("cam", parents=[common], help="where the model looks: a class activation map over the image")
    c.add_argument("model", metavar="MODEL")
    c.add_argument("image", metavar="IMAGE", nargs="+",
                   help="images, or one .npy array of the model input's shape (a batch), fed as is")
    c.add_argument("--method", choices=("auto",) + CAM_METHODS, default="auto", metavar="M",
                   help=f"auto (the default: Grad-CAM, else AblationCAM where no gradient can be built) or one "
                        f"of {', '.join(CAM_METHODS)}")
    c.add_argument("--layer", metavar="L", help="a conv layer or any tensor name (default: the last map before "
                   "the global pooling or flatten)")
    which = c.add_mutually_exclusive_group()
    which.add_argument("--class", dest="target", type=int, metavar="C", help="the class (default: the top one)")
    which.add_argument("--top", type=_positive, metavar="K", help="one overlay per class for the K best classes")
    c.add_argument("--labels", metavar="FILE", help="class names, one a line (default: the model's onnxviz.labels "
                   "metadata, else class indices)")
    c.add_argument("--top-channels", type=_positive, metavar="K",
                   help="score: mask only the K channels of highest variance (Faster Score-CAM)")
    c.add_argument("--batch", type=_positive, default=32, metavar="N",
                   help="masked or ablated inputs (or images) per run (default 32)")
    c.add_argument("--sign-correction", action="store_true", help="eigen: flip a map whose negative part is larger")
    c.add_argument("--cmap", default="jet", metavar="NAME", help="colour map of the heatmap (default jet)")
    c.add_argument("--alpha", type=float, default=0.5, metavar="A", help="heatmap opacity, 0 to 1 (default 0.5)")
    c.add_argument("--full-size", action="store_true",
                   help="draw over the photo at its own size, not at the model's input size")
    _input_options(c)
    c.add_argument("-o", "--output", required=True, metavar="OUT.png", help="PNG to write (several: OUT_<name>.png)")


def _cam_progress(args, desc: str):
    """``cam()``'s ``progress(done, total)``: the bar (:func:`progress`) is made at the first call,
    when the number of runs is known."""
    bar = []

    def update(done: int, total: int) -> None:
        if not bar:
            bar.append(progress(args, total, desc, "run"))
        if bar[0] is not None:
            bar[0](done)

    return update


def _cam_source(args):
    """The images (paths) or the one .npy array the command line gives."""
    from .errors import ImageError

    arrays = [p for p in args.image if p.lower().endswith(".npy")]
    if not arrays:
        return list(args.image)
    if len(args.image) > 1:
        raise ImageError("give images, or one .npy array of the model input's shape, not both or several arrays")
    if args.preprocess or args.size:
        raise ImageError(f"--preprocess and --size apply to images; the array '{arrays[0]}' is fed as is")
    return _load_npy(arrays[0])


def _cam_photos(args, source, pictures) -> list:
    """What each overlay is drawn over: the image at the input size (or its own, --full-size);
    a .npy tensor's own picture (None: a grey field)."""
    import numpy as np

    from . import preprocess as prep

    if isinstance(source, list) and args.full_size:
        return [np.clip(prep.load_image(p), 0, 255).astype(np.uint8) for p in source]
    return list(pictures) if pictures is not None else [None] * len(args.image)


def _cam(args) -> int:
    import os

    from .errors import OnnxvizError
    from .explain.cam import cam
    from .model import load
    from .output import check_target, safe_name
    from .render.colormaps import lut
    from .render.overlay import cam_picture

    check_target(args.output, protect=[args.model, *args.image])
    if not 0 <= args.alpha <= 1:
        raise OnnxvizError(f"--alpha {args.alpha:g}: the heatmap's opacity is between 0 and 1")
    lut(args.cmap)  # an unknown colour map is refused before any work
    if args.top and args.method == "eigen":
        raise OnnxvizError("--top K gives one map per class; EigenCAM's map is the same for every class "
                           "(give another --method, or leave --top out)")
    model = load(args.model)
    source = _cam_source(args)
    size = tuple(args.size) if args.size else None
    kw = dict(layer=args.layer, batch_size=args.batch, top_channels=args.top_channels,
              sign_correction=args.sign_correction, labels=args.labels, feeds=_feeds(args.feed),
              max_bytes=args.max_memory)
    results = [cam(model, feed, args.method, target=target, preprocess=args.preprocess if k == 0 else None,
                   size=size if k == 0 else None, progress=_cam_progress(args, args.method), **kw)
               for k, (feed, target) in enumerate(_cam_targets(args, model, source, size))]
    first = results[0]
    photos = _cam_photos(args, source, first.images)
    stems = ([os.path.splitext(os.path.basename(p))[0] for p in args.image] if isinstance(source, list)
             else [f"image{k}" for k in range(len(first.heatmap))])
    if len(set(stems)) < len(stems):  # the same name twice: numbered
        stems = [f"{k}_{stem}" for k, stem in enumerate(stems)]
    items = [(r, k) for k in range(len(first.heatmap)) for r in range(len(results))]

    def name(r: int, k: int) -> str:
        parts = ([stems[k]] if len(stems) > 1 else []) + ([f"top{r + 1}_{safe_name(results[r].names[k])}"]
                                                          if len(results) > 1 else [])
        return "_".join(parts) or "cam"

    paths = _targets(args, model, [name(r, k) for r, k in items])
    at = "photo" if args.full_size else "input"
    _write([(paths[name(r, k)], lambda r=r, k=k: cam_picture(results[r], k, cmap=args.cmap, alpha=args.alpha,
                                                             photo=photos[k], at=at), results[r].caption(k))
            for r, k in items])
    return 0


def _cam_targets(args, model, source, size) -> list:
    """``[(what to feed, target)]``, one per map: ``--class`` (or the top class), or the ``--top K``
    classes of each image, found first (the images, then their tensor, fed to the later calls)."""
    import numpy as np

    from .classes import class_scores
    from .errors import OnnxvizError
    from .features import input_tensor

    if not args.top:
        return [(source, args.target)]
    x = source if isinstance(source, np.ndarray) else input_tensor(model, source, preprocess=args.preprocess,
                                                                   size=size)
    scores, _ = class_scores(model, x, max_bytes=args.max_memory)
    if args.top > scores.shape[1]:
        raise OnnxvizError(f"--top {args.top}: the model scores {scores.shape[1]} classes")
    order = np.argsort(-scores, axis=1, kind="stable")
    return [(source if r == 0 else x, order[:, r]) for r in range(args.top)]


def _check_overlay(args, source) -> None:
    from .errors import ImageError

    if args.overlay < 0:
        raise ImageError(f"--overlay {args.overlay}: a channel is a whole number, 0 or more")
    if not isinstance(source, str):
        raise ImageError("--overlay draws a map over an image; give an image file, not a .npy array")


def _overlays(args, model, path: str, maps: dict, paths: dict) -> list:
    """``features --overlay C``: channel C of each layer's map over the image at the input size."""
    import numpy as np

    from . import preprocess as prep
    from .errors import LayerError, UnsupportedModelError
    from .render.overlay import channel_overlay

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
    from .model import load

    model = load(args.model)
    print(json.dumps(model.summary(), indent=2) if args.json else model.summary_text())
    return 0


def _inputs(args, model=None) -> list[str]:
    """Every file the command reads (an output must be none of them): model, its data, image, feeds."""
    return [args.model, *(model.files() if model is not None else []), getattr(args, "image", None),
            *(path for _, path in getattr(args, "feed", None) or [])]


def _targets(args, model, names: list[str]) -> dict[str, str]:
    """``{layer: PNG path}``, every path checked before any work."""
    from .output import check_target, layer_paths

    paths = layer_paths(args.output, names)
    for p in paths.values():
        check_target(p, protect=_inputs(args, model))
    return paths


def _write(pictures: list) -> None:
    """Write ``(path, draw, note)`` PNGs all at once (``draw()`` makes the picture; they are
    drawn and encoded side by side): all of them, or (on a failure) none."""
    from .output import write_all
    from .render import png_all

    data = png_all(draw for _, draw, _ in pictures)
    written = write_all({path: png for (path, _, _), png in zip(pictures, data)})
    for path, (_, _, note) in zip(written, pictures):
        print(f"wrote {path}  ({note})")


def _filters(args) -> int:
    from .model import load
    from .output import check_target
    from .render import filter_image

    check_target(args.output, protect=_inputs(args))
    model = load(args.model)
    layers = model.select(args.layer if args.layer else [0])
    paths = _targets(args, model, [l.name for l in layers])
    _write([(paths[l.name], lambda l=l: filter_image(model, l, max=args.max, rgb=args.rgb),
             f"{l.name}: filters {format_shape(l.filter_shape)}") for l in layers])
    return 0


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

    from .errors import ImageError

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
    from .errors import ImageError

    seen = set()
    for name, _ in pairs or []:
        if name in seen:
            raise ImageError(f"--feed {name}= is given twice; give each input once")
        seen.add(name)
    return {name: _load_npy(path) for name, path in pairs} if pairs else None


def _features(args) -> int:
    from .errors import ImageError
    from .model import load
    from .output import check_target
    from .render import feature_map_image

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
    from .check import check, report_text
    from .errors import listing

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
    from .demo import demo_model_path, run_demo

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
    from .dataset import dataset
    from .errors import OnnxvizError as Error

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


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1
