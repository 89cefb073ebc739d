"""Gradio demo: classify a picture into the ten CIFAR-10 classes and show why.

    python app.py                          # the bundled weights/
    python app.py --model owner/name --revision <sha>
    MODEL_REPO=owner/name python app.py    # same, from the environment
    python app.py --share                  # ask Gradio for a public link

Endpoints (``gradio_client.Client(url).predict(handle_file(path), api_name=...)``):

* ``/predict``: one image -> (Label value with all ten classes, notice text). Only the prediction
  runs here, so its latency is the model's and Gradio's, nothing else.
* ``/explain``: one image -> (the 32x32 input enlarged, a Grad-CAM overlay). Chained after
  ``/predict`` in the page.

Uploaded files reach :mod:`cifar_model`'s decoder untouched (``preprocess=False``): Gradio's own
``gr.Image`` preprocessing opens every upload with ``PIL.Image.open`` (which raises its own errors
on text files, empty files and >179 Mpx headers), while ours bounds pixels before decoding, limits
formats and words every failure as a sentence for the visitor.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import html
import logging
import os
import sys
import threading
from typing import Any

import gradio as gr
import numpy as np
import torch
from PIL import Image

from cifar_model import CLASSES, Classifier, ImageError, ModelLoadError, WeightsInfo, grad_cam

LOG = logging.getLogger("app")

# A prediction whose top probability is below this is flagged as unsure / probably none of the ten
# classes. Chosen with benchmarks/unsure_rate.py, which prints how often the rule fires on the
# CIFAR-10 test split and on synthetic non-CIFAR pictures; rerun it when the weights change. The
# shipped weights were trained with label smoothing 0.2, so even sure answers rarely pass ~0.85:
# at 0.6 the notice fires on 12.0% of the test split (whose accuracy there is 56%) and 58% of the
# synthetic non-CIFAR pictures (README, "When the model is unsure").
UNSURE_BELOW = 0.6
# Uploads larger than this are refused by Gradio's upload route (HTTP 413) before any decoding.
MAX_FILE_SIZE = "10mb"
# Bounded queue: when full, Gradio answers "queue full" (HTTP 503; gradio_client raises QueueError)
# instead of letting waiting visitors pile up.
QUEUE_KWARGS: dict[str, Any] = {"max_size": 32, "default_concurrency_limit": 2}
# The example pictures are 32x32: scale them to the box instead of a speck in its middle. The
# SemiBold font file Gradio 6.31 ships lacks some capitals (headings read "CIFᴀR"): serve weight
# 600 from its Bold file, with the same relative URL Gradio's own @font-face rules use.
CSS = ("#picture .image-frame img { width: 100%; height: 100%; object-fit: contain; }\n"
       "@font-face { font-family: 'Source Sans Pro'; font-weight: 600; font-style: normal;"
       " src: url('static/fonts/SourceSansPro/SourceSansPro-Bold.woff2') format('woff2'); }")
# show_error=False: our gr.Error messages still reach the page; other exceptions stay server-side.
LAUNCH_KWARGS: dict[str, Any] = {"max_file_size": MAX_FILE_SIZE, "show_error": False, "css": CSS}
# A base64 webcam frame longer than this is dropped without decoding (about 7.5 MB of JPEG).
MAX_DATA_URL_CHARS = 10_000_000
UNREADABLE = "This file is not a picture we can read. Use a JPEG, PNG, WebP, GIF, BMP or TIFF image."
PREVIEW_SIZE = 256  # "what the model sees": 32x32 enlarged 8x, nearest neighbour
LIVE_EVERY_S, LIVE_LIMIT_S = 0.4, 60  # one live session streams a frame every 0.4 s for at most 60 s
# A live session holds a worker of its own event for up to LIVE_LIMIT_S, but a frame costs a few ms:
# allow more sessions at once than uploads (they never take /predict's workers).
LIVE_SESSIONS = 4


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line; ``--model`` / ``--revision`` default to ``MODEL_REPO`` / ``MODEL_REVISION``."""
    parser = argparse.ArgumentParser(description="CIFAR-10 classifier demo (Gradio).")
    parser.add_argument("--model", default=os.environ.get("MODEL_REPO") or None,
                        help="weights folder or Hub repo id (default: $MODEL_REPO, else bundled weights/)")
    parser.add_argument("--revision", default=os.environ.get("MODEL_REVISION") or None,
                        help="Hub branch, tag or commit sha (default: $MODEL_REVISION)")
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
            return Classifier.from_pretrained(None), (
                f"Could not load the weights {where}: {err} This page serves the bundled weights instead."
            )
    return Classifier.from_pretrained(None), None


