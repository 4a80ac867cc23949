"""The HTML report in a real browser: Debian's chromium, driven by Playwright, offline.

Every page is opened from a file:// URL with every other request made to fail, and checked
for console errors, page errors, dialogs and undecoded pictures. Screenshots are kept in
tests/artifacts/ (git-ignored); each test prints where.
"""

import os
import shutil
from pathlib import Path

import matplotlib.cbook
import pytest

import onnxviz
from report_models import HOSTILE, HOSTILE_LABEL, HOSTILE_SOURCE, hostile, photos

CHROMIUM = os.environ.get("ONNXVIZ_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).parent / "artifacts"
ROOT = Path(__file__).resolve().parent.parent


def _missing() -> str:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install '.[test]')"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)) and not shutil.which("chromium"):
        return f"no chromium at {CHROMIUM} (apt-get install chromium; .ci/run installs it)"
    return ""


if _missing():
    if os.environ.get("ONNXVIZ_REQUIRE_BROWSER"):  # CI: these tests must run, not skip
        raise RuntimeError(f"ONNXVIZ_REQUIRE_BROWSER is set but {_missing()}")
    pytest.skip(_missing(), allow_module_level=True)
from playwright import sync_api  # noqa: E402


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM if os.path.isfile(CHROMIUM) else shutil.which("chromium"),
                              args=FLAGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    """The demo model's report: 2 images (a generated one, a photo), labels, default layers."""
    out = tmp_path_factory.mktemp("demo") / "demo report.html"
    photo = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    onnxviz.report(str(ROOT / "models" / "demo.onnx"), [str(ROOT / "models" / "demo_sample.png"), photo], out,
                   labels=str(ROOT / "models" / "demo_labels.txt"))
    return out


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    path, _ = hostile(folder / "h.onnx")
    out = folder / "h.html"
    onnxviz.report(str(path), photos(folder), out, layers=[0, 1, 2])
    return out


