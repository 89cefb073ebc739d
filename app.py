"""Gradio demo: classify a picture into the ten CIFAR-10 classes and show why.

    python app.py                          # the bundled weights/
    python app.py --model owner/name --revision <sha>
    MODEL_REPO=owner/name python app.py    # same, from the environment (how a Space sets it)
    python app.py --share                  # ask Gradio for a public link

Importing this module does nothing: ``build_demo(classifier)`` makes the page, ``main()`` parses the
command line, loads the weights and launches (a Space runs ``python app.py``). Endpoints, also MCP
tools: ``/predict`` (a picture -> the ten probabilities, the unsure flag and the answer in words) and
``/explain`` (a picture -> the 32x32 input enlarged and a Grad-CAM overlay; in the page it reuses what
``/predict`` just computed for that file). The Live tab runs the weights' ``model.onnx`` in the
visitor's browser (``static/live.js``); where it can't, a server path takes camera frames instead.
Pictures reach the library's decoder untouched (``preprocess=False``); what a public server needs
besides is in :mod:`guard`.
"""

from __future__ import annotations

import argparse
import base64
import functools
import gzip
import html
import io
import json
import logging
import mimetypes
import os
import re
import sys
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

import guard
from cifar_model import CLASSES, Answer, Classifier, ImageError, ModelLoadError, Weights
from cifar_model.weights import ONNX_FILE

LOG = logging.getLogger("app")
HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
MAX_FILE_SIZE = "10mb"  # Gradio's upload route refuses larger files (HTTP 413) before any decoding
KEEP_UPLOADS_S = 1800  # visitors' files are deleted this long after they arrive (KEEP_UPLOADS_S, --keep-uploads)
# Gradio keeps ~40 KB of page state per session id it has seen, 10,000 by default, and anyone can mint
# session ids: keep the most recent ones only.
SESSIONS_KEPT = 500
QUEUE_KWARGS: dict[str, Any] = {"max_size": 32, "default_concurrency_limit": 2}  # past it: "queue full"
UNREADABLE = "This file is not a picture we can read. Use a JPEG, PNG, WebP, GIF, BMP or TIFF image."
PREVIEW_SIZE = 256  # "what the model sees": 32x32 enlarged 8x, nearest neighbour
# The server's Live path, used only where the browser can't run the model: a 320x240 frame every 0.2 s
# from the rear camera, not mirrored (Gradio 6 mirrors the pixels sent, not just the preview).
LIVE_EVERY_S, LIVE_LIMIT_S, LIVE_SESSIONS = 0.2, 60, 4
WEBCAM = gr.WebcamOptions(mirror=False, constraints={"video": {
    "width": {"ideal": 320}, "height": {"ideal": 240}, "facingMode": {"ideal": "environment"}}})
# onnxruntime-web 1.30.0's CPU build: served from node_modules when `npm ci` installed it, else from a
# CDN, pinned and checked against these hashes (Subresource Integrity) by the page.
ORT_DIR = HERE / "node_modules" / "onnxruntime-web" / "dist"
ORT_FILES = {"ort.wasm.bundle.min.mjs": "sha384-PLWz+nHEVHpjwBsO0YVdvQj6n5814Iv8E3b8FG0Rp/uIAtjFMCKOpP66iPzedrIG",
             "ort-wasm-simd-threaded.wasm": "sha384-vjBJ1z7qrhkTyYsNqKeF6c7N+nOJSU94czEo+tvZcu8G75JparGq9kB+kTnEUNVM"}
ORT_CDN = "https://cdn.jsdelivr.net/npm/onnxruntime-web@1.30.0/dist/"


def enlarge(pixels: np.ndarray, size: int = PREVIEW_SIZE) -> np.ndarray:
    """Nearest-neighbour upscale of an H x W x 3 uint8 picture: every input pixel a sharp square."""
    return np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.NEAREST))


