"""Attacks on the served app, sent the way an attacker sends them: plain HTTP, not gradio_client.

gradio_client adds ``meta: {"_type": "gradio.FileData"}`` to every file payload, and Gradio checks
that a payload lies in its upload folder only when ``meta`` is there; with ``preprocess=False`` a
bare ``{"path": ...}`` reaches app.py's handlers as whatever path the sender chose. So these tests
read the page's /config for each event's ``fn_index``, POST the raw JSON to
``/gradio_api/queue/join`` and read the answer from the event stream ``/gradio_api/queue/data``.

* file payloads: any path outside Gradio's upload folder (a secret, a real picture, a missing file,
  ``../``, a symlink, a relative path, a URL) gets the same one sentence from /predict and /explain,
  and nothing from the live event, without a byte of it being decoded; a file inside the folder, and
  an example click, work;
* request bodies: over the limit is answered 413 before the body is read (declared or chunked), a
  full cache answers uploads 507, and visitors' files are deleted after ``keep_uploads_s``;
* the MCP server's base64 pictures, which Gradio saves into the cache itself, obey the same retention
  and cache budget;
* hostile weights folders (a Hub repo is anyone's): each is refused or costs only its figures,
  quickly, and the page stays up and shows any text from the folder escaped.

Everything runs offline on 127.0.0.1, in this process, in well under a minute.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import json
import os
import shutil
import socket
import time
import tracemalloc
import urllib.parse
import uuid
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio.utils import get_upload_folder
from gradio_client import Client, handle_file
from PIL import Image
from starlette.middleware import Middleware

import app
from cifar_model import CLASSES
from conftest import serve, wait_until

pytestmark = pytest.mark.timeout(60)

ROOT = Path(app.__file__).resolve().parent
CAT = ROOT / "examples" / "cat_1.jpg"  # a real picture outside the upload folder
UPLOADS = Path(get_upload_folder())
# What a skipped live frame looks like on the wire: no change to either output.
SKIPPED = [{"__type__": "update"}, {"__type__": "update"}]


# ---------------------------------------------------------------------------------------------
# Talking to the queue with raw JSON.


@functools.cache
def fn_index(url: str, api_name: str) -> int:
    """The ``fn_index`` of the event named ``api_name``, as the page's /config lists it."""
    config = httpx.get(url + "config", timeout=10).json()
    return next(d["id"] for d in config["dependencies"] if d.get("api_name") == api_name)


def call(url: str, api_name: str, payload, *, session_hash: str | None = None, chunked: bool = False,
         timeout: float = 20.0) -> dict:
    """POST ``[payload]`` to the queue for the event ``api_name`` and return its ``process_completed``
    message. A streaming event (the live tab) is closed after its first answer, as a browser does
    when the visitor stops the webcam. Fails the test after ``timeout`` seconds."""
    session_hash = session_hash or uuid.uuid4().hex
    body = json.dumps({"data": [payload], "fn_index": fn_index(url, api_name), "session_hash": session_hash,
                       "event_data": None, "trigger_id": None}).encode()
    content = iter([body[i:i + 1000] for i in range(0, len(body), 1000)]) if chunked else body
    joined = httpx.post(url + "gradio_api/queue/join", content=content, timeout=timeout,
                        headers={"content-type": "application/json"})
    assert joined.status_code == 200, joined.text
    deadline = time.monotonic() + timeout
    with httpx.stream("GET", url + "gradio_api/queue/data", params={"session_hash": session_hash},
                      timeout=timeout) as stream:
        for line in stream.iter_lines():
            if time.monotonic() > deadline:
                break
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            if message.get("msg") == "process_streaming":
                httpx.post(url + f"gradio_api/stream/{message['event_id']}/close", timeout=timeout)
            elif message.get("msg") == "process_completed":
                return message
    pytest.fail(f"no answer from {api_name} within {timeout} s")


def error(message: dict) -> str | None:
    """The error text of a failed event (``None``: it succeeded)."""
    return None if message["success"] else message["output"].get("error")


