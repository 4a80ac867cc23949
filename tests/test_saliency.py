"""saliency(): the four methods against a torch re-implementation with autograd (captum's
formulas), on the VGG-like net of test_torch_parity.py exported by TorchScript and dynamo.

gradient: ∂S/∂x; smoothgrad: the mean gradient over the same noisy copies; integrated: the
same Gauss–Legendre nodes and weights (captum's default), completeness delta included;
guided: every nn.ReLU's backward replaced by relu(grad) (captum's GuidedBackprop hook).
Tolerance: max |onnxviz − torch| / max |torch| ≤ 1e-4.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import assert_close  # noqa: E402
from test_torch_parity import MEAN, SIZE, STD, build, export  # noqa: E402

import onnxviz  # noqa: E402
from onnxviz.errors import OnnxvizError  # noqa: E402

TARGET = np.array([3, 7])


@pytest.fixture(scope="module", params=["torchscript", "dynamo"])
def case(request, tmp_path_factory):
    net = build("vgg")
    x = ((np.random.default_rng(4).random((2, SIZE, SIZE, 3)) - MEAN) / STD).astype(np.float32)
    x = x.transpose(0, 3, 1, 2).copy()
    path = tmp_path_factory.mktemp("sal") / f"vgg_{request.param}.onnx"
    export(net, torch.from_numpy(x[:1]), path, request.param)
    return net, x, onnxviz.load(path)


def _grad(net, x: np.ndarray, target) -> np.ndarray:
    xt = torch.from_numpy(np.ascontiguousarray(x, np.float32)).requires_grad_(True)
    out = net(xt)
    out[torch.arange(len(x)), torch.as_tensor(target)].sum().backward()
    return xt.grad.numpy().astype(np.float64)


def test_gradient(case):
    net, x, m = case
    a = onnxviz.saliency(m, x, TARGET)
    assert a.method == "gradient" and a.values.dtype == np.float32 and a.values.shape == x.shape
    assert_close(a.values, _grad(net, x, TARGET))
    with torch.no_grad():
        assert_close(a.score, net(torch.from_numpy(x)).numpy()[[0, 1], TARGET], 1e-5)
    assert a.heatmap.shape == (2, SIZE, SIZE) and a.heatmap.min() >= 0 and a.heatmap.max() == 1
    top = onnxviz.saliency(m, x)  # target None: each image's top class
    with torch.no_grad():
        assert list(top.target) == list(net(torch.from_numpy(x)).argmax(1).numpy())


def test_smoothgrad(case):
    net, x, m = case
    a = onnxviz.saliency(m, x, TARGET, "smoothgrad", n=6, noise=0.1, seed=3)
    spread = (x.reshape(2, -1).max(1) - x.reshape(2, -1).min(1)).reshape(2, 1, 1, 1)
    eps = np.random.default_rng(3).standard_normal((2, 6) + x.shape[1:]).astype(np.float32)
    noisy = (x[:, None] + eps * (0.1 * spread)[:, None]).reshape((12,) + x.shape[1:])
    want = _grad(net, noisy, np.repeat(TARGET, 6)).reshape((2, 6) + x.shape[1:]).mean(1)
    assert_close(a.values, want)


def test_integrated_gradients(case):
    net, x, m = case
    base = np.full_like(x, -0.5)
    a = onnxviz.saliency(m, x, TARGET, "integrated", steps=20, baseline=-0.5)
    nodes, weights = np.polynomial.legendre.leggauss(20)
    alphas, weights = 0.5 * (1 + nodes), 0.5 * weights
    path = base[:, None] + alphas.reshape(1, -1, 1, 1, 1) * (x - base)[:, None]
    g = _grad(net, path.reshape((40,) + x.shape[1:]), np.repeat(TARGET, 20)).reshape((2, 20) + x.shape[1:])
    want = (x - base) * np.tensordot(weights, g, axes=([0], [1]))
    assert_close(a.values, want)
    with torch.no_grad():
        f = net(torch.from_numpy(x)).numpy()[[0, 1], TARGET] - net(torch.from_numpy(base)).numpy()[[0, 1], TARGET]
    assert_close(a.delta, want.reshape(2, -1).sum(1) - f, 1e-3)
    fine = onnxviz.saliency(m, x, TARGET, "integrated", steps=100, baseline=-0.5)  # completeness
    assert np.all(np.abs(fine.delta) < np.abs(a.delta)) and np.all(np.abs(fine.delta) <= 0.03 * np.abs(f))


def test_guided_backprop(case):
    net, x, m = case
    a = onnxviz.saliency(m, x, TARGET, "guided")
    hooks = [mod.register_full_backward_hook(lambda _m, grad_in, _out: (torch.relu(grad_in[0]),))
             for mod in net.modules() if isinstance(mod, torch.nn.ReLU)]
    try:
        want = _grad(net, x, TARGET)
    finally:
        for h in hooks:
            h.remove()
    assert_close(a.values, want)
    assert not np.allclose(a.values, onnxviz.saliency(m, x, TARGET).values)


def test_bad_method(case):
    with pytest.raises(OnnxvizError) as e:
        onnxviz.saliency(case[2], case[1], method="occlusion")
    assert str(e.value) == "unknown saliency method 'occlusion'; methods are: gradient, smoothgrad, integrated, guided"
