"""Small models and images for the report tests (plain, hostile, without a class output)."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from builders import Net, save

HOSTILE = ("<img src=x onerror=alert(1)>", "</script><script>alert(2)</script>", "b2&c1\"'")
HOSTILE_LABEL = "<svg onload=alert(4)>"
HOSTILE_SOURCE = "<b>bold</b><script>alert(3)</script>"


def classifier(path, names=("b1c1", "b1c2", "b2c1"), metadata=None, classes=5, seed=0):
    """conv-relu ×2, pool, conv-relu, global pool, Gemm, Softmax; NCHW (N, 3, 32, 32), batch free.

    Returns ``(path, logits tensor name)``.
    """
    net = Net(("N", 3, 32, 32), seed=seed)
    net.conv(3, 4, name="c0"); net.act()
    net.conv(4, 6, name="c1"); net.act(); net.pool()
    net.conv(6, 8, name="c2"); net.act()
    net.cur = net.node("GlobalAveragePool", [net.cur])
    net.cur = net.node("Flatten", [net.cur])
    w = net.init("fc.w", net.r.standard_normal((8, classes)).astype(np.float32))
    b = net.init("fc.b", net.r.standard_normal(classes).astype(np.float32))
    logits = net.cur = net.node("Gemm", [net.cur, w, b])
    net.cur = net.node("Softmax", [net.cur], axis=1)
    meta = {"onnxviz.preprocess": "unit",
            "onnxviz.layer_names": json.dumps(dict(zip(("c0", "c1", "c2"), names)))}
    meta.update(metadata or {})
    return save(net.model(metadata=meta), path), logits


def hostile(path):
    """The classifier with hostile layer names, metadata and labels."""
    labels = [HOSTILE_LABEL, "cat", "dog", "a & b", "</td></tr>"]
    return classifier(path, names=HOSTILE, metadata={"onnxviz.source": HOSTILE_SOURCE,
                                                     "onnxviz.labels": json.dumps(labels)})


def feature_net(path):
    """Convs only: its output is a 8×8×8 map per image, no class scores."""
    net = Net(("N", 3, 32, 32), seed=1)
    net.conv(3, 4, name="f0"); net.act(); net.pool()
    net.conv(4, 8, name="f1"); net.act(); net.pool()
    return save(net.model(metadata={"onnxviz.preprocess": "unit"}), path)


def photos(folder, n=2, size=(40, 48)):
    """``n`` seeded random RGB PNGs (with a bright square each, so maps differ); their paths."""
    paths = []
    for k in range(n):
        r = np.random.default_rng(10 + k)
        arr = (r.random((*size, 3)) * 120).astype(np.uint8)
        arr[5 + 6 * k:20 + 6 * k, 8:24] = (250, 40 * k, 30)
        p = folder / f"photo{k}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths
