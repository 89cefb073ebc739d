"""Gradio demo: classify a picture into the ten CIFAR-10 classes and show why.

    python app.py                          # the bundled weights/
    python app.py --model owner/name --revision <sha>
    MODEL_REPO=owner/name python app.py    # same, from the environment (how a Space sets it)
    python app.py --share                  # ask Gradio for a public link

Importing this module does nothing: ``build_demo(classifier)`` makes the page, ``main()`` parses the
command line, loads the weights and launches (a Space runs ``python app.py``). Endpoints, also MCP
tools: ``/predict`` (a picture -> the ten probabilities and the unsure notice) and ``/explain`` (a
picture -> the 32x32 input enlarged and a Grad-CAM overlay; in the page it reuses what ``/predict``
just computed for that file). Pictures reach the library's decoder untouched (``preprocess=False``);
what a public server needs besides is in :mod:`guard`.
"""

from __future__ import annotations

import argparse
import html
import io
import logging
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
from cifar_model import Answer, Classifier, ImageError, ModelLoadError, Weights

LOG = logging.getLogger("app")
HERE = Path(__file__).resolve().parent
MAX_FILE_SIZE = "10mb"  # Gradio's upload route refuses larger files (HTTP 413) before any decoding
# Visitors' pictures and the pictures made from them are deleted this long after they arrive (within 5 s
# more). Set by KEEP_UPLOADS_S or --keep-uploads.
KEEP_UPLOADS_S = 1800
# Gradio keeps ~40 KB of page state per session id it has seen, 10,000 by default, and anyone can
# mint session ids: keep the most recent ones only.
SESSIONS_KEPT = 500
QUEUE_KWARGS: dict[str, Any] = {"max_size": 32, "default_concurrency_limit": 2}  # past it: "queue full"
# The example pictures are 32x32: scale them to the box instead of a speck in its middle. The
# SemiBold font file Gradio 6.31 ships lacks some capitals: serve weight 600 from its Bold file.
CSS = ("#picture .image-frame img { width: 100%; height: 100%; object-fit: contain; }\n"
       "@font-face { font-family: 'Source Sans Pro'; font-weight: 600; font-style: normal;"
       " src: url('static/fonts/SourceSansPro/SourceSansPro-Bold.woff2') format('woff2'); }")
UNREADABLE = "This file is not a picture we can read. Use a JPEG, PNG, WebP, GIF, BMP or TIFF image."
PREVIEW_SIZE = 256  # "what the model sees": 32x32 enlarged 8x, nearest neighbour
# A live session sends a 320x240 frame every 0.2 s for at most 60 s: its bars are drawn 40-100 ms after
# capture, so the interval is most of their lag (benchmarks/results/2026-11-26-cpu-live-frames.log).
LIVE_EVERY_S, LIVE_LIMIT_S, LIVE_SESSIONS = 0.2, 60, 4
# Small frames from the rear camera: the model needs 32x32. Not mirrored: Gradio 6 mirrors the
# captured pixels, not just the preview, and a rear camera isn't a mirror.
WEBCAM = gr.WebcamOptions(mirror=False, constraints={"video": {
    "width": {"ideal": 320}, "height": {"ideal": 240}, "facingMode": {"ideal": "environment"}}})
# A blue -> cyan -> yellow -> red ramp (like "jet" without its dark ends) for heat 0 -> 1.
_HEAT_STOPS = np.array([0.0, 0.33, 0.66, 1.0])
_HEAT_RGB = np.array([[0, 0, 255], [0, 255, 255], [255, 255, 0], [255, 0, 0]], dtype=np.float32)


def enlarge(pixels: np.ndarray, size: int = PREVIEW_SIZE) -> np.ndarray:
    """Nearest-neighbour upscale of an H x W x 3 uint8 picture: every input pixel a sharp square."""
    return np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.NEAREST))


def heat_overlay(pixels: np.ndarray, cam: np.ndarray, size: int = PREVIEW_SIZE) -> np.ndarray:
    """The enlarged picture with a heatmap (H x W floats in [0, 1]) blended over it, hot areas covered
    more than cold ones so the picture stays readable where the model did not look."""
    heat = np.asarray(Image.fromarray(cam.astype(np.float32), mode="F").resize((size, size), Image.Resampling.BILINEAR))
    heat = np.clip(heat, 0.0, 1.0)
    colour = np.stack([np.interp(heat, _HEAT_STOPS, _HEAT_RGB[:, c]) for c in range(3)], axis=-1)
    alpha = (0.15 + 0.5 * heat)[..., None]
    out = (1 - alpha) * enlarge(pixels, size).astype(np.float32) + alpha * colour
    return np.clip(out, 0, 255).astype(np.uint8)


