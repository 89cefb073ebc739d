"""The served app attacked the way anyone on the internet can reach it: raw HTTP and JSON, not
gradio_client (which adds the ``meta`` Gradio's own path check relies on).

Files: a path outside the upload folder gets one sentence and nothing is decoded; a URL is never
fetched, whatever route names it. Bodies and uploads: limits answered before reading, one file per
upload, no stray files. Fairness: one client's excess gets 429, not everyone's next request; a silent
live stream ends. Retention: every file in the upload folder goes after its time. The slow attacks (a
flood measured against a visitor's latency) are in ``python -m benchmarks.server attacks``.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from gradio.utils import get_upload_folder

import app
import guard
from conftest import serve, wait_until
from tests.support import call, fn_index

pytestmark = [pytest.mark.served, pytest.mark.timeout(120)]
ROOT = Path(app.__file__).resolve().parent
CAT = ROOT / "examples" / "cat_1.jpg"  # a real picture outside the upload folder
UPLOADS = Path(get_upload_folder())
SKIPPED = [{"__type__": "update"}, {"__type__": "update"}]  # a live frame dropped quietly


@pytest.fixture
def in_uploads():
    folder = UPLOADS / f"test-security-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def decodes(classifier, monkeypatch) -> list:
    """Every source the handlers hand to the library while the test runs."""
    calls: list = []
    real = classifier.predict
    monkeypatch.setattr(classifier, "predict", lambda source: calls.append(source) or real(source))
    return calls


@pytest.fixture
def listener():
    """A web server on 127.0.0.1 standing in for a large file on the Hub; it counts the requests it gets."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"\xff\xd8" + bytes(1_000_000))

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/big.jpg", hits
    server.shutdown()


def test_paths_outside_the_upload_folder_get_one_sentence_and_nothing_is_decoded(served, in_uploads, decodes):
    url = served[1]
    (in_uploads / "link.jpg").symlink_to(CAT)
    (in_uploads / "link-secret").symlink_to("/etc/passwd")
    paths = ("/etc/passwd", str(CAT), "/nonexistent/token", f"{UPLOADS}/../../../etc/passwd", "examples/cat_1.jpg",
             str(in_uploads / "link.jpg"), str(in_uploads / "link-secret"), f"{in_uploads}/x.jpg\0/etc/passwd")
    payloads = [{"path": p} for p in paths] + [{"url": "file:///etc/passwd"}]
    jobs = [(p, api) for p in payloads for api in ("predict", "explain", "live")]
    with ThreadPoolExecutor(2) as pool:
        replies = list(pool.map(lambda job: call(url, job[1], job[0]), jobs))
    errors = set()
    for (payload, api), message in zip(jobs, replies):
        if api == "live":
            assert message["success"] and message["output"]["data"] == SKIPPED, payload
        else:
            assert "data" not in message["output"], (payload, api)
            errors.add(message["output"].get("error"))
    assert errors == {guard.REFUSED}  # the same sentence, whether the file exists, is a picture or a secret
    assert decodes == []


def test_a_file_in_the_upload_folder_and_an_example_click_work_bare(served, in_uploads, classifier):
    url = served[1]
    picture = str(shutil.copy(CAT, in_uploads / "cat.jpg"))
    message = call(url, "predict", {"path": picture})
    assert message["success"] and message["output"]["data"][0]["label"] == classifier.predict(CAT).top
    # An example click: the page asks the examples' loader (outside the queue) for the file, then predicts.
    clicked = httpx.post(url + "gradio_api/run/predict", json={"data": [0], "fn_index": fn_index(url, "load_example"),
                                                               "session_hash": "x"})
    assert clicked.status_code == 200, clicked.text
    path = clicked.json()["data"][0]["value"]["path"]  # an update of the picture component
    assert call(url, "predict", {"path": path, "meta": {"_type": "gradio.FileData"}})["success"]


def test_a_data_url_is_taken_from_the_live_stream_only(served):
    frame = {"url": "data:image/jpeg;base64," + __import__("base64").b64encode(CAT.read_bytes()).decode()}
    assert call(served[1], "predict", frame)["output"]["error"] == guard.REFUSED
    assert call(served[1], "live", frame)["output"]["data"][0]["label"] == "cat"


