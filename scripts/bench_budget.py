"""The memory budget's estimate against the real peak RSS of feature-map runs.

Each case is a fresh process (``Model.feature_maps`` with the budget out of the way), measured
with ``os.wait4`` from a small runner process (a child's ``ru_maxrss`` starts at its parent's
peak on Linux); the estimate is :func:`onnxviz.budget.estimate` for the same request.
"base" is the peak of the same process that stops just before the run: Python, numpy, onnx,
onnxruntime, Pillow, the model, its session (and so its weights), the decoded image. Models
(random weights, made in a temporary folder):

* ``vgg``: VGG16's block 1 and two smaller stages, dynamic batch and spatial dims: 3×3 convs
  3→64, 64→64, MaxPool 4, 64→32, MaxPool 4, 32→8, each with Relu (the layers 0–3);
* ``c1d``: a 1-D net, dynamic length: conv 1→64, conv 64→64 (kernel 3), each with Relu;
* ``mnv3_fp16``, ``resnet18_fused``, ``style7``: the three third-party-style models of
  ``scripts/make_guard_models.py`` (an fp16 MobileNetV3 by onnxconverter-common, a ResNet18
  saved by onnxruntime with FusedConv nodes, an opset-7 IR-3 style-transfer net at 720×720
  with a symbolic batch, whose weights are not listed among its inputs).

``--before DIR`` also prints the estimate of another onnxviz source tree (e.g. ``git archive
main onnxviz | tar -x -C DIR``), computed in a subprocess; "refused" marks a figure above the
default 2 GiB budget.

    python scripts/bench_budget.py [--runs 3] [--markdown] [--before DIR] [--only mnv3_fp16,style7]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

_RUNNER = r"""
import json, os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
print(json.dumps([os.waitstatus_to_exitcode(status), usage.ru_maxrss / 1024]))
"""

# argv: model source layers side batch mode ("run": the feature maps; "base": all but the run)
_CHILD = r"""
import sys, numpy as np, onnxviz
from onnxviz import features, preprocess
model, source, layers, side, batch, mode = sys.argv[1:7]
side, batch = int(side), int(batch)
m = onnxviz.load(model)
chosen = m.select(None if layers == "all" else [int(k) for k in layers.split(",")])
size = None if m.input.size_from == "model" else (side, side)
if mode == "base":
    features._session(m, tuple(dict.fromkeys(l.tensor for l in chosen)))
    if not source.endswith(".npy"):
        preprocess.load_image(source)
elif source.endswith(".npy"):
    fm = m.feature_maps(np.zeros((batch, 1, side), np.float32), chosen, max_bytes="1T")
else:
    fm = m.feature_maps([source] * batch, chosen, preprocess="unit", size=size, max_bytes="1T")
"""

# argv: model layers shape (comma-separated) images: prints the estimate's total (or null)
_ESTIMATE = r"""
import json, sys, onnxviz
from onnxviz import budget
model, layers, shape, images = sys.argv[1:5]
m = onnxviz.load(model)
chosen = m.select(None if layers == "all" else [int(k) for k in layers.split(",")])
print(json.dumps(budget.estimate(m, [l.tensor for l in chosen], tuple(int(d) for d in shape.split(",")),
                                 images=images == "1")["total"]))
