"""What a public Gradio 6.31 server needs that Gradio doesn't do: one workaround per Gradio behaviour,
so each can be deleted when Gradio fixes it. :func:`install` applies them to a demo.

* Gradio downloads any http(s) URL found in a file payload's ``path`` (queue joins, streams, the example
  route, MCP tool calls) before the handler runs, whole into memory, with no size cap; and its
  ``/gradio_api/file=https://...`` route is an open proxy. :class:`Guard` refuses such payloads (422) and
  routes; the download and proxy functions are replaced by refusals as a backstop; the MCP tool takes
  base64 pictures only.
* Gradio reads any request body whole (``max_file_size`` limits each uploaded file only). :class:`Guard`
  refuses bodies over a limit (413) before reading them, declared or chunked; MCP's own transport refuses
  bodies over 4 MiB, so that is the MCP limit.
* Gradio's queue bounds the total work, not any one client's share: :class:`Guard` lets a client (see
  :func:`client_key`) hold at most ``MAX_EVENTS`` unfinished events and upload ``UPLOAD_BYTES_PER_S`` on
  average (a burst of ``UPLOAD_BURST``), and answers the excess with 429.
* The upload route takes up to 1,000 files a request; a nameless part gives a 500; refused parts leave
  untracked files. :func:`install` makes it take one file, or answer 400.
* A live stream whose client stops sending frames holds its slot until ``time_limit``: :class:`Guard`
  ends it after ``LIVE_IDLE_S`` without a frame, as the page's Stop button does.
* ``delete_cache`` deletes only files Gradio tracks (not MCP's base64 copies, stray uploads, our
  pictures), can stop for good ("Set changed size during iteration"), and nothing bounds the cache's
  size in between. :class:`Sweeper` deletes every file in the upload folder past its age, and the oldest
  first past a byte or file budget, from a thread, never inside a request.
* Routes this app never uses are open (``process_recording`` runs ffmpeg on a visitor's file where it is
  installed, ``deep_link`` writes files, dev and vibe routes...): :class:`Guard` answers 404.
* ``queue(api_open=None)`` leaves ``/gradio_api/run/<api_name>`` open outside the queue off Spaces.
* Gradio saves a returned numpy picture by rewriting ``<hash>/image.png`` in place while a browser may
  still fetch it: :func:`write_png` writes a file once, named by a keyed hash no one else can compute.
* With ``preprocess=False`` Gradio hands an image payload on unchecked: :func:`image_source` opens only
  files inside the upload folder.
* glibc arenas: ``MALLOC_ARENA_MAX`` must be set before start, which a Space can't do.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ctypes
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import os
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.utils import get_upload_folder, is_in_or_equal

LOG = logging.getLogger("guard")
MAX_BODY_BYTES = 2 * 1024 * 1024  # any other request body: the queue's JSON, a live frame's data URL (~20 KB)
MAX_UPLOAD_BODY_BYTES = 10 * 1024 * 1024 + 64 * 1024  # one 10 MB file plus its multipart framing
MAX_MCP_BYTES = 4 * 1024 * 1024  # the mcp package's own transport limit: a picture of about 3 MB in base64
MAX_EVENTS = 2  # unfinished queue events per client: the page runs one at a time (/predict, then /explain)
UPLOAD_BURST, UPLOAD_BYTES_PER_S = 40 * 1024 * 1024, 512 * 1024  # per client: 30 MB a minute on average
LIVE_IDLE_S = 3.0  # a server-side live stream without a frame for this long ends
CACHE_BUDGET_BYTES = int(os.environ.get("CACHE_BUDGET_MB", "1024")) * 1024 * 1024
CACHE_BUDGET_FILES = 20_000
# Routes the page, gradio_client and MCP clients never use.
CLOSED = ("/gradio_api/process_recording", "/gradio_api/deep_link", "/gradio_api/dev/", "/gradio_api/vibe",
          "/gradio_api/undo-vibe", "/gradio_api/proxy=", "/gradio_api/file/", "/gradio_api/component_server",
          "/gradio_api/custom_component", "/gradio_api/call/", "/gradio_api/run-history", "/gradio_api/runs",
          "/monitoring")
JSON_ROUTES = ("/gradio_api/queue/join", "/gradio_api/stream/", "/gradio_api/run/", "/gradio_api/api/")
REMOTE = ("http:", "https:", "//", "\\\\")
NO_URLS = "This app does not fetch pictures from URLs: send the picture itself."
REFUSED = "This picture can't be opened here. Upload the picture itself."  # any path outside the upload folder
_SECRET = os.urandom(32)  # names of our pictures: only this process can compute them


def client_key(scope: dict) -> str:
    """Who a request counts against. On a Hugging Face Space (``SPACE_ID`` set) every request comes from
    the Space's proxy, which appends the visitor's address to ``X-Forwarded-For``: the rightmost public
    address there (entries left of it are whatever the client sent). Elsewhere, the connection's peer
    (uvicorn itself takes ``X-Forwarded-For`` only from a proxy on 127.0.0.1). IPv6 by its /64."""
    if os.environ.get("SPACE_ID"):
        forwarded = b",".join(v for k, v in scope["headers"] if k == b"x-forwarded-for").decode("latin-1")
        for part in reversed(forwarded.split(",")):
            try:
                ip = ipaddress.ip_address(part.strip())
            except ValueError:
                continue
            if ip.is_global:
                return str(ip) if ip.version == 4 else str(ipaddress.ip_interface(f"{ip}/64").network)
    return scope["client"][0] if scope.get("client") else "unknown"


def remote_path(node: Any) -> str | None:
    """The first ``path`` of a dict, at any depth, that names a URL rather than a file."""
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, dict):
            path = n.get("path")
            if isinstance(path, str) and path.strip().lower().startswith(REMOTE):
                return path
            stack.extend(n.values())
        elif isinstance(n, list):
            stack.extend(n)
    return None


async def reply(send: Callable, status: int, detail: str, scope: dict | None = None) -> None:
    """Answer with ``status`` and ``{"detail": ...}`` (the page shows it), logging one line per refusal."""
    if scope is not None:
        LOG.warning("refused %d %s %s from %s: %s", status, scope["method"], scope["path"], client_key(scope), detail)
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _read_capped(receive: Callable, limit: int) -> bytes | None:
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body")
        if len(body) > limit:
            return None
    return body


def _replay(body: bytes, receive: Callable) -> Callable:
    pending = [{"type": "http.request", "body": body}]  # more_body: False by default

    async def replay() -> dict:
        return pending.pop() if pending else await receive()  # then e.g. http.disconnect

    return replay


class Guard:
    """ASGI middleware in front of a demo's Gradio app (see the module docstring)."""

    def __init__(self, app: Callable, demo: gr.Blocks) -> None:
        self.app, self.queue = app, demo._queue
        self.events: dict[str, set[str]] = defaultdict(set)  # client -> ids of the events it joined
        self.joining: dict[str, int] = defaultdict(int)  # client -> joins not answered yet
        self.buckets: dict[str, tuple[float, float]] = {}  # client -> (upload bytes allowed, when)
        self.last_frame: dict[str, float] = {}  # live event id -> when its last frame came
        self.watchdog: asyncio.Task | None = None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        if path.startswith(CLOSED) or (method in ("GET", "HEAD") and path.startswith("/gradio_api/stream/")):
            return await reply(send, 404, "Not Found", scope)
        if path.startswith("/gradio_api/file=") and path[17:].strip().lower().startswith(REMOTE):
            return await reply(send, 404, NO_URLS, scope)
        if method not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        if self.watchdog is None:
            self.watchdog = asyncio.get_running_loop().create_task(self.end_idle_streams())
        upload = path.rstrip("/").endswith("/upload")
        mcp = path.startswith("/gradio_api/mcp")
        limit = MAX_UPLOAD_BODY_BYTES if upload else MAX_MCP_BYTES if mcp else MAX_BODY_BYTES
        too_large = f"Request body too large: the limit is {limit // 1024} KiB."
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return await reply(send, 413, too_large, scope)
        if upload and not self.take_upload(client_key(scope), int(length or limit)):
            return await reply(send, 429, "Too many uploads from your address: wait a minute and try again.", scope)
        if length is None or path.startswith(JSON_ROUTES):  # read it now (at most the limit), then hand it on
            body = await _read_capped(receive, limit)
            if body is None:
                return await reply(send, 413, too_large, scope)
            receive = _replay(body, receive)
            if path.startswith(JSON_ROUTES):
                return await self.json_route(scope, body, receive, send)
        return await self.app(scope, receive, send)

    def take_upload(self, key: str, nbytes: int) -> bool:
        """Token bucket: ``nbytes`` more from ``key`` fit in its allowance (and are taken), or not."""
        now = time.monotonic()
        allowed, then = self.buckets.get(key, (UPLOAD_BURST, now))
        allowed = min(UPLOAD_BURST, allowed + (now - then) * UPLOAD_BYTES_PER_S)
        if nbytes > allowed:
            return False
        self.buckets[key] = (allowed - nbytes, now)
        if len(self.buckets) > 10_000:  # forget clients whose allowance is full again
            self.buckets = {k: v for k, v in self.buckets.items() if v[0] + (now - v[1]) * UPLOAD_BYTES_PER_S
                            < UPLOAD_BURST}
        return True

    async def json_route(self, scope: dict, body: bytes, receive: Callable, send: Callable) -> None:
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            payload = None  # Gradio answers it  # pragma: no mutate (only its not being a dict is read)
        if isinstance(payload, dict) and remote_path(payload.get("data")):
            return await reply(send, 422, NO_URLS, scope)
        path = scope["path"]
        if path.startswith("/gradio_api/stream/"):
            self.last_frame[path.split("/")[3]] = time.monotonic()
        if path != "/gradio_api/queue/join":
            return await self.app(scope, receive, send)
        key = client_key(scope)
        if self.unfinished(key) >= MAX_EVENTS:
            return await reply(send, 429, f"You already have {MAX_EVENTS} pictures waiting or being classified: "
                                          "wait for their answers, then try again.", scope)
        self.joining[key] += 1
        chunks: list[bytes] = []

        async def watch(message: dict) -> None:  # learn the event id from the join's answer
            if message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    try:
                        event_id = json.loads(b"".join(chunks)).get("event_id")
                    except (ValueError, AttributeError):
                        event_id = None  # pragma: no mutate (only its truth is read)
                    if event_id:
                        self.events[key].add(event_id)
                        self.last_frame[event_id] = time.monotonic()
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            self.joining[key] -= 1
            if not self.joining[key]:
                del self.joining[key]

    def unfinished(self, key: str) -> int:
        """Events of ``key`` waiting or running: Gradio drops an event's id when it ends, however it ends."""
        ids = self.events.get(key)
        if ids is not None:
            ids.intersection_update(self.queue.event_ids_to_events.keys())
            if not ids:
                del self.events[key]
        return len(ids or ()) + self.joining.get(key, 0)

    async def end_idle_streams(self) -> None:
        """End a live stream that got no frame for ``LIVE_IDLE_S``: what POST /stream/{id}/close does."""
        while True:
            await asyncio.sleep(LIVE_IDLE_S / 3)
            now = time.monotonic()
            for event_id, seen in list(self.last_frame.items()):
                event = self.queue.event_ids_to_events.get(event_id)
                if event is None:
                    del self.last_frame[event_id]
                elif event.streaming and not event.closed and now - seen > LIVE_IDLE_S:
                    event.closed, event.run_time = True, math.inf
                    event.signal.set()


