#!/usr/bin/env python3
"""Fold a computed conv weight: onnxviz's ``filters()`` against plain onnxruntime.

Two weights, each made by a ``ConstantOfShape`` node as the Caffe2 exports of the ONNX Model
Zoo make them:

* the largest conv weight of the onnx wheel's light models: VGG19's ``conv5_1_w_0``
  (512×512×3×3 float32, 9.4 MB);
* a synthetic one 44× larger: a 4096×512×7×7 float32 weight (411 MB, VGG's ``fc6`` as a
  7×7 conv, as FCN writes it), in a one-conv model built in a temporary folder.

Sides, each in a fresh process, run alternately for ``--rounds`` rounds (medians printed):

* ``onnxviz``: ``onnxviz.load(path).filters(layer)`` (the fold: reference evaluator on the
  extracted constant sub-graph);
* ``ort sub-graph``: onnxruntime on ``onnx.utils.Extractor``'s sub-model that outputs the
  weight (session + run);
* ``ort whole model``: onnxruntime on the whole model with the weight added as an output,
  run on a zero input (what one would write without onnxviz).

Time is the work alone (after imports; onnxviz's includes ``load``); memory is the peak RSS
of the child minus its RSS just before the work.

    python scripts/bench_fold.py [--rounds 5] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SIDES = ("onnxviz", "ort sub-graph", "ort whole model")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _child(side: str, path: str, weight: str) -> dict:
    import numpy as np
    import onnx
    import onnx.utils
    import onnxruntime as ort

    import onnxviz

    before = _rss()
    t = time.perf_counter()
    if side == "onnxviz":
        m = onnxviz.load(path)
        w = m.filters(next(l for l in m.layers if l.weight == weight))
    else:
        full = onnx.load(path)
        if side == "ort sub-graph":
            inferred = onnx.shape_inference.infer_shapes(full)
            model, feeds = onnx.utils.Extractor(inferred).extract_model([], [weight]), {}
        else:
            full.graph.output.append(onnx.ValueInfoProto(name=weight))
            inits = {i.name for i in full.graph.initializer}
            x = next(i for i in full.graph.input if i.name not in inits)
            shape = [d.dim_value or 1 for d in x.type.tensor_type.shape.dim]
            model, feeds = full, {x.name: np.zeros(shape, np.float32)}
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        w = sess.run([weight], feeds)[0]
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": seconds, "mib": (peak - before) / 2**20, "shape": list(w.shape), "sum": float(w.sum())}


def _synthetic(folder: str) -> str:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    fill = helper.make_node("ConstantOfShape", ["fc6_w_0__SHAPE"], ["fc6_w_0"],
                            value=numpy_helper.from_array(np.array([0.02], np.float32)))
    conv = helper.make_node("Conv", ["data_0", "fc6_w_0"], ["r0"], name="n0", kernel_shape=[7, 7])
    g = helper.make_graph([fill, conv], "fcn_fc6", [helper.make_tensor_value_info("data_0", TensorProto.FLOAT,
                                                                                   [1, 512, 7, 7])],
                          [helper.make_tensor_value_info("r0", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(np.array([4096, 512, 7, 7], np.int64),
                                                               "fc6_w_0__SHAPE")])
    path = os.path.join(folder, "fc6_as_conv.onnx")
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    import onnx

    light = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", "light_vgg19.onnx")
    with tempfile.TemporaryDirectory() as folder:
        cases = [("light VGG19 conv5_1 (512×512×3×3, 9.4 MB)", light, "conv5_1_w_0"),
                 ("synthetic fc6 as conv (4096×512×7×7, 411 MB)", _synthetic(folder), "fc6_w_0")]
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        rows = []
        for title, path, weight in cases:
            got = {s: [] for s in SIDES}
            for _ in range(args.rounds):
                for side in SIDES:
                    out = subprocess.run([sys.executable, __file__, "_child", side, path, weight], env=env,
                                         capture_output=True, text=True, check=True).stdout
                    got[side].append(json.loads(out.splitlines()[-1]))
            sums = {s: got[s][0]["sum"] for s in SIDES}
            assert len(set(sums.values())) == 1, sums  # the same weight on every side
            base = statistics.median(r["seconds"] for r in got["onnxviz"])
            for side in SIDES:
                sec = statistics.median(r["seconds"] for r in got[side])
                mib = statistics.median(r["mib"] for r in got[side])
                rows.append((title, side, sec, sec / base, mib))
    if args.markdown:
        print("| weight | side | median s | ratio to onnxviz | peak RSS over the start, MiB |")
        print("|---|---|---|---|---|")
        for title, side, sec, ratio, mib in rows:
            print(f"| {title} | {side} | {sec:.3f} | {ratio:.2f} | {mib:.0f} |")
    else:
        for title, side, sec, ratio, mib in rows:
            print(f"{title:48} {side:16} {sec:8.3f} s  {ratio:5.2f}×  {mib:7.0f} MiB")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        print(json.dumps(_child(*sys.argv[2:5])))
    else:
        main()
