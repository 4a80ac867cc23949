"""onnxviz.cam: every method against a reference written here on the same activations, the graph
split against a full-graph run, the default layer, the pictures, and bad input.

References (the real pytorch-grad-cam is in test_cam_torch.py):

* resizing: ``cv2.resize`` (``INTER_LINEAR``) and torch's ``UpsamplingBilinear2d``;
* EigenCAM: ``np.linalg.svd(..., full_matrices=True)`` as pytorch-grad-cam calls it;
* ScoreCAM: the masked inputs made with ``np.interp`` and run one at a time by a plain
  onnxruntime session of the whole model; batched runs equal unbatched ones;
* AblationCAM: the whole graph run with the layer's tensor replaced by an ablated copy
  (``tensor · keep + fill``), the ablated value following pytorch-grad-cam's ``AblationLayer``
  loop; the tail-only run must equal it, a skip connection around the layer included;
* the gradient family: a head ``GlobalAveragePool → Gemm`` has ``∂S/∂A_c = W[t, c] / (h·w)``,
  so Grad-CAM's weights, LayerCAM's and HiResCAM's maps follow from the Gemm's weights alone.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from builders import Net, save
from PIL import Image

import onnxviz
from onnxviz.errors import LayerError, OnnxvizError, ResourceError, UnsupportedModelError
from onnxviz.explain.base import bilinear, heatmap, scale
from onnxviz.graph.rewrite import tail, tail_inputs

SIDE = 20


def classifier(path, *, residual=False, act="Relu", softmax=True, dead=False, seed=0, labels=None):
    """conv(3→6)-ReLU-pool, conv(6→6)-act [+ the pool output], GlobalAveragePool, Flatten,
    Gemm(6→5)[, Softmax]."""
    net = Net(("N", 3, SIDE, SIDE), seed=seed)
    net.conv(3, 6, name="c1")
    net.act()
    skip = net.pool()
    net.conv(6, 6, name="c2")
    if dead:  # channel 0 of c2 never fires: a constant map
        b = next(t for t in net.inits if t.name == "c2.bias")
        b.CopyFrom(onnx.numpy_helper.from_array(np.r_[np.float32(-100), onnx.numpy_helper.to_array(b)[1:]], "c2.bias"))
    net.act(act, **({"alpha": 0.1} if act == "LeakyRelu" else {}))
    if residual:
        net.cur = net.node("Add", [net.cur, skip], name="add")
        net.act()
    gap = net.node("GlobalAveragePool", [net.cur], name="gap")
    flat = net.node("Flatten", [gap], name="flat")
    w = net.r.standard_normal((5, 6)).astype(np.float32)
    net.init("fc.w", w)
    net.init("fc.b", net.r.standard_normal(5).astype(np.float32))
    out = net.node("Gemm", [flat, "fc.w", "fc.b"], name="fc", transB=1)
    if softmax:
        out = net.node("Softmax", [out], name="softmax", axis=1)
    meta = {"onnxviz.preprocess": "unit"}
    if labels:
        meta["onnxviz.labels"] = "\n".join(labels)
    return save(net.model(outputs=[out], metadata=meta), path), w


def style_net(path):
    """A model with no class output: conv-ReLU-conv, an image out."""
    net = Net(("N", 3, SIDE, SIDE))
    net.conv(3, 6, name="e1")
    net.act()
    net.conv(6, 3, name="e2")
    return save(net.model(metadata={"onnxviz.preprocess": "unit"}), path)


@pytest.fixture
def photos():
    r = np.random.default_rng(5)
    return [(r.random((SIDE + 4, SIDE, 3)) * 255).astype(np.uint8) for _ in range(2)]


def tensor_of(m, images):
    from onnxviz.features import input_tensor
    return input_tensor(m, images)


def logits_of(path, x):
    """The Gemm output of the whole model, by a plain onnxruntime session (optimisations off)."""
    from conftest import reference
    return reference(path, ["fc_out"], x)["fc_out"]


# ---------------------------------------------------------------- resizing and scaling

def test_bilinear_equals_cv2_and_torch():
    maps = np.random.default_rng(0).standard_normal((2, 7, 5)).astype(np.float32)
    cv2 = pytest.importorskip("cv2")
    for size in ((23, 16), (7, 5), (3, 4), (30, 30)):
        want = np.stack([cv2.resize(m, (size[1], size[0])) for m in maps])
        np.testing.assert_allclose(bilinear(maps, size), want, atol=1e-5)
    torch = pytest.importorskip("torch")
    for size in ((23, 16), (1, 1), (7, 5)):
        want = torch.nn.UpsamplingBilinear2d(size=size)(torch.from_numpy(maps[:, None]))[:, 0].numpy()
        np.testing.assert_allclose(bilinear(maps, size, corners=True), want, atol=1e-5)


def test_heatmap_is_relu_scale_resize_scale():
    raw = np.random.default_rng(1).standard_normal((1, 4, 6)).astype(np.float32)
    relu = np.maximum(raw, 0)
    once = (relu - relu.min()) / (1e-7 + (relu - relu.min()).max())
    cv2 = pytest.importorskip("cv2")
    up = cv2.resize(once[0].astype(np.float32), (12, 8))
    want = (up - up.min()) / (1e-7 + (up - up.min()).max())
    np.testing.assert_allclose(heatmap(raw, (8, 12))[0], want, atol=1e-6)
    assert scale(np.zeros((1, 2, 2))).max() == 0  # a flat map stays 0, no NaN


# ---------------------------------------------------------------- each method against a reference

def test_eigen_is_the_numpy_svd_projection(tmp_path, photos):
    path, _ = classifier(tmp_path / "m.onnx")
    m = onnxviz.load(path)
    c = onnxviz.cam(m, photos, "eigen", layer="c2")
    acts = m.feature_maps(photos, ["c2"])["c2"]
    for k, a in enumerate(acts):
        flat = a.reshape(a.shape[0], -1).T
        flat = flat - flat.mean(axis=0)
        vt = np.linalg.svd(flat, full_matrices=True)[2]  # pytorch-grad-cam's call, U of (h·w)² and all
        want = (flat @ vt[0]).reshape(a.shape[1:])
        np.testing.assert_allclose(c.raw[k], want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
    assert c.weights is None and c.raw.shape == (2, 10, 10) and c.heatmap.shape == (2, SIDE, SIDE)
    fixed = onnxviz.cam(m, photos, "eigen", layer="c2", sign_correction=True)
    for k in range(2):
        flip = abs(c.raw[k].min()) > abs(c.raw[k].max())
        np.testing.assert_array_equal(fixed.raw[k], -c.raw[k] if flip else c.raw[k])
        assert abs(fixed.raw[k].max()) >= abs(fixed.raw[k].min())


def _masks(acts: np.ndarray, size: int) -> np.ndarray:
    """Each (h, w) map upsampled corners-aligned with np.interp, row then column, min–max normalised."""
    h, w = acts.shape[-2:]
    rows = np.stack([[np.interp(np.linspace(0, h - 1, size), np.arange(h), col) for col in m.T] for m in acts])
    up = np.stack([[np.interp(np.linspace(0, w - 1, size), np.arange(w), row) for row in m.T] for m in rows])
    lo = up.min(axis=(1, 2), keepdims=True)
    return (up - lo) / (up.max(axis=(1, 2), keepdims=True) - lo + 1e-8)


def test_score_equals_masked_runs_one_by_one(tmp_path, photos):
    path, _ = classifier(tmp_path / "m.onnx", dead=True)
    m = onnxviz.load(path)
    x = tensor_of(m, photos)
    acts = m.feature_maps(x, ["c2"])["c2"]
    assert (acts[:, 0] == 0).all()  # the dead channel: its mask is 0, scored once for all
    target = np.array([1, 4])
    c = onnxviz.cam(m, x, "score", "c2", target)
    for k in range(2):
        scores = np.array([logits_of(path, (x[k] * mask)[None].astype(np.float32))[0, target[k]]
                           for mask in _masks(acts[k], SIDE)])
        e = np.exp(scores - scores.max())
        np.testing.assert_allclose(c.weights[k], e / e.sum(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(c.raw, np.einsum("nc,nchw->nhw", c.weights, acts), rtol=1e-5, atol=1e-6)
    for batch in (1, 3, 64):  # batches change nothing
        np.testing.assert_allclose(onnxviz.cam(m, x, "score", "c2", target, batch_size=batch).weights, c.weights,
                                   rtol=1e-6, atol=1e-8)
    top = onnxviz.cam(m, x, "score", "c2", target, top_channels=3)
    var = acts.reshape(2, 6, -1).var(axis=2)
    for k in range(2):
        chosen = np.sort(np.argsort(-var[k], kind="stable")[:3])
        assert set(np.flatnonzero(top.weights[k])) == set(chosen)
        picked = c.weights[k][chosen]  # the softmax over the chosen channels only
        np.testing.assert_allclose(top.weights[k][chosen], picked / picked.sum(), rtol=1e-5)


def _ablation_fill(a: np.ndarray, batch: int) -> np.ndarray:
    """pytorch-grad-cam's AblationLayer.__call__, its loop written out: row i of a batch gets
    0 if the batch's minimum is 0, else that minimum − 1e7 (the rows before it included)."""
    fills = []
    for lo in range(0, a.shape[0], batch):
        rows = np.repeat(a[None], min(batch, a.shape[0] - lo), axis=0)
        for i, ch in enumerate(range(lo, lo + len(rows))):
            low = rows.min()
            rows[i, ch] = 0 if low == 0 else np.float32(low) - np.float32(1e7)
            fills.append(rows[i, ch, 0, 0])
    return np.array(fills, np.float32)


