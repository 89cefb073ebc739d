"""Live tab: what one streamed webcam frame costs, measured in Chromium with its fake camera.

    python -m benchmarks.live_frames [--frames 20] [--every 0.4 0.2 0.1]

How Gradio 6 streams a webcam: every ``stream_every`` seconds the page draws the video onto a canvas
of the camera's full size (mirrored if ``mirror``) and sends ``canvas.toDataURL("image/jpeg")``
(quality 0.92) in a JSON body, twice (as ``data`` and as ``event_data``): the first frame with
``POST /gradio_api/queue/join``, the next ones with ``POST /gradio_api/stream/{event_id}``. The
answer comes back over the queue's server-sent events and Svelte redraws the Label. So the bytes
per frame follow the camera's size, whatever the model needs.

The page is instrumented (:data:`LIVE_JS`) with the page's own clock: ``window.fetch`` records
each request that carries a frame (time, body size, the data URL), wrappers of ``drawImage`` and
``toDataURL`` when its capture began and how long the JPEG encoding took, and a MutationObserver
each time the ``#live-probs`` bars change. Frame i's latency is from drawing the video (so the
browser's encoding counts) to the first bars change before frame i+1 is sent (a frame whose answer
equals the last one changes nothing and is not counted).

Two pages, each from :func:`app.build_demo` over the bundled weights:

* before: ``gr.WebcamOptions()`` (Gradio's default: mirrored, no constraints, so the page asks the
  camera for an ideal 1920x1440);
* after: ``app.WEBCAM`` (small frames from the rear camera, not mirrored).

Chromium's fake camera (``--use-fake-device-for-media-stream``) films a synthetic pattern at 640x480
for a page that asks no size, and at the size asked otherwise (up to 3840x2160): it honours both
Gradio's default ideal 1920x1440 and ``app.WEBCAM``'s 320x240. Its flat pattern compresses far better
than a real camera's picture, so "before" here understates what a laptop or phone sends.
``--every`` also times the "after" page at other ``stream_every`` values (frame rate, latency).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import os
import platform
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image

CHROMIUM = os.environ.get("CHROMIUM_PATH") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update",
    # A synthetic camera that needs no permission prompt (as Gradio's own browser tests use).
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
]

BEFORE_EVERY_S = 0.4  # app.LIVE_EVERY_S before it was tuned on this measurement

# Installed before the page's scripts (context.add_init_script), so Gradio's client binds our fetch.
LIVE_JS = r"""
(() => {
  const live = window.__live = {frames: [], updates: [], last: null, drawn: null, encodeMs: 0};
  // A frame starts when the video is drawn onto the canvas (twice when mirrored, in one task: the
  // first draw counts; Gradio also draws on ticks that send nothing) and is encoded by toDataURL.
  const draw = CanvasRenderingContext2D.prototype.drawImage;
  let drawing = false;
  CanvasRenderingContext2D.prototype.drawImage = function (source) {
    if (source instanceof HTMLVideoElement && !drawing) {
      drawing = true;
      live.drawn = performance.now();
      queueMicrotask(() => { drawing = false; });
    }
    return draw.apply(this, arguments);
  };
  const encode = HTMLCanvasElement.prototype.toDataURL;
  HTMLCanvasElement.prototype.toDataURL = function () {
    const start = performance.now();
    try { return encode.apply(this, arguments); } finally { live.encodeMs = performance.now() - start; }
  };
  const send = window.fetch;
  window.fetch = function (input, init) {
    const url = typeof input === 'string' ? input : (input && input.url) || '';
    const body = init && typeof init.body === 'string' ? init.body : '';
    if (/\/gradio_api\/(queue\/join|stream\/[^/?]+)(\?|$)/.test(url) && body.includes('"data:image/')) {
      const dataUrl = body.match(/data:image\/[a-z]+;base64,[A-Za-z0-9+\/=]+/);
      const t = performance.now();
      live.frames.push({t, drawn: live.drawn ?? t, encodeMs: live.encodeMs, bytes: new Blob([body]).size,
                        url: dataUrl && dataUrl[0]});
    }
    return send.apply(this, arguments);
  };
  // Watch #live-probs (once it exists) and note each time its bars read differently.
  const read = (root) => [...root.querySelectorAll('[data-testid$="-confidence-set"] meter')]
                           .map(m => m.getAttribute('value')).join(',');
  const watch = () => {
    const root = document.getElementById('live-probs');
    if (!root) return false;
    new MutationObserver(() => {
      const now = read(root);
      if (now && now !== live.last) { live.last = now; live.updates.push(performance.now()); }
    }).observe(root, {subtree: true, childList: true, attributes: true, characterData: true});
    return true;
  };
  const wait = new MutationObserver(() => { if (watch()) wait.disconnect(); });
  document.addEventListener('DOMContentLoaded', () => {
    if (!watch()) wait.observe(document.body, {childList: true, subtree: true});
  });
})();
"""


@dataclass
class Frame:
    sent_ms: float  # the request, on the page's clock
    body_bytes: int  # the request's JSON body: what one frame costs on the wire (headers aside)
    jpeg_bytes: int
    width: int
    height: int
    capture_ms: float  # from drawing the video onto the canvas to the request (toDataURL's encoding)
    encode_ms: float  # toDataURL alone
    latency_ms: float | None  # video drawn -> bars redrawn; None: no change before the next frame
    data_url: str


@dataclass
class LiveRun:
    frames: list[Frame]
    changes: int  # times the bars changed while the frames were sent

    @property
    def latencies(self) -> list[float]:
        return [f.latency_ms for f in self.frames if f.latency_ms is not None]

    def summary(self) -> dict[str, float]:
        gaps = [b.sent_ms - a.sent_ms for a, b in zip(self.frames, self.frames[1:])]
        return {
            "frames": len(self.frames),
            "body_bytes": statistics.median(f.body_bytes for f in self.frames),
            "jpeg_bytes": statistics.median(f.jpeg_bytes for f in self.frames),
            "width": max(f.width for f in self.frames),
            "height": max(f.height for f in self.frames),
            "capture_ms": statistics.median(f.capture_ms for f in self.frames),
            "encode_ms": statistics.median(f.encode_ms for f in self.frames),
            "latency_ms": statistics.median(self.latencies) if self.latencies else float("nan"),
            "latency_p90_ms": _quantile(self.latencies, 0.9),
            "answered": len(self.latencies),
            "interval_ms": statistics.median(gaps) if gaps else float("nan"),
        }


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def decode_frame(data_url: str) -> Image.Image:
    """The picture inside a ``data:image/jpeg;base64,...`` URL."""
    image = Image.open(io.BytesIO(base64.b64decode(data_url.partition(",")[2])))
    image.load()
    return image


def default_camera(page) -> dict:
    """The settings of the camera track this browser gives a page that asks for no size at all."""
    return page.evaluate("""async () => {
        const stream = await navigator.mediaDevices.getUserMedia({video: true});
        const settings = stream.getVideoTracks()[0].getSettings();
        stream.getTracks().forEach(t => t.stop());
        return settings;
    }""")


def decode_ms(classifier, run: LiveRun, repeats: int = 5) -> float:
    """The server's cost of one frame of ``run`` before the model: the data URL to the 32x32 input
    (the model's own cost does not depend on the frame). Median over frames of the best of
    ``repeats``, so other work on a shared machine does not count."""
    times = []
    for frame in run.frames:
        jpeg = base64.b64decode(frame.data_url.partition(",")[2])
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            classifier.to_uint8(jpeg)
            best = min(best, time.perf_counter() - start)
        times.append(1000 * best)
    return statistics.median(times)


def open_live_camera(page) -> dict:
    """Open the Live tab, grant the fake camera, wait until it plays; the camera track's settings."""
    page.get_by_role("tab", name="Live").click()
    page.locator("#live-cam").get_by_text("Click to Access Webcam").click()
    page.wait_for_function("""() => { const v = document.querySelector('#live-cam video');
                                      return v && v.readyState >= 2 && v.videoWidth > 0; }""")
    return page.evaluate("""() => document.querySelector('#live-cam video').srcObject
                                    .getVideoTracks()[0].getSettings()""")


def stream_frames(page, count: int) -> LiveRun:
    """Record on the Live tab until ``count`` frames have been sent, then stop; what they cost.

    Needs :data:`LIVE_JS` installed in the page and the camera open (:func:`open_live_camera`).
    One frame more than ``count`` is sent so the last counted frame's answer can be told apart.
    """
    page.evaluate("() => { window.__live.frames.length = 0; window.__live.updates.length = 0; }")
    page.locator("#live-cam .capture-button", has_text="Record").click()
    page.wait_for_function("n => window.__live.frames.length > n", arg=count, polling=50)
    page.locator("#live-cam .capture-button", has_text="Stop").click()
    raw = page.evaluate("() => window.__live")
    sent = raw["frames"][: count + 1]
    frames = []
    for i, f in enumerate(sent[:count]):
        until = sent[i + 1]["t"]
        answer = next((u for u in raw["updates"] if f["t"] < u < until), None)
        picture = decode_frame(f["url"])
        frames.append(Frame(f["t"], f["bytes"], len(base64.b64decode(f["url"].partition(",")[2])),
                            picture.width, picture.height, f["t"] - f["drawn"], f["encodeMs"],
                            None if answer is None else answer - f["drawn"], f["url"]))
    changes = sum(1 for u in raw["updates"] if sent[0]["t"] < u < sent[-1]["t"])
    return LiveRun(frames, changes)


# ---------------------------------------------------------------------------------------------
# The before/after measurement.


@contextlib.contextmanager
def live_page(browser, classifier, webcam, every: float) -> Iterator:
    """A fresh tab on a page built with ``webcam`` options and ``stream_every=every``."""
    import app
    from tests.conftest import serve

    saved = app.WEBCAM, app.LIVE_EVERY_S
    app.WEBCAM, app.LIVE_EVERY_S = webcam, every
    try:
        demo = app.build_demo(classifier)
    finally:
        app.WEBCAM, app.LIVE_EVERY_S = saved
    with serve(demo) as url:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.add_init_script(LIVE_JS)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(url)
        try:
            yield page
        finally:
            context.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=20, help="frames per variant (default 20)")
    parser.add_argument("--every", type=float, nargs="*", default=[],
                        help="also time the 'after' page at these stream_every values (seconds)")
    args = parser.parse_args(argv)

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr
    from playwright.sync_api import sync_playwright

    import app
    from cifar_model import Classifier

    classifier = Classifier.from_pretrained()
    variants = [("before", gr.WebcamOptions(), BEFORE_EVERY_S), ("after", app.WEBCAM, app.LIVE_EVERY_S)]
    variants += [(f"after, every {e:g} s", app.WEBCAM, e) for e in args.every if e != app.LIVE_EVERY_S]
    rows = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for name, webcam, every in variants:
            with live_page(browser, classifier, webcam, every) as page:
                fallback = default_camera(page) if not rows else None  # before Gradio holds the camera
                settings = open_live_camera(page)
                run = stream_frames(page, args.frames)
            rows.append((name, webcam, every, settings, run, fallback))
        chromium_version = browser.version
        browser.close()

    print(f"gradio {gr.__version__}, Chromium {chromium_version} (headless, fake camera), "
          f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f}, shared), Python {platform.python_version()}, "
          f"{args.frames} frames per row (medians)")
    camera = rows[0][5]
    print(f"Chromium's fake camera for a page that asks no size: {camera['width']}x{camera['height']} "
          f"at {camera.get('frameRate', 0):g} fps; given constraints it films at the size asked "
          f"(up to 3840x2160).")
    print("| page | webcam_options | stream_every | camera track | frame sent | JPEG / frame | request body / frame "
          "| body / s | capture (encode) | frame -> bars p50 / p90 | frames answered | frame interval "
          "| decode / frame |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, webcam, every, settings, run, _ in rows:
        s = run.summary()
        options = f"mirror={webcam.mirror}, {_asks(webcam)}"
        track = f"{settings.get('width')}x{settings.get('height')} ({settings.get('resizeMode', '?')})"
        print(f"| {name} | {options} | {every:g} s | {track} | {s['width']}x{s['height']} "
              f"| {s['jpeg_bytes'] / 1024:.1f} KiB | {s['body_bytes'] / 1024:.1f} KiB "
              f"| {s['body_bytes'] / 1024 / (s['interval_ms'] / 1000):.0f} KiB/s "
              f"| {s['capture_ms']:.1f} ({s['encode_ms']:.1f}) ms "
              f"| {s['latency_ms']:.0f} / {s['latency_p90_ms']:.0f} ms | {s['answered']}/{s['frames']} "
              f"| {s['interval_ms']:.0f} ms | {decode_ms(classifier, run):.1f} ms |")
    keys = ("width", "height", "frameRate", "resizeMode", "facingMode")
    print(f"after: constraints {app.WEBCAM.constraints}; the camera track's settings "
          f"{ {k: rows[1][3].get(k) for k in keys} } (the fake camera has no facingMode: 'ideal' lets it through)")
    print("capture: from drawing the video onto the canvas to the frame's request (encode: toDataURL alone); "
          "frame -> bars: from drawing the video to the first change of the #live-probs bars before the next "
          "frame; frames answered: how many got one (an answer equal to the last one changes nothing); "
          "body / s: request body per frame / frame interval; decode / frame: the server's data URL -> 32x32 "
          "(best of 5; the model's cost is the same for every frame size)")


def _asks(webcam) -> str:
    video = (webcam.constraints or {}).get("video")
    if not video:
        return "no constraints (Gradio asks ideal 1920x1440)"
    ideal = {k: v.get("ideal", v) if isinstance(v, dict) else v for k, v in video.items()}
    facing = f", {ideal['facingMode']}" if "facingMode" in ideal else ""
    return f"ideal {ideal.get('width')}x{ideal.get('height')}{facing}"


if __name__ == "__main__":
    main()