class Sweeper(threading.Thread):
    """Deletes files in the upload folder ``keep_s`` seconds after they were last written, and past
    ``max_bytes`` or ``max_files`` the oldest first; every ``every_s`` seconds, in this thread. The files
    Gradio keeps for the page itself (``keep_in_cache``: the examples' copies) stay."""

    def __init__(self, demo: gr.Blocks, keep_s: float, every_s: float, max_bytes: int, max_files: int) -> None:
        super().__init__(daemon=True, name="upload-sweeper")
        self.demo, self.keep_s, self.every_s = demo, keep_s, every_s
        self.max_bytes, self.max_files = max_bytes, max_files
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every_s):
            try:
                self.sweep()
            except OSError:
                LOG.exception("sweeping the upload folder failed")

    def sweep(self) -> None:
        """One pass: the upload folder and the folders in it, oldest files deleted first."""
        root, now = Path(get_upload_folder()), time.time()
        folders = [root, *(Path(e.path) for e in os.scandir(root) if not e.is_symlink() and e.is_dir())]
        files = sorted((e.stat().st_mtime, e.stat().st_size, e.path)  # not symlinks: stat() is lstat()
                       for folder in folders for e in os.scandir(folder) if not e.is_symlink() and e.is_file())
        total, count = sum(f[1] for f in files), len(files)
        keep = {p for block in self.demo.blocks.values() for p in getattr(block, "keep_in_cache", ())}  # examples
        for mtime, size, path in files:
            if now - mtime <= self.keep_s and total <= self.max_bytes and count <= self.max_files:
                break
            if path in keep:
                continue
            Path(path).unlink(missing_ok=True)
            total, count = total - size, count - 1
            for tracked in self.demo.temp_file_sets:  # so Gradio forgets it too
                tracked.discard(path)
        for folder in folders[1:]:  # empty for a while: an upload being written may be inside a new one
            with contextlib.suppress(OSError):  # not empty, or gone
                if now - folder.stat().st_mtime > self.keep_s and not any(folder.iterdir()):
                    folder.rmdir()