# ---------------------------------------------------------------------------------------------
# Handlers: each takes Gradio's raw image payload (preprocess=False) and never shows a traceback.


def image_source(payload: Any) -> str | bytes | None:
    """The file path or bytes behind a raw ``gr.Image`` payload (``None`` when there is no image).

    Uploads, snapshots and pastes arrive as a file in Gradio's upload cache (``{"path": ...}``);
    live webcam frames as a ``data:image/jpeg;base64,...`` URL; a plain path string is accepted
    for direct calls.
    """
    if payload is None or isinstance(payload, str):
        return payload or None
    if not isinstance(payload, dict):
        raise gr.Error("Send an image file.")
    url = payload.get("url") or ""
    if url.startswith("data:"):
        if len(url) > MAX_DATA_URL_CHARS:
            raise gr.Error("The picture is too large to send inline. Upload a smaller file.")
        try:
            return base64.b64decode(url.partition(",")[2], validate=True)
        except (binascii.Error, ValueError):
            raise gr.Error("The picture data is not valid base64.") from None
    return payload.get("path")


def is_unsure(probs: dict[str, float]) -> bool:
    """The unsure rule: the top class's (flip-TTA) probability is below :data:`UNSURE_BELOW`."""
    return max(probs.values()) < UNSURE_BELOW


def unsure_notice(probs: dict[str, float]) -> str:
    """Markdown warning when :func:`is_unsure`, else ``""``."""
    if not is_unsure(probs):
        return ""
    top = max(probs, key=probs.get)
    return (f"⚠️ **The model is unsure** (its best guess, *{top}*, has only {probs[top]:.0%}). "
            "The picture may show none of the ten CIFAR-10 classes, several things at once, "
            "or its subject is too small once shrunk to 32×32.")


def decode(source: str | bytes) -> np.ndarray:
    """Untrusted picture -> the 32x32x3 uint8 input, or a gr.Error the visitor can read.

    Whatever the decoder raises becomes a sentence: its own ImageError as it is worded, anything
    else (a decoder bug, e.g. a Pillow plugin it expects and lacks) as a generic one, logged with
    its traceback on the server only.
    """
    try:
        return CLASSIFIER.to_uint8(source)
    except ImageError as err:
        # Escaped: Gradio renders the message as HTML and it may quote the uploaded file's name.
        raise gr.Error(html.escape(str(err)), print_exception=False) from None
    except Exception as err:
        LOG.exception("decoding an upload failed outside ImageError")
        raise gr.Error(UNREADABLE, print_exception=False) from err


def classify(pixels: np.ndarray) -> dict[str, float]:
    """32x32x3 uint8 -> probability of each class (flip TTA, as the card's accuracy)."""
    row = CLASSIFIER.probabilities(torch.from_numpy(pixels[None]))[0].tolist()
    return dict(zip(CLASSIFIER.classes, row))


def predict(image: Any) -> tuple[dict[str, float] | None, str]:
    """``/predict``: one image -> (probability of each of the ten classes, unsure notice or "")."""
    source = image_source(image)
    if source is None:
        return None, ""
    probs = classify(decode(source))
    return probs, unsure_notice(probs)


def predict_live(frame: Any) -> tuple[dict[str, float], str] | dict:
    """Live tab: like :func:`predict`, but a bad or missing frame keeps the last answer quietly."""
    try:
        source = image_source(frame)
        pixels = decode(source) if source is not None else None
    except gr.Error:
        pixels = None  # one dropped webcam frame is not worth an error popup every 0.4 s
    if pixels is None:
        return gr.skip()
    probs = classify(pixels)
    return probs, unsure_notice(probs)


