"""Fuzzing: mutated small models through load → summary → filters → features → pictures.

Every outcome must be a correct result or an :class:`onnxviz.OnnxvizError`; any other
exception (or a wrong dtype / shape) fails. Four valid seed models (plain VGG-like; BN,
depthwise, ConvTranspose and a weight large enough to stay on disk; fp16/Constant/DQ weight
chains behind an NHWC Transpose with dynamic dims; a QLinearConv between Quantize and
DequantizeLinear) are mutated at the protobuf level (a node
removed, a tensor renamed, an input dim, attribute, initializer dims or data type changed,
an initializer dropped, the opset or the onnxviz metadata changed) and at the byte level
(bits flipped, bytes inserted or deleted, the file truncated).

CI runs ``ONNXVIZ_FUZZ_EXAMPLES`` cases (default 500); the long run by hand:
``ONNXVIZ_FUZZ_EXAMPLES=5000 python -m pytest -q tests/test_fuzz.py``.
"""

import json
import os
import shutil
import tempfile
import warnings

import numpy as np
import onnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import onnxviz
from builders import Net, vgg_like
from onnxviz import render

EXAMPLES = int(os.environ.get("ONNXVIZ_FUZZ_EXAMPLES", "500"))
BUDGET = 64 * 2**20  # feature maps of a mutated model may ask for no more than this
IMAGE = (np.random.default_rng(5).random((16, 16, 3)) * 255).astype(np.uint8)


