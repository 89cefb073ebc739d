"""guard.py at its lowest level: the middleware as an ASGI app in front of a stand-in for Gradio, the Gradio
functions it replaces called directly, the sweeper on a folder of its own, payload checks and output names.
The served app, reached as an attacker reaches it, is tests/test_security.py."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from http import HTTPStatus
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest
from gradio import processing_utils, route_utils, routes
from gradio.mcp import GradioMCPServer
from gradio.route_utils import GradioUploadFile, MultiPartException
from starlette.datastructures import Headers

import guard

CLIENT, OTHER = "203.0.113.7", "198.51.100.2"
JOIN = "/gradio_api/queue/join"


def sentence(text: str, *words: str) -> bool:
    """``text`` reads as a sentence for a person (a capitalised first word, a full stop), naming ``words``."""
    return bool(re.match(r"[A-Z][a-z]", text)) and text.endswith(".") and all(w in text for w in words)


def asgi(kind: str, parts: list) -> list[dict]:
    """A body as ASGI messages of ``kind``: ``None`` for a message without a body; only the last one ends it."""
    return [{"type": kind, **({} if p is None else {"body": p}), **({"more_body": True} if i < len(parts) - 1 else {})}
            for i, p in enumerate(parts)]


class Inner:
    """A stand-in for Gradio: reads a body as Starlette does, records (path, body, the message after it), and
    answers a join with a new event id (in three messages) that stays "unfinished" in the fake queue until the
    test ends it. With ``hold`` a list, each join waits there on an event until the test sets it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes, str]] = []
        self.queue = SimpleNamespace(event_ids_to_events={})
        self.hold: list[asyncio.Event] | None = None
        self.answer: list[bytes | None] | None = None  # a join's answer, message by message

    async def __call__(self, scope, receive, send) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            assert message["type"] == "http.request"
            body, more = body + message.get("body", b""), message.get("more_body", False)
        self.seen.append((scope["path"], body, (await receive())["type"]))
        parts: list[bytes | None] = [b"{}"]
        if scope["path"] == JOIN:
            event_id = f"e{len(self.seen)}"
            if self.hold is not None:
                self.hold.append(asyncio.Event())
                await self.hold[-1].wait()
            self.queue.event_ids_to_events[event_id] = SimpleNamespace(streaming=False)
            answer = json.dumps({"event_id": event_id}).encode()
            parts = self.answer or [answer[:5], answer[5:], None]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for message in asgi("http.response.body", parts):
            await send(message)


async def call(mw, path: str, body: bytes = b"", method: str = "POST", headers: dict | None = None, chunks=None,
               client: str = CLIENT) -> tuple[int, dict]:
    """Send one request through ``mw`` (``chunks``: a body without content-length); return the status and the
    JSON answer. Reading past the disconnect fails."""
    hdrs = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    if chunks is None and "content-length" not in (headers or {}):
        hdrs.append((b"content-length", str(len(body)).encode()))
    messages = [*asgi("http.request", [body] if chunks is None else chunks), {"type": "http.disconnect"}]
    sent: list[dict] = []

    async def receive():
        assert messages, "read past the disconnect"
        return messages.pop(0)

    async def send(message):
        sent.append(message)

    await mw({"type": "http", "method": method, "path": path, "headers": hdrs, "client": (client, 1234)}, receive, send)
    answer = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    try:
        return sent[0]["status"], json.loads(answer)
    except ValueError:
        return sent[0]["status"], {}


def request(mw, path: str, body: bytes = b"", **kwargs) -> tuple[int, dict]:
    return asyncio.run(call(mw, path, body, **kwargs))


def join(data) -> bytes:
    return json.dumps({"data": data, "fn_index": 1, "session_hash": "s"}).encode()


@pytest.fixture
def mw():
    inner = Inner()
    middleware = guard.Guard(inner, SimpleNamespace(_queue=inner.queue))
    middleware.inner = inner
    return middleware


