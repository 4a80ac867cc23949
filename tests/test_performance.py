"""What keeps the commands fast: lazy imports, stored colour tables, the quick PNG writer.

(The figures themselves are in BENCHMARKS.md, from ``scripts/benchmark.py``; the smoke run of
that script is tested in ``test_benchmark_smoke.py``.)
"""

import io
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from builders import save, vgg_like
from onnxviz import render
from onnxviz.render.colormaps import builtin_lut


@pytest.fixture
def model_and_image(tmp_path):
    _, model = vgg_like(metadata={"onnxviz.preprocess": "unit"})
    path = save(model, tmp_path / "vgg.onnx")
    img = tmp_path / "img.png"
    Image.fromarray((np.random.default_rng(0).random((20, 24, 3)) * 255).astype(np.uint8)).save(img)
    return str(path), str(img)


def _modules_after(argv: list[str]) -> set[str]:
    """The heavy modules imported by ``onnxviz <argv>`` in a fresh interpreter."""
    code = textwrap.dedent(f"""
        import sys
        from onnxviz.cli import main
        code = main({argv!r})
        assert code == 0, code
        print(" ".join(m for m in ("onnxruntime", "matplotlib", "tensorflow", "torch") if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split("\n")[-2].split())


def test_summary_imports_neither_onnxruntime_nor_matplotlib(model_and_image):
    model, _ = model_and_image
    assert _modules_after(["summary", model]) == set()
    assert _modules_after(["summary", model, "--json"]) == set()


def test_filters_and_features_do_not_import_matplotlib(model_and_image, tmp_path):
    model, image = model_and_image
    assert _modules_after(["filters", model, "-o", str(tmp_path / "f.png")]) == set()
    assert _modules_after(["filters", model, "--rgb", "-o", str(tmp_path / "g.png")]) == set()
    assert _modules_after(["features", model, image, "-o", str(tmp_path / "m.png")]) == {"onnxruntime"}


@pytest.mark.parametrize("name", ["viridis", "gray"])
def test_stored_colour_tables_are_matplotlibs(name):
    import matplotlib

    expected = (matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(builtin_lut(name), expected)
    assert builtin_lut("magma") is None  # other maps still come from matplotlib
    assert render.colormaps.lut("magma").shape == (256, 3)


@pytest.mark.parametrize("shape", [(1, 1, 3), (5, 7, 3), (40, 33, 3)])
def test_png_writer_round_trips(shape, tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    with Image.open(io.BytesIO(render.encode._png_rgb(rgb))) as img:
        assert img.mode == "RGB" and img.size == (shape[1], shape[0])
        np.testing.assert_array_equal(np.asarray(img), rgb)
    path = render.save_png(Image.fromarray(rgb), tmp_path / "x.png")
    with Image.open(path) as img:
        np.testing.assert_array_equal(np.asarray(img), rgb)


def test_gap_painting_matches_the_mask():
    r = np.random.default_rng(2)
    for n, th, tw in ((64, 50, 50), (512, 4, 4), (5, 7, 9), (1, 3, 3), (17, 3, 4)):
        rows, cols = render.mosaic.grid(n)
        body = r.integers(0, 255, (rows * (th + 2) - 2, cols * (tw + 2) - 2, 3)).astype(np.uint8)
        expected = body.copy()
        expected[render.mosaic.mosaic(np.zeros((n, th, tw), bool), gap=2, fill=True)] = render.colormaps.BACKGROUND
        render.mosaic.paint_gaps(body, n, th, tw, 2, render.colormaps.BACKGROUND)
        np.testing.assert_array_equal(body, expected)