def confidences(label_value: dict) -> dict[str, float]:
    return {c["label"]: c["confidence"] for c in label_value["confidences"]}


@pytest.fixture
def in_uploads() -> Iterator[Path]:
    """A fresh folder inside Gradio's upload folder, removed afterwards."""
    folder = UPLOADS / f"test-security-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def decodes(monkeypatch) -> list:
    """Every source app.py hands to the decoder while the test runs."""
    calls: list = []
    real = app.Handlers.decode

    def counting(self, source):
        calls.append(source)
        return real(self, source)

    monkeypatch.setattr(app.Handlers, "decode", counting)
    return calls


# ---------------------------------------------------------------------------------------------
# File payloads: only Gradio's upload folder.


def outside_payloads(folder: Path, port: int) -> dict[str, object]:
    """Bare payloads naming files outside the upload folder; ``folder`` lies inside it."""
    to_cat = os.path.relpath(CAT, UPLOADS)  # ../../work/main/examples/cat_1.jpg or the like
    (folder / "link.jpg").symlink_to(CAT)  # a link inside the folder to a picture outside it
    (folder / "link-secret").symlink_to("/etc/passwd")
    return {
        "secret": {"path": "/etc/passwd"},
        "picture": {"path": str(CAT)},  # opening it would give a prediction: the check, not the decoder, refuses
        "missing": {"path": "/nonexistent/token"},
        "traversal": {"path": f"{UPLOADS}/../../../etc/passwd"},
        "traversal-to-picture": {"path": f"{UPLOADS}/{to_cat}"},
        "relative": {"path": "examples/cat_1.jpg"},
        "relative-traversal": {"path": f"{folder.name}/../../../etc/passwd"},
        "symlink-to-picture": {"path": str(folder / "link.jpg")},
        "symlink-to-secret": {"path": str(folder / "link-secret")},
        "nul-byte": {"path": f"{folder}/x.jpg\0/etc/passwd"},
        "file-url": {"url": "file:///etc/passwd"},
        "loopback-url": {"url": f"http://127.0.0.1:{port}/config"},
    }


def test_paths_outside_the_upload_folder_get_one_sentence_and_no_picture(served, in_uploads, decodes):
    url = served[1]
    payloads = outside_payloads(in_uploads, urllib.parse.urlsplit(url).port)
    jobs = [(name, api_name) for name in payloads for api_name in ("predict", "explain", "live")]
    with ThreadPoolExecutor(4) as pool:  # independent visitors, each with its own session
        replies = dict(zip(jobs, pool.map(lambda job: call(url, job[1], payloads[job[0]]), jobs)))
    answers = {}
    for (name, api_name), message in replies.items():
        if api_name == "live":  # a dropped frame, quietly
            assert message["success"] and message["output"]["data"] == SKIPPED, (name, message)
        else:
            assert "data" not in message["output"], (name, api_name, message)  # no bars, no picture
            answers[name, api_name] = error(message)
    # The same sentence, whether the file exists, is a picture, a secret or nothing at all.
    assert set(answers.values()) == {app.REFUSED}, answers
    assert decodes == []  # not one of them reached the decoder


def test_a_bare_string_payload_never_reaches_the_handlers(served, decodes):
    # Gradio validates the payload as image data before app.py sees it: a string path (or a list
    # of them) is an error without a message, the same for an existing file and a missing one.
    url = served[1]
    answers = set()
    for path in ("/etc/passwd", str(CAT), "/nonexistent/token"):
        for api_name, payload in (("predict", path), ("explain", path), ("live", path), ("predict", {"path": [path]})):
            message = call(url, api_name, payload)
            assert not message["success"] and "data" not in message["output"], (path, api_name)
            answers.add(json.dumps(message["output"]))
    assert len(answers) == 1 and "root:" not in answers.pop()
    assert decodes == []


def test_gradios_own_check_refuses_outside_paths_sent_with_meta(served, decodes):
    # gradio_client's form (with meta): Gradio itself refuses, the same for a file that exists.
    url = served[1]
    answers = set()
    for path in ("/etc/passwd", str(CAT), "/nonexistent/token"):
        message = call(url, "predict", {"path": path, "meta": {"_type": "gradio.FileData"}})
        assert not message["success"] and "data" not in message["output"]
        answers.add(error(message))
    assert len(answers) == 1
    assert decodes == []


