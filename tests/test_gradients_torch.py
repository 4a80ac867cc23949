"""Gradients by onnxviz (an ONNX backward graph in onnxruntime) against torch.autograd.grad.

The seven networks of test_torch_parity.py, each exported three ways (TorchScript, dynamo,
dynamo with optimize=False). For two images with different objectives (class score of a
different output element per image, plus half the mean of a different output channel), the
gradient at the input and at EVERY conv layer's feature map equals torch.autograd.grad on the
same module and input: max |onnxviz − torch| / max |torch| ≤ 1e-4.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import assert_close  # noqa: E402
from test_torch_parity import EXPORTERS, MEAN, NETS, SIZE, STD, build, export  # noqa: E402

import onnxviz  # noqa: E402
from onnxviz.explain.gradients import Channel, Score, gradients  # noqa: E402

WORST: dict = {}  # (net, exporter) → worst relative error, for the report


def _objective(out: "torch.Tensor", index, channel):
    """Per image n: out.flatten()[index[n]] + 0.5 · mean(out[n, channel[n]])."""
    flat = out.flatten(1)
    rows = torch.arange(len(out))
    return flat[rows, index] + 0.5 * out[rows, channel].flatten(1).mean(1)


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("key", list(NETS))
def test_gradients_equal_autograd(key, exporter, tmp_path):
    net = build(key)
    r = np.random.default_rng(3)
    x = ((r.random((2, SIZE, SIZE, 3)) - MEAN) / STD).astype(np.float32).transpose(0, 3, 1, 2).copy()
    path = tmp_path / f"{key}_{exporter}.onnx"
    export(net, torch.from_numpy(x[:1]), path, exporter)
    m = onnxviz.load(path)

    modules = dict(net.named_modules())
    maps = {}
    handles = [modules[tap].register_forward_hook(lambda _m, _i, out, name=name: maps.__setitem__(name, out))
               for name, tap in net.taps.items()]
    xt = torch.from_numpy(x).requires_grad_(True)
    out = net(xt)
    for h in handles:
        h.remove()
    per_item = out[0].numel()
    index = np.array([7, per_item - 5])
    channel = np.array([1, 0]) if out.ndim > 2 else None
    if channel is None:
        objective = Score(index)
        torch_value = out[torch.arange(2), torch.from_numpy(index)]
    else:
        objective = [Score(index, tensor=m.proto.graph.output[0].name),
                     Channel(m.proto.graph.output[0].name, channel, weight=0.5)]
        torch_value = _objective(out, torch.from_numpy(index), torch.from_numpy(channel))
    layers = [layer.name for layer in m.layers]
    wanted = [xt] + [maps[name] for name in layers]
    torch_grads = torch.autograd.grad(torch_value.sum(), wanted)

    values, grads = gradients(m, x, objective, wrt=[m.input.name] + layers)
    assert_close(values, torch_value.detach().numpy(), rtol=1e-5)
    worst = 0.0
    for name, want in zip([m.input.name] + layers, torch_grads):
        got = grads[name]
        assert got.dtype == np.float32 and got.shape == tuple(want.shape), name
        scale = max(float(want.abs().max()), 1e-12)
        rel = float(np.abs(got - want.numpy()).max()) / scale
        worst = max(worst, rel)
        assert rel <= 1e-4, (name, rel)
    WORST[(key, exporter)] = worst
