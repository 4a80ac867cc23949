"""Time feature maps of a QDQ-quantized VGG-like model: onnxviz's tensors vs the raw float Conv outputs.

Builds (in a temporary folder) a 7-conv VGG-like float model at 224×224 with random weights,
quantizes it with ``onnxruntime.quantization.quantize_static`` (QDQ, per channel, int8
activations and weights: the quantizer's defaults) and times, in this process, the median of
``--runs`` interleaved rounds after one warm-up each (which builds and caches the session):

* ``feature_maps`` of every layer, as onnxviz fetches them (the DequantizeLinear after each
  conv's QuantizeLinear, int8 activation pairs made uint8 by ``graph.uint8_activations``);
* the same without ``uint8_activations`` (what exposing the tensors alone does);
* ``raw_conv=True``: the float Conv outputs;
* the whole model's own output, nothing exposed (a plain onnxruntime session: the floor).

It also counts the ops onnxruntime runs for each (``QLinearConv`` = fused).

    python scripts/bench_quantized.py [--runs 15] [--threads N] [--markdown] [--profile]
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import tempfile
import time
import warnings

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

SIZE = 224
CONVS = [(3, 64), (64, 64), "pool", (64, 128), (128, 128), "pool", (128, 256), (256, 256), (256, 256), "pool"]


def float_model(path: str) -> None:
    r = np.random.default_rng(0)
    nodes, inits, cur = [], [], "input"
    for k, spec in enumerate(CONVS):
        if spec == "pool":
            nodes.append(helper.make_node("MaxPool", [cur], [f"pool{k}"], name=f"pool{k}",
                                          kernel_shape=[2, 2], strides=[2, 2]))
            cur = f"pool{k}"
            continue
        cin, cout = spec
        w = (r.standard_normal((cout, cin, 3, 3)) * np.sqrt(2 / (cin * 9))).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"conv{k}.weight"),
                  numpy_helper.from_array((r.standard_normal(cout) * 0.1).astype(np.float32), f"conv{k}.bias")]
        nodes += [helper.make_node("Conv", [cur, f"conv{k}.weight", f"conv{k}.bias"], [f"conv{k}"], name=f"conv{k}",
                                   pads=[1] * 4, kernel_shape=[3, 3]),
                  helper.make_node("Relu", [f"conv{k}"], [f"relu{k}"], name=f"relu{k}")]
        cur = f"relu{k}"
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, SIZE, SIZE])
    g = helper.make_graph(nodes, "vggish", [inp], [helper.make_tensor_value_info(cur, TensorProto.FLOAT, None)],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(m, {"onnxviz.preprocess": "unit"})
    onnx.save(m, path)


def quantize(src: str, dst: str) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            r = np.random.default_rng(1)
            self.it = iter([{"input": r.random((1, 3, SIZE, SIZE), dtype=np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.it, None)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=True)


def ops_run(sub: onnx.ModelProto, folder: str) -> dict:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    so.optimized_model_filepath = os.path.join(folder, "optimised.onnx")
    # onnxviz's graphs point at the model file for their weights (see onnxviz.runtime)
    so.add_session_config_entry("session.model_external_initializers_file_folder_path", folder)
    ort.InferenceSession(sub.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)


def kernel_ms(sub: onnx.ModelProto, folder: str, outputs: list, x: np.ndarray, runs: int, threads: int) -> dict:
    """``{op type: ms per run}``: onnxruntime's own per-kernel profile of ``runs`` runs."""
    import json

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(folder, "profile")
    so.add_session_config_entry("session.model_external_initializers_file_folder_path", folder)
    sess = ort.InferenceSession(sub.SerializeToString(), so, providers=["CPUExecutionProvider"])
    sess.run(outputs, {"input": x})
    for _ in range(runs):
        sess.run(outputs, {"input": x})
    with open(sess.end_profiling()) as f:
        events = json.load(f)
    total = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            total[e["args"]["op_name"]] += e["dur"]
    return {op: us / (runs + 1) / 1000 for op, us in total.most_common()}