def heat_overlay(pixels: np.ndarray, cam: np.ndarray, size: int = PREVIEW_SIZE) -> np.ndarray:
    """The enlarged picture with a heatmap (H x W floats in [0, 1]) over it: red where the heat is
    high, fading to the untouched picture where it is low."""
    heat = np.asarray(Image.fromarray(cam.astype(np.float32), mode="F").resize((size, size), Image.Resampling.BILINEAR))
    alpha = (0.75 * np.clip(heat, 0.0, 1.0) ** 1.5)[..., None]
    out = (1 - alpha) * enlarge(pixels, size).astype(np.float32) + alpha * np.array([230.0, 20.0, 20.0])
    return np.clip(out, 0, 255).astype(np.uint8)


def headline(answer: Answer, weights: Weights) -> str:
    """The answer in words, for the page and the API: the top class, or that the model is unsure."""
    if not answer.unsure:
        return f"## {html.escape(answer.top)}"
    m = weights.metrics
    right = f": on CIFAR-10 pictures it flags, its guess is right {m.unsure_accuracy:.0%} of the time" if (
        m is not None and m.unsure_accuracy is not None) else ""
    return (f"## Probably none of the ten classes\nclosest: **{html.escape(answer.top)}** <span class='unsure'>"
            f"— the model is unsure. The picture looks unlike the ones it learned from{right}.</span>")


def weights_panel(weights: Weights) -> str:
    """HTML: where the weights came from and what their metrics.json says, in plain words, every text
    escaped (the folder may be anyone's Hub repo: its text is shown as text, never rendered)."""
    m, esc = weights.metrics, html.escape
    rows = [f"<p>Weights: <code>{esc(weights.label)}</code></p>"]
    if weights.warning:
        rows.append(f"<p>{esc(weights.warning)}</p>")
    if m is None:
        return "".join(rows + ["<p>No test figures were recorded with these weights.</p>"])
    rows.append(f"<p><b>{m.test_accuracy:.1%}</b> of the {m.test_images:,} test pictures ({esc(m.dataset)}) "
                "are named right.</p>")
    if m.reliability:
        rows.append("<p><b>How far to trust the bars</b> (on test pictures only; for pictures unlike them the "
                    "numbers promise nothing): of the pictures whose top bar said</p><table class='bins'>"
                    "<tr><th>top bar</th><th>pictures</th><th>right</th></tr>")
        for i, (n, _, right) in enumerate(m.reliability):
            if n:
                lo, hi = i / len(m.reliability), (i + 1) / len(m.reliability)
                rows.append(f"<tr><td>{lo:.0%}–{hi:.0%}</td><td>{int(n):,}</td><td><span class='bar' "
                            f"style='width:{right:.0%}'></span>{right:.0%}</td></tr>")
        rows.append("</table>")
    if m.unsure_rate is not None:
        rows.append(f"<p>The model says it is unsure on {m.unsure_rate:.0%} of the test pictures; it is right on "
                    f"{m.unsure_accuracy:.0%} of those and on {m.sure_accuracy:.0%} of the others.</p>")
    rows.append("<table class='classes'><caption>Share of each class's test pictures named right</caption>"
                + "".join(f"<tr><td>{esc(c)}</td><td>{a:.0%}</td></tr>" for c, a in m.per_class_accuracy.items())
                + "</table>")
    return "".join(rows)


def example_files() -> list[str]:
    """The example pictures (real CIFAR-10 test images, named CLASS_N): one of each class in class order, then
    the next."""
    files = [p for p in (HERE / "examples").iterdir() if p.suffix.lower() in (".jpg", ".png")]

    def order(p: Path) -> tuple:
        name, _, n = p.stem.rpartition("_")
        return n, CLASSES.index(name) if name in CLASSES else len(CLASSES)

    return [str(p) for p in sorted(files, key=order)]