def _full_graph_ablation(path, tensor: str, x: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """The Gemm output of the WHOLE model, once per channel, with ``tensor · keep + fill`` in place of ``tensor``."""
    model = onnx.load(str(path))
    g = model.graph
    for node in g.node:
        node.input[:] = ["ablated" if i == tensor else i for i in node.input]
    g.node.extend([onnx.helper.make_node("Mul", [tensor, "keep"], ["kept"]),
                   onnx.helper.make_node("Add", ["kept", "fill"], ["ablated"])])
    g.input.extend([onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, ["B", 6, 1, 1])
                    for n in ("keep", "fill")])
    g.output.append(onnx.helper.make_tensor_value_info("fc_out", onnx.TensorProto.FLOAT, None))
    sorted_model = onnx.helper.make_model(onnx.helper.make_graph(_toposort(g), "g", g.input, g.output, g.initializer),
                                          opset_imports=model.opset_import)
    sess = ort.InferenceSession(sorted_model.SerializeToString(), providers=["CPUExecutionProvider"])
    eye = np.eye(6, dtype=np.float32)[:, :, None, None]
    return sess.run(["fc_out"], {"input": np.repeat(x[None], 6, axis=0), "keep": 1 - eye,
                                 "fill": eye * fill[:, None, None, None]})[0]


