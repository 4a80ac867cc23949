"""Odd models: float16, old IR, dynamic dims, auto_pad, dilation/stride/groups, 1-D and 3-D
convolutions, several inputs. Values are checked against numpy (``conv_ref``), against an
onnxruntime sub-model (``reference``) or against a float32 twin of a float16 model."""

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import onnxviz
from builders import OPSET, Net, conv_ref, relu, save, vgg_like
from conftest import assert_close, reference
from onnxviz import preprocess, render
from onnxviz.cli import main


def _img(h=16, w=16, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def _nchw(img, scale=1 / 255):
    return (img.astype(np.float32) * scale).transpose(2, 0, 1)[None]


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _model(nodes, inputs, inits, opset=OPSET):
    outs = [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)]
    g = helper.make_graph(nodes, "g", inputs, outs, initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _titles(monkeypatch):
    """Record the titles render draws (the title is text in the picture, not in the array)."""
    seen = []
    original = render.text.titled

    def titled(body, title, *a, **kw):
        seen.append(title)
        return original(body, title, *a, **kw)

    for module in (render.mosaic, render.filters):  # every module that draws a title
        monkeypatch.setattr(module, "titled", titled)
    return seen


def _levels(x, axes=None):
    """What render draws for ``x``: min–max over ``axes`` → 0..255 (grey colour map = identity)."""
    x = x.astype(np.float32)
    lo, hi = x.min(axis=axes, keepdims=True), x.max(axis=axes, keepdims=True)
    return ((x - lo) / (hi - lo) * 255 + 0.5).astype(np.uint8)


# ------------------------------------------------------------------ float16

def _fp16_models(tmp_path, keep_io_types):
    from onnxconverter_common import float16

    net, model = vgg_like(metadata={"onnxviz.preprocess": "unit"})
    p32 = save(model, tmp_path / "m32.onnx")
    m16 = float16.convert_float_to_float16(model, keep_io_types=keep_io_types)
    p16 = save(m16, tmp_path / "m16.onnx")
    # the float32 twin: the same graph with the float16-rounded weights, widened
    twin = onnx.ModelProto()
    twin.CopyFrom(model)
    for t in twin.graph.initializer:
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16).astype(np.float32), t.name))
    return net, m16, p16, p32, save(twin, tmp_path / "twin.onnx")


@pytest.mark.parametrize("keep_io_types", [False, True], ids=["fp16-input", "fp32-io"])
def test_float16_model_filters_and_maps_are_float32(tmp_path, keep_io_types):
    net, m16, p16, p32, ptwin = _fp16_models(tmp_path, keep_io_types)
    m, m32 = onnxviz.load(p16), onnxviz.load(p32)
    assert m.input.elem_type == (TensorProto.FLOAT if keep_io_types else TensorProto.FLOAT16)
    assert [(l.name, l.filter_shape, l.output_shape) for l in m.layers] == \
        [(l.name, l.filter_shape, l.output_shape) for l in m32.layers]
    inits = {t.name: numpy_helper.to_array(t) for t in m16.graph.initializer}
    for layer in m.layers:
        w16 = inits[f"{layer.name}.weight"]
        assert w16.dtype == np.float16
        f = m.filters(layer)
        assert f.dtype == np.float32
        np.testing.assert_array_equal(f, w16.astype(np.float32))  # exactly the stored values
        np.testing.assert_allclose(f, net.weights[layer.name][0], rtol=1e-3, atol=1e-4)
    img = _img()
    fm, fm32 = m.feature_maps(img), m32.feature_maps(img)
    fmtwin = onnxviz.load(ptwin).feature_maps(_nchw(img).astype(np.float16).astype(np.float32)
                                              if not keep_io_types else _nchw(img))
    for layer in m.layers:
        assert fm[layer.name].dtype == np.float32 and fm[layer.name].shape == fm32[layer.name].shape
        # measured (5 seeds): ≤ 9.2e-4 of the largest value against the float32 model,
        # ≤ 3.9e-4 against the float32 twin (float16 rounding of the activations only)
        assert_close(fm[layer.name], fm32[layer.name], 2e-3)
        assert_close(fm[layer.name], fmtwin[layer.name], 1e-3)
    # a ready float32 tensor is cast to the input's dtype and gives the same maps
    same = m.feature_maps(preprocess.to_tensor(img, size=(16, 16), preset="unit"))
    for name in fm:
        np.testing.assert_array_equal(same[name], fm[name])


