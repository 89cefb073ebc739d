"""app.py's request limits, payload checks, pictures and handlers, called directly as the server calls them.

Fast (no server): these are the tests ``python -m benchmarks.mutation --module app`` runs against each
mutant. The same behaviour over a real server and raw HTTP is in tests/test_security.py and tests/test_app.py.
Each test checks what a visitor or the server sees (a status, a body, a message, pixels, a file), computed
here independently, not a constant read back from app.py.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import io
import os
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

import app
from cifar_model import CLASSES, Classifier, ImageError, Metrics, WeightsInfo, grad_cam
from cifar_model.preprocess import normalize

ROOT = Path(app.__file__).resolve().parent
CAT, SHIP = ROOT / "examples" / "cat_1.jpg", ROOT / "examples" / "ship_1.jpg"
KIB, MIB = 1024, 1024 * 1024


@pytest.fixture
def uploads(tmp_path, monkeypatch) -> Path:
    """A private upload folder, the one app.py's checks and pictures use for this test."""
    folder = tmp_path / "uploads"
    folder.mkdir()
    monkeypatch.setattr(app, "get_upload_folder", lambda: str(folder))
    return folder


# ---------------------------------------------------------------------------------------------
# RequestLimits, driven as an ASGI app.


class Inner:
    """The app behind the middleware: records that it was called, the scope it got and the body it read,
    reading the body as Starlette does (a disconnect before its end is an error)."""

    def __init__(self) -> None:
        self.calls, self.scope, self.body, self.after = 0, None, None, None

    async def __call__(self, scope, receive, send):
        self.calls += 1
        self.scope = scope
        body, more = b"", True
        while more:
            m = await receive()
            assert m["type"] == "http.request", m
            body += m.get("body", b"")
            more = m.get("more_body", False)
        self.body = body
        self.after = await receive()  # what follows the body (the server's disconnect)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def asgi(limits, path="/gradio_api/queue/join", method="POST", chunks=(b"",), length="auto", kind="http"):
    """Send one request through ``limits`` -> (status, headers dict, body, how many messages were received)."""
    chunks = list(chunks)
    headers = []
    if length == "auto":
        headers.append((b"content-length", str(sum(map(len, chunks))).encode()))
    elif length is not None:
        headers.append((b"content-length", length))
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    received, sent = [], []

    async def receive():
        received.append(1)
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": kind, "method": method, "path": path, "headers": headers}
    calls = getattr(limits.app, "calls", 0)
    asyncio.run(limits(scope, receive, send))
    if getattr(limits.app, "calls", 0) > calls:
        assert limits.app.scope is scope  # the app gets the request as it came
    start = sent[0]
    assert start["type"] == "http.response.start" and {m["type"] for m in sent[1:]} == {"http.response.body"}
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:]), len(received)


