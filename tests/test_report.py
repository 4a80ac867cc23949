"""The HTML report without a browser: its data against references, escaping, the optional
sections, size budget, and every bad input's exact error (browser tests: test_report_browser.py)."""

import base64
import html
import io
import os
import re

import numpy as np
import pytest
from PIL import Image

import onnxviz
from conftest import reference
from onnxviz.cli import main
from onnxviz.render.colormaps import lut
from onnxviz.report import Picture, Section, build
from onnxviz.report import builder as build_module
from onnxviz.report.html import _layer_table, render
from report_models import HOSTILE, HOSTILE_LABEL, HOSTILE_SOURCE, classifier, feature_net, hostile, photos


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def decode(png: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(png))
    img.load()
    return img


def uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


@pytest.fixture
def model(tmp_path):
    path, logits = classifier(tmp_path / "net.onnx")
    return path, logits, photos(tmp_path)


def _x(paths):
    """The input the model sees: unit preset, 32×32 bilinear, NCHW."""
    from onnxviz.preprocess import to_tensor
    return to_tensor([str(p) for p in paths], size=(32, 32), layout="NCHW", preset="unit")


def test_maps_tiles_stats_and_classes_match_a_reference(model):
    path, logits, images = model
    data = build(str(path), images, layers=["b1c1", "b2c1"], top=3, top_channels=3)
    tensors = [onnxviz.load(str(path)).layer(k).tensor for k in ("b1c1", "b2c1")]
    ref = reference(path, [*tensors, logits], _x(images))  # onnx.utils.Extractor, no optimisations
    assert [p.row["name"] for p in data.layers] == ["b1c1", "b2c1"]
    for page, tensor in zip(data.layers, tensors):
        maps = ref[tensor]
        assert [g.image for g in page.grids] == [0, 1]
        for g in page.grids:
            m = maps[g.image]
            assert [t.channel for t in g.tiles] == list(range(m.shape[0])) and g.downscaled == 1
            for t in g.tiles:
                img = decode(t.png)
                assert img.mode == "P" and img.size == m.shape[:0:-1]
                lo, hi = m[t.channel].min(), m[t.channel].max()
                expected = np.round((m[t.channel] - lo) / (hi - lo) * 255) if hi > lo else np.zeros_like(lo)
                assert np.abs(np.asarray(img, np.int16) - expected).max() <= 1
                assert np.array_equal(np.asarray(img.getpalette(), np.uint8).reshape(-1, 3)[:256], lut("viridis"))
                assert t.lo == pytest.approx(lo, abs=1e-5) and t.hi == pytest.approx(hi, abs=1e-5)
                assert t.active == pytest.approx((m[t.channel] > 0).mean())
            means = m.reshape(m.shape[0], -1).mean(axis=1)
            assert [t.channel for t in g.top] == list(np.argsort(-means, kind="stable")[:3])
            assert [t.mean for t in g.top] == pytest.approx(sorted(means, reverse=True)[:3], abs=1e-5)
            assert g.silent == int((m.reshape(m.shape[0], -1).max(axis=1) <= 0).sum())
    scores = ref[logits]
    for k, page in enumerate(data.images):
        order = np.argsort(-scores[k])[:3]
        assert [r["index"] for r in page.predictions] == list(order)
        assert [r["name"] for r in page.predictions] == [str(c) for c in order]
        assert [r["score"] for r in page.predictions] == pytest.approx(scores[k, order], abs=1e-5)
        e = np.exp(scores[k] - scores[k].max())
        assert [r["probability"] for r in page.predictions] == pytest.approx((e / e.sum())[order], abs=1e-6)
    assert data.classes == ("scores are the logits before the final Softmax of output 'softmax_8_out'; "
                            "class names: none given: class indices")
    page = render(data)
    for p in data.layers:  # every picture is in the page
        for t in p.grids[1].tiles:
            assert uri(t.png) in page