def _toposort(g):
    made = {i.name for i in g.input} | {t.name for t in g.initializer}
    left, order = list(g.node), []
    while left:
        ready = [n for n in left if all(i in made for i in n.input if i)]
        order += ready
        made |= {o for n in ready for o in n.output}
        left = [n for n in left if n not in ready]
    return order


@pytest.mark.parametrize("act", ["Relu", "LeakyRelu"])
def test_ablation_tail_equals_a_full_graph_run(tmp_path, photos, act):
    path, _ = classifier(tmp_path / "m.onnx", residual=True, act=act)
    m = onnxviz.load(path)
    x = tensor_of(m, photos)
    layer = m.layer("c2").tensor
    # the tail after c2's map also reads the pool output, made before it (the skip connection)
    assert tail_inputs(m.proto, layer, ["fc_out"]) == ["maxpool_2_out"]
    acts = m.feature_maps(x, ["c2"])["c2"]
    assert (acts.min() < 0) == (act == "LeakyRelu")  # LeakyRelu: ablated to min − k·1e7
    target = np.array([2, 0])
    for batch in (32, 4):
        c = onnxviz.cam(m, x, "ablation", "c2", target, batch_size=batch)
        for k in range(2):
            fill = _ablation_fill(acts[k], batch)
            if act == "LeakyRelu":  # the k-th row of a batch: min − k·1e7
                assert fill[0] < -9e6 and fill[1] == fill[0] - np.float32(1e7)
                assert batch == 32 or fill[batch] == fill[0]
            ablated = _full_graph_ablation(path, layer, x[k], fill)[:, target[k]]
            score = logits_of(path, x[k:k + 1])[0, target[k]]
            np.testing.assert_allclose(c.weights[k], (score - ablated) / score, rtol=1e-4,
                                       atol=1e-5 * np.abs((score - ablated) / score).max())
    np.testing.assert_allclose(c.score, logits_of(path, x)[[0, 1], target], rtol=1e-5, atol=1e-6)


