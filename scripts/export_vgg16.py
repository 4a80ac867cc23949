#!/usr/bin/env python3
"""Export a Keras application CNN (VGG16 by default) to ONNX for onnxviz.

    python scripts/export_vgg16.py                           # VGG16, ImageNet weights -> models/vgg16.onnx
    python scripts/export_vgg16.py --weights none            # random weights (no download)
    python scripts/export_vgg16.py --weights vgg16.weights.h5
    python scripts/export_vgg16.py --model MobileNetV2 -o /tmp/mnv2.onnx

Needs TensorFlow + tf2onnx + onnx + onnxruntime (the ``export`` extra). The conversion is the
low-memory one of ``scripts/keras_export.py`` (weights written into the ONNX file after
converting the architecture): full VGG16 takes ~3 GB and well under a minute on 2 CPU cores.
The preprocessing, channel order, input size and Keras layer names go into the model's
metadata, so onnxviz needs no flags later. Exit status 0 on success, 1 on failure (one
``error:`` line), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

# model name -> (preprocess preset, channel order the first conv sees, default input size)
MODELS = {
    "VGG16": ("caffe", "BGR", (224, 224)),
    "ResNet50": ("caffe", "BGR", (224, 224)),
    "MobileNetV2": ("tf", "RGB", (224, 224)),
    "EfficientNetB0": ("raw", "RGB", (224, 224)),  # Rescaling/Normalization are in the model
}


def imagenet_labels(keras_home: str | None = None) -> list[str] | None:
    """Keras' 1,000 ImageNet class names (``imagenet_class_index.json``, which
    ``keras.applications.imagenet_utils.decode_predictions`` downloads into the Keras cache),
    or ``None`` when it is not there: nothing is downloaded."""
    import json

    home = keras_home or os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    path = os.path.join(home, "models", "imagenet_class_index.json")
    try:
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
        return [index[str(k)][1] for k in range(len(index))]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def read_labels(option: str, include_top: bool) -> list[str] | None:
    """The ``--labels`` option's names (see :func:`parse_args`)."""
    from keras_export import ExportError

    if option == "none" or (option == "auto" and not include_top):
        return None
    if option == "auto":
        return imagenet_labels()
    try:
        with open(option, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
    except OSError as e:
        raise ExportError(f"cannot read the labels file '{option}': {e.strerror or e}") from None
    if not names:
        raise ExportError(f"labels file '{option}' is empty; give one class name a line")
    return names


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.replace("x", ",").split(","))
        if h < 32 or w < 32:
            raise ValueError
        return h, w
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected H,W (each >= 32), got {text!r}") from None


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="export_vgg16.py",
        description="Export a keras.applications CNN to ONNX (NHWC float32 input, dynamic batch) "
                    "with onnxviz metadata, using little memory.")
    p.add_argument("--model", choices=sorted(MODELS), default="VGG16", help="default: VGG16")
    p.add_argument("--weights", default="imagenet", metavar="imagenet|none|PATH.h5",
                   help="'imagenet' (downloaded by Keras), 'none' (random init) or a local Keras "
                        "weights file (.weights.h5, or a legacy .h5 such as Keras' own "
                        "vgg16_weights_tf_dim_ordering_tf_kernels.h5). Default: imagenet")
    top = p.add_mutually_exclusive_group()
    top.add_argument("--include-top", dest="include_top", action="store_true", default=True,
                     help="keep the classifier (default)")
    top.add_argument("--no-top", dest="include_top", action="store_false",
                     help="convolutional part only")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="output .onnx (default: <repo>/models/vgg16.onnx, or <repo>/models/<model>.onnx "
                        "in lower case; '_notop' is appended with --no-top)")
    p.add_argument("--input-size", type=_parse_size, default=None, metavar="H,W",
                   help="input size for --no-top (default 224,224); with the top it is fixed")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="skip the Keras-vs-onnxruntime self-check")
    p.add_argument("--plain", action="store_true",
                   help="for comparison only: the ordinary tf2onnx.convert.from_keras path (no metadata; "
                        "needs > 24 GB for VGG16)")
    p.add_argument("--large-model", action="store_true", help="with --plain: tf2onnx's large_model=True")
    p.add_argument("--labels", default="auto", metavar="auto|none|FILE",
                   help="class names written into the model (onnxviz.labels): a file of one name per line; "
                        "'auto' (default): Keras' ImageNet names when its class index is in the Keras cache "
                        "(keras.applications' decode_predictions puts it there), for a model with its top")
    p.add_argument("--verbose", action="store_true", help="print per-phase time and memory")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p.parse_args(argv)


