"""Small ONNX models for the tests, built with onnx.helper, and a numpy reference conv."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def rng(seed=0):
    return np.random.default_rng(seed)


def conv_ref(x, w, b=None, stride=1, pad=0, dilation=1, group=1):
    """Plain numpy 2-D convolution (cross-correlation, as ONNX Conv), NCHW / OIHW."""
    n, c, h, wd = x.shape
    o, ig, kh, kw = w.shape
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh = (x.shape[2] - dilation * (kh - 1) - 1) // stride + 1
    ow = (x.shape[3] - dilation * (kw - 1) - 1) // stride + 1
    out = np.zeros((n, o, oh, ow), np.float64)
    og = o // group
    for g in range(group):
        xs = x[:, g * ig:(g + 1) * ig]
        ws = w[g * og:(g + 1) * og]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i * dilation:i * dilation + stride * oh:stride,
                           j * dilation:j * dilation + stride * ow:stride]
                out[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch, ws[:, :, i, j])
    if b is not None:
        out += b[None, :, None, None]
    return out.astype(np.float32)


def relu(x):
    return np.maximum(x, 0)


class Net:
    """A tiny graph builder: ``net.conv(...)`` appends nodes and returns the output name."""

    def __init__(self, shape=(1, 3, 16, 16), name="input", elem=TensorProto.FLOAT, seed=0):
        self.nodes, self.inits, self.r = [], [], rng(seed)
        self.input = helper.make_tensor_value_info(name, elem, list(shape))
        self.cur = name
        self.n = 0
        self.weights = {}

    def _name(self, stem):
        self.n += 1
        return f"{stem}_{self.n}"

    def init(self, name, array):
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op, inputs, name=None, domain="", outputs=1, **attrs):
        name = name or self._name(op.lower())
        outs = [f"{name}_out{k}" if outputs > 1 else f"{name}_out" for k in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, domain=domain, **attrs))
        return outs[0] if outputs == 1 else outs

    def conv(self, cin, cout, k=3, name=None, bias=True, pad=1, stride=1, group=1, dilation=1,
             wname=None, x=None):
        name = name or self._name("conv")
        w = self.r.standard_normal((cout, cin // group, k, k)).astype(np.float32) * 0.3
        b = self.r.standard_normal(cout).astype(np.float32) * 0.1
        wname = wname or f"{name}.weight"
        self.init(wname, w)
        ins = [x or self.cur, wname]
        if bias:
            ins.append(self.init(f"{name}.bias", b))
        self.weights[name] = (w, b if bias else None)
        self.cur = self.node("Conv", ins, name=name, pads=[pad] * 4, strides=[stride] * 2,
                             group=group, dilations=[dilation] * 2, kernel_shape=[k, k])
        return self.cur

    def act(self, op="Relu", **attrs):
        self.cur = self.node(op, [self.cur], **attrs)
        return self.cur

    def pool(self):
        self.cur = self.node("MaxPool", [self.cur], kernel_shape=[2, 2], strides=[2, 2])
        return self.cur

    def model(self, outputs=None, opset=OPSET, ir=None, metadata=None):
        outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in (outputs or [self.cur])]
        g = helper.make_graph(self.nodes, "g", [self.input], outs, initializer=self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
        if ir:
            m.ir_version = ir
        for k, v in (metadata or {}).items():
            helper.set_model_props(m, {**{p.key: p.value for p in m.metadata_props}, k: v})
        return m


def vgg_like(shape=(1, 3, 16, 16), seed=0, names=("b1c1", "b1c2", "b2c1"), metadata=None):
    """conv-relu, conv-relu, pool, conv-relu, pool — names as given."""
    net = Net(shape, seed=seed)
    net.conv(3, 4, name=names[0]); net.act()
    net.conv(4, 4, name=names[1]); net.act(); net.pool()
    net.conv(4, 6, name=names[2]); net.act(); net.pool()
    return net, net.model(metadata=metadata)


def no_gradient_classifier(side=32, seed=3):
    """conv-ReLU ×2 (c0, c1), GlobalAveragePool, Flatten, Sin, Gemm(6→4): a class output with an
    op on the path (Sin) that has no gradient rule; preprocessing ``unit``."""
    net = Net(("N", 3, side, side), seed=seed)
    net.conv(3, 4, name="c0"); net.act()
    net.conv(4, 6, name="c1"); net.act()
    net.cur = net.node("GlobalAveragePool", [net.cur])
    net.cur = net.node("Flatten", [net.cur])
    net.cur = net.node("Sin", [net.cur])
    net.cur = net.node("Gemm", [net.cur, net.init("w", net.r.standard_normal((6, 4)).astype(np.float32))])
    return net.model(metadata={"onnxviz.preprocess": "unit"})


def save(model, path, external=False):
    if external:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=path.name + ".data", size_threshold=0)
    else:
        onnx.save(model, str(path))
    return path