def test_page_is_self_contained_with_a_strict_csp(model, tmp_path):
    path, _, images = model
    out = onnxviz.report(str(path), images, tmp_path / "r.html")
    page = open(out, encoding="utf-8").read()
    head = page[:page.index("<style>")]
    assert re.search(r'<meta charset="utf-8">\n<meta http-equiv="Content-Security-Policy" content="'
                     r"default-src &#x27;none&#x27;; img-src data:; style-src &#x27;sha256-[A-Za-z0-9+/=]+&#x27;; "
                     r"script-src &#x27;sha256-[A-Za-z0-9+/=]+&#x27;; base-uri &#x27;none&#x27;; "
                     r'form-action &#x27;none&#x27;">', head)
    import hashlib
    for kind, body in (("style", re.search(r"<style>(.*?)</style>", page, re.S).group(1)),
                       ("script", re.search(r"<script>(.*?)</script>", page, re.S).group(1))):
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"{kind}-src &#x27;sha256-{digest}&#x27;" in head
    assert page.count("<script") == 1 and page.count("<style") == 1
    srcs = re.findall(r'\ssrc="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r'\s(href|src|action)="(?!#|data:)', page)      # nothing to fetch or follow
    assert not re.search(r"\son[a-z]+=", page)                             # no inline event handler
    assert "http://" not in page and "https://" not in page and "url(" not in page
    for s in srcs:
        decode(base64.b64decode(s.split(",", 1)[1]))


def test_hostile_names_metadata_and_labels_are_escaped(tmp_path):
    path, _ = hostile(tmp_path / "h.onnx")
    odd = tmp_path / "<img src=y onerror=alert(5)>.png"  # a file name is data too
    os.replace(photos(tmp_path, 1)[0], odd)
    page = open(onnxviz.report(str(path), [odd], tmp_path / "h.html"), encoding="utf-8").read()
    for text in (*HOSTILE, HOSTILE_SOURCE, HOSTILE_LABEL, odd.name):
        assert text not in page
        assert html.escape(text) in page
    assert "<img src=x" not in page and page.count("<script") == 1 and "<svg" not in page
    assert 'id="layer-0"' in page and 'data-layer="0"' in page  # ids are numbers, never names


def test_feature_net_has_maps_but_no_classes_and_says_so(tmp_path, capsys):
    path = feature_net(tmp_path / "f.onnx")
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    code, out, err = run(["report", path, *photos(tmp_path), "--cam", "grad", "--labels", labels, "-o",
                          tmp_path / "f.html"], capsys)
    assert code == 0 and out.startswith(f"wrote {tmp_path / 'f.html'}  (")
    assert err == (f"warning: labels '{labels}' are not used: the model has no class output\n"
                   "warning: --cam grad: not available for a model without a class output\n")
    with pytest.warns(onnxviz.OnnxvizWarning, match="^--cam grad: not available for a model without a class"):
        data = build(str(path), photos(tmp_path), cam="grad", labels=None)
    assert data.classes == ("not available: the model has no class output (one score per class and image): "
                            "'maxpool_4_out' is 8×8×8 per image")
    assert all(p.predictions is None for p in data.images)
    assert [s.absent for p in data.images for s in p.sections] == ["not available for a model without a class output"] * 2
    assert [len(p.grids) for p in data.layers] == [2, 2]
    page = render(data)
    assert "<strong>Predicted classes:</strong> not available: the model has no class output" in page
    assert "<strong>Class activation maps:</strong> not available for a model without a class output" in page


def test_pattern_section_is_the_patterns_of_each_layer(model):
    path, _, images = model
    data = build(str(path), images[:1], patterns=True)
    m = onnxviz.load(str(path))
    for page in data.layers:
        (section,) = [s for s in page.sections if s.kind == "patterns"]
        layer = m.layer(page.row["name"])
        count = layer.output_shape[0]
        want = onnxviz.patterns(m, layer.name, list(range(min(16, count))))
        (pic,) = section.pictures
        best = int(np.argmax(want.activation))
        assert pic.caption.endswith(f"the highest mean activation reached is channel {best}'s, "
                                    f"{float(want.activation[best]):.3g}")
        assert section.note == f"the first {min(16, count)} of {count} channels"
        from onnxviz.render.patterns import patterns_image
        grid = patterns_image(want.images, want.channels, f"{layer.name}: channels 0–{min(16, count) - 1}")
        assert np.array_equal(np.asarray(decode(pic.png).convert("RGB")), np.asarray(grid.convert("RGB")))


def test_optional_sections_are_stated_when_absent(model):
    path, _, images = model
    data = build(str(path), images[:1], cam="none")
    assert [(s.kind, s.absent) for s in data.images[0].sections] == [("cam", "not requested (give --cam METHOD)")]
    assert [(s.kind, s.absent) for s in data.layers[0].sections] == [
        ("patterns", "not requested (give --patterns)"),
        ("dataset", "not requested (give --dataset DIR)")]


def _overlays(section) -> list:
    return [np.asarray(decode(p.png).convert("RGB")) for p in section.pictures]


@pytest.mark.parametrize("method", [None, "ablation", "hires"])
def test_cam_section_is_the_cam_of_each_images_top_classes(model, method):
    """By default Grad-CAM; each image's top 3 classes, the overlays onnxviz.cam draws."""
    from onnxviz.preprocess import load_image
    from onnxviz.render.overlay import cam_picture

    path, _, images = model
    data = build(str(path), images, **({"cam": method} if method else {}))
    m = onnxviz.load(str(path))
    for k, page in enumerate(data.images):
        (section,) = [s for s in page.sections if s.kind == "cam"]
        top = [row["index"] for row in page.predictions[:3]]
        want = onnxviz.cam(m, [load_image(str(images[k]))] * 3, method or "grad", target=top)
        assert section.title == f"Class activation maps ({want.title})"
        assert section.note == "the top 3 classes of each image"
        titles = [want.caption(i).rsplit(", image ", 1)[0] for i in range(3)]
        assert [p.title for p in section.pictures] == titles and "image" not in titles[0]
        drawn = _overlays(section)
        for i in range(3):
            assert np.array_equal(drawn[i], np.asarray(cam_picture(want, i, title=titles[i]).convert("RGB")))


def test_cam_section_falls_back_to_ablation_without_a_gradient(tmp_path):
    """An op without a backward rule on the path (Sin): the default becomes AblationCAM, said."""
    from builders import no_gradient_classifier, save

    path = save(no_gradient_classifier(32), tmp_path / "sin.onnx")
    with pytest.warns(onnxviz.OnnxvizWarning, match=r"^AblationCAM instead of Grad-CAM \(method 'auto'\): "
                                                    "Grad-CAM needs a gradient, and no gradient rule for Sin"):
        data = build(str(path), photos(tmp_path, 1), layers=["c1"])
    (section,) = [s for s in data.images[0].sections if s.kind == "cam"]
    assert section.title == "Class activation maps (AblationCAM)" and len(section.pictures) == 3
    assert section.note == "the top 3 classes of each image (AblationCAM: no gradient)"
    assert any(n.startswith("AblationCAM instead of Grad-CAM") for n in data.notes)


def test_feature_net_gets_eigencam_when_asked(tmp_path):
    path = feature_net(tmp_path / "f.onnx")
    data = build(str(path), photos(tmp_path), cam="auto")
    assert [s.absent for p in data.images for s in p.sections if s.kind == "cam"] == [
        "not available for a model without a class output (EigenCAM explains none and works: --cam eigen)"] * 2
    data = build(str(path), photos(tmp_path), cam="eigen")
    want = onnxviz.cam(onnxviz.load(str(path)), [str(p) for p in photos(tmp_path)], "eigen")
    for k, page in enumerate(data.images):
        (section,) = [s for s in page.sections if s.kind == "cam"]
        assert section.note == "EigenCAM explains no class: one map per image" and len(section.pictures) == 1
        from onnxviz.render.overlay import cam_picture
        title = want.caption(k).rsplit(", image ", 1)[0]
        assert section.pictures[0].title == title
        assert np.array_equal(_overlays(section)[0], np.asarray(cam_picture(want, k, title=title).convert("RGB")))


def test_unknown_cam_method_is_refused_before_any_work(model, capsys):
    path, _, images = model
    with pytest.raises(onnxviz.OnnxvizError, match=r"^unknown CAM method 'gradcam'; methods are: auto, none, "
                                                   r"eigen, score, ablation, grad, grad\+\+, xgrad, layer, hires, "
                                                   r"guided-grad$"):
        build(str(path), images, cam="gradcam")
    code, out, err = run(["report", path, *images, "--cam", "gradcam", "-o", "x.html"], capsys)
    assert code == 2 and "invalid choice: 'gradcam'" in err


def test_callers_sections_replace_the_statement_of_their_kind(model):
    path, _, images = model
    pic = Image.new("RGB", (20, 10), (200, 30, 30))
    buf = io.BytesIO()
    pic.save(buf, "PNG")
    cam = Section("cam", "My CAM", pictures=(Picture("class 3", buf.getvalue(), "by hand"),), note="mine",
                  rows=(("class", "score"), ("3", "0.9")))
    data = build(str(path), images, sections={1: [cam], "b2c1": [Section("dataset", "Mine", absent="later")]})
    assert data.images[1].sections == [cam] and data.images[0].sections[0].kind == "cam"
    assert [s.title for s in data.layers[-1].sections] == ["Filter patterns", "Mine"]
    page = render(data)
    assert uri(buf.getvalue()) in page and "<figcaption>by hand</figcaption>" in page
    assert "<td>0.9</td>" in page and "<strong>Mine:</strong> later" in page
    with pytest.raises(onnxviz.LayerError, match=r"^sections: layer 'b1c1' is not in this report; its layers "
                                                 r"are: b1c2, b2c1$"):
        build(str(path), images, sections={"b1c1": [cam]})
    with pytest.raises(onnxviz.OnnxvizError, match=r"^sections: image 2 is out of range; 2 images are given "
                                                   r"\(0 to 1\)$"):
        build(str(path), images, sections={2: [cam]})


def test_dataset_folder_pictures_and_missing_layers(model, tmp_path):
    path, _, images = model
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "index.txt").write_text("a.png\nb.png\n")
    patches = Image.new("RGB", (30, 12), (1, 2, 3))
    patches.save(folder / "b2c1.png")
    np.savez(folder / "b2c1.npz", count=np.int64(1234), mean=np.zeros(8, np.float32))
    data = build(str(path), images[:1], dataset=str(folder))
    by = {p.row["name"]: p.sections[-1] for p in data.layers}
    assert by["b1c2"].kind == "dataset" and by["b1c2"].absent == f"'{folder}' has no b1c2.png (its layers: b2c1)"
    (pic,) = by["b2c1"].pictures
    assert decode(pic.png).size == (30, 12) and pic.png == (folder / "b2c1.png").read_bytes()
    assert pic.caption == "one row per channel, its best patches first over 1,234 images"
    (folder / "b2c1.png").write_bytes(b"not a png")
    assert build(str(path), images[:1], dataset=str(folder)).layers[-1].sections[-1].absent == \
        f"'{folder / 'b2c1.png'}' is not a PNG file"


