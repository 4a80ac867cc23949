"""filters(): weights wherever they hide, compared with the arrays the model was built from."""

import os

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxviz
from builders import Net, save


def _model_with_weight_chain(tmp_path, make_chain, name="m.onnx"):
    """A conv whose weight input is produced by ``make_chain(net) -> tensor name``."""
    net = Net((1, 3, 8, 8))
    w_name = make_chain(net)
    net.cur = net.node("Conv", ["input", w_name], name="c", pads=[1, 1, 1, 1])
    net.act()
    return onnxviz.load(save(net.model(), tmp_path / name))


W = np.random.default_rng(3).standard_normal((4, 3, 3, 3)).astype(np.float32)


def test_initializer(tmp_path):
    m = _model_with_weight_chain(tmp_path, lambda net: net.init("w", W))
    f = m.filters("c")
    assert f.dtype == np.float32 and f.shape == (4, 3, 3, 3)
    np.testing.assert_array_equal(f, W)


def test_constant_node_and_identity(tmp_path):
    def chain(net):
        c = net.node("Constant", [], name="const", value=numpy_helper.from_array(W, "v"))
        return net.node("Identity", [c], name="ident")
    np.testing.assert_array_equal(_model_with_weight_chain(tmp_path, chain).filters(0), W)


def test_cast_from_float16(tmp_path):
    w16 = W.astype(np.float16)
    m = _model_with_weight_chain(tmp_path, lambda net: net.node("Cast", [net.init("w16", w16)], name="cast",
                                                                 to=TensorProto.FLOAT))
    f = m.filters(0)
    assert f.dtype == np.float32
    np.testing.assert_array_equal(f, w16.astype(np.float32))


def test_dequantize_linear_per_channel(tmp_path):
    q = np.random.default_rng(1).integers(-127, 127, (4, 3, 3, 3)).astype(np.int8)
    scale = np.array([0.01, 0.02, 0.03, 0.04], np.float32)
    zp = np.array([0, 1, -2, 3], np.int8)
    m = _model_with_weight_chain(tmp_path, lambda net: net.node(
        "DequantizeLinear", [net.init("q", q), net.init("s", scale), net.init("z", zp)], name="dq", axis=0))
    expected = (q.astype(np.float32) - zp[:, None, None, None]) * scale[:, None, None, None]
    np.testing.assert_allclose(m.filters(0), expected, rtol=1e-6)


def test_transpose_and_reshape_of_a_constant(tmp_path):
    hwio = W.transpose(2, 3, 1, 0)  # how Keras stores a kernel
    def chain(net):
        t = net.node("Transpose", [net.init("hwio", hwio)], name="tr", perm=[3, 2, 0, 1])
        flat = net.node("Reshape", [t, net.init("s1", np.array([4, -1], np.int64))], name="r1")
        return net.node("Reshape", [flat, net.init("s2", np.array([0, 3, 3, 3], np.int64))], name="r2")
    np.testing.assert_array_equal(_model_with_weight_chain(tmp_path, chain).filters(0), W)


def test_external_data_reads_only_the_tensor_asked_for(tmp_path):
    net = Net((1, 3, 8, 8))
    net.conv(3, 8, name="a"); net.act()
    net.conv(8, 8, name="b"); net.act()
    path = save(net.model(), tmp_path / "ext.onnx", external=True)
    data = tmp_path / "ext.onnx.data"
    m = onnxviz.load(path)
    # Corrupt every byte of the data file except layer a's weights: a must still read right.
    info = {e.key: e.value for e in m._index.initializers["a.weight"].external_data}
    off, length = int(info["offset"]), int(info["length"])
    raw = bytearray(data.read_bytes())
    keep = raw[off:off + length]
    raw[:] = b"\xff" * len(raw)
    raw[off:off + length] = keep
    data.write_bytes(bytes(raw))
    np.testing.assert_array_equal(m.filters("a"), net.weights["a"][0])
    assert np.isnan(m.filters("b")).all()  # 0xffffffff is a NaN: b came from the file too


def test_external_data_missing_file_is_clear(tmp_path):
    net = Net((1, 3, 8, 8))
    net.conv(3, 8, name="a"); net.act()
    path = save(net.model(), tmp_path / "ext.onnx", external=True)
    os.remove(tmp_path / "ext.onnx.data")
    m = onnxviz.load(path)  # opening needs no weight bytes
    assert m.layers[0].filter_shape == (8, 3, 3, 3)
    with pytest.raises(onnxviz.ModelError) as e:
        m.filters("a")
    assert str(e.value).startswith("external data 'ext.onnx.data' of initializer 'a.weight' cannot be read")


