"""The report as one self-contained HTML page — the only module that writes HTML.

>>> from onnxviz.report.html import render
>>> page = render(report_data)            # a str: save it as UTF-8          # doctest: +SKIP

What the page promises:

* **Offline, one file.** Pictures are ``data:`` PNG URIs; the style sheet and the script
  (``report.css``, ``report.js`` beside this module) are inline. A Content-Security-Policy
  meta tag allows nothing else: ``default-src 'none'``, images from ``data:`` only, and only
  this page's own script and style, by their SHA-256 (so even an injected ``<script>`` or
  inline handler would not run).
* **Escaped.** Every name, metadata value, label, path and message goes through
  :func:`html.escape`, in text and in attribute values alike; ids are numbers, never names.
  No event handler is written in the HTML: the script binds them and reads data only through
  ``textContent`` and ``data-*`` attributes.
* **Without JavaScript, or printed,** everything is there, one layer after another; the
  script adds one-layer-at-a-time navigation (list, buttons, ←/→), the theme toggle and the
  channel viewer.

The layer table's columns come from :data:`COLUMNS`; a field of the summary rows that it
does not name (a receptive field, say) gets a column of its own, headed by its key.

Known limits: a name is shown in full however long it is (it wraps).
"""

from __future__ import annotations

import base64
import hashlib
import html
from functools import lru_cache
from importlib.resources import files

from ..errors import format_bytes, format_shape
from ..graph.receptive import field_text
from .data import ImagePage, LayerPage, MapGrid, Picture, Report, Section, Tile

__all__ = ["render", "model_card_html", "gallery_html", "COLUMNS"]


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _num(v, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, int) or (float(v).is_integer() and abs(v) < 1e6):
        return f"{int(v)}"
    return f"{v:.{digits}g}"


def _pct(p: float) -> str:
    return "<0.1%" if p < 0.001 else ">99.9%" if 0.999 < p < 1 else f"{p:.1%}"


def _seq(v) -> str:
    return ",".join(map(str, v)) if v else "1"


