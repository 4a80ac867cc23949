"""`onnxviz cam` and `onnxviz features --overlay`, in-process through main(argv): PNGs that decode,
exact stdout lines, exact one-line errors, and no output file on failure."""

import re

import numpy as np
from PIL import Image

from onnxviz.cli import main

DEMO = "models/demo.onnx"
PHOTO = "models/demo_sample.png"
LABELS = "models/demo_labels.txt"


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cam_overlay(tmp_path, capsys):
    out = tmp_path / "cam.png"
    code, stdout, err = run(["cam", DEMO, PHOTO, "--method", "grad", "--labels", LABELS, "--layer", "block3_conv2",
                             "-o", out], capsys)
    assert code == 0 and err == ""
    assert stdout == f"wrote {out}  (Grad-CAM of class 'dots' (score 20.24) at block3_conv2)\n"
    with Image.open(out) as img:
        assert img.mode == "RGB" and img.width >= 192 and img.height > 192  # 64×64 enlarged to 192, a title


def test_cam_top_classes_one_file_each(tmp_path, capsys):
    out = tmp_path / "cam.png"
    code, stdout, err = run(["cam", DEMO, PHOTO, "--method", "ablation", "--top", "3", "--labels", LABELS,
                             "--full-size", "-o", out], capsys)
    assert code == 0 and err == ""
    names = ["top1_dots", "top2_stripes_vertical", "top3_checkerboard"]
    assert [line.split("  (")[0] for line in stdout.splitlines()] == [f"wrote {tmp_path}/cam_{n}.png" for n in names]
    assert "AblationCAM of class 'stripes_vertical' (score 12.36) at block3_pool_1/MaxPool2d:0" in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"cam_{n}.png" for n in names)


def test_cam_several_images_and_a_tensor(tmp_path, capsys):
    other = tmp_path / "other.png"
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(other)
    code, stdout, _ = run(["cam", DEMO, PHOTO, other, "--method", "eigen", "-o", tmp_path / "e.png"], capsys)
    assert code == 0 and [line.split("  (")[0] for line in stdout.splitlines()] == [
        f"wrote {tmp_path}/e_demo_sample.png", f"wrote {tmp_path}/e_other.png"]
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((1, 64, 64, 3)).astype(np.float32))
    code, stdout, err = run(["cam", DEMO, tmp_path / "x.npy", "--method", "score", "--top-channels", "8",
                             "--class", "2", "-o", tmp_path / "s.png"], capsys)
    assert code == 0 and err == "" and stdout.startswith(f"wrote {tmp_path}/s.png  (ScoreCAM of class 'stripes_diag_up' (score ")  # the model's labels


def test_cam_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "cam.png"
    cases = [
        (["--class", "9"], "error: class 9 is out of range: the model scores 9 classes (0–8)\n"),
        (["--layer", "gap_1/Mean:0"], "error: layer 'gap_1/Mean:0' is 64×1×1 per image: no height and width are "
         "left (global pooling or a flatten comes before it); give a layer with a spatial map, such as "
         "'block3_pool_1/MaxPool2d:0' (the default)\n"),
        (["--top", "3", "--method", "eigen"], "error: --top K gives one map per class; EigenCAM's map is the same "
         "for every class (give another --method, or leave --top out)\n"),
        (["--top", "12"], "error: --top 12: the model scores 9 classes\n"),
        (["--method", "grad", "--top-channels", "4"], "error: top_channels= does not apply to method 'grad' "
         "(Grad-CAM); method 'score' takes it\n"),
        (["--layer", "conv9"], "error: no layer or tensor 'conv9'; layers are: block1_conv1, block1_conv2, "
         "block2_conv1, block2_conv2, block3_conv1, block3_conv2 (or give any tensor name)\n"),
        (["--alpha", "1.5"], "error: --alpha 1.5: the heatmap's opacity is between 0 and 1\n"),
        (["--cmap", "nope"], "error: unknown colour map 'nope'; try gray, viridis, magma, inferno\n"),
        (["--method", "eigen", "--class", "2"], "error: target=2: EigenCAM explains no class (its map is the "
         "same for every class); leave target out\n"),
    ]
    for extra, message in cases:
        code, stdout, err = run(["cam", DEMO, PHOTO, *extra, "-o", out], capsys)
        assert (code, stdout, err) == (1, "", message), extra
        assert list(tmp_path.iterdir()) == []