@pytest.fixture
def clock(monkeypatch) -> list[float]:
    """guard's clocks, frozen at a whole second now; the test moves them by hand."""
    now = [float(int(time.time()))]
    monkeypatch.setattr(guard, "time", SimpleNamespace(monotonic=lambda: now[0], time=lambda: now[0]))
    return now


@pytest.mark.parametrize("payload", [
    [{"path": "https://huggingface.co/big.bin", "meta": {"_type": "gradio.FileData"}}],
    [{"path": "HTTP://example.com/x.png"}],
    [{"path": None, "nested": [{"path": " //example.com/x.png"}]}],
])
def test_a_url_in_a_payload_or_the_file_route_is_refused_before_gradio_sees_it(mw, payload) -> None:
    for route in (JOIN, "/gradio_api/stream/abc", "/gradio_api/run/predict", "/gradio_api/api/predict"):
        status, detail = request(mw, route, join(payload))
        assert status == 422 and sentence(detail["detail"], "URL")
    for url in ("https://example.com/a.png", " HTTP://example.com/a.png", "//example.com/a.png", "\\\\host\\a.png"):
        status, detail = request(mw, "/gradio_api/file=" + url, method="GET")
        assert status == 404 and sentence(detail["detail"], "URL")
    assert mw.inner.seen == []
    assert request(mw, "/gradio_api/file=/tmp/gradio/abc/cat.png", method="GET")[0] == 200


def test_the_pages_own_payloads_and_malformed_json_pass_whole(mw) -> None:
    # An upload's payload has an http `url` (the page's own file route) and a local path; a live frame a data URL.
    upload = [{"path": "/tmp/gradio/abc/cat.png",
               "url": "http://127.0.0.1:7860/gradio_api/file=/tmp/gradio/abc/cat.png",
               "meta": {"_type": "gradio.FileData"}}]
    bodies = [(JOIN, join(upload)), ("/gradio_api/stream/x", join([{"url": "data:image/jpeg;base64,AA=="}])),
              ("/gradio_api/run/predict", b"{not json"), ("/gradio_api/run/predict", b"[" * 100_000)]  # Gradio answers
    for route, body in bodies:
        assert request(mw, route, body)[0] == 200
    assert mw.inner.seen == [(route, body, "http.disconnect") for route, body in bodies]  # then the rest, as sent


@pytest.mark.parametrize("method, path", [
    ("GET", "/gradio_api/process_recording"), ("POST", "/gradio_api/deep_link"), ("GET", "/gradio_api/call/predict"),
    ("GET", "/gradio_api/file/etc/passwd"), ("GET", "/gradio_api/proxy=https://x"), ("GET", "/gradio_api/dev/reload"),
    ("GET", "/monitoring"), ("POST", "/gradio_api/vibe-edit"), ("GET", "/gradio_api/stream/abc/playlist.m3u8"),
    ("HEAD", "/gradio_api/stream/abc/playlist.m3u8")])  # HLS: not used here
def test_routes_the_app_never_uses_answer_as_routes_that_do_not_exist(mw, method, path) -> None:
    assert request(mw, path, method=method) == (404, {"detail": HTTPStatus(404).phrase})
    assert mw.inner.seen == []


@pytest.mark.parametrize("scope", [
    {"type": "websocket", "path": JOIN}, {"type": "lifespan"}, {"type": "http", "method": "GET", "path": "/"},
    {"type": "http", "method": "POST", "path": "/gradio_api/upload", "headers": [(b"content-length", b"5")]}])
def test_what_needs_no_check_reaches_gradio_untouched(scope) -> None:
    calls, receive, send = [], object(), object()

    async def app(*args):
        calls.append(args)

    asyncio.run(guard.Guard(app, SimpleNamespace(_queue=None))(scope, receive, send))
    assert calls == [(scope, receive, send)]


@pytest.mark.parametrize("method, path, limit", [
    ("POST", JOIN, guard.MAX_BODY_BYTES), ("PUT", "/gradio_api/run/predict", guard.MAX_BODY_BYTES),
    ("PATCH", "/", guard.MAX_BODY_BYTES), ("POST", "/gradio_api/upload/X", guard.MAX_BODY_BYTES),
    ("POST", "/gradio_api/upload", guard.MAX_UPLOAD_BODY_BYTES),
    ("POST", "/gradio_api/upload/", guard.MAX_UPLOAD_BODY_BYTES),
    ("POST", "/gradio_api/mcp/", guard.MAX_MCP_BYTES)])
