"""The ONNX Model Zoo's Caffe2 classics, as the onnx wheel ships them (``backend/test/data/light``).

Nine models whose every weight is computed by a ``ConstantOfShape`` node (Caffe2's blobs
``conv1_w_0``, ``gpu_0/res2_0_branch2a_w_0``, …). Nothing is downloaded: they come with onnx.
For each: the Caffe2 layer names, filters equal to onnxruntime's value of the weight tensor,
feature maps equal to an onnxruntime reference (first, middle and last conv), the whole
model's output through onnxviz's session path equal to the shipped ``_output_0.pb`` for the
input onnx's backend runner made it from, and ``onnxviz summary`` / ``check`` exiting 0.
"""

import os
import re

import numpy as np
import onnx
import onnx.utils
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from onnx.backend.test.runner import Runner

import onnxviz
from conftest import assert_close, reference
from onnxviz import runtime
from onnxviz.cli import main

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")

# The first three convs' names, as Caffe2 named their weight blobs.
FIRST_THREE = {
    "bvlc_alexnet": ["conv1", "conv2", "conv3"],
    "zfnet512": ["conv1", "conv2", "conv3"],
    "vgg19": ["conv1_1", "conv1_2", "conv2_1"],
    "resnet50": ["conv1", "res2_0_branch2a", "res2_0_branch2b"],
    "squeezenet": ["conv1", "fire2/squeeze1x1", "fire2/expand1x1"],
    "inception_v1": ["conv1/7x7_s2", "conv2/3x3_reduce", "conv2/3x3"],
    "inception_v2": ["conv1/7x7_s2", "conv2/3x3_reduce", "conv2/3x3"],
    "densenet121": ["conv1", "conv2_1/x1", "conv2_1/x2"],
    "shufflenet": ["conv3_0", "gconv1_0", "gconv3_0"],
}


def _path(name):
    return os.path.join(LIGHT, f"light_{name}.onnx")


def _shipped_input(proto):
    """The input onnx's backend runner feeds these models (``arange / n``, its ``generate_dummy_data``)."""
    inits = {t.name for t in proto.graph.initializer}
    vi = next(i for i in proto.graph.input if i.name not in inits)
    return vi.name, Runner.generate_dummy_data(vi, seed=0, name="", random=False)


@pytest.fixture(scope="module", params=sorted(FIRST_THREE))
def zoo(request):
    path = _path(request.param)
    if not os.path.exists(path):  # every onnx wheel since 1.4 has them
        pytest.fail(f"{path} is missing from the installed onnx")
    full = onnx.load(path)
    return request.param, path, full, onnxviz.load(path)


def test_caffe2_names(zoo):
    name, _, full, m = zoo
    assert [l.name for l in m.layers][:3] == FIRST_THREE[name]
    # every layer: its weight blob's name without the device scope and the '_w_0' blob suffix
    blobs = [re.sub(r"^gpu_\d+/", "", n.input[1])[:-len("_w_0")] for n in full.graph.node if n.op_type == "Conv"]
    assert [l.name for l in m.layers] == blobs and not any("#" in b for b in blobs)


def test_filters_are_the_weights_onnxruntime_computes(zoo):
    _, _, full, m = zoo
    weights = [l.weight for l in m.layers]
    sub = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(full)).extract_model([], weights)
    expected = ort.InferenceSession(sub.SerializeToString(), providers=["CPUExecutionProvider"]).run(weights, {})
    for layer, w in zip(m.layers, expected):
        got = m.filters(layer)
        assert got.dtype == np.float32 and got.shape == layer.filter_shape
        np.testing.assert_array_equal(got, w)
    assert all(l.weight in m._index.folded for l in m.layers)  # each folded once, then kept


def test_feature_maps_match_onnxruntime(zoo):
    _, path, full, m = zoo
    input_name, x = _shipped_input(full)
    layers = [m.layers[0], m.layers[len(m.layers) // 2], m.layers[-1]]
    got = m.feature_maps(x, [l.name for l in layers])
    ref = reference(path, [l.tensor for l in layers], x, input_name=input_name)
    for layer in layers:
        assert_close(got[layer.name], ref[layer.tensor])


def test_whole_model_output_is_the_shipped_one(zoo):
    name, path, full, m = zoo
    input_name, x = _shipped_input(full)
    output = full.graph.output[0].name
    sess = runtime.session(m.proto, m.base_dir)  # the proto load() made, weights read from the file
    got = runtime.run(sess, {input_name: x}, [output])[0]
    shipped = numpy_helper.to_array(onnx.load_tensor(os.path.join(LIGHT, f"light_{name}_output_0.pb")))
    np.testing.assert_allclose(got, shipped, rtol=2e-3, atol=1e-7)  # onnx's own tolerances for these


def test_summary_and_check_show_the_names(zoo, capsys):
    name, path, _, m = zoo
    assert main(["summary", path]) == 0
    rows = capsys.readouterr().out.splitlines()[3:]
    assert [r.split()[1] for r in rows] == [l.name for l in m.layers]
    assert [r.split()[1] for r in rows[:3]] == FIRST_THREE[name]
    assert main(["check", path, "--quiet"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [r.split()[1] for r in out[:-1] if re.match(r"\d+ ", r)] == [l.name for l in m.layers]
    assert out[-1] == f"{len(m.layers)} of {len(m.layers)} layers fully supported (filters and feature maps " \
                      "computed and drawn)"


def test_an_fp16_conversion_keeps_names_and_filters(tmp_path):
    """The Model Zoo's SqueezeNet 1.0 fp16 was made so: onnxconverter-common on the Caffe2 export.
    Its value_info still says float32, so the model's own shape inference fails: the weights'
    shapes come from their ConstantOfShape sub-graphs alone."""
    from onnxconverter_common import float16

    half = float16.convert_float_to_float16(onnx.load(_path("squeezenet")), keep_io_types=True)
    path = tmp_path / "squeezenet_fp16.onnx"
    onnx.save(half, str(path))
    m = onnxviz.load(path)
    assert [l.name for l in m.layers][:3] == FIRST_THREE["squeezenet"]
    weights = [l.weight for l in m.layers]
    sub = onnx.utils.Extractor(half).extract_model([], weights)
    expected = ort.InferenceSession(sub.SerializeToString(), providers=["CPUExecutionProvider"]).run(weights, {})
    for layer, w in zip(m.layers, expected):
        assert w.dtype == np.float16 and layer.filter_shape == w.shape
        np.testing.assert_array_equal(m.filters(layer), w.astype(np.float32))
