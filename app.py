"""Gradio demo: classify a picture into the ten CIFAR-10 classes and show why.

    python app.py                          # the bundled weights/
    python app.py --model owner/name --revision <sha>
    MODEL_REPO=owner/name python app.py    # same, from the environment (how a Space sets it)
    python app.py --share                  # ask Gradio for a public link

Importing this module does nothing: ``build_demo(classifier)`` makes the page, ``main()`` parses the
command line, loads the weights and launches (a Space runs ``python app.py``).

Endpoints (``gradio_client.Client(url).predict(handle_file(path), api_name=...)``), also MCP tools:

* ``/predict``: one image -> (Label value with all ten classes, notice text).
* ``/explain``: one image -> (the 32x32 input enlarged, a Grad-CAM overlay). In the page it reuses
  the pixels and probabilities ``/predict`` just computed for that file; called alone, it decodes.

Uploaded files reach :mod:`cifar_model`'s decoder untouched (``preprocess=False``): its decoding is
bounded and its errors are sentences. The price is that Gradio checks nothing about the payload, so
:func:`image_source` opens only files inside Gradio's own upload folder (see README, "Security and
privacy").
"""

from __future__ import annotations

import argparse
import base64
import binascii
import ctypes
import hashlib
import html
import io
import logging
import os
import re
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import gradio as gr
import numpy as np
import torch
from gradio.utils import get_upload_folder, is_in_or_equal
from PIL import Image

from cifar_model import Classifier, ImageError, ModelLoadError, WeightsInfo, grad_cam, open_image

LOG = logging.getLogger("app")
HERE = Path(__file__).resolve().parent

# Uploads larger than this are refused by Gradio's upload route (HTTP 413) before any decoding.
MAX_FILE_SIZE = "10mb"
# Any other request body (the queue's JSON, where a webcam frame is a ~20 KB data URL) over this is
# refused with HTTP 413 before it is read; an upload's body may be a file plus its multipart framing.
MAX_BODY_BYTES = 2 * 1024 * 1024
MAX_UPLOAD_BODY_BYTES = 10 * 1024 * 1024 + 64 * 1024
# Uploads are refused (HTTP 507) while Gradio's cache folder holds more than this: a flood of uploads
# can't fill the disk. Set by CACHE_BUDGET_MB.
CACHE_BUDGET_BYTES = int(os.environ.get("CACHE_BUDGET_MB", "1024")) * 1024 * 1024
# Visitors' pictures and the pictures made from them are deleted this long after they arrive (checked
# every half of it, so gone within 1.5x). Set by KEEP_UPLOADS_S or --keep-uploads.
KEEP_UPLOADS_S = 1800
# Gradio keeps a copy of the page's state (~40 KB here) for each session id it has seen, up to
# 10,000 by default: anyone can mint session ids. Keep the most recent ones only (benchmarks/soak.py).
SESSIONS_KEPT = 500
# Bounded queue: when full, Gradio answers "queue full" (gradio_client raises QueueError).
QUEUE_KWARGS: dict[str, Any] = {"max_size": 32, "default_concurrency_limit": 2}
# The example pictures are 32x32: scale them to the box instead of a speck in its middle. The
# SemiBold font file Gradio 6.31 ships lacks some capitals: serve weight 600 from its Bold file.
CSS = ("#picture .image-frame img { width: 100%; height: 100%; object-fit: contain; }\n"
       "@font-face { font-family: 'Source Sans Pro'; font-weight: 600; font-style: normal;"
       " src: url('static/fonts/SourceSansPro/SourceSansPro-Bold.woff2') format('woff2'); }")
MAX_DATA_URL_CHARS = MAX_BODY_BYTES  # a base64 frame can't be longer than the body that carries it
UNREADABLE = "This file is not a picture we can read. Use a JPEG, PNG, WebP, GIF, BMP or TIFF image."
# One sentence for every path outside the upload folder, whether or not it exists.
REFUSED = "This picture can't be opened here. Upload the picture itself."
PREVIEW_SIZE = 256  # "what the model sees": 32x32 enlarged 8x, nearest neighbour
# One live session streams a frame every 0.2 s for at most 60 s. A 320x240 frame's bars are drawn
# 40-100 ms after its capture, so the interval is most of the bars' lag; five frames a second send
# ~110 KiB/s, less than Gradio's default webcam options sent at 0.4 s (benchmarks/live_frames.py).
LIVE_EVERY_S, LIVE_LIMIT_S = 0.2, 60
LIVE_SESSIONS = 4  # a live session holds a worker for up to LIVE_LIMIT_S, but a frame costs a few ms
# Small frames from the rear camera: the model needs 32x32, a full 1920x1440 JPEG is wasted bytes.
# Not mirrored: Gradio 6 mirrors the captured pixels, not just the preview, and a rear camera isn't a mirror.
WEBCAM = gr.WebcamOptions(mirror=False, constraints={"video": {
    "width": {"ideal": 320}, "height": {"ideal": 240}, "facingMode": {"ideal": "environment"}}})


