"""``onnxviz.stats`` and ``onnxviz stats``: filter norms, dead filters, channel figures, silent and
top channels, against numpy and onnxruntime references."""

import json
import re

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import onnxviz
from builders import Net, save
from conftest import reference
from onnxviz.check import check
from onnxviz.cli import main
from onnxviz.preprocess import to_tensor
from onnxviz.stats import (DEAD, channel_stats, dead_filters, filter_norms, silent_channels, stats,
                           top_channels)

TRANSPOSED = np.random.default_rng(5).standard_normal((6, 2, 2, 2)).astype(np.float32)  # (I, O/g, k, k), 2 groups


def stats_net(tmp_path):
    """a: 3→4, filter 2 scaled to 1e-5 (dead), filter 3 to 1e-2 (alive); b: 4→6, channel 5's
    bias −50 (silent); up: ConvTranspose 6→4 in 2 groups."""
    r = np.random.default_rng(3)
    wa = r.standard_normal((4, 3, 3, 3)).astype(np.float32)
    wa[2] *= 1e-5
    wa[3] *= 1e-2
    wb = r.standard_normal((6, 4, 3, 3)).astype(np.float32) * 0.3
    bb = r.standard_normal(6).astype(np.float32) * 0.1
    bb[5] = -50
    net = Net((1, 3, 16, 16))
    net.cur = net.node("Conv", ["input", net.init("wa", wa)], name="a", pads=[1] * 4)
    net.act()
    net.cur = net.node("Conv", [net.cur, net.init("wb", wb), net.init("bb", bb)], name="b", pads=[1] * 4)
    net.act()
    net.cur = net.node("ConvTranspose", [net.cur, net.init("wt", TRANSPOSED)], name="up", strides=[2, 2], group=2)
    net.act()
    return save(net.model(metadata={"onnxviz.preprocess": "unit"}), tmp_path / "stats.onnx"), wa, wb


def _norms(w):
    return np.linalg.norm(w.reshape(len(w), -1).astype(np.float64), axis=1)


def _transposed_norms_by_onnxruntime(w, group):
    """Each output channel's norm from the op itself: feed every input channel a unit impulse
    and sum the squares each output channel receives (no padding: nothing is cropped)."""
    i = w.shape[0]
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], group=group)
    graph = helper.make_graph([node], "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [i, i, 1, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[onnxviz_tensor(w, "w")])
    sess = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
                                .SerializeToString(), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"x": np.eye(i, dtype=np.float32)[:, :, None, None]})[0]
    return np.sqrt((y.astype(np.float64) ** 2).sum(axis=(0, 2, 3)))


def onnxviz_tensor(w, name):
    from onnx import numpy_helper

    return numpy_helper.from_array(w, name)


def _refs(path, images):
    """The maps of a, b, up by an extracted sub-model (optimisations off), one image at a time."""
    m = onnxviz.load(path)
    tensors = [m.layer(n).tensor for n in ("a", "b", "up")]
    runs = [reference(path, tensors, to_tensor(img, size=(16, 16), layout="NCHW", preset="unit", channels=3),
                      input_name="input") for img in images]
    return {n: np.concatenate([r[t] for r in runs]) for n, t in zip(("a", "b", "up"), tensors)}


def test_filter_norms_and_dead_filters_against_numpy_and_the_transposed_op(tmp_path):
    path, wa, wb = stats_net(tmp_path)
    m = onnxviz.load(path)
    np.testing.assert_allclose(filter_norms(m.filters("a")), _norms(wa), rtol=1e-6)
    np.testing.assert_allclose(filter_norms(m.filters("b")), _norms(wb), rtol=1e-6)
    up = filter_norms(m.filters("up"), group=2, transposed=True)
    np.testing.assert_allclose(up, _transposed_norms_by_onnxruntime(TRANSPOSED, 2), rtol=1e-5)
    assert up.shape == (4,)  # per output channel, not per input channel (6)
    ref = _norms(wa)
    assert (dead_filters(filter_norms(wa)) == (ref <= DEAD * ref.max())).all()
    assert dead_filters(filter_norms(wa)).tolist() == [False, False, True, False]
    assert dead_filters(np.zeros(3)).all()  # a layer of zeros is all dead


