"""The Gradio app, through its API as a visitor's browser or gradio_client reaches it.

CPU only and offline: the page is :func:`app.build_demo` over the bundled weights (conftest's
``served``), launched in this process on a free port and called with gradio_client; the handlers are
also called directly where a test needs to see inside. Two tests start a Python process: importing
app.py must do nothing, and ``python app.py`` with the Hub unreachable serves the bundled weights.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import uuid
import zlib
from pathlib import Path

import gradio as gr
import httpx
import numpy as np
import pytest
import torch
from gradio.utils import get_upload_folder
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import app
from cifar_model import CLASSES, ImageError, Metrics, WeightsInfo, grad_cam
from conftest import free_port

ROOT = Path(app.__file__).resolve().parent
EXAMPLES = sorted((ROOT / "examples").glob("*.jpg"))


@pytest.fixture(scope="module")
def url(served) -> str:
    return served[1]


def _client(url: str):
    c = Client(url, verbose=False)
    yield c
    c.close()


@pytest.fixture(scope="module")
def client(url) -> Client:
    yield from _client(url)


@pytest.fixture
def fresh_client(url) -> Client:
    """A client of its own: a new browser session, with no state from other tests."""
    yield from _client(url)


@pytest.fixture
def handlers(classifier) -> app.Handlers:
    return app.Handlers(classifier)


@pytest.fixture
def uploaded(tmp_path):
    """Copy a picture into Gradio's upload folder (where the page's files arrive) -> its payload."""
    folder = Path(get_upload_folder()) / f"test-app-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)

    def upload(path: Path) -> dict:
        return {"path": str(shutil.copy(path, folder / path.name))}

    yield upload
    shutil.rmtree(folder, ignore_errors=True)


def confidences(label_value: dict) -> dict[str, float]:
    """gr.Label's API value -> {class: probability}."""
    return {c["label"]: c["confidence"] for c in label_value["confidences"]}


def assert_answers(client: Client) -> None:
    label, _ = client.predict(handle_file(str(EXAMPLES[0])), api_name="/predict")
    assert set(confidences(label)) == set(CLASSES)


def probabilities(top: float, cls: str = "cat") -> dict[str, float]:
    """``top`` for ``cls``, the rest shared equally."""
    rest = (1 - top) / (len(CLASSES) - 1)
    return {c: (top if c == cls else rest) for c in CLASSES}


# --- importing, the command line, launching ------------------------------------------------------