def _generic(v) -> str:
    """A summary field no column was written for: lists as 1×2×3, dicts as key value pairs."""
    if v is None or v == "" or v == [] or v == {}:
        return "-"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_generic(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return format_shape(v)
    return str(v)


#: The layer table: (summary key, header, formatter, shown when). "always", or a test on the
#: column's values (a column that says nothing for every layer is left out).
COLUMNS = (
    ("index", "#", str, "always"),
    ("name", "layer", str, "always"),
    ("op", "op", str, "always"),
    ("filter_shape", "filters", format_shape, "always"),
    ("group", "group", str, "always"),
    ("strides", "stride", _seq, "always"),
    ("dilations", "dilation", _seq, lambda vs: any(v and set(v) != {1} for v in vs)),
    ("output_shape", "feature map", format_shape, "always"),
    ("receptive_field", "RF", field_text, "always"),
    ("activation", "after", lambda v: v or "-", "always"),
    ("folded", "folded in", lambda v: v or "-", any),
)
#: Summary fields shown in each row's tooltip instead of a column (long ONNX names).
TOOLTIP = ("node", "tensor", "conv_output", "weight")


def _uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _img(png: bytes, alt: str, width: int | None = None, height: int | None = None, cls: str = "") -> str:
    size = f' width="{int(width)}" height="{int(height)}"' if width and height else ""
    klass = f' class="{_e(cls)}"' if cls else ""
    return f'<img src="{_uri(png)}" alt="{_e(alt)}"{size}{klass}>'


@lru_cache(maxsize=None)
def _asset(name: str) -> str:
    return (files("onnxviz.report") / name).read_text(encoding="utf-8")


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def csp(style: str, script: str) -> str:
    """The page's Content-Security-Policy: its own inline style and script, ``data:`` images."""
    return (f"default-src 'none'; img-src data:; style-src {_hash(style)}; script-src {_hash(script)}; "
            "base-uri 'none'; form-action 'none'")


# ------------------------------------------------------------------ the model card

def _layer_table(rows: list) -> str:
    shown = [c for c in COLUMNS if c[3] == "always" or c[3]([r.get(c[0]) for r in rows])]
    known = {c[0] for c in COLUMNS} | set(TOOLTIP)
    extra = list(dict.fromkeys(k for r in rows for k in r if k not in known))  # new fields: new columns
    head = "".join(f"<th>{_e(h)}</th>" for _, h, _, _ in shown) + "".join(f"<th>{_e(k)}</th>" for k in extra)
    body = []
    for r in rows:
        tip = " · ".join(f"{k}: {r[k]}" for k in TOOLTIP if r.get(k))
        cells = "".join(f"<td>{_e(fmt(r.get(k)))}</td>" for k, _, fmt, _ in shown)
        cells += "".join(f"<td>{_e(_generic(r.get(k)))}</td>" for k in extra)
        body.append(f'<tr title="{_e(tip)}">{cells}</tr>')
    return f'<div class="wide"><table class="layers"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _card_facts(card: dict) -> list[tuple[str, str]]:
    inp = card.get("input")
    facts = [("file", card.get("path", "")),
             ("size", format_bytes(card["file_bytes"]) if card.get("file_bytes") is not None else "?"),
             ("producer", card.get("producer") or "unknown"),
             ("opset", ", ".join(f"{d} {v}" for d, v in card.get("opset", {}).items())),
             ("parameters", f"{card.get('parameters', 0):,}"),
             ("conv layers", str(len(card.get("layers", []))))]
    if card.get("graph"):
        facts.insert(3, ("graph", card["graph"]))
    if inp:
        facts.append(("input", f"{inp['name']}: {inp['layout']} {list(inp['shape'])}"))
        facts.append(("images", f"resized to {format_shape(inp['size'])} ({inp['size_from']}), "
                                f"preprocessing {card.get('preprocess') or 'none given (raw 0-255)'}, "
                                f"first conv sees {card.get('channel_order', 'RGB')}"))
    if card.get("outputs"):
        facts.append(("outputs", ", ".join(card["outputs"])))
    facts += [(k, v) for k, v in card.get("metadata", {}).items()]
    return facts


#: The card's own few rules, for a notebook (the report has its style sheet).
_CARD_STYLE = ("<style>.onnxviz-card dl{display:grid;grid-template-columns:max-content 1fr;gap:0 1em}"
               ".onnxviz-card dd{margin:0}.onnxviz-card dt{opacity:.7}</style>")


def model_card_html(card: dict, heading: str = "h2", standalone: bool = False) -> str:
    """The model card (facts, metadata, layer table) as an HTML fragment; :class:`Model`'s
    ``_repr_html_`` shows it in notebooks (``standalone``: with its own few style rules)."""
    facts = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in _card_facts(card))
    return (f'<div class="onnxviz-card">{_CARD_STYLE if standalone else ""}<{heading}>Model '
            f'<code>{_e(card.get("file", ""))}</code></{heading}>'
            f'<dl class="card">{facts}</dl>{_layer_table(card.get("layers", []))}</div>')


# ------------------------------------------------------------------ sections and pictures

def _figure(p: Picture, heading: str = "h5", cls: str = "") -> str:
    caption = f"<figcaption>{_e(p.caption)}</figcaption>" if p.caption else ""
    return (f'<figure class="picture{" " + cls if cls else ""}"><{heading}>{_e(p.title)}</{heading}>{_img(p.png, p.title)}'
            f"{caption}</figure>")


def _rows(rows: tuple) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{_e(h)}</th>" for h in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _section(s: Section, heading: str = "h4") -> str:
    if not s.pictures and not s.rows:
        return f'<p class="absent" data-kind="{_e(s.kind)}"><strong>{_e(s.title)}:</strong> {_e(s.absent or "none")}</p>'
    note = f'<p class="note">{_e(s.note)}</p>' if s.note else ""
    pictures = "".join(_figure(p) for p in s.pictures)
    return (f'<div class="section" data-kind="{_e(s.kind)}"><{heading}>{_e(s.title)}</{heading}>{note}'
            f'{_rows(s.rows)}<div class="gallery">{pictures}</div></div>')


def gallery_html(pictures: list, more: int = 0) -> str:
    """Titled pictures ``[(title, png bytes), …]`` side by side, as an HTML fragment (notebooks)."""
    figures = "".join(f'<figure style="margin:0 0 1em"><figcaption>{_e(t)}</figcaption>{_img(png, t)}</figure>'
                      for t, png in pictures)
    tail = f"<p>… and {more} more not shown</p>" if more else ""
    return f'<div class="onnxviz-gallery">{figures}{tail}</div>'


