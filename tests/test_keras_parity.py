"""Parity with Keras: onnxviz on models exported by scripts/keras_export.py vs Keras itself.

Needs the ``export`` extra (tensorflow-cpu, tf2onnx), which CI installs. For each model:
every conv layer's feature maps from onnxviz equal Keras's ``Model(inputs, layer.output)`` on
the same preprocessed image to <= 1e-4 relative, every filter equals the Keras kernel
transposed HWIO -> OIHW, and the friendly names are the Keras layer names.
"""

import os
import sys

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the export extra (tensorflow-cpu, tf2onnx) is not installed")
pytest.importorskip("tf2onnx", reason="the export extra (tensorflow-cpu, tf2onnx) is not installed")

import keras  # noqa: E402
import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402

import onnxviz  # noqa: E402
from conftest import assert_close  # noqa: E402
from onnxviz import preprocess  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))

import demo_shapes  # noqa: E402
import export_vgg16  # noqa: E402
import train_demo_model  # noqa: E402
from keras_export import export_keras_model  # noqa: E402

PHOTO = __import__("matplotlib.cbook").cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)


def _conv_layers(model):
    return [l for l in model.layers if isinstance(l, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))]


def _keras_kernel_oihw(layer) -> np.ndarray:
    k = layer.get_weights()[0]
    if isinstance(layer, keras.layers.DepthwiseConv2D):  # (kH, kW, C, 1) → (C, 1, kH, kW)
        return k.transpose(2, 3, 0, 1)
    return k.transpose(3, 2, 0, 1)  # HWIO → OIHW


def _chain_end(kmodel, layer):
    """The Keras layer whose output is onnxviz's feature map: after BatchNorm and one activation."""
    consumers = {}
    for other in kmodel.layers:
        ins = other.input if isinstance(other.input, (list, tuple)) else [other.input]
        for t in ins:
            consumers.setdefault(id(t), []).append(other)
    cur = layer
    while True:
        users = consumers.get(id(cur.output), [])
        if len(users) != 1:
            return cur
        nxt = users[0]
        if isinstance(nxt, keras.layers.BatchNormalization):
            cur = nxt
        elif isinstance(nxt, (keras.layers.ReLU, keras.layers.Activation)):
            return nxt
        else:
            return cur


def check_parity(kmodel, onnx_path, image, preset):
    """Compare every conv layer; return the largest relative difference seen."""
    m = onnxviz.load(onnx_path)
    convs = _conv_layers(kmodel)
    assert [l.name for l in m.layers] == [l.name for l in convs]
    assert m.metadata["onnxviz.preprocess"] == preset
    for layer in convs:
        np.testing.assert_array_equal(m.filters(layer.name), _keras_kernel_oihw(layer))
    x = preprocess.to_tensor(image, size=tuple(m.input.size), layout="NHWC", preset=preset)
    # Keras's own layer.output; where BN/activation are separate Keras layers, that is the raw
    # conv, and onnxviz's feature map is compared with the end of the chain instead.
    linear = [l for l in convs if l.activation is keras.activations.linear]
    ends = [_chain_end(kmodel, l) for l in convs]
    probe = keras.Model(kmodel.inputs[0], [l.output for l in ends] + [l.output for l in linear])
    outs = [np.asarray(t).transpose(0, 3, 1, 2) for t in probe(x, training=False)]
    want, want_raw = outs[:len(ends)], outs[len(ends):]
    got = m.feature_maps(image)  # onnxviz preprocesses by itself, from the metadata
    got_raw = m.feature_maps(image, [l.name for l in linear], raw_conv=True) if linear else {}
    worst = 0.0
    for name, mine, ref in [(l.name, got[l.name], r) for l, r in zip(convs, want)] + \
                           [(l.name, got_raw[l.name], r) for l, r in zip(linear, want_raw)]:
        assert_close(mine, ref, 1e-4)
        worst = max(worst, float(np.abs(mine - ref).max() / np.abs(ref).max()))
    return worst


def test_demo_architecture(tmp_path):
    keras.utils.set_random_seed(1)
    kmodel = train_demo_model.build_model()
    path = tmp_path / "demo.onnx"
    export_keras_model(kmodel, path, preprocess="unit", channel_order="RGB", source="test", weights_desc="random")
    check_parity(kmodel, path, demo_shapes.make_demo_sample(), "unit")


def test_committed_demo_model_is_its_keras_architecture():
    """models/demo.onnx, with its weights put back into the training script's Keras model."""
    path = os.path.join(REPO, "models", "demo.onnx")
    m = onnxviz.load(path)
    full = onnx.load(path)
    inits = {t.name: numpy_helper.to_array(t) for t in full.graph.initializer}
    kmodel = train_demo_model.build_model()
    for layer in m.layers:
        node = full.graph.node[layer.node_index]
        bias = inits[node.input[2]]
        kmodel.get_layer(layer.name).set_weights([m.filters(layer).transpose(2, 3, 1, 0), bias])
    check_parity(kmodel, path, PHOTO, "unit")
    check_parity(kmodel, path, os.path.join(REPO, "models", "demo_sample.png"), "unit")


def test_vgg16_random_weights(tmp_path):
    keras.utils.set_random_seed(2)
    kmodel = keras.applications.VGG16(weights=None)
    path = tmp_path / "vgg16.onnx"
    info = export_keras_model(kmodel, path, preprocess="caffe", channel_order="BGR",
                              source="keras.applications.VGG16", weights_desc="random")
    assert info["max_rel_diff"] <= 1e-4
    m = onnxviz.load(path)
    assert [l.output_shape for l in m.layers][::3] == [(64, 224, 224), (128, 112, 112), (256, 56, 56),
                                                      (512, 28, 28), (512, 14, 14)]
    assert m.metadata["onnxviz.channel_order"] == "BGR"
    check_parity(kmodel, path, PHOTO, "caffe")


def test_export_script_with_a_local_h5_file(tmp_path, capsys):
    """--weights PATH.h5 on another family (MobileNetV2: depthwise convs, tf preprocessing)."""
    keras.utils.set_random_seed(3)
    kmodel = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(96, 96, 3))
    weights = tmp_path / "mnv2.weights.h5"
    kmodel.save_weights(weights)
    out = tmp_path / "mnv2.onnx"
    code = export_vgg16.main(["--model", "MobileNetV2", "--no-top", "--input-size", "96,96",
                              "--weights", str(weights), "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    assert "self-check" in capsys.readouterr().out
    m = onnxviz.load(out)
    assert m.metadata["onnxviz.weights"] == "mnv2.weights.h5"
    assert sum(l.group > 1 for l in m.layers) == 17  # the depthwise convs
    check_parity(kmodel, out, PHOTO, "tf")


def test_export_script_bad_weights_path(tmp_path, capsys):
    code = export_vgg16.main(["--weights", str(tmp_path / "missing.h5"), "-o", str(tmp_path / "x.onnx")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: weights file not found: ") and err.count("\n") == 1
    assert not (tmp_path / "x.onnx").exists()
