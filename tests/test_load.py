"""Faults a busy or hostile visitor can cause, against the app served in this process.

* a request beyond the queue's ``max_size`` is refused at once with gradio_client's queue-full
  error, and the server answers again afterwards;
* an internal error in the prediction reaches the visitor as a generic message, never its text or
  traceback;
* the file routes serve the example gallery and the visitor's own upload, nothing else.

The app is a fresh :func:`app.build_demo` over the bundled weights (app.py's events, queue and
launch settings) on a free port of 127.0.0.1. The Hub-unreachable fallback is tests/test_app.py's
``test_unreachable_hub_serves_bundled_weights_and_says_so``; attacks with raw requests are
tests/test_security.py; the sustained-load benchmark is benchmarks/load.py.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import httpx
import pytest
from gradio.utils import get_upload_folder
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from gradio_client.utils import QueueError

import app
from conftest import serve, wait_until

ROOT = Path(app.__file__).resolve().parent
CAT = ROOT / "examples" / "cat_1.jpg"
WORKERS, MAX_SIZE = app.QUEUE_KWARGS["default_concurrency_limit"], app.QUEUE_KWARGS["max_size"]
SECRET = "internal detail 7f3a in /srv/secret/weights.bin"


@pytest.fixture(scope="module")
def served(classifier):
    """(demo, url): app.py's page served from this process, with the repo as working directory
    (as ``python app.py`` runs), so relative file paths point at the repo's files."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        demo = app.build_demo(classifier)
        with serve(demo) as url:
            yield demo, url


@pytest.fixture(scope="module")
def client(served) -> Client:
    c = Client(served[1], verbose=False, max_workers=WORKERS + (MAX_SIZE or 0) + 8)
    yield c
    c.close()


@pytest.fixture
def fresh_cat(tmp_path) -> Path:
    """The cat picture under a name of its own: the app remembers what it computed for a file it
    has seen (for /explain), so a test that needs the network to run sends a file it hasn't."""
    path = tmp_path / f"cat-{uuid.uuid4().hex[:12]}.jpg"
    shutil.copy(CAT, path)
    return path


def top_class(classifier, path: Path) -> str:
    probs = classifier.predict([str(path)])[0]
    return max(probs, key=probs.get)


def assert_answers(client: Client, classifier) -> None:
    label, _ = client.predict(handle_file(str(CAT)), api_name="/predict")
    assert label["label"] == top_class(classifier, CAT)


# --- a full queue ----------------------------------------------------------------------------


def test_request_beyond_the_queue_is_refused_at_once_and_the_server_recovers(served, client, classifier,
                                                                              monkeypatch, tmp_path):
    assert MAX_SIZE, "an unbounded queue never refuses anyone: waiting visitors pile up"
    demo, _ = served
    gate, running = threading.Event(), []
    real = classifier.logits

    def held(pixels):  # every prediction waits for the gate: the workers stay busy, the queue fills
        running.append(1)
        gate.wait(timeout=30)
        return real(pixels)

    monkeypatch.setattr(classifier, "logits", held)
    # Files of their own, each once: a file the app has seen is answered from memory, not held.
    cats = []
    for i in range(WORKERS + MAX_SIZE + 1):
        cats.append(tmp_path / f"cat-{i}-{uuid.uuid4().hex[:8]}.jpg")
        shutil.copy(CAT, cats[-1])
    try:
        jobs = [client.submit(handle_file(str(path)), api_name="/predict") for path in cats[:-1]]
        wait_until(lambda: len(running) == WORKERS and len(demo._queue) == MAX_SIZE, what="a full queue")
        t0 = time.perf_counter()
        with pytest.raises(QueueError, match="Queue is full"):
            client.submit(handle_file(str(cats[-1])), api_name="/predict").result(timeout=10)
        refused_in = time.perf_counter() - t0
    finally:
        gate.set()
    assert refused_in < 2.0, f"the queue-full answer took {refused_in:.1f} s"
    expected = top_class(classifier, CAT)
    assert [job.result(timeout=30)[0]["label"] for job in jobs] == [expected] * len(jobs)  # none lost
    assert_answers(client, classifier)


# --- an internal error -------------------------------------------------------------------------


