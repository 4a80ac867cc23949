#!/usr/bin/env python3
"""Gradient benchmarks (issue 12): the cost of a gradient, and patterns() against the TF loop.

Side by side in one run, sides alternating (A B A B …, the order rotated each round) over
``--rounds`` rounds, each measurement a fresh child process; the tables give medians and the
ratio of medians. Hold the lock: ``flock /work/bench.lock python scripts/bench_gradients.py``.

  g. a gradient (forward + backward in one onnxruntime session: the class score, the logit
     before the softmax, w.r.t. the input) vs the forward pass of the same sub-graph (the
     model pruned to that logit), per call, best of ``--calls`` after a warm-up call:
     VGG16 at 224² (``make_random_vgg16.py``, with its top) and ResNet18 at 224²
     (torchvision, random weights, TorchScript export); batch 1 and 8;
  p. ``onnxviz.patterns`` on 64 channels of VGG16's ``block5_conv3`` at 200², 30 steps (the
     Keras example's loop, batched over channels) vs that loop written in TF 2 with
     ``GradientTape`` (keras.io's ``gradient_ascent_step``, one filter at a time, as the
     example does) on the same weights (Keras VGG16 ``weights=None``, seeded, exported with
     ``scripts/keras_export.py``) from the same start images: seconds per filter (TF: the
     first ``--tf-filters`` filters; its ``tf.function`` traced on an untimed step first;
     onnxviz: the whole call, session built on an untimed first call), and the objective each
     reaches (the mean of the channel away from a 2-pixel border at the final image);
  s. the same per step, one process each (the cross-check): the TF step on one image, median of
     ``--steps-timed`` steps after 2 untimed; ``patterns`` on 16 channels (one session run of
     16 images a step), 5 steps a call, per image and step (its final objective, one forward,
     shared by the 5 steps), median of ``--steps-timed`` calls after an untimed one.

``--baseline REV`` adds onnxviz at git revision REV (``git archive`` of its ``onnxviz/`` into
the work folder) as a third side of g, p and s: before and after, measured in the same rounds.

    python scripts/bench_gradients.py                         # 3 rounds, prints the tables
    python scripts/bench_gradients.py --rounds 1 --tf-filters 2 --only g
    python scripts/bench_gradients.py --baseline HEAD~1 --only ps

Needs torch + torchvision (ResNet18) and the ``export`` extra (TF, for p and s). Models are
cached in ``--workdir`` (default ``$TMPDIR/onnxviz-bench-gradients``). The machine load is
recorded (``os.getloadavg``) at the start and the end: the figures of a loaded machine are
noisy, ratios less so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CHANNELS, SIZE, STEPS = 64, 200, 30


def child(argv: list[str], repo: str = REPO) -> dict:
    """Run ``_child argv`` in a fresh process with onnxviz imported from ``repo``."""
    env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
    out = subprocess.run([sys.executable, __file__, "_child", *argv], capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f"child {argv} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def checkout(rev: str, work: str) -> str:
    """onnxviz as it is at git revision ``rev``, unpacked under ``work``; the folder to import it from."""
    sha = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", rev], capture_output=True, text=True,
                         check=True).stdout.strip()
    dest = os.path.join(work, f"onnxviz-{sha}")
    if not os.path.isdir(os.path.join(dest, "onnxviz")):
        os.makedirs(dest, exist_ok=True)
        archive = subprocess.run(["git", "-C", REPO, "archive", sha, "onnxviz"], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)
    return dest


# ----------------------------------------------------------------------------- models

def make_models(work: str) -> dict:
    os.makedirs(work, exist_ok=True)
    paths = {k: os.path.join(work, f) for k, f in (("vgg16", "vgg16.onnx"), ("resnet18", "resnet18.onnx"),
                                                   ("keras", "keras_vgg16_base.onnx"), ("h5", "keras_vgg16_base.weights.h5"),
                                                   ("start", "start.npy"))}
    if not os.path.exists(paths["vgg16"]):
        sys.path.insert(0, HERE)
        import onnx
        import make_random_vgg16
        onnx.save(make_random_vgg16.build(include_top=True), paths["vgg16"])
    if not os.path.exists(paths["resnet18"]):
        child(["make_resnet18", paths["resnet18"]])
    if not os.path.exists(paths["keras"]):
        child(["make_keras", paths["keras"], paths["h5"], paths["start"]])
    return paths


def _make_resnet18(path: str) -> None:
    import torch
    lib = torch.library.Library("torchvision", "DEF")  # torchvision beside the CPU torch (see HELPERS.md)
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None).eval()
    torch.onnx.export(net, (torch.zeros(1, 3, 224, 224),), path, dynamo=False, opset_version=17,
                      input_names=["input"], dynamic_axes={"input": {0: "N"}})
    import onnx
    m = onnx.load(path)
    onnx.helper.set_model_props(m, {"onnxviz.preprocess": "torch"})
    onnx.save(m, path)


def _make_keras(path: str, h5: str, start: str) -> None:
    import keras
    import numpy as np
    sys.path.insert(0, HERE)
    from keras_export import export_keras_model
    keras.utils.set_random_seed(0)
    model = keras.applications.VGG16(weights=None, include_top=False, input_shape=(SIZE, SIZE, 3))
    model.save_weights(h5)
    export_keras_model(model, path, preprocess="caffe", channel_order="BGR", source="keras.applications.VGG16",
                       weights_desc="random")
    import onnxviz
    from onnxviz.explain.patterns import initial
    np.save(start, initial(onnxviz.load(path), CHANNELS, (SIZE, SIZE), seed=0))


# ----------------------------------------------------------------------------- measurements

def _gradient(path: str, size: int, batch: int, calls: int) -> dict:
    import numpy as np
    import onnxviz
    from onnxviz import runtime
    from onnxviz.explain.gradients import runner, score_tensor
    from onnxviz.graph.backward import Term
    from onnxviz.graph.rewrite import sub_model

    m = onnxviz.load(path)
    inp = m.input
    shape = (batch, size, size, 3) if inp.layout == "NHWC" else (batch, 3, size, size)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    tensor = score_tensor(m)
    forward = runtime.session(sub_model(m.proto, [tensor]), m.base_dir)
    run = runner(m, (Term("score", tensor),), (inp.name,), shape)
    seed = np.zeros((batch, run.graph.sizes[0]), np.float32)
    seed[:, 1] = 1

    def best(fn) -> float:
        fn()
        times = []
        for _ in range(calls):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    f = best(lambda: forward.run([tensor], {inp.name: x}))
    g = best(lambda: run.run(x, [seed]))
    return {"forward": f, "gradient": g}


def _patterns_onnxviz(path: str, start: str) -> dict:
    import numpy as np
    import onnxviz

    m = onnxviz.load(path)
    onnxviz.patterns(m, "block5_conv3", [0], size=SIZE, steps=1, max_bytes="16G")  # builds the session
    t = time.perf_counter()
    p = onnxviz.patterns(m, "block5_conv3", range(CHANNELS), size=SIZE, steps=STEPS, max_bytes="16G")
    seconds = time.perf_counter() - t
    assert np.array_equal(p.inputs[:1] * 0, np.load(start)[:1] * 0)
    return {"seconds": seconds, "per_filter": seconds / CHANNELS, "objective": [float(v) for v in p.activation]}


def _keras_loop(h5: str):
    """``(fx, gradient_ascent_step)``: the Keras VGG16 to block5_conv3 and keras.io's step, as written."""
    import keras
    import tensorflow as tf

    model = keras.applications.VGG16(weights=None, include_top=False, input_shape=(SIZE, SIZE, 3))
    model.load_weights(h5)
    fx = keras.Model(model.inputs, model.get_layer("block5_conv3").output)

    @tf.function
    def gradient_ascent_step(img, filter_index, learning_rate):
        with tf.GradientTape() as tape:
            tape.watch(img)
            loss = tf.reduce_mean(fx(img)[:, 2:-2, 2:-2, filter_index])
        grads = tf.math.l2_normalize(tape.gradient(loss, img))
        img += learning_rate * grads
        return loss, img

    return fx, gradient_ascent_step


