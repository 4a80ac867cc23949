#!/usr/bin/env python3
"""Train onnxviz's small demo CNN on synthetic images and export it to ONNX.

    python scripts/train_demo_model.py                 # -> models/demo.onnx + models/README.md
    python scripts/train_demo_model.py --sample s.png --seed 3   # one generated image, no TensorFlow

A VGG-style Keras CNN (3 blocks of two 3x3 conv + ReLU, max-pooling, global average pooling,
softmax) learns the nine classes of ``demo_shapes.py`` (oriented stripes, checkerboards, dots,
red/green/blue shapes), which pushes its first-layer filters towards oriented-edge and colour
detectors. ``block1_conv1`` gets a small init + L2 (clean filters) and a positive initial
bias, and the learning rate warms up (no dead filters; see ``B1_*`` below). The script
prints, and the README records, the dead-filter count and what each first-layer filter
responds to (``describe_filters``). Input 64x64 RGB, preprocessing ``unit`` (pixels / 255).
Deterministic (fixed seeds, TensorFlow op determinism); about 2 minutes on 2 CPU cores. The ONNX file is written by
``keras_export.export_keras_model`` (self-checked against Keras), then its held-out accuracy
is measured with onnxruntime on freshly generated images, and ``models/README.md`` is
written with the exact figures.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import demo_shapes  # noqa: E402  (numpy only)

SIZE = demo_shapes.SIZE
FILTERS = (16, 32, 64)          # per block; two convs per block
LR = 2e-3                       # Adam peak learning rate (after the warm-up)
BATCH = 64
# block1_conv1: small init + L2 keep its filters free of init noise (Glorot init leaves them
# looking like noise). Small init alone killed half of them: Adam's first full-size steps
# (2e-3, a fifth of the 0.01 init scale per step) flip whole filters negative, and since the
# input is >= 0 their ReLUs then never fire again and L2 decays them to zero (8 of 16 units
# silent after the first epoch). The LR warm-up and a positive initial bias (every unit
# starts active on every pixel) prevent that: 0 dead filters.
B1_INIT_STD = 0.01              # block1_conv1 kernel init N(0, std)
B1_L2 = 1e-4                    # block1_conv1 kernel L2
B1_BIAS_INIT = 0.1              # block1_conv1 bias init (the other layers: zeros)
WARMUP_EPOCHS = 2               # linear LR warm-up 0 -> LR over this many epochs, per batch
DEAD_FRACTION = 0.05            # a filter is "dead" if its max|w| < this x the layer's max|w|
TRAIN_SEED, VAL_SEED, TEST_SEED = 1, 2, 3   # data seeds (disjoint generators)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="train_demo_model.py", description="Train the onnxviz demo CNN on synthetic images and export it to ONNX.")
    p.add_argument("-o", "--output", type=Path, default=REPO / "models" / "demo.onnx",
                   help="ONNX file (default: <repo>/models/demo.onnx)")
    p.add_argument("--readme", type=Path, default=None,
                   help="README to write (default: README.md beside the ONNX file)")
    p.add_argument("--no-readme", action="store_true")
    p.add_argument("--seed", type=int, default=0, help="training seed (weights init, shuffling); "
                   "with --sample: the sample's seed")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--train-per-class", type=int, default=600)
    p.add_argument("--test-per-class", type=int, default=200)
    p.add_argument("--b1-init-std", type=float, default=B1_INIT_STD,
                   help=f"std of block1_conv1's N(0, std) kernel init (default {B1_INIT_STD})")
    p.add_argument("--b1-l2", type=float, default=B1_L2,
                   help=f"L2 on block1_conv1's kernel, 0 = none (default {B1_L2:g})")
    p.add_argument("--b1-bias-init", type=float, default=B1_BIAS_INIT,
                   help=f"initial value of block1_conv1's biases (default {B1_BIAS_INIT:g})")
    p.add_argument("--warmup-epochs", type=float, default=WARMUP_EPOCHS,
                   help=f"linear learning-rate warm-up, in epochs, 0 = none (default {WARMUP_EPOCHS})")
    p.add_argument("--sample", type=Path, default=None, metavar="PNG",
                   help="only write one generated sample image (class CLASSES[seed %% 9]) and exit")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p.parse_args(argv)


def build_model(b1_init_std: float = B1_INIT_STD, b1_l2: float = B1_L2, b1_bias_init: float = B1_BIAS_INIT):
    import keras
    from keras import layers

    inp = keras.Input((SIZE, SIZE, 3), name="input_image")
    x = inp
    for b, f in enumerate(FILTERS, start=1):
        first = {}
        if b == 1:  # small init + L2 + positive bias: see B1_* above
            first = {"kernel_initializer": keras.initializers.RandomNormal(stddev=b1_init_std),
                     "kernel_regularizer": keras.regularizers.l2(b1_l2) if b1_l2 > 0 else None,
                     "bias_initializer": keras.initializers.Constant(b1_bias_init)}
        x = layers.Conv2D(f, 3, padding="same", activation="relu", name=f"block{b}_conv1", **first)(x)
        x = layers.Conv2D(f, 3, padding="same", activation="relu", name=f"block{b}_conv2")(x)
        x = layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(len(demo_shapes.CLASSES), activation="softmax", name="predictions")(x)
    return keras.Model(inp, out, name="onnxviz_demo")


def dead_filters(kernel_hwio: np.ndarray) -> list[int]:
    """Indices of the filters whose max|w| is below DEAD_FRACTION x the layer's max|w|."""
    peak = np.abs(kernel_hwio).reshape(-1, kernel_hwio.shape[-1]).max(axis=0)
    return [int(k) for k in np.flatnonzero(peak < DEAD_FRACTION * peak.max())]