def test_internal_error_shows_a_generic_message_and_no_traceback(served, client, classifier, monkeypatch,
                                                                  capfd, fresh_cat):
    def broken(pixels):
        raise RuntimeError(SECRET)

    monkeypatch.setattr(classifier, "logits", broken)
    with pytest.raises(AppError) as err:
        client.predict(handle_file(str(fresh_cat)), api_name="/predict")
    # What a browser gets: the raw event stream of the same call.
    url = served[1]
    with fresh_cat.open("rb") as f:
        uploaded = httpx.post(url + "gradio_api/upload", files=[("files", (fresh_cat.name, f))]).json()[0]
    payload = {"data": [{"path": uploaded, "meta": {"_type": "gradio.FileData"}}]}
    event = httpx.post(url + "gradio_api/call/predict", json=payload)
    stream = httpx.get(url + f"gradio_api/call/predict/{event.json()['event_id']}", timeout=20).text
    for shown in (str(err.value), stream):
        assert SECRET not in shown and "Traceback" not in shown and "RuntimeError" not in shown
        assert "app.py" not in shown and str(ROOT) not in shown
    assert "event: error" in stream
    assert SECRET in capfd.readouterr().err  # ...while the server's own log keeps the traceback
    monkeypatch.undo()
    assert_answers(client, classifier)


# --- the file routes ---------------------------------------------------------------------------


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def refused_paths(port: int) -> list[str]:
    uploads = get_upload_folder()
    loopback = f"http://127.0.0.1:{port}/config"
    return [
        "/gradio_api/file=/etc/passwd",
        "/gradio_api/file=%2Fetc%2Fpasswd",
        "/gradio_api/file=app.py",
        f"/gradio_api/file={ROOT}/app.py",
        "/gradio_api/file=weights/model.safetensors",
        f"/gradio_api/file={ROOT}/weights/model.safetensors",
        f"/gradio_api/file={ROOT}/.git/config",
        f"/gradio_api/file={ROOT}/tests/hostile.py",
        "/gradio_api/file/etc/passwd",  # the deprecated /file/ form
        f"/gradio_api/file/{ROOT}/app.py",
        "/file=/etc/passwd",  # the Gradio 3 forms, without the API prefix
        "/file=app.py",
        f"/file/{ROOT}/app.py",
        # path traversal, out of the working directory and out of the upload folder it may serve
        "/gradio_api/file=..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/gradio_api/file=%2e%2e%2fapp.py",
        f"/gradio_api/file={uploads}/..%2f..%2f..%2fetc%2fpasswd",
        f"/gradio_api/file={uploads}/../../../etc/passwd",
        f"/gradio_api/file={uploads}/..%2f..%2f..%2f..%2f{ROOT}%2fapp.py",
        f"/gradio_api/file={uploads}",  # a folder: no listing
        "/static/..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/assets/..%2f..%2f..%2fapp.py",
        "/assets/%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        # the server fetching URLs for the visitor: not for loopback (SSRF)
        f"/gradio_api/file={loopback}",
        f"/gradio_api/proxy={loopback}",
    ]


def test_file_routes_refuse_everything_the_app_does_not_need(served):
    url = served[1].rstrip("/")
    port = int(url.rsplit(":", 1)[1])
    served_instead = {}
    for path in refused_paths(port):
        status, body = get(url + path)
        if not 400 <= status < 500 or b"root:" in body or b"import gradio" in body:
            served_instead[path] = (status, body[:60])
    assert not served_instead, served_instead


def test_file_routes_serve_the_gallery_and_the_visitors_upload(served):
    url = served[1]
    status, page = get(url)
    assert status == 200 and b"<html" in page.lower()
    config = json.loads(get(url + "config")[1])
    gallery = {Path(u).name: u for u in _urls(config) if "/gradio_api/file=" in u}
    examples = {p.name: p for p in (ROOT / "examples").glob("*.jpg")}
    diagram = gallery.pop("image.png")  # the weights panel's reliability diagram, drawn from weights/
    assert get(diagram)[1].startswith(b"\x89PNG")
    assert set(gallery) == set(examples)  # every example, served from Gradio's cache
    for name, file_url in gallery.items():
        assert get(file_url) == (200, examples[name].read_bytes()), name
    with CAT.open("rb") as f:  # the page shows a visitor's upload back from the server
        uploaded = httpx.post(url + "gradio_api/upload", files=[("files", ("mine.jpg", f))]).json()[0]
    assert get(url + f"gradio_api/file={uploaded}") == (200, CAT.read_bytes())


def _urls(node) -> list[str]:
    if isinstance(node, dict):
        own = [node["url"]] if isinstance(node.get("url"), str) else []
        return own + [u for v in node.values() for u in _urls(v)]
    if isinstance(node, list):
        return [u for v in node for u in _urls(v)]
    return []
