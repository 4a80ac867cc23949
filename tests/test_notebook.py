"""onnxviz in a notebook: a small notebook run headless (nbclient, ipykernel); its outputs hold
the pictures, each shown once, with the exact pixels onnxviz drew."""

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import onnxviz

nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (pip install '.[test]')")
nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (pip install '.[test]')")
pytest.importorskip("ipykernel", reason="ipykernel is not installed (pip install '.[test]')")

ROOT = Path(__file__).resolve().parent.parent
CELLS = [
    "import onnxviz\nm = onnxviz.load('models/demo.onnx')",
    "m",
    "fm = m.feature_maps('models/demo_sample.png', layers='block1_conv2')\nfm",
    "m.feature_maps(['models/demo_sample.png'] * 2, layers=['block1_conv2', 'block2_conv2'])",
    "onnxviz.plot_filters(m, 0, rgb=True)",
    "%matplotlib inline\nimport matplotlib.pyplot as plt\nonnxviz.plot_feature_maps(fm['block1_conv2'], 'block1_conv2')",
    "fig = onnxviz.plot_filters(m, 'block2_conv1')\nfig",
    "isinstance(fm, dict), sorted(fm), fm['block1_conv2'].shape",
    "onnxviz.saliency(m, 'models/demo_sample.png', target=2)",
    "onnxviz.patterns(m, 'block2_conv1', [0, 3, 5], steps=3)",
    "onnxviz.cam(m, 'models/demo_sample.png', method='grad', target=2)",
]


@pytest.fixture(scope="module")
def outputs():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}}).execute()
    return [c.outputs for c in nb.cells]


def png(data: str) -> np.ndarray:
    img = Image.open(io.BytesIO(base64.b64decode(data)))
    img.load()
    return np.asarray(img.convert("RGB"))


def one_picture(cell_outputs) -> np.ndarray:
    """The cell's single output, a PNG: decoded."""
    assert len(cell_outputs) == 1, cell_outputs  # shown once: no second display of the figure
    data = cell_outputs[0]["data"]
    assert "image/png" in data and "text/html" not in data
    return png(data["image/png"])


def test_model_shows_its_card_and_layer_table(outputs):
    (out,) = outputs[1]
    html = out["data"]["text/html"]
    assert "Model <code>demo.onnx</code>" in html and "72,665" in html
    assert html.count("<tr title=") == 6 and "<td>block3_conv2</td>" in html and "<td>16×3×3×3</td>" in html


def test_feature_maps_show_as_the_mosaic_onnxviz_draws(outputs):
    m = onnxviz.load(str(ROOT / "models" / "demo.onnx"))
    fm = m.feature_maps(str(ROOT / "models" / "demo_sample.png"), layers="block1_conv2")
    expected = np.asarray(onnxviz.render.feature_map_image(fm["block1_conv2"], "block1_conv2"))
    assert np.array_equal(one_picture(outputs[2]), expected)


def test_several_maps_show_as_one_html_block_of_pictures(outputs):
    (out,) = outputs[3]
    assert "image/png" not in out["data"]
    html = out["data"]["text/html"]
    pictures = re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)
    assert len(pictures) == 4  # 2 layers × 2 images
    assert [png(p).shape[2] for p in pictures] == [3] * 4
    assert re.findall(r"<figcaption>([^<]+)</figcaption>", html) == [
        "block1_conv2 (image 0)", "block1_conv2 (image 1)", "block2_conv2 (image 0)", "block2_conv2 (image 1)"]


def test_figures_show_once_with_their_own_pixels(outputs):
    m = onnxviz.load(str(ROOT / "models" / "demo.onnx"))
    assert np.array_equal(one_picture(outputs[4]), np.asarray(onnxviz.render.filter_image(m, 0, rgb=True)))
    one_picture(outputs[5])  # after %matplotlib inline and pyplot: still one display
    assert np.array_equal(one_picture(outputs[6]), np.asarray(onnxviz.render.filter_image(m, "block2_conv1")))


def test_results_stay_plain_dicts(outputs):
    (out,) = outputs[7]
    assert out["data"]["text/plain"] == "(True, ['block1_conv2'], (1, 16, 64, 64))"


def test_the_mixin_gives_any_result_type_the_same_display():
    from dataclasses import dataclass

    from onnxviz.render.notebook import MAX_SHOWN, Pictured

    @dataclass
    class Result(Pictured):  # the shape of Cam / Attribution / Patterns
        images: np.ndarray

        def _pictures(self):
            return [(f"item {k}", lambda k=k: Image.fromarray(self.images[k])) for k in range(len(self.images))]

    pixels = np.random.default_rng(0).integers(0, 255, (MAX_SHOWN + 2, 6, 5, 3), dtype=np.uint8)
    one = Result(pixels[:1])
    assert one._repr_html_() is None
    assert np.array_equal(png(base64.b64encode(one._repr_png_()).decode()), pixels[0])
    many = Result(pixels)
    assert many._repr_png_() is None
    html = many._repr_html_()
    shown = re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)
    assert [np.array_equal(png(s), p) for s, p in zip(shown, pixels)] == [True] * MAX_SHOWN
    assert len(shown) == MAX_SHOWN and "… and 2 more not shown" in html


def test_saliency_patterns_and_cam_show_as_their_pictures(outputs):
    from onnxviz.render.overlay import cam_picture
    from onnxviz.render.patterns import heatmap_image, patterns_image

    m = onnxviz.load(str(ROOT / "models" / "demo.onnx"))
    a = onnxviz.saliency(m, str(ROOT / "models" / "demo_sample.png"), target=2)
    title = f"gradient saliency of class 2 (score {float(a.score[0]):.4g})"
    assert np.array_equal(one_picture(outputs[8]), np.asarray(heatmap_image(a.heatmap[0], title).convert("RGB")))
    p = onnxviz.patterns(m, "block2_conv1", [0, 3, 5], steps=3)
    want = patterns_image(p.images, p.channels, "block2_conv1: patterns")
    assert np.array_equal(one_picture(outputs[9]), np.asarray(want.convert("RGB")))
    c = onnxviz.cam(m, str(ROOT / "models" / "demo_sample.png"), method="grad", target=2)
    shown = one_picture(outputs[10])
    assert np.array_equal(shown, np.asarray(cam_picture(c, 0).convert("RGB")))
    assert shown.shape[0] > c.heatmap.shape[1]  # the overlay at the input size, under its title