# edge orientation by the direction (image coordinates, y down) towards the filter's light side,
# in 45-degree sectors starting at "right": light right/left = vertical edge, light at the
# bottom right or top left = an edge running "/", ...
_SECTORS = ("right", "bottom right", "bottom", "bottom left", "left", "top left", "top", "top right")
_EDGE_KIND = ("vertical", "diagonal /", "horizontal", "diagonal \\")
# hue (degrees) upper bounds -> colour name
_HUES = ((15, "red"), (45, "orange"), (75, "yellow"), (150, "green"), (195, "cyan"), (255, "blue"),
         (285, "purple"), (345, "magenta"), (361, "red"))
EDGE_MIN_FIT = 0.6      # the light/dark pattern is a ramp (plane fit R^2 >= this) ...
EDGE_MIN_SHARE = 0.2    # ... and carries >= this share of the filter's energy


def describe_filters(kernel_hwio: np.ndarray) -> list[dict]:
    """What each RGB 3x3 filter (Keras kernel (3, 3, 3, O)) responds to, by two simple measures.

    Light/dark: the channel-summed 3x3 kernel minus its mean (the response to a grey
    pattern) is fitted with a plane; if the plane explains >= EDGE_MIN_FIT of it and that part
    holds >= EDGE_MIN_SHARE of the filter's energy, the filter is an edge detector whose light
    side is the plane's uphill direction (8 sectors -> horizontal / vertical / two diagonals).
    Otherwise it is a blob (no clear orientation). Colour: the per-channel sums minus their
    mean (the response to a uniform colour beyond its brightness), named by hue; "+" channels
    are preferred, "-" channels suppress (colour opponency).
    """
    import colorsys
    yy, xx = np.mgrid[-1:2, -1:2].astype(np.float64)
    out = []
    for o in range(kernel_hwio.shape[-1]):
        f = kernel_hwio[..., o].astype(np.float64)
        lum = f.sum(axis=-1)
        ac = lum - lum.mean()
        gx, gy = (ac * xx).sum() / 6, (ac * yy).sum() / 6
        ac_e = float((ac ** 2).sum())
        fit = 1 - float(((ac - gx * xx - gy * yy) ** 2).sum()) / ac_e if ac_e > 0 else 0.0
        share = ac_e / 3 / max(float((f ** 2).sum()), 1e-30)
        angle = float(np.degrees(np.arctan2(gy, gx)) % 360)
        d = {"index": o, "fit": fit, "share": share, "angle": angle, "max": float(np.abs(f).max())}
        if fit >= EDGE_MIN_FIT and share >= EDGE_MIN_SHARE:
            sector = int(((angle + 22.5) % 360) // 45)
            d["kind"], d["light"] = _EDGE_KIND[sector % 4], _SECTORS[sector]
        else:
            d["kind"], d["light"] = "blob", ""
        sums = f.sum(axis=(0, 1))
        chroma = sums - sums.mean()
        d["sums"] = sums
        c = chroma / (np.abs(chroma).max() + 1e-30)
        hue = colorsys.rgb_to_hsv(*(0.5 + 0.5 * c))[0] * 360
        d["colour"] = next(name for bound, name in _HUES if hue < bound)
        d["hue"] = hue
        d["opponency"] = ("+".join(ch for ch, v in zip("RGB", chroma) if v > 0) + " vs "
                          + "+".join(ch for ch, v in zip("RGB", chroma) if v <= 0))
        out.append(d)
    return out


def summarise_filters(desc: list[dict]) -> str:
    """'2 horizontal edges (7 cyan, 9 cyan); ...' for the script's output and the README."""
    parts = []
    for kind, label in (("horizontal", "horizontal edge"), ("vertical", "vertical edge"),
                        ("diagonal /", "diagonal edge{} running \"/\""),
                        ("diagonal \\", "diagonal edge{} running \"\\\""),
                        ("blob", "unoriented colour blob")):
        ks = [d for d in desc if d["kind"] == kind]
        if ks:
            plural = "s" if len(ks) > 1 else ""
            label = label.format(plural) if "{}" in label else label + plural
            parts.append(f"{len(ks)} {label} (" + ", ".join(f"{d['index']} {d['colour']}" for d in ks) + ")")
    return "; ".join(parts)


RARE_FRACTION = 0.01    # a feature map active on fewer pixels than this looks blank in onnxviz


def silent_channels(model, x: np.ndarray, layers=("block1_conv1", "block1_conv2")) -> dict:
    """Per layer, over all images of x (float): channels whose ReLU output is 0 everywhere
    ("never") and channels > 0 on fewer than RARE_FRACTION of the pixels ("rare", incl. never)."""
    import keras
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in layers])
    active = None
    for i in range(0, len(x), 256):
        outs = [(np.asarray(t) > 0).sum(axis=(0, 1, 2)) for t in probe([x[i:i + 256]], training=False)]
        active = outs if active is None else [a + b for a, b in zip(active, outs)]
    n_px = len(x) * x.shape[1] * x.shape[2]
    return {n: {"never": [int(k) for k in np.flatnonzero(a == 0)],
                "rare": [int(k) for k in np.flatnonzero(a < RARE_FRACTION * n_px)]}
            for n, a in zip(layers, active)}