def test_a_json_body_at_the_limit_passes_and_one_byte_more_is_413_unread():
    inner = Inner()
    limits = app.RequestLimits(inner, max_body=1000, max_upload=5000, cache_budget=10**12)
    assert asgi(limits, chunks=[b"x" * 1000])[0] == 200 and inner.body == b"x" * 1000
    status, headers, body, received = asgi(limits, chunks=[b"x" * 1001])
    assert (status, inner.calls, received) == (413, 1, 0)
    assert body == "Request body too large (the limit is 0 KiB).".replace("0", str(1000 // 1024)).encode()
    assert headers == {b"content-type": b"text/plain; charset=utf-8", b"content-length": str(len(body)).encode()}


def test_the_default_limits_are_the_documented_ones():
    # README: 2 MiB for the queue and JSON, a 10 MB file (plus its multipart framing) for an upload.
    limits = app.RequestLimits(Inner(), cache_budget=10**12)
    assert asgi(limits, length=str(2 * MIB).encode())[0] == 200
    status, _, body, _ = asgi(limits, length=str(2 * MIB + 1).encode())
    assert status == 413 and b"the limit is 2048 KiB" in body
    assert asgi(limits, path="/gradio_api/upload", length=str(10 * MIB + 64 * KIB).encode())[0] == 200
    assert asgi(limits, path="/gradio_api/upload", length=str(10 * MIB + 64 * KIB + 1).encode())[0] == 413


@pytest.mark.parametrize("path", ["/gradio_api/upload", "/gradio_api/upload/", "/x/gradio_api/upload",
                                  "/gradio_api/mcp/", "/gradio_api/mcp/messages/"])
def test_uploads_and_mcp_calls_get_the_upload_limit(path):
    limits = app.RequestLimits(Inner(), max_body=1000, max_upload=5000, cache_budget=10**12)
    assert asgi(limits, path=path, length=b"5000")[0] == 200
    status, _, body, _ = asgi(limits, path=path, length=b"5001")
    assert status == 413 and b"the limit is 4 KiB" in body


@pytest.mark.parametrize("path", ["/gradio_api/queue/join", "/gradio_api/uploads", "/gradio_api/uploadX",
                                  "/upload/more", "/mcp"])
def test_other_posts_get_the_body_limit(path):
    limits = app.RequestLimits(Inner(), max_body=1000, max_upload=5000, cache_budget=0)  # budget: see below
    status, _, body, _ = asgi(limits, path=path, length=b"1001")
    assert status == 413 and b"the limit is 0 KiB" in body  # not 507: only uploads count against the cache


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_put_and_patch_are_limited_like_post(method):
    assert asgi(app.RequestLimits(Inner(), max_body=10), method=method, length=b"11")[0] == 413


@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE", "OPTIONS"])
def test_requests_without_a_body_pass_untouched(method):
    inner = Inner()
    assert asgi(app.RequestLimits(inner, max_body=10, cache_budget=0), method=method, length=b"999",
                path="/gradio_api/upload")[0] == 200
    assert inner.calls == 1


def test_websockets_and_lifespan_pass_untouched():
    seen = []

    async def inner(scope, receive, send):
        seen.append(scope["type"])
        assert receive is None and send is None  # handed on as they came

    limits = app.RequestLimits(inner, max_body=0, cache_budget=0)
    for kind in ("websocket", "lifespan"):
        scope = {"type": kind, "method": "POST", "path": "/gradio_api/upload", "headers": []}
        asyncio.run(limits(scope, None, None))
    assert seen == ["websocket", "lifespan"]


@pytest.mark.parametrize("length", [b"abc", b"-1", b"1e3", b" 10", b""])
def test_a_content_length_that_is_not_a_number_is_413(length):
    inner = Inner()
    assert asgi(app.RequestLimits(inner, max_body=1000), length=length)[0] == 413 and inner.calls == 0


def test_a_chunked_body_under_the_limit_reaches_the_app_whole_and_then_the_disconnect():
    inner = Inner()
    chunks = [b"a" * 300, b"", b"b" * 300, b"c" * 400]  # 1000 bytes: exactly the limit
    assert asgi(app.RequestLimits(inner, max_body=1000), chunks=chunks, length=None)[0] == 200
    assert inner.body == b"".join(chunks) and inner.after == {"type": "http.disconnect"}


def test_a_chunked_body_over_the_limit_is_413_without_reading_the_rest():
    inner = Inner()
    chunks = [b"a" * 600, b"b" * 600, b"c" * 600, b"d" * 600]
    status, _, body, received = asgi(app.RequestLimits(inner, max_body=1000), chunks=chunks, length=None)
    assert (status, inner.calls, received) == (413, 0, 2)
    assert body == b"Request body too large (the limit is 0 KiB)."
    status, _, body, _ = asgi(app.RequestLimits(Inner(), max_body=4096), chunks=[b"a" * 4097], length=None)
    assert (status, body) == (413, b"Request body too large (the limit is 4 KiB).")
    assert asgi(app.RequestLimits(Inner(), max_body=1000), chunks=[b"a" * 1001], length=None)[0] == 413


def test_read_capped_stops_at_the_last_message():
    # A body in one message with nothing after it: the reader must not wait for more.
    messages = [{"type": "http.request", "body": b"abc"}]

    async def receive():
        return messages.pop(0)

    assert asyncio.run(app._read_capped(receive, 10)) == b"abc"


def test_read_capped_takes_messages_without_a_body():
    # ASGI: "body" defaults to b"" and "more_body" to False; a server may leave either out.
    messages = [{"type": "http.request", "more_body": True}, {"type": "http.request", "body": b"abc"}]

    async def receive():
        return messages.pop(0)

    assert asyncio.run(app._read_capped(receive, 3)) == b"abc"


def test_uploads_are_507_only_while_the_cache_is_over_budget(uploads):
    (uploads / "a").mkdir()
    (uploads / "a" / "one.bin").write_bytes(bytes(700))
    (uploads / "two.bin").write_bytes(bytes(300))
    inner = Inner()
    assert asgi(app.RequestLimits(inner, cache_budget=1000), path="/gradio_api/upload")[0] == 200  # 1000: at it
    status, _, body, received = asgi(app.RequestLimits(inner, cache_budget=999), path="/gradio_api/upload")
    assert (status, received, inner.calls) == (507, 0, 1)
    assert body == b"The server's picture cache is full. Try again in a few minutes."
    assert asgi(app.RequestLimits(inner, cache_budget=999), path="/gradio_api/mcp/")[0] == 507
    assert asgi(app.RequestLimits(inner, cache_budget=0))[0] == 200  # not an upload


def test_the_cache_is_measured_at_most_every_ten_seconds(uploads, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(app.time, "monotonic", lambda: now[0])
    limits = app.RequestLimits(Inner())
    (uploads / "one.bin").write_bytes(bytes(100))
    assert asyncio.run(limits.cache_size()) == 100
    (uploads / "two.bin").write_bytes(bytes(50))
    now[0] += 10.0
    assert asyncio.run(limits.cache_size()) == 100  # 10 s later: the last figure
    now[0] += 0.5
    assert asyncio.run(limits.cache_size()) == 150  # past 10 s: measured again
    (uploads / "three.bin").write_bytes(bytes(25))
    now[0] += 9.0
    assert asyncio.run(limits.cache_size()) == 150  # 9 s after the second measurement, not 19 after the first


def test_folder_bytes_counts_files_at_every_depth_and_skips_vanished_ones(tmp_path, monkeypatch):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "top.bin").write_bytes(bytes(1))
    (tmp_path / "a" / "mid.bin").write_bytes(bytes(20))
    (tmp_path / "a" / "b" / "deep.bin").write_bytes(bytes(300))
    (tmp_path / "gone.bin").write_bytes(bytes(4000))
    assert app._folder_bytes(tmp_path) == 4321
    real_stat = Path.stat

    def stat(self, *args, **kwargs):  # deleted between the walk listing it and our stat
        if self.name == "gone.bin":
            raise FileNotFoundError(self)
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", stat)
    assert app._folder_bytes(tmp_path) == 321


# ---------------------------------------------------------------------------------------------
# image_source: what a payload may name.



def _frame(data: bytes, mime: str = "image/jpeg") -> dict:
    """A gr.Image payload as a webcam frame arrives: a data: URL."""
    return {"url": f"data:{mime};base64," + base64.b64encode(data).decode()}

def refused(payload) -> bool:
    with pytest.raises(gr.Error) as err:
        app.image_source(payload)
    return err.value.message == app.REFUSED and err.value.print_exception is False


def test_no_picture_is_none():
    assert app.image_source(None) is None and app.image_source("") is None


def test_a_file_in_the_upload_folder_is_its_path(uploads):
    (uploads / "x").mkdir()
    inside = uploads / "x" / "cat.jpg"
    inside.write_bytes(CAT.read_bytes())
    assert app.image_source({"path": str(inside)}) == str(inside)
    assert app.image_source({"path": str(inside), "url": "http://example.com/x.jpg"}) == str(inside)
    assert app.image_source({"path": str(inside), "url": None}) == str(inside)
    assert app.image_source(str(inside)) == str(inside)


def test_anything_else_is_refused_with_one_sentence(uploads, tmp_path):
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(CAT.read_bytes())
    (uploads / "link.jpg").symlink_to(outside)
    for payload in [{"path": str(outside)}, str(outside), {"path": str(uploads / ".." / "secret.jpg")},
                    {"path": str(uploads / "link.jpg")}, {"path": str(uploads / "cat.jpg") + "\0"},
                    {"path": ""}, {"path": None}, {}, {"path": 3}, {"path": [str(outside)]}, 7, ["x"],
                    {"url": "http://127.0.0.1/cat.jpg"}, {"url": 12, "path": str(outside)},
                    {"path": "/etc/passwd"}, {"path": str(tmp_path / "missing.jpg")}]:
        assert refused(payload), payload


def test_a_data_url_is_its_decoded_bytes():  # RFC 2397: the data is everything after the first comma
    data = CAT.read_bytes()
    url = _frame(data)["url"]
    assert app.image_source({"url": url, "path": "/etc/passwd"}) == data
    assert app.image_source({"url": "data:,"}) == b""
    with pytest.raises(gr.Error, match="not valid base64"):
        app.image_source({"url": "data:image/png;base64,AAAA,AAAA"})


@pytest.mark.parametrize("url", ["data:image/png;base64,AAA", "data:image/png;base64,AA!A",
                                 "data:image/png;base64,AA AA", "data:image/png;base64,A" * 3])
def test_a_data_url_that_is_not_base64_says_so(url):
    with pytest.raises(gr.Error) as err:
        app.image_source({"url": url})
    assert err.value.message == "The picture data is not valid base64."


def test_a_data_url_longer_than_a_request_body_is_refused(monkeypatch):
    monkeypatch.setattr(app, "MAX_DATA_URL_CHARS", 42)
    head = "data:image/png;base64,"
    fits = head + "A" * (42 - len(head))  # 20 characters: 15 bytes
    assert app.image_source({"url": fits}) == bytes(15)
    with pytest.raises(gr.Error) as err:
        app.image_source({"url": fits + "AAAA"})
    assert err.value.message == "The picture is too large to send inline. Upload a smaller file."


def test_data_urls_may_be_as_long_as_a_request_body():
    assert app.MAX_DATA_URL_CHARS >= 2 * MIB  # a frame that passed the body limit is not refused again


# ---------------------------------------------------------------------------------------------
# The notice, the pictures, the weights panel.


@pytest.mark.parametrize("top", ["airplane", "frog", "truck"])
def test_the_notice_names_the_best_guess_only_when_the_rule_fires(top):
    probs = {c: (0.46 if c == top else 0.06) for c in CLASSES}
    notice = app.unsure_notice(probs, True)
    assert f"its best guess, *{top}*, may well be wrong" in notice and "half the time" in notice
    assert notice.startswith("⚠️ **The model is unsure.**")
    assert notice.endswith("(on CIFAR-10 test pictures flagged like this it is right only about half the time). It "
                           "only knows airplane, automobile, bird, cat, deer, dog, frog, horse, ship and truck, and "
                           "sees a 32×32 thumbnail of the picture's centre.")
    assert app.unsure_notice(probs, False) == ""


def test_enlarge_makes_each_pixel_a_sharp_square():
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    big = app.enlarge(pixels)
    assert big.shape == (256, 256, 3) and big.dtype == np.uint8
    np.testing.assert_array_equal(big, pixels.repeat(8, axis=0).repeat(8, axis=1))
    np.testing.assert_array_equal(app.enlarge(pixels, 64), pixels.repeat(2, axis=0).repeat(2, axis=1))


def test_heat_overlay_blends_blue_where_cold_and_red_where_hot():
    pixels = np.full((32, 32, 3), 100, np.uint8)
    cam = np.zeros((32, 32), np.float32)
    cam[:16] = 1.0  # top half hot, bottom half cold
    out = app.heat_overlay(pixels, cam, size=64).astype(int)
    assert out.shape == (64, 64, 3)
    # alpha 0.15 + 0.5 * heat over the picture; heat 0 -> blue, 1 -> red
    cold = (0.85 * 100 + 0.15 * np.array([0, 0, 255])).astype(int)
    hot = (0.35 * 100 + 0.65 * np.array([255, 0, 0])).astype(int)
    np.testing.assert_allclose(out[-1, -1], cold, atol=1)
    np.testing.assert_allclose(out[0, 0], hot, atol=1)


def test_heat_overlay_runs_blue_cyan_yellow_red():
    black = np.zeros((32, 32, 3), np.uint8)
    for heat, rgb in [(0.33, (0, 255, 255)), (0.66, (255, 255, 0)), (0.165, (0, 127.5, 255))]:
        out = app.heat_overlay(black, np.full((32, 32), heat, np.float32), size=32).astype(float)
        alpha = 0.15 + 0.5 * heat
        np.testing.assert_allclose(out[5, 5], alpha * np.array(rgb), atol=1.01)


def test_a_cold_black_picture_is_tinted_blue_only():
    out = app.heat_overlay(np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32), np.float32), size=32)
    assert (out == np.array([0, 0, int(0.15 * 255)], np.uint8)).all()