def _peak_rss_gb() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux: KiB


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def build_model(name: str, weights: str, include_top: bool, input_size):
    """(keras.Model, weights description). Raises ExportError with a one-line message."""
    from keras_export import ExportError
    import keras

    kwargs = {"include_top": include_top}
    if not include_top:
        kwargs["input_shape"] = (input_size[0], input_size[1], 3)
    factory = getattr(keras.applications, name)
    if weights == "imagenet":
        try:
            return factory(weights="imagenet", **kwargs), "imagenet"
        except Exception as e:  # urllib / HTTP / OS errors from keras.utils.get_file
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ExportError(f"could not get the ImageNet weights for {name} ({msg}); "
                              f"without internet use --weights none or --weights PATH.h5") from e
    if weights.lower() in ("none", "random"):
        return factory(weights=None, **kwargs), "random"
    path = Path(weights)
    if not path.is_file():
        raise ExportError(f"weights file not found: {weights} (expected imagenet, none or a .h5 file)")
    model = factory(weights=None, **kwargs)
    try:
        model.load_weights(str(path))
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"could not load weights from {path} into {name}"
                          f"{'' if include_top else ' (no top)'}: {msg}") from e
    return model, path.name


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import warnings
    warnings.filterwarnings("ignore")
    t0 = time.perf_counter()
    try:
        from keras_export import ExportError
    except ImportError as e:  # numpy missing
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        from importlib.util import find_spec
        missing = [m for m in ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime") if find_spec(m) is None]
        if missing:
            raise ExportError(f"{', '.join(missing)} not installed: pip install tensorflow-cpu "
                              f"'tf2onnx>=1.17' onnx onnxruntime")
        preprocess, order, default_size = MODELS[args.model]
        size = args.input_size or default_size
        if args.include_top and args.input_size and tuple(args.input_size) != default_size:
            raise ExportError(f"--input-size needs --no-top ({args.model} with its top takes "
                              f"{default_size[0]},{default_size[1]})")
        out = args.output
        if out is None:
            stem = "vgg16" if args.model == "VGG16" else args.model.lower()
            out = REPO / "models" / f"{stem}{'' if args.include_top else '_notop'}.onnx"

        model, weights_desc = build_model(args.model, args.weights, args.include_top, size)
        t_model = time.perf_counter() - t0
        source = (f"keras.applications.{args.model}"
                  f"{'' if args.include_top else '(include_top=False)'} "
                  f"(Keras {_version('keras')}, tf2onnx {_version('tf2onnx')})")
        t1 = time.perf_counter()
        if args.plain:
            from keras_export import export_keras_model_plain
            info = export_keras_model_plain(model, out, opset=args.opset, large_model=args.large_model,
                                            preprocess=preprocess, check=args.check)
        else:
            from keras_export import export_keras_model
            info = export_keras_model(model, out, preprocess=preprocess, channel_order=order,
                                      source=source, weights_desc=weights_desc, check=args.check,
                                      input_size=size, opset=args.opset, verbose=args.verbose,
                                      labels=read_labels(args.labels, args.include_top))
        t_export = time.perf_counter() - t1
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        if args.debug:
            raise
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 1
    except Exception as e:  # anything unexpected: still one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"error: {type(e).__name__}: {first} (run with --debug for the traceback)", file=sys.stderr)
        if args.debug:
            raise
        return 1

    size_mb = sum(p.stat().st_size for p in [Path(info["path"])] +
                  ([Path(info["path"] + ".data")] if info.get("external_data") else [])) / 1e6
    print(f"wrote {info['path']} ({size_mb:.1f} MB{', external data' if info.get('external_data') else ''}): "
          f"{args.model}, weights {weights_desc}, {info.get('n_conv', '?')} convs, input "
          f"{info['input_name']} {tuple(info['input_shape'])} NHWC float32, preprocess {preprocess}/{order}")
    if info.get("max_rel_diff") is not None:
        verdict = "<= 1e-4: OK" if info["max_rel_diff"] <= 1e-4 else "> 1e-4 (not enforced with --plain)"
        print(f"self-check: Keras vs onnxruntime max relative difference {info['max_rel_diff']:.3g} "
              f"(max abs {info['max_abs_diff']:.3g}) {verdict}"
              + (f"; conv weights == Keras kernels: {info['filters_checked']}/{info['n_conv']}"
                 if "filters_checked" in info else ""))
        if info.get("output_weak"):
            print("warning: the output is (nearly) constant or a saturated softmax (random weights?), so "
                  "equal outputs prove little" + ("; the conv-weight comparison above still holds"
                                                  if info.get("filters_checked") else "")
                  + ("; --no-top gives a more telling comparison" if args.include_top else ""))
    elif not args.check:
        print("self-check: skipped (--no-check)")
    print(f"time: model {t_model:.1f} s, export {t_export:.1f} s, total {time.perf_counter() - t0:.1f} s; "
          f"peak RSS {_peak_rss_gb():.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
