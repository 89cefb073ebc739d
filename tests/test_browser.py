"""The page in a real browser: Debian's Chromium driven by Playwright, against the app launched in
this process on 127.0.0.1 (as in test_app.py).

What a visitor does: upload a picture, click an example, take a webcam snapshot, stream from the Live
tab (Chromium's fake camera, a moving synthetic pattern), upload a file that is no picture; what the
page shows in return is read off the DOM (the Label's class names and percentages, the preview and
Grad-CAM images, the error toast). Every request that does not go to the app is blocked, so the page
is also checked to work offline. The upload test writes docs/screenshot.png (the README's picture).

Chromium missing: these tests skip, except under CI (``CI=true``), where they fail.
Playwright's own browser download is never used: set CHROMIUM_PATH for another binary.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

import app
from cifar_model import CLASSES, ImageError

ROOT = Path(app.__file__).resolve().parent
EXAMPLES = [Path(p) for p in app.example_files()]
SCREENSHOT = ROOT / "docs" / "screenshot.png"

IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
CHROMIUM = os.environ.get("CHROMIUM_PATH") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update",
    # A synthetic camera that needs no permission prompt (as Gradio's own browser tests use).
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
]
VIEWPORT = {"width": 1280, "height": 900}
WAIT_MS = 20_000  # the longest any one condition may take; an answer normally comes in well under 1 s

# Read one gr.Label off the page: {top, rows: [[class, "83%", meter value]]}, or null if not there.
# Installed in every page so that Python and wait_for_function use the same reading.
BARS_JS = """
window.__bars = (id) => {
  const root = document.getElementById(id);
  if (!root) return null;
  const top = root.querySelector('[data-testid="label-output-value"]');
  const rows = [...root.querySelectorAll('[data-testid$="-confidence-set"]')].map(row => [
    row.querySelector('dt').textContent.trim(),
    row.querySelector('dd').textContent.trim(),
    Number(row.querySelector('meter').getAttribute('value')),
  ]);
  return {top: top ? top.textContent.trim() : null, rows};
};
"""


def _unavailable(reason: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the browser tests must run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright is not installed (pip install -r requirements-dev.txt)")
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def app_url(free_port) -> Iterator[str]:
    _, url, _ = app.demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(),
                                quiet=True, **app.LAUNCH_KWARGS)
    yield url
    app.demo.close()


@pytest.fixture
def page(browser, app_url):
    """A fresh tab on the app, fully rendered, with every request off 127.0.0.1 blocked."""
    context = browser.new_context(viewport=VIEWPORT)
    context.add_init_script(BARS_JS)
    context.route(re.compile(r"^(?!" + re.escape(app_url) + ")"), lambda route: route.abort())
    tab = context.new_page()
    tab.set_default_timeout(WAIT_MS)
    js_errors: list[str] = []
    tab.on("pageerror", lambda err: js_errors.append(str(err)))
    tab.goto(app_url)
    tab.locator("#picture input[type=file]").wait_for(state="attached")
    yield tab
    context.close()
    assert not js_errors, f"uncaught JavaScript errors on the page: {js_errors}"


# --- reading the page ---------------------------------------------------------------------------


@dataclass
class Bars:
    top: str
    rows: list[tuple[str, int, float]]  # (class, percent shown, meter value), in the page's order
    raw: list  # the rows as the page gave them, to wait for different ones


def wait_for_bars(page, elem_id: str, *, top: str | None = None, other_than: Bars | None = None) -> Bars:
    """Wait until the Label ``elem_id`` shows ten bars (with ``top`` as top class, if given, and not
    the same bars as ``other_than``), then read them."""
    page.wait_for_function(
        """([id, top, old]) => {
             const b = window.__bars(id);
             return b && b.top && b.rows.length === 10 && (!top || b.top === top)
                    && (!old || JSON.stringify(b.rows) !== JSON.stringify(old));
           }""",
        arg=[elem_id, top, other_than.raw if other_than else None],
    )
    return read_bars(page, elem_id)


def read_bars(page, elem_id: str) -> Bars:
    raw = page.evaluate("id => window.__bars(id)", elem_id)
    rows = []
    for name, shown, value in raw["rows"]:
        assert re.fullmatch(r"\d{1,3}%", shown), f"percentage shown as {shown!r}"
        rows.append((name, int(shown[:-1]), value))
    bars = Bars(raw["top"], rows, raw["rows"])
    # Ten classes, each once, sorted by probability, headed by the top one; percentages add up.
    assert sorted(name for name, _, _ in rows) == sorted(CLASSES)
    assert [v for _, _, v in rows] == sorted((v for _, _, v in rows), reverse=True)
    assert bars.top == rows[0][0]
    assert 95 <= sum(p for _, p, _ in rows) <= 105
    return bars


def assert_matches_library(bars: Bars, path: Path) -> None:
    """The page shows the library's probabilities for ``path`` (each percentage rounded)."""
    expected = app.CLASSIFIER.predict([str(path)])[0]
    for name, shown, value in bars.rows:
        assert value == pytest.approx(expected[name], abs=1e-5), name
        assert abs(shown - 100 * expected[name]) <= 0.5 + 1e-6, (name, shown, expected[name])