def test_the_heat_is_spread_bilinearly_between_the_maps_cells():
    # A hard edge in the 32x32 map becomes a linear ramp across the enlarged picture (PIL's bilinear
    # upscale is torch's, half-pixel centres): no overshoot, no blocky steps.
    cam = np.zeros((32, 32), np.float32)
    cam[:, 16:] = 1.0
    cam[5, 5] = 0.6
    heat = torch.nn.functional.interpolate(torch.from_numpy(cam)[None, None], size=(256, 256), mode="bilinear",
                                           align_corners=False)[0, 0].numpy().clip(0, 1)
    alpha = 0.15 + 0.5 * heat
    red = np.interp(heat, [0, 0.33, 0.66, 1], [0, 0, 255, 255])
    expected = (1 - alpha) * 100 + alpha * red
    out = app.heat_overlay(np.full((32, 32, 3), 100, np.uint8), cam)
    np.testing.assert_allclose(out[..., 0], expected, atol=1.0)


def test_heat_outside_zero_to_one_is_clipped():
    pixels = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(app.heat_overlay(pixels, np.full((32, 32), 7.0, np.float32)),
                                  app.heat_overlay(pixels, np.ones((32, 32), np.float32)))
    np.testing.assert_array_equal(app.heat_overlay(pixels, np.full((32, 32), -3.0, np.float32)),
                                  app.heat_overlay(pixels, np.zeros((32, 32), np.float32)))


