"""Three third-party-style models the memory guard once refused (issue 10, point 4), made here.

Nothing is downloaded: each net is defined in torch (random weights, seeded) or built with
onnx.helper, then put through the tool that makes the real thing:

* :func:`mobilenet_fp16`: a MobileNetV3-style net (inverted residuals, hardswish, squeeze-
  and-excitation with hardsigmoid), exported by torch, converted to float16 by
  ``onnxconverter_common.float16.convert_float_to_float16`` (as the ONNX Model Zoo's fp16
  models are);
* :func:`resnet18_fused`: a ResNet18 exported by torch and saved by onnxruntime at the
  *extended* optimisation level (``SessionOptions.optimized_model_filepath``): its convs are
  ``com.microsoft.FusedConv`` nodes with the Relu in their ``activation`` attribute;
* :func:`style_opset7`: a fast-neural-style transformer net (reflection pads, 9×9 and stride-2
  convs, InstanceNormalization, residual blocks, ConvTranspose up-sampling) written with
  onnx.helper at opset 7 and IR 3, with a symbolic batch and a 720×720 input. Its weights are
  initializers that are not listed among the graph inputs, as converters of that time wrote
  them: IR 3 wants them listed, onnxruntime runs them anyway, and onnx's shape inference
  (which reads an initializer's shape only from IR 4 on) sizes nothing past the first conv.

``channels``/``width``/``side`` shrink them for the tests. Used by ``tests/test_guard_models.py``
and ``scripts/bench_budget.py``.

    python scripts/make_guard_models.py -o /tmp/guard      # writes the three full-size models
"""

from __future__ import annotations

import argparse
import os
import warnings

import numpy as np

__all__ = ["mobilenet_fp16", "resnet18_fused", "style_opset7", "write_all"]


def _torch_export(net, x, path: str, opset: int = 17, dynamic_batch: bool = True) -> None:
    import torch

    net.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), path, input_names=["input"], output_names=["output"], opset_version=opset,
                          dynamo=False, dynamic_axes={"input": {0: "batch"}} if dynamic_batch else None)