def unsure_notice(answer: Answer, weights: Weights) -> str:
    """Markdown warning for a picture the unsure rule flagged, with the weights' own figures; else ``""``."""
    if not answer.unsure:
        return ""
    m = weights.metrics
    how_often = (f" (on CIFAR-10 test pictures flagged like this it is right {m.unsure_accuracy:.0%} of the time)"
                 if m is not None and m.unsure_accuracy is not None else "")
    return (f"⚠️ **The model is unsure.** This picture does not look like the pictures it learned from: its best "
            f"guess, *{answer.top}*, may well be wrong{how_often}. It only knows "
            f"{', '.join(weights.config.classes)}, and sees a 32×32 thumbnail of the picture's centre.")


def weights_panel(weights: Weights) -> str:
    """HTML: where the weights came from and what their metrics.json says, every text escaped (the
    folder may be anyone's Hub repo: its text is shown as text, never rendered)."""
    m, esc = weights.metrics, html.escape
    rows = [f"<p><b>Weights:</b> <code>{esc(weights.label)}</code></p>"]
    if weights.warning:
        rows.append(f"<p>{esc(weights.warning)}</p>")
    if m is None:
        return "".join(rows + ["<p><b>Test accuracy:</b> not recorded with these weights.</p>"])
    rows.append(f"<p><b>Test accuracy:</b> {m.test_accuracy:.1%} on {m.test_images:,} pictures ({esc(m.dataset)})</p>")
    if m.ece is not None:
        before = f" (before calibration {m.ece_uncalibrated:.1%})" if m.ece_uncalibrated is not None else ""
        rows.append(f"<p><b>Calibration error (ECE):</b> {m.ece:.1%}{before}: when the bars say 80%, the model "
                    f"is right about {80 - 100 * m.ece:.0f}–{80 + 100 * m.ece:.0f}% of the time on average.</p>")
    cells = list(m.per_class_accuracy.items())[:20]
    rows.append("<table><tr>" + "".join(f"<th>{esc(c)}</th>" for c, _ in cells) + "</tr><tr>"
                + "".join(f"<td>{a:.0%}</td>" for _, a in cells) + "</tr></table>")
    return "".join(rows)


def example_files() -> list[str]:
    """The example pictures beside the app (real CIFAR-10 test images, three per class)."""
    return sorted(str(p) for p in (HERE / "examples").iterdir() if p.suffix.lower() in (".jpg", ".png"))


class Handlers:
    """The events' functions, closed over one classifier. None shows a visitor a traceback.

    What /predict computed for a file is kept for /explain, keyed by the file's path (a file in
    Gradio's upload folder is never rewritten, so a path names one picture): the chained event neither
    decodes nor runs the network again. Not gr.State: Gradio 6.31's MCP server drops a State output
    twice and fails the tool ("pop index out of range").
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
        if isinstance(source, str):
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

    def predict(self, image: Any) -> tuple[dict[str, float] | None, str]:
        """Classify a picture into the ten CIFAR-10 classes (airplane, automobile, bird, cat, deer, dog, frog,
        horse, ship, truck) with a small CNN that sees it as a 32x32 thumbnail of its centre square.

        It always answers one of the ten classes, even for a picture of something else: when the picture
        looks unlike CIFAR-10 the notice says the model is unsure. Probabilities are calibrated on CIFAR-10
        test pictures: of those given 80%, about 80% are right; for other pictures they promise nothing.

        Args:
            image: the picture (JPEG, PNG, WebP, GIF, BMP or TIFF; at most 10 MB and 50 megapixels).

        Returns:
            The probability of each of the ten classes (summing to 1), and a notice that is empty
            unless the model is unsure.
        """
        answer = self.answer(image)
        if answer is None:
            return None, ""
        return answer.probabilities, unsure_notice(answer, self.clf.weights)

    def explain(self, image: Any) -> tuple[str | None, str | None]:
        """Show what the classifier saw and where it looked: the 32x32 input it classified, enlarged, and a
        Grad-CAM heatmap of the class it ranks first, over that input.

        Args:
            image: the picture (JPEG, PNG, WebP, GIF, BMP or TIFF).

        Returns:
            The 32x32 input enlarged to 256x256, and the same with the heatmap blended over it (PNG files).
        """
        answer = self.answer(image)
        if answer is None:
            return None, None
        return self.png(enlarge(answer.pixels)), self.png(heat_overlay(answer.pixels, self.clf.heatmap(answer)))

    def png(self, pixels: np.ndarray) -> str:
        """The picture as a PNG file written once (guard.write_png), deleted with the uploads."""
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "PNG")
        return guard.write_png(buf.getvalue())

    def predict_live(self, frame: Any) -> tuple[dict[str, float], str] | dict:
        """Live tab: like :meth:`predict`, but a bad or missing frame keeps the last answer quietly."""
        try:
            answer = self.answer(frame, data_url=True)
        except gr.Error:
            answer = None  # one dropped webcam frame is not worth an error popup every few tenths of a second
        if answer is None:
            return gr.skip()
        return answer.probabilities, unsure_notice(answer, self.clf.weights)


INTRO = """# CIFAR-10 classifier
Drop a picture, take a webcam snapshot or paste one: a small CNN trained on CIFAR-10 says which of
its ten classes it shows (airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck).
It only ever sees a **32×32** thumbnail of the picture's centre square: see *What the model sees*."""


