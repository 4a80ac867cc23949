"""Gradients on a Keras model exported by scripts/keras_export.py, against TensorFlow.

The demo architecture (scripts/train_demo_model.py) with random weights: the input gradient
of the class logits equals tf.GradientTape's (≤ 1e-4 relative), and patterns() with a fixed
seed reproduces, step by step, the Keras example's loop written in TF on the same weights
(one filter at a time, tf.math.l2_normalize, lr 10, 30 steps). Step by step: each of the 30
steps, taken from the image TF's loop had before it, gives TF's objective (≤ 1e-4 relative)
and TF's step, the update lr · g / ‖g‖ (≤ 2.3e-6 relative, but where float32 rounding settles
a near-tie of a ReLU or a MaxPool the other way: 1 step of 90, 5.9e-2). Left to run freely
from the same start, the objective at every one of the 30 steps is within 5e-3 of TF's; the
images drift apart slowly where such a near-tie falls, and the final ones still correlate
≥ 0.95 (0.975 at worst here).
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

import demo_shapes  # noqa: E402
import train_demo_model  # noqa: E402
from keras_export import ExportError, export_keras_model  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(5)
    kmodel = train_demo_model.build_model()
    path = tmp_path_factory.mktemp("keras") / "demo_random.onnx"
    export_keras_model(kmodel, path, preprocess="unit", channel_order="RGB", source="test", weights_desc="random",
                       labels=demo_shapes.CLASSES)
    return kmodel, onnxviz.load(path)


def test_exporter_writes_the_class_names(exported, tmp_path):
    from onnxviz.classes import read_labels

    kmodel, m = exported
    assert read_labels(m) == list(demo_shapes.CLASSES)  # onnxviz.labels: cam, report and the CLI name classes
    c = onnxviz.cam(m, np.random.default_rng(0).random((1, 64, 64, 3), np.float32), method="grad", target=[6])
    assert c.names == ("red_shape",)
    with pytest.raises(ExportError) as e:
        export_keras_model(kmodel, tmp_path / "x.onnx", preprocess="unit", channel_order="RGB", source="test",
                           weights_desc="random", labels=["a", "b"])
    assert str(e.value) == "2 labels for a model of 9 classes; give one name per class"
    assert not (tmp_path / "x.onnx").exists()


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

    start = initial(m, len(channels), (64, 64), seed=7)
    tf_images, tf_losses = [], []
    for i, k in enumerate(channels):  # one filter at a time, as the example
        img, losses, images = tf.constant(start[i:i + 1]), [], []
        for _ in range(steps):
            loss, img = step(img, k)
            losses.append(float(loss))
            images.append(img.numpy()[0])
        tf_images.append(images)
        tf_losses.append(losses)
        assert_close(p.history[:, i], np.array(losses), 5e-3)
        assert np.corrcoef(p.inputs[i].ravel(), images[-1].ravel())[0, 1] >= 0.95
        final = float(tf.reduce_mean(fx(img)[:, 2:-2, 2:-2, k]))
        assert p.activation[i] == pytest.approx(final, rel=5e-3)
    tf_images, tf_losses = np.array(tf_images), np.array(tf_losses)  # (channel, step, H, W, C), (channel, step)
    # step by step: each step of onnxviz's loop, from the image TF's loop had before it, gives TF's step
    before, off = start, []
    for s in range(steps):
        one = onnxviz.patterns(m, "block3_conv2", channels, steps=1, start=before)
        assert_close(one.history[0], tf_losses[:, s], 1e-4)
        for i in range(len(channels)):  # the step itself, lr · g / ‖g‖: the gradient's direction
            taken, want = one.inputs[i] - before[i], tf_images[i, s] - before[i]
            off.append(np.abs(taken - want).max() / np.abs(want).max())
        before = tf_images[:, s]
    # ≤ 2.3e-6 relative, but for a rare near-tie that float32 rounding settles differently (a
    # ReLU input or two MaxPool inputs within an ulp: here 1 of 90 steps, 5.9e-2)
    assert np.median(off) <= 1e-5 and sum(v > 1e-4 for v in off) <= 2 and max(off) < 0.2, off
