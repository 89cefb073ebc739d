"""guard.py at its lowest level: the middleware as an ASGI app in front of a stand-in for Gradio, the
sweeper on a folder of its own, payload checks and output names. The served app, reached as an
attacker reaches it, is tests/test_security.py."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest

import guard


class Inner:
    """A stand-in for Gradio: records what reached it, answers a join with a new event id, which stays
    "unfinished" in the fake queue until the test ends it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes]] = []
        self.queue = SimpleNamespace(event_ids_to_events={})

    async def __call__(self, scope, receive, send) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.seen.append((scope["path"], body))
        answer = b"{}"
        if scope["path"] == "/gradio_api/queue/join":
            event_id = f"e{len(self.seen)}"
            self.queue.event_ids_to_events[event_id] = SimpleNamespace(streaming=False)
            answer = json.dumps({"event_id": event_id}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": answer})


def request(mw, path: str, body: bytes = b"", method: str = "POST", headers: dict | None = None, chunks=None,
            client: str = "203.0.113.7") -> tuple[int, dict]:
    """Send one request through ``mw``; return the status and the JSON detail (if any)."""
    hdrs = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    if chunks is None and "content-length" not in (headers or {}):
        hdrs.append((b"content-length", str(len(body)).encode()))
    parts = chunks if chunks is not None else [body]
    messages = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]
    sent: list[dict] = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": hdrs, "client": (client, 1234)}
    asyncio.run(mw(scope, receive, send))
    body_out = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    try:
        detail = json.loads(body_out)
    except ValueError:
        detail = {}
    return sent[0]["status"], detail


@pytest.fixture
def mw():
    inner = Inner()
    middleware = guard.Guard(inner, SimpleNamespace(_queue=inner.queue))
    middleware.inner = inner
    return middleware


def join(data) -> bytes:
    return json.dumps({"data": data, "fn_index": 1, "session_hash": "s"}).encode()


@pytest.mark.parametrize("payload", [
    [{"path": "https://huggingface.co/big.bin", "meta": {"_type": "gradio.FileData"}}],
    [{"path": "HTTP://example.com/x.png"}],
    [{"path": None, "nested": [{"path": "//example.com/x.png"}]}],
])
def test_a_payload_naming_a_url_is_refused_before_gradio_sees_it(mw, payload) -> None:
    for route in ("/gradio_api/queue/join", "/gradio_api/stream/abc", "/gradio_api/run/predict"):
        status, detail = request(mw, route, join(payload))
        assert status == 422 and "url" in detail["detail"].lower()
    assert mw.inner.seen == []


def test_the_pages_own_payloads_pass_whole(mw) -> None:
    # An upload's payload has an http `url` (the page's own file route) and a local path; a live frame a data URL.
    upload = [{"path": "/tmp/gradio/abc/cat.png", "url": "http://127.0.0.1:7860/gradio_api/file=/tmp/gradio/abc/cat.png",
               "meta": {"_type": "gradio.FileData"}}]
    for route, body in (("/gradio_api/queue/join", join(upload)), ("/gradio_api/stream/x", join([{"url": "data:image/jpeg;base64,AA=="}]))):
        assert request(mw, route, body)[0] == 200
    assert [body for _, body in mw.inner.seen] == [join(upload), join([{"url": "data:image/jpeg;base64,AA=="}])]


@pytest.mark.parametrize("path", ["/gradio_api/process_recording", "/gradio_api/deep_link", "/gradio_api/call/predict",
                                  "/gradio_api/file/etc/passwd", "/gradio_api/proxy=https://x", "/gradio_api/dev/reload",
                                  "/monitoring", "/gradio_api/vibe-edit"])
def test_routes_the_app_never_uses_are_closed(mw, path) -> None:
    assert request(mw, path, method="GET")[0] == 404
    assert mw.inner.seen == []


