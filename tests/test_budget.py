"""The memory budget (``--max-memory``, ``max_bytes=``): what the estimate counts, and that a
request over it is refused before onnxruntime is asked for anything.

Every model here is small in bytes and only *would* be big at the requested size: nothing
large is ever allocated (the runtime is replaced by a tripwire in the refusal tests).
"""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import onnxviz
from builders import Net, save, vgg_like
from onnxviz import budget, runtime
from onnxviz.cli import main

MiB = 2**20
pytestmark = pytest.mark.usefixtures("nchwc8")  # byte-exact figures: blocks of 8
ADVICE_IMAGES = ("ask for fewer layers or images or a smaller size, or raise it with --max-memory, max_bytes= "
                 "or ONNXVIZ_MAX_BYTES")
ADVICE_ARRAY = ("ask for fewer layers or a smaller input array, or raise it with --max-memory, max_bytes= "
                "or ONNXVIZ_MAX_BYTES")


@pytest.fixture
def tripwire(monkeypatch):
    """Fail the test if a session is built or run: a refusal must come before both."""
    calls = []
    monkeypatch.setattr(runtime, "session", lambda *a, **k: calls.append("session") or pytest.fail("session built"))
    monkeypatch.setattr(runtime, "run", lambda *a, **k: calls.append("run") or pytest.fail("model run"))
    return calls


def dynamic_vgg(tmp_path):
    """64-64-pool-32-pool-8 3×3 convs with Relu, dynamic batch and spatial dims (cf. VGG's block 1)."""
    net = Net(("N", 3, "H", "W"))
    net.conv(3, 64, name="c1"); net.act()
    net.conv(64, 64, name="c2"); net.act(); net.pool()
    net.conv(64, 32, name="c3"); net.act(); net.pool()
    net.conv(32, 8, name="c4"); net.act()
    return save(net.model(metadata={"onnxviz.preprocess": "unit"}), tmp_path / "vdyn.onnx")