class Page:
    """A report opened offline, with everything that went wrong collected."""

    def __init__(self, browser, path, **context):
        self.context = browser.new_context(viewport={"width": 1280, "height": 900}, **context)
        self.problems, self.requests = [], []
        url = path.resolve().as_uri()

        def route(r):
            if r.request.url == url or r.request.url.startswith("data:"):
                r.continue_()
            else:
                self.problems.append(f"request: {r.request.url}")
                r.abort()

        self.context.route("**/*", route)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: m.type in ("error", "warning") and self.problems.append(f"console {m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("dialog", lambda d: (self.problems.append(f"dialog: {d.message}"), d.dismiss()))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(url)

    def check(self):
        """No problem so far, every request the page itself, every <img> decoded."""
        undecoded = self.page.evaluate(
            "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length")
        own = self.page.url.split("#")[0]
        assert self.problems == [] and undecoded == 0
        assert {r for r in self.requests if not r.startswith("data:")} <= {own}
        assert self.page.evaluate("document.images.length") > 0

    def visible_layers(self):
        return [s for s in self.page.evaluate("Array.from(document.querySelectorAll('section.layer')).map(s => s.id)")
                if self.page.locator(f"#{s}").is_visible()]

    def shot(self, name, **kw):
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        self.page.screenshot(path=str(path), **kw)
        print(f"screenshot: {path}")
        return path

    def close(self):
        self.context.close()


@pytest.fixture
def opened(browser):
    pages = []

    def open_(path, **context):
        pages.append(Page(browser, path, **context))
        return pages[-1]

    yield open_
    for p in pages:
        p.close()


def test_layer_navigation_by_list_buttons_and_keys(opened, demo_report):
    p = opened(demo_report)
    p.check()
    names = [t.strip() for t in p.page.locator("section.layer h2").all_inner_texts()]
    assert names == ["block1_conv2", "block2_conv2", "block3_conv2"]
    assert p.visible_layers() == ["layer-0"]
    p.page.click("nav a[data-layer='2']")
    assert p.visible_layers() == ["layer-2"] and p.page.evaluate("location.hash") == "#layer-2"
    assert p.page.get_attribute("nav a[data-layer='2']", "aria-current") == "true"
    p.page.keyboard.press("ArrowLeft")
    assert p.visible_layers() == ["layer-1"]
    p.page.keyboard.press("ArrowRight")
    p.page.keyboard.press("ArrowRight")  # past the last layer: stays there
    assert p.visible_layers() == ["layer-2"]
    p.page.click("#layer-2 button[data-step='-1']")
    assert p.visible_layers() == ["layer-1"]
    p.page.locator("#layer-1").scroll_into_view_if_needed()
    p.shot("report_layer.png")
    p.check()


def test_click_to_enlarge_shows_the_channel_and_its_range(opened, demo_report):
    p = opened(demo_report)
    page = p.page
    assert page.locator("#viewer").is_hidden()
    tile = page.locator("#layer-0 article.maps").nth(1).locator(".grid:not(.best) .tile").nth(5)
    lo, hi = tile.get_attribute("data-lo"), tile.get_attribute("data-hi")
    small = tile.locator("img").bounding_box()["width"]
    tile.click()
    assert page.locator("#viewer").is_visible()
    assert page.inner_text("#viewer-title") == "block1_conv2 · grace_hopper.jpg · channel 5"
    assert page.inner_text("#viewer-range").startswith(f"values {lo} to {hi} ")
    big = page.locator("#viewer img")
    assert big.get_attribute("src") == tile.locator("img").get_attribute("src")
    assert big.evaluate("i => i.naturalWidth") == 64 and big.bounding_box()["width"] > 4 * small
    p.shot("report_viewer.png")
    page.keyboard.press("ArrowRight")  # the next channel of the same grid, not the next layer
    assert page.inner_text("#viewer-title").endswith("channel 6") and p.visible_layers() == ["layer-0"]
    page.keyboard.press("Escape")
    assert page.locator("#viewer").is_hidden()
    tile.focus()
    page.keyboard.press("Enter")
    assert page.inner_text("#viewer-title").endswith("channel 5")
    page.click("#viewer-close")
    assert page.locator("#viewer").is_hidden()
    p.check()


def test_themes_follow_the_system_and_the_toggle(opened, demo_report):
    background = "getComputedStyle(document.documentElement).backgroundColor"
    light = opened(demo_report, color_scheme="light")
    assert light.page.evaluate(background) == "rgb(255, 255, 255)"
    dark = opened(demo_report, color_scheme="dark")
    assert dark.page.evaluate(background) == "rgb(21, 22, 26)"
    assert dark.page.inner_text("#theme") == "Light theme"
    dark.shot("report_dark.png")
    dark.page.click("#theme")
    assert dark.page.evaluate(background) == "rgb(255, 255, 255)"
    assert dark.page.evaluate("document.documentElement.dataset.theme") == "light"
    light.check()
    dark.check()


def test_without_javascript_everything_is_there(opened, demo_report):
    p = opened(demo_report, java_script_enabled=False)
    p.check()
    assert p.visible_layers() == ["layer-0", "layer-1", "layer-2"]
    assert p.page.locator("#theme").is_hidden() and p.page.locator(".pager").first.is_hidden()
    assert p.page.locator("#viewer").count() == 0
    tiles = p.page.locator(".tile")
    assert tiles.count() == 2 * (16 + 32 + 64) + 2 * 3 * 8  # every map of both images, and the top-8 strips
    assert p.page.locator("table.classes").count() == 2
    p.shot("report_nojs.png", full_page=True)


def test_printed_every_layer_is_there(opened, demo_report):
    p = opened(demo_report)
    p.page.emulate_media(media="print")
    assert p.visible_layers() == ["layer-0", "layer-1", "layer-2"]
    assert p.page.locator("nav").is_hidden() and p.page.locator("#theme").is_hidden()
    ARTIFACTS.mkdir(exist_ok=True)
    p.page.pdf(path=str(ARTIFACTS / "report_print.pdf"))
    assert (ARTIFACTS / "report_print.pdf").stat().st_size > 10_000
    print(f"printed: {ARTIFACTS / 'report_print.pdf'}")
    p.shot("report_print.png")
    p.check()


def test_hostile_names_show_as_text(opened, hostile_report):
    p = opened(hostile_report)
    p.check()  # no dialog, no page error: nothing ran
    page = p.page
    assert page.evaluate("document.scripts.length") == 1
    assert page.evaluate("document.querySelectorAll('img:not([src^=\"data:image/png;base64,\"])').length") == 0
    assert page.evaluate("document.querySelectorAll('svg, iframe, object, embed').length") == 0
    assert not page.evaluate("Array.from(document.querySelectorAll('b')).some(b => b.textContent === 'bold')")
    assert [page.inner_text(f"#layer-{k} h2") for k in range(3)] == list(HOSTILE)
    assert page.locator("nav a[data-layer='1']").inner_text().startswith(HOSTILE[1])
    assert HOSTILE_SOURCE in page.inner_text("#model")
    assert HOSTILE_LABEL in page.inner_text("#images")
    page.click("nav a[data-layer='1']")
    page.locator("#layer-1 .tile").first.click()
    assert page.inner_text("#viewer-title") == f"{HOSTILE[1]} · photo0.png · channel 0"
    page.keyboard.press("Escape")
    p.shot("report_hostile.png", full_page=False)
    p.check()


@pytest.mark.slow
def test_vgg16_report_opens_whole(opened, vgg16_report):
    p = opened(vgg16_report[0])
    p.check()
    assert p.page.evaluate("document.images.length") == 1 + 2 + 5 + 2 * 5 * (64 + 8) + 2 * 3  # + top-3 CAMs
    p.page.keyboard.press("End")
    for _ in range(4):
        p.page.keyboard.press("ArrowRight")
    assert p.visible_layers() == ["layer-4"]
    p.page.locator("#layer-4").scroll_into_view_if_needed()
    p.shot("report_vgg16_block5.png")
    p.check()
