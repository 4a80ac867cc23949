#!/usr/bin/env python3
"""Benchmark suite: onnxviz against the Keras walk-through, with the issue's speed and memory targets.

Every measurement is a fresh process; the sides of a comparison run alternately (A B A B ...)
for several rounds, and the table gives medians and the ratio of medians. Peak RSS is each
child's own (``os.wait4``). Comparisons, all on VGG16 with the same random weights on both
sides (Keras VGG16 ``weights=None``, seeded, saved to a local ``.weights.h5``, and that file
exported to ONNX with ``scripts/export_vgg16.py``):

  a. the Keras walk-through script (``bench_walkthrough_keras.py``) vs ``onnxviz features``
     doing the same job (the last conv of each of the 5 blocks, 64 maps each, PNGs written),
     and a naive onnxruntime script (``bench_walkthrough_ort.py``) — whole processes;
  b. plain onnxruntime inference of the model vs onnxviz computing all 13 conv feature maps,
     batch 1 and batch 8 — time per call inside the process, after a warm-up call; and, for
     information, onnxruntime on the conv base alone (the model cut after its last conv), the
     same computation as the 13 maps without the fully-connected top;
  c. ``block1_conv1`` alone vs all 13 layers — time per call, after a warm-up call;
  d. drawing the 512 maps of ``block5_conv3``: one matplotlib axes per map vs onnxviz's
     mosaic — from the array to the PNG file, after a small warm-up drawing;
  e. ``onnxviz summary`` and ``onnxviz filters`` — whole processes (import + load + work);
  f. ``scripts/export_vgg16.py`` — whole process, wall time and peak RSS.

    python scripts/benchmark.py                      # full run, 5 rounds; writes BENCHMARKS.md
    python scripts/benchmark.py --rounds 3 --only a,d --output /tmp/bench.md
    python scripts/benchmark.py --smoke --output /tmp/smoke.md   # tiny model, 1 round, no TF

Needs the ``export`` extra (TensorFlow, tf2onnx) for a and f and to make the model; the
smoke run (``--smoke``) needs neither: it builds a small VGG16-shaped model with
``make_random_vgg16.py`` (32×32 input, no top) and runs b–e and the onnxviz/onnxruntime rows
of a, fewer maps, one round, so that CI keeps this script working. Model files are cached
in ``--workdir`` (default: ``$TMPDIR/onnxviz-benchmark``). The full run takes 5–8 minutes
on 2 cores.

Internal: ``benchmark.py _child KIND ...`` is one in-process measurement; it prints one JSON
line.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
STAGE_ENDS = ["block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3"]
BEGIN, END = "<!-- benchmark.py: begin -->", "<!-- benchmark.py: end -->"
COMPARISONS = "abcdef"
CHILD_TIMEOUT_S = 900


class BenchError(Exception):
    pass


# ----------------------------------------------------------------------------- running children

def run_process(argv: list[str], *, timeout: float = CHILD_TIMEOUT_S) -> tuple[float, float, str]:
    """``(wall s, peak RSS MB, stdout)`` of one child process; raise BenchError if it fails."""
    env = dict(os.environ, MPLBACKEND="Agg", TF_CPP_MIN_LOG_LEVEL="2", PYTHONWARNINGS="ignore")
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, env=env)
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            out = proc.stdout.read().decode(errors="replace")
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        proc.stdout.close()
        if proc.returncode:
            err.seek(0)
            tail = err.read().decode(errors="replace").strip().splitlines()[-6:]
            raise BenchError(f"{' '.join(argv)} exited with {proc.returncode}:\n  " + "\n  ".join(tail))
    return wall, usage.ru_maxrss / 1024, out


def child_result(out: str) -> dict:
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise BenchError(f"a measuring child printed no result: {out[-300:]!r}")


# ----------------------------------------------------------------------------- the children

def _photo() -> str:
    import matplotlib.cbook

    return matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)


def _decoded(photo: str, h: int, w: int):
    """The photo decoded and resized once (outside any timing): ``H×W×3`` uint8."""
    import numpy as np
    from PIL import Image

    with Image.open(photo) as img:
        return np.asarray(img.convert("RGB").resize((w, h), Image.BILINEAR))


def _time_calls(work, reps: int) -> dict:
    start = time.perf_counter()
    work()                                  # warm-up: builds the session, touches the weights
    first = time.perf_counter() - start
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    # The fastest call: other jobs on the machine only ever add time (timeit's rule).
    return {"seconds": min(times), "median": statistics.median(times), "first": first, "times": times}


def child_plain(model: str, photo: str, batch: int, reps: int) -> dict:
    """Plain onnxruntime inference of the whole model: caffe preprocessing in numpy + run."""
    import numpy as np
    import onnxruntime as ort

    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    nhwc = inp.shape[-1] == 3
    h, w = (inp.shape[1], inp.shape[2]) if nhwc else (inp.shape[2], inp.shape[3])
    images = [_decoded(photo, h, w)] * batch
    mean = np.array([103.939, 116.779, 123.68], np.float32)  # caffe: RGB→BGR, minus the mean

    def work():
        x = np.stack(images).astype(np.float32)[..., ::-1] - mean
        if not nhwc:
            x = x.transpose(0, 3, 1, 2)
        return sess.run(None, {inp.name: np.ascontiguousarray(x)})

    return _time_calls(work, reps)


def child_onnxviz(model: str, photo: str, batch: int, reps: int, layers: str) -> dict:
    """``Model.feature_maps`` of the decoded photo(s), ``layers`` = 'all' or a comma list."""
    import onnxviz

    m = onnxviz.load(model)
    images = [_decoded(photo, *m.input.size)] * batch
    chosen = None if layers == "all" else layers.split(",")
    result = {}

    def work():
        result.clear()  # drop the last call's maps first, as a loop over images would
        result["maps"] = m.feature_maps(images, chosen)

    out = _time_calls(work, reps)
    out["layers"] = len(result["maps"])
    return out


def _grid(n: int) -> tuple[int, int]:
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def child_draw_mpl(npy: str, n: int, out: str) -> dict:
    """One matplotlib axes per map (the walk-through's way), figure as large as onnxviz's mosaic."""
    import numpy as np
    from matplotlib import pyplot

    maps = np.load(npy)

    def draw(k: int, path: str):
        rows, cols = _grid(k)
        pyplot.figure(figsize=(cols * 0.58, rows * 0.58), dpi=100)  # ~58 px per map, as onnxviz
        for i in range(k):
            ax = pyplot.subplot(rows, cols, i + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            pyplot.imshow(maps[0, i], cmap="viridis")
        pyplot.savefig(path)
        pyplot.close()

    draw(4, out + ".warmup.png")
    start = time.perf_counter()
    draw(n, out)
    return {"seconds": time.perf_counter() - start}


def child_draw_onnxviz(npy: str, n: int, out: str) -> dict:
    """onnxviz's mosaic: ``feature_map_image`` + ``save_png``."""
    import numpy as np
    from onnxviz.render import feature_map_image, save_png

    maps = np.load(npy)
    save_png(feature_map_image(maps, "block5_conv3", max=4), out + ".warmup.png")
    start = time.perf_counter()
    save_png(feature_map_image(maps, "block5_conv3", max=n), out)
    return {"seconds": time.perf_counter() - start}


def child_make_h5(path: str, seed: int) -> dict:
    """Keras VGG16 (with its top) with Keras' default random init, seeded, saved to ``path``."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.applications.VGG16(weights=None)
    model.save_weights(path)
    return {"path": path}


def child_save_maps(model: str, photo: str, layer: str, npy: str) -> dict:
    import numpy as np

    import onnxviz

    maps = onnxviz.load(model).feature_maps(photo, layer)[layer]
    np.save(npy, maps)
    return {"shape": list(maps.shape)}


def child_cut_conv(model: str, out: str) -> dict:
    """The model cut after its last conv's feature map (``onnx.utils.extract_model``)."""
    import onnx.utils

    import onnxviz

    m = onnxviz.load(model)
    inputs = [m.input.name]
    outputs = [m.layers[-1].tensor]
    del m
    onnx.utils.extract_model(model, out, inputs, outputs, check_model=False)
    return {"output": outputs[0]}


CHILDREN = {
    "cut-conv": lambda a: child_cut_conv(*a),
    "plain": lambda a: child_plain(a[0], a[1], int(a[2]), int(a[3])),
    "onnxviz": lambda a: child_onnxviz(a[0], a[1], int(a[2]), int(a[3]), a[4]),
    "draw-mpl": lambda a: child_draw_mpl(a[0], int(a[1]), a[2]),
    "draw-onnxviz": lambda a: child_draw_onnxviz(a[0], int(a[1]), a[2]),
    "make-h5": lambda a: child_make_h5(a[0], int(a[1])),
    "save-maps": lambda a: child_save_maps(*a),
}


# ----------------------------------------------------------------------------- the plan

@dataclass
class Side:
    key: str                     # e.g. "a.onnxviz"
    label: str                   # what runs
    argv: list
    timed: str                   # what the figure is
    inproc: bool = False         # the figure is the child's own timing, not the process wall
    outdir: str | None = None    # emptied before each run
    expect: int = 0              # PNG files the run must leave in outdir
    runs: list = field(default_factory=list)  # (wall s, peak RSS MB, in-process s or None)

    def median(self, what: str) -> float:
        i = {"wall": 0, "rss": 1, "inproc": 2}[what]
        return statistics.median(r[i] for r in self.runs)

    @property
    def figure(self) -> float:
        return self.median("inproc" if self.inproc else "wall")


@dataclass
class Target:
    comparison: str
    text: str                    # the requirement, as the issue words it
    value: callable              # (sides, round or None for the medians) -> float
    fmt: str                     # how to show the value
    ok: callable | None          # float -> bool; None: for information


def build_plan(cfg) -> tuple[dict, list]:
    py = sys.executable
    me = os.path.abspath(__file__)
    child = [py, me, "_child"]
    w, model, photo = cfg.workdir, cfg.model, cfg.photo
    out = os.path.join(w, "out")
    s: dict[str, Side] = {}

    def add(comp, key, *args, **kw):
        if comp in cfg.only:
            s[f"{comp}.{key}"] = Side(f"{comp}.{key}", *args, **kw)

    maps = cfg.maps_per_layer
    if not cfg.smoke:
        add("a", "keras", "Keras walk-through script (Keras VGG16, multi-output Model, predict, "
            "8×8 axes per layer)",
            [py, os.path.join(HERE, "bench_walkthrough_keras.py"), "--weights", cfg.h5, "--image", photo,
             "-o", f"{out}/a_keras"], "process wall", outdir=f"{out}/a_keras", expect=5)
    square = int(math.sqrt(maps))
    add("a", "ort", f"naive onnxruntime script (onnx.load, expose 5 outputs, {square}×{square} axes per layer)",
        [py, os.path.join(HERE, "bench_walkthrough_ort.py"), model, photo, "-o", f"{out}/a_ort",
         "--square", str(square)], "process wall", outdir=f"{out}/a_ort", expect=5)
    layer_args = [a for layer in STAGE_ENDS for a in ("--layer", layer)]
    add("a", "onnxviz", f"`onnxviz features` (5 layers, --max {maps})",
        [py, "-m", "onnxviz", "features", model, photo, *layer_args, "--max", str(maps),
         "-o", f"{out}/a_onnxviz/maps.png"], "process wall", outdir=f"{out}/a_onnxviz", expect=5)
    for b in cfg.batches:
        reps = cfg.reps if b == 1 else max(2, cfg.reps // 2)
        add("b", f"plain{b}", f"plain onnxruntime, whole model, batch {b}",
            child + ["plain", model, photo, str(b), str(reps)], f"per call, best of {reps}", inproc=True)
        add("b", f"onnxviz{b}", f"`m.feature_maps(images)`, all 13 convs, batch {b}",
            child + ["onnxviz", model, photo, str(b), str(reps), "all"], f"per call, best of {reps}",
            inproc=True)
        add("b", f"conv{b}", f"plain onnxruntime, the conv base alone (model cut after the last conv), batch {b}",
            child + ["plain", cfg.conv_model, photo, str(b), str(reps)], f"per call, best of {reps}",
            inproc=True)
    add("c", "one", "`m.feature_maps(image, 'block1_conv1')`",
        child + ["onnxviz", model, photo, "1", str(cfg.reps), "block1_conv1"],
        f"per call, best of {cfg.reps}", inproc=True)
    add("c", "all", "`m.feature_maps(image)`, all 13 convs",
        child + ["onnxviz", model, photo, "1", str(cfg.reps), "all"], f"per call, best of {cfg.reps}",
        inproc=True)
    n = cfg.draw_maps
    add("d", "mpl", f"matplotlib, one axes per map ({n} maps, imshow, savefig)",
        child + ["draw-mpl", cfg.npy, str(n), f"{out}/d_mpl.png"], "array → PNG", inproc=True)
    add("d", "onnxviz", f"onnxviz mosaic ({n} maps, `feature_map_image` + `save_png`)",
        child + ["draw-onnxviz", cfg.npy, str(n), f"{out}/d_onnxviz.png"], "array → PNG", inproc=True)
    add("e", "summary", "`onnxviz summary`", [py, "-m", "onnxviz", "summary", model], "process wall")
    add("e", "filters", "`onnxviz filters` (block1_conv1)",
        [py, "-m", "onnxviz", "filters", model, "-o", f"{out}/e_filters.png"], "process wall")
    if not cfg.smoke:
        add("f", "export", "`scripts/export_vgg16.py --weights W.h5` (with its self-check)",
            [py, os.path.join(HERE, "export_vgg16.py"), "--weights", cfg.h5, "-o", os.path.join(w, "export_run.onnx")],
            "process wall")

    def get(side, what, r):
        i = {"figure": 2 if side.inproc else 0, "wall": 0, "rss": 1}[what]
        return statistics.median(x[i] for x in side.runs) if r is None else side.runs[r][i]

    def ratio(a, b, what="figure"):
        return lambda sides, r=None: get(sides[a], what, r) / get(sides[b], what, r)

    def value(key, what="figure", scale=1.0):
        return lambda sides, r=None: get(sides[key], what, r) * scale

    targets = [
        Target("a", "≥ 12× faster than the Keras walk-through", ratio("a.keras", "a.onnxviz"), "{:.1f}×",
               lambda v: v >= 12),
        Target("a", "≤ 1/5 the peak memory of the Keras walk-through", ratio("a.onnxviz", "a.keras", "rss"),
               "{:.3f}", lambda v: v <= 1 / 5),
        Target("a", "beats the naive onnxruntime script: faster", ratio("a.ort", "a.onnxviz"), "{:.1f}×",
               lambda v: v > 1),
        Target("a", "beats the naive onnxruntime script: lighter", ratio("a.onnxviz", "a.ort", "rss"),
               "{:.3f}", lambda v: v < 1),
    ]
    for b in cfg.batches:
        targets.append(Target("b", f"all 13 maps ≤ 1.10× plain inference, batch {b}",
                              ratio(f"b.onnxviz{b}", f"b.plain{b}"), "{:.2f}×", lambda v: v <= 1.10))
        targets.append(Target("b", f"(for information) all 13 maps vs the conv base alone, batch {b}",
                              ratio(f"b.onnxviz{b}", f"b.conv{b}"), "{:.2f}×", None))
    targets += [
        Target("c", "block1_conv1 ≤ 0.2× all 13 layers", ratio("c.one", "c.all"), "{:.3f}×", lambda v: v <= 0.2),
        Target("d", f"mosaic of {n} maps ≤ 0.3 s", value("d.onnxviz"), "{:.3f} s", lambda v: v <= 0.3),
        Target("d", "≥ 10× faster than one axes per map", ratio("d.mpl", "d.onnxviz"), "{:.0f}×",
               lambda v: v >= 10),
        Target("e", "`onnxviz summary` ≤ 1.0 s", value("e.summary"), "{:.2f} s", lambda v: v <= 1.0),
        Target("e", "`onnxviz filters` ≤ 1.0 s", value("e.filters"), "{:.2f} s", lambda v: v <= 1.0),
        Target("f", "export ≤ 4 GB peak RSS", value("f.export", "rss", 1 / 1024), "{:.2f} GB",
               lambda v: v <= 4),
        Target("f", "export ≤ 60 s", value("f.export"), "{:.1f} s", lambda v: v <= 60),
    ]
    return s, targets


# ----------------------------------------------------------------------------- preparation

def prepare(cfg) -> None:
    os.makedirs(cfg.workdir, exist_ok=True)
    out = os.path.join(cfg.workdir, "out")
    os.makedirs(out, exist_ok=True)
    cfg.photo = _photo()
    py, me = sys.executable, os.path.abspath(__file__)
    if cfg.smoke:
        cfg.model = os.path.join(cfg.workdir, "vgg16_smoke.onnx")
        if cfg.fresh or not os.path.exists(cfg.model):
            sys.path.insert(0, HERE)
            import onnx
            from make_random_vgg16 import build

            onnx.save(build(include_top=False, seed=0, size=32), cfg.model)
        cfg.h5 = None
    else:
        cfg.h5 = os.path.join(cfg.workdir, "vgg16_random_seed0.weights.h5")
        cfg.model = os.path.join(cfg.workdir, "vgg16_random_seed0.onnx")
        if cfg.fresh or not os.path.exists(cfg.h5):
            log(f"making {cfg.h5} (Keras VGG16, weights=None, seed 0)")
            run_process([py, me, "_child", "make-h5", cfg.h5, "0"])
        if cfg.fresh or not os.path.exists(cfg.model) or os.path.getmtime(cfg.model) < os.path.getmtime(cfg.h5):
            log(f"exporting {cfg.model} with scripts/export_vgg16.py")
            run_process([py, os.path.join(HERE, "export_vgg16.py"), "--weights", cfg.h5, "-o", cfg.model])
    cfg.conv_model = cfg.model[:-len(".onnx")] + "_convbase.onnx"
    if cfg.fresh or not os.path.exists(cfg.conv_model) or \
            os.path.getmtime(cfg.conv_model) < os.path.getmtime(cfg.model):
        run_process([py, me, "_child", "cut-conv", cfg.model, cfg.conv_model])
    cfg.npy = os.path.join(cfg.workdir, "block5_conv3_maps.npy")
    stamp = cfg.npy + ".source"
    source = f"{cfg.model} {os.path.getmtime(cfg.model)} {cfg.photo}"
    if cfg.fresh or not os.path.exists(cfg.npy) or not os.path.exists(stamp) or open(stamp).read() != source:
        run_process([py, me, "_child", "save-maps", cfg.model, cfg.photo, "block5_conv3", cfg.npy])
        with open(stamp, "w") as f:
            f.write(source)


def run_side(side: Side) -> None:
    if side.outdir:
        shutil.rmtree(side.outdir, ignore_errors=True)
        os.makedirs(side.outdir)
    wall, rss, out = run_process(side.argv)
    inproc = child_result(out)["seconds"] if side.inproc else None
    if side.outdir:
        pngs = [p for p in os.listdir(side.outdir) if p.endswith(".png")
                and os.path.getsize(os.path.join(side.outdir, p)) > 0]
        if len(pngs) != side.expect:
            raise BenchError(f"{side.key}: expected {side.expect} PNG files in {side.outdir}, found {len(pngs)}")
    side.runs.append((wall, rss, inproc))


# ----------------------------------------------------------------------------- reporting

def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(next(ln for ln in f if ln.startswith("MemTotal")).split()[1])
        mem = f", {kb / 1024 ** 2:.0f} GB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    return f"{cpu}, {os.cpu_count()} cores{mem}, {platform.system()} {platform.release()}"


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"Python {platform.python_version()}"]
    for dist in ("onnxviz", "onnxruntime", "onnx", "numpy", "matplotlib", "pillow", "tensorflow", "keras",
                 "tf2onnx"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            pass
    return ", ".join(parts)


def sig(v: float) -> str:
    """3 significant digits, no exponent: 12.3, 1.23, 0.123, 0.000429."""
    return f"{v:.{max(0, 2 - math.floor(math.log10(abs(v))))}f}" if v else "0"


def fmt_runs(values) -> str:
    return " / ".join(sig(v) for v in values)


def report(cfg, sides: dict, targets: list, started: str, load: tuple, elapsed: float) -> str:
    lines = [BEGIN, f"## The benchmark suite (`scripts/benchmark.py{' --smoke' if cfg.smoke else ''}`)", ""]
    model_text = ("a VGG16-shaped model from `make_random_vgg16.py` at 32×32, no top (smoke run: targets are "
                  "shown, not judged)" if cfg.smoke else
                  "Keras VGG16 with its top (138 M parameters), Keras' default random init with seed 0, "
                  "saved to a `.weights.h5` that the Keras script loads and that `export_vgg16.py` turned "
                  "into the 553 MB ONNX file the other sides use")
    lines += [
        f"Run {started}, {cfg.rounds} round{'s' if cfg.rounds > 1 else ''} (sides alternating A B A B), "
        f"{elapsed / 60:.1f} min in all. Machine: {machine()}; load average "
        f"{load[0]:.2f} at the start, {load[1]:.2f} at the end"
        f"{' (other jobs were using the CPU)' if max(load) > 0.5 else ''}. {versions()}.",
        "",
        f"Model: {model_text}. Photo: matplotlib's `grace_hopper.jpg`. Each figure is the median "
        "over the rounds; a ratio is a ratio of medians. *process wall*: the whole child process "
        "(interpreter start, imports, load, work, PNGs written), from spawn to exit. *per call*: "
        "inside one process, the fastest of N calls (other jobs only ever add time) after one "
        "untimed warm-up call that builds the onnxruntime session; "
        "both sides start from the photo decoded and resized to the model's input size (plain: caffe "
        "preprocessing in numpy + `sess.run` of the whole model; onnxviz: `Model.feature_maps`, "
        "its own preprocessing included; conv base: the same plain run on the ONNX file cut after "
        "`block5_conv3` by `onnx.utils.extract_model` — the computation of the 13 maps without the "
        "fully-connected top, fetching only the last map). *array → PNG*: drawing and writing one PNG from the "
        "maps in memory, after a 4-map warm-up drawing (fonts, colour maps). Peak RSS: the child "
        "process's own (`os.wait4`).",
        "",
        "| | target | measured (medians) | met | each round |",
        "|---|---|---|---|---|",
    ]
    for t in targets:
        try:
            v = t.value(sides)
        except KeyError:
            continue
        rounds = []
        for r in range(cfg.rounds):
            try:
                rounds.append(t.fmt.format(t.value(sides, r)).replace(" ", ""))
            except IndexError:
                break
        met = "info" if t.ok is None else "—" if cfg.smoke else ("yes" if t.ok(v) else "**no**")
        lines.append(f"| {t.comparison} | {t.text} | {t.fmt.format(v)} | {met} | {' / '.join(rounds)} |")
    lines += ["", "| | side | timed | median s | peak RSS MB | every run, s |", "|---|---|---|---|---|---|"]
    for side in sides.values():
        if not side.runs:
            continue
        col = 2 if side.inproc else 0
        lines.append(f"| {side.key} | {side.label} | {side.timed} | {sig(side.figure)} | "
                     f"{side.median('rss'):.0f} | {fmt_runs(r[col] for r in side.runs)} |")
    lines += ["", END]
    return "\n".join(lines) + "\n"


def write_report(path: str, section: str) -> None:
    text = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            text = f.read()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        text = head + section + ("\n" + tail if tail else "")
    elif text:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        text = "# Benchmarks\n\n" + section
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- main

def parse_args(argv):
    p = argparse.ArgumentParser(prog="benchmark.py", description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny model, 1 round, no TensorFlow (for CI)")
    p.add_argument("--rounds", type=int, default=None, help="rounds (default 5; 1 with --smoke)")
    p.add_argument("--only", default=COMPARISONS, help="comparisons to run, e.g. a,d (default: all)")
    p.add_argument("--workdir", default=None, help="where models and outputs go "
                   "(default: $TMPDIR/onnxviz-benchmark[-smoke])")
    p.add_argument("--output", default=None, help="Markdown file to write the section into (default: "
                   "the repo's BENCHMARKS.md; with --smoke: none)")
    p.add_argument("--no-write", action="store_true", help="print the table only")
    p.add_argument("--fresh", action="store_true", help="rebuild the cached model files")
    cfg = p.parse_args(argv)
    cfg.only = "".join(c for c in cfg.only if c in COMPARISONS)
    if cfg.smoke:
        cfg.only = cfg.only.replace("f", "")
    cfg.rounds = cfg.rounds or (1 if cfg.smoke else 5)
    cfg.workdir = os.path.abspath(cfg.workdir or os.path.join(
        tempfile.gettempdir(), "onnxviz-benchmark" + ("-smoke" if cfg.smoke else "")))
    if cfg.output is None and not cfg.smoke:
        cfg.output = os.path.join(REPO, "BENCHMARKS.md")
    if cfg.no_write:
        cfg.output = None
    cfg.maps_per_layer = 4 if cfg.smoke else 64
    cfg.draw_maps = 16 if cfg.smoke else 512
    cfg.batches = (1, 2) if cfg.smoke else (1, 8)
    cfg.reps = 3 if cfg.smoke else 9
    return cfg


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_child":
        os.environ.setdefault("MPLBACKEND", "Agg")
        print(json.dumps(CHILDREN[argv[1]](argv[2:])), flush=True)
        return 0
    cfg = parse_args(argv)
    t0 = time.perf_counter()
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    load0 = os.getloadavg()[0]
    try:
        prepare(cfg)
        sides, targets = build_plan(cfg)
        for r in range(cfg.rounds):
            for side in sides.values():
                if side.key.startswith("f.") and r >= 3:  # the export: 3 rounds are plenty
                    continue
                run_side(side)
                last = side.runs[-1]
                log(f"round {r + 1}/{cfg.rounds}  {side.key:12} "
                    f"{(last[2] if side.inproc else last[0]):8.3f} s  {last[1]:7.0f} MB")
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    section = report(cfg, sides, targets, started, (load0, os.getloadavg()[0]), time.perf_counter() - t0)
    print(section)
    if cfg.output:
        write_report(cfg.output, section)
        log(f"wrote {cfg.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
