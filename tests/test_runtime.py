"""onnxviz.runtime: sessions for large weights (NchwcTransformer off) give the same maps."""

import numpy as np
import onnxruntime as ort

import onnxviz
from builders import save, vgg_like
from onnxviz import runtime


def test_weight_bytes_counts_inline_and_external_without_reading(tmp_path):
    net, model = vgg_like()
    inline = runtime.weight_bytes(model)
    assert inline >= sum(w.nbytes + (b.nbytes if b is not None else 0) for w, b in net.weights.values())
    path = save(model, tmp_path / "ext.onnx", external=True)
    m = onnxviz.load(path)  # every initializer an external reference
    assert runtime.weight_bytes(m.proto) == sum(w.nbytes + b.nbytes for w, b in net.weights.values())


def test_large_weights_turn_the_nchwc_rewrite_off_with_the_same_maps(tmp_path, monkeypatch):
    net, model = vgg_like(shape=(1, 3, 32, 32), metadata={"onnxviz.preprocess": "unit"})
    path = save(model, tmp_path / "ext.onnx", external=True)
    img = (np.random.default_rng(2).random((32, 32, 3)) * 255).astype(np.uint8)
    seen = []
    real = ort.InferenceSession

    def spy(*args, **kwargs):
        seen.append(kwargs.get("disabled_optimizers"))
        return real(*args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    small = onnxviz.load(path).feature_maps(img)
    monkeypatch.setattr(runtime, "LARGE_WEIGHTS", 0)  # every model counts as large
    large = onnxviz.load(path).feature_maps(img)
    assert seen == [None, ["NchwcTransformer"]]
    for name in small:
        np.testing.assert_allclose(large[name], small[name], rtol=1e-5, atol=1e-6)