class Handlers:
    """The events' functions, closed over one classifier. None shows a visitor a traceback.

    What /predict computed for a file is kept for /explain, keyed by the file's path (a file in the
    upload folder is never rewritten, so a path names one picture): the chained event neither decodes
    nor runs the network again. Not gr.State: Gradio 6.31's MCP server drops a State output twice and
    fails the tool ("pop index out of range").
    """

    RECENT = 64  # answers remembered for /explain (3 KB of pixels each)

    def __init__(self, classifier: Classifier) -> None:
        self.clf = classifier
        self._recent: OrderedDict[str, Answer] = OrderedDict()
        self._lock = threading.Lock()

    def answer(self, payload: Any, data_url: bool = False) -> Answer | None:
        """The classifier's answer for a raw ``gr.Image`` payload (None: no picture), or a gr.Error."""
        source = guard.image_source(payload, data_url)
        if source is None:
            return None
        with self._lock:
            if source in self._recent:
                self._recent.move_to_end(source)
                return self._recent[source]
        try:
            answer = self.clf.predict(source)
        except ImageError as err:  # escaped: Gradio renders the message as HTML
            raise gr.Error(html.escape(str(err)), print_exception=False) from None
        except Exception as err:  # a decoder bug: a generic sentence, the traceback in the server log only
            LOG.exception("decoding an upload failed outside ImageError")
            raise gr.Error(UNREADABLE, print_exception=False) from err
        if isinstance(source, str):
            with self._lock:
                self._recent[source] = answer
                while len(self._recent) > self.RECENT:
                    self._recent.popitem(last=False)
        return answer

    def predict(self, image: Any) -> tuple[dict[str, float] | None, bool, str]:
        """Classify a picture into the ten CIFAR-10 classes (airplane, automobile, bird, cat, deer, dog, frog,
        horse, ship, truck) with a small CNN that sees it as a 32x32 thumbnail of its centre square.

        It always ranks the ten classes, even for a picture of something else; the unsure flag says when the
        picture looks unlike the CIFAR-10 pictures it learned from (then the top class is probably wrong, and
        the picture probably shows none of the ten). On CIFAR-10 test pictures the probabilities are
        calibrated: of those given 80%, about 80% are right; for other pictures they promise nothing.

        Args:
            image: the picture, as a base64 data URL ('data:image/jpeg;base64,...'; JPEG, PNG, WebP, GIF, BMP
                or TIFF; at most about 3 MB over MCP, 10 MB through the page). URLs are not fetched.

        Returns:
            The probability of each of the ten classes (summing to 1), the unsure flag (True: probably none of
            the ten classes), and the answer in words.
        """
        answer = self.answer(image)
        if answer is None:
            return None, False, ""
        return answer.probabilities, answer.unsure, headline(answer, self.clf.weights)

    def explain(self, image: Any) -> tuple[str | None, str | None, str]:
        """Show what the classifier saw and where it looked: the 32x32 input it classified, enlarged, and a
        Grad-CAM heatmap of the class it ranks first, over that input.

        Args:
            image: the picture, as for predict (a base64 data URL; URLs are not fetched).

        Returns:
            The 32x32 input enlarged to 256x256, the same with the heatmap over it (PNG files), and a legend.
        """
        answer = self.answer(image)
        if answer is None:
            return None, None, ""
        heat = heat_overlay(answer.pixels, self.clf.heatmap(answer))
        return self.png(enlarge(answer.pixels)), self.png(heat), (
            f"Left: the 32×32 picture the model sees. Right: in red, where it looked most to answer "
            f"*{html.escape(answer.top)}*.")

    def png(self, pixels: np.ndarray) -> str:
        """The picture as a PNG file written once (guard.write_png), deleted with the uploads."""
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "PNG")
        return guard.write_png(buf.getvalue())

    def predict_live(self, frame: Any) -> tuple[dict[str, float], str] | dict:
        """The server's Live path: like :meth:`predict`, but a bad or missing frame keeps the last answer quietly."""
        try:
            answer = self.answer(frame, data_url=True)
        except gr.Error:
            answer = None  # one dropped webcam frame is not worth an error popup every few tenths of a second
        if answer is None:
            return gr.skip()
        return answer.probabilities, headline(answer, self.clf.weights)