# ---------------------------------------------------------------------------------------------
# Untrusted input: request bodies, payloads, pictures.


class RequestLimits:
    """ASGI middleware: refuse over-large bodies (413) before they are read, and uploads while the
    cache is over its budget (507)."""

    def __init__(self, app: Callable, max_body: int = MAX_BODY_BYTES, max_upload: int = MAX_UPLOAD_BODY_BYTES,
                 cache_budget: int = CACHE_BUDGET_BYTES) -> None:
        self.app, self.max_body, self.max_upload, self.cache_budget = app, max_body, max_upload, cache_budget
        self._cache_size, self._measured_at = 0, 0.0

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        # An MCP call may carry a base64 picture that Gradio saves into the cache: an upload too.
        upload = scope["path"].rstrip("/").endswith("/upload") or "/gradio_api/mcp" in scope["path"]
        limit = self.max_upload if upload else self.max_body
        if upload and await self.cache_size() > self.cache_budget:
            return await _refuse(send, 507, "The server's picture cache is full. Try again in a few minutes.")
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return await _refuse(send, 413, f"Request body too large (the limit is {limit // 1024} KiB).")
        if length is None:  # chunked: read at most the limit, then hand the body on
            body = await _read_capped(receive, limit)
            if body is None:
                return await _refuse(send, 413, f"Request body too large (the limit is {limit // 1024} KiB).")
            receive = _replay(body, receive)
        return await self.app(scope, receive, send)

    async def cache_size(self) -> int:
        """Bytes in Gradio's upload folder, measured at most every 10 s, in a worker thread (a walk of
        thousands of files must not stall the event loop)."""
        if time.monotonic() - self._measured_at > 10.0:
            self._measured_at = time.monotonic()
            self._cache_size = await anyio.to_thread.run_sync(_folder_bytes, Path(get_upload_folder()))
        return self._cache_size


def _folder_bytes(folder: Path) -> int:
    total = 0
    for f in folder.rglob("*"):
        try:
            total += f.stat().st_size if f.is_file() else 0
        except OSError:  # deleted while we walked
            pass
    return total


async def _refuse(send: Callable, status: int, text: str) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _read_capped(receive: Callable, limit: int) -> bytes | None:
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if len(body) > limit:
            return None
    return body


def _replay(body: bytes, receive: Callable) -> Callable:
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> dict:
        return pending.pop() if pending else await receive()  # then e.g. http.disconnect

    return replay


def image_source(payload: Any) -> str | bytes | None:
    """The file path or bytes behind a raw ``gr.Image`` payload (``None`` when there is no image).

    Uploads, snapshots, pastes and examples arrive as a file in Gradio's upload folder
    (``{"path": ...}``); live webcam frames as a ``data:image/...;base64,...`` URL. Any other path,
    whoever sent it, is refused with the same sentence whether or not it exists.
    """
    if payload is None or payload == "":
        return None
    if isinstance(payload, dict):
        url = payload.get("url") or ""
        if isinstance(url, str) and url.startswith("data:"):
            if len(url) > MAX_DATA_URL_CHARS:
                raise gr.Error("The picture is too large to send inline. Upload a smaller file.")
            try:
                return base64.b64decode(url.partition(",")[2], validate=True)
            except (binascii.Error, ValueError):
                raise gr.Error("The picture data is not valid base64.") from None
        payload = payload.get("path")
    if not isinstance(payload, str) or not payload or "\0" in payload:
        raise gr.Error(REFUSED, print_exception=False)
    if not is_in_or_equal(payload, get_upload_folder()):
        raise gr.Error(REFUSED, print_exception=False)
    return payload


