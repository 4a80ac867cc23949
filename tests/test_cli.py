"""The command line, in-process through main(argv): outputs, exit codes, exact error lines."""

import json
import subprocess
import sys
import textwrap

import pytest
from PIL import Image

import onnxviz
from builders import Net, save
from onnxviz.cli import main


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_summary_table_and_json(vgg, capsys):
    code, out, err = run(["summary", vgg[1]], capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[2].split() == ["#", "layer", "op", "filters", "group", "stride", "feature", "map", "RF", "after"]
    assert lines[3].split() == ["0", "b1c1", "Conv", "4×3×3×3", "1", "1,1", "4×16×16", "3×3", "Relu"]
    assert lines[5].split() == ["2", "b2c1", "Conv", "6×4×3×3", "1", "1,1", "6×8×8", "10×10", "Relu"]
    code, out, _ = run(["summary", vgg[1], "--json"], capsys)
    info = json.loads(out)
    assert code == 0 and [l["name"] for l in info["layers"]] == ["b1c1", "b1c2", "b2c1"]
    assert info["input"]["layout"] == "NCHW" and info["preprocess"] == "unit"


def test_filters_one_and_several_layers(vgg, tmp_path, capsys):
    out = tmp_path / "f.png"
    code, stdout, _ = run(["filters", vgg[1], "-o", out], capsys)
    assert code == 0 and stdout == f"wrote {out}  (b1c1: filters 4×3×3×3)\n"
    Image.open(out).verify()
    code, _, _ = run(["filters", vgg[1], "--layer", "b1*", "--layer", "2", "--rgb", "--max", "2", "-o", tmp_path / "g.png"],
                     capsys)
    assert code == 1  # b1c2 has 4 input channels: --rgb is refused before anything is written
    assert not list(tmp_path.glob("g*.png"))
    code, _, _ = run(["filters", vgg[1], "--layer", "b1*", "--layer", "2", "-o", tmp_path / "g.png"], capsys)
    assert code == 0
    assert sorted(p.name for p in tmp_path.glob("g_*.png")) == ["g_b1c1.png", "g_b1c2.png", "g_b2c1.png"]


def test_features_default_layers_are_the_stage_ends(vgg, image, tmp_path, capsys):
    code, out, err = run(["features", vgg[1], image[0], "-o", tmp_path / "fm.png"], capsys)
    assert code == 0 and err == ""
    assert out.splitlines() == [f"wrote {tmp_path / 'fm_b1c2.png'}  (b1c2: 4×16×16)",
                                f"wrote {tmp_path / 'fm_b2c1.png'}  (b2c1: 6×8×8)"]
    for name in ("fm_b1c2.png", "fm_b2c1.png"):
        with Image.open(tmp_path / name) as img:
            img.load()
            assert img.mode == "RGB" and img.width > 100


def test_features_options(tmp_path, image, capsys):
    net = Net(("N", 3, "H", "W"))
    net.conv(3, 4, name="c"); net.act()
    path = save(net.model(), tmp_path / "dyn.onnx")
    code, out, err = run(["features", path, image[0], "--layer", "c", "--size", "12", "20", "--preprocess", "tf",
                          "--raw-conv", "--shared", "--max", "2", "-o", tmp_path / "o.png"], capsys)
    assert code == 0 and err == "" and out == f"wrote {tmp_path / 'o.png'}  (c: 4×12×20)\n"


def test_features_without_metadata_warns(tmp_path, image, capsys):
    net = Net((1, 3, 16, 16))
    net.conv(3, 4, name="c"); net.act()
    path = save(net.model(), tmp_path / "m.onnx")
    code, _, err = run(["features", path, image[0], "-o", tmp_path / "o.png"], capsys)
    assert code == 0
    assert err == ("warning: model has no 'onnxviz.preprocess' metadata; feeding raw 0-255 pixels "
                   "(choose a preset: caffe, torch, tf, unit, raw)\n")


def test_usage_errors_exit_2(vgg, capsys):
    assert run(["filters", vgg[1]], capsys)[0] == 2                      # no -o
    assert run(["filters", vgg[1], "--max", "0", "-o", "x.png"], capsys)[0] == 2
    code, _, err = run(["features", vgg[1], "i.png", "--preprocess", "imagenet", "-o", "x.png"], capsys)
    assert code == 2 and "invalid choice: 'imagenet'" in err
    assert run([], capsys)[0] == 2
    assert run(["--version"], capsys)[0] == 0


def test_debug_shows_the_traceback(capsys):
    with pytest.raises(onnxviz.ModelError):
        main(["summary", "missing.onnx", "--debug"])


def test_runs_without_tensorflow_or_torch(vgg, image, tmp_path):
    """python -m onnxviz with tensorflow, keras, tf2onnx and torch made unimportable."""
    code = textwrap.dedent(f"""
        import sys, importlib.abc
        BLOCKED = ("tensorflow", "keras", "tf2onnx", "torch", "jax")
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"{{name}} is blocked in this test")
        sys.meta_path.insert(0, Block())
        for argv in (["summary", {str(vgg[1])!r}],
                     ["filters", {str(vgg[1])!r}, "-o", {str(tmp_path / 'f.png')!r}],
                     ["features", {str(vgg[1])!r}, {str(image[0])!r}, "-o", {str(tmp_path / 'm.png')!r}]):
            from onnxviz.cli import main
            assert main(argv) == 0, argv
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        assert not loaded, loaded
        print("ok")
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("ok")
    res = subprocess.run([sys.executable, "-m", "onnxviz", "summary", str(vgg[1])], capture_output=True, text=True)
    assert res.returncode == 0 and "b2c1" in res.stdout


def test_a_failure_prints_its_warnings_first_and_its_error_last(tmp_path, capsys):
    """A model without preprocessing metadata warns; a bad image then fails: the error is the
    last line, after the warning, and the warning is printed once."""
    net = Net((1, 3, 16, 16))
    net.conv(3, 4, name="c1"); net.act()
    path = save(net.model(), tmp_path / "m.onnx")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png at all")
    code, out, err = run(["features", path, bad, "-o", tmp_path / "o.png"], capsys)
    lines = err.splitlines()
    assert code == 1 and out == ""
    assert lines[-1].startswith("error: ") and f"'{bad}'" in lines[-1]
    assert [l for l in lines if l.startswith("warning: ")] == [
        "warning: model has no 'onnxviz.preprocess' metadata; feeding raw 0-255 pixels (choose a "
        "preset: caffe, torch, tf, unit, raw)"]
    assert lines.index(lines[-1]) > 0 and lines[0].startswith("warning: ")