def conv1d(tmp_path):
    """x (N, 1, L) → conv 1→64 → Relu → conv 64→64 → Relu."""
    r = np.random.default_rng(0)
    inits = [numpy_helper.from_array(r.standard_normal((64, 1, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(r.standard_normal((64, 64, 3)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="c1", pads=[1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1")]
    nodes += [helper.make_node("Conv", ["r1", "w2"], ["c2"], name="c2", pads=[1, 1]),
              helper.make_node("Relu", ["c2"], ["r2"], name="relu2")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, "L"])],
                          [helper.make_tensor_value_info("r2", TensorProto.FLOAT, None)], inits)
    return save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "c1d.onnx")


def _png(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(7).random((20, 24, 3)) * 255).astype(np.uint8)).save(path)
    return path


def test_intermediate_tensors_are_counted(tmp_path, tripwire, capsys):
    """The deepest layer of a VGG-like net at 512×512: its map is 0.5 MiB, but the run holds two
    64×512×512 tensors at once (c1's output while c2 computes). The old estimate (the input and
    the requested maps: 3.5 MiB) let this through a 100 MiB budget."""
    model, image = dynamic_vgg(tmp_path), _png(tmp_path)
    code = main(["features", str(model), str(image), "--size", "512", "512", "--layer", "-1",
                 "--max-memory", "100M", "-o", str(tmp_path / "o.png")])
    out, err = capsys.readouterr()
    assert (code, out, tripwire) == (1, "", [])
    assert err == ("error: these feature maps would need 131.0 MiB at input 1×3×512×512 (input 3.0 MiB, maps of "
                   "1 layer 512.0 KiB, intermediate tensors held at the same time 127.5 MiB); the budget is "
                   f"100.0 MiB: {ADVICE_IMAGES}\n")
    assert not (tmp_path / "o.png").exists()


def test_the_estimate_is_the_peak_of_the_tensors_alive_at_once(tmp_path):
    m = onnxviz.load(dynamic_vgg(tmp_path))
    in_b, big, pool = 3 * 512 * 512 * 4, 64 * 512 * 512 * 4, 64 * 256 * 256 * 4
    c3, c4 = 32 * 256 * 256 * 4, 8 * 128 * 128 * 4

    def est(layers, n=1):
        return budget.estimate(m, [l.tensor for l in m.select(layers)], (n, 3, 512, 512), images=True)

    # c1 + its in-place Relu, then c2 beside it; the map of c4 is the output
    assert est([-1]) == {"total": in_b + 2 * big, "input": in_b, "maps": c4, "work": 2 * big - c4, "unsized": []}
    # a requested map counts twice (its NCHWc working buffer and its graph output), and
    # onnxruntime copies the blocked maps out last: at the end, every map's working buffer and
    # the first one's copy (before: each copy was counted from the node that makes the map)
    assert est(None)["total"] == in_b + 3 * big + c3 + c4
    assert est(None)["maps"] == 2 * big + c3 + c4
    # a first layer alone: its working buffer and its output
    assert est([0])["total"] == in_b + 2 * big
    # a batch of 8 on a dynamic batch: 8 times one image, in one run
    assert est([-1], 8)["total"] == 8 * est([-1])["total"]


def test_fixed_batch_counts_the_earlier_runs_outputs(tmp_path):
    _, model = vgg_like(metadata={"onnxviz.preprocess": "unit"})  # input 1×3×16×16: one image a run
    m = onnxviz.load(save(model, tmp_path / "v.onnx"))
    one = budget.estimate(m, [m.layer("b1c1").tensor], (1, 3, 16, 16), images=True)
    three = budget.estimate(m, [m.layer("b1c1").tensor], (3, 3, 16, 16), images=True)
    in_b, c1 = 3 * 16 * 16 * 4, 4 * 16 * 16 * 4
    # the conv's NCHWc working buffer has its 4 channels padded to a block of 8 (2 × c1),
    # besides the map as returned (c1)
    assert one["total"] == in_b + 3 * c1
    # the run of the third image holds the first two's maps; then the three runs' maps are
    # concatenated (twice the maps at once): 3 inputs + 6 maps
    assert three["total"] == 3 * in_b + 6 * c1 and three["maps"] == 3 * c1


def test_a_ready_tensor_is_counted_at_its_own_shape(tmp_path, tripwire, capsys):
    """A 1-D net with a dynamic length: shapes are inferred at the array's length (before, the
    unknown input counted as 4 bytes and the maps not at all, so 100M let a 2.4 GB run through)."""
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 200_000), np.float32))
    code = main(["features", str(conv1d(tmp_path)), str(tmp_path / "x.npy"), "--max-memory", "50M",
                 "-o", str(tmp_path / "o.png")])
    out, err = capsys.readouterr()
    assert (code, out, tripwire) == (1, "", [])
    assert err == ("error: these feature maps would need 98.4 MiB at input 1×1×200000 (input 781.2 KiB, maps of "
                   "1 layer 48.8 MiB, intermediate tensors held at the same time 48.8 MiB); the budget is "
                   f"50.0 MiB: {ADVICE_ARRAY}\n")


def test_a_ready_tensor_within_the_budget_runs(tmp_path):
    m = onnxviz.load(conv1d(tmp_path))
    fm = m.feature_maps(np.ones((2, 1, 100), np.float32), [-1], max_bytes=2 * (100 * 4 + 2 * 64 * 100 * 4))
    assert fm[m.layers[-1].name].shape == (2, 64, 100)
    assert budget.estimate(m, [m.layers[-1].tensor], (2, 1, 100))["total"] == 2 * (100 * 4 + 2 * 64 * 100 * 4)