def build_demo(classifier: Classifier, warning: str | None = None) -> gr.Blocks:
    """The page and its events, served by ``classifier``; ``warning``, if any, is shown at the top."""
    handlers = Handlers(classifier)
    classes = len(classifier.classes)
    with gr.Blocks(title="CIFAR-10 classifier", analytics_enabled=False) as demo:
        gr.Markdown(INTRO)
        gr.Markdown(f"⚠️ {html.escape(warning or '')}", visible=bool(warning), elem_id="load-warning")
        with gr.Tab("Picture"):
            with gr.Row():
                with gr.Column():
                    image = gr.Image(sources=["upload", "webcam", "clipboard"], type="filepath", image_mode=None,
                                     label="Your picture", height=320, webcam_options=WEBCAM, elem_id="picture")
                with gr.Column():
                    notice = gr.Markdown(elem_id="notice")
                    label = gr.Label(num_top_classes=classes, label="Probabilities", elem_id="probs")
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
                    live_label = gr.Label(num_top_classes=classes, label="Probabilities", elem_id="live-probs")
        with gr.Accordion("About these weights", open=False):
            gr.HTML(weights_panel(classifier.weights), elem_id="weights-panel")

        # Any new picture (upload, snapshot, paste, example click, clear) triggers a prediction;
        # the slower pictures follow in their own event, reusing what /predict computed.
        predicted = image.change(handlers.predict, image, [label, notice], api_name="predict", preprocess=False)
        predicted.success(handlers.explain, image, [seen, heat], api_name="explain", preprocess=False)
        predicted.failure(lambda: (None, None), None, [seen, heat], api_visibility="private")  # no stale pictures
        cam.stream(handlers.predict_live, cam, [live_label, live_notice], api_name="live", api_visibility="private",
                   preprocess=False, stream_every=LIVE_EVERY_S, time_limit=LIVE_LIMIT_S,
                   concurrency_limit=LIVE_SESSIONS, show_progress="hidden")
    return demo.queue(**QUEUE_KWARGS, api_open=False)


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
    deleted ``keep_uploads_s`` after they arrive), styling, privacy (no run history kept in visitors'
    browsers), the MCP server unless ``GRADIO_MCP_SERVER=False``."""
    return {"max_file_size": MAX_FILE_SIZE, "show_error": False, "css": CSS, "run_history": False,
            "state_session_capacity": SESSIONS_KEPT,
            "mcp_server": os.environ.get("GRADIO_MCP_SERVER", "True").lower() != "false",
            "app_kwargs": guard.install(demo, keep_uploads_s)}


def main(argv: list[str] | None = None) -> None:
    """``python app.py``: load the weights and serve the page until interrupted."""
    args = parse_args(argv)
    guard.limit_malloc_arenas()
    try:
        classifier, warning = load_classifier(args.model, args.revision)
    except ModelLoadError as err:  # even the bundled weights failed: nothing to serve
        sys.exit(f"error: {err}")
    demo = build_demo(classifier, warning)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, **launch_kwargs(demo, args.keep_uploads))


if __name__ == "__main__":
    main()