def test_the_file_route_serves_no_url(mw) -> None:
    assert request(mw, "/gradio_api/file=https://example.com/a.png", method="GET")[0] == 404
    assert request(mw, "/gradio_api/file=/tmp/gradio/abc/cat.png", method="GET")[0] == 200
    assert request(mw, "/gradio_api/stream/abc/playlist.m3u8", method="GET")[0] == 404  # HLS: not used here


@pytest.mark.parametrize("path, limit", [("/gradio_api/queue/join", guard.MAX_BODY_BYTES),
                                         ("/gradio_api/upload", guard.MAX_UPLOAD_BODY_BYTES),
                                         ("/gradio_api/mcp/", guard.MAX_MCP_BYTES)])
def test_a_body_over_its_limit_is_refused_unread_declared_or_chunked(mw, path, limit) -> None:
    status, detail = request(mw, path, headers={"content-length": str(limit + 1)})
    assert status == 413 and str(limit // 1024) in detail["detail"]
    status, _ = request(mw, path, chunks=[b"x" * (limit // 2), b"x" * (limit // 2 + 2), b"never read"])
    assert status == 413
    assert request(mw, path, headers={"content-length": "12x"})[0] == 413
    assert mw.inner.seen == []


def test_a_chunked_body_within_its_limit_reaches_gradio_whole(mw) -> None:
    body = join([None])
    assert request(mw, "/gradio_api/queue/join", chunks=[body[:10], body[10:]])[0] == 200
    assert mw.inner.seen == [("/gradio_api/queue/join", body)]


def test_a_client_holds_at_most_max_events_unfinished(mw) -> None:
    statuses = [request(mw, "/gradio_api/queue/join", join([None]))[0] for _ in range(guard.MAX_EVENTS + 1)]
    assert statuses == [200] * guard.MAX_EVENTS + [429]
    assert request(mw, "/gradio_api/queue/join", join([None]), client="198.51.100.2")[0] == 200  # others unaffected
    mw.inner.queue.event_ids_to_events.clear()  # Gradio drops an event's id when it ends
    status, detail = request(mw, "/gradio_api/queue/join", join([None]))
    assert status == 200


def test_uploads_are_rationed_per_client(mw, monkeypatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(guard.time, "monotonic", lambda: now[0])
    size = {"content-length": str(guard.MAX_UPLOAD_BODY_BYTES)}
    burst = guard.UPLOAD_BURST // guard.MAX_UPLOAD_BODY_BYTES
    assert [request(mw, "/gradio_api/upload", headers=size)[0] for _ in range(burst + 1)] == [200] * burst + [429]
    assert request(mw, "/gradio_api/upload", headers=size, client="198.51.100.2")[0] == 200
    now[0] += guard.MAX_UPLOAD_BODY_BYTES / guard.UPLOAD_BYTES_PER_S  # the allowance refills over time
    assert request(mw, "/gradio_api/upload", headers=size)[0] == 200
    assert request(mw, "/gradio_api/upload", headers=size)[0] == 429


def test_on_a_space_the_client_is_the_rightmost_public_forwarded_address(monkeypatch) -> None:
    def key(forwarded: str, peer: str = "10.0.0.5") -> str:
        return guard.client_key({"headers": [(b"x-forwarded-for", forwarded.encode())], "client": (peer, 1)})

    assert key("9.9.9.9, 8.8.4.4") == "10.0.0.5"  # not on a Space: the peer
    monkeypatch.setenv("SPACE_ID", "owner/space")
    assert key("9.9.9.9, 8.8.4.4") == "8.8.4.4"  # what the client wrote comes first: not trusted
    assert key("8.8.4.4, 10.1.2.3") == "8.8.4.4"  # internal hops after it are skipped
    assert key("2001:db8::1, 2606:4700::1") == "2606:4700::/64"
    assert key("garbage") == "10.0.0.5"


def test_an_idle_live_stream_is_ended(mw, monkeypatch) -> None:
    monkeypatch.setattr(guard, "LIVE_IDLE_S", 0.09)
    event = SimpleNamespace(streaming=True, closed=False, run_time=0.0, signal=asyncio.Event())
    mw.inner.queue.event_ids_to_events["live1"] = event

    async def scenario():
        mw.last_frame["live1"] = time.monotonic()
        task = asyncio.create_task(mw.end_idle_streams())
        await asyncio.sleep(0.05)
        assert not event.closed  # frames came recently
        await asyncio.sleep(0.15)
        task.cancel()

    asyncio.run(scenario())
    assert event.closed and event.run_time == float("inf") and event.signal.is_set()


def test_the_sweeper_deletes_old_files_then_the_oldest_past_its_budget(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # a mutant's os.scandir(None) lists the working directory: let it be this one
    now = time.time()
    files = {}
    for i, (age, size) in enumerate([(100, 10), (50, 10), (40, 10), (30, 10), (1, 10)]):
        f = tmp_path / f"h{i}" / "p.png"
        f.parent.mkdir()
        f.write_bytes(b"x" * size)
        os.utime(f, (now - age, now - age))
        files[i] = f
    example = tmp_path / "ex" / "cat_1.jpg"  # the page's own copy of an example: kept whatever its age
    example.parent.mkdir()
    example.write_bytes(b"x")
    os.utime(example, (now - 1000, now - 1000))
    tracked = {str(files[0])}
    demo = SimpleNamespace(temp_file_sets=[tracked], blocks={1: SimpleNamespace(keep_in_cache={str(example)})})
    guard.Sweeper(demo, keep_s=60, max_bytes=25).sweep()
    assert [i for i, f in files.items() if f.exists()] == [3, 4]  # 100 s old: past age; then oldest to the budget
    assert example.exists()
    assert tracked == set()  # Gradio forgets it too
    os.utime(tmp_path / "h0", (now - 100, now - 100))
    guard.Sweeper(demo, keep_s=60, max_bytes=25).sweep()
    assert not (tmp_path / "h0").exists() and (tmp_path / "h3").exists()  # empty for a while: its folder goes
    guard.Sweeper(demo, keep_s=60, max_files=2).sweep()
    assert [i for i, f in files.items() if f.exists()] == [4] and example.exists()


def test_image_source_opens_only_files_in_the_upload_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "uploads"))
    inside = tmp_path / "uploads" / "a" / "p.png"
    inside.parent.mkdir(parents=True)
    inside.write_bytes(b"x")
    (tmp_path / "secret.txt").write_text("s")
    assert guard.image_source({"path": str(inside)}) == str(inside)
    assert guard.image_source(None) is None and guard.image_source("") is None
    outside = [str(tmp_path / "secret.txt"), str(inside.parent / ".." / ".." / "secret.txt"), "relative.png",
               "/nonexistent", str(inside) + "\0", {"path": None}, 7]
    for payload in outside:
        with pytest.raises(gr.Error) as err:
            guard.image_source(payload if isinstance(payload, dict | int) else {"path": payload})
        assert err.value.message == guard.REFUSED  # one sentence, whether or not the file exists


def test_data_urls_only_where_the_page_sends_them() -> None:
    frame = {"url": "data:image/png;base64,aGVsbG8="}
    assert guard.image_source(frame, data_url=True) == b"hello"
    with pytest.raises(gr.Error) as err:
        guard.image_source(frame)  # /predict and /explain take files
    assert err.value.message == guard.REFUSED
    with pytest.raises(gr.Error) as err:
        guard.image_source({"url": "data:image/png;base64,not base64!"}, data_url=True)
    assert "base64" in err.value.message


def test_output_pictures_are_written_once_under_a_name_only_this_server_knows(tmp_path, monkeypatch) -> None:
    import hashlib

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    path = Path(guard.write_png(b"\x89PNG data"))
    assert path.read_bytes() == b"\x89PNG data" and path.parent.parent == tmp_path
    assert hashlib.sha256(b"\x89PNG data").hexdigest() not in path.name  # no existence oracle
    mtime = path.stat().st_mtime_ns
    time.sleep(0.01)
    assert guard.write_png(b"\x89PNG data") == str(path) and path.stat().st_mtime_ns == mtime  # never rewritten
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no staging file left
