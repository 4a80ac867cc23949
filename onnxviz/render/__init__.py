"""Arrays to pictures — the only package that draws.

Pictures are composed with numpy (tiles, colour map, gaps) and annotated with Pillow (title,
channel indices), then written as PNG (:func:`save_png`) or wrapped in a matplotlib
``Figure`` for notebooks (:func:`plot_filters`, :func:`plot_feature_maps`); both show the
same pixels.

* :mod:`.mosaic`: feature-map mosaics and the tiling every picture shares
  (``render.mosaic.mosaic``);
* :mod:`.filters`: filter grids and RGB filter patches;
* :mod:`.encode`: PNG bytes (RGB, and colour-index maps); :mod:`.png`: atomic saving, Figures;
* :mod:`.figure`, :mod:`.notebook`: how Figures and results show in notebooks;
* :mod:`.colormaps`, :mod:`.text`: colour tables and title bars.

>>> from onnxviz.render import feature_map_image, save_png
>>> save_png(feature_map_image(fm["block1_conv1"], "block1_conv1"), "maps.png")   # doctest: +SKIP
"""

from .encode import indexed_png, png_all, png_bytes
from .filters import filter_image, model_channel_order, plot_filters
from .mosaic import MAX_PIXELS, feature_map_image, plot_feature_maps
from .png import save_png, to_figure

__all__ = ["filter_image", "feature_map_image", "plot_filters", "plot_feature_maps",
           "save_png", "png_bytes", "png_all", "indexed_png", "to_figure", "model_channel_order",
           "MAX_PIXELS"]