def _patterns_tf(h5: str, start: str, filters: int) -> dict:
    import numpy as np
    import tensorflow as tf

    fx, gradient_ascent_step = _keras_loop(h5)
    starts = np.load(start)
    gradient_ascent_step(tf.constant(starts[:1]), tf.constant(0), 10.0)  # trace once, untimed
    per, objective = [], []
    for k in range(filters):
        img = tf.constant(starts[k:k + 1])
        t = time.perf_counter()
        for _ in range(STEPS):
            _, img = gradient_ascent_step(img, tf.constant(k), 10.0)
        per.append(time.perf_counter() - t)
        objective.append(float(tf.reduce_mean(fx(img)[:, 2:-2, 2:-2, k])))
    return {"per_filter": statistics.median(per), "each": per, "objective": objective}


def _step_onnxviz(path: str, start: str, calls: int) -> dict:
    """patterns on 16 channels (one session run a step) per image and step: ``calls`` calls of 5
    steps each, timed alone, after an untimed one that builds the sessions."""
    import numpy as np
    import onnxviz

    m = onnxviz.load(path)
    onnxviz.patterns(m, "block5_conv3", range(16), size=SIZE, steps=1, max_bytes="16G")
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        p = onnxviz.patterns(m, "block5_conv3", range(16), size=SIZE, steps=5, max_bytes="16G")
        times.append((time.perf_counter() - t) / (5 * 16))
    assert np.isfinite(p.activation).all()
    return {"per_image": statistics.median(times), "each": times}


