"""Colour tables for the default colour maps, so that drawing needs no matplotlib import.

:func:`lut` turns a colour map into 256 uint8 RGB entries,
``(cmap(linspace(0, 1, 256))[:, :3] * 255 + 0.5).astype(uint8)``. For the two maps onnxviz
uses by default that table is stored here (made with matplotlib 3.11.2; a test
checks it against matplotlib), which saves importing matplotlib (~0.1 s) in every
``onnxviz filters`` / ``features`` run. Other colour maps still come from matplotlib.
"""

from __future__ import annotations

import numpy as np

from ..errors import OnnxvizError

__all__ = ["lut", "colour", "builtin_lut", "BACKGROUND"]

BACKGROUND = (255, 255, 255)

_VIRIDIS_HEX = (
    "44015444025645045745055946075a46085c460a5d460b5e470d60470e61471063471164471365481467481668481769"
    "48186a481a6c481b6d481c6e481d6f481f70482071482173482374482475482576482677482878482979472a7a472c7a"
    "472d7b472e7c472f7d46307e46327e46337f463480453581453781453882443983443a83443b84433d84433e85423f85"
    "4240864241864142874144874045884046883f47883f48893e49893e4a893e4c8a3d4d8a3d4e8a3c4f8a3c508b3b518b"
    "3b528b3a538b3a548c39558c39568c38588c38598c375a8c375b8d365c8d365d8d355e8d355f8d34608d34618d33628d"
    "33638d32648e32658e31668e31678e31688e30698e306a8e2f6b8e2f6c8e2e6d8e2e6e8e2e6f8e2d708e2d718e2c718e"
    "2c728e2c738e2b748e2b758e2a768e2a778e2a788e29798e297a8e297b8e287c8e287d8e277e8e277f8e27808e26818e"
    "26828e26828e25838e25848e25858e24868e24878e23888e23898e238a8d228b8d228c8d228d8d218e8d218f8d21908d"
    "21918c20928c20928c20938c1f948c1f958b1f968b1f978b1f988b1f998a1f9a8a1e9b8a1e9c891e9d891f9e891f9f88"
    "1fa0881fa1881fa1871fa28720a38620a48621a58521a68522a78522a88423a98324aa8325ab8225ac8226ad8127ad81"
    "28ae8029af7f2ab07f2cb17e2db27d2eb37c2fb47c31b57b32b67a34b67935b77937b87838b9773aba763bbb753dbc74"
    "3fbc7340bd7242be7144bf7046c06f48c16e4ac16d4cc26c4ec36b50c46a52c56954c56856c66758c7655ac8645cc863"
    "5ec96260ca6063cb5f65cb5e67cc5c69cd5b6ccd5a6ece5870cf5773d05675d05477d1537ad1517cd2507fd34e81d34d"
    "84d44b86d54989d5488bd6468ed64590d74393d74195d84098d83e9bd93c9dd93ba0da39a2da37a5db36a8db34aadc32"
    "addc30b0dd2fb2dd2db5de2bb8de29bade28bddf26c0df25c2df23c5e021c8e020cae11fcde11dd0e11cd2e21bd5e21a"
    "d8e219dae319dde318dfe318e2e418e5e419e7e419eae51aece51befe51cf1e51df4e61ef6e620f8e621fbe723fde725"
)


def builtin_lut(name: str) -> np.ndarray | None:
    """The ``(256, 3)`` uint8 table of ``name`` if it is stored here, else ``None``."""
    if name in ("gray", "grey"):
        return np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    if name == "viridis":
        return np.frombuffer(bytes.fromhex(_VIRIDIS_HEX), dtype=np.uint8).reshape(256, 3).copy()
    return None


_LUTS: dict[str, np.ndarray] = {}


def lut(cmap: str) -> np.ndarray:
    if cmap not in _LUTS:
        table = builtin_lut(cmap)  # gray and viridis are stored: no matplotlib import (~0.1 s)
        if table is not None:
            _LUTS[cmap] = table
            return table
        import matplotlib

        try:
            cm = matplotlib.colormaps[cmap]
        except KeyError:
            raise OnnxvizError(f"unknown colour map '{cmap}'; try gray, viridis, magma, inferno") from None
        _LUTS[cmap] = (cm(np.linspace(0.0, 1.0, 256))[:, :3] * 255 + 0.5).astype(np.uint8)
    return _LUTS[cmap]


def colour(values01: np.ndarray, cmap: str) -> np.ndarray:
    """``[0, 1]`` values (NaN = background) → uint8 RGB through a 256-entry colour map."""
    nan = np.isnan(values01)
    idx = np.clip(np.nan_to_num(values01, nan=0.0) * 255 + 0.5, 0, 255).astype(np.uint8)
    rgb = lut(cmap)[idx]
    rgb[nan] = BACKGROUND
    return rgb


# ------------------------------------------------------------------ text

