"""The memory budget's estimate against the real peak RSS of feature-map runs.

Each case is a fresh process (``Model.feature_maps`` with the budget out of the way), measured
with ``os.wait4`` from a small runner process (a child's ``ru_maxrss`` starts at its parent's
peak on Linux); the estimate is :func:`onnxviz.budget.estimate` for the same request.
"base" is the peak of the same process on an 8×8 input: Python, numpy, onnx, onnxruntime,
Pillow, the model and its session. Models (random weights, made in a temporary folder):

* ``vgg``: VGG16's block 1 and two smaller stages, dynamic batch and spatial dims: 3×3 convs
  3→64, 64→64, MaxPool 4, 64→32, MaxPool 4, 32→8, each with Relu (the layers 0–3);
* ``c1d``: a 1-D net, dynamic length: conv 1→64, conv 64→64 (kernel 3), each with Relu.

    python scripts/bench_budget.py [--runs 3] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

_RUNNER = r"""
import json, os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
print(json.dumps([os.waitstatus_to_exitcode(status), usage.ru_maxrss / 1024]))
"""

_CHILD = r"""
import sys, numpy as np, onnxviz
model, source, layers, side, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
m = onnxviz.load(model)
layers = None if layers == "all" else [int(k) for k in layers.split(",")]
if source.endswith(".npy"):
    fm = m.feature_maps(np.zeros((batch, 1, side), np.float32), layers, max_bytes="1T")
else:
    fm = m.feature_maps([source] * batch, layers, preprocess="unit", size=(side, side), max_bytes="1T")
"""

MiB = 2**20
CASES = [  # model, layers, side (or length), batch
    ("vgg", "-1", 224, 1), ("vgg", "all", 224, 1),
    ("vgg", "-1", 1000, 1), ("vgg", "all", 1000, 1),
    ("vgg", "0", 2000, 1), ("vgg", "-1", 2000, 1), ("vgg", "all", 2000, 1),
    ("vgg", "-1", 224, 8), ("vgg", "all", 224, 8), ("vgg", "-1", 1000, 8), ("vgg", "all", 1000, 8),
    ("c1d", "-1", 1_000_000, 1), ("c1d", "all", 1_000_000, 1),
]


def make_models(folder: str) -> dict:
    from onnx import TensorProto, helper, numpy_helper, save
    from PIL import Image

    r = np.random.default_rng(0)

    def conv(nodes, inits, x, cin, cout, name, kernel):
        inits.append(numpy_helper.from_array((r.standard_normal((cout, cin, *kernel)) * 0.1).astype(np.float32),
                                             f"{name}.w"))
        nodes.append(helper.make_node("Conv", [x, f"{name}.w"], [f"{name}.c"], name=name, pads=[1] * 2 * len(kernel)))
        nodes.append(helper.make_node("Relu", [f"{name}.c"], [f"{name}.r"]))
        return f"{name}.r"

    paths = {}
    for kind, dims, plan in (("vgg", ["N", 3, "H", "W"], [(3, 64), (64, 64), "pool", (64, 32), "pool", (32, 8)]),
                             ("c1d", ["N", 1, "L"], [(1, 64), (64, 64)])):
        nodes, inits, x = [], [], "x"
        kernel = (3, 3) if kind == "vgg" else (3,)
        for k, step in enumerate(plan):
            if step == "pool":
                nodes.append(helper.make_node("MaxPool", [x], [f"pool{k}"], kernel_shape=[4, 4], strides=[4, 4]))
                x = f"pool{k}"
            else:
                x = conv(nodes, inits, x, *step, f"conv{k}", kernel)
        g = helper.make_graph(nodes, kind, [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], inits)
        paths[kind] = os.path.join(folder, f"{kind}.onnx")
        save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), paths[kind])
    paths["image"] = os.path.join(folder, "photo.png")
    Image.fromarray((r.random((480, 640, 3)) * 255).astype(np.uint8)).save(paths["image"])
    paths["array"] = os.path.join(folder, "x.npy")  # a name only: the child makes the array
    return paths


def peak(argv: list[str]) -> float:
    res = subprocess.run([sys.executable, "-c", _RUNNER, *argv], capture_output=True, text=True, check=True)
    code, mib = json.loads(res.stdout)
    if code:
        raise SystemExit(f"error: {' '.join(argv)} exited with {code}")
    return mib


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args(argv)
    import onnxviz
    from onnxviz import budget

    with tempfile.TemporaryDirectory() as folder:
        paths = make_models(folder)

        def run(kind, layers, side, batch):
            src = paths["array"] if kind == "c1d" else paths["image"]
            return [peak([sys.executable, "-c", _CHILD, paths[kind], src, layers, str(side), str(batch)])
                    for _ in range(args.runs)]

        base = {kind: min(run(kind, "all", 8, 1)) for kind in ("vgg", "c1d")}
        rows = []
        for kind, layers, side, batch in CASES:
            m = onnxviz.load(paths[kind])
            chosen = m.select(None if layers == "all" else [int(k) for k in layers.split(",")])
            shape = (batch, 1, side) if kind == "c1d" else (batch, 3, side, side)
            est = budget.estimate(m, [layer.tensor for layer in chosen], shape, images=kind == "vgg")["total"]
            peaks = sorted(run(kind, layers, side, batch))
            need = [q - base[kind] for q in peaks]
            rows.append((f"{kind} {'×'.join(map(str, shape))}, layers {layers}", est / MiB, peaks,
                         [n / (est / MiB) for n in need]))
    print(f"base: {', '.join(f'{k} {v:.0f} MiB' for k, v in base.items())}")
    if args.markdown:
        print("| case | estimate MiB | peak RSS MiB | (peak − base) / estimate |")
        print("|---|---|---|---|")
    for name, est, peaks, ratios in rows:
        span = lambda xs, f: f.format(xs[0]) if f.format(xs[0]) == f.format(xs[-1]) else \
            f"{f.format(xs[0])}–{f.format(xs[-1])}"  # noqa: E731
        cells = (name, f"{est:.0f}", span(peaks, "{:.0f}"), span(sorted(ratios), "{:.2f}"))
        print("| " + " | ".join(cells) + " |" if args.markdown else "  ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
