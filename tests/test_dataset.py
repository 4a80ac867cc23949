"""Dataset passes: top-K and statistics against a brute-force numpy reference over every
activation, resuming (after Ctrl-C and after a kill) against a pass never stopped, the Ray
engine on a local cluster against the local engine, patches cut at the right place (a
planted mark), broken files, and the command line's exact lines."""

import os
import re
import signal
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import onnxviz
from onnxviz.cli import main
from onnxviz.dataset import CHECKPOINT, ENGINES, Interrupted
from onnxviz.dataset.patches import FILL, cut_patches
from onnxviz.dataset.sources import list_images
from onnxviz.dataset.state import LayerState, Part, PassState, layer_part
from onnxviz.demo import demo_model_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = ["block1_conv2", "block3_conv2"]
sys.path.insert(0, os.path.join(ROOT, "scripts"))
try:
    from make_dataset_images import BROKEN, make_images  # the demo generator's shapes, photo crops, broken files
finally:
    sys.path.pop(0)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("images")
    good = make_images(str(path))
    return str(path), good


@pytest.fixture(scope="module")
def demo():
    return onnxviz.load(demo_model_path())


@pytest.fixture(scope="module")
def whole(folder, demo, tmp_path_factory):
    """One uninterrupted pass, written: the reference of the resume and Ray tests."""
    out = tmp_path_factory.mktemp("whole") / "out"
    return onnxviz.dataset(demo, folder[0], LAYERS, top=5, out=str(out), batch=8, checkpoint_every=10)


def same(a, b):
    assert list(a) == list(b) and a.paths == b.paths and a.skipped == b.skipped
    for name in a:
        for key, x in a[name].arrays().items():
            assert np.array_equal(x, b[name].arrays()[key], equal_nan=True), (name, key)


def brute_force(model, paths, numbers, layers, top):
    """Every activation at once, in numpy: per image and channel the max and where it is; ranked
    by value, then image number."""
    maps = model.feature_maps(list(paths), layers)
    out = {}
    for name, fm in maps.items():
        n, c, h, w = fm.shape
        flat = fm.reshape(n, c, h * w)
        value, where = flat.max(axis=2), flat.argmax(axis=2)
        ranked = [sorted(range(n), key=lambda k: (-value[k, ch], numbers[k]))[:top] for ch in range(c)]
        out[name] = {
            "count": n,
            "mean": flat.astype(np.float64).mean(axis=(0, 2)), "max": value.max(axis=0),
            "active": (flat > 0).mean(axis=(0, 2)),
            "top_value": np.array([[value[k, ch] for k in r] for ch, r in enumerate(ranked)]),
            "top_image": np.array([[numbers[k] for k in r] for r in ranked]),
            "top_yx": np.array([[divmod(int(where[k, ch]), w) for k in r] for ch, r in enumerate(ranked)]),
        }
    return out


def test_matches_a_brute_force_reference(folder, demo, whole):
    path, good = folder
    numbers = [whole.paths.index(os.path.abspath(p)) for p in good]
    ref = brute_force(demo, good, numbers, LAYERS, 5)
    for name in LAYERS:
        got, want = whole[name], ref[name]
        assert got.count == want["count"] == len(good)
        np.testing.assert_array_equal(got.top_image, want["top_image"])
        np.testing.assert_array_equal(got.top_yx, want["top_yx"])
        np.testing.assert_array_equal(got.top_value, want["top_value"])
        np.testing.assert_array_equal(got.max, want["max"])
        np.testing.assert_allclose(got.mean, want["mean"], rtol=1e-6)
        np.testing.assert_allclose(got.active, want["active"], rtol=1e-6)
        assert got.top_value.dtype == np.float32 and got.top_image.dtype == np.int64 and got.top_yx.shape == (
            len(got.mean), 5, 2)


