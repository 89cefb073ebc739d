"""A corpus of hostile and awkward picture files, built in memory, for tests and the load benchmark.

    from tests.hostile import EXPECTED, corpus
    for name, data in corpus().items():   # name is a file name: write it to disk as it is
        ...                               # EXPECTED[name] is "error" or "prediction"

"error" means the library must raise :class:`cifar_model.ImageError` (a sentence a user can act
on); "prediction" means it must return ten probabilities summing to 1. Nothing may hang, crash
the process, or allocate memory in proportion to what a file merely *claims* to hold.

Everything is generated (no binary fixtures in the repo) and deterministic: the same bytes on
every call, so a failure reproduces and a benchmark measures the same work each run.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib

import numpy as np
from PIL import Image

# The outcome each file must have: "error" (ImageError) or "prediction" (ten probabilities).
EXPECTED: dict[str, str] = {
    # -- not pictures at all
    "empty.png": "error",
    "text.png": "error",  # a text file with an image name
    "html_error_page.jpg": "error",  # what a failed download often saves under the image's name
    "svg.png": "error",  # a vector format we don't rasterise
    "random.bin": "error",
    "icon.ico": "error",  # a real picture in a format outside the allow-list
    # -- damaged pictures
    "truncated.jpg": "error",  # cut in the compressed scan data
    "truncated_header.jpg": "error",  # cut inside the Huffman tables: fails already in Image.open
    "truncated_progressive.jpg": "error",
    "truncated.png": "error",
    "truncated.gif": "error",
    "png_bad_crc.png": "error",
    "png_zero_width.png": "error",
    "jpeg_header_only.jpg": "error",
    # -- decompression bombs: a few KB that claim more pixels than we accept
    "bomb_400mp.png": "error",  # Pillow itself refuses (over 2 x 89.5 Mpx)
    "bomb_100mp.png": "error",  # Pillow only warns (89.5-179 Mpx): our limit must refuse it
    "bomb_64mp.png": "error",  # Pillow is silent (under 89.5 Mpx): only our limit refuses it
    "bomb_jpeg_sof.jpg": "error",  # a JPEG frame header of 60000 x 60000
    "bomb_gif_screen.gif": "error",  # a GIF logical screen of 65535 x 65535
    "bomb_tiff.tif": "error",  # a TIFF directory of 100000 x 100000
    "bomb_gif_frame.gif": "error",  # a 10 x 10 GIF whose first frame claims 60000 x 60000
    "png_text_bomb.png": "error",  # a 20 KB zTXt chunk that inflates to 20 MB (Pillow caps text at 1 MB)
    "tiff_strip_offset_past_end.tif": "error",  # strip data "at" byte 1e9 of a 10 KB file
    # -- odd but valid: each must give a prediction
    "1x1.png": "prediction",
    "8000x6.png": "prediction",
    "6x8000.png": "prediction",
    "cmyk.jpg": "prediction",
    "grey16.png": "prediction",
    "palette_transparent.png": "prediction",
    "grey_alpha.png": "prediction",
    "fully_transparent.png": "prediction",
    "animated.gif": "prediction",
    "gif_50000_frames.gif": "prediction",  # only the first frame may be read
    "apng_claims_2e9_frames.png": "prediction",  # an acTL chunk claiming 2**31 - 1 frames
    "tiff_ifd_loop.tif": "prediction",  # the next-directory pointer points back at itself
    "exif_garbage.jpg": "prediction",  # a malformed EXIF block must not cost the prediction
    "exif_orientation_99.jpg": "prediction",  # an orientation outside 1..8
    "float_nan.tif": "prediction",  # 32-bit float pixels with NaN and infinities
    "lab.tif": "prediction",
    "webp_lossless.webp": "prediction",
    "bmp.bmp": "prediction",
    "phone_mpo.jpg": "prediction",  # a multi-picture JPEG (MPO), as some phones save photos
    # Compressed data that ends cleanly after 4 of 300 rows: Pillow (even with LOAD_TRUNCATED_IMAGES
    # off) accepts it and leaves the other rows black. Harmless: the size was checked first.
    "png_short_idat.png": "prediction",
}


def corpus() -> dict[str, bytes]:
    """Every hostile file, by file name (the keys of :data:`EXPECTED`), as bytes."""
    return dict(_build())


def errors() -> dict[str, bytes]:
    """The files that must be refused with an ImageError."""
    return {k: v for k, v in corpus().items() if EXPECTED[k] == "error"}


def valid() -> dict[str, bytes]:
    """The files that must give a prediction."""
    return {k: v for k, v in corpus().items() if EXPECTED[k] == "prediction"}


def encode(img: Image.Image, fmt: str, **params) -> bytes:
    """``img`` saved as ``fmt`` (a Pillow format name) into bytes."""
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def photo(width: int = 64, height: int = 48) -> Image.Image:
    """A smooth, colourful RGB test picture (red rises left to right, green top to bottom, blue in
    diagonal bands): deterministic, and fast to make even at 4000 x 3000."""
    x = np.arange(width, dtype=np.uint32)[None, :]
    y = np.arange(height, dtype=np.uint32)[:, None]
    r = np.broadcast_to(x * 255 // max(width - 1, 1), (height, width))
    g = np.broadcast_to(y * 255 // max(height - 1, 1), (height, width))
    b = (x + y) * 4 % 256
    return Image.fromarray(np.stack([r, g, b], axis=-1).astype(np.uint8), "RGB")


def png_chunk(tag: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, tag, data and the CRC Pillow verifies."""
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png_bomb(width: int, height: int, rows: int = 64) -> bytes:
    """A valid 8-bit grey PNG header of ``width`` x ``height`` whose IDAT holds only ``rows`` rows
    of zlib-compressed zeros: a few KB that claim ``width * height`` pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey, no interlace
    idat = zlib.compress(b"\0" * ((width + 1) * rows), 9)  # +1: each row's filter byte
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


@functools.lru_cache(maxsize=1)
def _build() -> tuple[tuple[str, bytes], ...]:
    # Built once per process (about 0.2 s); a tuple so the cache can't be mutated by a caller.
    pic = photo()
    jpeg = encode(pic, "JPEG", quality=90)
    png = encode(pic, "PNG")
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    gif = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)

    files = {
        "empty.png": b"",
        "text.png": b"This is not a picture, only some text saved with a .png name.\n" * 4,
        "html_error_page.jpg": b"<!DOCTYPE html><html><body><h1>404 Not Found</h1></body></html>\n",
        "svg.png": (b'<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32">'
                    b'<rect width="32" height="32"/></svg>'),
        "random.bin": np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "icon.ico": encode(pic, "ICO"),
        "truncated.jpg": _half(encode(photo(320, 240), "JPEG", quality=90)),
        "truncated_header.jpg": jpeg[: jpeg.index(b"\xff\xc4") + 40],
        "truncated_progressive.jpg": _half(encode(pic, "JPEG", quality=90, progressive=True)),
        "truncated.png": png[: len(png) // 2],
        "truncated.gif": _half(encode(pic.quantize(), "GIF")),
        "png_bad_crc.png": png[:29] + bytes([png[29] ^ 0xFF]) + png[30:],  # flips a byte of IHDR's CRC
        "png_zero_width.png": _png_zero_width(),
        "jpeg_header_only.jpg": jpeg[: jpeg.index(b"\xff\xda")],  # everything before the scan data
        "bomb_400mp.png": png_bomb(20_000, 20_000),
        "bomb_100mp.png": png_bomb(10_000, 10_000),
        "bomb_64mp.png": png_bomb(8_000, 8_000),
        "bomb_jpeg_sof.jpg": _jpeg_with_size(jpeg, 60_000, 60_000),
        "bomb_gif_screen.gif": _gif_with_screen(encode(frames[0], "GIF"), 65_535, 65_535),
        "bomb_tiff.tif": _tiff_with_size(encode(Image.new("L", (8, 8)), "TIFF"), 100_000, 100_000),
        "bomb_gif_frame.gif": _gif_with_frame_size(encode(Image.new("P", (10, 10), 1), "GIF"), 60_000, 60_000),
        "png_text_bomb.png": _png_with_chunk(png, b"zTXt", b"Comment\0\0" + zlib.compress(b"\0" * 20_000_000, 9)),
        "tiff_strip_offset_past_end.tif": _tiff_patch(encode(pic, "TIFF"), {273: 10**9}),
        "1x1.png": encode(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"),
        "8000x6.png": encode(photo(8000, 6), "PNG"),
        "6x8000.png": encode(photo(6, 8000), "PNG"),
        "cmyk.jpg": encode(pic.convert("CMYK"), "JPEG", quality=90),
        "grey16.png": encode(Image.fromarray((np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20)), "PNG"),
        "palette_transparent.png": encode(_palette_with_transparency(), "PNG", transparency=0),
        "grey_alpha.png": encode(Image.merge("LA", (pic.convert("L"), pic.getchannel("R"))), "PNG"),
        "fully_transparent.png": encode(Image.new("RGBA", (40, 30), (0, 0, 0, 0)), "PNG"),
        "animated.gif": gif,
        "gif_50000_frames.gif": _gif_many_frames(gif, 50_000),
        "apng_claims_2e9_frames.png": _apng_claiming_frames(png, 2**31 - 1),
        "tiff_ifd_loop.tif": _tiff_ifd_loop(encode(pic, "TIFF")),
        "exif_garbage.jpg": _jpeg_with_app1(jpeg, b"Exif\0\0" + b"MM\0*\xff\xff\xff\xff" + b"\x13" * 40),
        "exif_orientation_99.jpg": encode(pic, "JPEG", exif=_exif(orientation=99)),
        "float_nan.tif": encode(Image.fromarray(_float_with_nan()), "TIFF"),
        "lab.tif": encode(pic.convert("LAB"), "TIFF"),
        "webp_lossless.webp": encode(pic, "WEBP", lossless=True),
        "bmp.bmp": encode(pic, "BMP"),
        "phone_mpo.jpg": encode(pic, "MPO", save_all=True, append_images=[photo(64, 48).rotate(180)]),
        "png_short_idat.png": png_bomb(400, 300, rows=4),
    }
    assert files.keys() == EXPECTED.keys(), "EXPECTED and the corpus must list the same files"
    return tuple(files.items())


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation  # 0x0112: the Orientation tag
    return exif


def _palette_with_transparency() -> Image.Image:
    # Index 0 (a transparent red: its colour must not show) on the left half, opaque blue right.
    img = Image.new("P", (40, 30), 0)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
    img.paste(1, (20, 0, 40, 30))
    return img


def _png_zero_width() -> bytes:
    ihdr = struct.pack(">IIBBBBB", 0, 16, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 16))
            + png_chunk(b"IEND", b""))


def _jpeg_with_size(jpeg: bytes, width: int, height: int) -> bytes:
    # SOF0 (FF C0): length (2 bytes), precision (1), height (2), width (2).
    sof = jpeg.index(b"\xff\xc0")
    return jpeg[: sof + 5] + struct.pack(">HH", height, width) + jpeg[sof + 9:]


def _jpeg_with_app1(jpeg: bytes, payload: bytes) -> bytes:
    # An APP1 segment right after SOI (FF D8), where cameras put EXIF.
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def _gif_with_screen(gif: bytes, width: int, height: int) -> bytes:
    # The logical screen descriptor follows the 6-byte signature: width, height (little-endian).
    return gif[:6] + struct.pack("<HH", width, height) + gif[10:]


def _gif_many_frames(gif: bytes, count: int) -> bytes:
    # Repeat the animation's last frame (graphic control extension + image block) until the file
    # claims ``count`` frames: about 1 MB, so a reader that walks every frame takes seconds.
    last = gif.rindex(b"\x21\xf9")  # the last graphic control extension
    block = gif[last:-1]  # ... up to, not including, the trailer (3B)
    first = gif.index(b"\x21\xf9")
    return gif[:first] + gif[first:last] + block * (count - 2) + b"\x3b"


def _gif_with_frame_size(gif: bytes, width: int, height: int) -> bytes:
    # The first image descriptor: 2C, left, top, width, height (little-endian shorts).
    desc = gif.index(b"\x2c")
    return gif[: desc + 5] + struct.pack("<HH", width, height) + gif[desc + 9:]


def _png_with_chunk(png: bytes, tag: bytes, data: bytes) -> bytes:
    # Ancillary chunks such as acTL and zTXt may sit right after IHDR (8-byte signature + 25).
    after_ihdr = 8 + 25
    return png[:after_ihdr] + png_chunk(tag, data) + png[after_ihdr:]


def _apng_claiming_frames(png: bytes, frames: int) -> bytes:
    # acTL: animation control (frame count, loop count), which must come before IDAT.
    return _png_with_chunk(png, b"acTL", struct.pack(">II", frames, 0))


def _tiff_with_size(tiff: bytes, width: int, height: int) -> bytes:
    return _tiff_patch(tiff, {256: width, 257: height})


def _tiff_first_ifd(tiff: bytes) -> tuple[str, bytearray, int, int]:
    """(byte order, a writable copy, the first directory's offset, its entry count)."""
    order = "<" if tiff[:2] == b"II" else ">"
    data = bytearray(tiff)
    ifd = struct.unpack_from(order + "I", data, 4)[0]
    return order, data, ifd, struct.unpack_from(order + "H", data, ifd)[0]


def _tiff_patch(tiff: bytes, values: dict[int, int]) -> bytes:
    # Rewrite the values of SHORT/LONG tags in the first directory, widening SHORTs to LONG.
    order, data, ifd, count = _tiff_first_ifd(tiff)
    for i in range(count):
        entry = ifd + 2 + 12 * i
        tag, _type, n = struct.unpack_from(order + "HHI", data, entry)
        if tag in values and n == 1:
            struct.pack_into(order + "HHII", data, entry, tag, 4, 1, values[tag])
    return bytes(data)


def _tiff_ifd_loop(tiff: bytes) -> bytes:
    # The 4 bytes after the first directory's entries point to the next directory: point them
    # back at the first one, so a reader counting frames would never finish without a loop check.
    order, data, ifd, count = _tiff_first_ifd(tiff)
    struct.pack_into(order + "I", data, ifd + 2 + 12 * count, ifd)
    return bytes(data)


def _float_with_nan() -> np.ndarray:
    a = np.linspace(0.0, 1.0, 48 * 64, dtype=np.float32).reshape(48, 64)
    a[0, :10], a[1, :10], a[2, :10] = np.nan, np.inf, -np.inf
    return a