def test_tail_is_a_new_model(tmp_path):
    path, _ = classifier(tmp_path / "m.onnx", residual=True)
    m = onnxviz.load(path)
    before = m.proto.SerializeToString()
    layer = m.layer("c2").tensor
    part = tail(m.proto, layer, ["fc_out"], {layer: (np.float32, (None, 6, 10, 10)),
                                             "maxpool_2_out": (np.float32, (None, 6, 10, 10))})
    assert m.proto.SerializeToString() == before
    assert [i.name for i in part.graph.input] == [layer, "maxpool_2_out"]
    assert [n.op_type for n in part.graph.node] == ["Add", "Relu", "GlobalAveragePool", "Flatten", "Gemm"]
    assert sorted(t.name for t in part.graph.initializer) == ["fc.b", "fc.w"]
    with pytest.raises(LayerError) as e:
        tail(m.proto, layer, ["maxpool_2_out"], {})
    assert str(e.value) == (f"tensor 'maxpool_2_out' does not depend on tensor '{layer}', so nothing after "
                            f"'{layer}' changes it; choose a tensor it is computed from")


def test_gradient_family_from_the_head_weights(tmp_path, photos):
    """GlobalAveragePool → Gemm: ∂S/∂A_cij = W[t, c] / (h·w), whatever the activations."""
    path, w = classifier(tmp_path / "m.onnx", softmax=False)
    m = onnxviz.load(path)
    x = tensor_of(m, photos)
    a = m.feature_maps(x, ["c2"])["c2"]
    t = np.array([3, 1])
    g = (w[t] / 100)[:, :, None, None] * np.ones_like(a)
    want = {"grad": (np.einsum("nc,nchw->nhw", w[t] / 100, a), w[t] / 100),
            "hires": ((g * a).sum(1), None),
            "layer": ((np.maximum(g, 0) * a).sum(1), None),
            "xgrad": None, "grad++": None}
    total = a.sum(axis=(2, 3), keepdims=True)
    xw = (g * a / (total + 1e-7)).sum(axis=(2, 3))
    want["xgrad"] = (np.einsum("nc,nchw->nhw", xw, a), xw)
    alpha = np.where(g != 0, g ** 2 / (2 * g ** 2 + total * g ** 3 + 1e-6), 0)
    pw = (np.maximum(g, 0) * alpha).sum(axis=(2, 3))
    want["grad++"] = (np.einsum("nc,nchw->nhw", pw, a), pw)
    for method, (raw, weights) in want.items():
        c = onnxviz.cam(m, x, method, "c2", t)
        np.testing.assert_allclose(c.raw, raw, rtol=1e-4, atol=1e-5 * np.abs(raw).max(), err_msg=method)
        assert (c.weights is None) == (weights is None), method
        if weights is not None:
            np.testing.assert_allclose(c.weights, weights, rtol=1e-4, atol=1e-6, err_msg=method)
        assert list(c.target) == list(t) and c.method == method


def test_guided_grad_is_guided_backprop_times_the_heatmap(tmp_path, photos):
    path, _ = classifier(tmp_path / "m.onnx")
    m = onnxviz.load(path)
    c = onnxviz.cam(m, photos, "guided-grad", "c2")
    grad = onnxviz.cam(m, photos, "grad", "c2")
    np.testing.assert_array_equal(c.heatmap, grad.heatmap)
    gb = onnxviz.saliency(m, photos, c.target, "guided").values.transpose(0, 2, 3, 1)
    np.testing.assert_allclose(c.guided, gb * c.heatmap[..., None], rtol=1e-6, atol=1e-9)
    assert c.title == "Guided Grad-CAM" and c.guided.shape == (2, SIDE, SIDE, 3)


