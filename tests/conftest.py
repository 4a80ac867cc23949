import hashlib
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("MPLBACKEND", "Agg")

from builders import save, vgg_like  # noqa: E402


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def reference(path, names, x, input_name=None):
    """Run ``names`` of the model at ``path`` through an Extractor sub-model, optimisations off."""
    full = onnx.load(str(path))
    inferred = onnx.shape_inference.infer_shapes(full)
    inputs = [i.name for i in full.graph.input if i.name not in {t.name for t in full.graph.initializer}]
    for n in names:  # make each requested tensor a graph output so Extractor knows it
        if n not in {o.name for o in inferred.graph.output}:
            inferred.graph.output.append(onnx.ValueInfoProto(name=n))
    sub = onnx.utils.Extractor(inferred).extract_model(inputs, list(names))
    used = {i for n in sub.graph.node for i in n.input}
    keep = [i for i in sub.graph.input if i.name in used or i.name == (input_name or inputs[0])]
    del sub.graph.input[:]
    sub.graph.input.extend(keep)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(sub.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return dict(zip(names, sess.run(list(names), {input_name or inputs[0]: x})))


def assert_close(a, b, rtol=1e-4):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = max(np.abs(b).max(), 1e-6)
    assert np.abs(a - b).max() / scale <= rtol, np.abs(a - b).max() / scale


@pytest.fixture
def vgg(tmp_path):
    """(net, path) of a 3-conv NCHW model with caffe-free raw metadata."""
    net, model = vgg_like(metadata={"onnxviz.preprocess": "unit"})
    return net, save(model, tmp_path / "vgg.onnx")


@pytest.fixture
def image(tmp_path):
    from PIL import Image

    r = np.random.default_rng(7)
    arr = (r.random((20, 24, 3)) * 255).astype(np.uint8)
    p = tmp_path / "img.png"
    Image.fromarray(arr).save(p)
    return p, arr


@pytest.fixture(scope="session")
def vgg16_report(tmp_path_factory):
    """The report of a VGG16-shaped model with random weights (scripts/make_random_vgg16.py, top
    included): 2 images (matplotlib's photo, the demo sample), its 5 default layers."""
    import matplotlib.cbook

    import onnxviz
    scripts = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts")
    sys.path.insert(0, scripts)
    try:
        import make_random_vgg16
    finally:
        sys.path.remove(scripts)
    folder = tmp_path_factory.mktemp("vgg16")
    onnx.save(make_random_vgg16.build(include_top=True), str(folder / "vgg16_random.onnx"))
    images = [matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False),
              os.path.join(scripts, "..", "models", "demo_sample.png")]
    data = onnxviz.report.build(str(folder / "vgg16_random.onnx"), images)
    path = folder / "vgg16 report.html"
    path.write_text(onnxviz.report.html.render(data), encoding="utf-8")
    return path, data


@pytest.fixture
def nchwc8(monkeypatch):
    """The memory estimate with onnxruntime's NCHWc blocks of 8 channels (AVX2), whatever this
    machine's (AVX-512: 16): for tests that check its figures byte for byte."""
    from onnxviz import memplan

    monkeypatch.setattr(memplan, "BLOCK", 8)



def grad_cam():
    """The real pytorch-grad-cam package (the CAM parity tests' reference), or skip the test;
    with ONNXVIZ_REQUIRE_ALL set (CI), its absence fails instead.

    torchvision 0.28 (the CUDA build pip pairs with the CPU torch) registers fake kernels for
    its ``nms`` and ``qnms`` ops at import, whose schemas only its missing C++ library would
    define: they are defined here first (once per process), so that it imports."""
    try:
        import torch
        for op in ("nms", "qnms"):
            try:
                torch._C._get_schema(f"torchvision::{op}", "")
            except RuntimeError:  # not defined yet
                torch.library.define(f"torchvision::{op}",
                                     "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import pytorch_grad_cam
        import pytorch_grad_cam.utils.model_targets  # noqa: F401
    except ImportError as e:
        if os.environ.get("ONNXVIZ_REQUIRE_ALL"):
            raise
        pytest.skip(f"pytorch-grad-cam is not installed ({e}); pip install '.[test]'")
    return pytorch_grad_cam


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """With ONNXVIZ_REQUIRE_ALL set (CI), a skipped test is a failure: every extra the tests use
    (TensorFlow, torch, pytorch-grad-cam, Ray, the browser, nbclient) must be there."""
    skipped = terminalreporter.stats.get("skipped", [])
    if os.environ.get("ONNXVIZ_REQUIRE_ALL") and skipped:
        terminalreporter.write_line(f"error: {len(skipped)} skipped under ONNXVIZ_REQUIRE_ALL (install every "
                                    "extra: pip install '.[test,export,ray]')", red=True)


def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if os.environ.get("ONNXVIZ_REQUIRE_ALL") and reporter is not None and reporter.stats.get("skipped") \
            and exitstatus == 0:
        session.exitstatus = 1