def test_a_body_over_its_limit_is_refused_unread_declared_or_chunked(mw, method, path, limit) -> None:
    def send(**kwargs):
        return request(mw, path, method=method, **kwargs)

    assert send(headers={"content-length": str(limit)})[0] == 200
    status, detail = send(headers={"content-length": str(limit + 1)})
    assert status == 413 and sentence(detail["detail"], f"{limit // 1024} KiB")
    assert send(headers={"content-length": "12x"})[0] == 413
    body = b"x" * limit
    assert send(chunks=[body[:-1], body[-1:], None])[0] == 200  # the last message may come without a body
    assert mw.inner.seen[-1] == (path, body, "http.disconnect")
    assert send(chunks=[body, b"x", b"never read"]) == (413, detail)
    assert len(mw.inner.seen) == 2


def test_uploads_are_rationed_per_client_by_a_token_bucket_past_which_they_get_429(mw, clock) -> None:
    burst, rate = guard.UPLOAD_BURST, guard.UPLOAD_BYTES_PER_S
    assert mw.take_upload(CLIENT, burst) and not mw.take_upload(CLIENT, 1)  # the whole burst at once, then nothing
    assert mw.take_upload(OTHER, burst)  # others unaffected
    clock[0] += 2
    assert not mw.take_upload(CLIENT, 2 * rate + 1) and mw.take_upload(CLIENT, 2 * rate)
    assert not mw.take_upload(CLIENT, 1)
    clock[0] += 10_000  # refilled up to the burst, no further
    assert not mw.take_upload(CLIENT, burst + 1) and mw.take_upload(CLIENT, burst - guard.MAX_UPLOAD_BODY_BYTES + 1)
    status, detail = request(mw, "/gradio_api/upload", chunks=[b"x"])  # unknown length: counts as the limit
    assert status == 429 and sentence(detail["detail"], "uploads")
    assert request(mw, "/gradio_api/upload", b"x" * 100)[0] == 200  # declared: counts its length


def test_past_10000_clients_those_with_a_full_allowance_again_are_forgotten(mw, clock) -> None:
    now, burst, rate = clock[0], guard.UPLOAD_BURST, guard.UPLOAD_BYTES_PER_S
    mw.buckets = {f"c{i}": (0.0, now) for i in range(9_998)}
    mw.buckets["full"] = (burst - rate, now - 1)  # full again, exactly
    assert mw.take_upload("new1", 1) and "full" in mw.buckets  # 10,000 clients: nothing forgotten yet
    assert mw.take_upload("new2", 1)
    assert "full" not in mw.buckets and len(mw.buckets) == 10_000


def test_on_a_space_the_client_is_the_rightmost_public_forwarded_address(monkeypatch) -> None:
    def key(*forwarded: str, peer: str = "10.0.0.5") -> str:
        return guard.client_key({"headers": [(b"x-forwarded-for", f.encode()) for f in forwarded], "client": (peer, 1)})

    assert key("9.9.9.9, 8.8.4.4") == "10.0.0.5"  # not on a Space: the peer
    monkeypatch.setenv("SPACE_ID", "owner/space")
    assert key("9.9.9.9, 8.8.4.4") == "8.8.4.4"  # what the client wrote comes first: not trusted
    assert key("9.9.9.9", "8.8.4.4") == "8.8.4.4"  # the header sent twice reads as one list
    assert key("8.8.4.4, 10.1.2.3") == "8.8.4.4"  # internal hops after it are skipped
    assert key("8.8.4.4, unknown") == "8.8.4.4"  # and entries that are no address
    assert key("2001:db8::1, 2606:4700:10:20:1:2:3:4") == "2606:4700:10:20::/64"  # IPv6: by its /64
    assert key("garbage") == "10.0.0.5"
    assert guard.client_key({"headers": [], "client": None}) == guard.client_key({"headers": []}) == "unknown"