def _silent_text(silent: dict, md: bool = False) -> str:
    q = "`" if md else ""
    def ks(v):
        return f" ({', '.join(map(str, v))})" if v else ""
    return "; ".join(f"{q}{n}{q} {len(v['never'])}{ks(v['never'])} never active, {len(v['rare'])}{ks(v['rare'])} "
                     f"on < {RARE_FRACTION:.0%} of pixels" for n, v in silent.items())


def _callbacks(keras, steps_per_epoch: int, warmup_epochs: float, x_va):
    class WarmUp(keras.callbacks.Callback):
        """Linear learning-rate warm-up over the first ``steps`` optimizer steps."""

        def __init__(self, steps):
            super().__init__()
            self.steps = steps

        def on_train_batch_begin(self, batch, logs=None):
            step = int(self.model.optimizer.iterations.numpy())
            if step <= self.steps:
                self.model.optimizer.learning_rate.assign(LR * min(1.0, (step + 1) / self.steps))

    class FirstLayerMonitor(keras.callbacks.Callback):
        """After each epoch: dead block1_conv1 filters and never-active units (validation set)."""

        def on_epoch_end(self, epoch, logs=None):
            conv = self.model.get_layer("block1_conv1")
            if not hasattr(self, "probe"):
                self.probe = keras.Model(self.model.inputs, conv.output)
            act = np.asarray(self.probe.predict(x_va, batch_size=256, verbose=0))
            silent = int(np.sum(act.max(axis=(0, 1, 2)) <= 0))
            print(f"  epoch {epoch + 1}: block1_conv1 dead filters {len(dead_filters(conv.get_weights()[0]))}"
                  f"/{conv.filters}, never active on validation {silent}/{conv.filters}, "
                  f"next lr {float(self.model.optimizer.learning_rate.numpy()):.2g}")

    cbs = [keras.callbacks.ReduceLROnPlateau("val_loss", factor=0.5, patience=2, verbose=0),
           FirstLayerMonitor()]
    if warmup_epochs > 0:
        cbs.insert(0, WarmUp(max(1, round(warmup_epochs * steps_per_epoch))))
    return cbs