def _mobilenet_v3(width: float = 1.0, classes: int = 1000):
    """MobileNetV3-Large's layer plan: (kernel, expansion, out, SE, activation, stride)."""
    import torch
    from torch import nn

    def ch(c):
        return max(8, int(c * width + 4) // 8 * 8)

    class SE(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.fc1, self.fc2 = nn.Conv2d(c, ch(c // 4), 1), nn.Conv2d(ch(c // 4), c, 1)

        def forward(self, x):
            s = nn.functional.adaptive_avg_pool2d(x, 1)
            return x * nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(s))))

    class Block(nn.Module):
        def __init__(self, cin, k, exp, cout, se, act, stride):
            super().__init__()
            a = nn.Hardswish if act == "HS" else nn.ReLU
            layers = []
            if exp != cin:
                layers += [nn.Conv2d(cin, exp, 1, bias=False), nn.BatchNorm2d(exp), a()]
            layers += [nn.Conv2d(exp, exp, k, stride, k // 2, groups=exp, bias=False), nn.BatchNorm2d(exp), a()]
            if se:
                layers.append(SE(exp))
            layers += [nn.Conv2d(exp, cout, 1, bias=False), nn.BatchNorm2d(cout)]
            self.body, self.res = nn.Sequential(*layers), stride == 1 and cin == cout

        def forward(self, x):
            y = self.body(x)
            return x + y if self.res else y

    plan = [(3, 16, 16, 0, "RE", 1), (3, 64, 24, 0, "RE", 2), (3, 72, 24, 0, "RE", 1), (5, 72, 40, 1, "RE", 2),
            (5, 120, 40, 1, "RE", 1), (5, 120, 40, 1, "RE", 1), (3, 240, 80, 0, "HS", 2), (3, 200, 80, 0, "HS", 1),
            (3, 184, 80, 0, "HS", 1), (3, 184, 80, 0, "HS", 1), (3, 480, 112, 1, "HS", 1), (3, 672, 112, 1, "HS", 1),
            (5, 672, 160, 1, "HS", 2), (5, 960, 160, 1, "HS", 1), (5, 960, 160, 1, "HS", 1)]
    layers, cin = [nn.Conv2d(3, ch(16), 3, 2, 1, bias=False), nn.BatchNorm2d(ch(16)), nn.Hardswish()], ch(16)
    for k, exp, cout, se, act, stride in plan:
        layers.append(Block(cin, k, ch(exp), ch(cout), se, act, stride))
        cin = ch(cout)
    layers += [nn.Conv2d(cin, ch(960), 1, bias=False), nn.BatchNorm2d(ch(960)), nn.Hardswish(),
               nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(ch(960), 1280), nn.Hardswish(),
               nn.Linear(1280, classes)]
    return nn.Sequential(*layers)


def _randomize_bn(net, seed: int) -> None:
    """Non-trivial BatchNorm statistics, so folding them changes the weights."""
    import torch

    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def mobilenet_fp16(path: str, width: float = 1.0, side: int = 224, seed: int = 0) -> str:
    """A MobileNetV3-style net in float16 (onnxconverter-common), dynamic batch, ``side``² input."""
    import onnx
    import torch
    from onnxconverter_common import float16

    torch.manual_seed(seed)
    net = _mobilenet_v3(width)
    _randomize_bn(net, seed)
    tmp = path + ".fp32.onnx"
    _torch_export(net, torch.rand(1, 3, side, side), tmp, opset=13)
    model = onnx.load(tmp)
    os.remove(tmp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        half = float16.convert_float_to_float16(model)
    onnx.save(half, path)
    return path


def _resnet18(width: int = 64, classes: int = 1000):
    from torch import nn

    class Basic(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
            self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
            self.down = None if stride == 1 and cin == cout else nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = self.bn2(self.conv2(self.bn1(self.conv1(x)).relu()))
            return (y + (x if self.down is None else self.down(x))).relu()

    layers, cin = [nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                   nn.MaxPool2d(3, 2, 1)], width
    for k, stride in enumerate((1, 2, 2, 2)):
        cout = width * 2 ** k
        layers += [Basic(cin, cout, stride), Basic(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    return nn.Sequential(*layers)


def resnet18_fused(path: str, width: int = 64, side: int = 224, seed: int = 0) -> str:
    """A ResNet18 saved by onnxruntime at ``ORT_ENABLE_EXTENDED``: 20 ``FusedConv``/``Conv`` nodes."""
    import onnxruntime as ort
    import torch

    torch.manual_seed(seed)
    net = _resnet18(width)
    _randomize_bn(net, seed)
    tmp = path + ".torch.onnx"
    _torch_export(net, torch.rand(1, 3, side, side), tmp)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = path
    ort.InferenceSession(tmp, options, providers=["CPUExecutionProvider"])
    os.remove(tmp)
    return path


def style_opset7(path: str, channels: int = 32, side: int = 720, blocks: int = 5, seed: int = 0) -> str:
    """A fast-neural-style net at opset 7, IR 3: input ``(N, 3, side, side)``, ``N`` symbolic.

    Layers (``c = channels``): reflect-pad 4, conv 9×9 3→c; conv 3×3/2 c→2c; conv 3×3/2 2c→4c
    (each InstanceNorm + Relu); ``blocks`` residual blocks of two 3×3 4c→4c convs; ConvTranspose
    3×3/2 4c→2c and 2c→c (output padding 1, InstanceNorm + Relu); reflect-pad 4, conv 9×9 c→3.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    r = np.random.default_rng(seed)
    nodes, inits = [], []
    inputs = [helper.make_tensor_value_info("input1", TensorProto.FLOAT, ["N", 3, side, side])]
    count = [0]

    def const(name, array):
        inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def node(op, ins, **attrs):
        count[0] += 1
        out = str(count[0])  # the old exporters' numeric tensor names
        nodes.append(helper.make_node(op, ins, [out], **attrs))
        return out

    def conv(x, cin, cout, k, stride=1, norm=True, relu=True, transpose=False):
        if not transpose and k == 9:
            x = node("Pad", [x], mode="reflect", pads=[0, 0, 4, 4, 0, 0, 4, 4])
        shape = (cin, cout, k, k) if transpose else (cout, cin, k, k)
        w = const(f"w{count[0]}", r.standard_normal(shape) * (2 / (cin * k * k)) ** 0.5)
        b = const(f"b{count[0]}", r.standard_normal(cout) * 0.1)
        if transpose:
            x = node("ConvTranspose", [x, w, b], kernel_shape=[k, k], strides=[stride] * 2, pads=[1] * 4,
                     output_padding=[1, 1])
        else:
            x = node("Conv", [x, w, b], kernel_shape=[k, k], strides=[stride] * 2,
                     pads=[0] * 4 if k == 9 else [k // 2] * 4)
        if norm:
            x = node("InstanceNormalization", [x, const(f"s{count[0]}", 1 + r.standard_normal(cout) * 0.1),
                                               const(f"t{count[0]}", r.standard_normal(cout) * 0.1)], epsilon=1e-5)
        return node("Relu", [x]) if relu else x

    c = channels
    x = conv("input1", 3, c, 9)
    x = conv(x, c, 2 * c, 3, 2)
    x = conv(x, 2 * c, 4 * c, 3, 2)
    for _ in range(blocks):
        y = conv(conv(x, 4 * c, 4 * c, 3), 4 * c, 4 * c, 3, relu=False)
        x = node("Add", [x, y])
    x = conv(x, 4 * c, 2 * c, 3, 2, transpose=True)
    x = conv(x, 2 * c, c, 3, 2, transpose=True)
    x = conv(x, c, 3, 9, norm=False, relu=False)
    graph = helper.make_graph(nodes, "style", inputs, [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 7)], producer_name="pytorch",
                              producer_version="0.3")
    model.ir_version = 3
    onnx.save(model, path)
    return path


def write_all(folder: str) -> dict:
    """The three full-size models in ``folder``: ``{kind: path}``."""
    os.makedirs(folder, exist_ok=True)
    return {"mobilenet_fp16": mobilenet_fp16(os.path.join(folder, "mobilenetv3_fp16.onnx")),
            "resnet18_fused": resnet18_fused(os.path.join(folder, "resnet18_fused.onnx")),
            "style_opset7": style_opset7(os.path.join(folder, "style_opset7.onnx"))}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--out", default="guard_models")
    for kind, where in write_all(p.parse_args().out).items():
        print(kind, where)