"""

MiB = 2**20
REFUSED = 2 * 2**30  # the default budget
CASES = [  # model, layers, side (or length), batch
    ("vgg", "-1", 224, 1), ("vgg", "all", 224, 1),
    ("vgg", "-1", 1000, 1), ("vgg", "all", 1000, 1),
    ("vgg", "0", 2000, 1), ("vgg", "-1", 2000, 1), ("vgg", "all", 2000, 1),
    ("vgg", "-1", 224, 8), ("vgg", "all", 224, 8), ("vgg", "-1", 1000, 8), ("vgg", "all", 1000, 8),
    ("c1d", "-1", 1_000_000, 1), ("c1d", "all", 1_000_000, 1),
    # (the fixed-size models at batch 1 need under 30 MiB: the session's own allocations move that by
    # a few MiB, so they are measured at the batches that show the estimate, and refused before at 1)
    ("mnv3_fp16", "all", 224, 8), ("mnv3_fp16", "all", 224, 32), ("mnv3_fp16", "-1", 224, 32),
    ("resnet18_fused", "all", 224, 1), ("resnet18_fused", "all", 224, 8), ("resnet18_fused", "all", 224, 32),
    ("resnet18_fused", "-1", 224, 32),
    ("style7", "all", 720, 1), ("style7", "-1", 720, 1), ("style7", "all", 720, 2),
]


def make_models(folder: str) -> dict:
    from onnx import TensorProto, helper, numpy_helper, save
    from PIL import Image

    import make_guard_models

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
    paths["mnv3_fp16"] = make_guard_models.mobilenet_fp16(os.path.join(folder, "mnv3_fp16.onnx"))
    paths["resnet18_fused"] = make_guard_models.resnet18_fused(os.path.join(folder, "resnet18_fused.onnx"))
    paths["style7"] = make_guard_models.style_opset7(os.path.join(folder, "style7.onnx"))
    paths["image"] = os.path.join(folder, "photo.png")
    Image.fromarray((r.random((480, 640, 3)) * 255).astype(np.uint8)).save(paths["image"])
    paths["array"] = os.path.join(folder, "x.npy")  # a name only: the child makes the array
    return paths


def peak(argv: list[str], env=None) -> float:
    res = subprocess.run([sys.executable, "-c", _RUNNER, *argv], capture_output=True, text=True, check=True,
                         env=env)
    code, mib = json.loads(res.stdout)
    if code:
        raise SystemExit(f"error: {' '.join(argv)} exited with {code}")
    return mib


def before_estimate(tree: str, path: str, layers: str, shape: tuple, images: bool):
    env = {**os.environ, "PYTHONPATH": tree, "PYTHONDONTWRITEBYTECODE": "1"}
    res = subprocess.run([sys.executable, "-c", _ESTIMATE, path, layers, ",".join(map(str, shape)),
                          "1" if images else "0"], capture_output=True, text=True, env=env, cwd=tree)
    if res.returncode:
        return f"fails: {res.stderr.strip().splitlines()[-1][:80]}"
    return json.loads(res.stdout)


def _span(xs, fmt):
    lo, hi = fmt.format(xs[0]), fmt.format(xs[-1])
    return lo if lo == hi else f"{lo}–{hi}"


def _mib(value):
    if value is None:
        return "cannot be sized"
    if isinstance(value, str):
        return value
    return f"{value / MiB:,.0f}" + (" (refused)" if value > REFUSED else "")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--before", metavar="DIR", help="an onnxviz source tree whose estimate to print beside")
    p.add_argument("--only", help="comma-separated model kinds to run (default: all)")
    args = p.parse_args(argv)
    import onnxviz
    from onnxviz import budget

    only = set(args.only.split(",")) if args.only else None
    cases = [c for c in CASES if only is None or c[0] in only]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        paths = make_models(folder)
        for kind, layers, side, batch in cases:
            src = paths["array"] if kind == "c1d" else paths["image"]

            def run(mode):
                return sorted(peak([sys.executable, "-c", _CHILD, paths[kind], src, layers, str(side), str(batch),
                                    mode]) for _ in range(args.runs))

            m = onnxviz.load(paths[kind])
            chosen = m.select(None if layers == "all" else [int(k) for k in layers.split(",")])
            shape = (batch, 1, side) if kind == "c1d" else (batch, 3, side, side)
            est = budget.estimate(m, [layer.tensor for layer in chosen], shape, images=kind != "c1d")["total"]
            before = before_estimate(args.before, paths[kind], layers, shape, kind != "c1d") if args.before else None
            base, peaks = min(run("base")), run("run")
            need = [q - base for q in peaks]
            ratios = [n / (est / MiB) for n in need] if est else []
            rows.append((f"{kind} {'×'.join(map(str, shape))}", layers, before, est, base, need, ratios))
        stages = {}
        for kind in dict.fromkeys(c[0] for c in cases):  # every node output at batch 1, by stage
            m = onnxviz.load(paths[kind])
            side = m.input.size[0] if m.input.size_from == "model" else 224
            dims = (1, 1, 1000) if kind == "c1d" else (1, 3, side, side)
            shapes = m.shapes({m.input.name: dims})
            left = shapes.size([o for n in m.proto.graph.node for o in n.output if o])
            stages[kind] = (dims, shapes.counts(), len(left))
    head = ["model, input", "layers"] + (["before MiB"] if args.before else []) + \
        ["estimate MiB", "base MiB", "peak − base MiB", "(peak − base) / estimate"]
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
    else:
        print("  ".join(head))
    for name, layers, before, est, base, need, ratios in rows:
        cells = [name, layers] + ([_mib(before)] if args.before else []) + \
            [_mib(est), f"{base:.0f}", _span(need, "{:.0f}"), _span(sorted(ratios), "{:.2f}") if ratios else "-"]
        print("| " + " | ".join(cells) + " |" if args.markdown else "  ".join(cells))
    print()
    print("tensors sized by each shape-inference stage (every node output, at batch 1):")
    for kind, (dims, counts, left) in stages.items():
        print(f"  {kind} {'×'.join(map(str, dims))}: " + ", ".join(f"{k} {v}" for k, v in counts.items())
              + f", unsized {left}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