def test_mixed_float16_weights_behind_cast(tmp_path):
    """float16 initializers, Cast to float, float32 convs: filters and maps as the float32 twin."""
    r = np.random.default_rng(3)
    net = Net((1, 3, 16, 16))
    ws = {}
    for name, cin, cout in [("c1", 3, 4), ("c2", 4, 5)]:
        w16 = (r.standard_normal((cout, cin, 3, 3)) * 0.3).astype(np.float16)
        b16 = (r.standard_normal(cout) * 0.1).astype(np.float16)
        w = net.node("Cast", [net.init(f"{name}.w16", w16)], name=f"{name}_wcast", to=TensorProto.FLOAT)
        b = net.node("Cast", [net.init(f"{name}.b16", b16)], name=f"{name}_bcast", to=TensorProto.FLOAT)
        net.cur = net.node("Conv", [net.cur, w, b], name=name, pads=[1, 1, 1, 1])
        net.act()
        ws[name] = (w16, b16)
    path = save(net.model(metadata={"onnxviz.preprocess": "unit"}), tmp_path / "mixed.onnx")
    m = onnxviz.load(path)
    assert [(l.name, l.filter_shape, l.output_shape) for l in m.layers] == \
        [("c1", (4, 3, 3, 3), (4, 16, 16)), ("c2", (5, 4, 3, 3), (5, 16, 16))]
    img = _img()
    fm = m.feature_maps(img)
    a = _nchw(img)
    for name, (w16, b16) in ws.items():
        f = m.filters(name)
        assert f.dtype == np.float32
        np.testing.assert_array_equal(f, w16.astype(np.float32))
        a = relu(conv_ref(a, w16.astype(np.float32), b16.astype(np.float32), pad=1))
        assert fm[name].dtype == np.float32
        assert_close(fm[name], a, 1e-5)


# ------------------------------------------------------------------ old IR

def _old_ir(tmp_path):
    net, model = vgg_like(metadata={"onnxviz.preprocess": "unit"})
    model.ir_version = 3
    model.opset_import[0].version = 9
    for t in model.graph.initializer:
        model.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return net, save(model, tmp_path / "old.onnx")


def test_old_ir_initializers_listed_as_inputs(tmp_path, image, capsys):
    net, path = _old_ir(tmp_path)
    m = onnxviz.load(path)
    assert m.proto.ir_version == 3 and len(m.proto.graph.input) == 7
    assert [(l.name, l.filter_shape, l.output_shape) for l in m.layers] == [
        ("b1c1", (4, 3, 3, 3), (4, 16, 16)), ("b1c2", (4, 4, 3, 3), (4, 16, 16)), ("b2c1", (6, 4, 3, 3), (6, 8, 8))]
    assert m.input.name == "input"
    for name in ("b1c1", "b1c2", "b2c1"):
        np.testing.assert_array_equal(m.filters(name), net.weights[name][0])
    img = _img()
    fm = m.feature_maps(img)
    ref = reference(path, [l.tensor for l in m.layers], _nchw(img))
    for layer in m.layers:
        assert_close(fm[layer.name], ref[layer.tensor])
    a1 = relu(conv_ref(_nchw(img), *net.weights["b1c1"], pad=1))
    assert_close(fm["b1c1"], a1, 1e-5)
    assert_close(fm["b1c2"], relu(conv_ref(a1, *net.weights["b1c2"], pad=1)), 1e-5)
    # the command line, in-process
    out = tmp_path / "fm.png"
    code, stdout, err = run(["features", path, image[0], "--layer", "b2c1", "-o", out], capsys)
    assert (code, err, stdout) == (0, "", f"wrote {out}  (b2c1: 6×8×8)\n")
    code, stdout, _ = run(["filters", path, "-o", tmp_path / "f.png"], capsys)
    assert (code, stdout) == (0, f"wrote {tmp_path / 'f.png'}  (b1c1: filters 4×3×3×3)\n")
    code, stdout, _ = run(["summary", path], capsys)
    assert code == 0 and stdout.splitlines()[1].startswith("input   input  NCHW [1, 3, 16, 16]")
    # the PNG shows the maps of the image the CLI decoded
    x = preprocess.to_tensor(str(image[0]), size=(16, 16), preset="unit")
    want = render.feature_map_image(m.feature_maps(x, "b2c1")["b2c1"], "b2c1")
    np.testing.assert_array_equal(np.asarray(Image.open(out).convert("RGB")), np.asarray(want))


# ------------------------------------------------------------------ dynamic dims, ready tensors

