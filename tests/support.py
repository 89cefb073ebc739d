"""The one test-support module shared by the tests and the benchmarks: ``from tests.support import ...``.

Helpers only (no tests, no fixtures: those live in tests/conftest.py). Everything here is generated in
memory and deterministic: the same bytes on every call, so a failure reproduces and a benchmark
measures the same work each run.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from typing import NamedTuple

import numpy as np
from PIL import Image

# =============================================================================================
# Pictures: test pictures, and the hostile-file corpus
#
#     from tests.support import hostile_files
#     for name, f in hostile_files().items():   # name is a file name: write it to disk as it is
#         ...                                    # f.data: the bytes; f.refused: must raise ImageError
#
# A refused file must raise cifar_model.ImageError (a sentence a user can act on); any other file must
# give the network's 32x32 input (a prediction). Nothing may hang, crash the process, or allocate
# memory in proportion to what a file merely *claims* to hold.
# =============================================================================================


class HostileFile(NamedTuple):
    data: bytes
    refused: bool  # True: the library must raise ImageError; False: it must give a prediction


def hostile_files() -> dict[str, HostileFile]:
    """Every hostile or awkward file, by file name (its extension is the one an upload would have)."""
    refused, accepted = _hostile()
    return {name: HostileFile(data, True) for name, data in refused} | {
        name: HostileFile(data, False) for name, data in accepted}


def encode(img: Image.Image, fmt: str, **params) -> bytes:
    """``img`` saved as ``fmt`` (a Pillow format name) into bytes."""
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def photo(width: int = 64, height: int = 48) -> Image.Image:
    """A smooth, colourful RGB picture (red rises left to right, green top to bottom, blue in diagonal
    bands): deterministic, and fast to make even at 4000 x 3000."""
    x = np.arange(width, dtype=np.uint32)[None, :]
    y = np.arange(height, dtype=np.uint32)[:, None]
    r = np.broadcast_to(x * 255 // max(width - 1, 1), (height, width))
    g = np.broadcast_to(y * 255 // max(height - 1, 1), (height, width))
    return Image.fromarray(np.stack([r, g, (x + y) * 4 % 256], axis=-1).astype(np.uint8), "RGB")


def png_chunk(tag: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, tag, data and the CRC Pillow verifies."""
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png_header(width: int, height: int, nbytes: int = 0) -> bytes:
    """A valid PNG header of an 8-bit grey ``width`` x ``height`` picture with no pixel data (decoding
    it fails: the file ends too early): a few bytes that claim ``width * height`` pixels. With
    ``nbytes`` (77 or more), an ancillary chunk of zeros pads the file to exactly that many bytes."""
    head = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    tail = png_chunk(b"IDAT", zlib.compress(b"")) + png_chunk(b"IEND", b"")
    padding = png_chunk(b"prVt", bytes(nbytes - len(head) - len(tail) - 12)) if nbytes else b""
    return head + padding + tail