def install(demo: gr.Blocks, keep_uploads_s: float) -> dict[str, Any]:
    """Apply the workarounds to ``demo``; return the ``app_kwargs`` for its ``launch``: the middleware,
    and a lifespan that runs the :class:`Sweeper` while the server runs."""
    from starlette.middleware import Middleware

    _patch_gradio()

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):
        sweeper = Sweeper(demo, keep_uploads_s, min(5.0, keep_uploads_s / 2), CACHE_BUDGET_BYTES, CACHE_BUDGET_FILES)
        sweeper.start()
        try:
            yield
        finally:
            sweeper.stopped.set()

    return {"middleware": [Middleware(Guard, demo=demo)], "lifespan": lifespan}


def _patch_gradio() -> None:
    """Module-level replacements in Gradio (once per process): no URL downloads or proxying, one file
    per upload, base64-only pictures over MCP."""
    from gradio import processing_utils, route_utils, routes
    from gradio.mcp import GradioMCPServer
    from gradio.route_utils import GradioUploadFile, MultiPartException

    if getattr(route_utils.GradioMultiPartParser, "one_file", False):
        return

    async def no_download(url: str, cache_dir: str) -> str:
        raise gr.Error(NO_URLS, print_exception=False)

    async def no_proxy(url: str, request: Any) -> Any:
        raise gr.Error(NO_URLS, print_exception=False)

    class OneFile(route_utils.GradioMultiPartParser):
        """One file part named ``files`` with a file name, or a 400 and no file left behind."""

        one_file = True

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **(kwargs | {"max_files": 1, "max_fields": 4}))

        async def parse(self):
            form = await super().parse()
            items = form.multi_items()
            if len(items) != 1 or any(k != "files" or not isinstance(v, GradioUploadFile)
                                      or Path(v.filename or ".").name in ("", "..") for k, v in items):
                for _, v in items:
                    if isinstance(v, GradioUploadFile):
                        v.file.close()
                        Path(v.file.name).unlink(missing_ok=True)
                raise MultiPartException("Send one file, as a form part named 'files' with a file name.")
            return form

    convert = GradioMCPServer.convert_strings_to_filedata

    def base64_only(self, value: Any, positions: list) -> Any:
        def walk(node: Any, at: list) -> None:
            if isinstance(node, dict | list):
                for k, v in (node.items() if isinstance(node, dict) else enumerate(node)):
                    walk(v, at + [k])
            elif isinstance(node, str) and at in positions and not node.startswith("data:"):
                raise ValueError("Send the picture itself, as a base64 data URL ('data:image/png;base64,...'), "
                                 f"at most {MAX_MCP_BYTES * 3 // 4 // 1_000_000} MB: {NO_URLS}")
        walk(value, [])
        return convert(self, value, positions)

    processing_utils.async_ssrf_protected_download = no_download
    routes.secure_url_stream_response = no_proxy
    route_utils.GradioMultiPartParser = OneFile
    GradioMCPServer.convert_strings_to_filedata = base64_only


