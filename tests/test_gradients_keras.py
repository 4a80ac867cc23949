"""Gradients on a Keras model exported by scripts/keras_export.py, against TensorFlow.

The demo architecture (scripts/train_demo_model.py) with random weights: the input gradient
of the class logits equals tf.GradientTape's (≤ 1e-4 relative), and patterns() with a fixed
seed reproduces, step by step, the Keras example's loop written in TF on the same weights
(one filter at a time, tf.math.l2_normalize, lr 10, 30 steps) from the same start: the images
after the first step ≤ 1e-5 relative, the objective at every one of the 30 steps ≤ 5e-3.
(From the second or third step on, float32 rounding flips a ReLU or a MaxPool argmax now and
then — the two runtimes round differently — and the images drift apart slowly where it does:
the final ones still correlate ≥ 0.95: 0.975 at worst here.)
"""

import os
import sys

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="the export extra (tensorflow-cpu, tf2onnx) is not installed")
pytest.importorskip("tf2onnx", reason="the export extra (tensorflow-cpu, tf2onnx) is not installed")

import keras  # noqa: E402

import onnxviz  # noqa: E402
from conftest import assert_close  # noqa: E402
from onnxviz.explain.gradients import Score, gradients  # noqa: E402
from onnxviz.explain.patterns import initial  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))

import train_demo_model  # noqa: E402
from keras_export import export_keras_model  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(5)
    kmodel = train_demo_model.build_model()
    path = tmp_path_factory.mktemp("keras") / "demo_random.onnx"
    export_keras_model(kmodel, path, preprocess="unit", channel_order="RGB", source="test", weights_desc="random")
    return kmodel, onnxviz.load(path)


def test_input_gradient_equals_gradient_tape(exported):
    kmodel, m = exported
    x = np.random.default_rng(2).random((3, 64, 64, 3)).astype(np.float32)
    target = np.array([1, 4, 8])
    values, grads = gradients(m, x, Score(target))
    dense = kmodel.get_layer("predictions")
    features = keras.Model(kmodel.inputs[0], kmodel.get_layer("gap").output)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        logits = tf.matmul(features(xt, training=False), dense.kernel) + dense.bias  # before the softmax
        score = tf.gather(logits, target, batch_dims=1)
        total = tf.reduce_sum(score)
    want = tape.gradient(total, xt).numpy()
    assert_close(values, score.numpy(), 1e-5)
    assert grads[m.input.name].shape == (3, 64, 64, 3)  # NHWC: the input's own layout
    assert_close(grads[m.input.name], want, 1e-4)


def test_patterns_reproduce_the_keras_loop(exported):
    kmodel, m = exported
    channels, steps = [0, 5, 11], 30
    p = onnxviz.patterns(m, "block3_conv2", channels, steps=steps, seed=7)
    fx = keras.Model(kmodel.inputs[0], kmodel.get_layer("block3_conv2").output)

    @tf.function
    def step(img, k):  # the Keras example's gradient_ascent_step
        with tf.GradientTape() as tape:
            tape.watch(img)
            loss = tf.reduce_mean(fx(img)[:, 2:-2, 2:-2, k])
        grads = tf.math.l2_normalize(tape.gradient(loss, img))
        return loss, img + 10.0 * grads

    early = onnxviz.patterns(m, "block3_conv2", channels, steps=1, seed=7)
    start = initial(m, len(channels), (64, 64), seed=7)
    for i, k in enumerate(channels):  # one filter at a time, as the example
        img, losses, images = tf.constant(start[i:i + 1]), [], []
        for _ in range(steps):
            loss, img = step(img, k)
            losses.append(float(loss))
            images.append(img.numpy()[0])
        assert_close(early.inputs[i], images[0], 1e-5)
        assert_close(p.history[:, i], np.array(losses), 5e-3)
        assert np.corrcoef(p.inputs[i].ravel(), images[-1].ravel())[0, 1] >= 0.95
        final = float(tf.reduce_mean(fx(img)[:, 2:-2, 2:-2, k]))
        assert p.activation[i] == pytest.approx(final, rel=5e-3)