def test_channel_figures_silent_and_top_over_images_against_numpy():
    maps = np.array([[[[-1, -2], [0, -3]], [[1, 2], [3, 4]], [[0, 0], [0, 0]]],
                     [[[-1, 5], [0, 0]], [[0, 0], [0, 1]], [[-1, 0], [0, 0]]]], np.float32)  # (2, 3, 2, 2)
    s = channel_stats(maps)
    flat = maps.reshape(2, 3, -1)
    for key, ref in (("mean", flat.mean(2)), ("max", flat.max(2)), ("min", flat.min(2)), ("active", (flat > 0).mean(2))):
        np.testing.assert_allclose(s[key], ref, rtol=1e-6)
    assert silent_channels(maps, image=0).tolist() == [True, False, True]
    assert silent_channels(maps, image=1).tolist() == [False, False, True]
    assert silent_channels(maps).tolist() == (flat.max(axis=(0, 2)) <= 0).tolist() == [False, False, True]
    assert top_channels(maps, 3, image=None).tolist() == np.argsort(-flat.mean(axis=(0, 2)), kind="stable").tolist()
    assert top_channels(maps, 2, image=None, by="max").tolist() == [0, 1]  # 5 in image 1, 4 in image 0
    assert top_channels(maps, 2, image=1).tolist() == [0, 1]


def test_stats_of_a_model_and_images_against_an_extracted_sub_model(tmp_path, image):
    path, wa, _ = stats_net(tmp_path)
    other = (np.random.default_rng(9).random((30, 20, 3)) * 255).astype(np.uint8)
    calls = []
    s = onnxviz.stats(onnxviz.load(path), [str(image[0]), other], progress=calls.append)
    assert calls == [1, 2, 3, 4, 5] and s.images == [str(image[0]), "image 1 (an array 30×20×3)"]
    refs = _refs(path, [str(image[0]), other])
    for name, ref in refs.items():
        got = s.layers[name]
        flat = ref.reshape(2, ref.shape[1], -1).astype(np.float64)
        np.testing.assert_allclose(got.channels["mean"], flat.mean(2), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(got.channels["max"], flat.max(2), rtol=1e-4, atol=1e-6)
        assert (got.silent == (flat.max(axis=(0, 2)) <= 0)).all()
        assert got.top(3).tolist() == np.argsort(-flat.mean(axis=(0, 2)), kind="stable")[:3].tolist()
        assert got.top(2, image=1).tolist() == np.argsort(-flat[1].mean(1), kind="stable")[:2].tolist()
    assert np.flatnonzero(s.layers["b"].silent).tolist() == [5]
    assert s.layers["a"].dead.tolist() == [False, False, True, False]
    d = json.loads(json.dumps(s.as_dict(top=2)))
    b = d["layers"][1]
    assert b["name"] == "b" and b["silent"] == [5] and b["dead"] == [] and b["channels"] == 6
    assert [t["channel"] for t in b["top"]] == s.layers["b"].top(2).tolist()
    assert b["images"][1]["mean"] == pytest.approx(refs["b"][1].mean(axis=(1, 2)).tolist(), rel=1e-4, abs=1e-6)
    assert d["layers"][0]["norms"] == pytest.approx(_norms(wa).tolist(), rel=1e-6)


def test_filter_statistics_only_without_images(tmp_path):
    path, _, _ = stats_net(tmp_path)
    s = stats(str(path), layers=["up"])
    assert list(s.layers) == ["up"] and s.images == []
    assert s.layers["up"].channels is None and s.layers["up"].silent is None
    assert "channels" not in s.as_dict()["layers"][0]
    with pytest.raises(onnxviz.OnnxvizError, match="^layer 'up' has no activation statistics; pass images"):
        s.layers["up"].top(3)
    with pytest.raises(onnxviz.OnnxvizError, match="^2 names for 1 images; give one name per image$"):
        stats(str(path), np.zeros((16, 16, 3), np.uint8), names=["x", "y"])


def test_check_counts_what_stats_finds(tmp_path, image):
    path, _, _ = stats_net(tmp_path)
    report = check(str(path), str(image[0]))
    s = stats(str(path), str(image[0]))
    for row in report["layers"]:
        assert row["filters"]["near_zero"] == int(s.layers[row["name"]].dead.sum())
        assert row["features"]["silent"] == int(s.layers[row["name"]].silent.sum())
    assert report["layers"][0]["filters"]["near_zero"] == 1 and report["layers"][1]["features"]["silent"] >= 1


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_table_without_and_with_images(tmp_path, image, capsys):
    path, wa, wb = stats_net(tmp_path)
    norms = {"a": _norms(wa), "b": _norms(wb), "up": _transposed_norms_by_onnxruntime(TRANSPOSED, 2)}
    code, out, err = run(["stats", path], capsys)
    assert code == 0 and err == ""
    span = {k: f"[{np.float32(v.min()):.3g}, {np.float32(v.max()):.3g}]" for k, v in norms.items()}
    assert out.splitlines() == [
        f"model   {path}",
        "images  none (filter statistics only)",
        "dead filters: L2 norm ≤ 0.001 × the layer's largest",
        "#  layer  op             filters  L2 norm [min, max]  dead",
        f"0  a      Conv           4        {span['a']:<18}  1 (2)",
        f"1  b      Conv           6        {span['b']:<18}  0",
        f"2  up     ConvTranspose  4        {span['up']:<18}  0"]
    code, out, err = run(["stats", path, image[0], "--layer", "b", "--top", "2"], capsys)
    assert code == 0 and err == ""
    ref = _refs(path, [str(image[0])])["b"][0].astype(np.float64)
    mean = ref.mean(axis=(1, 2))
    top = np.argsort(-mean, kind="stable")[:2]
    silent = np.flatnonzero(ref.max(axis=(1, 2)) <= 0)
    silent_text = f"{len(silent)} ({', '.join(map(str, silent))})"
    lines = out.splitlines()
    assert lines[:3] == [f"model   {path}", f"images  {image[0]}",
                         "dead filters: L2 norm ≤ 0.001 × the layer's largest; silent channels: ≤ 0 at every "
                         "position of the image"]
    assert re.split(" {2,}", lines[3]) == ["#", "layer", "op", "filters", "L2 norm [min, max]", "dead", "silent",
                                           "top 2 channels by mean"]
    assert re.split(" {2,}", lines[4]) == [
        "1", "b", "Conv", "6", span["b"], "0", silent_text, f"{top[0]} ({mean[top[0]]:.3g}), {top[1]} ({mean[top[1]]:.3g})"]


def test_cli_json_and_npy_tensors(tmp_path, image, capsys):
    path, _, _ = stats_net(tmp_path)
    x = to_tensor(str(image[0]), size=(16, 16), layout="NCHW", preset="unit", channels=3)
    np.save(tmp_path / "x.npy", x)
    code, out, _ = run(["stats", path, image[0], tmp_path / "x.npy", "--json", "--top", "3"], capsys)
    d = json.loads(out)
    assert code == 0 and d["images"] == [str(image[0]), str(tmp_path / "x.npy")] and d["dead_threshold"] == DEAD
    for layer in d["layers"]:  # the same input, as an image and as a tensor
        first, second = layer["images"]
        assert first["mean"] == pytest.approx(second["mean"], rel=1e-5, abs=1e-7)
        assert len(layer["top"]) == 3
    assert d["layers"][1]["silent"] == np.flatnonzero(_refs(path, [str(image[0])])["b"][0].max(axis=(1, 2)) <= 0).tolist()


def test_cli_bad_input_gets_one_line(tmp_path, image, capsys):
    path, _, _ = stats_net(tmp_path)
    assert run(["stats", path, "--layer", "c9"], capsys) == (1, "", "error: no layer 'c9'; layers are: a, b, up\n")
    missing = tmp_path / "nope.png"
    assert run(["stats", path, image[0], missing], capsys) == (1, "", f"error: image file '{missing}' does not exist\n")
    assert run(["stats", tmp_path / "none.onnx"], capsys) == (
        1, "", f"error: model file '{tmp_path / 'none.onnx'}' does not exist\n")
    code, out, err = run(["stats", path, "--top", "0"], capsys)
    assert code == 2 and out == "" and err.splitlines()[-1] == "onnxviz stats: error: argument --top: must be 1 or more, not 0"


def test_stats_is_lazy_and_callable():
    import subprocess
    import sys

    code = ("import sys, onnxviz; assert 'onnxviz.stats' not in sys.modules; "
            "from onnxviz.stats import channel_stats; assert callable(onnxviz.stats); "
            "assert onnxviz.stats.channel_stats is channel_stats")
    subprocess.run([sys.executable, "-c", code], check=True)