def test_a_file_inside_the_upload_folder_works_bare(served, in_uploads, classifier, decodes):
    # The check refuses what is outside, not everything: the same picture copied inside is classified.
    url = served[1]
    inside = {"path": str(shutil.copy(CAT, in_uploads / "cat.jpg"))}
    expected = classifier.predict(str(CAT))[0]
    predicted = call(url, "predict", inside)
    assert predicted["success"], predicted
    probs = confidences(predicted["output"]["data"][0])
    assert probs == pytest.approx(expected, abs=1e-5)
    explained = call(url, "explain", inside)
    assert explained["success"] and len(explained["output"]["data"]) == 2
    assert all(Path(picture["path"]).is_file() for picture in explained["output"]["data"])
    live = call(url, "live", inside)
    assert confidences(live["output"]["data"][0]) == pytest.approx(expected, abs=1e-5)
    assert decodes and set(decodes) == {inside["path"]}  # the file as sent, nothing else


def test_an_example_click_works(served, classifier):
    url = served[1]
    config = httpx.get(url + "config", timeout=10).json()
    examples = [d for d in _file_datas(config) if "/gradio_api/file=" in d["url"]]
    assert {Path(f).name for f in app.example_files()} <= {Path(d["path"]).name for d in examples}
    clicked = next(d for d in examples if Path(d["path"]).name == "ship_1.jpg")
    assert Path(clicked["path"]).is_relative_to(UPLOADS)  # the examples' cached copies
    expected = classifier.predict(str(ROOT / "examples" / "ship_1.jpg"))[0]
    # What the browser sends when the visitor clicks the example: its cached file, with meta.
    message = call(url, "predict", clicked)
    assert message["success"] and confidences(message["output"]["data"][0]) == pytest.approx(expected, abs=1e-5)
    # And through gradio_client, the cached file itself.
    client = Client(url, verbose=False)
    try:
        label, _ = client.predict(handle_file(clicked["path"]), api_name="/predict")
    finally:
        client.close()
    assert confidences(label) == pytest.approx(expected, abs=1e-5)


def _file_datas(node) -> list[dict]:
    if isinstance(node, dict):
        own = [node] if isinstance(node.get("url"), str) and isinstance(node.get("path"), str) else []
        return own + [d for v in node.values() for d in _file_datas(v)]
    if isinstance(node, list):
        return [d for v in node for d in _file_datas(v)]
    return []


# ---------------------------------------------------------------------------------------------
# Request bodies: refused by size before they are read.