@functools.lru_cache(maxsize=1)
def _hostile() -> tuple[tuple[tuple[str, bytes], ...], tuple[tuple[str, bytes], ...]]:
    # Built once per process (about 0.2 s); tuples, so no caller can change the cached corpus.
    pic = photo()
    jpeg = encode(pic, "JPEG", quality=90)
    sof = jpeg.index(b"\xff\xc0") + 5  # SOF0: marker, length (2 bytes), precision (1), then height, width
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    gif = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    last_frame = gif[gif.rindex(b"\x21\xf9"):-1]  # graphic control extension + image, before the trailer
    small_gif = encode(Image.new("P", (10, 10), 1), "GIF")
    frame = small_gif.index(b"\x2c") + 5  # the first image descriptor: 2C, left, top, then width, height
    big_jpeg = encode(photo(320, 240), "JPEG", quality=90)
    webp = encode(Image.new("RGB", (1, 1)), "WEBP", lossless=True)
    vp8l = webp.index(b"VP8L") + 9  # tag, size (4 bytes), signature (1), then width-1, height-1 (14 bits each)
    png = encode(pic, "PNG")
    rotated, broken = Image.Exif(), Image.Exif()  # EXIF Orientation (tag 0x0112) 6: turn 90 degrees clockwise
    rotated[0x0112] = broken[0x0112] = 6
    broken[0x0131] = "text"  # Software (ASCII), renamed below to a SHORT tag: Pillow can't write it back
    refused = {
        "empty.png": b"",
        "text.png": b"This is not a picture, only some text saved with a .png name.\n" * 4,
        "random.bin": np.random.default_rng(1).bytes(4096),
        "icon.ico": encode(pic, "ICO"),  # a real picture, in a format outside the allow-list
        "truncated.jpg": big_jpeg[: len(big_jpeg) // 2],  # cut in the compressed scan data
        "truncated_header.jpg": jpeg[: jpeg.index(b"\xff\xc4") + 40],  # cut inside the Huffman tables
        "strip_past_end.tif": _tiff_patch(encode(pic, "TIFF"), {273: 10**9}),  # pixel data "at" byte 1e9
        # a zTXt chunk inflating to 20 MB: Pillow stops at 1 MB and calls the file broken
        "text_bomb.png": png[:33] + png_chunk(b"zTXt", b"Comment\0\0" + zlib.compress(bytes(20_000_000), 9)) + png[33:],
        # decompression bombs: a few bytes that claim more pixels than the library accepts (50 Mpx)
        "bomb_64mp.png": png_header(8000, 8000),  # Pillow is silent: only the library's limit refuses it
        "bomb_100mp.png": png_header(10_000, 10_000),  # Pillow warns (DecompressionBombWarning)
        "bomb_400mp.png": png_header(20_000, 20_000),  # Pillow itself refuses (DecompressionBombError)
        "bomb.jpg": jpeg[:sof] + struct.pack(">HH", 8000, 8000) + jpeg[sof + 4:],
        "bomb.gif": small_gif[:6] + struct.pack("<HH", 8000, 8000) + small_gif[10:],  # the logical screen
        "bomb_frame.gif": small_gif[:frame] + struct.pack("<HH", 8000, 8000) + small_gif[frame + 4:],
        "bomb.tif": _tiff_patch(encode(Image.new("L", (8, 8)), "TIFF"), {256: 8000, 257: 8000}),
        # under 50 Mpx, but too many pixels for so few bytes: lossless formats decode every pixel
        "bomb_4mp.png": png_header(2000, 2000),
        "bomb_16mp.webp": webp[:vp8l] + struct.pack("<I", 3999 | 3999 << 14) + webp[vp8l + 4:],
    }
    palette = Image.new("P", (40, 30), 0)  # index 0, a red marked transparent, left; opaque blue right
    palette.putpalette([255, 0, 0, 0, 0, 255])
    palette.paste(1, (20, 0, 40, 30))
    accepted = {
        "1x1.png": encode(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"),
        "8000x6.png": encode(photo(8000, 6), "PNG"),
        "cmyk.jpg": encode(pic.convert("CMYK"), "JPEG", quality=90),
        "grey16.png": encode(Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20), "PNG"),
        "palette_transparent.png": encode(palette, "PNG", transparency=0),
        "grey_alpha.png": encode(Image.merge("LA", (pic.convert("L"), pic.getchannel("R"))), "PNG"),
        "fully_transparent.png": encode(Image.new("RGBA", (40, 30), (0, 0, 0, 0)), "PNG"),
        "animated.gif": gif,
        "gif_50000_frames.gif": gif[:-1] + last_frame * 49_997 + b"\x3b",  # 3 MB: only the first frame may be read
        "exif_rotated.jpg": encode(pic, "JPEG", exif=rotated),  # a phone photo taken upright
        # a broken EXIF block must not cost the prediction
        "exif_unwritable.jpg": encode(pic, "JPEG", exif=broken).replace(b"\x01\x31\x00\x02", b"\x01\x41\x00\x02"),
        "phone_mpo.jpg": encode(pic, "MPO", save_all=True, append_images=[pic.rotate(180)]),  # multi-picture JPEG
    }
    return tuple(refused.items()), tuple(accepted.items())


def _tiff_patch(tiff: bytes, values: dict[int, int]) -> bytes:
    # Rewrite the values of one-value SHORT/LONG tags in the first directory, widened to LONG.
    order = "<" if tiff[:2] == b"II" else ">"
    data = bytearray(tiff)
    ifd = struct.unpack_from(order + "I", data, 4)[0]
    for i in range(struct.unpack_from(order + "H", data, ifd)[0]):
        entry = ifd + 2 + 12 * i
        tag, _type, n = struct.unpack_from(order + "HHI", data, entry)
        if tag in values and n == 1:
            struct.pack_into(order + "HHII", data, entry, tag, 4, 1, values[tag])
    return bytes(data)


# =============================================================================================
# The served app over raw HTTP, the way anyone on the internet reaches it (not gradio_client, which
# adds the `meta` Gradio's own path check relies on): the page's /config for an event's fn_index, a
# join of the queue, its answer from the event stream.
# =============================================================================================


@functools.cache
def fn_index(url: str, api_name: str) -> int:
    """The ``fn_index`` of the event named ``api_name``, as the page's /config lists it."""
    import httpx

    config = httpx.get(url + "config", timeout=10).json()
    return next(d["id"] for d in config["dependencies"] if d.get("api_name") == api_name)


def upload(url: str, data: bytes, name: str = "picture.jpg", headers: dict | None = None) -> str:
    """POST one file to the upload route as the page does -> its path on the server."""
    import httpx

    reply = httpx.post(url + "gradio_api/upload", files=[("files", (name, data))], headers=headers, timeout=60)
    if reply.status_code != 200:
        raise RuntimeError(f"upload refused: {reply.status_code} {reply.text}")
    return reply.json()[0]


def call(url: str, api_name: str, payload, *, session_hash: str | None = None, close_streams: bool = True,
         timeout: float = 20.0, headers: dict | None = None) -> dict:
    """Join the queue with ``[payload]`` for the event ``api_name`` and return its ``process_completed``
    message (a live stream is closed after its first answer, as the page's Stop button does, unless
    ``close_streams`` is False). Raises TimeoutError after ``timeout`` seconds, RuntimeError when the
    join itself is refused."""
    import json
    import time
    import uuid

    import httpx

    session_hash = session_hash or uuid.uuid4().hex
    body = {"data": [payload], "fn_index": fn_index(url, api_name), "session_hash": session_hash}
    joined = httpx.post(url + "gradio_api/queue/join", json=body, timeout=timeout, headers=headers)
    if joined.status_code != 200:
        raise RuntimeError(f"join refused: {joined.status_code} {joined.text}")
    deadline = time.monotonic() + timeout
    with httpx.stream("GET", url + "gradio_api/queue/data", params={"session_hash": session_hash},
                      timeout=timeout, headers=headers) as stream:
        for line in stream.iter_lines():
            if time.monotonic() > deadline:
                break
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            if message.get("msg") == "process_streaming" and close_streams:
                httpx.post(url + f"gradio_api/stream/{message['event_id']}/close", timeout=timeout, headers=headers)
            elif message.get("msg") == "process_completed":
                return message
    raise TimeoutError(f"no answer from {api_name} within {timeout} s")


# =============================================================================================
# Chromium, as the browser tests and the live benchmark start it: Debian's build (Playwright's own
# download can't work here), headless, with a fake camera (a moving synthetic scene).
# =============================================================================================

CHROMIUM = __import__("os").environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--use-fake-device-for-media-stream"]
FAKE_UI = "--use-fake-ui-for-media-stream"  # the camera allowed without asking