# ------------------------------------------------------------------ layers

def _tile(t: Tile, full: tuple) -> str:
    cls = "px" if t.width < 90 else ""
    size = f"{full[1]}×{full[0]}" + (f", shown {t.width}×{t.height}" if (t.height, t.width) != tuple(full) else "")
    attrs = (f'data-channel="{t.channel}" data-lo="{_e(_num(t.lo))}" data-hi="{_e(_num(t.hi))}" '
             f'data-mean="{_e(_num(t.mean))}" data-active="{t.active:.0%}" data-size="{_e(size)}"')
    return (f'<figure class="tile" tabindex="0" {attrs}>{_img(t.png, f"channel {t.channel}", t.width, t.height, cls)}'
            f"<figcaption><b>{t.channel}</b><span>{_e(_num(t.lo, 3))}–{_e(_num(t.hi, 3))}</span></figcaption></figure>")


def _grid(g: MapGrid, image: ImagePage) -> str:
    h, w = g.map_shape
    shown = f"first {len(g.tiles)} of {g.channels} channels" if len(g.tiles) < g.channels else f"all {g.channels} channels"
    notes = [f"{shown}, {h}×{w} each", f"{g.silent} silent (max ≤ 0)"]
    if g.downscaled > 1:
        notes.append(f"downscaled {g.downscaled}× to {g.tiles[0].height}×{g.tiles[0].width} to keep the report "
                     "small (each pixel the mean of a block; lossless PNG)")
    tiles = "".join(_tile(t, g.map_shape) for t in g.tiles)
    top_rows = "".join(f'<tr><td class="num">{t.channel}</td><td class="num">{_e(_num(t.mean))}</td>'
                       f'<td class="num">{_e(_num(t.hi))}</td><td class="num">{t.active:.0%}</td></tr>' for t in g.top)
    top = (f'<h5>Top {len(g.top)} channels by mean activation</h5><div class="best-row"><table class="stats">'
           f'<thead><tr><th class="num">channel</th><th class="num">mean</th><th class="num">max</th>'
           f'<th class="num">&gt; 0</th></tr></thead><tbody>{top_rows}</tbody></table>'
           f'<div class="grid best">{"".join(_tile(t, g.map_shape) for t in g.top)}</div></div>') if g.top else ""
    return (f'<article class="maps" data-image-name="{_e(image.name)}"><h4>{_e(image.name)}</h4>'
            f'<p class="note">{_e(" · ".join(notes))}</p><div class="grid">{tiles}</div>{top}</article>')


def _layer(k: int, page: LayerPage, images: list, count: int) -> str:
    r = page.row
    facts = [r.get("op", ""), f"filters {format_shape(r.get('filter_shape'))}", f"stride {_seq(r.get('strides'))}",
             f"feature map {format_shape(r.get('output_shape'))}", f"after {r.get('activation') or '-'}"]
    if r.get("folded"):
        facts.append(f"folded in: {r['folded']}")
    pager = (f'<span class="pager js-only"><button type="button" data-step="-1">← previous</button>'
             f'<span>layer {k + 1} of {count}</span><button type="button" data-step="1">next →</button></span>')
    filters = (_figure(page.filters, "h3", "filters") if page.filters else
               f'<p class="absent"><strong>Filters:</strong> {_e(page.filters_note)}</p>')
    if page.grids:
        maps = ('<h3>Feature maps</h3><p class="note">colour: each map on its own scale, low '
                '<span class="ramp"></span> high; the numbers under a map are its channel and value range'
                '<span class="js-only">; click a map (or press Enter on it) to enlarge it</span></p>'
                + "".join(_grid(g, images[g.image]) for g in page.grids))
    else:
        maps = f'<p class="absent"><strong>Feature maps:</strong> {_e(page.maps_note)}</p>'
    sections = "".join(_section(s, "h3") for s in page.sections)
    return (f'<section id="layer-{k}" class="layer" aria-labelledby="layer-{k}-h"><div class="layer-head">'
            f'<h2 id="layer-{k}-h">{_e(r.get("name", ""))}</h2>{pager}</div>'
            f'<p class="facts">{_e(" · ".join(facts))}</p>{filters}{maps}{sections}</section>')


