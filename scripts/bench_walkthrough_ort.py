#!/usr/bin/env python3
"""The walk-through done naively with onnxruntime (benchmark reference, ~30 lines of work).

The same job as ``bench_walkthrough_keras.py`` on the exported ONNX VGG16: ``onnx.load`` the
whole file, add the Relu output of the 5 layers as graph outputs, one ``InferenceSession``,
caffe preprocessing with Pillow + numpy, then an 8×8 grid of matplotlib axes per layer, one
``imshow`` per map, ``savefig``. No onnxviz. Used by ``scripts/benchmark.py``, comparison (a).

    python scripts/bench_walkthrough_ort.py MODEL.onnx PHOTO -o OUTDIR [--layers a,b,...] [--square 8]
"""

import argparse
import os

os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from matplotlib import pyplot  # noqa: E402
from PIL import Image  # noqa: E402

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("model")
p.add_argument("image")
p.add_argument("-o", "--outdir", required=True)
p.add_argument("--layers", default="block1_conv2,block2_conv2,block3_conv3,block4_conv3,block5_conv3")
p.add_argument("--square", type=int, default=8, help="a square×square grid of maps per layer (default 8)")
args = p.parse_args()
layers = args.layers.split(",")

model = onnx.load(args.model)
# tf2onnx names a Keras layer's nodes '<layer>_1/...': the feature map is that layer's Relu output
names = [next(n.output[0] for n in model.graph.node if n.op_type == "Relu" and f"{layer}_1/" in n.name)
         for layer in layers]
model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
h, w = sess.get_inputs()[0].shape[1:3]  # NHWC, as tf2onnx exports Keras: 224, 224
img = np.asarray(Image.open(args.image).convert("RGB").resize((w, h), Image.NEAREST), np.float32)
x = (img[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32))[None]  # caffe: BGR, minus mean
feature_maps = sess.run(names, {sess.get_inputs()[0].name: x})
for layer, fmap in zip(layers, feature_maps):  # (1, C, H, W)
    for ix in range(args.square ** 2):
        ax = pyplot.subplot(args.square, args.square, ix + 1)
        ax.set_xticks([])
        ax.set_yticks([])
        pyplot.imshow(fmap[0, ix], cmap="gray")
    pyplot.savefig(os.path.join(args.outdir, f"ort_{layer}.png"))
    pyplot.close()