def test_dynamic_batch_and_spatial_dims_against_numpy(tmp_path):
    net = Net(("N", 3, "H", "W"))
    net.conv(3, 4, name="c1"); net.act()
    net.conv(4, 5, name="c2", stride=2); net.act()
    m = onnxviz.load(save(net.model(), tmp_path / "dyn.onnx"))
    imgs = [_img(30, 40, 1), _img(12, 12, 2), _img(20, 20, 3)]
    fm = m.feature_maps(imgs, preprocess="unit", size=(12, 20))
    x = np.concatenate([preprocess.to_tensor(i, size=(12, 20), preset="unit") for i in imgs])
    a1 = relu(conv_ref(x, *net.weights["c1"], pad=1))
    a2 = relu(conv_ref(a1, *net.weights["c2"], pad=1, stride=2))
    assert fm["c1"].shape == (3, 4, 12, 20) and fm["c2"].shape == (3, 5, 6, 10)
    assert_close(fm["c1"], a1, 1e-5)
    assert_close(fm["c2"], a2, 1e-5)
    # the same batch as a ready (N, C, H, W) tensor, at another size: fed as is
    t = np.random.default_rng(4).standard_normal((2, 3, 9, 13)).astype(np.float64)
    ft = m.feature_maps(t)
    a1 = relu(conv_ref(t.astype(np.float32), *net.weights["c1"], pad=1))
    assert ft["c1"].shape == (2, 4, 9, 13) and ft["c1"].dtype == np.float32
    assert_close(ft["c1"], a1, 1e-5)
    assert_close(ft["c2"], relu(conv_ref(a1, *net.weights["c2"], pad=1, stride=2)), 1e-5)


def test_ready_tensor_errors(vgg):
    m = onnxviz.load(vgg[1])
    with pytest.raises(onnxviz.ImageError) as e:
        m.feature_maps(np.zeros((1, 16, 16, 3), np.float32))
    assert str(e.value) == (
        "the input array for model input 'input' has shape (1, 16, 16, 3), which does not fit the input's "
        "shape [1, 3, 16, 16]: axis 1 must be 3 (a 4-D array is fed as the input tensor itself; give a batch "
        "of images as a list of H×W×C arrays)")
    with pytest.raises(onnxviz.ImageError) as e:
        m.feature_maps(np.zeros((1, 3, 16, 16)), preprocess="unit")
    assert str(e.value) == ("an input array of shape (1, 3, 16, 16) is fed to 'input' as is; preprocess= and "
                            "size= apply to images only (drop them)")
    with pytest.raises(onnxviz.ImageError, match=r"the input array for model input 'input' has NaN or infinite"):
        m.feature_maps(np.full((1, 3, 16, 16), np.nan))
    with pytest.raises(onnxviz.ImageError, match=r"the input array for model input 'input' is dtype <U1; give"):
        m.feature_maps(np.full((1, 3, 16, 16), "a"))
    # a fixed batch of 1 runs a batch of ready tensors in chunks
    net = vgg[0]
    t = np.random.default_rng(0).random((3, 3, 16, 16)).astype(np.float32)
    fm = m.feature_maps(t, "b1c1")
    assert_close(fm["b1c1"], relu(conv_ref(t, *net.weights["b1c1"], pad=1)), 1e-5)


# ------------------------------------------------------------------ auto_pad, dilation, stride, groups