def test_depthwise_conv_transpose_and_qlinearconv_shapes(tmp_path):
    net = Net((1, 4, 8, 8))
    net.conv(4, 4, name="dw", group=4); net.act()
    wt = np.random.default_rng(2).standard_normal((4, 2, 2, 2)).astype(np.float32)
    net.cur = net.node("ConvTranspose", [net.cur, net.init("wt", wt)], name="up", strides=[2, 2])
    m = onnxviz.load(save(net.model(), tmp_path / "m.onnx"))
    assert [(l.op, l.filter_shape, l.group) for l in m.layers] == [("Conv", (4, 1, 3, 3), 4),
                                                                    ("ConvTranspose", (4, 2, 2, 2), 1)]
    np.testing.assert_array_equal(m.filters("up"), wt)

    q = np.random.default_rng(4).integers(0, 255, (4, 3, 3, 3)).astype(np.uint8)
    scale = np.array([0.5, 0.25, 0.125, 1.0], np.float32)
    zp = np.array([128, 120, 130, 127], np.uint8)
    g = helper.make_graph(
        [helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], name="qc")],
        "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, None)],
        initializer=[numpy_helper.from_array(a, n) for a, n in [
            (np.float32(0.1), "xs"), (np.uint8(128), "xz"), (q, "w"), (scale, "ws"), (zp, "wz"),
            (np.float32(0.2), "ys"), (np.uint8(128), "yz")]])
    m = onnxviz.load(save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "q.onnx"))
    expected = (q.astype(np.float32) - zp[:, None, None, None]) * scale[:, None, None, None]
    np.testing.assert_allclose(m.filters("qc"), expected)
    assert m.layers[0].op == "QLinearConv" and m.layers[0].filter_shape == (4, 3, 3, 3)


def test_read_tensor_external_types_and_truncation(tmp_path):
    """External tensors: plain numeric types are read straight into an array, others via onnx."""
    from onnxviz.graph.weights import read_tensor

    r = np.random.default_rng(5)
    arrays = [r.standard_normal((3, 4)).astype(np.float32), r.standard_normal(5).astype(np.float16),
              r.standard_normal((2, 2)), r.integers(-128, 127, (4, 3), dtype=np.int8),
              r.integers(-2**40, 2**40, 3), r.random((2, 3)) > 0.5, np.zeros((0, 4), np.float32)]
    tensors, blob = [], b""
    for k, a in enumerate(arrays):
        t = numpy_helper.from_array(a, f"t{k}")
        raw, offset = t.raw_data, len(blob) + 3  # unaligned offsets on purpose
        blob += b"\0\0\0" + raw
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", "w.bin"), ("offset", str(offset)), ("length", str(len(raw)))):
            t.external_data.add(key=key, value=value)
        tensors.append(t)
    raw = np.array([0x3FC0, 0xC000], "<u2").tobytes()  # bfloat16 1.5, -2.0: not numpy, read via onnx
    bf16 = TensorProto(name="bf", data_type=TensorProto.BFLOAT16, dims=[2], data_location=TensorProto.EXTERNAL)
    for key, value in (("location", "w.bin"), ("offset", str(len(blob))), ("length", str(len(raw)))):
        bf16.external_data.add(key=key, value=value)
    blob += raw
    (tmp_path / "w.bin").write_bytes(blob)
    for a, t in zip(arrays, tensors):
        got = read_tensor(t, str(tmp_path))
        assert got.dtype == a.dtype and got.shape == a.shape and got.flags.writeable
        np.testing.assert_array_equal(got, a)
    np.testing.assert_array_equal(np.asarray(read_tensor(bf16, str(tmp_path)), np.float32), [1.5, -2.0])
    (tmp_path / "w.bin").write_bytes(blob[:len(blob) // 2])  # truncated
    with pytest.raises(onnxviz.ModelError, match="of initializer 't5' is truncated: needs 6 bytes"):
        read_tensor(tensors[5], str(tmp_path))
    with pytest.raises(onnxviz.ModelError, match="of initializer 'bf' is truncated"):
        read_tensor(bf16, str(tmp_path))


def test_a_scale_that_does_not_broadcast_is_a_model_error():
    """Found by a fuzz run: a (1, 4) scale against 4×3×3×3 filters was a bare ValueError."""
    from onnxviz.errors import ModelError
    from onnxviz.graph.weights import dequantize

    with pytest.raises(ModelError, match=r"a scale or zero point of shape \(1, 4\) does not fit a tensor of "
                                         r"shape \(4, 3, 3, 3\); DequantizeLinear takes a scalar or a 1-D"):
        dequantize(np.zeros((4, 3, 3, 3), np.int8), np.ones((1, 4), np.float32), None, 0)
    assert dequantize(np.full((2, 3), 4, np.int8), np.float32(0.5), np.int8(2)).tolist() == [[1.0] * 3] * 2