def test_files_written(folder, whole):
    out = whole.out
    assert sorted(os.listdir(out)) == ["block1_conv2.npz", "block1_conv2.png", "block3_conv2.npz", "block3_conv2.png",
                                       "index.txt", "skipped.txt"]
    with open(os.path.join(out, "index.txt"), encoding="utf-8") as fh:
        assert fh.read().splitlines() == whole.paths
    with np.load(os.path.join(out, "block3_conv2.npz"), allow_pickle=False) as z:
        assert sorted(z.files) == ["active", "count", "max", "mean", "top_image", "top_value", "top_yx"]
        for key, value in whole["block3_conv2"].arrays().items():
            np.testing.assert_array_equal(z[key], value)
    lines = open(os.path.join(out, "skipped.txt"), encoding="utf-8").read().splitlines()
    skipped = dict(line.split("\t") for line in lines)
    assert sorted(skipped) == sorted(os.path.join(folder[0], b) for b in BROKEN)
    for name, why in BROKEN.items():
        assert skipped[os.path.join(folder[0], name)].startswith(why.format(os.path.join(folder[0], name)))
    with Image.open(os.path.join(out, "block3_conv2.png")) as img:
        img.load()
        assert img.mode == "RGB" and img.height > 32 * 40 and img.width > 5 * 40  # 32 rows of 5 patches ≥ 40 px


def test_resume_after_ctrl_c_equals_a_pass_never_stopped(folder, demo, whole, tmp_path):
    out = tmp_path / "out"

    def ctrl_c(done, total):
        if done >= total // 2:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted) as e:
        onnxviz.dataset(demo, folder[0], LAYERS, top=5, out=str(out), batch=3, checkpoint_every=7, progress=ctrl_c)
    total = len(whole.paths)
    assert re.fullmatch(rf"interrupted after (\d+) of {total} images; the checkpoint is in '{re.escape(str(out))}': "
                        r"run the same command with --resume to go on", str(e.value))
    assert sorted(os.listdir(out)) == [CHECKPOINT, "index.txt"]   # nothing else until the end
    with pytest.raises(onnxviz.OnnxvizError) as e:
        onnxviz.dataset(demo, folder[0], LAYERS, top=4, out=str(out), resume=True)
    assert str(e.value) == (f"the checkpoint in '{out}' is of another pass: its top is 5, now 4; resume with the "
                            "same model, SOURCE, layers, top, preprocessing and size, or delete it to start again")
    resumed = onnxviz.dataset(demo, folder[0], LAYERS, top=5, out=str(out), batch=11, resume=True)
    assert 0 < resumed.images < total
    same(resumed, whole)
    assert CHECKPOINT not in os.listdir(out)
    for name in ("block3_conv2.npz", "block1_conv2.png", "skipped.txt"):
        assert (out / name).read_bytes() == open(os.path.join(whole.out, name), "rb").read()


