"""A model above 2 GiB, saved with external data: onnxviz opens it, lists its layers, draws
filters and feature maps, reading only the weights each step needs, writing no copy of them.

The model (``scripts/make_large_model.py``): stem 3×3 conv, eight 1×1 convs of 8192×8192
(256 MiB each), a 1×1 head; 2.15 GB of weights in one ``.data`` file, the head's beyond the
2 GiB mark. It is written once per module (streamed, ~4 s) and deleted at the end.

Every onnxviz run is a subprocess, measured with ``os.wait4`` from a tiny runner process: a
child's ``ru_maxrss`` starts from its parent's peak (Linux keeps it across fork + exec), and
this pytest process may have loaded TensorFlow or PyTorch for other tests. Each run gets a
fresh, empty TMPDIR and working folder, and the model folder must come out unchanged.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))

import make_large_model  # noqa: E402

pytestmark = pytest.mark.slow

MiB = 1 << 20
OVERHEAD = 250 * MiB   # Python + numpy + onnx + onnxruntime + Pillow: measured 46–111 MiB

RUNNER = r"""
import json, os, subprocess, sys, time
with open(sys.argv[1], "wb") as out, open(sys.argv[2], "wb") as err:
    start = time.perf_counter()
    proc = subprocess.Popen(sys.argv[3:], stdout=out, stderr=err)
    _, status, usage = os.wait4(proc.pid, 0)
print(json.dumps({"code": os.waitstatus_to_exitcode(status), "wall": time.perf_counter() - start,
                  "peak": usage.ru_maxrss * 1024}))
"""

API = r"""
import sys
import numpy as np
import onnxviz
m = onnxviz.load(sys.argv[1])
fm = m.feature_maps(sys.argv[2], layers=["big1", "head"])
np.savez(sys.argv[3], big1=fm["big1"], head=fm["head"], head_filters=m.filters("head"),
         big8_corner=m.filters("big8")[:4, :16])
"""


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    root = tmp_path_factory.mktemp("large")
    if shutil.disk_usage(root).free < 3 << 30:
        pytest.skip("needs 3 GB of free disk for a 2.15 GB model")
    try:
        info = make_large_model.write(root / "model")
    except BaseException:
        shutil.rmtree(root / "model", ignore_errors=True)
        raise
    img = (np.random.default_rng(3).random((8, 8, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(root / "image.png")
    info["image"], info["pixels"], info["root"] = str(root / "image.png"), img, root
    yield info
    shutil.rmtree(root / "model")  # pytest keeps the last runs' tmp folders: not 2 GB of them


def snapshot(folder):
    return {e.name: (e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(folder)}


def run(large, name, argv):
    """Run ``argv`` in a clean subprocess; return (stdout, peak RSS bytes, wall s)."""
    work = large["root"] / name
    tmp = work / "tmp"
    tmp.mkdir(parents=True)
    env = {**os.environ, "TMPDIR": str(tmp), "TEMP": str(tmp), "TMP": str(tmp), "MPLBACKEND": "Agg"}
    env.pop("ORT_DISABLE_TELEMETRY", None)  # onnxviz.runtime must turn onnxruntime's '.ses' file off itself
    folder = os.path.dirname(large["model"])
    before = snapshot(folder)
    res = subprocess.run([sys.executable, "-c", RUNNER, str(work / "stdout"), str(work / "stderr"), *argv],
                         cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    out, err = (work / "stdout").read_text(), (work / "stderr").read_text()
    assert report["code"] == 0, err
    assert snapshot(folder) == before              # no file added, resized or touched
    written = {p.name: p.stat().st_size for p in tmp.iterdir()}
    assert written == {}                           # no temporary copy of anything
    assert sorted(os.listdir(work)) == ["stderr", "stdout", "tmp"]  # nothing in the cwd
    return out, report["peak"], report["wall"]


def cli(*args):
    return [sys.executable, "-m", "onnxviz", *map(str, args)]


def test_model_is_beyond_protobuf(large):
    assert os.path.getsize(large["data"]) > 1 << 31
    proto = onnx.load(large["model"], load_external_data=False)
    offsets = {t.name: int({e.key: e.value for e in t.external_data}["offset"]) for t in proto.graph.initializer}
    assert offsets["head.weight"] > 1 << 31       # a tensor wholly past the 2 GiB mark


def test_summary_lists_every_layer_without_reading_weights(large):
    out, peak, _ = run(large, "summary", cli("summary", large["model"], "--json"))
    info = json.loads(out)
    assert [l["name"] for l in info["layers"]] == make_large_model.layer_names()
    assert [l["filter_shape"] for l in info["layers"][1:]] == [[8192, 8192, 1, 1]] * 8 + [[64, 8192, 1, 1]]
    assert all(l["output_shape"][1:] == [8, 8] for l in info["layers"])
    assert peak < 300 * MiB, peak / MiB           # of 2.15 GB of weights


def test_filters_of_a_256_mib_layer(large):
    out_dir = large["root"] / "png"
    out_dir.mkdir(exist_ok=True)
    png = out_dir / "big8.png"
    _, peak, _ = run(large, "filters", cli("filters", large["model"], "--layer", "big8", "-o", png))
    with Image.open(png) as img:
        img.load()
        assert img.width > 100 and img.height > 100
    # the one layer read (256 MiB, once: not as bytes, then a protobuf, then an array)
    assert peak < large["layers"]["big8"] + OVERHEAD, peak / MiB


def test_feature_maps_of_the_first_and_the_deepest_layer(large):
    out_dir = large["root"] / "png"
    out_dir.mkdir(exist_ok=True)
    first, deep = out_dir / "stem.png", out_dir / "head.png"
    _, peak_first, _ = run(large, "features_first", cli("features", large["model"], large["image"],
                                                         "--layer", "stem", "-o", first))
    _, peak_deep, _ = run(large, "features_deep", cli("features", large["model"], large["image"],
                                                       "--layer", "head", "-o", deep))
    for png in (first, deep):
        with Image.open(png) as img:
            img.load()
            assert img.width > 100 and img.height > 100
    # the stem needs 0.9 MB of weights: the other 2.15 GB are never read
    assert peak_first < 300 * MiB, peak_first / MiB
    # the head needs every weight; the activations are 10 maps of at most 8192×8×8 float32
    needed = sum(large["layers"].values())
    activations = 10 * 8192 * 8 * 8 * 4
    assert needed > 2 << 30
    assert peak_deep < needed + activations + OVERHEAD, (peak_deep / MiB, needed / MiB)


def test_feature_map_values_and_filters_through_the_python_api(large):
    npz = large["root"] / "api.npz"
    run(large, "api", [sys.executable, "-c", API, large["model"], large["image"], npz])
    got = np.load(npz)
    x = (large["pixels"].transpose(2, 0, 1)[None] / 255.0).astype(np.float32)  # preset 'unit'
    for layer in ("big1", "head"):
        ref = make_large_model.reference(large, x, layer)
        assert got[layer].shape == ref.shape
        assert np.abs(got[layer] - ref).max() <= 1e-4 * np.abs(ref).max(), layer
        assert (ref > 0).mean() > 0.3   # a live network, not all zeros
    small = make_large_model._small(large["channels"], large["seed"])
    np.testing.assert_array_equal(got["head_filters"], small["head.weight"])
    ext = make_large_model._block(large["channels"], large["seed"])
    corner = make_large_model._big_rows(ext, 8, large["channels"], 0, 4)[:, :16]
    np.testing.assert_array_equal(got["big8_corner"][:, :, 0, 0], corner)
    os.remove(npz)