def train(args) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(args.seed)
    tf.config.experimental.enable_op_determinism()

    t0 = time.perf_counter()
    x_tr, y_tr = demo_shapes.make_dataset(args.train_per_class, seed=TRAIN_SEED)
    x_va, y_va = demo_shapes.make_dataset(50, seed=VAL_SEED)
    t_data = time.perf_counter() - t0
    print(f"generated {len(x_tr)} training + {len(x_va)} validation images in {t_data:.1f} s")

    model = build_model(args.b1_init_std, args.b1_l2, args.b1_bias_init)
    model.compile(optimizer=keras.optimizers.Adam(LR),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x_va = x_va.astype(np.float32) / 255.0
    steps = -(-len(x_tr) // BATCH)
    t1 = time.perf_counter()
    hist = model.fit(x_tr.astype(np.float32) / 255.0, y_tr, batch_size=BATCH, epochs=args.epochs,
                     validation_data=(x_va, y_va), shuffle=True, verbose=2,
                     callbacks=_callbacks(keras, steps, args.warmup_epochs, x_va))
    t_train = time.perf_counter() - t1
    print(f"trained {args.epochs} epochs in {t_train:.1f} s")
    return {"model": model, "t_data": t_data, "t_train": t_train, "history": hist.history,
            "n_train": len(x_tr), "n_val": len(x_va)}


def evaluate_onnx(path: Path, x: np.ndarray, y: np.ndarray):
    """Accuracy of the exported model (onnxruntime) on freshly generated images (uint8)."""
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    probs = np.concatenate([sess.run(None, {name: x[i:i + 256].astype(np.float32) / 255.0})[0]
                            for i in range(0, len(x), 256)])
    pred = probs.argmax(axis=1)
    per_class = {c: float(np.mean(pred[y == k] == k)) for k, c in enumerate(demo_shapes.CLASSES)}
    confusion = np.zeros((len(demo_shapes.CLASSES),) * 2, int)
    np.add.at(confusion, (y, pred), 1)
    return float(np.mean(pred == y)), per_class, confusion, len(x)


def write_readme(path: Path, onnx_path: Path, r: dict, info: dict, acc, per_class, confusion, n_test,
                 argv_cmd: str):
    import keras
    m = r["model"]
    size_kb = onnx_path.stat().st_size / 1024
    sha = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    rows = []
    for layer in m.layers[1:]:
        cfg = layer.get_config()
        desc = {"Conv2D": lambda: f"{cfg['filters']} × 3×3, ReLU, same padding",
                "MaxPooling2D": lambda: "2×2 max",
                "GlobalAveragePooling2D": lambda: "mean over H, W",
                "Dense": lambda: f"{cfg['units']}, softmax"}.get(type(layer).__name__, lambda: "")()
        shape = tuple(layer.output.shape[1:])
        rows.append(f"| `{layer.name}` | {type(layer).__name__} | {desc} | {shape} | {layer.count_params():,} |")
    tr_acc = r["history"]["accuracy"][-1]
    va_acc = r["history"]["val_accuracy"][-1]
    classes = "\n".join(f"| {k} | `{c}` | {per_class[c] * 100:.1f} % |" for k, c in enumerate(demo_shapes.CLASSES))
    conf_head = "| true \\ predicted | " + " | ".join(str(k) for k in range(len(demo_shapes.CLASSES))) + " |"
    conf_sep = "|---" * (len(demo_shapes.CLASSES) + 1) + "|"
    conf_rows = "\n".join(f"| {k} `{c}` | " + " | ".join(str(v) for v in confusion[k]) + " |"
                          for k, c in enumerate(demo_shapes.CLASSES))
    mapping = "\n".join(f"| `{node}` | `{name}` |" for node, name in info["layer_names"].items())
    a = r["args"]
    kernel = m.get_layer("block1_conv1").get_weights()[0]
    n_f = kernel.shape[-1]
    zero_grey = -kernel.min() / (kernel.max() - kernel.min())
    dead = r["dead"]
    dead_txt = f"**{len(dead)} of {n_f}**" + (f" (filters {', '.join(map(str, dead))})" if dead else "")
    silent = _silent_text(r["silent"], md=True)
    silent_s = _silent_text(r["silent_sample"], md=True)
    filt_rows = "\n".join(
        f"| {d['index']} | {d['kind'] if d['kind'] != 'blob' else 'no clear orientation'} | "
        f"{d['light'] or '–'} | {d['colour']} ({d['opponency']}) | {d['fit']:.2f} | {d['share']:.2f} | "
        f"{d['max']:.3f} |" for d in r["filters"])
    warm = (f" after a linear warm-up from 0 over the first {a.warmup_epochs:g} epochs, per batch;"
            if a.warmup_epochs > 0 else ",")
    l2 = f"L2 {_sci(a.b1_l2)}" if a.b1_l2 > 0 else "no L2"
    text = f"""# models/

## `demo.onnx` — onnxviz's own demo CNN

A small VGG-style CNN trained by this project on synthetic images, so that onnxviz can show
filters and feature maps without downloading anything. Its first-layer filters are oriented
edge detectors and colour detectors, because that is what the classes require (see
[First-layer filters](#first-layer-filters-block1_conv1) for what each of the 16 does).

- File: `demo.onnx`, {size_kb:.0f} KiB, {info['n_params']:,} parameters, opset 17,
  sha256 `{sha}`.
- Input `{info['input_name']}`: float32 **NHWC** `(N, {SIZE}, {SIZE}, 3)`, RGB, batch dynamic;
  preprocessing **`unit`**: pixels / 255 (no mean subtraction). Output `predictions`:
  `(N, {len(demo_shapes.CLASSES)})` softmax probabilities in the class order below.
- Metadata: `onnxviz.preprocess=unit`, `onnxviz.channel_order=RGB`,
  `onnxviz.input_size={SIZE},{SIZE}`, `onnxviz.layer_names` (below), `onnxviz.source`,
  `onnxviz.weights`.

### How it was made

```
{argv_cmd}
```

Environment: Python {platform.python_version()}, TensorFlow {_v('tensorflow-cpu')} (CPU), Keras
{keras.__version__}, tf2onnx {_v('tf2onnx')}, onnx {_v('onnx')}, onnxruntime {_v('onnxruntime')},
NumPy {np.__version__}; {os.cpu_count()} CPU cores, no GPU.

1. **Data** (`scripts/demo_shapes.py`, NumPy only): {r['n_train']:,} training images
   ({r['n_train'] // len(demo_shapes.CLASSES)} per class, generator seed {TRAIN_SEED}) and
   {r['n_val']} validation images (seed {VAL_SEED}), 64×64 RGB; generated in {r['t_data']:.1f} s.
   Any single image: `python scripts/demo_shapes.py --seed N -o sample.png` or
   `demo_shapes.make_sample_image(N)`.
2. **Training**: Keras, Adam (lr {_sci(LR)}{warm} halved when the validation loss stalls for
   2 epochs). `block1_conv1`: kernel initialised with N(0, {a.b1_init_std:g}) and {l2}, biases
   initialised to {a.b1_bias_init:g} (the other layers: Keras defaults). Why: with Glorot init
   the 3×3 filters stay dominated by the random init and look like noise; a small init plus
   L2 makes them show what was learned. But small init alone (as first tried: N(0, 0.01),
   L2 1e-4, zero bias, no warm-up) left 7 of 16 filters dead by the rule below and an 8th
   nearly so: Adam's first full-size steps
   (2e-3 per weight, a fifth of the init scale) pushed whole filters negative, and because
   the input is ≥ 0 their ReLUs never fired again, so only the L2 acted on them and shrank
   them to zero. The warm-up and the positive initial bias (every unit starts active on every
   pixel) prevent that. Batch {BATCH}, {len(r['history']['loss'])} epochs, sparse categorical cross-entropy, seed
   {r['seed']} (`keras.utils.set_random_seed` + TensorFlow op determinism; two runs on this
   machine gave byte-identical `demo.onnx` files).
   **Training time: {r['t_train']:.0f} s** on 2 CPU cores. Final training accuracy
   {tr_acc * 100:.1f} %, validation accuracy {va_acc * 100:.1f} %.
3. **Export**: `scripts/keras_export.py` (`export_keras_model`: architecture converted with
   tf2onnx with the weights as graph inputs, the real weights written in afterwards).
   Self-check, Keras vs onnxruntime on a random image: max relative difference
   {info['max_rel_diff']:.2g}; all {info['filters_checked']} conv weights equal the Keras kernels.
4. **Held-out accuracy: {acc * 100:.1f} %** — the exported `demo.onnx` run by onnxruntime on
   {n_test:,} freshly generated images ({n_test // len(demo_shapes.CLASSES)} per class,
   generator seed {TEST_SEED}, never seen in training).

### Architecture

| layer | type | | output (H, W, C) | parameters |
|---|---|---|---|---|
{chr(10).join(rows)}

### Classes

| index | class | held-out accuracy |
|---|---|---|
{classes}

Stripes: a grating of two random colours (any hue) whose bands run horizontally, vertically,
"/" or "\\\\" (±10°), period 6–14 px. Checkerboard: cells 4–11 px. Dots: a jittered grid of
round dots. Shapes: one disc, square, triangle or ellipse in a red, green or blue hue on a
greyish, faintly textured background. All images: random brightness (×0.8–1.15) and Gaussian
noise (σ = 0.03).

Confusion matrix (held-out, rows = true class):

{conf_head}
{conf_sep}
{conf_rows}

### First-layer filters (`block1_conv1`)

```
onnxviz filters models/demo.onnx -o filters.png          # 16 rows × R, G, B, one grey scale
onnxviz filters models/demo.onnx --rgb -o filters_rgb.png
```

Dead filters (max|w| < {DEAD_FRACTION:.0%} of the layer's max|w|): {dead_txt}.

Feature-map channels (after ReLU) of the first block, of 16 each, that never fire or fire on
< {RARE_FRACTION:.0%} of the pixels (they look blank in `onnxviz features`), over the {n_test:,} held-out images:
{silent}. For `demo_sample.png` (the image `onnxviz demo` uses): {silent_s}.

The filter pictures use one min–max scale for the whole layer
(weights {kernel.min():.3f} … {kernel.max():.3f}), so a zero weight is the grey at
{zero_grey:.0%}, not mid-grey.

What the {n_f} filters respond to: {summarise_filters(r["filters"])}.

How that was decided (`describe_filters` in the script): the filter summed over R, G, B
(its response to a grey pattern), minus its mean, is fitted with a plane; if the plane
explains ≥ {EDGE_MIN_FIT:g} of it ("fit") and that light/dark part holds ≥ {EDGE_MIN_SHARE:.0%} of the
filter's energy ("light/dark share"), it is an edge detector whose light side is the
plane's uphill direction (45° sectors; light side top or bottom = horizontal edge, top
left or bottom right = an edge running "/"). Colour: the per-channel sums minus their mean
(its response to a uniform colour beyond brightness), named by hue; the channels before
"vs" excite, the others inhibit.

| filter | edge | light side | colour (opponency) | fit | light/dark share | max\\|w\\| |
|---|---|---|---|---|---|---|
{filt_rows}

### Conv layers (`onnxviz.layer_names`)

| ONNX Conv node | Keras layer |
|---|---|
{mapping}
"""
    path.write_text(text)


def _sci(v: float) -> str:
    """1e-4 rather than 0.0001; 0.01 stays 0.01."""
    return f"{v:g}" if v >= 1e-3 or v == 0 else f"{v:.0e}".replace("e-0", "e-")


def _v(dist):
    from importlib.metadata import version
    try:
        return version(dist)
    except Exception:
        return "?"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.sample is not None:  # no TensorFlow needed
        try:
            img = demo_shapes.make_sample_image(args.seed)
            demo_shapes.write_png(args.sample, img)
        except OSError as e:
            print(f"error: cannot write {args.sample}: {e.strerror or e}", file=sys.stderr)
            return 1
        print(f"wrote {args.sample} (class {demo_shapes.CLASSES[args.seed % len(demo_shapes.CLASSES)]})")
        return 0
    try:
        from keras_export import ExportError, export_keras_model
        t0 = time.perf_counter()
        r = train(args)
        r["seed"] = args.seed
        r["args"] = args
        out = args.output
        info = export_keras_model(
            r["model"], out, preprocess="unit", channel_order="RGB",
            source=(f"scripts/train_demo_model.py: VGG-style demo CNN trained on demo_shapes "
                    f"(Keras {_v('keras')}, tf2onnx {_v('tf2onnx')})"),
            weights_desc=f"trained on scripts/demo_shapes.py images, seed {args.seed}",
            labels=demo_shapes.CLASSES)
        print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB); self-check max relative difference "
              f"{info['max_rel_diff']:.2g}, conv weights == Keras kernels: "
              f"{info['filters_checked']}/{info['n_conv']}")
        x_te, y_te = demo_shapes.make_dataset(args.test_per_class, seed=TEST_SEED)
        acc, per_class, confusion, n_test = evaluate_onnx(out, x_te, y_te)
        kernel = r["model"].get_layer("block1_conv1").get_weights()[0]
        r["dead"] = dead_filters(kernel)
        r["filters"] = describe_filters(kernel)
        r["silent"] = silent_channels(r["model"], x_te.astype(np.float32) / 255.0)
        r["silent_sample"] = silent_channels(r["model"], demo_shapes.make_demo_sample()[None].astype(np.float32) / 255.0)
        print(f"block1_conv1 dead filters (max|w| < {DEAD_FRACTION:.0%} of the layer's max|w|): "
              f"{len(r['dead'])}/{kernel.shape[-1]}" + (f" ({', '.join(map(str, r['dead']))})" if r["dead"] else ""))
        print(f"feature maps, held-out images: {_silent_text(r['silent'])}")
        print(f"feature maps, demo_sample.png: {_silent_text(r['silent_sample'])}")
        print(f"block1_conv1 filters: {summarise_filters(r['filters'])}")
        print(f"held-out accuracy (onnxruntime, {n_test} fresh images): {acc * 100:.1f} %")
        print("  " + ", ".join(f"{c} {v * 100:.0f}%" for c, v in per_class.items()))
        if not args.no_readme:
            readme = args.readme or out.parent / "README.md"
            cmd = "python scripts/train_demo_model.py" + ("" if argv is None and len(sys.argv) == 1
                                                            else " " + " ".join(sys.argv[1:] if argv is None else argv))
            write_readme(readme, out, r, info, acc, per_class, confusion, n_test, cmd)
            print(f"wrote {readme}")
        print(f"total {time.perf_counter() - t0:.0f} s (training {r['t_train']:.0f} s)")
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        if args.debug:
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"error: {type(e).__name__}: {first} (run with --debug for the traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
