"""Write a CNN whose weights (external data, one file) are larger than 2 GiB, and its numpy reference.

No single protobuf can hold such a model (2 GiB is protobuf's limit), so the graph is built with
onnx.helper and every initializer is an external-data reference written by hand: the bytes are
streamed into ``<name>.onnx.data`` in 8 MB pieces, never all in memory. The content is a seeded
random block of ~16 MB read at a different shift for each tensor (fast, deterministic, and no
two layers alike), so :func:`reference` recomputes any layer's feature map from that block
without reading the file or holding a whole layer.

Layers (default sizes; every conv is followed by Relu, input 1×3×8×8, preset ``unit``):

========  ===================  ==============  =====================================
layer     conv                 weight          bytes
========  ===================  ==============  =====================================
stem      3×3, 3 → C           C×3×3×3         0.9 MB
big1…8    1×1, C → C           C×C×1×1         256 MiB each (C = 8192)
head      1×1, C → 64          64×C×1×1        2 MiB
========  ===================  ==============  =====================================

Every tensor starts on a 64 KiB boundary; ``head`` lies wholly beyond 2 GiB in the file.
Used by ``tests/test_large.py`` and ``scripts/bench_large.py``.

    python scripts/make_large_model.py -o /tmp/large   # writes /tmp/large/large.onnx(.data)
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper

CHANNELS = 8192
BIG_LAYERS = 8
SIDE = 8
HEAD = 64
BLOCK = 4_194_301          # floats in the random block (a prime, so rows never line up)
PIECE = 1 << 21            # floats written / multiplied at a time (8 MB)
ALIGN = 1 << 16


def _block(channels: int, seed: int) -> np.ndarray:
    """The random block, He-scaled for a C-input 1×1 conv, extended so any PIECE-long run is a slice."""
    r = np.random.default_rng(seed)
    block = (r.standard_normal(BLOCK, dtype=np.float32) * np.float32(np.sqrt(2.0 / channels)))
    return np.concatenate([block, block[:PIECE]])


def _shift(k: int) -> int:
    return (k * 1_000_003 + 12_345) % BLOCK


def _big_rows(ext: np.ndarray, k: int, channels: int, r0: int, r1: int) -> np.ndarray:
    """Rows ``r0:r1`` of big layer ``k``'s ``C×C`` weight (a view; ``(r1-r0)·C ≤ PIECE``)."""
    start = (_shift(k) + r0 * channels) % BLOCK
    return ext[start:start + (r1 - r0) * channels].reshape(r1 - r0, channels)


def _small(channels: int, seed: int) -> dict:
    r = np.random.default_rng(seed + 1)
    out = {"stem.weight": (r.standard_normal((channels, 3, 3, 3), dtype=np.float32) * np.float32(0.3)),
           "head.weight": (r.standard_normal((HEAD, channels, 1, 1), dtype=np.float32)
                           * np.float32(np.sqrt(2.0 / channels)))}
    out["stem.bias"] = r.standard_normal(channels, dtype=np.float32) * np.float32(0.1)
    for k in range(1, BIG_LAYERS + 1):
        out[f"big{k}.bias"] = r.standard_normal(channels, dtype=np.float32) * np.float32(0.01)
    out["head.bias"] = r.standard_normal(HEAD, dtype=np.float32) * np.float32(0.01)
    return out


def layer_names(big_layers: int = BIG_LAYERS) -> list[str]:
    return ["stem"] + [f"big{k}" for k in range(1, big_layers + 1)] + ["head"]