def _same_pads(size, k, s):
    out = math.ceil(size / s)
    return max((out - 1) * s + k - size, 0)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_auto_pad(tmp_path, auto_pad, capsys):
    h, w, k, s = 15, 16, 4, 2
    r = np.random.default_rng(5)
    wt = (r.standard_normal((5, 3, k, k)) * 0.3).astype(np.float32)
    b = (r.standard_normal(5) * 0.1).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="c", auto_pad=auto_pad, strides=[s, s],
                              kernel_shape=[k, k]),
             helper.make_node("Relu", ["c"], ["y"], name="r")]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, h, w])],
                   [numpy_helper.from_array(wt, "w"), numpy_helper.from_array(b, "b")])
    path = save(model, tmp_path / "ap.onnx")
    m = onnxviz.load(path)
    x = np.random.default_rng(6).standard_normal((1, 3, h, w)).astype(np.float32)
    if auto_pad == "VALID":
        padded = x
    else:
        th, tw = _same_pads(h, k, s), _same_pads(w, k, s)
        first = (lambda t: t // 2) if auto_pad == "SAME_UPPER" else (lambda t: t - t // 2)  # extra at the end / start
        padded = np.pad(x, ((0, 0), (0, 0), (first(th), th - first(th)), (first(tw), tw - first(tw))))
    want = relu(conv_ref(padded, wt, b, stride=s))
    expected_shape = {"VALID": (5, 6, 7)}.get(auto_pad, (5, 8, 8))
    assert want.shape[1:] == expected_shape and m.layers[0].output_shape == expected_shape
    fm = m.feature_maps(x)
    assert_close(fm["c"], want, 1e-5)
    code, out, _ = run(["summary", path], capsys)
    assert code == 0 and out.splitlines()[3].split() == ["0", "c", "Conv", "5×3×4×4", "1", "2,2",
                                                         "×".join(map(str, expected_shape)), "4×4", "Relu"]


def test_dilated_strided_and_grouped_convs(tmp_path):
    net = Net((1, 3, 23, 21), seed=2)
    net.conv(3, 4, name="dil", dilation=2, pad=2); net.act()
    net.conv(4, 6, name="grp", group=2, stride=2, pad=1); net.act()
    net.conv(6, 6, name="dw", group=6, stride=3, dilation=2, pad=0); net.act("LeakyRelu", alpha=0.1)
    path = save(net.model(), tmp_path / "odd.onnx")
    m = onnxviz.load(path)
    rows = [(l.name, l.filter_shape, l.group, l.strides, l.dilations, l.output_shape) for l in m.layers]
    assert rows == [("dil", (4, 3, 3, 3), 1, (1, 1), (2, 2), (4, 23, 21)),
                    ("grp", (6, 2, 3, 3), 2, (2, 2), (1, 1), (6, 12, 11)),
                    ("dw", (6, 1, 3, 3), 6, (3, 3), (2, 2), (6, 3, 3))]
    x = np.random.default_rng(1).standard_normal((1, 3, 23, 21)).astype(np.float32)
    fm = m.feature_maps(x)
    a1 = relu(conv_ref(x, *net.weights["dil"], pad=2, dilation=2))
    a2 = relu(conv_ref(a1, *net.weights["grp"], stride=2, pad=1, group=2))
    z3 = conv_ref(a2, *net.weights["dw"], stride=3, dilation=2, group=6)
    a3 = np.where(z3 > 0, z3, 0.1 * z3)
    for name, want in [("dil", a1), ("grp", a2), ("dw", a3)]:
        assert fm[name].shape == (1,) + m.layer(name).output_shape
        assert_close(fm[name], want, 1e-5)
        np.testing.assert_array_equal(m.filters(name), net.weights[name][0])


# ------------------------------------------------------------------ 1-D convolutions

def _conv1d_ref(x, w, b, stride=1, pad=0, dilation=1):
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad)))
    return conv_ref(x[:, :, None], w[:, :, None], b, stride=stride, dilation=dilation)[:, :, 0]


def _conv1d_model(tmp_path):
    r = np.random.default_rng(8)
    w1, b1 = r.standard_normal((4, 2, 5)).astype(np.float32), r.standard_normal(4).astype(np.float32)
    w2, b2 = r.standard_normal((3, 4, 3)).astype(np.float32), r.standard_normal(3).astype(np.float32)
    nodes = [helper.make_node("Conv", ["signal", "c1.weight", "c1.bias"], ["c1_out"], name="c1", pads=[2, 2]),
             helper.make_node("Relu", ["c1_out"], ["r1"], name="r1"),
             helper.make_node("Conv", ["r1", "c2.weight", "c2.bias"], ["c2_out"], name="c2", pads=[2, 2],
                              strides=[2], dilations=[2]),
             helper.make_node("Relu", ["c2_out"], ["r2"], name="r2")]
    inits = [numpy_helper.from_array(a, n) for a, n in [(w1, "c1.weight"), (b1, "c1.bias"),
                                                        (w2, "c2.weight"), (b2, "c2.bias")]]
    model = _model(nodes, [helper.make_tensor_value_info("signal", TensorProto.FLOAT, ["N", 2, 30])], inits)
    return (w1, b1, w2, b2), save(model, tmp_path / "c1d.onnx")


def test_conv1d_layers_filters_and_maps(tmp_path, image):
    (w1, b1, w2, b2), path = _conv1d_model(tmp_path)
    m = onnxviz.load(path)
    assert [(l.name, l.filter_shape, l.output_shape, l.strides, l.dilations) for l in m.layers] == [
        ("c1", (4, 2, 5), (4, 30), (), ()), ("c2", (3, 4, 3), (3, 15), (2,), (2,))]
    assert m.summary_text().splitlines()[1] == \
        "input   signal  ['N', 2, 30]  takes no image: feed an array of this shape"
    np.testing.assert_array_equal(m.filters("c1"), w1)
    x = np.random.default_rng(9).standard_normal((2, 2, 30)).astype(np.float32)
    fm = m.feature_maps(x)
    a1 = relu(_conv1d_ref(x, w1, b1, pad=2))
    a2 = relu(_conv1d_ref(a1, w2, b2, stride=2, pad=2, dilation=2))
    assert fm["c1"].shape == (2, 4, 30) and fm["c2"].shape == (2, 3, 15)
    assert_close(fm["c1"], a1, 1e-5)
    assert_close(fm["c2"], a2, 1e-5)
    assert_close(fm["c2"], reference(path, ["r2"], x)["r2"])
    with pytest.raises(onnxviz.ImageError) as e:
        m.feature_maps(image[0])
    assert str(e.value) == ("the model input 'signal' has shape ['N', 2, 30] (rank 3) and cannot take an image; "
                            "pass a numpy array of that shape instead (a .npy file on the command line)")
    with pytest.raises(onnxviz.ImageError) as e:
        m.feature_maps(np.zeros((1, 2, 31), np.float32))
    assert str(e.value) == ("the input array for model input 'signal' has shape (1, 2, 31), which does not fit "
                            "the input's shape ['N', 2, 30]: axis 2 must be 30")


def test_conv1d_pictures_come_from_the_arrays(tmp_path, monkeypatch):
    (w1, _, _, _), path = _conv1d_model(tmp_path)
    m = onnxviz.load(path)
    titles = _titles(monkeypatch)
    # filters: rows = filters, columns = input channels, each kernel a 1×k strip
    arr = np.asarray(render.filter_image(m, "c1"))
    k = 5
    f = math.ceil(render.mosaic.FILTER_CELL_PX / k)            # 8 px per weight along the strip
    th, tw = f * math.ceil(render.mosaic.STRIP_PX / f), k * f  # 16 × 40
    levels = _levels(w1)                                 # one scale for the layer
    top, left = render.text.TITLE_PX + 18, 34
    for o in range(4):
        for i in range(2):
            y0, x0 = top + o * (th + 3), left + i * (tw + 3)
            tile = arr[y0:y0 + th, x0:x0 + tw, 0].astype(int)
            want = np.repeat(levels[o, i], f)[None].repeat(th, axis=0)
            assert np.abs(tile - want).max() <= 1, (o, i)
    assert titles[-1] == "c1: first 4 of 4 filters (rows) × 2 of 2 input channels, 1-D length 5, one scale"
    # maps: one strip per channel, top to bottom, each on its own scale
    x = np.random.default_rng(2).standard_normal((1, 2, 30)).astype(np.float32)
    maps = m.feature_maps(x, "c1")["c1"]
    arr = np.asarray(render.feature_map_image(maps, "c1", spatial=1, labels=False, cmap="gray"))
    wide = math.ceil(render.mosaic._STRIP_MIN_W_PX / 30)
    levels = _levels(maps[0], axes=1)
    s = render.mosaic.STRIP_PX
    assert arr.shape[0] == render.text.TITLE_PX + 4 * (s + 1) - 1
    for c in range(4):
        y0 = render.text.TITLE_PX + c * (s + 1)
        strip = arr[y0:y0 + s, :30 * wide, 0].astype(int)
        assert np.abs(strip - np.repeat(levels[c], wide)[None]).max() <= 1, c
        assert (arr[y0 + s, :30 * wide] == 255).all() if c < 3 else True  # a white gap between rows
    assert titles[-1] == "c1: 4×30 (1-D), first 4 of 4 maps as rows, each map on its own scale"
    # one image of a batch
    maps2 = np.concatenate([np.zeros_like(maps), maps])
    np.testing.assert_array_equal(
        np.asarray(render.feature_map_image(maps2, "c1", spatial=1, image=1, labels=False, cmap="gray")), arr)


def test_conv1d_command_line(tmp_path, image, capsys):
    (w1, b1, _, _), path = _conv1d_model(tmp_path)
    x = np.random.default_rng(3).standard_normal((1, 2, 30)).astype(np.float32)
    npy = tmp_path / "x.npy"
    np.save(npy, x)
    out = tmp_path / "o.png"
    code, stdout, err = run(["features", path, npy, "--layer", "c1", "-o", out], capsys)
    assert (code, err, stdout) == (0, "", f"wrote {out}  (c1: 4×30)\n")
    want = render.feature_map_image(relu(_conv1d_ref(x, w1, b1, pad=2)), "c1", spatial=1)
    got = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert got.shape == np.asarray(want).shape
    assert np.abs(got - np.asarray(want)).max() <= 1  # the same picture, up to float rounding
    code, stdout, err = run(["filters", path, "--layer", "c2", "-o", tmp_path / "f.png"], capsys)
    assert (code, err, stdout) == (0, "", f"wrote {tmp_path / 'f.png'}  (c2: filters 3×4×3)\n")
    # an image for a rank-3 input; a .npy of another rank; --preprocess with a .npy
    code, stdout, err = run(["features", path, image[0], "-o", out], capsys)
    assert (code, stdout) == (1, "") and err == (
        "error: the model input 'signal' has shape ['N', 2, 30] (rank 3) and cannot take an image; pass a numpy "
        "array of that shape instead (a .npy file on the command line)\n")
    np.save(tmp_path / "flat.npy", x[0])
    code, _, err = run(["features", path, tmp_path / "flat.npy", "-o", out], capsys)
    assert (code, err) == (1, f"error: the array '{tmp_path / 'flat.npy'}' has shape (2, 30); the model input "
                              "'signal' has shape ['N', 2, 30]: give an array of that rank\n")
    code, _, err = run(["features", path, npy, "--preprocess", "unit", "-o", out], capsys)
    assert (code, err) == (1, f"error: --preprocess and --size apply to images; the array '{npy}' is fed as is "
                              "(drop them)\n")


def test_npy_file_errors(vgg, tmp_path, capsys):
    out = tmp_path / "o.png"
    pickled = tmp_path / "obj.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    archive = tmp_path / "two.npy"
    with open(archive, "wb") as fh:
        np.savez(fh, a=np.zeros(3))
    text = tmp_path / "text.npy"
    text.write_text("hello")
    cases = [
        (pickled, f"error: '{pickled}' holds Python objects (a pickle); onnxviz reads plain numeric .npy arrays only"),
        (archive, f"error: '{archive}' is a .npz archive; give a .npy file holding one array"),
        (tmp_path / "nope.npy", f"error: array file '{tmp_path / 'nope.npy'}' does not exist"),
    ]
    for path, line in cases:
        code, stdout, err = run(["features", vgg[1], path, "-o", out], capsys)
        assert (code, stdout, err) == (1, "", line + "\n"), path
    cut = tmp_path / "cut.npy"
    np.save(cut, np.zeros((1, 3, 16, 16), np.float32))
    cut.write_bytes(cut.read_bytes()[:200])
    cases = [
        (text, f"error: '{text}' is not a .npy file (it does not start with numpy's .npy header)"),
        (cut, f"error: '{cut}' is truncated: its header says shape (1, 3, 16, 16) of float32 (3,072 bytes), "
              "the file holds 72"),
    ]
    for path, line in cases:
        code, stdout, err = run(["features", vgg[1], path, "-o", out], capsys)
        assert code == 1 and stdout == "" and err.startswith(line) and err.count("\n") == 1, err
    assert not out.exists()


# ------------------------------------------------------------------ 3-D convolutions

def _conv3d_ref(x, w, b, pad):
    x = np.pad(x, ((0, 0), (0, 0)) + ((pad, pad),) * 3)
    n, _, d, h, wd = x.shape
    o, _, kd, kh, kw = w.shape
    od, oh, ow = d - kd + 1, h - kh + 1, wd - kw + 1
    out = np.zeros((n, o, od, oh, ow))
    for i in range(kd):
        for j in range(kh):
            for k in range(kw):
                out += np.einsum("ncdhw,oc->nodhw", x[:, :, i:i + od, j:j + oh, k:k + ow], w[:, :, i, j, k])
    return (out + b[None, :, None, None, None]).astype(np.float32)


def _conv3d_model(tmp_path):
    r = np.random.default_rng(10)
    w, b = r.standard_normal((4, 2, 3, 3, 3)).astype(np.float32), r.standard_normal(4).astype(np.float32)
    nodes = [helper.make_node("Conv", ["vol", "c.weight", "c.bias"], ["c_out"], name="c", pads=[1] * 6),
             helper.make_node("Relu", ["c_out"], ["y"], name="r")]
    model = _model(nodes, [helper.make_tensor_value_info("vol", TensorProto.FLOAT, [1, 2, 5, 8, 8])],
                   [numpy_helper.from_array(w, "c.weight"), numpy_helper.from_array(b, "c.bias")])
    return (w, b), save(model, tmp_path / "c3d.onnx")