def test_heat_overlay_of_a_white_picture_stays_in_range():
    out = app.heat_overlay(np.full((32, 32, 3), 255, np.uint8), np.ones((32, 32), np.float32))
    assert out.dtype == np.uint8 and out.max() == 255 and out[..., 0].min() == 255


def _metrics(**change) -> Metrics:
    import dataclasses

    return dataclasses.replace(Metrics.load(ROOT / "weights" / "metrics.json"), **change)


def test_the_panel_shows_accuracy_calibration_and_each_class():
    m = _metrics(test_accuracy=0.9012, ece=0.0123, ece_uncalibrated=0.154,
                 per_class_accuracy={c: i / 10 for i, c in enumerate(CLASSES)})
    panel = app.weights_panel(WeightsInfo("bundled", ROOT / "weights", metrics=m))
    assert panel.startswith("<p><b>Weights:</b> <code>bundled weights/</code></p>")
    assert f"<p><b>Test accuracy:</b> 90.1% on {m.test_images:,} pictures (" in panel
    assert "<b>Calibration error (ECE):</b> 1.2% (before calibration 15.4%)" in panel
    assert "right about 79–81% of the time" in panel
    assert "".join(f"<th>{c}</th>" for c in CLASSES) in panel
    assert "".join(f"<td>{i / 10:.0%}</td>" for i in range(10)) in panel