def live_files(weights: Weights) -> dict[str, Path]:
    """What ``/live/`` serves (read-only): the page's code, the weights' model.onnx, onnxruntime-web if installed."""
    files = {name: STATIC / name for name in ("live.js", "resize.js")}
    if weights.file(ONNX_FILE) is not None:
        files["model.onnx"] = weights.file(ONNX_FILE)
    files |= {name: ORT_DIR / name for name in ORT_FILES if (ORT_DIR / name).is_file()}
    return files


def live_markup(weights: Weights, served: dict[str, Path]) -> str:
    """The Live tab's markup; ``static/live.js`` reads its settings from the data attributes."""
    local = all(name in served for name in ORT_FILES)
    sha = weights.config.onnx_sha256 if "model.onnx" in served else None
    attrs = {"classes": json.dumps(weights.config.classes), "model": "live/model.onnx" if sha else "",
             "model-integrity": "sha256-" + base64.b64encode(bytes.fromhex(sha)).decode() if sha else "",
             "ort-base": "live/" if local else ORT_CDN, "ort-integrity": "" if local else json.dumps(
                 {"ort": ORT_FILES["ort.wasm.bundle.min.mjs"], "wasm": ORT_FILES["ort-wasm-simd-threaded.wasm"]})}
    data = " ".join(f'data-{k}="{html.escape(v)}"' for k, v in attrs.items())
    bars = "".join(f"<li><span>{html.escape(c)}</span><span class='track'><i></i></span>"
                   "<span class='pct'>0%</span></li>" for c in weights.config.classes)
    return (f"<div id='live-app' {data}><p class='live-status' role='status'>The Live view runs the model on your "
            "device: your camera frames are not sent anywhere.</p><button class='live-start' disabled>Start the "
            f"camera</button><div class='live-view'><video playsinline muted aria-label='Camera preview'></video>"
            f"<div><p class='live-headline' aria-live='polite'><strong></strong><span></span></p>"
            f"<ol class='live-bars'>{bars}</ol></div></div></div>")


# Page code run in js_on_load: the Live tab loads its module the first time it opens.
LIVE_BOOT = """const app = element.querySelector('#live-app');
window.cifarLiveOpen = () => window.cifarLive ??= import(new URL('live/live.js', document.baseURI).href)
    .then((m) => m.setup(app), (err) => { document.body.classList.add('live-fallback'); throw err; });"""
INTRO = """# CIFAR-10 classifier
Drop a picture, paste one or take a snapshot: a small CNN says which of its ten classes it shows. It knows only
airplane, automobile, bird, cat, deer, dog, frog, horse, ship and truck, and sees a **32×32** thumbnail of the
picture's centre."""