@pytest.mark.parametrize("setup, method, path, kwargs, status", [
    (None, "GET", "/gradio_api/deep_link", {}, 404),
    (None, "HEAD", "/gradio_api/file=https://example.com/a.png", {}, 404),
    (None, "POST", "/gradio_api/run/predict", {"body": join([{"path": "https://example.com/a.png"}])}, 422),
    (None, "POST", JOIN, {"headers": {"content-length": str(guard.MAX_BODY_BYTES + 1)}}, 413),
    (None, "PUT", "/x", {"chunks": [b"x" * (guard.MAX_BODY_BYTES + 1)]}, 413),
    ("drained", "POST", "/gradio_api/upload", {"body": b"x"}, 429),
    ("busy", "POST", JOIN, {"body": join([None])}, 429)])
def test_each_refusal_is_one_log_line_naming_status_request_and_client(mw, clock, caplog, setup, method, path,
                                                                       kwargs, status) -> None:
    if setup == "drained":
        mw.buckets[CLIENT] = (0.0, clock[0])
    if setup == "busy":
        mw.events[CLIENT] = {"a", "b"}
        mw.inner.queue.event_ids_to_events.update(a=None, b=None)
    code, detail = request(mw, path, method=method, **kwargs)
    [record] = caplog.records
    line = record.getMessage()
    assert code == status and record.levelno == logging.WARNING
    assert line.split()[:3] == ["refused", str(status), method] and path in line and CLIENT in line
    assert detail["detail"] in line


def test_a_refusal_is_json_with_its_length_and_logged_only_for_a_request(caplog) -> None:
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    asyncio.run(guard.reply(send, 404, "Not Found"))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"] and sent[0]["status"] == 404
    assert json.loads(sent[1]["body"]) == {"detail": "Not Found"} and dict(sent[0]["headers"]) == {
        b"content-type": b"application/json", b"content-length": str(len(sent[1]["body"])).encode()}
    assert caplog.records == []


def test_a_client_holds_at_most_max_events_unfinished_joins_in_flight_included(mw) -> None:
    queue = mw.inner.queue.event_ids_to_events
    mw.inner.hold = []

    async def scenario():
        first = asyncio.create_task(call(mw, JOIN, join([None])))
        second = asyncio.create_task(call(mw, JOIN, join([None])))
        while len(mw.inner.hold) < 2:
            await asyncio.sleep(0)
        assert mw.joining == {CLIENT: 2} and mw.unfinished(CLIENT) == 2
        watchdog = mw.watchdog  # the idle stream watchdog: started with the first body, once
        assert (await call(mw, JOIN, join([None])))[0] == 429  # two joins not answered yet
        mw.inner.hold[0].set()
        assert (await first)[0] == 200
        assert mw.joining == {CLIENT: 1} and mw.events == {CLIENT: {"e1"}} and mw.unfinished(CLIENT) == 2
        status, detail = await call(mw, JOIN, join([None]))
        assert status == 429 and sentence(detail["detail"], str(guard.MAX_EVENTS), "wait for")
        mw.inner.hold[1].set()
        assert (await second)[0] == 200 and mw.joining == {}
        assert isinstance(watchdog, asyncio.Task) and mw.watchdog is watchdog and not watchdog.done()

    asyncio.run(scenario())
    mw.inner.hold = None
    assert request(mw, JOIN, join([None]), client=OTHER)[0] == 200  # others unaffected
    del queue["e1"]  # Gradio drops an event's id when it ends
    assert mw.unfinished(CLIENT) == 1 and mw.events[CLIENT] == {"e2"}
    del queue["e2"]
    assert mw.unfinished(CLIENT) == 0 and CLIENT not in mw.events
    assert request(mw, JOIN, join([None]))[0] == 200


@pytest.mark.parametrize("answer", [[b'{"event_id": "e9"}', b" and more", None], [b"[1, 2]"],
                                    [b"Internal Server Error"], [b'{"event_id": null}']])
