"""The command line's explanation commands: ``saliency``, ``patterns``, ``stats`` and ``cam``
(their parsers and what each runs). Part of :mod:`onnxviz.cli`; see it for the usage."""

from __future__ import annotations

import argparse
import json

from .common import (_feeds, _input_options, _inputs, _load_npy, _positive, _size,
                     _targets, _write, progress)


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

    from .. import preprocess as prep

    if not args.image.lower().endswith(".npy"):
        size = tuple(x.shape[1:3] if model.input.layout == "NHWC" else x.shape[2:4])
        return prep.to_tensor(args.image, size=size, layout="NHWC", preset="raw")[0].astype(np.uint8)
    t = x[0] if model.input.layout == "NHWC" else x[0].transpose(1, 2, 0)
    t = np.repeat(t[..., :1], 3, axis=2) if t.shape[2] != 3 else t
    span = float(t.max() - t.min()) or 1.0
    return ((t - t.min()) / span * 255).astype(np.uint8)


def _saliency(args) -> int:
    from ..errors import ImageError
    from ..explain.saliency import saliency
    from ..model import load
    from ..output import check_target
    from ..render.patterns import saliency_image

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
    from ..explain.gradients import input_tensor
    x = input_tensor(model, source, args.preprocess, tuple(args.size) if args.size else None)
    title = f"{args.method} saliency of class {int(a.target[0])} (score {float(a.score[0]):.4g})"
    if a.delta is not None:
        title += f", completeness gap {float(a.delta[0]):.3g}"
    _write([(args.output, lambda: saliency_image(_display_image(args, model, x), a.heatmap[0], title),
             f"{args.method}, class {int(a.target[0])}")])
    return 0


def _patterns(args) -> int:
    from ..explain.patterns import patterns
    from ..model import load
    from ..output import check_target
    from ..render.patterns import patterns_image

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
    from ..model import load
    from ..stats import stats, stats_text

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
    from ..errors import ImageError

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

    from .. import preprocess as prep

    if isinstance(source, list) and args.full_size:
        return [np.clip(prep.load_image(p), 0, 255).astype(np.uint8) for p in source]
    return list(pictures) if pictures is not None else [None] * len(args.image)


def _cam(args) -> int:
    import os

    from ..errors import OnnxvizError
    from ..explain.cam import cam
    from ..model import load
    from ..output import check_target, safe_name
    from ..render.colormaps import lut
    from ..render.overlay import cam_picture

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

    from ..classes import class_scores
    from ..errors import OnnxvizError
    from ..features import input_tensor

    if not args.top:
        return [(source, args.target)]
    x = source if isinstance(source, np.ndarray) else input_tensor(model, source, preprocess=args.preprocess,
                                                                   size=size)
    scores, _ = class_scores(model, x, max_bytes=args.max_memory)
    if args.top > scores.shape[1]:
        raise OnnxvizError(f"--top {args.top}: the model scores {scores.shape[1]} classes")
    order = np.argsort(-scores, axis=1, kind="stable")
    return [(source if r == 0 else x, order[:, r]) for r in range(args.top)]