def build_demo(classifier: Classifier, warning: str | None = None) -> gr.Blocks:
    """The page and its events, served by ``classifier``; ``warning``, if any, is shown at the top."""
    handlers = Handlers(classifier)
    weights = classifier.weights
    with gr.Blocks(title="CIFAR-10 classifier", analytics_enabled=False) as demo:
        gr.Markdown(INTRO, elem_id="intro")
        gr.Markdown(f"⚠️ {html.escape(warning or '')}", visible=bool(warning), elem_id="load-warning")
        with gr.Tab("Picture"):
            with gr.Row(equal_height=False):
                image = gr.Image(sources=["upload", "webcam", "clipboard"], type="filepath", image_mode=None,
                                 label="Your picture", height=300, webcam_options=WEBCAM, elem_id="picture")
                with gr.Column(elem_id="answer-col"):
                    answer = gr.Markdown(elem_id="answer")
                    label = gr.Label(show_label=False, elem_id="probs")
                    more = gr.Button("Show all ten classes", size="sm", variant="secondary", elem_id="more")
                    with gr.Row(elem_id="views"):
                        seen = gr.Image(show_label=False, format="png", interactive=False, buttons=[], elem_id="seen",
                                        alt_text="The 32×32 picture the model classified, enlarged")
                        heat = gr.Image(show_label=False, format="png", interactive=False, buttons=[], elem_id="heat",
                                        alt_text="The same picture, red where the model looked most")
                    legend = gr.Markdown(elem_id="legend")
                    unsure = gr.Checkbox(label="Unsure", visible=False)
            examples = gr.Examples([[f] for f in example_files()], inputs=[image], examples_per_page=10,
                                   elem_id="examples", label="Examples: real CIFAR-10 test pictures, one per class")
        demo.live_files = live_files(weights)
        with gr.Tab("Live") as live_tab:
            gr.HTML(live_markup(weights, demo.live_files), js_on_load=LIVE_BOOT, elem_id="live")
            with gr.Column(elem_id="live-server"):  # shown (CSS) only where the browser can't run the model
                cam = gr.Image(sources=["webcam"], streaming=True, type="filepath", image_mode=None,
                               webcam_options=WEBCAM, label=f"Webcam: frames go to the server, which keeps none; "
                               f"each session stops after {LIVE_LIMIT_S} s")
                live_answer = gr.Markdown()
                live_label = gr.Label(show_label=False)
        with gr.Accordion("About these weights", open=False):
            gr.HTML(weights_panel(weights), elem_id="weights-panel")

        # A visitor's picture (upload, snapshot, paste, clear: `input`, which fires once, where Gradio 6.31's
        # `change` fires twice when a picture replaces another) or an example click triggers a prediction; the
        # slower pictures follow in their own event, reusing what /predict computed. A failure clears it all.
        predict = {"fn": handlers.predict, "inputs": image, "outputs": [label, unsure, answer], "preprocess": False}
        for api, predicted in (("predict", image.input(**predict, api_name="predict")),
                               (None, examples.load_input_event.then(**predict, api_visibility="private"))):
            named = {"api_name": "explain"} if api else {"api_visibility": "private"}
            predicted.success(handlers.explain, image, [seen, heat, legend], preprocess=False, **named)
            predicted.failure(lambda: (None, False, "", None, None, ""), None,
                              [label, unsure, answer, seen, heat, legend], api_visibility="private")
        more.click(None, js="() => document.getElementById('probs').classList.toggle('all')")
        live_tab.select(None, js="() => { window.cifarLiveOpen?.(); }")
        cam.stream(handlers.predict_live, cam, [live_label, live_answer], api_name="live", api_visibility="private",
                   preprocess=False, stream_every=LIVE_EVERY_S, time_limit=LIVE_LIMIT_S,
                   concurrency_limit=LIVE_SESSIONS, show_progress="hidden")
    return demo.queue(**QUEUE_KWARGS, api_open=False)


@functools.cache
def _gzipped(path: Path) -> bytes:
    return gzip.compress(path.read_bytes(), 6)  # onnxruntime's 14 MB of wasm: 3.7 MB (Gradio compresses only .js)