def unsure_notice(probs: dict[str, float], unfamiliar: bool) -> str:
    """Markdown warning for a picture the unsure rule flagged (:meth:`Classifier.unfamiliar`), else ``""``."""
    if not unfamiliar:
        return ""
    top = max(probs, key=probs.get)
    return (f"⚠️ **The model is unsure.** This picture does not look like the CIFAR-10 pictures it learned from: "
            f"its best guess, *{top}*, may well be wrong (on CIFAR-10 test pictures flagged like this it is right "
            "only about half the time). It only knows airplane, automobile, bird, cat, deer, dog, frog, horse, "
            "ship and truck, and sees a 32×32 thumbnail of the picture's centre.")


# ---------------------------------------------------------------------------------------------
# Pictures for the page (numpy and PIL only).


def enlarge(pixels: np.ndarray, size: int = PREVIEW_SIZE) -> np.ndarray:
    """Nearest-neighbour upscale of an H x W x 3 uint8 picture to ``size`` x ``size``: every
    input pixel becomes a sharp square, so the visitor sees exactly what the network got."""
    return np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.NEAREST))


# A blue -> cyan -> yellow -> red ramp (like "jet" without its dark ends) for heat 0 -> 1.
_HEAT_STOPS = np.array([0.0, 0.33, 0.66, 1.0])
_HEAT_RGB = np.array([[0, 0, 255], [0, 255, 255], [255, 255, 0], [255, 0, 0]], dtype=np.float32)


def heat_overlay(pixels: np.ndarray, cam: np.ndarray, size: int = PREVIEW_SIZE) -> np.ndarray:
    """The enlarged picture with a Grad-CAM map (H x W floats in [0, 1]) blended over it; hot
    areas are covered more than cold ones so the picture stays readable where the model did not look."""
    heat = np.asarray(Image.fromarray(cam.astype(np.float32), mode="F").resize((size, size), Image.Resampling.BILINEAR))
    heat = np.clip(heat, 0.0, 1.0)
    colour = np.stack([np.interp(heat, _HEAT_STOPS, _HEAT_RGB[:, c]) for c in range(3)], axis=-1)
    alpha = (0.15 + 0.5 * heat)[..., None]
    out = (1 - alpha) * enlarge(pixels, size).astype(np.float32) + alpha * colour
    return np.clip(out, 0, 255).astype(np.uint8)


def weights_panel(info: WeightsInfo) -> str:
    """HTML: where the weights came from and what their metrics.json says, every value escaped
    (the folder may be anyone's Hub repo: its text is shown as text, never rendered)."""
    m, esc = info.metrics, html.escape
    rows = [f"<p><b>Weights:</b> <code>{esc(info.label)}</code></p>"]
    if info.warning:
        rows.append(f"<p>{esc(info.warning)}</p>")
    if m is None:
        return "".join(rows + ["<p><b>Test accuracy:</b> not recorded with these weights.</p>"])
    rows.append(f"<p><b>Test accuracy:</b> {m.test_accuracy:.1%} on {m.test_images:,} pictures ({esc(m.dataset)})</p>")
    if m.ece is not None:
        before = f" (before calibration {m.ece_uncalibrated:.1%})" if m.ece_uncalibrated is not None else ""
        rows.append(f"<p><b>Calibration error (ECE):</b> {m.ece:.1%}{before}: when the bars say 80%, the model "
                    f"is right about {80 - 100 * m.ece:.0f}–{80 + 100 * m.ece:.0f}% of the time on average.</p>")
    cells = [(esc(c), a) for c, a in m.per_class_accuracy.items()][:20]
    if cells:
        rows.append("<table><tr>" + "".join(f"<th>{c}</th>" for c, _ in cells) + "</tr><tr>"
                    + "".join(f"<td>{a:.0%}</td>" for _, a in cells) + "</tr></table>")
    return "".join(rows)


def reliability_picture(info: WeightsInfo) -> np.ndarray | None:
    """The folder's reliability diagram, decoded with the same limits as visitors' pictures."""
    if info.diagram is None:
        return None
    try:
        return np.asarray(open_image(info.diagram, draft_size=None).convert("RGB"))
    except ImageError as err:
        LOG.warning("%s ignored: %s", info.diagram, err)
        return None


def example_files() -> list[str]:
    """The example pictures beside the app (real CIFAR-10 test images, three per class)."""
    return sorted(str(p) for p in (HERE / "examples").iterdir() if p.suffix.lower() in (".jpg", ".png"))