def test_large_maps_are_downscaled_and_labelled(model, monkeypatch):
    path, _, images = model
    monkeypatch.setattr(build_module, "MAX_GRID_PIXELS", 4 * 32 * 32 // 4)  # b1c1: 4 maps of 32×32 → 2×
    data = build(str(path), images[:1], layers=["b1c1"])
    g = data.layers[0].grids[0]
    assert g.downscaled == 2 and g.map_shape == (32, 32)
    tensor = onnxviz.load(str(path)).layer("b1c1").tensor
    maps = reference(path, [tensor], _x(images[:1]))[tensor][0]
    for t in g.tiles:
        img = decode(t.png)
        assert img.size == (16, 16)
        blocks = maps[t.channel].reshape(16, 2, 16, 2).mean(axis=(1, 3))
        lo, hi = maps[t.channel].min(), maps[t.channel].max()  # the full-resolution range
        assert np.abs(np.asarray(img, np.int16) - np.round((blocks - lo) / (hi - lo) * 255)).max() <= 1
    assert "downscaled 2× to 16×16 to keep the report small" in render(data)


def test_layer_table_grows_a_column_for_a_new_summary_field(model):
    path, _, _ = model
    rows = onnxviz.load(str(path)).summary()["layers"]
    rows[0]["rf"] = {"size": 3, "jump": 1}
    table = _layer_table(rows)
    assert "<th>rf</th>" in table and "<td>size 3, jump 1</td>" in table and table.count("<td>-</td>") >= 2
    assert "<th>folded in</th>" not in table  # a column that says nothing is left out


def test_serial_and_parallel_encoding_give_the_same_page(model):
    path, _, images = model
    done = []
    serial = render(build(str(path), images, workers=1, progress=done.append))
    assert serial == render(build(str(path), images, workers=4))
    assert done == [1, 2, 3, 4]  # the run, the classes, then each of the 2 layers


def test_the_first_layer_filters_are_rgb(model, tmp_path):
    path, _, images = model
    data = build(str(path), images[:1])  # default layers: b1c2, b2c1 — the first layer's filters on the card
    assert data.first_filters.title == "First layer b1c1: filters, as RGB colour"
    img = decode(data.first_filters.png)
    ref = onnxviz.render.filter_image(onnxviz.load(str(path)), "b1c1", rgb=True)
    assert np.array_equal(np.asarray(img), np.asarray(ref))
    data = build(str(path), images[:1], layers=["b1c1", "b1c2"])
    assert data.first_filters is None and data.layers[0].filters.title == "Filters, as RGB colour"
    assert data.layers[1].filters.title == "Filters"


def test_labels_file_and_metadata(model, tmp_path):
    path, _, images = model
    labels = tmp_path / "labels.txt"
    labels.write_text("zero\none\ntwo\nthree\nfour\n\n")
    data = build(str(path), images[:1], labels=str(labels), top=5)
    assert sorted(r["name"] for r in data.images[0].predictions) == ["four", "one", "three", "two", "zero"]
    assert data.classes.endswith(f"class names: '{labels}'")
    labels.write_text("a\nb\n")
    with pytest.raises(onnxviz.OnnxvizError, match=rf"^labels file '{re.escape(str(labels))}' has 2 names; the "
                                                   r"model scores 5 classes \(one name a line, in class order\)$"):
        build(str(path), images[:1], labels=str(labels))
    hpath, _ = hostile(tmp_path / "h.onnx")
    data = build(str(hpath), images[:1], top=5)
    assert HOSTILE_LABEL in [r["name"] for r in data.images[0].predictions]
    assert data.classes.endswith("class names: the model's onnxviz.labels metadata")


def test_a_bad_image_is_named_and_the_others_go_on(model, tmp_path, capsys):
    path, _, images = model
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "r.html"
    code, stdout, err = run(["report", path, images[0], bad, images[1], "-o", out], capsys)
    assert code == 0
    assert err == (f"warning: image 'broken.jpg' is not used: '{bad}' is not an image Pillow can decode "
                   "(JPEG, PNG, BMP, GIF, TIFF, WebP, …)\n")
    assert stdout == f"wrote {out}  ({onnxviz.errors.format_bytes(os.path.getsize(out))}, 2 layers)\n"
    page = out.read_text()
    assert (f'<h3>broken.jpg</h3><p class="error">not used: {html.escape(str(bad))}' in page
            or f"<h3>broken.jpg</h3><p class=\"error\">not used: &#x27;{html.escape(str(bad))}&#x27;" in page)
    assert page.count('<article class="maps"') == 2 * 2  # 2 layers × the 2 good images


def test_cli_errors_are_one_line_and_leave_no_file(model, tmp_path, capsys):
    path, _, images = model
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    out = tmp_path / "r.html"
    cases = [
        (["report", path, bad, "-o", out], f"error: image '{bad}' is empty (0 bytes)"),
        (["report", path, bad, tmp_path / "none.png", "-o", out],
         f"error: no image can be used: image '{bad}' is empty (0 bytes); image file "
         f"'{tmp_path / 'none.png'}' does not exist"),
        (["report", path, images[0], "--dataset", tmp_path / "nope", "-o", out],
         f"error: dataset folder '{tmp_path / 'nope'}' does not exist; give the -o folder of "
         "'onnxviz dataset MODEL SOURCE --layer L -o DIR'"),
        (["report", path, images[0], "--dataset", images[1].parent, "-o", out],
         f"error: '{images[1].parent}' is not a dataset-pass folder: it has no index.txt (make one with "
         "'onnxviz dataset MODEL SOURCE --layer L -o DIR')"),
        (["report", path, images[0], "-o", tmp_path / "no" / "r.html"],
         f"error: output folder '{tmp_path / 'no'}' does not exist"),
        (["report", path, images[0], "-o", "/sys/r.html"], "error: output folder '/sys' is not writable"),
        (["report", path, images[0], "-o", images[0]],
         f"error: output '{images[0]}' is the input file '{images[0]}'; choose another name"),
        (["report", path, images[0], "--labels", tmp_path / "l.txt", "-o", out],
         f"error: labels file '{tmp_path / 'l.txt'}' does not exist"),
        (["report", path, images[0], "--layer", "b9", "-o", out], "error: no layer 'b9'; layers are: b1c1, b1c2, b2c1"),
    ]
    for argv, expected in cases:
        code, stdout, err = run(argv, capsys)
        assert (code, stdout, err) == (1, "", expected + "\n"), argv
    assert sorted(os.listdir(tmp_path)) == ["bad.png", "net.onnx", "photo0.png", "photo1.png"]


def test_over_budget_says_what_to_drop(model, tmp_path, capsys):
    path, _, images = model
    out = tmp_path / "r.html"
    code, _, err = run(["report", path, *images, "--max-size", "20k", "-o", out], capsys)
    assert code == 1 and not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".onnxviz")]
    assert re.fullmatch(r"error: the report would be [\d.]+ KiB, over its budget of 20.0 KiB; the largest parts "
                        r"are the class activation maps [\d.]+ KiB, layer b2c1 [\d.]+ KiB, layer b1c2 "
                        r"[\d.]+ KiB: drop layers \(--layer\), images \(2 now\), maps per layer \(--max, 64 now\) or "
                        r"the class activation maps \(--cam none\), or raise --max-size\n", err), err
    code, _, err = run(["report", path, *images, "--max-size", "20k", "--cam", "none", "-o", out], capsys)
    assert code == 1 and not out.exists()
    assert re.fullmatch(r"error: the report would be [\d.]+ KiB, over its budget of 20.0 KiB; the largest parts "
                        r"are layer b(1c2|2c1) [\d.]+ KiB, layer b(1c2|2c1) [\d.]+ KiB, the images [\d.]+ KiB: drop layers "
                        r"\(--layer\), images \(2 now\) or maps per layer \(--max, 64 now\), or raise --max-size\n",
                        err), err