def _step_tf(h5: str, start: str, steps: int) -> dict:
    import numpy as np
    import tensorflow as tf

    _, gradient_ascent_step = _keras_loop(h5)
    img = tf.constant(np.load(start)[:1])
    times = []
    for k in range(steps + 2):
        t = time.perf_counter()
        loss, img = gradient_ascent_step(img, tf.constant(0), 10.0)
        float(loss)
        if k >= 2:
            times.append(time.perf_counter() - t)
    return {"per_image": statistics.median(times), "each": times}


# ----------------------------------------------------------------------------- the run

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--tf-filters", type=int, default=4)
    p.add_argument("--steps-timed", type=int, default=6)
    p.add_argument("--only", default="gps")
    p.add_argument("--baseline", metavar="REV", help="also onnxviz at this git revision (before/after)")
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "onnxviz-bench-gradients"))
    args = p.parse_args(argv)
    load0, t0 = os.getloadavg(), time.time()
    paths = make_models(args.workdir)
    repos = {"onnxviz": REPO}
    if args.baseline:
        repos["before"] = checkout(args.baseline, args.workdir)
    rows: dict = {}
    for r in range(args.rounds):
        if "g" in args.only:
            for name, size in (("vgg16", 224), ("resnet18", 224)):
                for batch in (1, 8):
                    for side, repo in _rotated(list(repos.items()), r):
                        rows.setdefault(f"g.{side}.{name}.{batch}", []).append(
                            child(["gradient", paths[name], str(size), str(batch), str(args.calls)], repo))
        for kind, ours, theirs in (("p", ["patterns_onnxviz", paths["keras"], paths["start"]],
                                    ["patterns_tf", paths["h5"], paths["start"], str(args.tf_filters)]),
                                   ("s", ["step_onnxviz", paths["keras"], paths["start"], str(args.steps_timed)],
                                    ["step_tf", paths["h5"], paths["start"], str(args.steps_timed)])):
            if kind in args.only:
                sides = [(side, ours, repo) for side, repo in repos.items()] + [("tf", theirs, REPO)]
                for side, a, repo in _rotated(sides, r):
                    rows.setdefault(f"{kind}.{side}", []).append(child(a, repo))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    load1 = os.getloadavg()
    print(f"Run {time.strftime('%Y-%m-%d %H:%M')}, {args.rounds} rounds, {(time.time() - t0) / 60:.1f} min; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; load average "
          f"{load0[0]:.2f} at the start, {load1[0]:.2f} at the end"
          + (f"; before = {args.baseline}" if args.baseline else "") + ".\n")
    print("| | measured (medians over rounds) | target | met | each round |\n|---|---|---|---|---|")
    for key, rounds in rows.items():
        if key.startswith("g."):
            _, side, name, batch = key.split(".")
            ratio = [x["gradient"] / x["forward"] for x in rounds]
            f, g = (statistics.median(x[k] for x in rounds) for k in ("forward", "gradient"))
            label = "" if side == "onnxviz" else f" ({side})"
            print(f"| g | {name} 224², batch {batch}{label}: gradient {g * 1000:.0f} ms / forward {f * 1000:.0f} ms = "
                  f"{g / f:.2f}× | ≤ 3× | {'yes' if g / f <= 3 else 'no'} | "
                  f"{' / '.join(f'{v:.2f}×' for v in ratio)} |")
    for side in repos:
        _patterns_rows(rows, side, args.tf_filters)
    for side in repos:
        if f"s.{side}" in rows and "s.tf" in rows:
            ours = statistics.median(x["per_image"] for x in rows[f"s.{side}"])
            tf_ = statistics.median(x["per_image"] for x in rows["s.tf"])
            label = "" if side == "onnxviz" else f" ({side})"
            each = [" / ".join(f"{x['per_image'] * 1000:.0f}" for x in rows[k]) for k in (f"s.{side}", "s.tf")]
            print(f"| s | one step per image{label}: {ours * 1000:.0f} ms (onnxviz, 16 images a run) vs "
                  f"{tf_ * 1000:.0f} ms (TF step) = {tf_ / ours:.2f}× faster | ≥ 2× | {'yes' if tf_ / ours >= 2 else 'no'} | "
                  f"{each[0]} vs {each[1]} ms |")
    return 0