# ---------------------------------------------------------------- layers, classes, pictures

def test_default_layer(tmp_path):
    from onnxviz.explain.cam import default_layer

    res = onnxviz.load(classifier(tmp_path / "r.onnx", residual=True)[0])
    assert default_layer(res) == "relu_4_out"  # the block's output after its residual Add, before the pooling
    assert onnxviz.cam(res, np.zeros((1, 3, SIDE, SIDE), np.float32), "grad").layer == "relu_4_out"
    demo = onnxviz.load("models/demo.onnx")  # tf2onnx: ... MaxPool → GlobalAveragePool → Squeeze → MatMul
    assert default_layer(demo) == "block3_pool_1/MaxPool2d:0"
    style = onnxviz.load(style_net(tmp_path / "s.onnx"))  # no class output: the last conv layer's map
    assert default_layer(style) == style.layers[-1].tensor


def test_names_score_and_the_result(tmp_path, photos):
    labels = ["cat", "dog", "fox", "owl", "emu"]
    path, _ = classifier(tmp_path / "m.onnx", labels=labels)
    m = onnxviz.load(path)
    c = onnxviz.cam(m, photos, "grad", "c2")
    scores = logits_of(path, tensor_of(m, photos))
    assert list(c.target) == list(scores.argmax(1))  # the logit before the Softmax
    np.testing.assert_allclose(c.score, scores.max(1), rtol=1e-5)
    assert c.names == tuple(labels[t] for t in c.target) and c.layer_name == "c2"
    assert c.caption(1) == f"Grad-CAM of class '{labels[c.target[1]]}' (score {c.score[1]:.4g}) at c2, image 1"
    for field in (c.heatmap, c.raw, c.weights, c.score):
        assert field.dtype == np.float32
    assert c.target.dtype == np.int64 and c.heatmap.min() >= 0 and c.heatmap.max() <= 1
    own = tmp_path / "names.txt"
    own.write_text("\n".join(f"class {k}" for k in range(5)))
    assert onnxviz.cam(m, photos[0], "hires", "c2", 2, labels=own).names == ("class 2",)
    assert c.images.shape == (2, SIDE, SIDE, 3) and c.images.dtype == np.uint8  # the photos at the input size


def test_notebook_display(tmp_path, photos):
    import base64
    import io
    import re

    from onnxviz.render.overlay import cam_picture

    path, _ = classifier(tmp_path / "m.onnx")
    m = onnxviz.load(path)
    one = onnxviz.cam(m, photos[0], "eigen", "c2")
    assert one._repr_html_() is None
    with Image.open(io.BytesIO(one._repr_png_())) as img:
        assert np.array_equal(np.asarray(img.convert("RGB")), np.asarray(cam_picture(one, 0)))
    two = onnxviz.cam(m, photos, "grad", "c2")
    assert two._repr_png_() is None
    assert len(re.findall(r'<img src="data:image/png;base64,', two._repr_html_())) == 2
    shown = re.findall(r'<img src="data:image/png;base64,([^"]+)"', two._repr_html_())
    with Image.open(io.BytesIO(base64.b64decode(shown[1]))) as img:
        assert np.array_equal(np.asarray(img.convert("RGB")), np.asarray(cam_picture(two, 1)))