def test_cam_budget_too_small(tmp_path, capsys):
    code, stdout, err = run(["cam", DEMO, PHOTO, "--max-memory", "1k", "-o", tmp_path / "c.png"], capsys)
    assert code == 1 and stdout == "" and list(tmp_path.iterdir()) == []
    assert err.startswith("error: one forward run would need ") and err.endswith(
        " (input 1×64×64×3); the budget is 1.0 KiB: raise it with max_bytes=, --max-memory or ONNXVIZ_MAX_BYTES\n")


def test_cam_without_class_output(tmp_path, capsys):
    import sys
    sys.path.insert(0, "tests")
    from test_cam import style_net

    model = style_net(tmp_path / "style.onnx")
    photo = tmp_path / "p.png"
    Image.fromarray(np.full((20, 20, 3), 90, np.uint8)).save(photo)
    code, stdout, err = run(["cam", model, photo, "--method", "eigen", "-o", tmp_path / "e.png"], capsys)
    assert code == 0 and stdout == f"wrote {tmp_path}/e.png  (EigenCAM at e2)\n"
    code, stdout, err = run(["cam", model, photo, "--method", "hires", "-o", tmp_path / "h.png"], capsys)
    assert code == 1 and not (tmp_path / "h.png").exists()
    assert err == ("error: method 'hires' (HiResCAM) explains a class score, and the model has no class output "
                   "(one score per class and image): 'e2_out' is 3×20×20 per image; EigenCAM (method 'eigen') "
                   "needs none\n")


def test_features_overlay(tmp_path, capsys):
    out = tmp_path / "f.png"
    code, stdout, err = run(["features", DEMO, PHOTO, "--layer", "block2_conv2", "--overlay", "5", "-o", out], capsys)
    assert code == 0 and err == "" and stdout == f"wrote {out}  (block2_conv2: channel 5 over the image)\n"
    with Image.open(out) as img:
        assert img.mode == "RGB" and img.width >= 192
    code, stdout, err = run(["features", DEMO, PHOTO, "--layer", "block2_conv2", "--overlay", "32", "-o",
                             tmp_path / "g.png"], capsys)
    assert (code, stdout) == (1, "") and not (tmp_path / "g.png").exists()
    assert err == "error: channel 32 is out of range: layer 'block2_conv2' has 32 channels (0–31)\n"


def test_method_list_is_the_library_s():
    from onnxviz import cli
    from onnxviz.explain.cam import METHODS
    assert cli.CAM_METHODS == tuple(METHODS)


def test_progress_bar_on_a_terminal_only(tmp_path, monkeypatch):
    """ScoreCAM's runs are counted by a tqdm bar on stderr when it is a terminal (shown at once
    here: the bar's 2 s delay set to 0), never with --quiet or when stderr is not a terminal."""
    import io
    import sys

    import tqdm

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    real = tqdm.tqdm

    def at_once(*a, **kw):
        return real(*a, **{**kw, "delay": 0})

    monkeypatch.setattr(tqdm, "tqdm", at_once)
    shown = {}
    for name, stream, extra in [("tty", Terminal(), []), ("quiet", Terminal(), ["--quiet"]),
                                ("pipe", io.StringIO(), [])]:
        monkeypatch.setattr(sys, "stderr", stream)
        code = main(["cam", DEMO, PHOTO, "--method", "score", "--batch", "16", *extra, "-o",
                     str(tmp_path / f"{name}.png")])
        assert code == 0
        shown[name] = stream.getvalue()
    assert re.search(r"score: +\d+%\|.*\| \d+/\d+ \[", shown["tty"]), shown["tty"]
    assert shown["quiet"] == "" and shown["pipe"] == ""
