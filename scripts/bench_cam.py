#!/usr/bin/env python3
"""Class activation map benchmarks (issue 11, and Grad-CAM of issue 12): onnxviz against the
real pytorch-grad-cam 1.5.7, side by side in one run.

Nets: torchvision's VGG16 and ResNet18 with random weights (``torch.manual_seed(0)``, ReLUs not
in place so that the hooks see each module's own output), exported to ONNX by TorchScript. One
224×224 image (matplotlib's ``grace_hopper.jpg``, torch preprocessing), the same input tensor on
both sides; the top-1 class; 2 threads on both sides (``torch.set_num_threads(2)``, onnxruntime's
intra-op pool). Layers: VGG16 ``block5_conv3`` (``features.29``, the ReLU after ``features.28``;
onnxviz ``layer="features.28"``), ResNet18 ``layer4[-1]``'s output (onnxviz's default layer).

Each case runs in a fresh child process holding both sides: one untimed warm-up per side
(pytorch-grad-cam: a forward pass; onnxviz: a call that builds its onnxruntime sessions, timed
and shown as *first call*), then ``--rounds`` rounds for ScoreCAM and AblationCAM (minutes a
call on pytorch-grad-cam's side), ``--calls`` for the others, the sides alternating (A B A B …).
The table gives medians and the ratio of medians (pytorch-grad-cam / onnxviz: how many times
faster onnxviz is), and how far the two heatmaps are apart (max |difference|, values in [0, 1]).
For ScoreCAM it gives how many channels of the layer are constant for this image (dead ReLUs),
whose masked input onnxviz scores once for all.

``--memory``: ScoreCAM on ResNet18 at batch 8 and 32, each side alone in a fresh process: the
peak RSS above the process before the call (sampled every 2 ms).

    flock /work/bench.lock python scripts/bench_cam.py                 # all cases, 2 rounds
    flock /work/bench.lock python scripts/bench_cam.py --only ablation,grad --nets vgg16

Needs torch, torchvision and grad-cam (the ``test`` extra). Models are cached in
``--workdir`` (default ``$TMPDIR/onnxviz-bench-cam``). The machine is shared: the load average
is recorded at the start and the end; ratios are steadier than times.
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
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
METHODS = ("eigen", "grad", "grad++", "xgrad", "layer", "hires", "ablation", "score")
NETS = ("vgg16", "resnet18")
LAYER = {"vgg16": "features.28", "resnet18": None}
#: what each case must reach (pytorch-grad-cam time / onnxviz time), from issue 11 and issue 12
TARGETS = {("vgg16", "ablation"): 30.0, ("vgg16", "score"): 1.5, ("resnet18", "score"): 1.5,
           ("vgg16", "eigen"): 1.0, ("resnet18", "eigen"): 1.0, ("vgg16", "grad"): 1.0}


def child(argv: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONWARNINGS="ignore")
    out = subprocess.run([sys.executable, __file__, "_child", *argv], capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f"child {argv} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _torch():
    import torch

    for op in ("nms", "qnms"):  # torchvision's CUDA build beside the CPU torch (tests/conftest.py)
        try:
            torch._C._get_schema(f"torchvision::{op}", "")
        except RuntimeError:
            torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision

    torch.set_num_threads(2)
    return torch, torchvision


def _net(name: str):
    torch, torchvision = _torch()
    torch.manual_seed(0)
    net = getattr(torchvision.models, name)(weights=None).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False
    return net


def _target_module(net, name: str):
    return net.features[29] if name == "vgg16" else net.layer4[-1]


def _make(work: str) -> None:
    import numpy as np
    from matplotlib import cbook
    from PIL import Image

    torch, _ = _torch()
    for name in NETS:
        path = os.path.join(work, f"{name}.onnx")
        if not os.path.exists(path):
            torch.onnx.export(_net(name), (torch.zeros(1, 3, 224, 224),), path, dynamo=False, opset_version=17,
                              input_names=["input"], dynamic_axes={"input": {0: "N"}})
    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
        rgb = np.asarray(im.convert("RGB").resize((224, 224), Image.BILINEAR), np.float32) / 255
    x = ((rgb - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).astype(np.float32).transpose(2, 0, 1)[None]
    np.save(os.path.join(work, "x.npy"), np.ascontiguousarray(x))


def _peak_during(fn):
    """``(result, peak RSS above the start in MB)``: /proc/self/statm sampled every 2 ms."""
    page = os.sysconf("SC_PAGE_SIZE")

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    start, peak, done = rss(), [0], threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.002)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        out = fn()
    finally:
        done.set()
        t.join()
    return out, (max(peak[0], rss()) - start) / 2**20


def _sides(work: str, net_name: str, method: str, batch: int = 32):
    """``(pytorch-grad-cam call, onnxviz call, warm-ups)``: each call returns the heatmap (1, H, W)."""
    import numpy as np

    import onnxviz
    torch, _ = _torch()
    import pytorch_grad_cam as gc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x = np.load(os.path.join(work, "x.npy"))
    net = _net(net_name)
    module = _target_module(net, net_name)
    with torch.no_grad():
        top = int(net(torch.from_numpy(x)).argmax())
    kind = {"eigen": gc.EigenCAM, "score": gc.ScoreCAM, "ablation": gc.AblationCAM, "grad": gc.GradCAM,
            "grad++": gc.GradCAMPlusPlus, "xgrad": gc.XGradCAM, "layer": gc.LayerCAM, "hires": gc.HiResCAM}[method]
    ref = kind(model=net, target_layers=[module])
    if method in ("score", "ablation"):
        ref.batch_size = batch
    xt = torch.from_numpy(x)
    m = onnxviz.load(os.path.join(work, f"{net_name}.onnx"))

    def theirs():
        return ref(input_tensor=xt, targets=[ClassifierOutputTarget(top)])

    def ours(**kw):
        return onnxviz.cam(m, x, method, LAYER[net_name], batch_size=batch, **kw).heatmap

    def warm_theirs():
        with torch.no_grad():
            net(xt)

    def warm_ours():
        return ours(**({"top_channels": 1} if method == "score" else {}))

    def constant():
        from onnxviz.explain.cam import default_layer
        from onnxviz.features import run_tensors

        tensor = m.layer(LAYER[net_name]).tensor if LAYER[net_name] else default_layer(m)
        acts = run_tensors(m, x, (tensor,))[0]
        a = acts.reshape(acts.shape[0], acts.shape[1], -1)
        return [int((a.max(2) == a.min(2)).sum()), int(a.shape[1])]
    return theirs, ours, warm_theirs, warm_ours, constant


def _case(work: str, net_name: str, method: str, rounds: int) -> dict:
    import numpy as np

    theirs, ours, warm_theirs, warm_ours, constant = _sides(work, net_name, method)
    warm_theirs()
    t0 = time.perf_counter()
    warm_ours()
    first = time.perf_counter() - t0
    times = {"theirs": [], "ours": []}
    for r in range(rounds):
        order = (("theirs", theirs), ("ours", ours)) if r % 2 == 0 else (("ours", ours), ("theirs", theirs))
        heats = {}
        for side, fn in order:
            t0 = time.perf_counter()
            heats[side] = fn()
            times[side].append(time.perf_counter() - t0)
    diff = float(np.abs(np.asarray(heats["ours"], np.float64) - heats["theirs"]).max())
    return {"times": times, "first": first, "diff": diff, "constant": constant()}


def _memory(work: str, net_name: str, side: str, batch: int) -> dict:
    theirs, ours, warm_theirs, warm_ours, _ = _sides(work, net_name, "score", batch)
    warm_theirs()
    warm_ours()
    _, peak = _peak_during(theirs if side == "theirs" else ours)
    return {"peak_mb": peak}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        kind, args = sys.argv[2], sys.argv[3:]
        result = {"make": lambda: _make(*args) or {}, "case": lambda: _case(args[0], args[1], args[2], int(args[3])),
                  "memory": lambda: _memory(args[0], args[1], args[2], int(args[3]))}[kind]()
        print(json.dumps(result))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2, help="calls per side of ScoreCAM and AblationCAM (default 2)")
    p.add_argument("--calls", type=int, default=9, help="calls per side of the other methods (default 9)")
    p.add_argument("--only", default=",".join(METHODS), help="methods, comma-separated")
    p.add_argument("--nets", default=",".join(NETS))
    p.add_argument("--memory", action="store_true", help="also ScoreCAM's peak memory at batch 8 and 32")
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "onnxviz-bench-cam"))
    a = p.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    child(["make", a.workdir])
    load0, started = os.getloadavg()[0], time.time()
    rows = []
    for net_name in a.nets.split(","):
        for method in a.only.split(","):
            r = child(["case", a.workdir, net_name, method, str(a.rounds if method in ("score", "ablation")
                                                                else a.calls)])
            theirs, ours = statistics.median(r["times"]["theirs"]), statistics.median(r["times"]["ours"])
            target = TARGETS.get((net_name, method))
            rows.append((net_name, method, theirs, ours, theirs / ours, target, r))
            print(f"{net_name:8s} {method:8s} pytorch-grad-cam {theirs:7.3f} s  onnxviz {ours:7.3f} s  "
                  f"{theirs / ours:6.2f}×  (first call {r['first']:.2f} s; heatmaps differ by ≤ {r['diff']:.1e}; "
                  f"{r['constant'][0]} of {r['constant'][1]} channels constant)", flush=True)
    mem = []
    if a.memory:
        for batch in (8, 32):
            for side in ("theirs", "ours"):
                mem.append((batch, side, child(["memory", a.workdir, "resnet18", side, str(batch)])["peak_mb"]))
    print(f"\nRun {time.strftime('%Y-%m-%d %H:%M')}, {a.rounds} rounds (ScoreCAM, AblationCAM), {a.calls} calls "
          f"(the others), {(time.time() - started) / 60:.1f} min; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; load average {load0:.2f} at "
          f"the start, {os.getloadavg()[0]:.2f} at the end.\n")
    print("| net | method | pytorch-grad-cam s | onnxviz s | onnxviz first call s | faster | target | met | "
          "each call (theirs / ours) | heatmap max diff | constant channels |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for net_name, method, theirs, ours, ratio, target, r in rows:
        rounds = ", ".join(f"{t:.2f}/{o:.2f}" for t, o in zip(r["times"]["theirs"], r["times"]["ours"]))
        met = "" if target is None else ("yes" if ratio >= target else "**no**")
        print(f"| {net_name} | {method} | {theirs:.3f} | {ours:.3f} | {r['first']:.2f} | {ratio:.2f}× | "
              f"{'' if target is None else f'≥ {target:g}×'} | {met} | {rounds} | {r['diff']:.1e} | "
              f"{r['constant'][0]} of {r['constant'][1]} |")
    if mem:
        print("\n| ScoreCAM, ResNet18 | batch | peak RSS above the process, MB |\n|---|---|---|")
        for batch, side, peak in mem:
            print(f"| {'pytorch-grad-cam' if side == 'theirs' else 'onnxviz'} | {batch} | {peak:.0f} |")


if __name__ == "__main__":
    main()