_CAM_LOCK = threading.Lock()  # grad_cam hooks the shared model's layer and writes its grads


def explain(image: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``/explain``: one image -> (the 32x32 input enlarged 8x, Grad-CAM of the top class over it)."""
    source = image_source(image)
    if source is None:
        return None, None
    pixels = decode(source)
    probs = classify(pixels)  # explain the class the bars show (flip TTA), not the unflipped argmax
    top = CLASSIFIER.classes.index(max(probs, key=probs.get))
    with _CAM_LOCK:
        cam = grad_cam(CLASSIFIER.model, pixels, class_index=top)
    return enlarge(pixels), heat_overlay(pixels, cam)


# ---------------------------------------------------------------------------------------------
# Pictures for the page (numpy and PIL only: no matplotlib).


def enlarge(pixels: np.ndarray, size: int = PREVIEW_SIZE) -> np.ndarray:
    """Nearest-neighbour upscale of an H x W x 3 uint8 picture to ``size`` x ``size``: every
    input pixel becomes a sharp square, so the visitor sees exactly what the network got."""
    return np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.NEAREST))


# A blue -> cyan -> yellow -> red ramp (like "jet" without its dark ends) for heat 0 -> 1.
_HEAT_STOPS = np.array([0.0, 0.33, 0.66, 1.0])
_HEAT_RGB = np.array([[0, 0, 255], [0, 255, 255], [255, 255, 0], [255, 0, 0]], dtype=np.float32)


def heat_overlay(pixels: np.ndarray, cam: np.ndarray, size: int = PREVIEW_SIZE) -> np.ndarray:
    """The enlarged picture with a Grad-CAM map (H x W floats in [0, 1]) blended over it.

    The map is resized smoothly (it is a coarse 6x6 map underneath); hot areas are covered more
    than cold ones so the picture stays readable where the model did not look.
    """
    heat = np.asarray(Image.fromarray(cam.astype(np.float32), mode="F").resize((size, size), Image.Resampling.BILINEAR))
    heat = np.clip(heat, 0.0, 1.0)
    colour = np.stack([np.interp(heat, _HEAT_STOPS, _HEAT_RGB[:, c]) for c in range(3)], axis=-1)
    alpha = (0.15 + 0.5 * heat)[..., None]
    out = (1 - alpha) * enlarge(pixels, size).astype(np.float32) + alpha * colour
    return np.clip(out, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# The page.


def _fraction(value: Any) -> float | None:
    # metrics.json may hold a fraction (0.9) or a percentage (90.0); anything else is ignored.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value / 100 if value > 1 else float(value)


def weights_panel(info: WeightsInfo) -> str:
    """Markdown: where the weights came from and their test accuracy, overall and per class,
    read from metrics.json and the model card (nothing typed in here)."""
    metrics = info.metrics if isinstance(info.metrics, dict) else {}
    acc = _fraction(metrics.get("test_accuracy"))
    if acc is None:
        acc = _fraction(info.card_accuracy)
    lines = [f"**Weights:** `{info.label}`", "",
             f"**Test accuracy:** {acc:.1%} ({metrics.get('dataset') or 'CIFAR-10 test split'})" if acc is not None
             else "**Test accuracy:** not recorded with these weights"]
    per_class = metrics.get("per_class_accuracy")
    if isinstance(per_class, dict):
        cells = [(c, _fraction(per_class.get(c))) for c in CLASSES if c in per_class]
        cells = [(c, a) for c, a in cells if a is not None]
        if cells:
            lines += ["", "| " + " | ".join(c for c, _ in cells) + " |",
                      "|" + "---|" * len(cells),
                      "| " + " | ".join(f"{a:.0%}" for _, a in cells) + " |"]
    return "\n".join(lines)


def upload_image(**kwargs: Any) -> gr.Image:
    """The main input: file, webcam snapshot or paste, passed on as a file path (see module doc)."""
    options: dict[str, Any] = dict(sources=["upload", "webcam", "clipboard"], type="filepath",
                                   image_mode=None, label="Your picture", height=320)
    return gr.Image(**(options | kwargs))


def probability_bars(**kwargs: Any) -> gr.Label:
    """All ten classes, sorted by probability."""
    return gr.Label(**({"num_top_classes": len(CLASSES), "label": "Probabilities"} | kwargs))


def example_files() -> list[str]:
    """The example pictures beside the app (real CIFAR-10 test images, three per class)."""
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "examples")
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith((".jpg", ".png")))


INTRO = """# CIFAR-10 classifier
Drop a picture, take a webcam snapshot or paste one: a small CNN trained on CIFAR-10 says which of
its ten classes it shows (airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck).
It only ever sees a **32×32** thumbnail of the picture's centre square: see *What the model sees*."""


def build_demo(info: WeightsInfo, warning: str | None = None) -> gr.Blocks:
    """The page and its events (served by the module's :data:`CLASSIFIER`, described by ``info``);
    ``warning``, if any, is shown at the top."""
    with gr.Blocks(title="CIFAR-10 classifier") as demo:
        gr.Markdown(INTRO)
        gr.Markdown(f"⚠️ {warning}", visible=bool(warning), elem_id="load-warning")
        with gr.Tab("Picture"):
            with gr.Row():
                with gr.Column():
                    image = upload_image(elem_id="picture")
                    gr.Examples([[f] for f in example_files()], inputs=[image], examples_per_page=30,
                                label="Examples: real CIFAR-10 test pictures (click one)")
                with gr.Column():
                    notice = gr.Markdown()
                    label = probability_bars(elem_id="probs")
                    with gr.Row():
                        seen = gr.Image(label="What the model sees (32×32, enlarged)", format="png",
                                        interactive=False, buttons=["fullscreen"], elem_id="seen")
                        heat = gr.Image(label="Where it looked (Grad-CAM, top class)", format="png",
                                        interactive=False, buttons=["fullscreen"], elem_id="heat")
        with gr.Tab("Live"):
            with gr.Row():
                cam = gr.Image(sources=["webcam"], streaming=True, type="filepath", image_mode=None,
                               label=f"Webcam (streams for up to {LIVE_LIMIT_S} s)", elem_id="live-cam")
                with gr.Column():
                    live_notice = gr.Markdown()
                    live_label = probability_bars(elem_id="live-probs")
        with gr.Accordion("About these weights", open=False):
            gr.Markdown(weights_panel(info), elem_id="weights-panel")

        # Any new picture (upload, snapshot, paste, example click, clear) triggers a prediction;
        # the slower pictures follow in their own event so /predict stays just the prediction.
        predicted = image.change(predict, image, [label, notice], api_name="predict", preprocess=False)
        predicted.success(explain, image, [seen, heat], api_name="explain", preprocess=False)
        predicted.failure(lambda: (None, None), None, [seen, heat], api_visibility="private")  # no stale pictures
        cam.stream(predict_live, cam, [live_label, live_notice], api_name="live", api_visibility="private",
                   preprocess=False, stream_every=LIVE_EVERY_S, time_limit=LIVE_LIMIT_S, concurrency_limit=LIVE_SESSIONS,
                   show_progress="hidden")
    return demo.queue(**QUEUE_KWARGS)


# Model loaded once at import. Command-line flags count only when run as a script: an importer
# (tests, `gradio app.py`, a Space) configures the model through MODEL_REPO / MODEL_REVISION.
ARGS = parse_args(sys.argv[1:] if __name__ == "__main__" else [])
try:
    CLASSIFIER, LOAD_WARNING = load_classifier(ARGS.model, ARGS.revision)
except ModelLoadError as err:  # even the bundled weights failed: nothing to serve
    if __name__ != "__main__":
        raise
    sys.exit(f"error: {err}")
demo = build_demo(CLASSIFIER.info, LOAD_WARNING)

if __name__ == "__main__":
    demo.launch(server_name=ARGS.host, server_port=ARGS.port, share=ARGS.share, **LAUNCH_KWARGS)
