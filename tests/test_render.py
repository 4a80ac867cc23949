"""Pictures: mosaic layout, normalisation, colour order, and PNGs that decode."""

import numpy as np
import pytest
from PIL import Image

import onnxviz
from onnxviz import render


def test_mosaic_places_tiles_row_by_row_with_gaps():
    tiles = np.arange(5 * 2 * 3, dtype=np.float32).reshape(5, 2, 3)
    out = render.mosaic.mosaic(tiles, gap=1)  # 5 tiles → 2 rows × 3 cols
    assert out.shape == (2 * 3 - 1, 3 * 4 - 1)
    np.testing.assert_array_equal(out[0:2, 0:3], tiles[0])
    np.testing.assert_array_equal(out[0:2, 4:7], tiles[1])
    np.testing.assert_array_equal(out[3:5, 4:7], tiles[4])
    assert np.isnan(out[2]).all() and np.isnan(out[3:5, 8:11]).all()


def test_feature_map_image_normalises_each_map_on_its_own():
    maps = np.stack([np.linspace(0, 1, 64).reshape(8, 8), np.linspace(0, 100, 64).reshape(8, 8)])[None]
    img = render.feature_map_image(maps, "x", labels=False, cmap="gray")
    arr = np.asarray(img)
    top = render.text.TITLE_PX
    tile = render.mosaic._MIN_TILE_PX  # 8×8 maps are enlarged 6× to 48 px
    a = arr[top:top + tile, 0:tile, 0]
    b = arr[top:top + tile, tile + 2:2 * tile + 2, 0]
    np.testing.assert_array_equal(a, b)  # both span the whole scale
    assert a.min() == 0 and a.max() == 255
    shared = np.asarray(render.feature_map_image(maps, "x", labels=False, cmap="gray", shared=True))
    assert shared[top:top + tile, 0:tile, 0].max() <= 3  # 0..1 out of 0..100


def test_constant_map_is_drawn_at_zero_not_nan():
    img = render.feature_map_image(np.ones((1, 2, 8, 8), np.float32), labels=False, cmap="gray")
    assert np.asarray(img)[render.text.TITLE_PX + 5, 5, 0] == 0


def test_rgb_filters_follow_the_models_channel_order():
    f = np.zeros((1, 3, 3, 3), np.float32)
    f[0, 0] = 1.0  # channel 0 is hot: blue for a BGR (caffe) model, red for an RGB one
    for order, expected in [("BGR", (0, 0, 255)), ("RGB", (255, 0, 0))]:
        arr = np.asarray(render.filter_image(f, "c", rgb=True, channel_order=order))
        assert tuple(arr[render.text.TITLE_PX + 2, 2]) == expected


def test_figures_and_pngs(vgg, tmp_path):
    m = onnxviz.load(vgg[1])
    fig = onnxviz.plot_filters(m, "b1c1")
    fm = m.feature_maps(np.zeros((16, 16, 3), np.uint8), "b1c2")
    fig2 = onnxviz.plot_feature_maps(fm["b1c2"], "b1c2")
    for f, name in [(fig, "f.png"), (fig2, "m.png")]:
        assert type(f).__name__ == "Figure"
        path = onnxviz.save_png(f, tmp_path / name)
        with Image.open(path) as img:
            img.load()
            assert img.size == f.onnxviz_image.size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png", "m.png", "vgg.onnx"]


def test_non_2d_and_bad_arguments():
    # 1-D and 3-D now have a 2-D view (tests/test_odd_models.py); 4-D convolutions do not
    with pytest.raises(onnxviz.UnsupportedModelError, match="is a 4-D convolution .*; onnxviz draws 1-D, 2-D and 3-D"):
        render.filter_image(np.zeros((4, 3, 2, 2, 2, 2), np.float32), "c4d")
    with pytest.raises(onnxviz.UnsupportedModelError, match=r"have shape \(1, 4, 2, 2, 3, 3\); onnxviz draws \(N, C, L\)"):
        render.feature_map_image(np.zeros((1, 4, 2, 2, 3, 3), np.float32))
    with pytest.raises(onnxviz.OnnxvizError, match="max must be a whole number, 1 or more, not 0"):
        render.feature_map_image(np.zeros((1, 4, 8, 8), np.float32), max=0)
    with pytest.raises(onnxviz.OnnxvizError, match=r"max must be a whole number, 1 or more, not 1\.5"):
        render.feature_map_image(np.zeros((1, 4, 8, 8), np.float32), max=1.5)
    with pytest.raises(onnxviz.OnnxvizError, match=r"max must be a whole number, 1 or more, not True"):
        render.filter_image(np.zeros((2, 3, 3, 3), np.float32), max=True)
    with pytest.raises(onnxviz.OnnxvizError, match=r"feature maps of shape \(1, 2, 0, 4\) and dtype float32 hold no numbers"):
        onnxviz.plot_feature_maps(np.zeros((1, 2, 0, 4), np.float32))
    with pytest.raises(onnxviz.OnnxvizError, match=r"feature maps x of shape \(1, 2, 4, 4\) and dtype <U1 hold no numbers"):
        render.feature_map_image(np.full((1, 2, 4, 4), "a"), "x")
    with pytest.raises(onnxviz.OnnxvizError, match="rgb=True needs filters with 3 input channels; layer 'x' has 4"):
        render.filter_image(np.zeros((2, 4, 3, 3), np.float32), "x", rgb=True)
    old, render.mosaic.MAX_PIXELS = render.mosaic.MAX_PIXELS, 5000  # 1-D strips: refused before they are built
    try:
        with pytest.raises(onnxviz.ResourceError, match=r"this picture would be 1000×51 = 51,000 pixels, over "
                           r"the limit of 5,000 \(render.MAX_PIXELS\); even one tile of 12×1000 is over it"):
            render.feature_map_image(np.zeros((1, 4, 1000), np.float32), spatial=1)
    finally:
        render.mosaic.MAX_PIXELS = old
    with pytest.raises(onnxviz.ModelError, match="a model path must be a str or os.PathLike, not NoneType"):
        onnxviz.load(None)