def wait_for_pictures(page) -> tuple[str, str]:
    """Wait until "what the model sees" and the Grad-CAM overlay are both loaded; their URLs."""
    for elem_id in ("seen", "heat"):
        page.wait_for_function(
            """([id, size]) => {
                 const img = document.querySelector(`#${id} img`);
                 return img && img.complete && img.naturalWidth === size && img.naturalHeight === size;
               }""",
            arg=[elem_id, app.PREVIEW_SIZE],
        )
    seen, heat = (page.locator(f"#{i} img").get_attribute("src") for i in ("seen", "heat"))
    assert seen != heat
    return seen, heat


def true_class(path: Path) -> str:
    return path.stem.rsplit("_", 1)[0]


@pytest.fixture(scope="module")
def right_examples() -> list[Path]:
    """Examples the served model classifies right, most confident first (one per class)."""
    probs = app.CLASSIFIER.predict([str(p) for p in EXAMPLES])
    right = [(p[true_class(path)], path) for path, p in zip(EXAMPLES, probs)
             if max(p, key=p.get) == true_class(path)]
    best: dict[str, Path] = {}
    for _, path in sorted(right, key=lambda pair: -pair[0]):
        best.setdefault(true_class(path), path)
    assert len(best) >= 3, "the served model gets too few examples right to test with"
    return list(best.values())


def upload(page, path: Path) -> None:
    page.locator("#picture input[type=file]").set_input_files(str(path))


def open_webcam(page, elem_id: str) -> None:
    """Grant the page the (fake) camera in component ``elem_id`` and wait until it plays."""
    page.locator(f"#{elem_id}").get_by_text("Click to Access Webcam").click()
    page.wait_for_function(
        """id => { const v = document.querySelector(`#${id} video`);
                   return v && v.readyState >= 2 && v.videoWidth > 0; }""",
        arg=elem_id,
    )


# --- the tests ------------------------------------------------------------------------------------


def test_upload_shows_bars_preview_and_heatmap(page, right_examples):
    path = right_examples[0]
    upload(page, path)
    bars = wait_for_bars(page, "probs", top=true_class(path))
    assert_matches_library(bars, path)
    wait_for_pictures(page)
    save_screenshot(page)


def test_example_click_updates_the_bars(page, right_examples):
    first, second = right_examples[1], right_examples[2]  # different classes
    bars = None
    for path in (first, second):
        page.locator("button.gallery-item", has=page.locator(f'img[src$="/{path.name}"]')).click()
        bars = wait_for_bars(page, "probs", top=true_class(path), other_than=bars)
        assert_matches_library(bars, path)
        wait_for_pictures(page)


def test_webcam_snapshot_is_classified(page):
    picture = page.locator("#picture")
    picture.get_by_role("button", name="Capture from camera").click()
    open_webcam(page, "picture")
    picture.get_by_role("button", name="capture photo").click()
    wait_for_bars(page, "probs")  # any class: the fake camera films a synthetic pattern
    wait_for_pictures(page)


def test_live_tab_streams_predictions(page):
    page.get_by_role("tab", name="Live").click()
    open_webcam(page, "live-cam")
    page.locator("#live-cam .capture-button", has_text="Record").click()
    # The pattern moves, so each frame's bars differ: collect distinct readings until there are two.
    page.wait_for_function(
        """id => {
             const seen = (window.__liveReadings ??= new Set());
             const b = window.__bars(id);
             if (b && b.rows.length === 10) seen.add(JSON.stringify(b.rows));
             return seen.size >= 2;
           }""",
        arg="live-probs", polling=50,
    )
    page.locator("#live-cam .capture-button", has_text="Stop").click()
    read_bars(page, "live-probs")


def test_bad_file_shows_a_readable_error_and_the_page_recovers(page, right_examples, tmp_path):
    bad = tmp_path / "holiday.png"
    bad.write_text("this is not a picture\n")
    with pytest.raises(ImageError) as expected:  # the library's own sentence for this file
        app.CLASSIFIER.to_uint8(bad)
    before, after = right_examples[0], right_examples[1]

    upload(page, before)
    bars = wait_for_bars(page, "probs", top=true_class(before))
    wait_for_pictures(page)

    upload(page, bad)
    toast = page.locator('[data-testid="toast-body"]').first
    toast.wait_for(state="visible")
    messages = [m.strip() for m in page.locator('[data-testid="toast-text"]').all_inner_texts()]
    assert messages and all(m == str(expected.value) for m in messages), messages
    text = page.locator("body").inner_text()
    for leak in ("Traceback", 'File "', "ImageError", "Exception", "UnidentifiedImageError"):
        assert leak not in text, f"{leak!r} shown on the page"
    # No stale pictures of the previous upload beside the error.
    page.wait_for_function("() => !document.querySelector('#seen img') && !document.querySelector('#heat img')")

    upload(page, after)  # the page still works
    bars = wait_for_bars(page, "probs", top=true_class(after), other_than=bars)
    assert_matches_library(bars, after)
    wait_for_pictures(page)


# --- the README's screenshot ------------------------------------------------------------------------


def save_screenshot(page) -> None:
    """docs/screenshot.png: the page as it is now (after a classified upload), whole page width and
    down to below the Grad-CAM picture. Written only once the test's checks passed."""
    page.evaluate("document.fonts.ready")
    page.wait_for_function("() => document.getAnimations().every(a => a.playState !== 'running')")
    page.mouse.move(0, 0)  # no hover highlight
    SCREENSHOT.parent.mkdir(exist_ok=True)
    partial = SCREENSHOT.with_suffix(".partial.png")
    page.screenshot(path=partial, full_page=True, animations="disabled", caret="hide")
    os.replace(partial, SCREENSHOT)