def image_source(payload: Any, data_url: bool = False) -> str | bytes | None:
    """The file path or bytes behind a raw ``gr.Image`` payload (``None`` when there is no image).

    Uploads, snapshots, pastes, examples and MCP pictures arrive as a file in the upload folder
    (``{"path": ...}``); live webcam frames, where ``data_url`` allows them, as a
    ``data:image/...;base64,...`` URL. Any other path, whoever sent it, is refused with one sentence
    whether or not it exists.
    """
    if payload is None or payload == "":
        return None
    if isinstance(payload, dict):
        url = payload.get("url")
        if data_url and isinstance(url, str) and url.startswith("data:"):
            try:
                return base64.b64decode(url.partition(",")[2], validate=True)
            except (binascii.Error, ValueError):
                raise gr.Error("The picture data is not valid base64.", print_exception=False) from None
        payload = payload.get("path")
    if (not isinstance(payload, str) or not payload or "\0" in payload
            or not is_in_or_equal(payload, get_upload_folder())):
        raise gr.Error(REFUSED, print_exception=False)
    return payload


def write_png(data: bytes) -> str:
    """``data`` (a PNG) as a file in the upload folder, written once under a temporary name and renamed
    (Gradio then copies a returned path into its cache only if absent), named by a hash keyed with this
    process's secret: holding a picture tells no one the name of its copy here."""
    folder = Path(get_upload_folder()) / "cifar-pictures"
    path = folder / f"{hmac.new(_SECRET, data, hashlib.sha256).hexdigest()}.png"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        fd, staging = tempfile.mkstemp(dir=folder, prefix=".png.")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(staging, path)
    return str(path)


def limit_malloc_arenas(arenas: int = 2) -> None:
    """``mallopt(M_ARENA_MAX)`` from inside, for the threads started after it (glibc only)."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # -8: M_ARENA_MAX
    except (OSError, AttributeError):  # not glibc
        pass
