"""The Gradio app: its handlers called as the server calls them, and the served page through
gradio_client as a visitor's script reaches it; the command line and launching. Raw-HTTP attacks are
tests/test_security.py; the page in a browser tests/test_browser.py."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import gradio as gr
import httpx
import numpy as np
import pytest
from gradio.utils import get_upload_folder
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import app
import guard
from cifar_model import CLASSES, Weights, grad_cam
from conftest import free_port

ROOT = Path(app.__file__).resolve().parent
EXAMPLES = [Path(f) for f in app.example_files()]
served = pytest.mark.served


@pytest.fixture(scope="module")
def client(served) -> Client:
    c = Client(served[1], verbose=False)
    yield c
    c.close()


@pytest.fixture
def handlers(classifier) -> app.Handlers:
    return app.Handlers(classifier)


@pytest.fixture
def uploaded():
    """Copy a picture into the upload folder (where the page's files arrive) -> its payload."""
    folder = Path(get_upload_folder()) / f"test-app-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    yield lambda path: {"path": str(shutil.copy(path, folder / Path(path).name))}
    shutil.rmtree(folder, ignore_errors=True)


def confidences(label_value: dict) -> dict[str, float]:
    return {c["label"]: c["confidence"] for c in label_value["confidences"]}


def nothing(tmp_path: Path) -> Path:
    """A picture of none of the ten classes that the unsure rule flags (checked by the caller)."""
    path = tmp_path / "grey.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(path)
    return path


# --- the handlers, as the server calls them -------------------------------------------------------


def test_predict_is_the_librarys_answer_with_the_unsure_flag_and_a_headline(handlers, classifier, uploaded, tmp_path):
    for path in (EXAMPLES[3], nothing(tmp_path)):
        expected = classifier.predict(path)
        probs, unsure, words = handlers.predict(uploaded(path))
        assert probs == expected.probabilities and unsure is expected.unsure
        assert expected.top in words and ("none of the ten" in words) is expected.unsure
    assert expected.unsure, "the grey picture must be one the rule flags"
    assert handlers.predict(None) == (None, False, "")


def test_the_unsure_headline_quotes_the_weights_own_figure(classifier, tmp_path):
    answer = classifier.predict(nothing(tmp_path))
    metrics = dataclasses.replace(classifier.weights.metrics, unsure_accuracy=0.4321)
    with_figure = app.headline(answer, dataclasses.replace(classifier.weights, metrics=metrics))
    assert "43%" in with_figure and answer.top in with_figure
    assert "%" not in app.headline(answer, dataclasses.replace(classifier.weights, metrics=None))


def test_explain_shows_the_exact_input_and_the_heatmap_of_the_class_the_bars_rank_first(handlers, classifier, uploaded):
    for path in EXAMPLES[:10:3]:
        answer = classifier.predict(path)
        seen, heat, legend = handlers.explain(uploaded(path))
        np.testing.assert_array_equal(np.asarray(Image.open(seen)), app.enlarge(answer.pixels))
        top = classifier.classes.index(answer.top)
        config = classifier.weights.config
        cam = grad_cam(classifier.weights.model, answer.pixels, top, config.mean, config.std)
        expected = app.heat_overlay(answer.pixels, cam).astype(int)
        assert np.abs(np.asarray(Image.open(heat)).astype(int) - expected).max() <= 2  # float rounding only
        assert answer.top in legend


def test_explain_after_predict_of_the_same_file_decodes_nothing_again(handlers, uploaded, monkeypatch):
    calls = []
    real = handlers.clf.predict
    monkeypatch.setattr(handlers.clf, "predict", lambda src: calls.append(src) or real(src))
    picture = uploaded(EXAMPLES[1])
    handlers.predict(picture)
    handlers.explain(picture)
    assert len(calls) == 1
    handlers.explain(uploaded(EXAMPLES[2]))  # another file: its own answer
    assert len(calls) == 2


def test_a_bad_picture_gets_the_librarys_sentence_escaped(handlers, uploaded, tmp_path):
    path = tmp_path / "text.png"
    path.write_bytes(b"<b>not a picture</b>")
    for handler in (handlers.predict, handlers.explain):
        with pytest.raises(gr.Error) as err:
            handler(uploaded(path))
        assert "not a picture we can read" in err.value.message and "<b>" not in err.value.message


def test_a_decoder_crash_gets_a_generic_sentence_and_the_log_gets_the_trace(handlers, uploaded, monkeypatch, caplog):
    monkeypatch.setattr(handlers.clf, "predict", lambda src: 1 / 0)
    with pytest.raises(gr.Error) as err:
        handlers.predict(uploaded(EXAMPLES[0]))
    assert err.value.message == app.UNREADABLE and "ZeroDivisionError" in caplog.text


def test_the_server_live_path_skips_bad_frames_quietly(handlers):
    skip = gr.skip()
    for frame in (None, {"url": "data:image/jpeg;base64,not-base64!"}, {"path": "/etc/passwd"},
                  {"url": "data:image/jpeg;base64," + base64.b64encode(b"junk").decode()}):
        assert handlers.predict_live(frame) == skip
    buf = io.BytesIO()
    Image.open(EXAMPLES[6]).save(buf, "JPEG")
    probs, words = handlers.predict_live({"url": "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()})
    assert set(probs) == set(CLASSES) and max(probs, key=probs.get) in words


def test_the_about_panel_says_the_weights_figures_in_plain_words_as_text(classifier):
    m = classifier.weights.metrics
    panel = app.weights_panel(classifier.weights)
    assert f"{m.test_accuracy:.1%}" in panel and f"{m.test_images:,}" in panel
    assert all(f"<td>{c}</td>" in panel for c in CLASSES) and "ECE" not in panel
    assert sum(int(n) for n, _, _ in m.reliability) == m.test_images
    assert panel.count("<tr>") >= sum(1 for n, _, _ in m.reliability if n) + len(CLASSES)
    hostile = dataclasses.replace(classifier.weights, source="<script>x</script>", metrics=None,
                                  warning="metrics.json ignored: <b>bad</b>")
    shown = app.weights_panel(hostile)
    assert "<script>" not in shown and "&lt;b&gt;bad&lt;/b&gt;" in shown and "No test figures" in shown


def test_the_examples_first_page_is_one_per_class_in_class_order() -> None:
    first = [p.stem.rpartition("_")[0] for p in EXAMPLES[:10]]
    assert first == list(CLASSES)
    assert sorted(p.stem.rpartition("_")[0] for p in EXAMPLES) == sorted(CLASSES * 3)


def test_the_live_tab_serves_only_its_files(classifier, monkeypatch, tmp_path) -> None:
    files = app.live_files(classifier.weights)
    assert files["model.onnx"] == classifier.weights.folder / "model.onnx"
    assert {"live.js", "resize.js"} <= set(files) and all(p.is_file() for p in files.values())
    without = dataclasses.replace(classifier.weights, config=dataclasses.replace(classifier.weights.config,
                                                                                 onnx_sha256=None))
    assert "model.onnx" not in app.live_files(without)  # a file the config doesn't vouch for is not served
    monkeypatch.setattr(app, "ORT_DIR", tmp_path)
    markup = app.live_markup(classifier.weights, app.live_files(classifier.weights))
    assert app.ORT_CDN in markup and app.ORT_FILES["ort-wasm-simd-threaded.wasm"] in markup  # a CDN: pinned, SRI


# --- served, through gradio_client ----------------------------------------------------------------


@served
def test_predict_over_the_api_gives_all_ten_classes_the_flag_and_words(client, classifier, tmp_path):
    for path in (*EXAMPLES[:10], nothing(tmp_path)):
        expected = classifier.predict(path)
        label, unsure, words = client.predict(handle_file(str(path)), api_name="/predict")
        assert confidences(label) == pytest.approx(expected.probabilities, abs=1e-6)
        assert label["label"] == expected.top and unsure is expected.unsure and expected.top in words
    right = sum(client.predict(handle_file(str(p)), api_name="/predict")[0]["label"] == p.stem.rpartition("_")[0]
                for p in EXAMPLES[:10])
    assert right >= 8


@served
def test_explain_over_the_api_returns_pictures_and_a_legend(client, classifier):
    seen, heat, legend = client.predict(handle_file(str(EXAMPLES[8])), api_name="/explain")
    px = np.asarray(Image.open(seen).convert("RGB"))
    np.testing.assert_array_equal(px[::app.PREVIEW_SIZE // 32, ::app.PREVIEW_SIZE // 32],
                                  classifier.predict(EXAMPLES[8]).pixels)
    assert Path(heat).is_file() and "red" in legend


@served
def test_a_bad_file_and_an_oversize_file_are_refused_and_the_page_goes_on(client, served, tmp_path):
    bad = tmp_path / "text.png"
    bad.write_bytes(b"this is not a picture\n")
    with pytest.raises(AppError, match="not a picture we can read"):
        client.predict(handle_file(str(bad)), api_name="/predict")
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff\xd8" + bytes(11 * 1024 * 1024))
    with big.open("rb") as f:
        try:
            files = [("files", ("big.jpg", f))]
            status = httpx.post(served[1] + "gradio_api/upload", files=files, timeout=30).status_code
        except httpx.WriteError:  # refused from its headers, then closed while the body was still being sent
            status = 413
    assert status == 413
    assert client.predict(handle_file(str(EXAMPLES[0])), api_name="/predict")[0]["label"] == "airplane"


@served
def test_the_live_files_are_served_read_only_and_nothing_else(served):
    url = served[1]
    js = httpx.get(url + "live/live.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert httpx.get(url + "live/model.onnx").content == (ROOT / "weights" / "model.onnx").read_bytes()
    for path in ("live/app.py", "live/../app.py", "live/config.json", "live/"):
        assert httpx.get(url + path).status_code == 404
    assert httpx.post(url + "live/live.js").status_code == 404


# --- the command line and launching ------------------------------------------------------------


@served  # a Python process of its own
def test_importing_app_does_nothing(tmp_path):
    env = os.environ | {"MODEL_REPO": "/nonexistent", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT)}
    code = ("import cifar_model.classifier as c, cifar_model.weights as w\n"
            "def refuse(*a, **k): raise SystemExit('loaded weights at import')\n"
            "c.load = w.load = w.resolve = c.Classifier.from_pretrained = refuse\n"
            "import app\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_flags_and_environment(monkeypatch):
    for name in ("MODEL_REPO", "MODEL_REVISION", "KEEP_UPLOADS_S"):
        monkeypatch.delenv(name, raising=False)
    args = app.parse_args([])
    assert (args.model, args.revision, args.share, args.keep_uploads) == (None, None, False, app.KEEP_UPLOADS_S)
    monkeypatch.setenv("MODEL_REPO", "env/repo")
    monkeypatch.setenv("MODEL_REVISION", "abc1234")
    monkeypatch.setenv("KEEP_UPLOADS_S", "60")
    assert vars(app.parse_args([])) == {"model": "env/repo", "revision": "abc1234", "keep_uploads": 60,
                                             "share": False, "host": None, "port": None}
    args = app.parse_args(["--model", "o/n", "--share", "--port", "7999", "--host", "0.0.0.0", "--keep-uploads", "9"])
    assert (args.model, args.share, args.port, args.host, args.keep_uploads) == ("o/n", True, 7999, "0.0.0.0", 9)


def test_main_falls_back_to_the_bundled_weights_and_launches_guarded(monkeypatch, tmp_path, capsys):
    launched = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: launched.update(kw, demo=self))
    monkeypatch.delenv("GRADIO_MCP_SERVER", raising=False)
    app.main(["--model", str(tmp_path / "missing"), "--port", "7999"])
    demo = launched.pop("demo")
    assert launched["server_port"] == 7999 and launched["max_file_size"] == app.MAX_FILE_SIZE
    assert launched["show_error"] is False and launched["mcp_server"] is True and launched["run_history"] is False
    assert [m.cls for m in launched["app_kwargs"]["middleware"]] == [guard.Guard]
    assert demo._queue.max_size == app.QUEUE_KWARGS["max_size"] and demo.api_open is False
    page = json.dumps(demo.get_config_file())
    assert f"Could not load the weights {tmp_path / 'missing'}" in page and "bundled weights instead" in page
    assert str(tmp_path) not in page.replace(f"Could not load the weights {tmp_path / 'missing'}", "")
    assert "Serving the bundled weights instead" in capsys.readouterr().err


@served
def test_an_unreachable_hub_serves_the_bundled_weights_and_says_so(tmp_path):
    port, closed = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "GRADIO_", "MODEL_"))}
    env |= {"MODEL_REPO": "nobody/unreachable", "HF_ENDPOINT": f"http://127.0.0.1:{closed}",
            "HF_HOME": str(tmp_path / "hf"), "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_MCP_SERVER": "False"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, config = time.monotonic() + 90, None
        while config is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                config = httpx.get(f"http://127.0.0.1:{port}/config", timeout=2).json()
            except (httpx.HTTPError, ValueError):
                time.sleep(0.25)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert config is not None, out
    page = json.dumps(config)
    assert "bundled weights/" in page and "Could not load the weights nobody/unreachable" in page


def test_weights_without_metrics_still_serve_a_page(classifier):
    bare = Weights(classifier.weights.model, classifier.weights.config)
    demo = app.build_demo(app.Classifier(bare))
    assert "No test figures" in json.dumps(demo.get_config_file())