# ---------------------------------------------------------------------------------------------
# The page.

INTRO = """# CIFAR-10 classifier
Drop a picture, take a webcam snapshot or paste one: a small CNN trained on CIFAR-10 says which of
its ten classes it shows (airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck).
It only ever sees a **32×32** thumbnail of the picture's centre square: see *What the model sees*."""


def build_demo(classifier: Classifier, warning: str | None = None, *,
               keep_uploads_s: int = KEEP_UPLOADS_S) -> gr.Blocks:
    """The page and its events, served by ``classifier``; ``warning``, if any, is shown at the top.
    Visitors' files are deleted ``keep_uploads_s`` seconds after they arrive (within 1.5x that)."""
    handlers = Handlers(classifier)
    with gr.Blocks(title="CIFAR-10 classifier", analytics_enabled=False,
                   delete_cache=(max(1, keep_uploads_s // 2), keep_uploads_s)) as demo:
        demo.temp_file_sets.append(handlers.opened)
        gr.Markdown(INTRO)
        gr.Markdown(f"⚠️ {html.escape(warning or '')}", visible=bool(warning), elem_id="load-warning")
        with gr.Tab("Picture"):
            with gr.Row():
                with gr.Column():
                    image = gr.Image(sources=["upload", "webcam", "clipboard"], type="filepath", image_mode=None,
                                     label="Your picture", height=320, webcam_options=WEBCAM, elem_id="picture")
                with gr.Column():
                    notice = gr.Markdown(elem_id="notice")
                    label = gr.Label(num_top_classes=len(classifier.classes), label="Probabilities", elem_id="probs")
                    with gr.Row():
                        seen = gr.Image(label="What the model sees (32×32, enlarged)", format="png",
                                        interactive=False, buttons=["fullscreen"], elem_id="seen")
                        heat = gr.Image(label="Where it looked (Grad-CAM, top class)", format="png",
                                        interactive=False, buttons=["fullscreen"], elem_id="heat")
            # Below both columns, so on a phone the bars come right under the picture.
            gr.Examples([[f] for f in example_files()], inputs=[image], examples_per_page=10,
                        label="Examples: real CIFAR-10 test pictures (click one)")
        with gr.Tab("Live"):
            with gr.Row():
                cam = gr.Image(sources=["webcam"], streaming=True, type="filepath", image_mode=None,
                               webcam_options=WEBCAM, label=f"Webcam (streams for up to {LIVE_LIMIT_S} s)",
                               elem_id="live-cam")
                with gr.Column():
                    live_notice = gr.Markdown()
                    live_label = gr.Label(num_top_classes=len(classifier.classes), label="Probabilities",
                                          elem_id="live-probs")
        with gr.Accordion("About these weights", open=False):
            gr.HTML(weights_panel(classifier.info), elem_id="weights-panel")
            diagram = reliability_picture(classifier.info)
            if diagram is not None:
                gr.Image(diagram, label="Reliability on the test split (after calibration)", interactive=False,
                         format="png", elem_id="reliability")

        # Any new picture (upload, snapshot, paste, example click, clear) triggers a prediction;
        # the slower pictures follow in their own event, reusing what /predict computed.
        predicted = image.change(handlers.predict, image, [label, notice], api_name="predict", preprocess=False)
        predicted.success(handlers.explain, image, [seen, heat], api_name="explain", preprocess=False)
        predicted.failure(lambda: (None, None), None, [seen, heat], api_visibility="private")  # no stale pictures
        cam.stream(handlers.predict_live, cam, [live_label, live_notice], api_name="live", api_visibility="private",
                   preprocess=False, stream_every=LIVE_EVERY_S, time_limit=LIVE_LIMIT_S,
                   concurrency_limit=LIVE_SESSIONS, show_progress="hidden")
    return demo.queue(**QUEUE_KWARGS)


def _fresh_copies(path: Path, within_s: float = 120.0) -> list[str]:
    """Other files in the upload folder made in the last ``within_s`` seconds with the same bytes as ``path``.

    Gradio's MCP server writes an agent's base64 picture into the folder, then hands the app a copy
    of it: the first file is nobody's, and would never be deleted.
    """
    try:
        stat, now = path.stat(), time.time()
        folder = Path(get_upload_folder())
        dirs = [d for d in folder.iterdir() if d.is_dir() and now - d.stat().st_mtime < within_s]
        same = [f for d in dirs for f in d.iterdir() if f.is_file() and f != path and f.stat().st_size == stat.st_size]
        data = path.read_bytes() if same else b""
        return [str(f) for f in same if f.read_bytes() == data]
    except OSError:
        return []


class _SnapshotSet(set):
    """A set that Gradio's cache deletion (in a worker thread) can iterate while handlers add to it."""

    def __iter__(self):
        return iter(set.copy(self))


class Handlers:
    """The events' functions, closed over one classifier. None shows a visitor a traceback.

    What /predict decoded and computed for a file is kept for /explain, keyed by the file's path
    (a file in Gradio's upload folder is never rewritten, so a path names one picture): the chained
    event neither decodes nor runs the network again. Not gr.State: Gradio 6.31's MCP server drops a
    State output twice and fails the tool ("pop index out of range").
    """

    RECENT = 64  # pictures remembered for /explain (3 KB of pixels each)

    def __init__(self, classifier: Classifier) -> None:
        self.clf = classifier
        # Every file a handler opened, for Gradio's delete_cache: it tracks uploads and outputs, not the
        # pictures its MCP server saves from base64.
        self.opened: set[str] = _SnapshotSet()
        self._cam_lock = threading.Lock()  # grad_cam hooks the shared model's layer: one picture at a time
        self._recent: OrderedDict[str, tuple[np.ndarray, tuple[dict[str, float], bool]]] = OrderedDict()
        self._recent_lock = threading.Lock()

    def source(self, payload: Any) -> str | bytes | None:
        """:func:`image_source`, remembering the file (and any fresh copy of it) for deletion."""
        source = image_source(payload)
        if isinstance(source, str):
            self.opened.add(source)
            if Path(source).name.startswith("file."):  # how Gradio names a file it saved from base64
                self.opened.update(_fresh_copies(Path(source)))
        return source

    def analyse(self, source: str | bytes) -> tuple[np.ndarray, tuple[dict[str, float], bool]]:
        """(pixels, (probabilities, unsure)) of a picture; remembered, so /explain after /predict is free."""
        key = source if isinstance(source, str) else None
        with self._recent_lock:
            if key in self._recent:
                self._recent.move_to_end(key)
                return self._recent[key]
        pixels = self.decode(source)
        result = pixels, self.classify(pixels)
        if key is not None:
            with self._recent_lock:
                self._recent[key] = result
                while len(self._recent) > self.RECENT:
                    self._recent.popitem(last=False)
        return result

    def decode(self, source: str | bytes) -> np.ndarray:
        """Untrusted picture -> the 32x32x3 uint8 input, or a gr.Error the visitor can read."""
        try:
            return self.clf.to_uint8(source)
        except ImageError as err:  # escaped: Gradio renders the message as HTML
            raise gr.Error(html.escape(str(err)), print_exception=False) from None
        except Exception as err:  # a decoder bug: a generic sentence, the traceback in the server log only
            LOG.exception("decoding an upload failed outside ImageError")
            raise gr.Error(UNREADABLE, print_exception=False) from err

    def classify(self, pixels: np.ndarray) -> tuple[dict[str, float], bool]:
        """32x32x3 uint8 -> (calibrated probability of each class, whether the unsure rule fires)."""
        logits = self.clf.logits(torch.from_numpy(pixels[None]))
        probs = dict(zip(self.clf.classes, self.clf.calibrate(logits)[0].tolist()))
        return probs, bool(self.clf.unfamiliar(logits)[0])

    def predict(self, image: Any) -> tuple[dict[str, float] | None, str]:
        """Classify a picture into the ten CIFAR-10 classes (airplane, automobile, bird, cat, deer, dog, frog,
        horse, ship, truck) with a small CNN that sees it as a 32x32 thumbnail of its centre square.

        It always answers one of the ten classes, even for a picture of something else: when the picture
        looks unlike CIFAR-10 the notice says the model is unsure. Probabilities are calibrated: of
        pictures given 80%, about 80% are right (on CIFAR-10-like pictures).

        Args:
            image: the picture (JPEG, PNG, WebP, GIF, BMP or TIFF; at most 10 MB and 50 megapixels).

        Returns:
            The probability of each of the ten classes (summing to 1), and a notice that is empty
            unless the model is unsure.
        """
        source = self.source(image)
        if source is None:
            return None, ""
        _, (probs, unfamiliar) = self.analyse(source)
        return probs, unsure_notice(probs, unfamiliar)

    def explain(self, image: Any) -> tuple[str | None, str | None]:
        """Show what the classifier saw and where it looked: the 32x32 input it classified, enlarged, and a
        Grad-CAM heatmap of the class it ranks first, over that input.

        Args:
            image: the picture (JPEG, PNG, WebP, GIF, BMP or TIFF).

        Returns:
            The 32x32 input enlarged to 256x256, and the same with the heatmap blended over it (PNG files).
        """
        source = self.source(image)
        if source is None:
            return None, None
        pixels, (probs, _) = self.analyse(source)
        top = self.clf.classes.index(max(probs, key=probs.get))  # the class the bars rank first
        with self._cam_lock:
            cam = grad_cam(self.clf.model, pixels, class_index=top)
        return self.png(enlarge(pixels)), self.png(heat_overlay(pixels, cam))

    def png(self, pixels: np.ndarray) -> str:
        """The picture as a PNG file in the upload folder, named by its content and written once.

        Returned as a path, not an array: Gradio saves an array by rewriting ``<hash>/image.png`` in
        place each time the same picture comes back, so a browser still fetching the first copy got
        "Too much data for declared Content-Length". A path is copied into Gradio's cache by an
        atomic rename, only if absent; this file too is written under a temporary name and renamed.
        """
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "PNG")
        data = buf.getvalue()
        folder = Path(get_upload_folder()) / "cifar-pictures"
        path = folder / f"{hashlib.sha256(data).hexdigest()}.png"
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            fd, staging = tempfile.mkstemp(dir=folder, prefix=".png.")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(staging, path)
        self.opened.add(str(path))
        return str(path)

    def predict_live(self, frame: Any) -> tuple[dict[str, float], str] | dict:
        """Live tab: like :meth:`predict`, but a bad or missing frame keeps the last answer quietly."""
        try:
            source = self.source(frame)
            pixels = self.decode(source) if source is not None else None
        except gr.Error:
            pixels = None  # one dropped webcam frame is not worth an error popup every few tenths of a second
        if pixels is None:
            return gr.skip()
        probs, unfamiliar = self.classify(pixels)
        return probs, unsure_notice(probs, unfamiliar)


# ---------------------------------------------------------------------------------------------
# Command line.


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
    """Load ``model`` (folder or Hub repo id; ``None``: bundled weights).

    Returns:
        The classifier and, when ``model`` could not be loaded and the bundled weights are served
        instead, a sentence saying so for the page (else ``None``).

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


def launch_kwargs() -> dict[str, Any]:
    """What ``launch()`` needs besides host and port: limits, styling, privacy (no run history kept
    in visitors' browsers), the MCP server unless ``GRADIO_MCP_SERVER=False``."""
    return {"max_file_size": MAX_FILE_SIZE, "show_error": False, "css": CSS, "run_history": False,
            "state_session_capacity": SESSIONS_KEPT,
            "mcp_server": os.environ.get("GRADIO_MCP_SERVER", "True").lower() != "false",
            "app_kwargs": {"middleware": [_middleware()]}}


def _middleware():
    from starlette.middleware import Middleware

    return Middleware(RequestLimits)


def _limit_malloc_arenas(arenas: int = 2) -> None:
    # glibc gives busy threads heap arenas of their own and rarely returns their memory: a server's
    # RSS creeps under load. MALLOC_ARENA_MAX=2 fixes it but must be set before start, which a Space
    # can't do; mallopt(M_ARENA_MAX) does the same from inside, for the threads started after it.
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # -8: M_ARENA_MAX
    except (OSError, AttributeError):  # not glibc
        pass


def main(argv: list[str] | None = None) -> None:
    """``python app.py``: load the weights and serve the page until interrupted."""
    args = parse_args(argv)
    _limit_malloc_arenas()
    try:
        classifier, warning = load_classifier(args.model, args.revision)
    except ModelLoadError as err:  # even the bundled weights failed: nothing to serve
        sys.exit(f"error: {err}")
    demo = build_demo(classifier, warning, keep_uploads_s=args.keep_uploads)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, **launch_kwargs())


if __name__ == "__main__":
    main()