def test_the_panel_without_calibration_figures_says_nothing_of_them():
    plain = app.weights_panel(WeightsInfo("bundled", ROOT, metrics=_metrics(ece=None, ece_uncalibrated=None)))
    assert "ECE" not in plain
    once = app.weights_panel(WeightsInfo("bundled", ROOT, metrics=_metrics(ece=0.05, ece_uncalibrated=None)))
    assert "ECE):</b> 5.0%:" in once and "before calibration" not in once and "75–85%" in once


def test_the_panel_shows_at_most_twenty_classes():
    many = {f"c{i}": 0.5 for i in range(25)}
    m = _metrics(per_class_accuracy=many, confusion_matrix=[[0] * 25 for _ in range(25)], test_images=0)
    panel = app.weights_panel(WeightsInfo("x", ROOT, metrics=m))
    assert panel.count("<th>") == 20 and "<th>c19</th>" in panel and "c20" not in panel
    none = app.weights_panel(WeightsInfo("x", ROOT, metrics=_metrics(per_class_accuracy={}, confusion_matrix=[],
                                                                      test_images=0)))
    assert "<table>" not in none


def test_the_panel_shows_a_folders_text_as_text():
    evil = "<img src=x onerror=alert(1)>"
    m = _metrics(dataset=evil, per_class_accuracy={evil: 1.0}, confusion_matrix=[[1]], test_images=1)
    panel = app.weights_panel(WeightsInfo(evil, ROOT, metrics=m, warning=evil))
    assert "<img" not in panel and panel.count("&lt;img src=x onerror=alert(1)&gt;") == 4
    bare = app.weights_panel(WeightsInfo(evil, ROOT, warning=evil))
    assert "<img" not in bare and bare.endswith("<p><b>Test accuracy:</b> not recorded with these weights.</p>")