def test_a_join_is_tracked_by_the_event_id_of_its_whole_answer_and_a_stream_by_its_frames(mw, answer) -> None:
    before = time.monotonic()
    assert request(mw, JOIN, join([None]))[0] == 200  # the id in two pieces, then a message without a body
    assert request(mw, "/gradio_api/stream/ev7", join([None]))[0] == 200
    assert mw.events == {CLIENT: {"e1"}} and set(mw.last_frame) == {"e1", "ev7"}
    assert before <= mw.last_frame["e1"] <= mw.last_frame["ev7"] <= time.monotonic()
    mw.inner.answer = answer
    assert request(mw, JOIN, join([None]))[0] == 200  # no id read: nothing tracked
    assert mw.events == {CLIENT: {"e1"}} and set(mw.last_frame) == {"e1", "ev7"}


def test_a_live_stream_without_a_frame_for_live_idle_s_is_ended(mw, clock, monkeypatch) -> None:
    events = {name: SimpleNamespace(streaming=streaming, closed=closed, run_time=7.0, signal=asyncio.Event())
              for name, streaming, closed in (("live", True, False), ("button", False, False), ("done", True, True))}
    mw.inner.queue.event_ids_to_events.update(events)
    mw.last_frame.update(dict.fromkeys([*events, "gone"], clock[0]))
    seen = []  # (each wait, whether the live stream was ended before it)

    async def sleep(seconds):
        seen.append((seconds, events["live"].closed))
        if len(seen) > 4:
            raise InterruptedError
        clock[0] += seconds

    monkeypatch.setattr(guard, "asyncio", SimpleNamespace(sleep=sleep))
    with pytest.raises(InterruptedError):
        asyncio.run(mw.end_idle_streams())
    tick = guard.LIVE_IDLE_S / 3  # three checks per LIVE_IDLE_S: ended after 4 ticks, not at exactly 3
    assert seen == [(tick, False)] * 4 + [(tick, True)]
    assert events["live"].run_time == float("inf") and events["live"].signal.is_set()
    assert [(e.closed, e.run_time, e.signal.is_set()) for e in (events["button"], events["done"])] == [
        (False, 7.0, False), (True, 7.0, False)]
    assert set(mw.last_frame) == set(events)  # an event Gradio dropped is forgotten


def _file(path: Path, age: float, now: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * 10)
    os.utime(path, ns=(int((now - age) * 1e9),) * 2)
    return path


@pytest.fixture
def uploads(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "uploads"))
    monkeypatch.chdir(tmp_path)  # a mutant's os.scandir(None) lists the working directory: let it be this one
    (tmp_path / "uploads").mkdir()
    return tmp_path / "uploads"


def sweep(demo, max_bytes: int = 10**9, max_files: int = 10**6) -> None:
    guard.Sweeper(demo, 60, 5.0, max_bytes, max_files).sweep()


def test_the_sweeper_deletes_old_files_then_the_oldest_past_its_budgets(uploads, clock) -> None:
    now = clock[0]
    files = [_file(uploads / f"h{i}" / "p.png", age, now) for i, age in enumerate([100, 60, 50, 40, 1])]
    example = _file(uploads / "ex" / "cat_1.jpg", 1000, now)  # the page's own copy of an example: kept
    outside = _file(uploads.parent / "outside" / "old.png", 1000, now)
    (uploads / "link").symlink_to(outside.parent)  # links are never followed out of the folder
    (uploads / "h4" / "link.png").symlink_to(outside)
    tracked = {str(files[0]), "other"}
    demo = SimpleNamespace(temp_file_sets=[tracked], blocks={1: SimpleNamespace(keep_in_cache={str(example)}),
                                                             2: SimpleNamespace()})

    def left(**budget) -> list[int]:
        sweep(demo, **budget)
        assert example.exists() and outside.exists() and (uploads / "h4" / "link.png").is_symlink()
        return [i for i, f in enumerate(files) if f.exists()]

    assert left() == [1, 2, 3, 4]  # past 60 s; exactly 60 s old stays
    assert tracked == {"other"}  # Gradio forgets it too
    assert left(max_bytes=40) == [2, 3, 4]  # the oldest first, down to the budget exactly
    assert left(max_files=2) == [4]  # the example counts