def _seeds() -> list[bytes]:
    _, plain = vgg_like(metadata={"onnxviz.preprocess": "unit"})

    net = Net((1, 3, 16, 16), seed=1)
    c = net.conv(3, 64, name="big", bias=False)  # 6912 bytes: read from the file, not inline
    ones, zeros = net.init("bn.s", np.ones(64, np.float32)), net.init("bn.b", np.zeros(64, np.float32))
    net.cur = net.node("BatchNormalization", [c, ones, zeros, zeros, ones], name="bn")
    net.act()
    net.conv(64, 64, name="dw", group=64); net.act("Clip")
    wt = np.random.default_rng(2).standard_normal((64, 4, 2, 2)).astype(np.float32)
    net.cur = net.node("ConvTranspose", [net.cur, net.init("wt", wt)], name="up", strides=[2, 2])
    mixed = net.model(metadata={"onnxviz.preprocess": "torch"})

    net = Net(("N", 16, 16, 3), name="image", seed=2)
    net.cur = net.node("Transpose", ["image"], name="to_nchw", perm=[0, 3, 1, 2])
    w = np.random.default_rng(3).standard_normal((4, 3, 3, 3)).astype(np.float32)
    half = net.node("Constant", [], name="w16", value=numpy_helper.from_array(w.astype(np.float16), "v"))
    cast = net.node("Cast", [half], name="cast", to=TensorProto.FLOAT)
    net.cur = net.node("Conv", [net.cur, cast], name="c16", pads=[1, 1, 1, 1])
    net.act("LeakyRelu", alpha=0.1)
    q = np.random.default_rng(4).integers(-127, 127, (6, 4, 3, 3)).astype(np.int8)
    dq = net.node("DequantizeLinear", [net.init("q", q), net.init("qs", np.full(6, 0.02, np.float32)),
                                       net.init("qz", np.zeros(6, np.int8))], name="dq", axis=0)
    net.cur = net.node("Conv", [net.cur, dq], name="cq", strides=[2, 2], kernel_shape=[3, 3])
    net.act()
    chains = net.model(metadata={"onnxviz.preprocess": "tf",
                                 "onnxviz.layer_names": json.dumps({"c16": "first", "cq": "second"})})
    q = np.random.default_rng(6).integers(0, 255, (4, 3, 3, 3)).astype(np.uint8)
    inits = [numpy_helper.from_array(a, n) for a, n in [
        (np.float32(0.02), "xs"), (np.uint8(128), "xz"), (q, "w"), (np.full(4, 0.01, np.float32), "ws"),
        (np.full(4, 128, np.uint8), "wz"), (np.float32(0.05), "ys"), (np.uint8(0), "yz")]]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="quant"),
             helper.make_node("QLinearConv", ["xq", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["yq"],
                              name="qconv", pads=[1, 1, 1, 1]),
             helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"], name="dequant")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    quantized = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(quantized, {"onnxviz.preprocess": "unit"})
    return [m.SerializeToString() for m in (plain, mixed, chains, quantized)]


SEEDS = _seeds()

NAMES = st.sampled_from(["", "x", "input", "b1c1", "b1c1.weight", "relu_1_out", "../../x", "a/b", "é"])
SMALL = st.integers(-2, 20)
ODD_INTS = st.one_of(SMALL, st.sampled_from([0, -1, 2**31, 2**62, -(2**63)]))
METADATA = st.one_of(
    st.tuples(st.just("onnxviz.layer_names"), st.sampled_from(
        ['{"b1c1": 5}', "[1, 2]", '{"b1c1": "../../x", "b1c2": "../../x"}', "{", '{"b1c1": ""}', "null"])),
    st.tuples(st.just("onnxviz.input_size"), st.sampled_from(["0,0", "1,1", "99999999,99999999", "16x",
                                                               "-3,4", "16,16"])),
    st.tuples(st.just("onnxviz.preprocess"), st.sampled_from(["", "imagenet", "raw", "caffe"])),
    st.tuples(st.just("onnxviz.channel_order"), st.sampled_from(["BGR", "xyz", ""])),
)


def _all_names(g):
    names = {t.name for t in g.initializer} | {i.name for i in g.input} | {o.name for o in g.output}
    for n in g.node:
        names.update(n.input)
        names.update(n.output)
    return sorted(x for x in names if x)


def _rename(draw, g):
    names = _all_names(g)
    if not names:
        return
    old, new = draw(st.sampled_from(names)), draw(NAMES)
    everywhere = draw(st.booleans())
    places = [t for t in g.initializer] + [i for i in g.input] + [o for o in g.output]
    for t in places:
        if t.name == old:
            t.name = new
            if not everywhere:
                return
    for n in g.node:
        for field in (n.input, n.output):
            for k, x in enumerate(field):
                if x == old:
                    field[k] = new
                    if not everywhere:
                        return


def _remove_node(draw, g):
    if g.node:
        del g.node[draw(st.integers(0, len(g.node) - 1))]


def _input_dim(draw, g):
    dims = [d for i in g.input for d in i.type.tensor_type.shape.dim]
    if dims:
        d = draw(st.sampled_from(dims))
        if draw(st.booleans()):
            d.dim_value = draw(ODD_INTS.filter(lambda v: -(2**63) <= v < 2**63))
        else:
            d.dim_param = draw(st.sampled_from(["N", "", "?"]))


def _attribute(draw, g):
    nodes = [n for n in g.node]
    if not nodes:
        return
    node = draw(st.sampled_from(nodes))
    name = draw(st.sampled_from(["kernel_shape", "group", "pads", "strides", "dilations", "perm", "to",
                                 "axis", "alpha", "auto_pad"]))
    kind = draw(st.sampled_from(["ints", "int", "float", "string"]))
    value = {"ints": st.lists(ODD_INTS, max_size=5), "int": ODD_INTS,
             "float": st.floats(allow_nan=True, allow_infinity=True, width=32),
             "string": st.sampled_from(["", "SAME_UPPER", "VALID", "x"])}[kind]
    attr = helper.make_attribute(name, draw(value), attr_type=getattr(onnx.AttributeProto, kind.upper()))
    keep = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(keep + [attr])


def _init_dims(draw, g):
    if g.initializer:
        t = draw(st.sampled_from(list(g.initializer)))
        del t.dims[:]
        t.dims.extend(draw(st.lists(st.integers(-1, 70), max_size=5)))


def _init_dtype(draw, g):
    if g.initializer:
        draw(st.sampled_from(list(g.initializer))).data_type = draw(st.integers(0, 26))


def _drop_init(draw, g):
    if g.initializer:
        del g.initializer[draw(st.integers(0, len(g.initializer) - 1))]


def _elem_type(draw, g):
    vis = list(g.input) + list(g.output)
    draw(st.sampled_from(vis)).type.tensor_type.elem_type = draw(st.integers(0, 26))


def _op_type(draw, g):
    if g.node:
        node = draw(st.sampled_from(list(g.node)))
        node.op_type = draw(st.sampled_from(["Conv", "ConvTranspose", "QLinearConv", "ConvInteger", "Relu",
                                             "Identity", "Cast", "Transpose", "Reshape", "Nope"]))


def _node_inputs(draw, g):
    if g.node:
        node = draw(st.sampled_from(list(g.node)))
        if node.input and draw(st.booleans()):
            del node.input[draw(st.integers(0, len(node.input) - 1))]
        else:
            node.input.append(draw(NAMES))


def _raw_data(draw, g):
    tensors = [t for t in g.initializer if t.raw_data]
    if tensors:
        t = draw(st.sampled_from(tensors))
        t.raw_data = t.raw_data[:draw(st.integers(0, len(t.raw_data)))] + draw(st.binary(max_size=8))


def _external(draw, g):
    if g.initializer:
        t = draw(st.sampled_from(list(g.initializer)))
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        del t.external_data[:]
        for key, value in (("location", draw(st.sampled_from(["m.onnx", "../m.onnx", "/etc/passwd", "", "nope",
                                                               "."]))),
                           ("offset", draw(st.sampled_from(["0", "16", "-8", "x", "99999999"]))),
                           ("length", draw(st.sampled_from(["", "4", "-1", "100000000000"])))):
            t.external_data.add(key=key, value=value)


PROTO_MUTATIONS = [_rename, _remove_node, _input_dim, _attribute, _init_dims, _init_dtype, _drop_init,
                   _elem_type, _op_type, _node_inputs, _raw_data, _external]


@st.composite
def mutated_models(draw):
    """``(what was done, model bytes)``."""
    seed = draw(st.integers(0, len(SEEDS) - 1))
    model = onnx.ModelProto()
    model.ParseFromString(SEEDS[seed])
    done = [f"seed {seed}"]
    for mutate in draw(st.lists(st.sampled_from(PROTO_MUTATIONS), max_size=3)):
        mutate(draw, model.graph)
        done.append(mutate.__name__)
    if draw(st.integers(0, 4)) == 0:
        model.opset_import[0].version = draw(st.sampled_from([1, 7, 10, 21, 28, 99]))
        done.append("opset")
    if draw(st.integers(0, 4)) == 0:
        key, value = draw(METADATA)
        props = {p.key: p.value for p in model.metadata_props}
        props[key] = value
        del model.metadata_props[:]
        helper.set_model_props(model, props)
        done.append(f"metadata {key}={value}")
    data = bytearray(model.SerializeToString())
    for _ in range(draw(st.integers(0, 2))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        else:
            del data[at:]
        done.append(f"{kind}@{at}")
    return done, bytes(data)


def exercise(path: str) -> str:
    """Run every verb on the model at ``path``; return how far it got. Raise on a bug."""
    try:
        model = onnxviz.load(path)
    except onnxviz.OnnxvizError:
        return "refused at load"
    assert model.layers, "a loaded model has at least one layer"
    json.dumps(model.summary())
    assert isinstance(model.summary_text(), str)
    reached = "summary"
    for layer in dict.fromkeys([model.layers[0], model.layers[-1]]):
        try:
            f = model.filters(layer)
            assert f.dtype == np.float32 and f.ndim >= 3, (f.dtype, f.shape)
            if layer.filter_shape and layer.op not in ("QLinearConv", "ConvInteger"):
                assert f.shape == tuple(layer.filter_shape), (f.shape, layer.filter_shape)
            render.filter_image(f, layer.name)
            reached = "filters"
        except onnxviz.OnnxvizError:
            pass
        try:
            maps = model.feature_maps(IMAGE, [layer], max_bytes=BUDGET)
            assert list(maps) == [layer.name]
            fm = maps[layer.name]
            assert fm.dtype == np.float32 and fm.shape[0] == 1 and fm.ndim >= 3, (fm.dtype, fm.shape)
            render.feature_map_image(fm, layer.name, spatial=fm.ndim - 2)
            reached = "features"
        except onnxviz.OnnxvizError:
            pass
    return reached


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated_models())
def test_mutated_models_give_results_or_onnxviz_errors(case):
    done, data = case
    folder = tempfile.mkdtemp(prefix="onnxviz-fuzz-")
    try:
        path = os.path.join(folder, "m.onnx")
        with open(path, "wb") as f:
            f.write(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                exercise(path)
            except Exception as e:
                raise AssertionError(f"{' + '.join(done)}: {type(e).__name__}: {e}") from e
        with open(path, "rb") as f:
            assert f.read() == data, "the model file was changed"
        assert os.listdir(folder) == ["m.onnx"], "something was written beside the model"
    finally:
        shutil.rmtree(folder)


def test_every_seed_runs_all_the_way():
    folder = tempfile.mkdtemp(prefix="onnxviz-fuzz-")
    try:
        for k, data in enumerate(SEEDS):
            path = os.path.join(folder, f"seed{k}.onnx")
            with open(path, "wb") as f:
                f.write(data)
            assert exercise(path) == "features", k
    finally:
        shutil.rmtree(folder)
