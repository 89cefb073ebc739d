"""What a public Gradio 6.31 server needs that Gradio doesn't do: one workaround per Gradio behaviour,
so each can be deleted when Gradio fixes it.

* Gradio reads any request body whole; ``launch(max_file_size=)`` limits only each uploaded file.
  :class:`RequestLimits` refuses bodies over a limit (413) before reading them, declared or chunked.
* Gradio's upload folder grows until ``delete_cache`` runs (every half of the retention time): a flood
  of uploads could fill the disk. :class:`RequestLimits` refuses uploads while the folder is over a
  byte budget (507), measuring it in a worker thread at most every 10 s.
* With ``preprocess=False`` Gradio hands an image payload on without checking where its path points
  (it checks only payloads that carry ``meta: {"_type": "gradio.FileData"}``). :func:`image_source`
  opens only files inside Gradio's upload folder.
* ``delete_cache`` deletes the files Gradio knows about, not the copies its MCP server saves from an
  agent's base64 picture: :class:`Retention` registers those (and our own output files) for deletion.
* Gradio saves a returned numpy picture by rewriting ``<hash>/image.png`` in place whenever the same
  picture comes back, while a browser may still be fetching it ("Too much data for declared
  Content-Length"). :func:`write_png` writes a file once under a temporary name and renames it; Gradio
  then copies a returned path into its cache only if absent, by an atomic rename.
* glibc gives busy threads heap arenas of their own and rarely returns their memory; the usual fix,
  ``MALLOC_ARENA_MAX``, must be set before start, which a Space can't do: :func:`limit_malloc_arenas`.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import gradio as gr
from gradio.utils import get_upload_folder, is_in_or_equal

# Any request body (the queue's JSON, where a webcam frame is a ~20 KB data URL) over this is refused
# with HTTP 413 before it is read; an upload's body may be a file plus its multipart framing.
MAX_BODY_BYTES = 2 * 1024 * 1024
MAX_UPLOAD_BODY_BYTES = 10 * 1024 * 1024 + 64 * 1024
# Uploads are refused (HTTP 507) while Gradio's upload folder holds more than this. Set by CACHE_BUDGET_MB.
CACHE_BUDGET_BYTES = int(os.environ.get("CACHE_BUDGET_MB", "1024")) * 1024 * 1024
# One sentence for every path outside the upload folder, whether or not it exists.
REFUSED = "This picture can't be opened here. Upload the picture itself."


class RequestLimits:
    """ASGI middleware: refuse over-large bodies (413) before they are read, and uploads while the
    upload folder is over its budget (507)."""

    def __init__(self, app: Callable, max_body: int = MAX_BODY_BYTES, max_upload: int = MAX_UPLOAD_BODY_BYTES,
                 cache_budget: int = CACHE_BUDGET_BYTES) -> None:
        self.app, self.max_body, self.max_upload, self.cache_budget = app, max_body, max_upload, cache_budget
        self._cache_size, self._measured_at = 0, 0.0

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        # An MCP call may carry a base64 picture that Gradio saves into the cache: an upload too.
        upload = scope["path"].rstrip("/").endswith("/upload") or "/gradio_api/mcp" in scope["path"]
        limit = self.max_upload if upload else self.max_body
        if upload and await self.cache_size() > self.cache_budget:
            return await refuse(send, 507, "The server's picture cache is full. Try again in a few minutes.")
        too_large = f"Request body too large (the limit is {limit // 1024} KiB)."
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return await refuse(send, 413, too_large)
        if length is None:  # chunked: read at most the limit, then hand the body on
            body = await _read_capped(receive, limit)
            if body is None:
                return await refuse(send, 413, too_large)
            receive = _replay(body, receive)
        return await self.app(scope, receive, send)

    async def cache_size(self) -> int:
        """Bytes in Gradio's upload folder, measured at most every 10 s, in a worker thread (a walk of
        thousands of files must not stall the event loop)."""
        if time.monotonic() - self._measured_at > 10.0:
            self._measured_at = time.monotonic()
            self._cache_size = await anyio.to_thread.run_sync(_folder_bytes, Path(get_upload_folder()))
        return self._cache_size


def _folder_bytes(folder: Path) -> int:
    total = 0
    for f in folder.rglob("*"):
        try:
            total += f.stat().st_size if f.is_file() else 0
        except OSError:  # deleted while we walked
            pass
    return total


async def refuse(send: Callable, status: int, text: str) -> None:
    """Answer an HTTP request with ``status`` and a plain-text sentence."""
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _read_capped(receive: Callable, limit: int) -> bytes | None:
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if len(body) > limit:
            return None
    return body


def _replay(body: bytes, receive: Callable) -> Callable:
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> dict:
        return pending.pop() if pending else await receive()  # then e.g. http.disconnect

    return replay


def image_source(payload: Any) -> str | bytes | None:
    """The file path or bytes behind a raw ``gr.Image`` payload (``None`` when there is no image).

    Uploads, snapshots, pastes and examples arrive as a file in Gradio's upload folder
    (``{"path": ...}``); live webcam frames as a ``data:image/...;base64,...`` URL. Any other path,
    whoever sent it, is refused with the same sentence whether or not it exists.
    """
    if payload is None or payload == "":
        return None
    if isinstance(payload, dict):
        url = payload.get("url") or ""
        if isinstance(url, str) and url.startswith("data:"):
            if len(url) > MAX_BODY_BYTES:
                raise gr.Error("The picture is too large to send inline. Upload a smaller file.")
            try:
                return base64.b64decode(url.partition(",")[2], validate=True)
            except (binascii.Error, ValueError):
                raise gr.Error("The picture data is not valid base64.") from None
        payload = payload.get("path")
    if not isinstance(payload, str) or not payload or "\0" in payload:
        raise gr.Error(REFUSED, print_exception=False)
    if not is_in_or_equal(payload, get_upload_folder()):
        raise gr.Error(REFUSED, print_exception=False)
    return payload


class Retention(set):
    """Files for Gradio's ``delete_cache`` beyond the ones it tracks (``demo.temp_file_sets.append``):
    our output pictures, and the first copy Gradio's MCP server writes of an agent's base64 picture
    before handing the app a second. Iterable by Gradio's deletion thread while handlers add to it."""

    def __iter__(self):
        return iter(set.copy(self))

    def keep(self, path: str) -> None:
        """Delete ``path`` with the uploads, and any fresh copy of an agent's picture with it."""
        self.add(path)
        if Path(path).name.startswith("file."):  # how Gradio names a file it saved from base64
            self.update(_fresh_copies(Path(path)))


def _fresh_copies(path: Path, within_s: float = 120.0) -> list[str]:
    """Other files in the upload folder made in the last ``within_s`` seconds with the same bytes as ``path``."""
    try:
        stat, now = path.stat(), time.time()
        folder = Path(get_upload_folder())
        dirs = [d for d in folder.iterdir() if d.is_dir() and now - d.stat().st_mtime < within_s]
        same = [f for d in dirs for f in d.iterdir() if f.is_file() and f != path and f.stat().st_size == stat.st_size]
        data = path.read_bytes() if same else b""
        return [str(f) for f in same if f.read_bytes() == data]
    except OSError:
        return []


def write_png(data: bytes) -> str:
    """``data`` (a PNG) as a file in the upload folder named by its content, written once (see above)."""
    folder = Path(get_upload_folder()) / "cifar-pictures"
    path = folder / f"{hashlib.sha256(data).hexdigest()}.png"
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