def test_importing_app_does_nothing(tmp_path):
    # A Space or a test imports app.py: nothing may load, print or start. MODEL_REPO names a folder
    # that doesn't exist, so loading it at import would at least print a warning; and every way to
    # load weights is replaced by one that exits loudly, so a silent load fails the test too.
    env = os.environ | {"MODEL_REPO": "/nonexistent", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT)}
    code = ("import cifar_model.classifier as c, cifar_model.weights as w\n"
            "def refuse(*a, **k): raise SystemExit('loaded weights at import')\n"
            "c.load = w.load = w.resolve = c.Classifier.from_pretrained = refuse\n"
            "import app\n"
            "assert not [k for k, v in vars(app).items() if isinstance(v, (c.Classifier, app.gr.Blocks))]\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_cli_flags_and_environment(monkeypatch):
    for name in ("MODEL_REPO", "MODEL_REVISION", "KEEP_UPLOADS_S"):
        monkeypatch.delenv(name, raising=False)
    args = app.parse_args([])
    assert (args.model, args.revision, args.share, args.port, args.host) == (None, None, False, None, None)
    assert args.keep_uploads == app.KEEP_UPLOADS_S
    monkeypatch.setenv("MODEL_REPO", "env/repo")
    monkeypatch.setenv("MODEL_REVISION", "abc1234")
    monkeypatch.setenv("KEEP_UPLOADS_S", "60")
    args = app.parse_args([])
    assert (args.model, args.revision, args.keep_uploads) == ("env/repo", "abc1234", 60)
    args = app.parse_args(["--model", "owner/name", "--revision", "v1", "--share", "--port", "7999",
                           "--host", "0.0.0.0", "--keep-uploads", "120"])
    assert (args.model, args.revision, args.share, args.port, args.host, args.keep_uploads) == (
        "owner/name", "v1", True, 7999, "0.0.0.0", 120)


def test_main_loads_builds_and_launches_with_the_limits(monkeypatch, tmp_path, capsys):
    launched = {}

    def launch(self, **kwargs):
        launched.update(kwargs, demo=self)

    monkeypatch.setattr(gr.Blocks, "launch", launch)
    app.main(["--model", str(tmp_path / "missing"), "--keep-uploads", "600", "--port", "7999"])
    demo = launched.pop("demo")
    assert launched["server_port"] == 7999 and launched["share"] is False
    assert launched["max_file_size"] == app.MAX_FILE_SIZE and launched["show_error"] is False
    assert [m.cls for m in launched["app_kwargs"]["middleware"]] == [app.RequestLimits]
    assert demo.delete_cache == (300, 600)
    assert demo._queue.max_size == app.QUEUE_KWARGS["max_size"] > 0
    page = json.dumps(demo.get_config_file())
    assert f"Could not load the weights {tmp_path / 'missing'}" in page and "bundled weights instead" in page
    assert "Serving the bundled weights instead" in capsys.readouterr().err


def test_unreachable_hub_serves_bundled_weights_and_says_so(tmp_path):
    port, closed = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "GRADIO_", "MODEL_"))}
    env |= {"MODEL_REPO": "nobody/unreachable", "HF_ENDPOINT": f"http://127.0.0.1:{closed}",
            "HF_HOME": str(tmp_path / "hf"), "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        config = _wait_for_config(f"http://127.0.0.1:{port}/", proc)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    page = json.dumps(config)
    assert "bundled weights/" in page, out
    assert "Could not load the weights nobody/unreachable" in page and "bundled weights instead" in page


def _wait_for_config(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"app.py exited with {proc.returncode}: {proc.stdout.read()}")
        try:
            return httpx.get(url + "config", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            time.sleep(0.25)
    pytest.fail(f"app.py did not answer within {timeout} s")


# --- the happy path ------------------------------------------------------------------------------


def test_predict_gives_all_ten_classes_summing_to_one(client):
    label, notice = client.predict(handle_file(str(ROOT / "examples" / "cat_1.jpg")), api_name="/predict")
    probs = confidences(label)
    assert set(probs) == set(CLASSES)
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
    assert label["label"] == max(probs, key=probs.get)
    assert isinstance(notice, str)


def test_predict_matches_library_and_true_class_on_examples(client, classifier):
    # The app must answer exactly what the library answers, and (real weights) mostly the truth.
    expected = classifier.predict([str(p) for p in EXAMPLES])
    right = 0
    for path, lib in zip(EXAMPLES, expected):
        label, _ = client.predict(handle_file(str(path)), api_name="/predict")
        probs = confidences(label)
        assert label["label"] == max(lib, key=lib.get), path.name
        assert probs == pytest.approx(lib, abs=1e-5)
        right += label["label"] == path.stem.rsplit("_", 1)[0]
    assert right >= 0.8 * len(EXAMPLES), f"only {right}/{len(EXAMPLES)} examples classified right"


def test_explain_shows_the_exact_32x32_input_and_a_heatmap(client, classifier):
    path = ROOT / "examples" / "ship_1.jpg"
    seen, heat = client.predict(handle_file(str(path)), api_name="/explain")
    seen_px, heat_px = np.asarray(Image.open(seen).convert("RGB")), np.asarray(Image.open(heat).convert("RGB"))
    assert seen_px.shape == heat_px.shape == (app.PREVIEW_SIZE, app.PREVIEW_SIZE, 3)
    step = app.PREVIEW_SIZE // 32  # nearest-neighbour upscale: every 8th pixel is the input's
    np.testing.assert_array_equal(seen_px[::step, ::step], classifier.to_uint8(path))
    assert not np.array_equal(seen_px, heat_px)


def test_explain_heatmap_is_the_top_class(handlers, classifier, uploaded):
    # The heatmap is labelled "top class": it must be Grad-CAM of the class the bars rank first,
    # not of the network's own argmax in another precision nor of some fixed class.
    differs = 0
    for path in EXAMPLES[::3]:
        pixels = classifier.to_uint8(path)
        probs, _ = handlers.classify(pixels)
        order = sorted(range(len(CLASSES)), key=lambda i: probs[CLASSES[i]])
        seen, heat = (np.asarray(Image.open(f)) for f in handlers.explain(uploaded(path)))
        np.testing.assert_array_equal(seen, app.enlarge(pixels))
        top = app.heat_overlay(pixels, grad_cam(classifier.model, pixels, class_index=order[-1]))
        np.testing.assert_allclose(heat.astype(int), top.astype(int), atol=1)
        least = app.heat_overlay(pixels, grad_cam(classifier.model, pixels, class_index=order[0]))
        differs += np.abs(least.astype(int) - top.astype(int)).max() > 8
    assert differs == len(EXAMPLES[::3])  # on these pictures the two classes' maps differ


def test_explain_pictures_are_written_once_and_never_rewritten(handlers, uploaded):
    # A browser may still be fetching the picture a first /explain made when a second /explain of the
    # same picture returns the same file: rewriting it in place made the server send a file that
    # changed size mid-response (h11: "Too much data for declared Content-Length").
    first = handlers.explain(uploaded(EXAMPLES[0]))
    before = [(os.stat(f).st_ino, os.stat(f).st_mtime_ns, Path(f).read_bytes()) for f in first]
    second = handlers.explain(uploaded(EXAMPLES[0]))
    assert second == first
    assert [(os.stat(f).st_ino, os.stat(f).st_mtime_ns, Path(f).read_bytes()) for f in second] == before
    assert all(Path(f).read_bytes().startswith(b"\x89PNG") and f in handlers.opened for f in first)


def test_explain_in_the_page_reuses_what_predict_computed(fresh_client, monkeypatch, tmp_path):
    # The page runs /explain right after /predict on the same file: the picture is decoded and
    # classified once, not twice. (A file of its own: one another test sent is remembered already.)
    path = tmp_path / f"dog-{uuid.uuid4().hex[:8]}.jpg"
    shutil.copy(ROOT / "examples" / "dog_1.jpg", path)
    decoded, classified = [], []
    real_decode, real_classify = app.Handlers.decode, app.Handlers.classify
    monkeypatch.setattr(app.Handlers, "decode", lambda self, src: decoded.append(src) or real_decode(self, src))
    monkeypatch.setattr(app.Handlers, "classify", lambda self, px: classified.append(1) or real_classify(self, px))
    picture = handle_file(str(path))
    fresh_client.predict(picture, api_name="/predict")
    seen, heat = fresh_client.predict(picture, api_name="/explain")
    assert len(decoded) == 1 and len(classified) == 1
    assert Path(seen).is_file() and Path(heat).is_file()


def test_explain_alone_explains_the_picture_it_is_given(fresh_client, classifier):
    # /explain called alone (the API, an MCP agent) after a /predict of another picture in the same
    # session must explain the new picture, not the state /predict left behind.
    fresh_client.predict(handle_file(str(ROOT / "examples" / "cat_1.jpg")), api_name="/predict")
    frog = ROOT / "examples" / "frog_2.jpg"
    seen, _ = fresh_client.predict(handle_file(str(frog)), api_name="/explain")
    step = app.PREVIEW_SIZE // 32
    seen_px = np.asarray(Image.open(seen).convert("RGB"))
    np.testing.assert_array_equal(seen_px[::step, ::step], classifier.to_uint8(frog))


def test_examples_cover_every_class_at_least_twice():
    names = [p.stem.rsplit("_", 1)[0] for p in map(Path, app.example_files())]
    assert all(names.count(c) >= 2 for c in CLASSES)


# --- bad input -------------------------------------------------------------------------------


def _png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height (a decompression bomb's first bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


BAD_FILES = {
    "text.png": lambda: b"this is not a picture\n",
    "empty.png": lambda: b"",
    "truncated.jpg": lambda: (ROOT / "examples" / "cat_1.jpg").read_bytes()[:300],
    "bomb.png": lambda: _png_header(11_000, 10_000),  # 110 Mpx declared, a few bytes of data
    "huge-bomb.png": lambda: _png_header(40_000, 40_000),  # past Pillow's own bomb limit too
}


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # bomb.png, decoded here too
@pytest.mark.parametrize("name", BAD_FILES)
def test_bad_file_gets_the_decoders_readable_message(client, classifier, tmp_path, name):
    path = tmp_path / name
    path.write_bytes(BAD_FILES[name]())
    with pytest.raises(ImageError) as expected:  # the library's sentence for this file...
        classifier.to_uint8(path)
    for endpoint in ("/predict", "/explain"):  # ...is what the page shows, from both events
        with pytest.raises(AppError) as err:
            client.predict(handle_file(str(path)), api_name=endpoint)
        assert str(err.value) == html.escape(str(expected.value))
    assert_answers(client)


def test_oversize_upload_is_refused(client, url, tmp_path):
    path = tmp_path / "big.jpg"
    path.write_bytes(b"\xff\xd8" + bytes(11 * 1024 * 1024))  # over MAX_FILE_SIZE (10 MB)
    with pytest.raises(ValueError, match="maximum file size"):  # gradio_client checks first
        client.predict(handle_file(str(path)), api_name="/predict")
    with path.open("rb") as f:  # and the server refuses it too, for any other client
        try:
            reply = httpx.post(url + "gradio_api/upload", files=[("files", ("big.jpg", f))], timeout=30)
        except httpx.WriteError:  # refused from its headers, then closed while the body was still being sent
            reply = None
    assert reply is None or reply.status_code == 413
    assert_answers(client)


def test_live_stream_skips_bad_frames_quietly(handlers, uploaded):
    skip = gr.skip()
    assert handlers.predict_live(None) == skip
    assert handlers.predict_live({"url": "data:image/jpeg;base64,not-base64!"}) == skip
    assert handlers.predict_live({"url": "data:image/jpeg;base64," + base64.b64encode(b"junk").decode()}) == skip
    assert handlers.predict_live({"path": "/etc/passwd"}) == skip  # outside the upload folder
    buf = io.BytesIO()
    Image.open(ROOT / "examples" / "frog_1.jpg").save(buf, "JPEG")
    frame = {"url": "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()}
    probs, notice = handlers.predict_live(frame)
    assert set(probs) == set(CLASSES) and isinstance(notice, str)
    probs, _ = handlers.predict_live(uploaded(ROOT / "examples" / "frog_1.jpg"))
    assert set(probs) == set(CLASSES)


def test_queue_is_bounded(served):
    demo, _ = served
    assert demo._queue.max_size == app.QUEUE_KWARGS["max_size"] > 0


# --- the unsure notice, the weights panel ----------------------------------------------------


def test_unsure_notice_says_what_it_means_only_when_the_rule_fires():
    notice = app.unsure_notice(probabilities(0.45), True)
    assert "unsure" in notice and "*cat*" in notice and "half the time" in notice
    assert app.unsure_notice(probabilities(0.45), False) == ""


def test_unsure_notice_reaches_the_page_for_pictures_of_nothing_only(client, tmp_path):
    # Flat grey and noise show none of the ten classes: the visitor is told. Clear CIFAR-10 pictures
    # of each class (the shipped weights get them right at over 85%) get no notice.
    rng = np.random.default_rng(0)
    for name, pixels in (("grey", np.full((64, 64, 3), 128, np.uint8)),
                         ("noise", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))):
        Image.fromarray(pixels).save(tmp_path / f"{name}.png")
        _, notice = client.predict(handle_file(str(tmp_path / f"{name}.png")), api_name="/predict")
        assert "unsure" in notice, name
    for path in sorted((ROOT / "examples").glob("*_1.jpg")):
        label, notice = client.predict(handle_file(str(path)), api_name="/predict")
        assert label["label"] == path.stem.split("_")[0] and notice == "", path.name


def test_weights_panel_reads_metrics():
    bundled = Metrics.load(ROOT / "weights" / "metrics.json")
    metrics = dataclasses.replace(bundled, test_accuracy=0.9012, per_class_accuracy={c: 0.5 for c in CLASSES})
    panel = app.weights_panel(WeightsInfo("bundled", ROOT / "weights", metrics=metrics))
    assert "bundled weights/" in panel and "90.1%" in panel and panel.count("50%") == len(CLASSES)
    assert f"{metrics.test_images:,}" in panel and html.escape(metrics.dataset) in panel
    pinned = app.weights_panel(WeightsInfo("o/n", ROOT, revision="a" * 40))
    assert "o/n@aaaaaaa" in pinned and "not recorded" in pinned
    warned = app.weights_panel(WeightsInfo("o/n", ROOT, warning="metrics.json ignored: test_accuracy: <b>bad</b>"))
    assert "metrics.json ignored: test_accuracy: &lt;b&gt;bad&lt;/b&gt;" in warned and "not recorded" in warned
