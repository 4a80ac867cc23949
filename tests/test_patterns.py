"""patterns(): gradient ascent, batched over channels, the Keras example's loop by default.

Checked here: each pattern excites its own channel more than the other patterns of the same
run do, fed back through feature_maps (random nets: every channel whose pattern is alive with
the Keras start, every channel with start="gray", revive=True); batching does not change
the result (one filter at a time = 16 at once); the reported activation is the objective of
the final image; determinism by seed; de-processing; bad input. The step-by-step agreement
with the loop written in TF is in test_gradients_keras.py.
"""

from __future__ import annotations

import numpy as np
import pytest

import onnxviz
from builders import Net, save
from conftest import assert_close
from onnxviz.errors import ImageError, LayerError, OnnxvizError
from onnxviz.explain.patterns import deprocess, initial


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    net = Net(("N", 3, 32, 32), seed=1)
    net.conv(3, 16, name="c1"); net.act(); net.pool()
    net.conv(16, 32, name="c2"); net.act(); net.pool()
    net.conv(32, 32, name="c3"); net.act()
    path = tmp_path_factory.mktemp("pat") / "net.onnx"
    return onnxviz.load(save(net.model(metadata={"onnxviz.preprocess": "unit"}), path))


def _inner(m, p, layer, border=2):
    fm = m.feature_maps(p.inputs, [layer])[layer]
    return fm[:, :, border:-border, border:-border].mean((2, 3))[:, p.channels]  # (pattern, channel)


@pytest.mark.parametrize("kw", [{}, {"start": "gray", "revive": True}])
def test_each_pattern_excites_its_own_channel_most(net, kw):
    p = onnxviz.patterns(net, "c3", size=32, **kw)
    inner = _inner(net, p, "c3")
    k = len(p.channels)
    own = inner[np.arange(k), np.arange(k)]
    others = np.where(np.eye(k, dtype=bool), -np.inf, inner).max(0)
    alive = own > 0
    assert alive.sum() >= (k if kw else k // 2)
    assert np.all(own[alive] > others[alive])
    assert_close(p.activation, own, 1e-4)  # the objective of the final image


def test_batching_changes_nothing(net):
    one = onnxviz.patterns(net, "c2", [3, 0, 7, 5, 1], size=32, steps=10, batch=1)
    many = onnxviz.patterns(net, "c2", [3, 0, 7, 5, 1], size=32, steps=10, batch=16)
    assert_close(one.inputs, many.inputs, 1e-5)
    assert_close(one.history, many.history, 1e-5)
    assert list(many.channels) == [3, 0, 7, 5, 1] and many.history.shape == (10, 5)


def test_result_shapes_and_seed(net):
    p = onnxviz.patterns(net, "c2", [2, 4], size=32, steps=3, seed=4)
    assert p.images.shape == (2, 16, 16, 3) and p.images.dtype == np.uint8  # 32 − 2·8: crop ≤ a quarter
    assert p.inputs.shape == (2, 3, 32, 32) and p.inputs.dtype == np.float32
    assert p.layer == "c2" and p.activation.shape == (2,)
    again = onnxviz.patterns(net, "c2", [2, 4], size=32, steps=3, seed=4)
    other = onnxviz.patterns(net, "c2", [2, 4], size=32, steps=3, seed=5)
    np.testing.assert_array_equal(p.inputs, again.inputs)
    assert not np.allclose(p.inputs, other.inputs)
    start = initial(net, 2, (32, 32), seed=4)
    assert start.shape == (2, 3, 32, 32) and np.abs(start).max() <= 0.125  # (u − 0.5)·0.25
    jittered = onnxviz.patterns(net, "c2", [2, 4], size=32, steps=3, seed=4, jitter=2)
    assert not np.allclose(p.inputs, jittered.inputs)


def test_deprocess_is_the_keras_example():
    img = np.random.default_rng(0).standard_normal((40, 40, 3)) * 3 + 1
    want = (img - img.mean()) / (img.std() + 1e-5) * 0.15
    want = (np.clip(want[5:-5, 5:-5] + 0.5, 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(deprocess(img, 5), want)
    np.testing.assert_array_equal(deprocess(img, 5, bgr=True), want[..., ::-1])


def test_bad_input(net, tmp_path):
    with pytest.raises(LayerError) as e:
        onnxviz.patterns(net, "c2", [1, 32], size=32)
    assert str(e.value) == "channel 32 is out of range: layer 'c2' has 32 channels (0–31)"
    with pytest.raises(OnnxvizError) as e:
        onnxviz.patterns(net, "c2", [0.5], size=32)
    assert str(e.value) == "channels must be whole numbers, not [0.5]"
    with pytest.raises(LayerError) as e:
        onnxviz.patterns(net, "c9")
    assert str(e.value).startswith("no layer or tensor 'c9'; layers are: c1, c2, c3")
    with pytest.raises(OnnxvizError) as e:
        onnxviz.patterns(net, "c2", steps=0)
    assert str(e.value) == "steps must be 1 or more and lr positive, not steps=0, lr=10.0"
    with pytest.raises(OnnxvizError) as e:
        onnxviz.patterns(net, "c2", [0, 1], size=32, start=np.zeros((1, 3, 32, 32)))
    assert str(e.value) == ("start must be 'keras', 'gray' or an array of shape [2, 3, 32, 32] (one image per "
                            "channel, as the input is laid out), not shape [1, 3, 32, 32]")
    start = np.random.default_rng(0).random((2, 3, 32, 32)).astype(np.float32)
    kept = start.copy()
    p = onnxviz.patterns(net, "c2", [0, 1], size=32, steps=1, start=start)
    assert np.array_equal(start, kept) and not np.array_equal(p.inputs, start)  # the caller's array is not moved
    fixed = Net((1, 3, 32, 32))
    fixed.conv(3, 4, name="k"); fixed.act()
    m = onnxviz.load(save(fixed.model(), tmp_path / "fixed.onnx"))
    with pytest.raises(ImageError) as e:
        onnxviz.patterns(m, "k", size=64)
    assert str(e.value) == (f"model '{m.path}' has a fixed input size 32×32; size 64×64 cannot be used")
    assert onnxviz.patterns(m, "k", [0], steps=1).inputs.shape == (1, 3, 32, 32)  # its own size by default


def test_one_channel_objective_equals_the_full_layers(net):
    """Term(one=True), patterns' objective: the layer's conv for each image's channel alone gives the
    objective and input gradient of the full layer, for one nonzero per seed row (weights ±, a zero row)."""
    from onnxviz import runtime
    from onnxviz.graph.backward import Term, build

    tensor = net.layer("c3").tensor
    x = np.random.default_rng(3).random((4, 3, 32, 32)).astype(np.float32)
    seed = np.zeros((4, 32), np.float32)
    seed[[0, 1, 2], [5, 0, 31]] = [1.0, 2.5, -0.5]  # image 3: no channel
    out = {}
    for one in (False, True):
        g = build(net.proto, [Term("channel", tensor, 2, one=one)], ["input"], shapes={"input": ("N", 3, 32, 32)})
        out[one] = runtime.session(g.model, net.base_dir).run([g.objective, g.grads["input"]],
                                                              {"input": x, g.seeds[0]: seed})
        convs = [n.name for n in g.model.graph.node if n.op_type == "Conv"]
        assert ("c3" in convs) != one  # the full layer is gone
    assert_close(out[True][0], out[False][0], 1e-5)
    assert_close(out[True][1], out[False][1], 1e-5)
    assert out[True][0][3] == 0 and not out[True][1][3].any()
