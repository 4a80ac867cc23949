"""``onnxviz demo``: the whole tour on the demo model that ships inside the package.

>>> from onnxviz.demo import run_demo
>>> for what, path in run_demo("onnxviz-demo"):      # doctest: +SKIP
...     print(what, path)
layer summary onnxviz-demo/summary.txt
...

The demo model (``models/demo.onnx`` in the source tree, ``onnxviz/models/demo.onnx`` once
installed) is a small VGG-style CNN the project trains itself on generated shapes, stripes
and textures (``scripts/train_demo_model.py``; see ``models/README.md``). The photo is
matplotlib's own sample ``grace_hopper.jpg``; the generated image is ``demo_sample.png``,
made by the same generator as the training data. Everything is offline.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ModelError, OutputError

__all__ = ["demo_model_path", "run_demo"]

_SOURCE_MODELS = Path(__file__).resolve().parent.parent / "models"


def _packaged(name: str) -> Path:
    """A file of the demo: installed package data, else the source tree's models/ folder."""
    try:
        from importlib.resources import files

        candidate = Path(str(files("onnxviz.models") / name))
        if candidate.is_file():
            return candidate
    except (ModuleNotFoundError, TypeError):
        pass
    candidate = _SOURCE_MODELS / name
    if candidate.is_file():
        return candidate
    raise ModelError(f"the demo file '{name}' is missing from this installation; reinstall onnxviz "
                     "(pip install .) or run scripts/train_demo_model.py")


def demo_model_path() -> Path:
    """Where the shipped demo model is."""
    return _packaged("demo.onnx")


def run_demo(outdir="onnxviz-demo") -> list[tuple[str, str]]:
    """Write the demo's pictures into ``outdir`` (created if its parent exists).

    Returns ``[(what, path), …]`` in the order written: the layer summary, the first-layer
    filters (grey grid and RGB), and the feature maps of every block's last conv for a real
    photo and for a generated image.
    """
    import matplotlib.cbook

    from .model import load
    from .output import write_all
    from .render import feature_map_image, filter_image, png_bytes

    out = Path(outdir)
    if not out.is_dir():
        if not out.parent.is_dir():
            raise OutputError(f"cannot create '{out}': its folder '{out.parent}' does not exist")
        try:
            out.mkdir()
        except OSError as e:
            raise OutputError(f"cannot create '{out}': {e.strerror or e}") from None
    model = load(demo_model_path())
    images = {
        "photo": Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)),
        "shapes": _packaged("demo_sample.png"),
    }
    files = [("layer summary", out / "summary.txt", (model.summary_text() + "\n").encode())]
    first = model.layers[0]
    files.append((f"filters of {first.name}, grey", out / "filters.png",
                  png_bytes(filter_image(model, first, max=first.filter_shape[0]))))
    if first.filter_shape[1] == 3:
        files.append((f"filters of {first.name}, RGB", out / "filters_rgb.png",
                      png_bytes(filter_image(model, first, rgb=True))))
    ends = model.stage_ends()
    for tag, image in images.items():
        maps = model.feature_maps(str(image), ends)
        for name, fm in maps.items():
            files.append((f"feature maps of {name} for {image.name}", out / f"features_{tag}_{name}.png",
                          png_bytes(feature_map_image(fm, f"{name} ({image.name})"))))
    written = write_all({os.fspath(path): data for _, path, data in files})  # all of them, or none
    return [(what, path) for (what, _, _), path in zip(files, written)]