def _rotated(items: list, r: int) -> list:
    """The sides in a different order each round: A B C, B C A, C A B, …"""
    k = r % len(items)
    return items[k:] + items[:k]


def _patterns_rows(rows: dict, side: str, k: int) -> None:
    if f"p.{side}" not in rows or "p.tf" not in rows:
        return
    label = "" if side == "onnxviz" else f" ({side})"
    ours = statistics.median(x["per_filter"] for x in rows[f"p.{side}"])
    tf_ = statistics.median(x["per_filter"] for x in rows["p.tf"])
    mine = [statistics.median(x["objective"][i] for x in rows[f"p.{side}"]) for i in range(k)]
    theirs = [statistics.median(x["objective"][i] for x in rows["p.tf"]) for i in range(k)]
    worst = min(a / b for a, b in zip(mine, theirs) if b > 0) if any(b > 0 for b in theirs) else float("nan")
    print(f"| p | patterns{label}, 64 channels of block5_conv3 at 200², 30 steps: {ours:.2f} s per filter (onnxviz) "
          f"vs {tf_:.2f} s (TF loop) = {tf_ / ours:.2f}× faster | ≥ 2× | {'yes' if tf_ / ours >= 2 else 'no'} | "
          f"{_each(rows[f'p.{side}'])} vs {_each(rows['p.tf'])} |")
    print(f"| p | objective reached{label}, filters 0–{k - 1}: onnxviz / TF, worst filter {worst:.3f} | ≥ 0.9 | "
          f"{'yes' if worst >= 0.9 else 'no'} | {' / '.join(f'{a:.3g} vs {b:.3g}' for a, b in zip(mine, theirs))} |")


def _each(rounds) -> str:
    return " / ".join(f"{x['per_filter']:.2f}s" for x in rounds)


def _child(argv: list[str]) -> None:
    kind, rest = argv[0], argv[1:]
    if kind == "make_resnet18":
        _make_resnet18(*rest)
        result = {}
    elif kind == "make_keras":
        _make_keras(*rest)
        result = {}
    elif kind == "gradient":
        result = _gradient(rest[0], int(rest[1]), int(rest[2]), int(rest[3]))
    elif kind == "patterns_onnxviz":
        result = _patterns_onnxviz(*rest)
    elif kind == "patterns_tf":
        result = _patterns_tf(rest[0], rest[1], int(rest[2]))
    elif kind == "step_onnxviz":
        result = _step_onnxviz(rest[0], rest[1], int(rest[2]))
    else:
        result = _step_tf(rest[0], rest[1], int(rest[2]))
    print(json.dumps(result))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        _child(sys.argv[2:])
    else:
        sys.exit(main())
