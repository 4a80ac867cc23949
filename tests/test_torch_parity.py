"""PyTorch exports, checked against PyTorch.

Seven small but realistic networks, each exported three ways: the TorchScript exporter
(``dynamo=False``, folds eval-mode BatchNorm into Conv), the dynamo exporter with its default
optimiser (folds BatchNorm into Conv *and* ConvTranspose, keeping the parameter names) and the
dynamo exporter with ``optimize=False`` (keeps BatchNormalization nodes). For every conv:

* the friendly name is the module path, and the layers come in the order PyTorch calls them;
* ``filters()`` is the module's weight, or — flagged ``folded == "BatchNorm"`` — the weight
  with the following BatchNorm folded in (``w · γ/√(σ²+ε)`` on the output-channel axis);
* ``feature_maps()`` equals the output of the module after the conv's activation (captured
  by a forward hook), and ``raw_conv=True`` the conv's (or, folded, the BatchNorm's) output;
* where a net says (``acts``), ``Layer.activation`` names what the chain went through — the
  same whether the exporter kept ``Gelu``/``Mish`` ops or wrote them out (TorchScript).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from conftest import assert_close  # noqa: E402

import onnxviz  # noqa: E402

SIZE = 32
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


# ------------------------------------------------------------------ the networks
# Each has ``taps``: conv module path → the module whose output is that conv's feature map
# (after BN and the activation; before a residual add, a gate multiply or a concat), and
# ``bns``: conv module path → the BatchNorm that follows it.

class VGG(nn.Module):
    taps = {"features.0": "features.1", "features.2": "features.3", "features.5": "features.6"}
    bns: dict = {}

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16 * 8 * 8, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(y + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    taps = {"conv1": "relu", "layer1.0.conv1": "layer1.0.relu1", "layer1.0.conv2": "layer1.0.bn2",
            "layer1.1.conv1": "layer1.1.relu1", "layer1.1.conv2": "layer1.1.bn2",
            "layer1.1.downsample.0": "layer1.1.downsample.1"}
    bns = {"conv1": "bn1", "layer1.0.conv1": "layer1.0.bn1", "layer1.0.conv2": "layer1.0.bn2",
           "layer1.1.conv1": "layer1.1.bn1", "layer1.1.conv2": "layer1.1.bn2",
           "layer1.1.downsample.0": "layer1.1.downsample.1"}

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.layer1 = nn.Sequential(BasicBlock(8, 8, 1), BasicBlock(8, 16, 2))

    def forward(self, x):
        return self.layer1(self.relu(self.bn1(self.conv1(x))))


class SqueezeExcite(nn.Module):
    def __init__(self, c, r, gate):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(c, r, 1)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(r, c, 1)
        self.gate = gate

    def forward(self, x):
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


class MobileNet(nn.Module):
    """Depthwise + pointwise, HardSwish, squeeze-excitation with a HardSigmoid gate."""

    taps = {"stem.0": "stem.2", "dw.0": "dw.2", "se.fc1": "se.act", "se.fc2": "se.gate", "pw.0": "pw.1"}
    bns = {"stem.0": "stem.1", "dw.0": "dw.1", "pw.0": "pw.1"}

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, groups=16, bias=False), nn.BatchNorm2d(16),
                                nn.Hardswish())
        self.se = SqueezeExcite(16, 4, nn.Hardsigmoid())
        self.pw = nn.Sequential(nn.Conv2d(16, 24, 1, bias=False), nn.BatchNorm2d(24))

    def forward(self, x):
        return self.pw(self.se(self.dw(self.stem(x))))


class EfficientNet(nn.Module):
    """MBConv: expand, depthwise 5×5, SE with a Sigmoid gate, project, residual; SiLU."""

    taps = {"stem.0": "stem.2", "expand.0": "expand.2", "dw.0": "dw.2", "se.fc1": "se.act",
            "se.fc2": "se.gate", "project.0": "project.1"}
    bns = {"stem.0": "stem.1", "expand.0": "expand.1", "dw.0": "dw.1", "project.0": "project.1"}

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.SiLU())
        self.expand = nn.Sequential(nn.Conv2d(16, 64, 1, bias=False), nn.BatchNorm2d(64), nn.SiLU())
        self.dw = nn.Sequential(nn.Conv2d(64, 64, 5, 1, 2, groups=64, bias=False), nn.BatchNorm2d(64), nn.SiLU())
        self.se = SqueezeExcite(64, 4, nn.Sigmoid())
        self.project = nn.Sequential(nn.Conv2d(64, 16, 1, bias=False), nn.BatchNorm2d(16))

    def forward(self, x):
        y = self.stem(x)
        return y + self.project(self.se(self.dw(self.expand(y))))


class Inception(nn.Module):
    """Four parallel branches (1×1, 1×1→3×3, 1×1→5×5, pool→1×1), concatenated."""

    taps = {"b1.0": "b1.1", "b2.0": "b2.1", "b2.2": "b2.3", "b3.0": "b3.1", "b3.2": "b3.3",
            "b4.1": "b4.2", "head.0": "head.1"}
    bns: dict = {}

    def __init__(self):
        super().__init__()
        self.b1 = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU())
        self.b2 = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 8, 3, padding=1), nn.ReLU())
        self.b3 = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 8, 5, padding=2), nn.ReLU())
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(3, 8, 1), nn.ReLU())
        self.head = nn.Sequential(nn.Conv2d(32, 8, 1), nn.ReLU())

    def forward(self, x):
        return self.head(torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1))


class Decoder(nn.Module):
    """A strided encoder conv, then ConvTranspose (+BN+ReLU) and ConvTranspose + Sigmoid."""

    taps = {"enc.0": "enc.1", "up1": "relu", "up2": "out"}
    bns = {"up1": "bn"}

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU())
        self.up1 = nn.ConvTranspose2d(8, 8, 4, 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.up2 = nn.ConvTranspose2d(8, 3, 3, 1, 1)
        self.out = nn.Sigmoid()

    def forward(self, x):
        return self.out(self.up2(self.relu(self.bn(self.up1(self.enc(x))))))


class ConvNeXt(nn.Module):
    """GroupNorm, GELU (exact and tanh) and Mish, with a residual add. TorchScript writes them
    out: GroupNorm as Reshape → InstanceNormalization → Reshape(Shape(x)) → Mul γ → Add β,
    GELU as x·(1+erf(x/√2))·0.5, tanh-GELU with x³ and Tanh, Mish as x·tanh(softplus(x))."""

    taps = {"stem.0": "stem.2", "dw.0": "dw.1", "pw1": "gelu", "pw2": "mish", "head.0": "head.2"}
    bns: dict = {}
    acts = {"stem.0": "GroupNorm+Relu", "dw.0": "GroupNorm", "pw1": "Gelu", "pw2": "Mish",
            "head.0": "GroupNorm+Gelu"}

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 4, 2, 1), nn.GroupNorm(4, 16), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 7, 1, 3, groups=16), nn.GroupNorm(1, 16))
        self.pw1 = nn.Conv2d(16, 48, 1)
        self.gelu = nn.GELU()
        self.pw2 = nn.Conv2d(48, 16, 1)
        self.mish = nn.Mish()
        self.head = nn.Sequential(nn.Conv2d(16, 8, 3, 1, 1, bias=False), nn.GroupNorm(2, 8),
                                  nn.GELU(approximate="tanh"))

    def forward(self, x):
        y = self.stem(x)
        y = y + self.mish(self.pw2(self.gelu(self.pw1(self.dw(y)))))
        return self.head(y)


NETS = {"vgg": VGG, "resnet": ResNet, "mobilenet": MobileNet, "efficientnet": EfficientNet,
        "inception": Inception, "decoder": Decoder, "convnext": ConvNeXt}
EXPORTERS = ("torchscript", "dynamo", "dynamo-unoptimized")
CONVS = (nn.Conv2d, nn.ConvTranspose2d)


def build(key: str) -> nn.Module:
    torch.manual_seed(sum(map(ord, key)))
    net = NETS[key]()
    for mod in net.modules():  # BatchNorm statistics far from the identity, so folding shows
        if isinstance(mod, nn.BatchNorm2d):
            c = mod.num_features
            mod.running_mean.copy_(torch.randn(c) * 0.5)
            mod.running_var.copy_(torch.rand(c) * 1.5 + 0.25)
            mod.weight.data.copy_(torch.rand(c) + 0.5)
            mod.bias.data.copy_(torch.randn(c) * 0.2)
        if isinstance(mod, nn.GroupNorm):  # an affine part that shows
            mod.weight.data.copy_(torch.rand(mod.num_channels) + 0.5)
            mod.bias.data.copy_(torch.randn(mod.num_channels) * 0.2)
    return net.eval()


def export(net: nn.Module, x, path, exporter: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            if exporter == "torchscript":
                torch.onnx.export(net, (x,), str(path), dynamo=False, opset_version=17)
            else:
                pytest.importorskip("onnxscript")
                torch.onnx.export(net, (x,), str(path), dynamo=True, optimize=exporter == "dynamo")
        finally:
            logging.disable(logging.NOTSET)


def expected_folded(net: nn.Module, exporter: str) -> dict:
    """conv path → the BatchNorm the exporter folds into it."""
    if exporter == "dynamo-unoptimized":
        return {}
    modules = dict(net.named_modules())
    # TorchScript's eval peephole fuses Conv+BN only; dynamo's rewriter also ConvTranspose+BN.
    return {c: bn for c, bn in net.bns.items()
            if exporter == "dynamo" or isinstance(modules[c], nn.Conv2d)}


def fold(conv, bn) -> np.ndarray:
    w = conv.weight.detach().numpy().astype(np.float64)
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy().astype(np.float64)
    axis = 1 if isinstance(conv, nn.ConvTranspose2d) else 0  # ConvTranspose: (I, O/g, kH, kW)
    shape = [1] * w.ndim
    shape[axis] = -1
    return w * scale.reshape(shape)


@pytest.fixture(scope="module")
def photo():
    from matplotlib import cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
        return np.asarray(im.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("key", list(NETS))
def test_torch_export(key, exporter, photo, tmp_path):
    net = build(key)
    x = torch.from_numpy(((photo / 255.0 - MEAN) / STD).astype(np.float32).transpose(2, 0, 1)[None].copy())
    modules = dict(net.named_modules())
    calls, outputs = [], {}

    def hook(name):
        def record(_mod, _inp, out):
            if isinstance(modules[name], CONVS):
                calls.append(name)
            outputs[name] = out.detach().numpy()
        return record

    watched = set(net.taps) | set(net.taps.values()) | set(net.bns.values())
    handles = [modules[n].register_forward_hook(hook(n)) for n in watched]
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()

    path = tmp_path / f"{key}_{exporter}.onnx"
    export(net, x, path, exporter)
    m = onnxviz.load(path)
    folded = expected_folded(net, exporter)

    # names are the module paths, in the order PyTorch runs the convs
    assert [layer.name for layer in m.layers] == calls
    assert {layer.name: layer.folded for layer in m.layers} == {c: ("BatchNorm" if c in folded else "")
                                                              for c in calls}
    if folded:
        assert "folded in" in m.summary_text()
    if hasattr(net, "acts"):
        assert {layer.name: layer.activation for layer in m.layers} == net.acts

    for name in calls:  # filters: the parameter, or the parameter with its BN folded in
        got = m.filters(name)
        conv = modules[name]
        want = fold(conv, modules[folded[name]]) if name in folded else conv.weight.detach().numpy()
        assert got.dtype == np.float32 and got.shape == tuple(conv.weight.shape)
        assert_close(got, want, rtol=1e-5)

    fm = m.feature_maps(photo, preprocess="torch")
    raw = m.feature_maps(photo, preprocess="torch", raw_conv=True)
    for name in calls:
        assert fm[name].dtype == np.float32
        assert_close(fm[name], outputs[net.taps[name]], rtol=1e-4)
        # the conv node's own output: the conv's, or with BN folded in, the BatchNorm's
        assert_close(raw[name], outputs[folded[name] if name in folded else name], rtol=1e-4)