def test_a_url_is_never_fetched_whatever_names_it(served, listener, monkeypatch):
    from gradio import processing_utils

    monkeypatch.setattr(processing_utils, "PUBLIC_HOSTNAME_WHITELIST", [*processing_utils.PUBLIC_HOSTNAME_WHITELIST,
                                                                        "127.0.0.1"])  # as the Hub would be
    target, hits = listener
    url = served[1]
    payload = {"path": target, "url": target, "meta": {"_type": "gradio.FileData"}}
    for route, body in (("gradio_api/queue/join", {"data": [payload], "fn_index": fn_index(url, "predict"),
                                                   "session_hash": "s"}),
                        ("gradio_api/run/predict", {"data": [payload], "fn_index": 0, "session_hash": "s"}),
                        ("gradio_api/stream/anything", {"data": [payload], "fn_index": 0, "session_hash": "s"})):
        reply = httpx.post(url + route, json=body)
        assert reply.status_code == 422 and "URL" in reply.json()["detail"], route
    assert httpx.get(url + f"gradio_api/file={target}").status_code == 404  # the file route proxies nothing
    with pytest.raises(Exception, match="URL"):  # and Gradio's own downloader refuses, behind all that
        __import__("asyncio").run(processing_utils.async_ssrf_protected_download(target, "/tmp"))
    assert hits == []


@pytest.mark.parametrize("route", ["gradio_api/process_recording", "gradio_api/deep_link?session_hash=x",
                                   "gradio_api/call/predict", "gradio_api/dev/reload"])
def test_routes_this_app_never_uses_are_closed(served, route):
    assert httpx.post(served[1] + route).status_code == 404
    assert httpx.get(served[1] + route).status_code == 404