def test_python_api_is_the_package_itself(model, tmp_path):
    path, _, images = model
    import onnxviz.report as package
    assert onnxviz.report is package and callable(package)
    assert onnxviz.report(onnxviz.load(str(path)), images[0], tmp_path / "a.html") == str(tmp_path / "a.html")
    with pytest.raises(onnxviz.UnsupportedModelError, match=r"^a report needs a model with an image input \(rank 4\)"):
        from builders import Net, save
        net = Net((1, 2, 16))
        net.cur = net.node("Conv", [net.cur, net.init("w", np.ones((3, 2, 3), np.float32))], name="c1d")
        onnxviz.report(str(save(net.model(), tmp_path / "c1d.onnx")), images[0], tmp_path / "b.html")


def test_class_scores_from_a_tensor_or_from_the_maps_run(model):
    from onnxviz.classes import class_scores, class_tensors
    from onnxviz.features import input_tensor

    path, logits, images = model
    m = onnxviz.load(str(path))
    x = input_tensor(m, [str(p) for p in images])
    assert np.array_equal(x, _x(images))
    scores, out = class_scores(m, x)
    assert (out.tensor, out.softmax) == (logits, True) and class_tensors(m) == (logits,)
    fm = m.feature_maps([str(p) for p in images], "b1c1", also=class_tensors(m))
    assert list(fm) == ["b1c1"] and np.array_equal(class_scores(m, values=fm.also)[0], scores)
    np.testing.assert_allclose(scores, reference(path, [logits], x)[logits], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_vgg16_with_two_images_fits_the_size_budget(vgg16_report):
    path, data = vgg16_report
    assert os.path.getsize(path) <= 25_000_000
    assert [p.row["name"] for p in data.layers] == ["block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3",
                                                    "block5_conv3"]
    assert all(g.downscaled == 1 and len(g.tiles) == 64 for p in data.layers for g in p.grids)
    assert data.classes.startswith("scores are the logits before the final Softmax of output")
    assert [len(p.predictions) for p in data.images] == [5, 5]
    assert data.first_filters.title == "First layer block1_conv1: filters, as RGB colour"


def test_a_fixed_batch_model_runs_image_by_image(vgg, tmp_path):
    net, path = vgg  # input (1, 3, 16, 16): batch fixed at 1; its output is a pooled map
    images = photos(tmp_path)
    data = build(str(path), images, layers=["b1c2"])
    assert [g.image for g in data.layers[0].grids] == [0, 1]
    from onnxviz.preprocess import to_tensor
    x = to_tensor([str(p) for p in images], size=(16, 16), layout="NCHW", preset="unit")
    tensor = onnxviz.load(str(path)).layer("b1c2").tensor
    for k in range(2):
        maps = reference(path, [tensor], x[k:k + 1])[tensor][0]
        assert [t.hi for t in data.layers[0].grids[k].tiles] == pytest.approx(maps.max(axis=(1, 2)), abs=1e-5)
    assert data.classes.startswith("not available: the model has no class output")


def test_class_scores_that_need_another_input_leave_the_maps(tmp_path):
    from onnx import TensorProto, helper

    from builders import Net, save
    net = Net(("N", 3, 16, 16))
    net.conv(3, 4, name="c0")
    net.act()
    net.cur = net.node("GlobalAveragePool", [net.cur])
    net.cur = net.node("Flatten", [net.cur])
    net.cur = net.node("Mul", [net.cur, "scale"])  # the head needs a second model input
    model = net.model(metadata={"onnxviz.preprocess": "unit"})
    model.graph.input.append(helper.make_tensor_value_info("scale", TensorProto.FLOAT, [1, 4]))
    path = save(model, tmp_path / "two.onnx")
    data = build(str(path), photos(tmp_path, 1))
    assert len(data.layers[0].grids) == 1
    assert data.classes == ("not available: the class scores cannot be computed: these layers also need the "
                            "model input(s) 'scale' besides 'input'; give them with feeds={name: array} (on "
                            "the command line, --feed NAME=FILE.npy)")
