"""Write a VGG16-shaped ONNX model with random weights, laid out as tf2onnx exports Keras.

No TensorFlow needed: the graph is built with onnx.helper, the way tf2onnx 1.17 writes Keras 3
VGG16 (NHWC input, ``Transpose(0,3,1,2)``, node names ``vgg16_1/block1_conv1_1/convolution``,
caffe preprocessing in the metadata). 138 M parameters (528 MB) with ``--include-top``.
Used for timing and memory figures and as a stand-in until you export the real VGG16 with
``scripts/export_vgg16.py``.

    python scripts/make_random_vgg16.py -o models/vgg16_random.onnx [--no-top] [--external]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

BLOCKS = [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]


def build(include_top: bool = True, seed: int = 0, size: int = 224) -> onnx.ModelProto:
    r = np.random.default_rng(seed)
    nodes, inits = [], []
    x = "input_layer"
    nodes.append(helper.make_node("Transpose", [x], ["vgg16_1/transpose:0"], name="vgg16_1/transpose",
                                  perm=[0, 3, 1, 2]))
    cur, cin = "vgg16_1/transpose:0", 3
    for b, (cout, n) in enumerate(BLOCKS, 1):
        for c in range(1, n + 1):
            scope = f"vgg16_1/block{b}_conv{c}_1"
            # He-normal weights keep activations in range through 13 layers.
            w = (r.standard_normal((cout, cin, 3, 3), dtype=np.float32) * np.sqrt(2 / (9 * cin))).astype(np.float32)
            bias = np.zeros(cout, np.float32)
            inits += [numpy_helper.from_array(w, f"{scope}/convolution/ReadVariableOp:0"),
                      numpy_helper.from_array(bias, f"{scope}/Reshape:0")]
            nodes.append(helper.make_node("Conv", [cur, inits[-2].name, inits[-1].name], [f"{scope}/add:0"],
                                          name=f"{scope}/convolution", kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                          strides=[1, 1], dilations=[1, 1], group=1))
            nodes.append(helper.make_node("Relu", [f"{scope}/add:0"], [f"{scope}/Relu:0"], name=f"{scope}/Relu"))
            cur, cin = f"{scope}/Relu:0", cout
        pool = f"vgg16_1/block{b}_pool_1/MaxPool2d"
        nodes.append(helper.make_node("MaxPool", [cur], [pool + ":0"], name=pool, kernel_shape=[2, 2], strides=[2, 2]))
        cur = pool + ":0"
    if include_top:
        nodes.append(helper.make_node("Transpose", [cur], ["vgg16_1/flatten_1/t:0"], name="vgg16_1/flatten_1/t", perm=[0, 2, 3, 1]))
        nodes.append(helper.make_node("Flatten", ["vgg16_1/flatten_1/t:0"], ["vgg16_1/flatten_1/Reshape:0"], name="vgg16_1/flatten_1/Reshape"))
        cur, fin = "vgg16_1/flatten_1/Reshape:0", 7 * 7 * 512
        for name, fout, act in (("fc1", 4096, "Relu"), ("fc2", 4096, "Relu"), ("predictions", 1000, "Softmax")):
            w = (r.standard_normal((fin, fout), dtype=np.float32) * np.sqrt(2 / fin)).astype(np.float32)
            inits += [numpy_helper.from_array(w, f"vgg16_1/{name}_1/Cast/ReadVariableOp:0"),
                      numpy_helper.from_array(np.zeros(fout, np.float32), f"vgg16_1/{name}_1/Add/ReadVariableOp:0")]
            nodes.append(helper.make_node("Gemm", [cur, inits[-2].name, inits[-1].name], [f"vgg16_1/{name}_1/Add:0"],
                                          name=f"vgg16_1/{name}_1/Add"))
            nodes.append(helper.make_node(act, [f"vgg16_1/{name}_1/Add:0"], [f"vgg16_1/{name}_1/{act}:0"],
                                          name=f"vgg16_1/{name}_1/{act}"))
            cur, fin = f"vgg16_1/{name}_1/{act}:0", fout
    graph = helper.make_graph(
        nodes, "vgg16", [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["unk__0", size, size, 3])],
        [helper.make_tensor_value_info(cur, TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)], producer_name="onnxviz-random-vgg16")
    helper.set_model_props(model, {
        "onnxviz.preprocess": "caffe", "onnxviz.channel_order": "BGR",
        "onnxviz.input_size": f"{size},{size}", "onnxviz.weights": "random",
        "onnxviz.source": "scripts/make_random_vgg16.py (VGG16 layout as tf2onnx exports Keras 3)"})
    return model


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", default="models/vgg16_random.onnx")
    p.add_argument("--no-top", dest="top", action="store_false", help="convolutional base only")
    p.add_argument("--external", action="store_true", help="weights in <output>.data beside it")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    folder = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(folder):
        print(f"error: output folder '{folder}' does not exist", file=sys.stderr)
        return 1
    model = build(args.top, args.seed)
    kw = dict(save_as_external_data=True, location=os.path.basename(args.output) + ".data",
              size_threshold=1024) if args.external else {}
    onnx.save(model, args.output, **kw)
    print(f"wrote {args.output} ({sum(int(np.prod(t.dims)) for t in model.graph.initializer):,} parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