# ------------------------------------------------------------------ images

def _predictions(rows: list) -> str:
    probs = any(r.get("probability") is not None for r in rows)
    head = "<th class=\"num\">#</th><th>class</th><th class=\"num\">score</th>" + (
        '<th class="num">probability</th>' if probs else "")
    body = "".join(f'<tr><td class="num">{r["index"]}</td><td>{_e(r["name"])}</td>'
                   f'<td class="num">{_e(_num(r["score"]))}</td>'
                   + (f'<td class="num">{_pct(r["probability"])}</td>' if probs else "") + "</tr>" for r in rows)
    return f"<table class=\"classes\"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _image(k: int, page: ImagePage, report: Report) -> str:
    if page.error:
        return (f'<article class="image failed" id="image-{k}"><h3>{_e(page.name)}</h3>'
                f'<p class="error">not used: {_e(page.error)}</p></article>')
    size = format_shape((report.card.get("input") or {}).get("size", ()))
    small = "px" if min((report.card.get("input") or {}).get("size", (0,))) < 160 else ""
    photo = (f'<figure>{_img(page.photo, page.name, cls=small)}<figcaption>as the model sees it: {_e(size)}, '
             f'before preprocessing ({_e(report.preprocess)})</figcaption></figure>') if page.photo else ""
    if page.predictions is not None:
        classes = f"<div><h4>Predicted classes</h4>{_predictions(page.predictions)}</div>"
    else:
        classes = f'<div><p class="absent"><strong>Predicted classes:</strong> {_e(report.classes)}</p></div>'
    sections = "".join(_section(s) for s in page.sections)
    return (f'<article class="image" id="image-{k}"><h3>{_e(page.name)}</h3><div class="image-row">'
            f"{photo}{classes}</div>{sections}</article>")


# ------------------------------------------------------------------ the page

def _nav(report: Report) -> str:
    items = ['<li><a href="#model">Model</a></li>', '<li><a href="#images">Images</a></li>',
             '<li class="group">Layers</li>']
    for k, page in enumerate(report.layers):
        items.append(f'<li><a href="#layer-{k}" data-layer="{k}">{_e(page.row.get("name", ""))}'
                     f'<span class="shape">{_e(format_shape(page.row.get("output_shape")))}</span></a></li>')
    return (f'<nav aria-label="Contents"><ol>{"".join(items)}</ol>'
            '<p class="keys js-only">← / → : previous / next layer</p></nav>')


def render(report: Report) -> str:
    """The whole page for ``report`` (see :mod:`onnxviz.report.data`)."""
    style, script = _asset("report.css"), _asset("report.js")
    card = report.card
    used = sum(1 for i in report.images if not i.error)
    summary = (f"{len(report.layers)} of {len(card.get('layers', []))} conv layers shown · {used} of "
               f"{len(report.images)} images used · preprocessing {report.preprocess}")
    warnings = ("<div class=\"warnings\">" + "".join(f"<p>warning: {_e(n)}</p>" for n in report.notes)
                + "</div>") if report.notes else ""
    images = "".join(_image(k, p, report) for k, p in enumerate(report.images))
    layers = "".join(_layer(k, p, report.images, len(report.layers)) for k, p in enumerate(report.layers))
    title = f"onnxviz report: {card.get('file', '')}"
    first = _figure(report.first_filters, "h3") if report.first_filters else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{_e(csp(style, script))}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="generator" content="onnxviz {_e(report.version)}">\n'
        f"<title>{_e(title)}</title>\n<style>{style}</style>\n</head>\n<body>\n"
        f'<header class="masthead"><h1>onnxviz report: <code>{_e(card.get("file", ""))}</code></h1>'
        f'<p class="sub">{_e(summary)}</p>'
        '<button type="button" id="theme" class="js-only">Dark theme</button></header>\n'
        f'<div class="layout">{_nav(report)}<main>\n'
        f'<section id="model">{model_card_html(card)}{first}{warnings}</section>\n'
        f'<section id="images"><h2>Images</h2><div class="images">{images}</div></section>\n'
        f"{layers}\n</main></div>\n"
        f"<footer>Made by onnxviz {_e(report.version)}. This file is self-contained: every picture is "
        "embedded and it fetches nothing.</footer>\n"
        f"<script>{script}</script>\n</body>\n</html>\n"
    )