def raw_post(url: str, path: str, headers: dict[str, str], body: Iterable[bytes],
             timeout: float = 5.0) -> tuple[int, str]:
    """Send a POST by hand: the headers, then ``body`` piece by piece (stopping early if the server
    closes), and return the status and body of the answer, which must come within ``timeout``
    seconds of the last piece sent: a server waiting for the rest of the body fails the test."""
    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        head = f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        sock.sendall((head + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode())
        for piece in body:
            try:
                sock.sendall(piece)
            except OSError:  # the server answered and closed: fine, read its answer
                break
        reply = b""
        try:
            while b"\r\n\r\n" not in reply:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
            head_bytes, _, rest = reply.partition(b"\r\n\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in head_bytes.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            while len(rest) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
        except TimeoutError:
            pytest.fail(f"no answer within {timeout} s: the server is waiting for the rest of the body")
    return int(head_bytes.split(b" ", 2)[1]), rest.decode(errors="replace")


def test_a_30mb_json_body_is_refused_413_before_it_is_read(served):
    # The headers promise 30 MB; only 64 KB follow. A server that read the body would wait forever.
    status, text = raw_post(served[1], "/gradio_api/queue/join",
                            {"Content-Type": "application/json", "Content-Length": str(30_000_000)}, [b" " * 65536])
    assert status == 413 and "too large" in text


def test_a_chunked_body_over_the_limit_is_refused_413_without_waiting_for_its_end(served):
    piece = b" " * 65536
    chunks = [b"%x\r\n%s\r\n" % (len(piece), piece)] * (app.MAX_BODY_BYTES // len(piece) + 2)  # and no last chunk
    status, text = raw_post(served[1], "/gradio_api/queue/join",
                            {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}, chunks)
    assert status == 413 and "too large" in text


def test_a_chunked_body_under_the_limit_reaches_the_app_intact(served, in_uploads):
    # The middleware reads a chunked body to count it: it must hand every byte on.
    inside = {"path": str(shutil.copy(CAT, in_uploads / "cat.jpg"))}
    message = call(served[1], "predict", inside, chunked=True)
    assert message["success"] and set(confidences(message["output"]["data"][0])) == set(CLASSES)


def test_a_lying_content_length_is_refused(served):
    status, _ = raw_post(served[1], "/gradio_api/queue/join",
                         {"Content-Type": "application/json", "Content-Length": "+5"}, [b"{}"])
    assert 400 <= status < 500


def test_uploads_up_to_the_file_limit_are_accepted_and_larger_ones_are_413(served, tmp_path):
    url = served[1]
    path = tmp_path / "three.jpg"
    path.write_bytes(b"\xff\xd8" + os.urandom(3 * 1024 * 1024))
    with path.open("rb") as f:
        reply = httpx.post(url + "gradio_api/upload", files=[("files", ("three.jpg", f))], timeout=30)
    assert reply.status_code == 200, reply.text
    stored = Path(reply.json()[0])
    assert stored.is_relative_to(UPLOADS) and stored.stat().st_size == path.stat().st_size
    # 11 MB declared, 64 KB sent: refused from the headers alone.
    headers = {"Content-Type": "multipart/form-data; boundary=x", "Content-Length": str(11 * 1024 * 1024)}
    status, text = raw_post(url, "/gradio_api/upload", headers, [b"--x\r\n" + b" " * 65536])
    assert status == 413 and "too large" in text


def test_uploads_are_refused_507_while_the_cache_is_over_budget(classifier, in_uploads, tmp_path):
    # The server path for real: app.py's middleware, with a budget the cache (the examples alone)
    # already exceeds, in front of a served page.
    (in_uploads / "filler.bin").write_bytes(bytes(4096))
    tiny = Middleware(app.RequestLimits, cache_budget=1024)
    with serve(app.build_demo(classifier), app_kwargs={"middleware": [tiny]}) as url:
        path = tmp_path / "cat.jpg"
        shutil.copy(CAT, path)
        with path.open("rb") as f:
            reply = httpx.post(url + "gradio_api/upload", files=[("files", ("cat.jpg", f))], timeout=10)
        assert reply.status_code == 507 and "full" in reply.text
        # Classifying what is already there still works: only new files are refused.
        inside = {"path": str(shutil.copy(CAT, in_uploads / "cat.jpg"))}
        assert call(url, "predict", inside)["success"]


def test_cache_budget_counts_the_upload_folder(in_uploads):
    # The same middleware called directly: under budget an upload goes through, over it is 507.
    import asyncio

    async def inner(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    def status(limits: app.RequestLimits) -> int:
        sent = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/gradio_api/upload", "headers": [(b"content-length", b"0")]}
        asyncio.run(limits(scope, receive, send))
        return sent[0]["status"]

    size = asyncio.run(app.RequestLimits(inner).cache_size())
    (in_uploads / "filler.bin").write_bytes(bytes(100_000))
    assert status(app.RequestLimits(inner, cache_budget=size + 10_000_000)) == 200
    assert status(app.RequestLimits(inner, cache_budget=size + 50_000)) == 507


# ---------------------------------------------------------------------------------------------
# Retention: visitors' pictures are deleted.


def test_uploads_and_the_pictures_made_from_them_are_deleted(classifier, tmp_path):
    rng = np.random.default_rng(20240611)  # a picture no other test uploads (uploads are stored by content)
    name = f"retention-{uuid.uuid4().hex[:8]}.png"
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / name)
    with serve(app.build_demo(classifier, keep_uploads_s=2)) as url:
        client = Client(url, verbose=False)
        try:
            client.predict(handle_file(str(tmp_path / name)), api_name="/predict")
        finally:
            client.close()
        uploaded = list(UPLOADS.rglob(name))
        assert len(uploaded) == 1 and uploaded[0].is_file()
        explained = call(url, "explain", {"path": str(uploaded[0])})
        made = [Path(picture["path"]) for picture in explained["output"]["data"]]
        assert len(made) == 2 and all(p.is_file() and p.is_relative_to(UPLOADS) for p in made)
        wait_until(lambda: not any(p.exists() for p in [uploaded[0], *made]), timeout=6.0,
                   what="the upload and the pictures made from it to be deleted")


# ---------------------------------------------------------------------------------------------
# The MCP server: the same files, the same limits.


def _mcp_predict(url: str, image: str):
    """Call the ``predict`` tool as an agent does; the tool's result, or the exception the client raised."""
    import asyncio

    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def go():
        async with streamable_http_client(url + "gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await session.call_tool("predict", {"image": image})

    try:
        return asyncio.run(go())
    except BaseException as err:  # an HTTP refusal surfaces as an exception group from the client's task group
        if isinstance(err, (KeyboardInterrupt, SystemExit)):
            raise
        return err


def _unique_png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _copies_of(data: bytes) -> list[Path]:
    """Files in the upload folder holding exactly ``data`` (other processes may share the folder)."""
    return [p for p in UPLOADS.rglob("*") if p.is_file() and p.stat().st_size == len(data) and p.read_bytes() == data]


def test_an_agents_base64_picture_is_deleted_like_an_upload(classifier):
    data = _unique_png(31337)
    try:
        with serve(app.build_demo(classifier, keep_uploads_s=2), mcp_server=True) as url:
            result = _mcp_predict(url, "data:image/png;base64," + base64.b64encode(data).decode())
            assert not isinstance(result, BaseException) and not result.isError, result
            assert _copies_of(data), "the tool was answered without the picture reaching the cache"
            wait_until(lambda: not _copies_of(data), timeout=6.0, what="the agent's picture to be deleted")
    finally:
        for path in _copies_of(data):  # don't leave what the bug keeps behind
            path.unlink(missing_ok=True)


def test_an_agents_base64_picture_is_refused_while_the_cache_is_over_budget(classifier):
    data = _unique_png(4242)
    tiny = Middleware(app.RequestLimits, cache_budget=1024)
    with serve(app.build_demo(classifier), mcp_server=True, app_kwargs={"middleware": [tiny]}) as url:
        result = _mcp_predict(url, "data:image/png;base64," + base64.b64encode(data).decode())
        stored = _copies_of(data)
    for path in stored:
        path.unlink(missing_ok=True)
    assert not stored, f"written to the full cache: {stored}"
    assert isinstance(result, BaseException) or result.isError


# ---------------------------------------------------------------------------------------------
# Hostile weights folders.

HTML_DATASET = "![x](http://evil/pixel.png) <img src=x onerror=alert(1)>"


def weights_folder(tmp_path: Path, config: dict | None = None, metrics: str | None = None,
                   readme: str | None = None, config_text: str | None = None) -> Path:
    """A copy of weights/ (the tensors linked, not copied) with config.json, metrics.json or the
    card replaced."""
    folder = tmp_path / "weights"
    folder.mkdir()
    for name in ("config.json", "metrics.json", "README.md"):
        shutil.copy(app.HERE / "weights" / name, folder / name)
    (folder / "model.safetensors").symlink_to(app.HERE / "weights" / "model.safetensors")
    if config is not None or config_text is not None:
        base = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(config_text if config_text is not None else json.dumps(base | config))
    if metrics is not None:
        (folder / "metrics.json").write_text(metrics)
    if readme is not None:
        (folder / "README.md").write_text(readme)
    return folder


def metrics_with(**fields) -> str:
    return json.dumps(json.loads((app.HERE / "weights" / "metrics.json").read_text()) | fields)


def three_hundred_thousand_classes() -> str:
    base = json.loads((app.HERE / "weights" / "config.json").read_text())
    return json.dumps(base | {"classes": [f"class{i}" for i in range(300_000)]})


# name -> (what to write, what must happen): "ok" (the folder's weights, no warning), "fallback"
# (the bundled weights, a warning naming config.json and the field), "figures" (the folder's
# weights, its metrics.json ignored with a warning on the page).
HOSTILE = {
    "card-broken-yaml": ({"readme": "---\nmodel-index: [{name: [\nmetrics:\n  - accuracy: ninety-one\n---\n"}, "ok"),
    "std-zeros": ({"config": {"std": [0, 0, 0]}}, ("fallback", "std")),
    "mean-string": ({"config": {"mean": "0.5"}}, ("fallback", "mean")),
    "classes-identical": ({"config": {"classes": ["cat"] * 10}}, ("fallback", "classes")),
    "classes-300000": ({"config_text": None}, ("fallback", None)),  # filled in by the test (3 MB of text)
    "metrics-html-dataset": ({"metrics": metrics_with(dataset=HTML_DATASET)}, "ok"),
    "metrics-not-json": ({"metrics": '{"test_accuracy": 0.9, '}, ("figures", "not a readable JSON")),
    "metrics-percent": ({"metrics": metrics_with(test_accuracy="91%")}, ("figures", "test_accuracy")),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_weights_folder(case, tmp_path, in_uploads, capsys):
    edits, outcome = HOSTILE[case]
    if case == "classes-300000":
        edits = {"config_text": three_hundred_thousand_classes()}
    folder = weights_folder(tmp_path, **edits)
    tracemalloc.start()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a bad metrics.json is also a Python warning
        classifier, warning = app.load_classifier(str(folder))
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert seconds < 10 and peak < 50_000_000, (seconds, peak)  # no tensor built from what the file claims
    info = classifier.info
    if outcome == "ok":
        assert warning is None and info.source == str(folder) and info.warning is None
    elif outcome[0] == "fallback":
        assert info.source == "bundled" and classifier.classes == list(CLASSES)
        assert warning.startswith(f"Could not load the weights {folder}") and "config.json" in warning
        assert "bundled weights instead" in warning
        if outcome[1]:
            assert f"field '{outcome[1]}'" in warning
        assert "Serving the bundled weights instead" in capsys.readouterr().err
    else:
        assert warning is None and info.source == str(folder) and info.metrics is None
        assert info.warning and "metrics.json" in info.warning and outcome[1] in info.warning
    # The page shows what the folder says as text, and the warning, and still classifies.
    panel = app.weights_panel(info)
    assert "<img" not in panel
    if case == "metrics-html-dataset":
        assert "&lt;img src=x onerror=alert(1)&gt;" in panel and "![x](http://evil/pixel.png)" in panel
    if info.warning:
        assert html.escape(info.warning) in panel
    with serve(app.build_demo(classifier, warning)) as url:
        page = json.dumps(httpx.get(url + "config", timeout=10).json()) + httpx.get(url, timeout=10).text
        assert "<img src=x" not in page and "onerror=alert(1)>" not in page
        if warning:
            assert html.escape(warning) in page
        if info.warning:
            assert html.escape(info.warning) in page
        message = call(url, "predict", {"path": str(shutil.copy(CAT, in_uploads / "cat.jpg"))})
    assert message["success"], message
    probs = confidences(message["output"]["data"][0])
    assert len(probs) == len(classifier.classes) and all(np.isfinite(p) and 0 <= p <= 1 for p in probs.values())
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-4)


def test_a_bad_config_names_the_file_and_the_field(tmp_path):
    from cifar_model import ModelLoadError
    from cifar_model.weights import load

    folder = weights_folder(tmp_path, config={"std": [0.2, 0, 0.2]})
    with pytest.raises(ModelLoadError) as err:
        load(folder)
    assert str(folder / "config.json") in str(err.value) and "'std'" in str(err.value)