def test_resume_after_a_kill_equals_a_pass_never_stopped(folder, whole, tmp_path):
    """SIGKILL, no handler runs: the last periodic checkpoint is what is left."""
    out = tmp_path / "out"
    code = textwrap.dedent(f"""
        import os, signal, onnxviz
        def kill(done, total):
            if done >= 0.6 * total:
                os.kill(os.getpid(), signal.SIGKILL)
        onnxviz.dataset({str(demo_model_path())!r}, {folder[0]!r}, {LAYERS!r}, top=5, out={str(out)!r}, batch=4,
                        checkpoint_every=8, progress=kill)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    state, _ = PassState.from_bytes((out / CHECKPOINT).read_bytes())
    assert 8 <= state.seen < 0.6 * len(whole.paths) + 4
    assert not [n for n in os.listdir(out) if n.startswith(".onnxviz-")]   # no temporary file left either
    assert main(["dataset", str(demo_model_path()), folder[0], "--layer", LAYERS[0], "--layer", LAYERS[1],
                 "--top", "5", "--resume", "-o", str(out)]) == 0
    for name in ("block1_conv2.npz", "block3_conv2.npz", "skipped.txt", "index.txt"):
        assert (out / name).read_bytes() == open(os.path.join(whole.out, name), "rb").read()


# ---------------------------------------------------------------- a planted mark

MARK = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.float32)   # a plus, in 2×2-pixel blocks


def mark_detector(path):
    """2×2 average pool (stride 2), then a 3×3 conv whose channel 0 is a red plus of 2×2 blocks
    (zero mean) and channel 1 the mean brightness: field 6×6, jump 2, offset −2."""
    w = np.zeros((2, 3, 3, 3), np.float32)
    w[0, 0] = (MARK - MARK.mean()) * 2
    w[0, 1] = w[0, 2] = -(MARK - MARK.mean())
    w[1] = 1 / 27
    nodes = [helper.make_node("AveragePool", ["x"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
             helper.make_node("Conv", ["p", "w"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3], name="detect"),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 48, 48])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(m, {"onnxviz.preprocess": "unit"})
    onnx.save(m, str(path))
    return str(path)


def test_a_planted_mark_is_found_at_its_place(tmp_path):
    rng = np.random.default_rng(3)
    red = np.zeros((6, 6, 3), np.uint8)
    red[..., 0] = np.kron(MARK, np.ones((2, 2))) * 255
    places = {4: (20, 30), 9: (0, 42)}              # image number → top-left of the mark (even: pool-aligned)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k in range(12):
        img = (rng.random((48, 48, 3)) * 60).astype(np.uint8)
        if k in places:
            y, x = places[k]
            img[y:y + 6, x:x + 6] = red
        Image.fromarray(img).save(folder / f"i{k:02d}.png")
    model = onnxviz.load(mark_detector(tmp_path / "marks.onnx"))
    res = onnxviz.dataset(model, str(folder), ["detect"], top=3, out=str(tmp_path / "out"), batch=5)
    r = res["detect"]
    assert r.field == onnxviz.graph.receptive.Field((6, 6), (2, 2), (-2, -2))
    assert sorted(r.top_image[0, :2].tolist()) == [4, 9]
    for q in range(2):
        y, x = places[int(r.top_image[0, q])]
        assert tuple(r.top_yx[0, q]) == ((y + 2) // 2, (x + 2) // 2)     # the box −2+2p … starts at the mark
    patches, present = cut_patches(r.arrays(), r.field, res.paths, (48, 48), 2)
    assert patches.shape == (2, 3, 6, 6, 3) and present.all()
    for q in range(2):
        np.testing.assert_array_equal(patches[0, q], red)                # the patch is the mark itself
    with Image.open(tmp_path / "out" / "detect.png") as img:
        assert img.size[1] > 2 * 40


def test_patches_reaching_out_of_the_image_are_grey():
    image = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    field = onnxviz.graph.receptive.Field((4, 4), (2, 2), (-2, -2))
    result = {"top_image": np.array([[0]]), "top_yx": np.array([[[0, 3]]])}
    patches, present = cut_patches(result, field, ["unused"], (8, 8), 1)
    assert not present.any() and (patches == FILL).all()           # the file is not there: an empty cell
    from onnxviz.dataset.patches import crop

    got = crop(image, field.box((0, 3)))
    assert (got[:2] == FILL).all() and np.array_equal(got[2:], image[0:2, 4:8])


# ---------------------------------------------------------------- state and sources

def test_state_merges_in_any_order_to_the_same_bits():
    rng = np.random.default_rng(0)
    maps = (rng.standard_normal((40, 6, 5, 7)) * 10 ** rng.uniform(-3, 3, (40, 6, 1, 1))).astype(np.float32)
    maps[3, 2, 0, 0] = maps[7, 2, 1, 1] = maps.max() + 1        # a tie: the lower image number first
    numbers = rng.permutation(100)[:40]
    one = layer_part(maps, numbers, 4)
    splits = [np.arange(40)[s] for s in (slice(0, 13), slice(13, 14), slice(14, 40))]
    parts = [layer_part(maps[s], numbers[s], 4) for s in splits]
    orders = [parts[0].merged(parts[1]).merged(parts[2]), parts[2].merged(parts[0].merged(parts[1])),
              LayerState(6, (5, 7), 4).merged(parts[1]).merged(parts[2]).merged(parts[0])]
    for state in orders:
        for key, value in one.result().items():
            assert np.array_equal(state.result()[key], value), key
    r = one.result()
    assert r["top_value"][2, 0] == r["top_value"][2, 1] and list(r["top_image"][2, :2]) == sorted(numbers[[3, 7]])
    flat = maps.reshape(40, 6, -1).astype(np.float64)
    np.testing.assert_allclose(r["mean"], flat.mean(axis=(0, 2)), rtol=1e-7)   # float32: one rounding
    state = PassState({}, 101).merged(Part(np.append(numbers, 100), {"a": one}, {100: "why"}))
    again, meta = PassState.from_bytes(state.to_bytes({"source": "x", "top": 4}))
    assert meta == {"source": "x", "top": 4} and again.seen == 41 and again.skipped == {100: "why"}
    assert all(np.array_equal(again.layers["a"].result()[k], v) for k, v in r.items())


def test_sources(tmp_path, folder):
    paths, rejected = list_images(folder[0])
    by_folder = {}
    for p in [os.path.abspath(p) for p in folder[1]] + [os.path.join(folder[0], b) for b in BROKEN]:
        by_folder.setdefault(os.path.dirname(p), []).append(p)
    # a folder's own files, sorted, then its sub-folders', in sorted order (os.walk, top down)
    assert rejected == [] and paths == [p for d in sorted(by_folder) for p in sorted(by_folder[d])]
    listing = tmp_path / "list.txt"
    listing.write_text(f"# my images\n{folder[1][1]}\n\nrel/x.png\n{folder[1][1]}\r\n")
    assert list_images(str(listing))[0] == [folder[1][1], str(tmp_path / "rel" / "x.png")]
    assert list_images(os.path.join(folder[0], "photos", "*.jpg"))[0] == sorted(
        os.path.join(folder[0], "photos", f"hopper{k:03d}.jpg") for k in (0, 2, 4, 6))
    assert list_images(os.path.join(folder[0], "**", "shape0000*.png"))[0][0].endswith("shape00000.png")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "a\nb.png").write_bytes(b"x")
    (tmp_path / "odd" / "c.png").write_bytes(b"x")
    assert list_images(str(tmp_path / "odd")) == ([str(tmp_path / "odd" / "c.png")], [
        (repr(str(tmp_path / "odd" / "a\nb.png")), "its name has a line break, which index.txt cannot hold")])
    (tmp_path / "empty").mkdir()
    (tmp_path / "bin.lst").write_bytes(b"\xff\xfe\x00abc")
    (tmp_path / "blank.txt").write_text("\n# nothing\n")
    cases = [
        (tmp_path / "nope", f"image source '{tmp_path / 'nope'}' does not exist; give a folder of images, a text file "
                            "of image paths (one a line) or a glob such as 'photos/**/*.jpg'"),
        (tmp_path / "empty", f"no images in '{tmp_path / 'empty'}' (files ending .jpg, .jpeg, .png, .bmp, .gif, …, "
                             "looked for in every sub-folder)"),
        (tmp_path / "bin.lst", f"'{tmp_path / 'bin.lst'}' is not a text file of image paths (one a line, UTF-8): it is "
                               "not UTF-8 (a single image? give its folder, or a glob)"),
        (tmp_path / "blank.txt", f"'{tmp_path / 'blank.txt'}' lists no image paths (one a line; blank lines and # "
                                 "comments are left out)"),
        (tmp_path / "*.zzz", f"the glob '{tmp_path / '*.zzz'}' matches no files"),
    ]
    for source, message in cases:
        with pytest.raises(onnxviz.ImageError) as e:
            list_images(str(source))
        assert str(e.value) == message


# ---------------------------------------------------------------- the command line

def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_writes_and_says_so_in_one_line(folder, tmp_path, capsys):
    out = tmp_path / "ds"
    code, stdout, err = run(["dataset", demo_model_path(), folder[0], "--layer", "block3_*", "--top", "3",
                             "--max", "4", "--batch", "16", "-o", out], capsys)
    assert code == 0 and err == ""                         # no bar: stderr is not a terminal
    assert re.fullmatch(rf"wrote {re.escape(str(out))}: 2 layers over 32 images, 4 skipped \(skipped.txt says why\) "
                        r"\(\d+\.\d s, [\d,]+ images/s\)\n", stdout)
    with Image.open(out / "block3_conv1.png") as img:
        assert 4 * 40 < img.height < 5 * 40 + 60           # --max 4: four rows


def test_cli_errors(folder, tmp_path, capsys):
    model = str(demo_model_path())
    (tmp_path / "empty").mkdir()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / CHECKPOINT).write_bytes(b"x")
    (tmp_path / "file").write_text("x")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / CHECKPOINT).write_bytes(b"PK\x03\x04 not a zip")
    (tmp_path / "bad" / "index.txt").write_text("a.png\n")
    cases = [
        ([model, tmp_path / "nope", "--layer", "0", "-o", tmp_path / "o"],
         f"error: image source '{tmp_path / 'nope'}' does not exist; give a folder of images, a text file of image "
         "paths (one a line) or a glob such as 'photos/**/*.jpg'"),
        ([model, tmp_path / "empty", "--layer", "0", "-o", tmp_path / "o"],
         f"error: no images in '{tmp_path / 'empty'}' (files ending .jpg, .jpeg, .png, .bmp, .gif, …, looked for in "
         "every sub-folder)"),
        ([model, folder[0], "--layer", "conv9", "-o", tmp_path / "o"],
         "error: no layer 'conv9'; layers are: block1_conv1, block1_conv2, block2_conv1, block2_conv2, block3_conv1, "
         "block3_conv2"),
        ([model, folder[0], "--layer", "0", "--resume", "-o", tmp_path / "o2"],
         f"error: '{tmp_path / 'o2'}' holds no {CHECKPOINT} to resume from (a finished pass leaves none): run without "
         "--resume"),
        ([model, folder[0], "--layer", "0", "-o", tmp_path / "busy"],
         f"error: '{tmp_path / 'busy'}' holds the checkpoint of an unfinished pass: add --resume to continue it, or "
         f"delete {tmp_path / 'busy' / CHECKPOINT} to start again"),
        ([model, folder[0], "--layer", "0", "-o", tmp_path / "file"],
         f"error: output '{tmp_path / 'file'}' is a file; give a folder (it is made if missing)"),
        ([model, folder[0], "--layer", "0", "-o", tmp_path / "no" / "such"],
         f"error: cannot make the output folder '{tmp_path / 'no' / 'such'}': its folder '{tmp_path / 'no'}' does not "
         "exist"),
        ([model, folder[0], "--layer", "0", "--resume", "-o", tmp_path / "bad"],
         f"error: cannot resume from '{tmp_path / 'bad' / CHECKPOINT}': not a checkpoint onnxviz wrote; delete it to "
         "start again"),
        ([model, folder[0], "--layer", "0", "--address", "auto", "-o", tmp_path / "o3"],
         "error: --address is for --engine ray (the cluster to join)"),
        ([model, os.path.join(folder[0], "broken"), "--layer", "0", "-o", tmp_path / "o4"],
         f"error: none of the 4 images could be read (see skipped.txt); the first: image "
         f"'{os.path.join(folder[0], 'broken', 'bomb.png')}' has 144,000,000 pixels, over Pillow's decompression-bomb "
         f"limit of {Image.MAX_IMAGE_PIXELS:,}; refused (shrink it first)"),
    ]
    for argv, line in cases:
        code, out, err = run(["dataset", *argv], capsys)
        assert (code, out, err) == (1, "", line + "\n"), argv
    assert not (tmp_path / "o").exists() and not (tmp_path / "o2").exists()
    code, _, err = run(["dataset", model, folder[0], "--layer", "0", "--engine", "spark", "-o", tmp_path / "o"], capsys)
    assert code == 2 and "invalid choice: 'spark'" in err


def test_cli_ctrl_c_says_how_to_resume(folder, tmp_path, capsys, monkeypatch):
    import onnxviz.cli as cli

    def bar(args, total, desc, unit):
        def update(done):
            if done >= 10:
                raise KeyboardInterrupt
        return update

    monkeypatch.setattr(cli, "progress", bar)
    out = tmp_path / "ds"
    argv = ["dataset", demo_model_path(), folder[0], "--layer", "block1_conv1", "--batch", "4", "-o", out]
    code, stdout, err = run(argv, capsys)
    assert (code, stdout) == (1, "")
    assert re.fullmatch(rf"error: interrupted after \d+ of 36 images; the checkpoint is in '{re.escape(str(out))}': "
                        r"run the same command with --resume to go on\n", err)
    monkeypatch.undo()
    code, stdout, err = run([*argv, "--resume"], capsys)
    assert code == 0 and err == "" and stdout.startswith(f"wrote {out}: 1 layer over 32 images, 4 skipped")


def test_cli_progress_counts_images(folder, tmp_path, capsys, monkeypatch):
    """The bar (cli.progress: tqdm on a terminal, none with -q) is told the images, read or skipped."""
    import onnxviz.cli as cli

    seen = []

    def bar(args, total, desc, unit):
        seen.append((total, desc, unit))
        return lambda done: seen.append(done)

    monkeypatch.setattr(cli, "progress", bar)
    code, _, _ = run(["dataset", demo_model_path(), folder[0], "--layer", "0", "--batch", "8", "-o", tmp_path / "o"],
                     capsys)
    assert code == 0 and seen[0] == (36, "dataset", "image")
    assert seen[1:] == sorted(seen[1:]) and seen[1] == 0 and seen[-1] == 36 and len(seen) >= 5


def test_engines_listed_alike():
    from onnxviz.cli import DATASET_ENGINES

    assert DATASET_ENGINES == ENGINES


def test_report_reads_layer_names_with_slashes(tmp_path):
    """A layer named 'stage/conv' is written as stage_conv.png, and the report finds it there."""
    from builders import Net, save

    net = Net((1, 3, 16, 16))
    net.conv(3, 4, name="c1"); net.act()
    net.conv(4, 4, name="c2"); net.act()
    meta = {"onnxviz.preprocess": "unit", "onnxviz.layer_names": '{"c1": "stage/conv", "c2": "stage_conv"}'}
    path = save(net.model(metadata=meta), tmp_path / "slash.onnx")
    images = tmp_path / "imgs"
    images.mkdir()
    for k in range(3):
        Image.fromarray((np.random.default_rng(k).random((16, 16, 3)) * 255).astype(np.uint8)).save(images / f"{k}.png")
    onnxviz.dataset(str(path), str(images), ["stage/conv", "stage_conv"], top=2, out=str(tmp_path / "ds"))
    assert sorted(os.listdir(tmp_path / "ds")) == ["index.txt", "skipped.txt", "stage_conv.npz", "stage_conv.png",
                                                   "stage_conv_2.npz", "stage_conv_2.png"]
    data = onnxviz.report.build(str(path), [str(images / "0.png")], layers=["stage/conv", "stage_conv"],
                                dataset=str(tmp_path / "ds"))
    pngs = {p.row["name"]: p.sections[-1].pictures[0].png for p in data.layers}
    assert pngs["stage/conv"] == (tmp_path / "ds" / "stage_conv.png").read_bytes()
    assert pngs["stage_conv"] == (tmp_path / "ds" / "stage_conv_2.png").read_bytes()


def test_import_onnxviz_never_imports_ray():
    code = "import sys, onnxviz; onnxviz.dataset; import onnxviz.dataset.run; assert 'ray' not in sys.modules"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0


# ---------------------------------------------------------------- Ray, on a local cluster

@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of 2 CPUs for this module, shut down after it (its workers import
    this checkout of onnxviz)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}})
    try:
        yield ray
    finally:
        ray.shutdown()


def test_ray_engine_equals_the_local_engine(folder, demo, whole, cluster, tmp_path):
    res = onnxviz.dataset(demo, folder[0], LAYERS, top=5, engine="ray", workers=2, batch=6, out=str(tmp_path / "ray"))
    same(res, whole)
    for name in ("block1_conv2.npz", "block3_conv2.npz", "block3_conv2.png", "skipped.txt", "index.txt"):
        assert (tmp_path / "ray" / name).read_bytes() == open(os.path.join(whole.out, name), "rb").read()
    assert cluster.is_initialized()                        # a cluster it did not start is left running


def test_ray_worker_errors_are_one_line(cluster, tmp_path):
    """What a worker raises (here: the model file is gone) comes back as onnxviz's own error."""
    from onnxviz.dataset.ray import run_ray
    from onnxviz.dataset.stream import Job

    job = Job(str(tmp_path / "gone.onnx"), ("block3_conv2",), "unit", (64, 64), 3)
    with pytest.raises(onnxviz.ModelError) as e:
        list(run_ray(job, [(0, str(tmp_path / "a.png"))], batch=4, workers=1))
    assert str(e.value) == f"model file '{tmp_path / 'gone.onnx'}' does not exist"


def test_cli_joins_a_running_cluster_by_address(folder, demo, whole, cluster, tmp_path):
    """``--address`` joins the cluster already running (this module's), from another process:
    the same files as the local engine, and the cluster is left running."""
    address = cluster.get_runtime_context().gcs_address
    out = tmp_path / "joined"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-m", "onnxviz", "dataset", demo_model_path(), folder[0], "--layer", LAYERS[0],
                        "--layer", LAYERS[1], "--top", "5", "--batch", "6", "--engine", "ray", "--address", address, "--workers", "2",
                        "--quiet", "-o", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    for name in ("block1_conv2.npz", "block3_conv2.npz", "block3_conv2.png", "skipped.txt", "index.txt"):
        assert (out / name).read_bytes() == open(os.path.join(whole.out, name), "rb").read()
    assert cluster.is_initialized() and cluster.cluster_resources().get("CPU") == 2
