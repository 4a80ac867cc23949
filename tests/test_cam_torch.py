"""Class activation maps by onnxviz against the REAL pytorch-grad-cam 1.5.7, on torch nets.

Four small networks with seeded random weights, exported to ONNX (TorchScript; the ResNet also
by dynamo), two photos through torch's preprocessing, fed to both sides as the same tensor:

* ``vgg``: conv/ReLU stages and a Flatten → Linear classifier; the map of the last ReLU;
* ``resnet``: residual blocks, global average pooling, Linear; the map of the last block's
  output after its residual Add and ReLU (a tensor, not a conv layer: onnxviz's default);
* ``mobilenet``: depthwise and pointwise convs with Hardswish (activations below 0, so
  AblationCAM sets an ablated channel to ``min − k·1e7``), global pooling, Linear;
* ``softmax``: the VGG exported with a final Softmax (onnxviz scores the logit it reads;
  pytorch-grad-cam is given the net without it);
* ``resnet_dynamo``: the ResNet exported by the dynamo exporter (other node names, BatchNorm
  folded by its optimiser), its default layer found the same way.

For every method, pytorch-grad-cam's ``get_cam_weights``, ``get_cam_image`` and ``__call__``
(the final heatmap) on the same activations' module equal onnxviz's ``weights``, ``raw`` and
``heatmap``: max |onnxviz − pytorch-grad-cam| / max |pytorch-grad-cam| ≤ 1e-4 for weights and
raw (AblationCAM ≤ 1e-3), and max |difference| ≤ 1e-3 on the heatmap (values in [0, 1]).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from conftest import grad_cam  # noqa: E402
from test_torch_parity import BasicBlock  # noqa: E402  (the residual block of the parity tests' ResNet)

import onnxviz  # noqa: E402

SIZE = 40
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
WORST: dict = {}  # (net, method) → max |difference| of raw, relative raw, weights, relative weights, heatmap


class VGG(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 24, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(24 * 10 * 10, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.classifier(self.features(x))

    target = "features.6"


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.layer1 = nn.Sequential(BasicBlock(8, 8, 1), BasicBlock(8, 16, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.layer1(self.stem(x))), 1))

    target = "layer1.1"


class MobileNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, groups=16, bias=False), nn.BatchNorm2d(16), nn.Hardswish())
        self.pw = nn.Sequential(nn.Conv2d(16, 24, 1, bias=False), nn.BatchNorm2d(24), nn.Hardswish())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.pw(self.dw(self.stem(x)))), 1))

    target = "pw.2"


class WithSoftmax(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return torch.softmax(self.net(x), dim=1)


NETS = {"vgg": VGG, "resnet": ResNet, "mobilenet": MobileNet, "softmax": VGG, "resnet_dynamo": ResNet}
#: the ONNX tensor of each net's target module (TorchScript's names), None: onnxviz's default layer
LAYERS = {"vgg": "/features/features.6/Relu_output_0", "resnet": None, "mobilenet": "pw.0",
          "softmax": "net.features.5", "resnet_dynamo": None}
METHODS = ("eigen", "score", "ablation", "grad", "grad++", "xgrad", "layer", "hires")


def build(key: str) -> nn.Module:
    torch.manual_seed(sum(map(ord, key)))
    net = NETS[key]()
    for mod in net.modules():  # BatchNorm statistics far from the identity
        if isinstance(mod, nn.BatchNorm2d):
            c = mod.num_features
            mod.running_mean.copy_(torch.randn(c) * 0.5)
            mod.running_var.copy_(torch.rand(c) * 1.5 + 0.25)
            mod.weight.data.copy_(torch.rand(c) + 0.5)
            mod.bias.data.copy_(torch.randn(c) * 0.2)
    return net.eval()


def export(net, x, path, exporter: str = "torchscript") -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            if exporter == "torchscript":
                torch.onnx.export(net, (x,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                                  dynamic_axes={"input": {0: "N"}})
            else:
                pytest.importorskip("onnxscript")
                torch.onnx.export(net, (x,), str(path), dynamo=True,
                                  dynamic_shapes=({0: torch.export.Dim("N", min=1, max=64)},))
        finally:
            logging.disable(logging.NOTSET)


@pytest.fixture(scope="module")
def photos():
    from matplotlib import cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
        a = np.asarray(im.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))
    with Image.open("models/demo_sample.png") as im:
        b = np.asarray(im.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))
    return ((np.stack([a, b]) / 255.0 - MEAN) / STD).astype(np.float32).transpose(0, 3, 1, 2).copy()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cam_nets")
    made = {}
    x = torch.zeros(1, 3, SIZE, SIZE)
    for key in NETS:
        net = build(key)
        path = folder / f"{key}.onnx"
        export(WithSoftmax(net) if key == "softmax" else net, x, path,
               "dynamo" if key.endswith("dynamo") else "torchscript")
        made[key] = (net, onnxviz.load(path))
    return made


def reference(gc, net: nn.Module, key: str, method: str, x: np.ndarray, target: np.ndarray) -> dict:
    """pytorch-grad-cam's weights (get_cam_weights), raw map (get_cam_image) and heatmap (__call__)."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    kind = {"eigen": gc.EigenCAM, "score": gc.ScoreCAM, "ablation": gc.AblationCAM, "grad": gc.GradCAM,
            "grad++": gc.GradCAMPlusPlus, "xgrad": gc.XGradCAM, "layer": gc.LayerCAM, "hires": gc.HiResCAM}[method]
    module = dict(net.named_modules())[NETS[key].target]
    xt = torch.from_numpy(x)
    targets = [ClassifierOutputTarget(int(t)) for t in target]
    with kind(model=net, target_layers=[module]) as cam:
        heat = cam(input_tensor=xt, targets=targets)
        acts = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy() if cam.activations_and_grads.gradients else None
        raw = cam.get_cam_image(xt, module, targets, acts, grads, False)
        weights = (cam.get_cam_weights(xt, module, targets, acts, grads)
                   if method not in ("eigen", "layer", "hires") else None)
    return {"heatmap": heat, "raw": raw, "weights": weights}


