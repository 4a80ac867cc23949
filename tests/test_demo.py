"""onnxviz demo: the shipped model and pictures, offline, from any directory."""

import os
import subprocess
import sys

from PIL import Image

from onnxviz.cli import main
from onnxviz.demo import demo_model_path

EXPECTED = ["features_photo_block1_conv2.png", "features_photo_block2_conv2.png",
            "features_photo_block3_conv2.png", "features_shapes_block1_conv2.png",
            "features_shapes_block2_conv2.png", "features_shapes_block3_conv2.png",
            "filters.png", "filters_rgb.png", "summary.txt"]


def test_demo_writes_every_picture(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert sorted(os.listdir(out)) == EXPECTED
    for name in EXPECTED:
        assert str(out / name) in printed
        if name.endswith(".png"):
            with Image.open(out / name) as img:
                img.load()
                assert img.mode == "RGB" and img.width >= 200
    summary = (out / "summary.txt").read_text()
    assert "block1_conv1  Conv  16×3×3×3" in summary and "preprocess: unit" in summary
    assert os.path.getsize(demo_model_path()) < 5 * 2**20


def test_demo_output_folder_must_have_a_parent(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path / "a" / "b")]) == 1
    assert capsys.readouterr().err == (f"error: cannot create '{tmp_path / 'a' / 'b'}': its folder "
                                       f"'{tmp_path / 'a'}' does not exist\n")


def test_demo_from_another_directory(tmp_path):
    res = subprocess.run([sys.executable, "-m", "onnxviz", "demo"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert sorted(os.listdir(tmp_path / "onnxviz-demo")) == EXPECTED