def test_overlay_blends_the_colour_map(photos):
    from onnxviz.render.colormaps import lut
    from onnxviz.render.overlay import overlay, overlay_image

    heat = np.linspace(0, 1, SIDE * SIDE, dtype=np.float32).reshape(SIDE, SIDE)
    photo = np.asarray(Image.fromarray(photos[0]).resize((SIDE, SIDE)))
    got = overlay(photo, heat, cmap="viridis", alpha=0.25)
    colours = lut("viridis")[(heat * 255 + 0.5).astype(np.uint8)]
    assert np.abs(got.astype(float) - (0.75 * photo + 0.25 * colours)).max() <= 1
    from onnxviz.render.text import TITLE_PX

    big = overlay_image(photos[0], heat, "t", at="photo", min_px=8)  # at the photo's own size, 24×20
    small = overlay_image(photos[0], heat, "t", at="input", min_px=8)  # at the heatmap's, 20×20
    assert (big.size[1], small.size[1]) == (TITLE_PX + 24, TITLE_PX + 20)
    with pytest.raises(OnnxvizError, match=r"^alpha must be between 0 and 1, not 2$"):
        overlay(photo, heat, alpha=2)


# ---------------------------------------------------------------- bad input

def test_a_model_without_class_output(tmp_path, photos):
    m = onnxviz.load(style_net(tmp_path / "s.onnx"))
    c = onnxviz.cam(m, photos, "eigen")  # EigenCAM needs no class
    assert list(c.target) == [-1, -1] and np.isnan(c.score).all() and c.names == ("", "")
    assert c.caption(0) == "EigenCAM at e2, image 0"
    for method in ("grad", "score", "ablation"):
        with pytest.raises(UnsupportedModelError) as e:
            onnxviz.cam(m, photos, method)
        title = {"grad": "Grad-CAM", "score": "ScoreCAM", "ablation": "AblationCAM"}[method]
        assert str(e.value) == (f"method '{method}' ({title}) explains a class score, and the model has no class "
                                "output (one score per class and image): 'e2_out' is 3×20×20 per image; "
                                "EigenCAM (method 'eigen') needs none")
    with pytest.raises(OnnxvizError) as e:
        onnxviz.cam(m, photos, "eigen", target=2)
    assert str(e.value) == ("target=2: EigenCAM explains no class (its map is the same for every class); "
                            "leave target out")


def test_bad_input_says_what_is_valid(tmp_path, photos):
    from onnxviz.budget import estimate
    from onnxviz.errors import format_bytes

    path, _ = classifier(tmp_path / "m.onnx")
    m = onnxviz.load(path)
    forward = format_bytes(estimate(m, ["fc_out"], (1, 3, SIDE, SIDE))["total"])  # the scores, before the gradients
    cases = [
        (dict(method="gradcam"), OnnxvizError, "unknown CAM method 'gradcam'; methods are: auto, eigen, score, "
                                               "ablation, grad, grad++, xgrad, layer, hires, guided-grad"),
        (dict(method="grad", target=5), OnnxvizError, "class 5 is out of range: the model scores 5 classes (0–4)"),
        (dict(method="grad", target=[1, 2, 3]), OnnxvizError,
         "target has 3 values for 2 images; give one class, or one per image"),
        (dict(method="grad", target=1.5), OnnxvizError, "a class is a whole number, not 1.5"),
        (dict(method="grad", layer="gap_out"), LayerError,
         "layer 'gap_out' is 6×1×1 per image: no height and width are left (global pooling or a flatten comes "
         "before it); give a layer with a spatial map, such as 'relu_3_out' (the default)"),
        (dict(method="grad", layer="flat_out"), LayerError,
         "layer 'flat_out' is 6 per image: no height and width are left (global pooling or a flatten comes "
         "before it); give a layer with a spatial map, such as 'relu_3_out' (the default)"),
        (dict(method="grad", layer="c9"), LayerError, "no layer or tensor 'c9'; layers are: c1, c2 (or give any "
                                                      "tensor name)"),
        (dict(method="grad", top_channels=4), OnnxvizError,
         "top_channels= does not apply to method 'grad' (Grad-CAM); method 'score' takes it"),
        (dict(method="ablation", sign_correction=True), OnnxvizError,
         "sign_correction= does not apply to method 'ablation' (AblationCAM); method 'eigen' takes it"),
        (dict(method="eigen", batch_size=8), OnnxvizError,
         "batch_size= does not apply to method 'eigen' (EigenCAM); methods 'score', 'ablation', 'grad', 'grad++', "
         "'xgrad', 'layer', 'hires', 'guided-grad' take it"),
        (dict(method="score", batch_size=0), OnnxvizError, "batch_size must be a whole number, 1 or more, not 0"),
        (dict(method="score", top_channels=0), OnnxvizError, "top_channels must be a whole number, 1 or more, not 0"),
        (dict(method="grad", max_bytes="1k"), ResourceError,
         f"one forward run would need {forward} (input 1×3×20×20); the budget is 1.0 KiB: raise it with "
         "max_bytes=, --max-memory or ONNXVIZ_MAX_BYTES"),
    ]
    for kw, kind, message in cases:
        with pytest.raises(kind) as e:
            onnxviz.cam(m, photos, **kw)
        assert str(e.value) == message, kw