def _rel(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("key", list(NETS))
def test_cam_equals_pytorch_grad_cam(key, method, models, photos):
    gc = grad_cam()
    net, m = models[key]
    with torch.no_grad():
        logits = net(torch.from_numpy(photos)).numpy()
    target = np.array([int(logits[0].argmax()), 3])  # the top class, and a given one
    got = onnxviz.cam(m, photos, method=method, layer=LAYERS[key], target=None if method == "eigen" else target)
    want = reference(gc, net, key, method, photos, target)
    tol = 1e-3 if method == "ablation" else 1e-4
    assert got.heatmap.dtype == got.raw.dtype == np.float32 and got.heatmap.shape == (2, SIZE, SIZE)
    raw = _rel(got.raw, want["raw"])
    weights = None if want["weights"] is None else _rel(got.weights, want["weights"])
    heat = float(np.abs(got.heatmap - want["heatmap"]).max())
    abs_weights = None if weights is None else float(np.abs(got.weights - want["weights"]).max())
    WORST[(key, method)] = (float(np.abs(got.raw - want["raw"]).max()), raw, abs_weights, weights, heat)
    assert raw <= tol, raw
    assert (got.weights is None) == (want["weights"] is None)
    assert weights is None or weights <= tol, weights
    assert heat <= 1e-3, heat
    if method != "eigen":
        assert list(got.target) == list(target)
        np.testing.assert_allclose(got.score, logits[[0, 1], target], rtol=1e-4, atol=1e-5)


def test_guided_grad_equals_pytorch_grad_cam_s_example(models, photos):
    """pytorch-grad-cam's usage: GuidedBackpropReLUModel's gradient times the Grad-CAM heatmap
    (``cam_mask * gb``, before ``deprocess_image``)."""
    gc = grad_cam()
    from pytorch_grad_cam.guided_backprop import GuidedBackpropReLUModel

    _, m = models["vgg"]
    got = onnxviz.cam(m, photos, "guided-grad", LAYERS["vgg"], [2, 7])
    for k, t in enumerate((2, 7)):
        net = build("vgg")  # the same weights; GuidedBackpropReLUModel puts back one ReLU module for all
        want = reference(gc, net, "vgg", "grad", photos[k:k + 1], np.array([t]))["heatmap"][0]
        gb = GuidedBackpropReLUModel(net, device="cpu")(torch.from_numpy(photos[k:k + 1]), target_category=t)
        np.testing.assert_allclose(got.heatmap[k], want, atol=1e-3)
        assert _rel(got.guided[k], gb * want[..., None]) <= 1e-4