async def _serve_live_files(scope: dict, receive: Any, send: Any, files: dict[str, Path]) -> None:
    path = files.get(scope["path"].rpartition("/")[2]) if scope["method"] in ("GET", "HEAD") else None
    if path is None:
        return await guard.reply(send, 404, "Not Found")
    kind = "text/javascript" if path.suffix in (".js", ".mjs") else mimetypes.guess_type(path.name)[0]
    headers = [(b"content-type", (kind or "application/octet-stream").encode()),
               (b"x-content-type-options", b"nosniff"), (b"cache-control", b"public, max-age=3600")]
    if path.suffix in (".wasm", ".mjs") and b"gzip" in dict(scope["headers"]).get(b"accept-encoding", b""):
        body = _gzipped(path)
        headers.append((b"content-encoding", b"gzip"))
    else:
        body = path.read_bytes()
    await send({"type": "http.response.start", "status": 200,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body if scope["method"] == "GET" else b""})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line; defaults come from the environment (``MODEL_REPO``, ``MODEL_REVISION``, ``KEEP_UPLOADS_S``)."""
    parser = argparse.ArgumentParser(description="CIFAR-10 classifier demo (Gradio).")
    parser.add_argument("--model", default=os.environ.get("MODEL_REPO") or None,
                        help="weights folder or Hub repo id (default: $MODEL_REPO, else bundled weights/)")
    parser.add_argument("--revision", default=os.environ.get("MODEL_REVISION") or None,
                        help="Hub branch, tag or commit sha (default: $MODEL_REVISION)")
    parser.add_argument("--keep-uploads", type=int, default=int(os.environ.get("KEEP_UPLOADS_S", KEEP_UPLOADS_S)),
                        metavar="SECONDS", help="delete visitors' pictures after this long (default: $KEEP_UPLOADS_S"
                        f" or {KEEP_UPLOADS_S})")
    parser.add_argument("--share", action="store_true", help="ask Gradio for a temporary public link")
    parser.add_argument("--host", default=None, help="address to bind (default: $GRADIO_SERVER_NAME or 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default: $GRADIO_SERVER_PORT or 7860)")
    return parser.parse_args(argv)


def load_classifier(model: str | None = None, revision: str | None = None) -> tuple[Classifier, str | None]:
    """Load ``model`` (folder or Hub repo id; ``None``: bundled weights), and ``None`` or, when it could
    not be loaded and the bundled weights are served instead, a sentence saying so for the page.

    Raises:
        ModelLoadError: the bundled weights themselves can't be loaded (nothing left to serve).
    """
    if model:
        try:
            return Classifier.from_pretrained(model, revision), None
        except ModelLoadError as err:
            where = f"{model}@{revision}" if revision else model
            print(f"warning: {err} Serving the bundled weights instead.", file=sys.stderr)
            reason = re.sub(r"(?:/[^/\s:'\"]+)+/", "", str(err))  # file names, not the server's folders
            return Classifier.from_pretrained(None), (
                f"Could not load the weights {where}: {reason} This page serves the bundled weights instead.")
    return Classifier.from_pretrained(None), None


def launch_kwargs(demo: gr.Blocks, keep_uploads_s: float = KEEP_UPLOADS_S) -> dict[str, Any]:
    """What ``demo.launch()`` needs besides host and port: limits and the server's guard (visitors' files
    deleted ``keep_uploads_s`` after they arrive), the Live tab's files, styling and page code, privacy (no
    run history kept in visitors' browsers), the MCP server unless ``GRADIO_MCP_SERVER=False``."""
    from starlette.routing import Mount

    async def live(scope: dict, receive: Any, send: Any) -> None:
        await _serve_live_files(scope, receive, send, demo.live_files)

    app_kwargs = guard.install(demo, keep_uploads_s) | {"routes": [Mount("/live", app=live)]}
    return {"max_file_size": MAX_FILE_SIZE, "show_error": False, "run_history": False, "footer_links": ["api"],
            "css": (STATIC / "page.css").read_text(), "js": (STATIC / "page.js").read_text(),
            "state_session_capacity": SESSIONS_KEPT, "app_kwargs": app_kwargs,
            "mcp_server": os.environ.get("GRADIO_MCP_SERVER", "True").lower() != "false"}


def main(argv: list[str] | None = None) -> None:
    """``python app.py``: load the weights and serve the page until interrupted."""
    args = parse_args(argv)
    guard.limit_malloc_arenas()
    try:
        classifier, warning = load_classifier(args.model, args.revision)
    except ModelLoadError as err:  # even the bundled weights failed: nothing to serve
        sys.exit(f"error: {err}")
    demo = build_demo(classifier, warning)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share,
                **launch_kwargs(demo, args.keep_uploads))


if __name__ == "__main__":
    main()
