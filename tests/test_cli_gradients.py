"""`onnxviz saliency` and `onnxviz patterns`, in-process through main(argv): PNGs that decode,
exit codes, exact one-line errors, no output file on failure."""

import numpy as np
from PIL import Image

from onnxviz.cli import main

DEMO = "models/demo.onnx"
PHOTO = "models/demo_sample.png"


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_saliency_png(tmp_path, capsys):
    out = tmp_path / "s.png"
    code, stdout, err = run(["saliency", DEMO, PHOTO, "--method", "guided", "--class", "2", "-o", out], capsys)
    assert code == 0 and err == "" and stdout == f"wrote {out}  (guided, class 2)\n"
    with Image.open(out) as img:
        assert img.mode == "RGB" and img.width > 2 * 192 and img.height > 192  # image | heatmap, enlarged


def test_saliency_integrated_and_a_tensor(vgg, tmp_path, capsys):
    x = np.random.default_rng(0).random((1, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "ig.png"
    code, stdout, err = run(["saliency", vgg[1], tmp_path / "x.npy", "--method", "integrated", "--steps", "8",
                             "--class", "5", "-o", out], capsys)
    assert code == 0 and err == "" and out.exists()


def test_saliency_bad_class(tmp_path, capsys):
    out = tmp_path / "s.png"
    code, stdout, err = run(["saliency", DEMO, PHOTO, "--class", "9", "-o", out], capsys)
    assert code == 1 and stdout == "" and not out.exists()
    assert err == "error: class 9 is out of range: 'predictions_1/BiasAdd:0' has 9 classes (0–8)\n"


def test_patterns_grid(tmp_path, capsys):
    out = tmp_path / "p.png"
    code, stdout, err = run(["patterns", DEMO, "--layer", "block2_conv1", "--max", "4", "--steps", "3",
                             "-o", out], capsys)
    assert code == 0 and err == "" and stdout == f"wrote {out}  (block2_conv1: 4 patterns of 32×32)\n"
    with Image.open(out) as img:
        assert img.mode == "RGB" and img.width >= 2 * 96 and img.height >= 2 * 96


def test_patterns_bad_channel_and_layer(tmp_path, capsys):
    out = tmp_path / "p.png"
    code, _, err = run(["patterns", DEMO, "--layer", "block2_conv1", "--channels", "1,40", "-o", out], capsys)
    assert code == 1 and not out.exists()
    assert err == "error: channel 40 is out of range: layer 'block2_conv1' has 32 channels (0–31)\n"
    code, _, err = run(["patterns", DEMO, "--layer", "conv9", "-o", out], capsys)
    assert code == 1 and err.startswith("error: no layer 'conv9'; layers are: block1_conv1, ") and err.count("\n") == 1


def test_method_list_is_the_library_s():
    from onnxviz import cli
    from onnxviz.explain.saliency import METHODS
    assert cli.SALIENCY_METHODS == METHODS