def test_the_sweeper_removes_folders_empty_for_keep_s_and_skips_what_gradio_deleted_meanwhile(uploads, clock) -> None:
    now = clock[0]
    gone, emptied = _file(uploads / "gone" / "a.png", 200, now), _file(uploads / "h" / "b.png", 100, now)
    _file(uploads / "new.png", 1, now)

    class Demo:  # Gradio's delete_cache takes a folder while a pass runs
        temp_file_sets = ()

        @property
        def blocks(self):
            shutil.rmtree(gone.parent, ignore_errors=True)
            return {}

    def folders(*ages) -> list[str]:
        for name, age in ages:
            (uploads / name).mkdir(exist_ok=True)
            os.utime(uploads / name, (now - age, now - age))
        sweep(Demo())
        return sorted(p.name for p in uploads.iterdir())

    assert folders(("old1", 61), ("old2", 61)) == ["h", "new.png"] and not emptied.exists()  # h: empty just now
    _file(uploads / "busy" / "new.png", 1, now)
    assert folders(("edge", 60), ("busy", 1000)) == ["busy", "edge", "h", "new.png"]  # exactly 60 s; not empty


def test_the_sweeper_sweeps_every_every_s_until_stopped_and_logs_a_failure(caplog) -> None:
    sweeper, waits, sweeps, error = guard.Sweeper(None, 60, 0.25, 1, 1), [], [], OSError("disk gone")
    sweeper.stopped = SimpleNamespace(wait=lambda s: waits.append(s) or len(waits) > 3)

    def failing_once():
        sweeps.append(1)
        if len(sweeps) == 2:
            raise error

    sweeper.sweep = failing_once
    sweeper.run()
    assert waits == [0.25] * 4 and len(sweeps) == 3
    [record] = caplog.records
    assert record.levelno == logging.ERROR and record.exc_info[1] is error
    assert "upload folder" in record.getMessage() and record.getMessage().islower()


def test_install_guards_the_app_and_runs_a_sweeper_while_it_serves(uploads, monkeypatch) -> None:
    patched = []
    monkeypatch.setattr(guard, "_patch_gradio", lambda: patched.append(True))
    demo = SimpleNamespace(blocks={}, temp_file_sets=[])
    for keep, every in ((4, 2.0), (60, 5.0)):
        kwargs = guard.install(demo, keep)
        [middleware] = kwargs["middleware"]
        assert middleware.cls is guard.Guard and middleware.kwargs == {"demo": demo} and middleware.args == ()

        async def serve(lifespan):
            async with lifespan(None):
                [sweeper] = [t for t in threading.enumerate() if getattr(t, "demo", None) is demo]
                assert sweeper.is_alive() and sweeper.daemon and sweeper.name == "upload-sweeper"
            return sweeper

        sweeper = asyncio.run(serve(kwargs["lifespan"]))
        assert (sweeper.keep_s, sweeper.every_s, sweeper.max_bytes, sweeper.max_files) == (
            keep, every, guard.CACHE_BUDGET_BYTES, guard.CACHE_BUDGET_FILES)
        sweeper.join(timeout=10)
        assert not sweeper.is_alive()
    assert patched == [True, True]