def test_bodies_over_the_limit_are_refused_before_they_are_read(served):
    url = served[1]  # (that the rest of a chunked body is never read: tests/test_guard.py)
    chunked = (b"x" * (1 << 20) for _ in range(31))  # 31 MB, a megabyte at a time, no declared length
    reply = httpx.post(url + "gradio_api/queue/join", content=chunked, headers={"content-type": "application/json"})
    assert reply.status_code == 413 and str(guard.MAX_BODY_BYTES // 1024) in reply.json()["detail"]
    host, port = url.split("//")[1].rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:  # a length declared, nothing sent
        s.sendall(b"POST /gradio_api/queue/join HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 413")


def test_an_upload_is_one_file_and_refusals_leave_no_file_behind(served, tmp_path):
    url, before = served[1], set(UPLOADS.iterdir())
    ok = httpx.post(url + "gradio_api/upload", files=[("files", ("cat.jpg", CAT.read_bytes()))])
    assert ok.status_code == 200 and Path(ok.json()[0]).read_bytes() == CAT.read_bytes()
    made = set(UPLOADS.iterdir()) - before
    refused = [httpx.post(url + "gradio_api/upload", files=[("files", ("a.jpg", b"a")), ("files", ("b.jpg", b"b"))]),
               httpx.post(url + "gradio_api/upload", data={"files": "a plain field"}),
               httpx.post(url + "gradio_api/upload", files=[("other", ("a.jpg", b"a"))]),
               httpx.post(url + "gradio_api/upload", files=[("files", ("..", b"a"))])]
    assert [r.status_code for r in refused] == [400] * 4, [r.text for r in refused]
    assert set(UPLOADS.iterdir()) - before == made  # nothing stray in the folder


def test_one_client_gets_429_past_its_share_and_others_are_served(classifier, monkeypatch):
    release = threading.Event()
    real = classifier.predict
    monkeypatch.setattr(classifier, "predict", lambda source: release.wait(30) and real(source))
    demo = app.build_demo(classifier)
    with serve(demo) as url:
        body = {"data": [None], "fn_index": fn_index(url, "predict"), "session_hash": "flood"}
        picture = httpx.post(url + "gradio_api/upload", files=[("files", ("cat.jpg", CAT.read_bytes()))]).json()[0]
        body["data"] = [{"path": picture}]
        statuses = [httpx.post(url + "gradio_api/queue/join", json=body).status_code
                    for _ in range(guard.MAX_EVENTS + 2)]
        assert statuses == [200] * guard.MAX_EVENTS + [429, 429]
        reply = httpx.post(url + "gradio_api/queue/join", json=body)
        assert reply.status_code == 429 and str(guard.MAX_EVENTS) in reply.json()["detail"]
        release.set()
        wait_until(lambda: not demo._queue.event_ids_to_events, what="the flood's events to end")
        assert httpx.post(url + "gradio_api/queue/join", json=body).status_code == 200


def test_a_live_stream_that_stops_sending_frames_ends(served):
    url = served[1]
    frame = {"url": "data:image/jpeg;base64," + __import__("base64").b64encode(CAT.read_bytes()).decode()}
    started = time.monotonic()
    message = call(url, "live", frame, close_streams=False, timeout=guard.LIVE_IDLE_S + 15)
    assert message["msg"] == "process_completed" and time.monotonic() - started < guard.LIVE_IDLE_S + 10


def test_every_file_in_the_upload_folder_goes_after_its_time(classifier, in_uploads):
    stray = in_uploads / "file.png"  # e.g. the copy Gradio's MCP server saves of an agent's picture
    stray.write_bytes(b"x")
    demo = app.build_demo(classifier)
    with serve(demo, keep_uploads_s=2) as url:
        upload = Path(httpx.post(url + "gradio_api/upload", files=[("files", ("c.jpg", CAT.read_bytes()))]).json()[0])
        seen, heat, _ = call(url, "explain", {"path": str(upload)})["output"]["data"]
        made = [upload, Path(seen["path"]), Path(heat["path"])]
        assert all(p.is_file() for p in made)
        wait_until(lambda: not any(p.exists() for p in [*made, stray]), timeout=15, what="the files to go")
        again = httpx.post(url + "gradio_api/upload", files=[("files", ("c.jpg", CAT.read_bytes()))]).json()[0]
        assert call(url, "predict", {"path": again})["success"]


def test_each_refusal_is_one_log_line(served, caplog):
    with caplog.at_level("WARNING", logger="guard"):
        httpx.post(served[1] + "gradio_api/queue/join", json={"data": [{"path": "https://example.com/x.png"}],
                                                              "fn_index": 1, "session_hash": "s"})
    lines = [r for r in caplog.records if r.name == "guard"]
    assert len(lines) == 1 and "422" in lines[0].getMessage() and lines[0].exc_info is None


def test_a_full_queue_refuses_at_once_and_loses_no_one(classifier, monkeypatch):
    gate, running = threading.Event(), []
    real = classifier.predict
    monkeypatch.setattr(classifier, "predict", lambda src: running.append(1) or (gate.wait(30) and real(src)))
    demo = app.build_demo(classifier)
    workers, size = app.QUEUE_KWARGS["default_concurrency_limit"], app.QUEUE_KWARGS["max_size"]
    with serve(demo) as url:
        paths = [httpx.post(url + "gradio_api/upload", files=[("files", (f"{i}.jpg", CAT.read_bytes() + bytes([i])))]
                            ).json()[0] for i in range(workers + size + 1)]

        def visit(i):  # a visitor of its own address: the share per client is not what is tested here
            return call(url, "predict", {"path": paths[i]}, timeout=60)

        monkeypatch.setattr(guard, "client_key", lambda scope: f"visitor-{id(scope)}")
        with ThreadPoolExecutor(workers + size) as pool:
            jobs = [pool.submit(visit, i) for i in range(workers + size)]
            wait_until(lambda: len(running) == workers and len(demo._queue) == size, what="a full queue")
            started = time.monotonic()
            with pytest.raises(RuntimeError, match="503"):
                visit(workers + size)
            assert time.monotonic() - started < 2
            gate.set()
            assert all(job.result()["success"] for job in jobs)  # every waiting visitor got an answer


def test_an_internal_error_shows_a_generic_sentence_and_no_trace(served, classifier, monkeypatch):
    monkeypatch.setattr(classifier, "predict", lambda src: (_ for _ in ()).throw(RuntimeError("SECRET-42 at /srv")))
    files = [("files", ("c.jpg", CAT.read_bytes() + b"e"))]
    upload = httpx.post(served[1] + "gradio_api/upload", files=files).json()[0]
    shown = json.dumps(call(served[1], "predict", {"path": upload}))
    assert app.UNREADABLE in shown and "SECRET-42" not in shown and "Traceback" not in shown and str(ROOT) not in shown


def test_the_file_routes_serve_uploads_and_examples_and_nothing_else(served):
    url = served[1]
    uploads = get_upload_folder()
    refused = ["/etc/passwd", "%2Fetc%2Fpasswd", "app.py", f"{ROOT}/app.py", f"{ROOT}/weights/model.safetensors",
               f"{ROOT}/.git/config", f"{uploads}/../../../etc/passwd", f"{uploads}/..%2f..%2f..%2fetc%2fpasswd",
               uploads, "..%2f..%2f..%2f..%2fetc%2fpasswd"]
    for path in refused:
        reply = httpx.get(url + f"gradio_api/file={path}")
        assert 400 <= reply.status_code < 500 and b"root:" not in reply.content, path
    for path in ("/static/..%2f..%2f..%2f..%2fetc%2fpasswd", "/assets/..%2f..%2fapp.py", "/file=/etc/passwd"):
        assert 400 <= httpx.get(url.rstrip("/") + path).status_code < 500, path
    upload = httpx.post(url + "gradio_api/upload", files=[("files", ("mine.jpg", CAT.read_bytes()))]).json()[0]
    assert httpx.get(url + f"gradio_api/file={upload}").content == CAT.read_bytes()
