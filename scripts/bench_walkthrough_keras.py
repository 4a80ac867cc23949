#!/usr/bin/env python3
"""The classic Keras "visualize VGG16 feature maps" walk-through, as a script (benchmark reference).

Written the way the well-known tutorial does it: Keras VGG16, a multi-output ``Model`` over the
last conv of each of the 5 blocks, ``predict`` on one photo, then for each layer an 8×8
``pyplot.subplot`` grid with one ``imshow`` per map (64 maps), saved as PNG instead of
``pyplot.show()``. The only departures: the weights come from a local file (no internet:
``VGG16(weights=None)`` + ``load_weights``, which is what ``VGG16()`` does with its cached
download), and the figures are written to ``OUTDIR/keras_<layer>.png``.

    python scripts/bench_walkthrough_keras.py --weights vgg16.weights.h5 --image photo.jpg -o OUTDIR

Needs the ``export`` extra (TensorFlow). Used by ``scripts/benchmark.py``, comparison (a).
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

from keras.applications.vgg16 import VGG16, preprocess_input  # noqa: E402
from keras.models import Model  # noqa: E402
from keras.utils import img_to_array, load_img  # noqa: E402
from matplotlib import pyplot  # noqa: E402
from numpy import expand_dims  # noqa: E402

LAYERS = ["block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3"]

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--weights", required=True, help="Keras VGG16 weights (.weights.h5 or legacy .h5)")
p.add_argument("--image", required=True)
p.add_argument("-o", "--outdir", required=True)
args = p.parse_args()

# load the model
model = VGG16(weights=None)
model.load_weights(args.weights)
# redefine the model to output right after the last conv of each block
outputs = [model.get_layer(name).output for name in LAYERS]
model = Model(inputs=model.inputs, outputs=outputs)
# load the image with the required shape, convert it to an array, add a batch axis, preprocess
img = load_img(args.image, target_size=(224, 224))
img = img_to_array(img)
img = expand_dims(img, axis=0)
img = preprocess_input(img)
# get the feature maps for all five layers
feature_maps = model.predict(img, verbose=0)
# plot the first 64 maps of each layer in an 8x8 grid
square = 8
for name, fmap in zip(LAYERS, feature_maps):
    ix = 1
    for _ in range(square):
        for _ in range(square):
            # specify subplot and turn off the axis ticks
            ax = pyplot.subplot(square, square, ix)
            ax.set_xticks([])
            ax.set_yticks([])
            # plot the map in greyscale
            pyplot.imshow(fmap[0, :, :, ix - 1], cmap="gray")
            ix += 1
    pyplot.savefig(os.path.join(args.outdir, f"keras_{name}.png"))  # the tutorial: pyplot.show()
    pyplot.close()