def write(folder, name: str = "large", channels: int = CHANNELS, big_layers: int = BIG_LAYERS,
          seed: int = 0) -> dict:
    """Write ``folder/<name>.onnx`` and ``<name>.onnx.data``; return a description of them.

    ``{"model", "data", "data_bytes", "layers": {layer: weight+bias bytes}}``.
    """
    if PIECE % channels:
        raise ValueError(f"channels must divide {PIECE}")
    os.makedirs(folder, exist_ok=True)
    model_path = os.path.join(os.fspath(folder), f"{name}.onnx")
    location = f"{name}.onnx.data"
    ext = _block(channels, seed)
    small = _small(channels, seed)
    rows = PIECE // channels
    inits, nodes, sizes = [], [], {}
    cur = "input"
    with open(os.path.join(os.fspath(folder), location), "wb") as f:
        def tensor(tname, dims, pieces):
            f.seek(-f.tell() % ALIGN, os.SEEK_CUR)   # a hole, not written zeros
            offset, length = f.tell(), 0
            for piece in pieces:
                f.write(memoryview(np.ascontiguousarray(piece, dtype="<f4")).cast("B"))
                length += piece.nbytes
            t = TensorProto(name=tname, data_type=TensorProto.FLOAT, dims=list(dims),
                            data_location=TensorProto.EXTERNAL)
            for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
                t.external_data.add(key=key, value=value)
            inits.append(t)
            return length

        def conv(lname, weight_dims, pieces, bias, **attrs):
            nonlocal cur
            sizes[lname] = tensor(f"{lname}.weight", weight_dims, pieces) + tensor(f"{lname}.bias", bias.shape, [bias])
            nodes.append(helper.make_node("Conv", [cur, f"{lname}.weight", f"{lname}.bias"], [f"{lname}_conv"],
                                          name=lname, **attrs))
            nodes.append(helper.make_node("Relu", [f"{lname}_conv"], [f"{lname}_relu"], name=f"{lname}_relu"))
            cur = f"{lname}_relu"

        conv("stem", (channels, 3, 3, 3), [small["stem.weight"]], small["stem.bias"], kernel_shape=[3, 3], pads=[1] * 4)
        for k in range(1, big_layers + 1):
            pieces = (_big_rows(ext, k, channels, r0, min(r0 + rows, channels)) for r0 in range(0, channels, rows))
            conv(f"big{k}", (channels, channels, 1, 1), pieces, small[f"big{k}.bias"], kernel_shape=[1, 1])
        conv("head", (HEAD, channels, 1, 1), [small["head.weight"]], small["head.bias"], kernel_shape=[1, 1])
        data_bytes = f.tell()
    graph = helper.make_graph(
        nodes, "large", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, SIDE, SIDE])],
        [helper.make_tensor_value_info(cur, TensorProto.FLOAT, [1, HEAD, SIDE, SIDE])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="make_large_model")
    helper.set_model_props(model, {"onnxviz.preprocess": "unit", "onnxviz.source": "scripts/make_large_model.py"})
    with open(model_path, "wb") as f:
        f.write(model.SerializeToString())
    return {"model": model_path, "data": os.path.join(os.fspath(folder), location), "data_bytes": data_bytes,
            "layers": sizes, "channels": channels, "big_layers": big_layers, "seed": seed}


def reference(info: dict, x: np.ndarray, upto: str) -> np.ndarray:
    """The feature map (after Relu) of layer ``upto`` for input ``x`` (1×3×H×W), float32, in numpy.

    Weights come from the random block, 8 MB at a time: nothing of the size of a layer is held.
    """
    channels, seed = info["channels"], info["seed"]
    ext = _block(channels, seed)
    small = _small(channels, seed)
    n, _, h, w = x.shape
    xp = np.pad(x[0].astype(np.float32), ((0, 0), (1, 1), (1, 1)))
    cols = np.stack([xp[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=1)  # (3, 9, h, w)
    wst = small["stem.weight"].reshape(channels, 27)
    a = np.maximum(wst @ cols.reshape(27, h * w) + small["stem.bias"][:, None], 0)   # (C, h·w)
    if upto != "stem":
        rows = PIECE // channels
        for k in range(1, info["big_layers"] + 1):
            out = np.empty_like(a)
            for r0 in range(0, channels, rows):
                r1 = min(r0 + rows, channels)
                out[r0:r1] = _big_rows(ext, k, channels, r0, r1) @ a
            a = np.maximum(out + small[f"big{k}.bias"][:, None], 0)
            if upto == f"big{k}":
                break
        else:
            a = np.maximum(small["head.weight"].reshape(HEAD, channels) @ a + small["head.bias"][:, None], 0)
    return a.reshape(1, -1, h, w)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", required=True, metavar="FOLDER")
    p.add_argument("--channels", type=int, default=CHANNELS)
    p.add_argument("--big-layers", type=int, default=BIG_LAYERS)
    args = p.parse_args(argv)
    info = write(args.output, channels=args.channels, big_layers=args.big_layers)
    print(f"wrote {info['model']} and {info['data']} ({info['data_bytes']:,} bytes of weights)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