def test_the_score_batch_is_halved_to_fit_the_budget(tmp_path, photos):
    from onnxviz.explain.base import fit_batch, need

    path, _ = classifier(tmp_path / "m.onnx")
    m = onnxviz.load(path)
    one = need(m, ["fc_out"], (1, 3, SIDE, SIDE))["total"]
    assert fit_batch("ScoreCAM", 32, lambda b: need(m, ["fc_out"], (b, 3, SIDE, SIDE)), 6 * one) in (4, 2)
    c = onnxviz.cam(m, photos, "score", "c2", max_bytes=8 * one)
    np.testing.assert_allclose(c.weights, onnxviz.cam(m, photos, "score", "c2").weights, rtol=1e-6)


def test_progress_counts_the_runs(tmp_path, photos):
    path, _ = classifier(tmp_path / "m.onnx", dead=True)
    m = onnxviz.load(path)
    seen = []
    onnxviz.cam(m, photos, "ablation", "c2", batch_size=4, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(4, 12), (6, 12), (10, 12), (12, 12)]  # 6 channels an image, in runs of 4 and 2
    seen.clear()
    onnxviz.cam(m, photos, "score", "c2", batch_size=4, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(4, 10), (8, 10), (10, 10)]  # the dead channel of each image is the zero input's, scored once


def test_no_budget_runs_unchecked(tmp_path, photos):
    path, _ = classifier(tmp_path / "m.onnx")
    m = onnxviz.load(path)
    for method in ("grad", "score", "ablation", "eigen"):
        np.testing.assert_array_equal(onnxviz.cam(m, photos, method, "c2", max_bytes="off").heatmap,
                                      onnxviz.cam(m, photos, method, "c2").heatmap)


def test_auto_is_grad_cam_else_ablation_cam(tmp_path, photos):
    """The default method: Grad-CAM; AblationCAM, said, where an op on the path (Sin) has no
    gradient rule; on a model without class output the error names 'auto' and EigenCAM."""
    from builders import no_gradient_classifier, save

    path, _ = classifier(tmp_path / "m.onnx")
    m = onnxviz.load(path)
    c, want = onnxviz.cam(m, photos), onnxviz.cam(m, photos, "grad")
    assert c.method == "grad" and np.array_equal(c.heatmap, want.heatmap)
    sin = onnxviz.load(save(no_gradient_classifier(SIDE), tmp_path / "sin.onnx"))
    x = np.random.default_rng(0).random((2, 3, 20, 20), np.float32)
    with pytest.warns(onnxviz.OnnxvizWarning) as caught:
        c = onnxviz.cam(sin, x, target=[1, 3])
    (w,) = caught
    assert str(w.message).startswith("AblationCAM instead of Grad-CAM (method 'auto'): Grad-CAM needs a gradient, "
                                     "and no gradient rule for Sin node ")
    want = onnxviz.cam(sin, x, "ablation", target=[1, 3])
    assert c.method == "ablation" and np.array_equal(c.heatmap, want.heatmap)
    style = onnxviz.load(style_net(tmp_path / "s.onnx"))
    with pytest.raises(onnxviz.UnsupportedModelError) as e:
        onnxviz.cam(style, np.zeros((1, 3, SIDE, SIDE), np.float32))
    assert str(e.value).startswith("method 'auto' (Grad-CAM, else AblationCAM) explains a class score, and the model "
                                   "has no class output")
    assert str(e.value).endswith("; EigenCAM (method 'eigen') needs none")
