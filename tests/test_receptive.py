"""Receptive fields from the graph, against the empirical ones found through onnxruntime.

The empirical field: with every weight made positive and every bias, mean and shift zero,
an all-zero image gives all-zero maps, and an image that is zero but for one pixel changes
exactly the positions whose value depends on that pixel (no sum can cancel, no ReLU or max
can hide a positive change). For small nets every pixel is changed in turn, and each
position's field (the bounding box of the pixels that change it) must equal the graph's
box, clipped to the image; for the onnx wheel's Model Zoo classics (224×224) a few pixels
are, and the positions each changes must span exactly the graph's boxes that hold it.
"""

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxviz
from conftest import reference
from onnxviz.cli import main
from onnxviz.demo import demo_model_path
from onnxviz.graph.index import Index
from onnxviz.graph.receptive import Field, receptive_fields

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


# ---------------------------------------------------------------- nets, built with positive weights

class Graph:
    """A small NCHW graph builder whose convs have positive weights and zero biases."""

    def __init__(self, size=(24, 24), channels=2, seed=0):
        self.r = np.random.default_rng(seed)
        self.nodes, self.inits, self.n = [], [], 0
        self.input = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, channels, *size])
        self.c = {"x": channels}

    def _name(self, stem):
        self.n += 1
        return f"{stem}{self.n}"

    def conv(self, x, cout, k, stride=1, pads=None, dilation=1, auto_pad=None, name=None, group=1):
        name = name or self._name("conv")
        kh, kw = (k, k) if isinstance(k, int) else k
        w = self.r.uniform(0.1, 1.0, (cout, self.c[x] // group, kh, kw)).astype(np.float32)
        self.inits += [numpy_helper.from_array(w, name + ".w"), numpy_helper.from_array(np.zeros(cout, np.float32),
                                                                                        name + ".b")]
        attrs = {"kernel_shape": [kh, kw], "strides": [stride] * 2, "dilations": [dilation] * 2, "group": group}
        if auto_pad:
            attrs["auto_pad"] = auto_pad
        else:
            attrs["pads"] = pads if pads is not None else [k // 2] * 4 if isinstance(k, int) else [0] * 4
        self.nodes.append(helper.make_node("Conv", [x, name + ".w", name + ".b"], [name], name=name, **attrs))
        self.c[name] = cout
        return self.op("Relu", [name])

    def op(self, op, inputs, **attrs):
        name = self._name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        self.c[name] = self.c[inputs[0]] if op != "Concat" else sum(self.c[i] for i in inputs)
        return name

    def pool(self, x, k=2, stride=2, pads=(0, 0, 0, 0), op="MaxPool", **attrs):
        return self.op(op, [x], kernel_shape=[k, k], strides=[stride] * 2, pads=list(pads), **attrs)

    def const(self, value, name):
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def save(self, path, outputs):
        outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
        g = helper.make_graph(self.nodes, "g", [self.input], outs, initializer=self.inits)
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), str(path))
        return str(path)


def vgg_like(g):
    x = g.conv("x", 3, 3)
    x = g.conv(x, 3, 3)
    x = g.pool(x)
    x = g.conv(x, 4, 3)
    x = g.pool(x)
    return g.conv(x, 4, 3)


def strided_dilated_padded(g):
    x = g.conv("x", 3, 5, stride=2, pads=[0, 1, 2, 1])             # asymmetric pads
    x = g.conv(x, 3, 3, dilation=2, pads=[2, 2, 2, 2])             # dilated
    p = g.op("Pad", [x, g.const(np.array([0, 0, 1, 2, 0, 0, 0, 1], np.int64), "pads")], mode="constant")
    x = g.conv(p, 3, 3, pads=[0, 0, 0, 0])                          # after an explicit Pad
    x = g.conv(x, 3, 3, stride=2, auto_pad="SAME_UPPER")
    x = g.pool(x, 3, 2, (1, 1, 1, 1), op="AveragePool", ceil_mode=1, count_include_pad=1)
    return g.conv(x, 3, (1, 3), auto_pad="SAME_LOWER")


def resnet_like(g):
    x = g.conv("x", 4, 5, stride=2)
    x = g.pool(x, 3, 2, (1, 1, 1, 1))
    a = g.conv(x, 4, 1, pads=[0] * 4)
    a = g.conv(a, 4, 3)
    x = g.op("Relu", [g.op("Add", [g.conv(a, 4, 1, pads=[0] * 4), x])])     # identity shortcut
    a = g.conv(x, 4, 1, pads=[0] * 4)
    a = g.conv(a, 4, 3, stride=2)                                               # downsample block
    a = g.conv(a, 6, 1, pads=[0] * 4)
    b = g.conv(x, 6, 1, stride=2, pads=[0] * 4)                                 # its 1×1 stride-2 branch
    x = g.op("Relu", [g.op("Add", [a, b])])
    left = g.conv(x, 6, 3, pads=[0, 0, 2, 2])                                   # two offset paths: a union
    right = g.conv(x, 6, 3, pads=[2, 2, 0, 0])                                  # neither one contains
    return g.conv(g.op("Add", [left, right]), 4, 1, pads=[0] * 4)


def inception_like(g):
    x = g.conv("x", 4, 3, stride=2)
    b1 = g.conv(x, 2, 1, pads=[0] * 4)
    b2 = g.conv(g.conv(x, 2, 1, pads=[0] * 4), 2, 3)
    b3 = g.conv(g.conv(x, 2, 1, pads=[0] * 4), 2, 5)
    b4 = g.conv(g.pool(x, 3, 1, (1, 1, 1, 1)), 2, 1, pads=[0] * 4)
    x = g.op("Concat", [b1, b2, b3, b4], axis=1)
    return g.conv(x, 4, 3)


NETS = {"vgg": vgg_like, "strided_dilated_padded": strided_dilated_padded, "resnet": resnet_like,
        "inception": inception_like}


# ---------------------------------------------------------------- the empirical field

def one_hot_images(size, channels, pixels, layout="NCHW"):
    x = np.zeros((len(pixels), channels, *size), np.float32)
    for k, (y, xx) in enumerate(pixels):
        x[k, :, y, xx] = 1.0
    return x.transpose(0, 2, 3, 1).copy() if layout == "NHWC" else x


def changed(maps):
    """(P, oh, ow): which positions the one-pixel image changed (from all-zero maps)."""
    return (maps != 0).any(axis=1)


SIDE = 80


def empirical(path, tensors, size, channels, pixels, input_name=None, layout="NCHW", chunk=768):
    """``{tensor: (P, oh, ow) bool}``: the positions each one-pixel image changes."""
    out = {t: [] for t in tensors}
    for start in range(0, len(pixels), chunk):
        x = one_hot_images(size, channels, pixels[start:start + chunk], layout)
        for t, maps in reference(path, list(tensors), x, input_name=input_name).items():
            out[t].append(changed(maps))
    return {t: np.concatenate(v) for t, v in out.items()}


def spans(field: Field, out_size):
    """Per axis, the ``(starts, stops)`` of every position's box."""
    return [(o + np.arange(n) * j, o + np.arange(n) * j + s) for o, j, s, n in
            zip(field.offset, field.jump, field.size, out_size)]


def check_positions(field: Field, got, pixels, size, where, filled=True):
    """Per one-pixel image: the positions it changed hold that pixel in their box (the field is
    never too small), and (``filled``) every position whose box lies inside the image and holds
    it changed. At the borders, padding stands for positions that do not exist, so a box reaching
    out of the image may hold a pixel or two its position does not depend on; and the union of
    two paths whose boxes do not nest is L-shaped, its box a bounding box (not ``filled``)."""
    (sy, ey), (sx, ex) = spans(field, got.shape[1:])
    py, px = (np.array(pixels)[:, a, None] for a in (0, 1))
    holds = ((sy <= py) & (py < ey))[:, :, None] & ((sx <= px) & (px < ex))[:, None, :]
    inside = ((sy >= 0) & (ey <= size[0]))[:, None] & ((sx >= 0) & (ex <= size[1]))[None, :]
    assert not (got & ~holds).any(), (where, field, "a change outside the field")
    assert not filled or not (inside & holds & ~got).any(), (where, field, "a field larger than its pixels")
    assert (inside & holds).any(), (where, field, "no pixel inside a whole box: the size went unchecked")


@pytest.mark.parametrize("name", sorted(NETS))
def test_every_pixel_of_small_nets(name, tmp_path):
    """Every one of the 80×80 one-pixel images, every position of every layer."""
    g = Graph(size=(SIDE, SIDE))
    path = g.save(tmp_path / f"{name}.onnx", [NETS[name](g)])
    m = onnxviz.load(path)
    pixels = [(y, x) for y in range(SIDE) for x in range(SIDE)]
    got = empirical(path, [l.tensor for l in m.layers], (SIDE, SIDE), 2, pixels)
    for layer in m.layers:
        field, deps = layer.receptive_field, got[layer.tensor]
        check_positions(field, deps, pixels, (SIDE, SIDE), (name, layer.name), filled=name != "resnet")
        # each interior position's pixels span exactly its box (a bounding box: dilations leave holes)
        deps = deps.reshape(SIDE, SIDE, *deps.shape[1:])
        (sy, ey), (sx, ex) = spans(field, deps.shape[2:])
        rows, cols = deps.any(axis=1), deps.any(axis=0)          # (SIDE, oh, ow): pixel rows, columns used
        first = lambda a: a.argmax(axis=0)                        # noqa: E731
        last = lambda a: SIDE - a[::-1].argmax(axis=0)            # noqa: E731
        inside = ((sy >= 0) & (ey <= SIDE))[:, None] & ((sx >= 0) & (ex <= SIDE))[None, :]
        assert inside.sum() >= 4, (name, layer.name)              # every layer has positions whose box fits
        assert (first(rows) == sy[:, None])[inside].all() and (last(rows) == ey[:, None])[inside].all()
        assert (first(cols) == sx[None, :])[inside].all() and (last(cols) == ex[None, :])[inside].all()


#: The fields by hand, layer by layer: (size, jump, offset), the same on both axes unless a pair.
BY_HAND = {
    "vgg": [(3, 1, -1), (5, 1, -2), (10, 2, -4), (20, 4, -8)],
    # 5×5 s2 pads 0/1 → 3×3 d2 → Pad 1, 2 → 3×3 valid → 3×3 s2 SAME_UPPER (pads 0) → avg 3×3 s2
    # → 1×3 SAME_LOWER (pad 1)
    "strided_dilated_padded": [(5, 2, (0, -1)), (13, 2, (-4, -5)), (17, 2, (-6, -9)), (21, 4, (-6, -9)),
                               ((29, 45), 8, (-10, -21))],
    # the last: after the Add of two paths offset by 16 pixels, their union
    "resnet": [(5, 2, -2), (9, 4, -4), (17, 4, -8), (17, 4, -8), (17, 4, -8), (25, 8, -12), (25, 8, -12),
               (17, 8, -8), (41, 8, -12), (41, 8, -28), (57, 8, -28)],
    # the Concat: the 5×5 branch's field, the largest
    "inception": [(3, 2, -1), (3, 2, -1), (3, 2, -1), (7, 2, -3), (3, 2, -1), (11, 2, -5), (7, 2, -3), (15, 2, -7)],
}


def _pair(v):
    return v if isinstance(v, tuple) else (v, v)


@pytest.mark.parametrize("name", sorted(NETS))
def test_fields_of_the_small_nets_by_hand(name, tmp_path):
    g = Graph()
    path = g.save(tmp_path / f"{name}.onnx", [NETS[name](g)])
    got = [l.receptive_field for l in onnxviz.load(path).layers]
    assert got == [Field(_pair(s), _pair(j), _pair(o)) for s, j, o in BY_HAND[name]]


def positive(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose weights are positive and whose biases, BN means/shifts and additive
    constants are zero (0.5 and 0 where a Model Zoo classic fills every blob with 0.02);
    ``LRN`` (across channels, and inf/inf in float32) becomes ``Identity``."""
    fill = {("Conv", 1): 0.5, ("Conv", 2): 0.0, ("Gemm", 1): 0.5, ("Gemm", 2): 0.0, ("MatMul", 1): 0.5,
            ("BatchNormalization", 1): 1.0, ("BatchNormalization", 2): 0.0, ("BatchNormalization", 3): 0.0,
            ("BatchNormalization", 4): 1.0, ("Mul", 1): 1.0, ("Mul", 0): 1.0, ("Add", 1): 0.0, ("Add", 0): 0.0}
    new = onnx.ModelProto()
    new.CopyFrom(proto)
    graph = new.graph
    producers = {o: n for n in graph.node for o in n.output}
    inits = {t.name: t for t in graph.initializer}
    wanted = {}
    for node in graph.node:
        for k, name in enumerate(node.input):
            if (node.op_type, k) in fill:
                wanted.setdefault(name, fill[(node.op_type, k)])
    for name, value in wanted.items():
        seen = 0
        while name in producers and producers[name].op_type in ("Unsqueeze", "Reshape", "Identity", "Cast") \
                and seen < 4:
            name, seen = producers[name].input[0], seen + 1
        node = producers.get(name)
        if node is not None and node.op_type == "ConstantOfShape":
            del node.attribute[:]
            filled = numpy_helper.from_array(np.array([value], np.float32))
            node.attribute.append(helper.make_attribute("value", filled))
        elif name in inits and inits[name].data_type == TensorProto.FLOAT:
            arr = np.full(tuple(inits[name].dims), value, np.float32)
            if value == 0.5:  # positive weights of several values: not a symmetric sum
                arr = np.random.default_rng(len(name)).uniform(0.25, 1.0, arr.shape).astype(np.float32)
            inits[name].CopyFrom(numpy_helper.from_array(arr, name))
    for node in graph.node:
        if node.op_type == "LRN":
            node.op_type = "Identity"
            del node.attribute[:]
    return new


def check_pixels(path, m, layers, pixels, size, layout, chunk=768):
    got = empirical(path, [l.tensor for l in layers], size, 3, pixels, m.input.name, layout, chunk)
    for layer in layers:
        check_positions(layer.receptive_field, got[layer.tensor], pixels, size, (path, layer.name))


def test_the_demo_model_nhwc(tmp_path):
    """tf2onnx's NHWC input through Transpose(0, 3, 1, 2), 'same' pads, 2×2 pools."""
    path = tmp_path / "demo_positive.onnx"
    onnx.save(positive(onnx.load(str(demo_model_path()))), str(path))
    m = onnxviz.load(path)
    assert m.layers[-1].receptive_field == Field((32, 32), (4, 4), (-14, -14))
    check_pixels(str(path), m, m.layers, [(y, x) for y in range(64) for x in range(0, 64, 3)], (64, 64), "NHWC")


# Per model: layers spread from first to last (a few, so the run stays short), and pixels.
ZOO = {
    "bvlc_alexnet": ["conv1", "conv2", "conv5"],
    "zfnet512": ["conv1", "conv3", "conv5"],
    "vgg19": ["conv1_2", "conv3_1", "conv4_4"],
    "resnet50": ["conv1", "res2_0_branch2c", "res3_0_branch2c", "res3_0_branch1", "res4_1_branch2b"],
    "squeezenet": ["conv1", "fire3/expand3x3", "fire6/expand3x3", "conv10"],
    "inception_v1": ["conv2/3x3", "inception_3a/5x5", "inception_3b/pool_proj", "inception_4a/5x5"],
    "inception_v2": ["conv2/3x3", "inception_3a/double3x3b", "inception_3c/3x3", "inception_4a/pool_proj"],
    "densenet121": ["conv1", "conv2_3/x2", "conv3_1/x2", "conv3_4/x2"],
    "shufflenet": ["conv3_0", "gconv3_1", "gconv3_4", "gconv1_10"],
}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_model_zoo_classics(name, tmp_path):
    path = tmp_path / f"{name}.onnx"
    onnx.save(positive(onnx.load(os.path.join(LIGHT, f"light_{name}.onnx"))), str(path))
    m = onnxviz.load(path)
    layers = m.select(ZOO[name])
    pixels = [(0, 0), (100, 37), (112, 112), (223, 223), (150, 201)]
    check_pixels(str(path), m, layers, pixels, (224, 224), "NCHW", chunk=1)  # batch 1: their Reshapes say so


def test_global_pooling_flatten_and_gates_are_whole(tmp_path):
    g = Graph()
    x = g.conv("x", 4, 3)
    gate = g.op("Sigmoid", [g.op("GlobalAveragePool", [x])])       # squeeze-and-excitation
    y = g.conv(g.op("Mul", [x, gate]), 4, 3)
    z = g.op("Flatten", [g.conv(x, 4, 3, name="plain")], axis=1)
    path = g.save(tmp_path / "se.onnx", [y, z])
    m = onnxviz.load(path)
    assert [l.receptive_field for l in m.layers] == [Field((3, 3), (1, 1), (-1, -1)),
                                                     Field((24, 24), (0, 0), (0, 0), True),
                                                     Field((5, 5), (1, 1), (-2, -2))]
    fields = receptive_fields(Index(onnx.load(path).graph), "x", "NCHW", None, (24, 24))
    assert fields[z].whole
    x = 1 + one_hot_images((24, 24), 2, [(0, 0)])                  # a gate of zero maps would hide it
    base, one = (reference(path, [m.layers[1].tensor], v)[m.layers[1].tensor] for v in (np.ones_like(x), x))
    assert (base != one).all()                                     # one pixel changes every position


def test_unknown_fields_say_why():
    g = Graph(size=(8, 8))
    x = g.conv("x", 2, 3)
    up = g.op("Resize", [x, "", g.const(np.array([1, 1, 2, 2], np.float32), "scales")], mode="nearest")
    y = g.conv(up, 2, 3)
    fields = receptive_fields(Index(helper.make_graph(g.nodes, "g", [g.input], [], g.inits)), "x", "NCHW", None, (8, 8))
    assert fields[x] == Field((3, 3), (1, 1), (-1, -1)) and fields[y] is None
    assert fields.why[y] == "Resize node 'resize3' has no receptive-field rule"


def test_summary_column_and_json(tmp_path, capsys):
    import json

    g = Graph()
    path = g.save(tmp_path / "vgg.onnx", [vgg_like(g)])
    assert main(["summary", path]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split() == ["#", "layer", "op", "filters", "group", "stride", "feature", "map", "RF", "after"]
    assert [line.split()[-2] for line in lines[3:]] == ["3×3", "5×5", "10×10", "20×20"]
    assert main(["summary", path, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["layers"]
    assert rows[-1]["receptive_field"] == {"size": [20, 20], "jump": [4, 4], "offset": [-8, -8], "whole": False}