# ---------------------------------------------------------------------------------------------
# Fresh copies and the handlers.


def _put(folder: Path, name: str, data: bytes, age_s: float = 0.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    if age_s:
        t = time.time() - age_s
        os.utime(folder, (t, t))
    return path


def test_fresh_copies_are_recent_files_with_the_same_bytes(uploads):
    data = CAT.read_bytes()
    mine = _put(uploads / "a", "file.jpg", data)
    twin = _put(uploads / "b", "x.jpg", data)
    _put(uploads / "c", "y.jpg", bytes(len(data)))  # same size, other bytes
    _put(uploads / "d", "z.jpg", data + b"!")  # other size
    _put(uploads / "e", "old.jpg", data, age_s=300)  # same bytes, made long ago
    _put(uploads, "loose.jpg", data)  # not in a folder of its own
    assert app._fresh_copies(mine) == [str(twin)]
    assert sorted(app._fresh_copies(mine, within_s=1000)) == sorted([str(twin), str(uploads / "e" / "old.jpg")])
    assert app._fresh_copies(uploads / "missing" / "file.jpg") == []


def test_fresh_copies_are_the_last_two_minutes(uploads):
    data = CAT.read_bytes()
    mine = _put(uploads / "a", "file.jpg", data)
    recent = _put(uploads / "b", "x.jpg", data, age_s=119.5)
    _put(uploads / "c", "y.jpg", data, age_s=120.5)
    assert app._fresh_copies(mine) == [str(recent)]


@pytest.fixture
def handlers(classifier) -> app.Handlers:
    return app.Handlers(classifier)


def _upload(uploads: Path, source: Path, name: str | None = None, sub: str = "u") -> dict:
    return {"path": str(_put(uploads / sub, name or source.name, source.read_bytes()))}


def test_a_file_is_remembered_for_deletion_with_any_fresh_copy_of_an_agents_picture(handlers, uploads):
    plain = _upload(uploads, CAT, sub="a")
    twin = _upload(uploads, CAT, sub="b")
    assert handlers.source(plain) == plain["path"] and handlers.opened == {plain["path"]}
    agent = _upload(uploads, CAT, name="file.jpg", sub="c")  # how Gradio names what its MCP server saved
    handlers.source(agent)
    assert handlers.opened == {plain["path"], twin["path"], agent["path"]}
    handlers.source(None)
    handlers.source(_frame(CAT.read_bytes()))
    assert len(handlers.opened) == 3


def test_the_opened_set_can_be_walked_while_it_grows(handlers):
    handlers.opened.update({"a", "b"})
    walked = []
    for name in handlers.opened:  # Gradio's deletion thread iterates while a handler adds
        walked.append(name)
        handlers.opened.add(name + "!")
    assert sorted(walked) == ["a", "b"] and len(handlers.opened) == 4


def test_predict_gives_the_classifiers_calibrated_answer_and_notice(handlers, classifier, uploads):
    probs, notice = handlers.predict(_upload(uploads, CAT))
    pixels = classifier.to_uint8(CAT)
    expected = classifier.predict_pixels(pixels[None])[0]
    assert list(probs) == list(CLASSES)
    np.testing.assert_allclose(list(probs.values()), list(expected.values()), atol=1e-6)
    assert max(probs, key=probs.get) == "cat" and notice == ""
    assert handlers.predict(None) == (None, "") and handlers.predict("") == (None, "")


def test_predict_gives_the_notice_for_a_picture_of_nothing(handlers, classifier, uploads):
    grey = uploads / "grey.png"
    Image.new("RGB", (64, 64), (128, 128, 128)).save(grey)
    logits = classifier.logits(torch.from_numpy(classifier.to_uint8(grey)[None]))
    assert bool(classifier.unfamiliar(logits)[0])  # the rule fires for flat grey (tests/test_app.py)
    probs, notice = handlers.predict({"path": str(grey)})
    assert notice == app.unsure_notice(probs, True) != ""


def test_predict_of_bytes_from_a_webcam_frame(handlers, classifier):
    probs, _ = handlers.predict(_frame(SHIP.read_bytes()))
    assert max(probs, key=probs.get) == "ship"


def test_a_bad_file_gets_the_decoders_own_message(handlers, uploads):
    bad = _put(uploads / "u", "cat.jpg", b"not a picture")
    with pytest.raises(gr.Error) as err:
        handlers.predict({"path": str(bad)})
    with pytest.raises(ImageError) as direct:
        handlers.clf.to_uint8(str(bad))
    assert err.value.message == html.escape(str(direct.value)) and err.value.print_exception is False


def test_the_decoders_message_is_shown_as_text(handlers, uploads, monkeypatch):
    def refuse(_image):
        raise ImageError("<img src=x onerror=alert(1)> & more")

    monkeypatch.setattr(handlers.clf, "to_uint8", refuse)
    with pytest.raises(gr.Error) as err:
        handlers.predict(_upload(uploads, CAT))
    assert err.value.message == "&lt;img src=x onerror=alert(1)&gt; &amp; more"


def test_a_decoder_crash_gets_a_generic_sentence(handlers, uploads, monkeypatch, caplog):
    def crash(_image):
        raise RuntimeError("/srv/secret/path")

    monkeypatch.setattr(handlers.clf, "to_uint8", crash)
    with pytest.raises(gr.Error) as err:
        handlers.predict(_upload(uploads, CAT))
    assert err.value.message == app.UNREADABLE and err.value.print_exception is False
    assert isinstance(err.value.__cause__, RuntimeError)
    logged = [r for r in caplog.records if r.name == "app"]
    assert [r.getMessage() for r in logged] == ["decoding an upload failed outside ImageError"]
    assert logged[0].exc_info[0] is RuntimeError  # the operator sees the traceback, the visitor doesn't


def _counting(handlers, monkeypatch) -> list[str]:
    decoded = []
    real = handlers.decode

    def decode(source):
        decoded.append(source)
        return real(source)

    monkeypatch.setattr(handlers, "decode", decode)
    return decoded


def test_explain_after_predict_decodes_nothing_again(handlers, uploads, monkeypatch):
    decoded = _counting(handlers, monkeypatch)
    cat = _upload(uploads, CAT)
    first = handlers.predict(cat)
    handlers.explain(cat)
    assert handlers.predict(cat) == first and decoded == [cat["path"]]
    frame = _frame(CAT.read_bytes())
    handlers.predict(frame)
    handlers.predict(frame)  # bytes name no file: not remembered
    assert len(decoded) == 3


def test_the_memory_keeps_the_most_recently_used_pictures(handlers, uploads, monkeypatch):
    decoded = _counting(handlers, monkeypatch)
    handlers.RECENT = 2
    a, b, c = (_upload(uploads, p, sub=s) for p, s in [(CAT, "a"), (SHIP, "b"), (CAT, "c")])
    handlers.predict(a)
    handlers.predict(b)
    handlers.predict(a)  # a is now the most recent
    handlers.predict(c)  # b is forgotten
    assert len(handlers._recent) == 2
    handlers.predict(a)
    assert decoded == [a["path"], b["path"], c["path"]]
    handlers.predict(b)
    assert decoded[-1] == b["path"] and len(decoded) == 4


def test_explain_shows_the_input_and_the_top_classes_heatmap(handlers, classifier, uploads):
    seen, heat = handlers.explain(_upload(uploads, SHIP))
    pixels = classifier.to_uint8(SHIP)
    probs = classifier.predict_pixels(pixels[None])[0]
    top = CLASSES.index(max(probs, key=probs.get))
    np.testing.assert_array_equal(np.asarray(Image.open(seen)), pixels.repeat(8, 0).repeat(8, 1))
    expected = app.heat_overlay(pixels, grad_cam(classifier.model, pixels, class_index=top))
    np.testing.assert_array_equal(np.asarray(Image.open(heat)), expected)
    assert handlers.explain(None) == (None, None)


def test_the_heatmap_is_the_class_the_bars_rank_first_not_the_plain_forwards(classifier, uploads):
    # cat_2.jpg: the network alone ranks cat first, its mean with the mirror image (what the bars show)
    # dog. The heatmap must be dog's. fp32, so that the example holds on any CPU.
    handlers = app.Handlers(Classifier(classifier.model, precision="fp32"))
    cat2 = ROOT / "examples" / "cat_2.jpg"
    probs, _ = handlers.predict(_upload(uploads, cat2))
    pixels = handlers.clf.to_uint8(cat2)
    with torch.no_grad():
        plain = classifier.model(normalize(torch.from_numpy(pixels[None]), classifier.mean, classifier.std))
    top = CLASSES.index(max(probs, key=probs.get))
    assert top != int(plain.argmax()), "cat_2.jpg no longer tells the two rules apart"
    _, heat = handlers.explain(_upload(uploads, cat2, sub="again"))
    expected = app.heat_overlay(pixels, grad_cam(classifier.model, pixels, class_index=top))
    np.testing.assert_array_equal(np.asarray(Image.open(heat)), expected)


def test_pictures_are_files_named_by_their_content_written_once(handlers, uploads):
    pixels = np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    path = Path(handlers.png(pixels))
    data = path.read_bytes()
    assert path.parent == uploads / "cifar-pictures" and path.name == hashlib.sha256(data).hexdigest() + ".png"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels)
    assert str(path) in handlers.opened
    before = path.stat().st_mtime_ns, path.stat().st_ino
    os.utime(path, ns=(1, 1))
    assert Path(handlers.png(pixels)) == path and path.stat().st_mtime_ns == 1  # not rewritten
    assert path.stat().st_ino == before[1] and sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_pictures_are_staged_beside_their_name_and_renamed(handlers, tmp_path, monkeypatch):
    # Gradio has not made its upload folder yet (no upload since the server started): it is created.
    # The file is written under a hidden temporary name in the same folder, then renamed: an atomic
    # rename needs one filesystem, and a reader never sees half a picture under the real name.
    folder = tmp_path / "not" / "yet"
    monkeypatch.setattr(app, "get_upload_folder", lambda: str(folder))
    renames = []
    real = os.replace

    def replace(src, dst):
        renames.append((Path(src), Path(dst), Path(src).read_bytes()))
        return real(src, dst)

    monkeypatch.setattr(app.os, "replace", replace)
    path = Path(handlers.png(np.zeros((4, 4, 3), np.uint8)))
    [(src, dst, data)] = renames
    assert dst == path and src.parent == path.parent == folder / "cifar-pictures"
    assert src.name.startswith(".") and data == path.read_bytes()


def test_live_frames_answer_and_bad_frames_keep_the_last_answer(handlers, uploads):
    ship = _frame(SHIP.read_bytes())
    probs, notice = handlers.predict_live(ship)
    assert max(probs, key=probs.get) == "ship" and notice == ""
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (128,) * 3).save(buf, "PNG")
    probs, notice = handlers.predict_live(_frame(buf.getvalue(), "image/png"))
    assert notice == app.unsure_notice(probs, True) != ""
    skip = gr.skip()
    for bad in [None, {"url": "data:image/jpeg;base64,!!"}, {"url": "data:image/jpeg;base64,AAAA"},
                {"path": "/etc/passwd"}]:
        assert handlers.predict_live(bad) == skip, bad


def test_no_frame_is_not_an_error_in_the_log(handlers, caplog):
    assert handlers.predict_live(None) == gr.skip() and handlers.predict_live("") == gr.skip()
    assert not [r for r in caplog.records if r.name == "app"]