def test_malloc_arenas_are_limited_where_glibc_is(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(guard.ctypes, "CDLL", lambda name: SimpleNamespace(mallopt=lambda *a: calls.append((name, *a))))
    guard.limit_malloc_arenas()
    guard.limit_malloc_arenas(4)
    assert calls == [("libc.so.6", -8, 2), ("libc.so.6", -8, 4)]  # -8: M_ARENA_MAX, from malloc.h

    def no_libc(name):
        raise OSError(name)

    for cdll in (lambda name: object(), no_libc):  # another libc (musl), or none: nothing to do
        monkeypatch.setattr(guard.ctypes, "CDLL", cdll)
        guard.limit_malloc_arenas()


@pytest.fixture
def patched(monkeypatch) -> list:
    """Gradio as guard._patch_gradio leaves it, patched afresh over a recorder standing for MCP's converter;
    returns what reached the recorder. Everything is put back after the test."""
    parser = route_utils.GradioMultiPartParser
    monkeypatch.setattr(route_utils, "GradioMultiPartParser",
                        next(c for c in parser.__mro__ if "one_file" not in vars(c)))
    monkeypatch.setattr(processing_utils, "async_ssrf_protected_download",
                        processing_utils.async_ssrf_protected_download)
    monkeypatch.setattr(routes, "secure_url_stream_response", routes.secure_url_stream_response)
    converted: list = []
    monkeypatch.setattr(GradioMCPServer, "convert_strings_to_filedata",
                        lambda self, value, positions: converted.append((self, value, positions)) or "converted")
    guard._patch_gradio()
    return converted


def test_gradio_is_patched_once_per_process(patched) -> None:
    before = route_utils.GradioMultiPartParser, GradioMCPServer.convert_strings_to_filedata
    guard._patch_gradio()
    assert (route_utils.GradioMultiPartParser, GradioMCPServer.convert_strings_to_filedata) == before


def test_gradio_fetches_and_proxies_no_url(patched) -> None:
    for fetch in (processing_utils.async_ssrf_protected_download("https://huggingface.co/big.bin", "/tmp"),
                  routes.secure_url_stream_response("https://example.com/a.png", None)):
        with pytest.raises(gr.Error) as err:
            asyncio.run(fetch)
        assert sentence(err.value.message, "URL") and not err.value.print_exception


@pytest.mark.parametrize("value, positions", [({"image": "https://example.com/cat.png"}, [["image"]]),
                                              (["text", {"pic": "/etc/passwd"}], [[1, "pic"]])])
def test_over_mcp_a_picture_must_be_a_base64_data_url(patched, value, positions) -> None:
    with pytest.raises(ValueError) as err:
        GradioMCPServer.convert_strings_to_filedata(object(), value, positions)
    assert sentence(str(err.value), "base64", "most 3 MB", "URL") and patched == []  # 4 MiB of base64: 3.1 MB


def test_over_mcp_data_urls_and_other_values_pass_to_gradio(patched) -> None:
    server, value = object(), {"image": "data:image/png;base64,AA==", "text": "https://x.org", "n": 3, "none": None,
                               "list": [None, "data:image/png;base64,AA=="]}
    positions = [["image"], ["none"], ["list", 0], ["list", 1]]
    assert GradioMCPServer.convert_strings_to_filedata(server, value, positions) == "converted"
    assert patched == [(server, value, positions)]


def _parse(parts: list, upload_dir: Path, read: list | None = None, swept: bool = False):
    """Run Gradio's upload parser as its upload route does over a multipart body, one chunk per part, noting
    in ``read`` the chunks it read; ``swept``: the sweeper empties the folder once the body is read."""
    chunks = [b'--B\r\nContent-Disposition: form-data; name="%s"%s\r\n\r\n%s\r\n' % (
        name.encode(), b"" if filename is None else b'; filename="%s"' % filename.encode(), content)
        for name, filename, content in parts] + [b"--B--\r\n"]
    read = [] if read is None else read

    async def stream():
        for chunk in chunks:
            read.append(chunk)
            yield chunk
        for f in upload_dir.iterdir() if swept else ():
            f.unlink()

    parser = route_utils.GradioMultiPartParser(Headers({"content-type": "multipart/form-data; boundary=B"}), stream(),
                                               max_files=1000, max_fields=1000, upload_dir=upload_dir,
                                               max_file_size=10**6)
    return asyncio.run(parser.parse())


CAT = ("files", "cat.png", b"\x89PNG")


def test_an_upload_takes_one_file_named_files(patched, tmp_path) -> None:
    [(name, upload)] = _parse([CAT], tmp_path).multi_items()
    assert name == "files" and isinstance(upload, GradioUploadFile) and upload.filename == "cat.png"
    assert Path(upload.file.name).read_bytes() == b"\x89PNG"
    upload.file.close()


@pytest.mark.parametrize("parts, stops_at", [
    ([], None), ([CAT, CAT], 2),  # a second file: refused as its headers come, before it is written
    ([("files", None, b"text")], None), ([("file", "cat.png", b"x")], None), ([CAT, ("x", None, b"1")], None),
    ([("files", "..", b"x")], None), ([("files", "a/..", b"x")], None), ([("files", "", b"x")], None),
    ([("x", None, b"1")] * 4, None), ([("x", None, b"1")] * 5, 5)])  # a fifth field: refused as it comes
def test_any_other_upload_is_refused_and_leaves_no_file(patched, tmp_path, parts, stops_at) -> None:
    read: list = []
    with pytest.raises(MultiPartException) as err:
        _parse(parts, tmp_path, read)
    assert list(tmp_path.iterdir()) == [] and len(read) == (stops_at or len(parts) + 1)
    if stops_at is None:
        assert sentence(err.value.message, "one file", "'files'")


def test_a_refused_upload_the_sweeper_already_took_is_still_a_clean_refusal(patched, tmp_path) -> None:
    with pytest.raises(MultiPartException):
        _parse([("files", "..", b"x")], tmp_path, swept=True)


def test_image_source_opens_only_files_in_the_upload_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "uploads"))
    inside = tmp_path / "uploads" / "a" / "p.png"
    inside.parent.mkdir(parents=True)
    inside.write_bytes(b"x")
    (tmp_path / "secret.txt").write_text("s")
    assert guard.image_source({"path": str(inside)}) == guard.image_source(str(inside)) == str(inside)
    assert guard.image_source(None) is None and guard.image_source("") is None
    outside = [str(tmp_path / "secret.txt"), str(inside.parent / ".." / ".." / "secret.txt"), "relative.png",
               "/nonexistent", str(inside) + "\0", {"path": None}, {"path": ""}, 7]
    for payload in outside:
        with pytest.raises(gr.Error) as err:
            guard.image_source(payload if isinstance(payload, dict | int) else {"path": payload})
        assert err.value.message == guard.REFUSED and not err.value.print_exception  # one sentence, exists or not


