"""Images → tensors: presets, colour modes, and refusals."""

import numpy as np
import pytest
from PIL import Image

import onnxviz
from onnxviz import preprocess
from onnxviz.cli import PRESETS as CLI_PRESETS


def test_cli_offers_exactly_the_presets():
    assert CLI_PRESETS == preprocess.PRESETS


def test_presets_against_their_formulas():
    px = np.array([[[0, 128, 255]]], np.float32)
    expected = {
        "raw": [0, 128, 255],
        "unit": [0, 128 / 255, 1],
        "tf": [-1, 128 / 127.5 - 1, 1],
        "torch": [(0 - 0.485) / 0.229, (128 / 255 - 0.456) / 0.224, (1 - 0.406) / 0.225],
        "caffe": [255 - 103.939, 128 - 116.779, 0 - 123.68],  # BGR order
    }
    for preset, want in expected.items():
        np.testing.assert_allclose(preprocess.apply_preset(px, preset)[0, 0], want, rtol=1e-6, atol=1e-6)


def test_layout_resize_and_batch():
    a = np.zeros((10, 20, 3), np.uint8)
    a[:, :, 0] = 255
    x = preprocess.to_tensor([a, a], size=(8, 12), layout="NCHW", preset="unit")
    assert x.shape == (2, 3, 8, 12) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0], 1.0)
    np.testing.assert_allclose(x[:, 1:], 0.0)
    y = preprocess.to_tensor(a, size=(8, 12), layout="NHWC", preset="unit", dtype=np.float16)
    assert y.shape == (1, 8, 12, 3) and y.dtype == np.float16


def test_grey_model_gets_luminance():
    a = np.full((8, 8, 3), (255, 0, 0), np.uint8)
    x = preprocess.to_tensor(a, size=(8, 8), preset="raw", channels=1)
    assert x.shape == (1, 1, 8, 8)
    np.testing.assert_allclose(x, 0.299 * 255, rtol=1e-5)


@pytest.mark.parametrize("mode,make", [
    ("L", lambda: Image.new("L", (16, 16), 200)),
    ("RGBA", lambda: Image.new("RGBA", (16, 16), (200, 200, 200, 10))),
    ("P", lambda: Image.new("RGB", (16, 16), (200, 200, 200)).convert("P", palette=Image.ADAPTIVE)),
    ("CMYK", lambda: Image.new("RGB", (16, 16), (200, 200, 200)).convert("CMYK")),
    ("I;16", lambda: Image.fromarray(np.full((16, 16), 200 * 257, np.uint16))),
])
def test_colour_modes_become_rgb(tmp_path, mode, make):
    img = make()
    ext = "tiff" if mode == "CMYK" else "png"
    path = tmp_path / f"x.{ext}"
    img.save(path)
    arr = preprocess.load_image(path)
    assert arr.shape == (16, 16, 3)
    np.testing.assert_allclose(np.asarray(arr, np.float32), 200, atol=1.5)


def test_animated_gif_uses_the_first_frame(tmp_path):
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 0, 255)]]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    arr = preprocess.load_image(tmp_path / "a.gif")
    assert tuple(arr[0, 0]) == (255, 0, 0)


def test_bad_arrays_and_types():
    with pytest.raises(onnxviz.ImageError, match=r"image array has shape \(4, 4, 4, 4, 4\)"):
        preprocess.load_image(np.zeros((4, 4, 4, 4, 4)))
    with pytest.raises(onnxviz.ImageError, match="image array has NaN or infinite values"):
        preprocess.load_image(np.full((8, 8, 3), np.nan))
    with pytest.raises(onnxviz.ImageError, match="cannot use a dict as an image"):
        preprocess.load_image({})