def sliced1d(tmp_path):
    """x (1, 1, L) → conv 1→64 → Relu → Slice to a length computed from the data (how many
    x > 0) → conv 64→64 → Relu: no shape inference can size what follows the Slice."""
    r = np.random.default_rng(0)
    inits = [numpy_helper.from_array(r.standard_normal((64, 1, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(r.standard_normal((64, 64, 3)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.zeros(1, np.float32), "zero"),
             numpy_helper.from_array(np.array([0], np.int64), "start"),
             numpy_helper.from_array(np.array([2], np.int64), "axis"),
             numpy_helper.from_array(np.array([1], np.int64), "one")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="c1", pads=[1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Greater", ["x", "zero"], ["pos"], name="positive"),
             helper.make_node("Cast", ["pos"], ["pos64"], name="cast", to=TensorProto.INT64),
             helper.make_node("ReduceSum", ["pos64"], ["count"], name="count", keepdims=0),
             helper.make_node("Reshape", ["count", "one"], ["end"], name="end"),
             helper.make_node("Slice", ["r1", "start", "end", "axis"], ["kept"], name="keep"),
             helper.make_node("Conv", ["kept", "w2"], ["c2"], name="c2", pads=[1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, "L"])],
                          [helper.make_tensor_value_info("r2", TensorProto.FLOAT, None)], inits)
    return save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "sliced.onnx")


def test_a_tensor_no_inference_can_size_is_said_so(tmp_path, monkeypatch):
    """Before, a tensor shape inference could not size was counted as large as its node's
    inputs (the bug of issue 10: a FusedConv ResNet18 "needed" 73.5 GiB). Now no figure is
    made up: the refusal names the tensor and the op, and says what to do; ``off`` runs it."""
    m = onnxviz.load(sliced1d(tmp_path))
    x = np.linspace(-1, 1, 1000, dtype=np.float32).reshape(1, 1, 1000)
    e = budget.estimate(m, [m.layers[-1].tensor], x.shape)
    assert (e["total"], e["maps"], e["work"], e["input"]) == (None, None, None, 4000)
    assert [(t, node.name) for t, node in e["unsized"]] == [("kept", "keep"), ("c2", "c2"), ("r2", "relu2")]
    calls = []
    monkeypatch.setattr(runtime, "session", lambda *a, **k: calls.append(1) or pytest.fail("session built"))
    with pytest.raises(onnxviz.ResourceError) as refused:
        m.feature_maps(x, [-1])
    assert str(refused.value) == (
        "these feature maps cannot be sized at input 1×1×1000: tensor 'kept' of op Slice (node 'keep') has no "
        "inferable shape (and 2 more tensors after it), neither by onnx nor by onnxruntime, so they cannot be "
        "checked against the budget of 2.0 GiB: ask for layers before it, or run them unchecked with "
        "--max-memory off, max_bytes='off' or ONNXVIZ_MAX_BYTES=off")
    assert calls == []
    monkeypatch.undo()
    fm = m.feature_maps(x, [-1], max_bytes="off")  # 499 of the 1000 values are > 0
    assert fm[m.layers[-1].name].shape == (1, 64, 500)
    assert m.feature_maps(x, [0], max_bytes="100M")[m.layers[0].name].shape == (1, 64, 1000)  # before it


def test_the_fallback_stages_size_what_onnx_cannot(tmp_path, monkeypatch):
    """With onnx's shape inference failing outright, onnxruntime's stages size every tensor
    (the session stage, here: the symbolic one calls onnx's inference per node), and the
    estimate is the one onnx's shapes give. (Before, every tensor was guessed from the input.)"""
    _, model = vgg_like(metadata={"onnxviz.preprocess": "unit"})  # 3→4, 4→4, pool, 4→6 at 16×16
    path = save(model, tmp_path / "v.onnx")
    want = budget.estimate(onnxviz.load(path), [onnxviz.load(path).layer("b1c2").tensor], (2, 3, 16, 16))

    def fail(*a, **k):
        raise onnx.shape_inference.InferenceError("no")

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", fail)
    m = onnxviz.load(path)
    assert [l.output_shape for l in m.layers] == [(4, 16, 16), (4, 16, 16), (6, 8, 8)]
    assert budget.estimate(m, [m.layer("b1c2").tensor], (2, 3, 16, 16)) == want
    # the 3 convs and 3 Relus (the layer table's and the estimate's; the pools are not needed)
    assert m.shapes({"input": (1, 3, 16, 16)}).counts() == {"session": 6}