def test_data_urls_only_where_the_page_sends_them() -> None:
    frame = {"url": "data:image/png;base64,aGVsbG8="}
    assert guard.image_source(frame, data_url=True) == b"hello"
    for payload in (frame, {"url": None, "path": None}):  # /predict and /explain take files
        with pytest.raises(gr.Error) as err:
            guard.image_source(payload)
        assert err.value.message == guard.REFUSED
    for data in ("not base64!", "aGVs!bG8=", "aGVs,bG8="):
        with pytest.raises(gr.Error) as err:
            guard.image_source({"url": "data:image/png;base64," + data}, data_url=True)
        assert sentence(err.value.message, "base64") and not err.value.print_exception


def test_output_pictures_are_written_once_under_a_name_only_this_server_knows(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "not" / "yet"))
    renamed, replace = [], os.replace
    monkeypatch.setattr(guard.os, "replace",
                        lambda src, dst: renamed.append((Path(src), Path(dst))) or replace(src, dst))
    path = Path(guard.write_png(b"\x89PNG data"))
    assert path.read_bytes() == b"\x89PNG data" and path.parent.parent == tmp_path / "not" / "yet"
    assert hashlib.sha256(b"\x89PNG data").hexdigest() not in path.name  # no existence oracle
    [(staging, target)] = renamed  # written under a hidden name beside it, then renamed: never seen half written
    assert target == path and staging.parent == path.parent and staging.name.startswith(".")
    mtime = path.stat().st_mtime_ns
    assert guard.write_png(b"\x89PNG data") == str(path) and path.stat().st_mtime_ns == mtime  # never rewritten
    other = Path(guard.write_png(b"\x89PNG other"))
    assert other != path and other.parent == path.parent and other.read_bytes() == b"\x89PNG other"
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, other.name])  # no staging file left