def main(argv=None) -> int:
    import onnxviz
    from onnxviz import graph

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=15)
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.add_argument("--profile", action="store_true",
                   help="also print onnxruntime's per-op kernel times (all layers: onnxviz vs raw_conv)")
    args = p.parse_args(argv)
    if args.threads:
        import functools

        from onnxviz import runtime
        runtime.session = functools.partial(runtime.session, threads=args.threads)
    with tempfile.TemporaryDirectory() as folder:
        fpath, qpath = os.path.join(folder, "float.onnx"), os.path.join(folder, "qdq.onnx")
        float_model(fpath)
        quantize(fpath, qpath)
        img = (np.random.default_rng(2).random((SIZE, SIZE, 3)) * 255).astype(np.uint8)
        cases = []  # (label, callable, ops run)

        def case(label, raw_conv=False, rewrite=True, layers=None):
            m = onnxviz.load(qpath)
            real = graph.uint8_activations
            if not rewrite:
                graph.uint8_activations = lambda model: model
            try:
                fn = lambda: m.feature_maps(img, layers, raw_conv=raw_conv)  # noqa: E731
                fn()  # warm-up: builds the session, which the Model caches
                chosen = m.select(layers)
                tensors = tuple(dict.fromkeys(l.conv_output if raw_conv else l.tensor for l in chosen))
                ops = ops_run(graph.sub_model(m.proto, list(tensors)), folder)
            finally:
                graph.uint8_activations = real
            cases.append((label, fn, ops))

        case("all layers: onnxviz feature maps (DQ after each conv's Q)")
        case("all layers: same tensors, int8 Q/DQ pairs left int8", rewrite=False)
        case("all layers: raw_conv=True (float Conv outputs)", raw_conv=True)
        case("last conv: onnxviz feature map", layers=[-1])
        case("last conv: raw_conv=True", layers=[-1], raw_conv=True)
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        sess = ort.InferenceSession(qpath, so, providers=["CPUExecutionProvider"])
        x = (img.astype(np.float32) / 255).transpose(2, 0, 1)[None]
        plain = lambda: sess.run(None, {"input": x})  # noqa: E731
        plain()
        cases.append(("the model's own output, plain onnxruntime session", plain, ops_run(onnx.load(qpath), folder)))
        if args.profile:
            m = onnxviz.load(qpath)
            for label, tensors in (("onnxviz", [l.tensor for l in m.layers]),
                                   ("raw_conv", [l.conv_output for l in m.layers])):
                ms = kernel_ms(graph.sub_model(m.proto, tensors), folder, tensors, x, args.runs, args.threads)
                print(f"kernel ms per run, {label}: " + ", ".join(f"{op} {v:.1f}" for op, v in ms.items()))
        # Interleaved rounds: the machine's noise hits every case alike; ratios are per round.
        times = [[] for _ in cases]
        for _ in range(args.runs):
            for k, (_, fn, _) in enumerate(cases):
                t = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t)
    n_convs = sum(1 for c in CONVS if c != "pool")
    if args.markdown:
        print(f"| fetch ({n_convs} convs, 1×3×{SIZE}×{SIZE}, QDQ int8) | median s "
              "| median ratio to the first row | ops onnxruntime runs |")
        print("|---|---|---|---|")
    for (label, _, ops), ts in zip(cases, times):
        ratio = statistics.median(t / b for t, b in zip(ts, times[0]))
        fused = f"QLinearConv {ops.get('QLinearConv', 0)}, Conv {ops.get('Conv', 0)}"
        if args.markdown:
            print(f"| {label} | {statistics.median(ts):.3f} | {ratio:.2f} | {fused} |")
        else:
            print(f"{label:58s} {statistics.median(ts):7.3f} s  {ratio:5.2f}×  {fused}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
