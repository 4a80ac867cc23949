"""What a report holds, as plain data: the builder fills it, :mod:`.html` turns it into a page.

The optional parts others add (class activation maps, filter patterns, dataset top-K
patches, anything a caller wants) are :class:`Section` values placed on a layer or an image:

>>> Section("cam", "Class activation maps (EigenCAM)",
...         pictures=(Picture("robin (0.93)", png, "block5_conv3, top-1 class"),),
...         note="heatmap over the photo, alpha 0.5")                       # doctest: +SKIP
>>> Section("patterns", "Filter patterns", absent="not requested (--patterns)")   # doctest: +SKIP

A section has pictures, or says plainly why it has none (``absent``); the page never shows
an empty placeholder. ``rows`` is an optional small table (first row: the headers).
Every text field is plain text: the page escapes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Picture", "Section", "Tile", "MapGrid", "LayerPage", "ImagePage", "Report"]


@dataclass(frozen=True)
class Picture:
    """One picture of a section: a title above it, a one-line caption below (plain text)."""

    title: str
    png: bytes
    caption: str = ""


@dataclass(frozen=True)
class Section:
    """An optional part of a layer's or an image's page (see the module docstring).

    ``kind``: ``cam``, ``patterns``, ``dataset``, or any other word; a section given by the
    caller replaces the report's own statement of the same kind at the same place.
    """

    kind: str
    title: str
    pictures: tuple = ()
    note: str = ""
    absent: str = ""
    rows: tuple = ()


@dataclass(frozen=True)
class Tile:
    """One channel's map for one image: a colour-mapped PNG and its values at full resolution."""

    channel: int
    png: bytes
    width: int          # of the picture (after any downscaling)
    height: int
    lo: float           # the map's own range: its colour scale runs from lo to hi
    hi: float
    mean: float
    active: float       # fraction of positions > 0


@dataclass
class MapGrid:
    """A layer's maps for one image: the first channels, and the top channels by mean."""

    image: int                          # index into Report.images
    tiles: list                         # Tile, channel order
    top: list                           # Tile, best first
    channels: int                       # channels in the layer
    map_shape: tuple                    # (H, W) of one map
    downscaled: int = 1                 # 1: full resolution; f: every f×f block averaged
    silent: int = 0                     # channels whose max is ≤ 0 for this image


@dataclass
class LayerPage:
    row: dict                           # the layer's Model.summary() row
    filters: Picture | None = None
    filters_note: str = ""              # why there is no filter picture
    grids: list = field(default_factory=list)
    sections: list = field(default_factory=list)
    maps_note: str = ""                 # why there are no maps


@dataclass
class ImagePage:
    name: str
    photo: bytes | None = None          # PNG of the image at the model's input size
    error: str = ""                     # why it could not be used ("" if it was)
    predictions: list | None = None     # top_classes rows: index, name, score, probability
    sections: list = field(default_factory=list)


@dataclass
class Report:
    card: dict                          # report.card.model_card
    images: list                        # ImagePage
    layers: list                        # LayerPage
    classes: str = ""                   # where the scores and names come from, or why there are none
    preprocess: str = ""
    notes: list = field(default_factory=list)   # warnings met while building, one line each
    first_filters: Picture | None = None         # the first conv's filters, when it is not a shown layer
    version: str = ""