def test_conv3d_layers_filters_maps_and_pictures(tmp_path, monkeypatch, capsys):
    (w, b), path = _conv3d_model(tmp_path)
    m = onnxviz.load(path)
    assert [(l.name, l.filter_shape, l.output_shape) for l in m.layers] == [("c", (4, 2, 3, 3, 3), (4, 5, 8, 8))]
    np.testing.assert_array_equal(m.filters("c"), w)
    x = np.random.default_rng(11).standard_normal((1, 2, 5, 8, 8)).astype(np.float32)
    maps = m.feature_maps(x)["c"]
    assert maps.shape == (1, 4, 5, 8, 8)
    assert_close(maps, relu(_conv3d_ref(x, w, b, 1)), 1e-5)
    assert_close(maps, reference(path, ["y"], x)["y"])
    titles = _titles(monkeypatch)
    # filters: the middle depth slice (1 of 0–2) of every kernel, on the whole layer's scale
    levels = _levels(w)
    for depth, d in [(None, 1), (0, 0), (-1, 2)]:
        arr = np.asarray(render.filter_image(m, "c", depth=depth))
        f = render.mosaic.FILTER_CELL_PX // 3  # 12 px per weight
        top, left = render.text.TITLE_PX + 18, 34
        for o in range(4):
            for i in range(2):
                y0, x0 = top + o * (3 * f + 3), left + i * (3 * f + 3)
                tile = arr[y0:y0 + 3 * f:f, x0:x0 + 3 * f:f, 0].astype(int)
                assert np.abs(tile - levels[o, i, d]).max() <= 1, (depth, o, i)
    assert titles[-3:] == [
        "c: first 4 of 4 filters (rows) × 2 of 2 input channels, 3×3×3, depth slice 1 of 0–2 (the middle), one scale",
        "c: first 4 of 4 filters (rows) × 2 of 2 input channels, 3×3×3, depth slice 0 of 0–2, one scale",
        "c: first 4 of 4 filters (rows) × 2 of 2 input channels, 3×3×3, depth slice 2 of 0–2, one scale"]
    # maps: the middle depth slice (2 of 0–4), each map on its own scale, 2×2 tiles of 48 px
    arr = np.asarray(render.feature_map_image(maps, "c", labels=False, cmap="gray"))
    levels = _levels(maps[0, :, 2], axes=(1, 2))
    t = render.mosaic._MIN_TILE_PX
    for c in range(4):
        r, q = divmod(c, 2)
        y0, x0 = render.text.TITLE_PX + r * (t + 2), q * (t + 2)
        tile = arr[y0:y0 + t:6, x0:x0 + t:6, 0].astype(int)
        assert np.abs(tile - levels[c]).max() <= 1, c
    assert titles[-1] == "c: 4×5×8×8, depth slice 2 of 0–4 (the middle), first 4 of 4 maps, each map on its own scale"
    with pytest.raises(onnxviz.OnnxvizError) as e:
        render.feature_map_image(maps, "c", depth=5)
    assert str(e.value) == "depth 5 is out of range for these feature maps; it has 5 depth slices (0 to 4)"
    with pytest.raises(onnxviz.OnnxvizError) as e:
        render.filter_image(m, "c", depth=3)
    assert str(e.value) == "depth 3 is out of range for layer 'c'; it has 3 depth slices (0 to 2)"
    with pytest.raises(onnxviz.OnnxvizError) as e:
        render.feature_map_image(maps[:, :, 0], "c", depth=1)
    assert str(e.value) == "depth= is for 3-D feature maps; these are 2-D (4, 8, 8)"
    # the command line: a .npy volume
    npy = tmp_path / "vol.npy"
    np.save(npy, x)
    out = tmp_path / "o.png"
    code, stdout, err = run(["features", path, npy, "-o", out], capsys)
    assert (code, err, stdout) == (0, "", f"wrote {out}  (c: 4×5×8×8)\n")
    code, stdout, err = run(["filters", path, "-o", tmp_path / "f.png"], capsys)
    assert (code, err, stdout) == (0, "", f"wrote {tmp_path / 'f.png'}  (c: filters 4×2×3×3×3)\n")
    code, _, err = run(["features", path, tmp_path / "f.png", "-o", out], capsys)
    assert (code, err) == (1, "error: the model input 'vol' has shape [1, 2, 5, 8, 8] (rank 5) and cannot take "
                              "an image; pass a numpy array of that shape instead (a .npy file on the command line)\n")


# ------------------------------------------------------------------ several inputs

def _two_inputs(tmp_path):
    """image → c1 → Relu → × gain (a second input) → c2 → Relu."""
    net = Net((1, 3, 16, 16))
    net.conv(3, 4, name="c1"); net.act()
    net.input2 = helper.make_tensor_value_info("gain", TensorProto.FLOAT, [1, 4, 1, 1])
    net.cur = net.node("Mul", [net.cur, "gain"], name="scale")
    net.conv(4, 5, name="c2"); net.act()
    model = net.model(metadata={"onnxviz.preprocess": "unit"})
    model.graph.input.append(net.input2)
    return net, save(model, tmp_path / "two.onnx")


