"""The Gradio app, through its API as a visitor's browser or gradio_client reaches it.

CPU only and offline: the app is launched in this process on a free port and called with
gradio_client; the Hub-fallback test starts ``python app.py`` with the Hub pointed at a closed port.
The model is whatever app.py loads (MODEL_REPO, else the bundled weights/).
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import app
from cifar_model import CLASSES, ImageError

ROOT = Path(app.__file__).resolve().parent
EXAMPLES = sorted((ROOT / "examples").glob("*.jpg"))


@pytest.fixture(scope="module")
def url(free_port):
    _, local_url, _ = app.demo.launch(prevent_thread_lock=True, server_name="127.0.0.1",
                                      server_port=free_port(), quiet=True, **app.LAUNCH_KWARGS)
    yield local_url
    app.demo.close()


@pytest.fixture(scope="module")
def client(url) -> Client:
    return Client(url, verbose=False)


def confidences(label_value: dict) -> dict[str, float]:
    """gr.Label's API value -> {class: probability}."""
    return {c["label"]: c["confidence"] for c in label_value["confidences"]}


def assert_answers(client: Client) -> None:
    label, _ = client.predict(handle_file(str(EXAMPLES[0])), api_name="/predict")
    assert set(confidences(label)) == set(CLASSES)


# --- the happy path ------------------------------------------------------------------------------


def test_predict_gives_all_ten_classes_summing_to_one(client):
    label, notice = client.predict(handle_file(str(ROOT / "examples" / "cat_1.jpg")), api_name="/predict")
    probs = confidences(label)
    assert set(probs) == set(CLASSES)
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
    assert label["label"] == max(probs, key=probs.get)
    assert isinstance(notice, str)


def test_predict_matches_library_and_true_class_on_examples(client):
    # The app must answer exactly what the library answers, and (real weights) mostly the truth.
    expected = app.CLASSIFIER.predict([str(p) for p in EXAMPLES])
    right = 0
    for path, lib in zip(EXAMPLES, expected):
        label, _ = client.predict(handle_file(str(path)), api_name="/predict")
        probs = confidences(label)
        assert label["label"] == max(lib, key=lib.get), path.name
        assert probs == pytest.approx(lib, abs=1e-5)
        right += label["label"] == path.stem.rsplit("_", 1)[0]
    assert right >= 0.8 * len(EXAMPLES), f"only {right}/{len(EXAMPLES)} examples classified right"


def test_explain_shows_the_exact_32x32_input_and_a_heatmap(client):
    path = ROOT / "examples" / "ship_1.jpg"
    seen, heat = client.predict(handle_file(str(path)), api_name="/explain")
    seen_px, heat_px = np.asarray(Image.open(seen).convert("RGB")), np.asarray(Image.open(heat).convert("RGB"))
    assert seen_px.shape == heat_px.shape == (app.PREVIEW_SIZE, app.PREVIEW_SIZE, 3)
    step = app.PREVIEW_SIZE // 32  # nearest-neighbour upscale: every 8th pixel is the input's
    np.testing.assert_array_equal(seen_px[::step, ::step], app.CLASSIFIER.to_uint8(path))
    assert not np.array_equal(seen_px, heat_px)


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


@pytest.mark.parametrize("name", BAD_FILES)
def test_bad_file_gets_the_decoders_readable_message(client, tmp_path, name):
    path = tmp_path / name
    path.write_bytes(BAD_FILES[name]())
    with pytest.raises(ImageError) as expected:  # the library's sentence for this file...
        app.CLASSIFIER.to_uint8(path)
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
        reply = httpx.post(url + "gradio_api/upload", files=[("files", ("big.jpg", f))])
    assert reply.status_code == 413
    assert_answers(client)


def test_live_stream_skips_bad_frames_quietly():
    skip = app.gr.skip()
    assert app.predict_live(None) == skip
    assert app.predict_live({"url": "data:image/jpeg;base64,not-base64!"}) == skip
    assert app.predict_live({"url": "data:image/jpeg;base64," + base64.b64encode(b"junk").decode()}) == skip
    buf = io.BytesIO()
    Image.open(ROOT / "examples" / "frog_1.jpg").save(buf, "JPEG")
    probs, notice = app.predict_live({"url": "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()})
    assert set(probs) == set(CLASSES) and isinstance(notice, str)


def test_queue_is_bounded():
    assert app.demo._queue.max_size == app.QUEUE_KWARGS["max_size"] > 0


# --- the unsure notice, the weights panel, the command line ----------------------------------


def test_unsure_notice_fires_below_the_threshold_only():
    def probs(top: float) -> dict[str, float]:
        rest = (1 - top) / (len(CLASSES) - 1)
        return {c: (top if c == "cat" else rest) for c in CLASSES}

    assert "unsure" in app.unsure_notice(probs(app.UNSURE_BELOW - 0.01))
    assert app.unsure_notice(probs(app.UNSURE_BELOW)) == ""


def test_weights_panel_reads_metrics_and_card():
    info = app.WeightsInfo("bundled", ROOT / "weights", metrics={
        "test_accuracy": 0.9012, "per_class_accuracy": {c: 0.5 for c in CLASSES}})
    panel = app.weights_panel(info)
    assert "bundled weights/" in panel and "90.1%" in panel and panel.count("50%") == len(CLASSES)
    assert "87.0%" in app.weights_panel(app.WeightsInfo("o/n", ROOT, revision="a" * 40, card_accuracy=0.87))
    bare = app.weights_panel(app.WeightsInfo("o/n", ROOT, metrics={"test_accuracy": "n/a"}))
    assert "not recorded" in bare


def test_cli_flags_and_environment(monkeypatch):
    monkeypatch.delenv("MODEL_REPO", raising=False)
    monkeypatch.delenv("MODEL_REVISION", raising=False)
    args = app.parse_args([])
    assert (args.model, args.revision, args.share, args.port, args.host) == (None, None, False, None, None)
    monkeypatch.setenv("MODEL_REPO", "env/repo")
    monkeypatch.setenv("MODEL_REVISION", "abc1234")
    assert (app.parse_args([]).model, app.parse_args([]).revision) == ("env/repo", "abc1234")
    args = app.parse_args(["--model", "owner/name", "--revision", "v1", "--share", "--port", "7999", "--host", "0.0.0.0"])
    assert (args.model, args.revision, args.share, args.port, args.host) == ("owner/name", "v1", True, 7999, "0.0.0.0")


def test_unreachable_hub_serves_bundled_weights_and_says_so(tmp_path, free_port):
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


def _wait_for_config(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"app.py exited with {proc.returncode}: {proc.stdout.read()}")
        try:
            return httpx.get(url + "config", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            time.sleep(0.25)
    pytest.fail("app.py did not answer within a minute")