def test_several_inputs_need_feeds(tmp_path):
    net, path = _two_inputs(tmp_path)
    m = onnxviz.load(path)
    img = _img()
    a1 = relu(conv_ref(_nchw(img), *net.weights["c1"], pad=1))
    assert_close(m.feature_maps(img, "c1")["c1"], a1, 1e-5)  # c1 needs the image only
    with pytest.raises(onnxviz.UnsupportedModelError) as e:
        m.feature_maps(img, ["c1", "c2"])
    assert str(e.value) == ("these layers also need the model input(s) 'gain' besides 'input'; give them with "
                            "feeds={name: array} (on the command line, --feed NAME=FILE.npy)")
    gain = np.array([0.5, 2.0, -1.0, 3.0], np.float64).reshape(1, 4, 1, 1)
    fm = m.feature_maps(img, ["c1", "c2"], feeds={"gain": gain})
    assert_close(fm["c1"], a1, 1e-5)
    assert_close(fm["c2"], relu(conv_ref(a1 * gain.astype(np.float32), *net.weights["c2"], pad=1)), 1e-5)
    # a batch of images with the same gain (fixed batch 1: fed with every chunk)
    fm = m.feature_maps([img, _img(seed=1)], "c2", feeds={"gain": gain})
    a1b = relu(conv_ref(_nchw(_img(seed=1)), *net.weights["c1"], pad=1))
    assert_close(fm["c2"][1], relu(conv_ref(a1b * gain.astype(np.float32), *net.weights["c2"], pad=1))[0], 1e-5)
    for feeds, message in [
        ({"gian": gain}, "feeds: the model has no input 'gian'; its inputs are: input, gain"),
        ({"input": gain}, "feeds: 'input' is the image input; pass it as the images argument (an image, or an "
                          "array of the input's shape), not in feeds"),
        ({"gain": np.ones((1, 4))}, "the feed for model input 'gain' has shape (1, 4); the input has shape "
                                    "[1, 4, 1, 1] (rank 4)"),
        ({"gain": np.ones((1, 3, 1, 1))}, "the feed for model input 'gain' has shape (1, 3, 1, 1), which does not "
                                          "fit the input's shape [1, 4, 1, 1]: axis 1 must be 4"),
        ([gain], "feeds must be a dict {input name: array}, not a list"),
    ]:
        with pytest.raises(onnxviz.ImageError) as e:
            m.feature_maps(img, "c2", feeds=feeds)
        assert str(e.value) == message


def test_several_inputs_command_line(tmp_path, image, capsys):
    net, path = _two_inputs(tmp_path)
    gain = np.array([0.5, 2.0, -1.0, 3.0], np.float32).reshape(1, 4, 1, 1)
    g = tmp_path / "gain.npy"
    np.save(g, gain)
    out = tmp_path / "o.png"
    code, stdout, err = run(["features", path, image[0], "--layer", "c2", "-o", out], capsys)
    assert (code, stdout) == (1, "") and err == (
        "error: these layers also need the model input(s) 'gain' besides 'input'; give them with "
        "feeds={name: array} (on the command line, --feed NAME=FILE.npy)\n")
    code, stdout, err = run(["features", path, image[0], "--layer", "c2", "--feed", f"gain={g}", "-o", out], capsys)
    assert (code, err, stdout) == (0, "", f"wrote {out}  (c2: 5×16×16)\n")
    x = preprocess.to_tensor(str(image[0]), size=(16, 16), preset="unit")
    a1 = relu(conv_ref(x, *net.weights["c1"], pad=1))
    want = render.feature_map_image(relu(conv_ref(a1 * gain, *net.weights["c2"], pad=1)), "c2")
    got = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert np.abs(got - np.asarray(want)).max() <= 1
    code, _, err = run(["features", path, image[0], "--feed", f"nope={g}", "-o", out], capsys)
    assert (code, err) == (1, "error: feeds: the model has no input 'nope'; its inputs are: input, gain\n")
    code, _, err = run(["features", path, image[0], "--feed", f"gain={g}", "--feed", f"gain={g}", "-o", out], capsys)
    assert (code, err) == (1, "error: --feed gain= is given twice; give each input once\n")
    code, _, err = run(["features", path, image[0], "--feed", "gain", "-o", out], capsys)
    assert code == 2 and "argument --feed: 'gain' is not NAME=FILE.npy" in err
