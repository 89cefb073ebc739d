"""Pictures in, the network's 32x32 input out (cifar_model/preprocess.py), and untrusted files through
the library: the hostile corpus, each refusal's sentence, the size limit and decompression bombs, colour
modes and transparency, EXIF orientation, the crop and resize, animation, every kind of input,
``normalize``, threads, and a property test over generated pictures.

Pictures are generated (tests/support.py); only one test loads the network.
"""

from __future__ import annotations

import io
import logging
import os
import re
import struct
import sys
import threading
import warnings

import numpy as np
import psutil
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import GifImagePlugin, Image, ImageFile, ImageOps

from cifar_model import CIFAR_MEAN, CIFAR_STD, ImageError, normalize, open_image, to_uint8
from cifar_model.preprocess import to_rgb
from tests.support import encode, hostile_files, photo, png_header

pytestmark = [
    pytest.mark.timeout(60),  # a hang fails the test instead of stalling the suite
    # Expected from hostile files: Pillow warns on 89-179 Mpx headers and on corrupt EXIF blocks.
    pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
    pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning"),
]

FILES = hostile_files()
BOMBS = [name for name in FILES if name.startswith("bomb")]
RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
FORMAT_NAMES = ("JPEG", "PNG", "WebP", "GIF", "BMP", "TIFF")  # what a refusal tells the user to use
TOO_LARGE = ("too large", "the limit is 50 megapixels")
# What each refused file's sentence must say (the size, when the library read it from the header itself).
MEANING = {
    "empty.png": ("empty", *FORMAT_NAMES),
    **{name: ("not a picture", *FORMAT_NAMES) for name in ("text.png", "random.bin", "icon.ico")},
    **{name: ("incomplete",) for name in ("truncated.jpg", "truncated_header.jpg", "strip_past_end.tif")},
    "text_bomb.png": ("damaged",),
    **{name: (*TOO_LARGE, "(8000x8000)") for name in BOMBS},
    "bomb_100mp.png": (*TOO_LARGE, "(10000x10000)"),
    "bomb_400mp.png": TOO_LARGE,  # Pillow refuses it first: the size is not in the sentence
    "bomb_4mp.png": ("too large for a PNG file", "(2000x2000)"),  # too many pixels a byte of file
    "bomb_16mp.webp": ("too large for a WEBP file", "(4000x4000)"),
}
# Words that give away a Python object, a traceback or a developer message in a user's sentence.
JUNK = re.compile(r"Traceback|Error|Exception|Errno|<|>|\b0x[0-9a-fA-F]|\bb'|\\x|\{|\}|\bNone\b|\.py\b")
ACTIONS = ("Use ", "Upload ", "Choose ", "Save ", "Open ", "Check ", "Pass ")  # what to do next


def refusal(source) -> str:
    """The sentence ``to_uint8`` refuses ``source`` with."""
    with pytest.raises(ImageError) as err:
        to_uint8(source)
    return str(err.value)


def says(message: str, *fragments: str) -> bool:
    """Each fragment is in ``message`` as whole words ("JPEG" is not found in "XJPEG")."""
    return all(re.search(rf"(?<!\w){re.escape(f)}(?!\w)", message) for f in fragments)


def assert_user_sentence(message: str) -> None:
    """One plain line a user can act on: each sentence starts with a capitalised word, the last ends
    with a full stop, nothing from Python shows, and it says what to do next."""
    assert "\n" not in message and len(message) < 250 and message.endswith("."), message
    assert all(word.istitle() for word in re.findall(r"(?:^|\. )(\w+)", message)), message
    assert not JUNK.search(message), message
    assert any(action in message for action in ACTIONS), message


def nearest(pixel, palette: dict[str, tuple[int, int, int]]) -> str:
    """Name of the palette colour closest to ``pixel`` (robust to JPEG and resampling noise)."""
    return min(palette, key=lambda k: sum((int(a) - b) ** 2 for a, b in zip(pixel, palette[k])))


# --------------------------------------------------------------------------- the hostile corpus

@pytest.mark.parametrize("name", FILES)
def test_each_hostile_file_is_refused_with_a_sentence_or_gives_the_networks_input(name):
    if FILES[name].refused:
        message = refusal(FILES[name].data)
        assert_user_sentence(message)
        assert says(message, *MEANING[name]), message
    else:
        out = to_uint8(FILES[name].data)
        assert out.shape == (32, 32, 3) and out.dtype == np.uint8


def test_the_classifier_refuses_a_bad_picture_with_image_error(classifier):
    with pytest.raises(ImageError, match="incomplete"):
        classifier.predict(FILES["truncated.jpg"].data)
    with pytest.raises(ImageError, match="too large"):
        classifier.predict_many([FILES["1x1.png"].data, FILES["bomb_64mp.png"].data])
    for answer in classifier.predict_many([f.data for f in FILES.values() if not f.refused]):
        assert sum(answer.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_refusals_name_the_file_or_the_object(tmp_path):
    empty, one_byte = tmp_path / "holiday.jpg", tmp_path / "cut.jpg"
    empty.write_bytes(b"")
    one_byte.write_bytes(b"\xff")  # not empty: a file that is not (yet) a picture
    cases = [
        (empty, ("The file holiday.jpg is empty", *FORMAT_NAMES)),
        (str(empty), ("The file holiday.jpg is empty",)),
        (one_byte, ("not a picture",)),
        (tmp_path / "nowhere" / "cat.png", ("No such file: cat.png",)),
        (tmp_path, ("No such file",)),  # a folder
        (None, ("NoneType",)),  # what a form sends without a picture
        (np.zeros((32, 32, 3), np.uint8), ("ndarray",)),  # pixels already: Classifier.answer takes those
        (Image.new("RGB", (0, 5)), ("no pixels",)),
        (Image.new("RGB", (5, 0)), ("no pixels",)),
    ]
    for source, fragments in cases:
        message = refusal(source)
        assert_user_sentence(message)
        assert says(message, *fragments), message


@pytest.mark.parametrize("error,fragments", [
    (MemoryError(), ("The picture is too large: the limit is 50 megapixels",)),  # no size known
    (EOFError(), ("incomplete",)),
    (ValueError("bad"), ("damaged",)),
], ids=["memory", "eof", "other"])
def test_errors_while_decoding_become_sentences_and_a_debug_log(caplog, error, fragments):
    img = Image.new("RGB", (40, 40))

    def load():
        raise error

    img.load = load
    caplog.set_level(logging.DEBUG, logger="cifar_model.preprocess")
    assert says(refusal(img), *fragments)
    logged = [r.getMessage() for r in caplog.records if r.name == "cifar_model.preprocess"]
    if isinstance(error, MemoryError):
        assert logged == []
    else:  # for a developer only: Pillow's error as its repr, which the user never sees
        assert len(logged) == 1 and logged[0].startswith("decoding failed") and logged[0].endswith(repr(error))


def test_a_colour_format_pillow_cannot_convert_is_named_and_logged(caplog):
    img = Image.new("P", (8, 8))
    img.info["transparency"] = (0, 0, 0)  # an RGB colour key on a palette picture: Pillow can't convert it
    caplog.set_level(logging.DEBUG, logger="cifar_model.preprocess")
    message = refusal(img)
    assert_user_sentence(message)
    assert says(message, "colour format (P) is not supported")
    [logged] = [r.getMessage() for r in caplog.records if r.name == "cifar_model.preprocess"]
    assert logged.startswith("converting a P picture failed: ValueError(")


# --------------------------------------------------------------------------- the size limit and bombs

def jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose frame header (SOF0) claims ``width`` x ``height`` pixels."""
    jpeg = encode(photo(), "JPEG")
    sof = jpeg.index(b"\xff\xc0") + 5  # marker, length (2 bytes), precision (1), then height, width
    return jpeg[:sof] + struct.pack(">HH", height, width) + jpeg[sof + 4:]


def test_the_size_limit_is_50_megapixels_read_from_the_header():
    # Exactly 50 Mpx is accepted (a JPEG is decoded at 1/8 scale; libjpeg fills in the missing rows).
    assert to_uint8(jpeg_claiming(10_000, 5_000)).shape == (32, 32, 3)
    assert says(refusal(jpeg_claiming(10_000, 5_001)), *TOO_LARGE, "(10000x5001)")
    assert open_image(Image.new("1", (25_000_000, 2))).size == (25_000_000, 2)  # a PIL image: before it loads
    assert says(refusal(Image.new("1", (50_000_001, 1))), *TOO_LARGE, "(50000001x1)")


@pytest.mark.parametrize("width,height,nbytes,refused", [
    (1000, 2000, 0, False),  # up to 2 Mpx: whatever the file's size
    (2_000_001, 1, 0, True),
    (2000, 2000, 40_000, False),  # beyond: at most 100 pixels per byte of file
    (2000, 2001, 40_000, True),
    (16_000_000, 1, 200_000, False),  # and never more than 16 Mpx
    (16_000_001, 1, 200_000, True),
])
def test_lossless_pictures_may_have_100_pixels_a_byte_and_16_megapixels(tmp_path, width, height, nbytes, refused):
    # Formats other than JPEG decode every pixel, whatever the file's size: the cost is read from the header.
    data = png_header(width, height, nbytes)
    path = tmp_path / "picture.png"
    path.write_bytes(data)
    with open(path, "rb") as f:
        messages = {refusal(data), refusal(path), refusal(f)}  # each kind of input is measured alike
    [message] = messages
    if refused:
        assert_user_sentence(message)
        size = f"{nbytes:,} bytes" if nbytes else "65 bytes"
        assert says(message, f"too large for a PNG file of {size}", f"({width}x{height})", "at most 16 megapixels",
                    "beyond 2 megapixels at most 100 pixels per byte", "JPEG"), message
    else:
        assert says(message, "incomplete")  # past the checks: decoding finds no pixel data


@pytest.mark.parametrize("kind", ["file-at-its-end", "pipe"])
def test_a_binary_file_is_measured_as_pillow_reads_it(tmp_path, kind):
    data = png_header(2000, 2000, 40_000)  # 100 pixels a byte: accepted, then found to hold no pixels
    if kind == "pipe":
        read, write = os.pipe()
        os.write(write, data)
        os.close(write)
        source = os.fdopen(read, "rb")
    else:
        source = open(tmp_path / "picture.png", "w+b")
        source.write(data)  # left at its end, as after writing it
    with source:
        assert says(refusal(source), "incomplete")


@pytest.mark.parametrize("name", BOMBS)
def test_a_bomb_is_refused_before_any_pixel_is_decoded(monkeypatch, name):
    decoded = []
    real_load, real_getdecoder = ImageFile.ImageFile.load, Image._getdecoder
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.size) or real_load(self))
    monkeypatch.setattr(Image, "_getdecoder", lambda *a, **k: decoded.append(a[:2]) or real_getdecoder(*a, **k))
    assert says(refusal(FILES[name].data), *MEANING[name])
    assert decoded == []


@pytest.mark.parametrize("action", ["ignore", "always", "error"])
def test_pillows_bomb_warning_is_refused_whatever_the_warnings_filters(action):
    # 100 Mpx: Pillow warns (it refuses only from 179 Mpx). Made an error, the warning is raised inside
    # Image.open; either way the user gets the same refusal.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter(action, Image.DecompressionBombWarning)
        assert says(refusal(FILES["bomb_100mp.png"].data), *TOO_LARGE)
    assert bool(caught) == (action == "always")  # left to the filters: a log line worth having


def test_only_the_first_frame_of_an_animation_is_read(monkeypatch):
    # Counting frames (n_frames) would walk all 50,000 of this 3 MB GIF: 0.2 s a picture.
    frames = []
    real_seek = GifImagePlugin.GifImageFile._seek
    monkeypatch.setattr(GifImagePlugin.GifImageFile, "_seek", lambda self, frame, *a: frames.append(frame)
                        or real_seek(self, frame, *a))
    to_uint8(FILES["gif_50000_frames.gif"].data)
    assert set(frames) == {0}


# --------------------------------------------------------------------------- colour modes and transparency

def grey_photo(mode: str) -> Image.Image:
    """The photo's grey levels in a 16-bit (I;16, I;16B), 32-bit integer (I) or [0, 1] float (F) mode."""
    grey = np.asarray(photo().convert("L"), dtype=np.float64)
    if mode == "F":
        return Image.fromarray((grey / 255).astype(np.float32))
    if mode == "I":
        return Image.fromarray((grey * 257).astype(np.int32))
    return Image.frombytes(mode, (64, 48), (grey * 257).astype("<u2" if mode == "I;16" else ">u2").tobytes())


def in_mode(mode: str) -> Image.Image:
    if mode in ("I;16", "I;16B", "I", "F"):
        return grey_photo(mode)
    return photo().convert("LA").convert("La") if mode == "La" else photo().convert(mode)


# Formats and the modes each stores, as files a user could upload; None: a PIL image in that mode.
# (no YCbCr TIFF: Pillow writes it without the subsampling tag and then misreads its own file)
STORED = {
    "PNG": "1 L P RGB RGBA LA I;16", "JPEG": "L RGB CMYK", "GIF": "L P", "WEBP": "RGB RGBA", "BMP": "1 L P RGB",
    "TIFF": "1 L P RGB RGBA CMYK I F I;16 LAB", None: "RGBX RGBa La PA YCbCr LAB HSV I;16B I F",
}
GREY_MODES = {"1", "L", "LA", "La", "I;16", "I;16B", "I", "F"}


@pytest.mark.parametrize("fmt,mode", [(f, m) for f, modes in STORED.items() for m in modes.split()])
def test_every_colour_mode_gives_the_pictures_colours(fmt, mode):
    img = in_mode(mode)
    assert img.mode == mode
    got = to_uint8(img if fmt is None else encode(img, fmt)).astype(int)
    expected = to_uint8(photo().convert("L") if mode in GREY_MODES else photo()).astype(int)
    # "1" is dithered; palettes, lossy formats and LAB/HSV/YCbCr's 8-bit maths: close on average
    assert np.abs(got - expected).mean() < (40 if mode == "1" else 6)


@pytest.mark.parametrize("mode,values,expected", [
    ("I;16", [0, 255, 300, 32896, 40000, 65535], [0, 1, 1, 128, 156, 255]),  # / 257, rounded: not clipped
    ("I;16L", [0, 255, 300, 32896, 40000, 65535], [0, 1, 1, 128, 156, 255]),
    ("I;16B", [0, 255, 300, 32896, 40000, 65535], [0, 1, 1, 128, 156, 255]),
    ("I;16N", [0, 255, 300, 32896, 40000, 65535], [0, 1, 1, 128, 156, 255]),
    ("I", [0, 7, 255, -5, 200], [0, 7, 255, 0, 200]),  # up to 255: 8-bit levels; negative: black
    ("I", [0, 256, 32896, 65535], [0, 1, 128, 255]),  # above 255: 16-bit samples
    ("I", [0, 256], [0, 1]),  # 256 is already past the 8-bit range
    ("F", [np.nan, np.inf, -np.inf, 100, 3, 300, -5], [0, 0, 0, 100, 3, 255, 0]),  # grey levels, clipped
    ("F", [0.0, 0.6, 1.0], [0, 153, 255]),  # floats in [0, 1] are scaled
    ("F", [-np.inf, 0.6, 1.0], [0, 153, 255]),  # -inf counts as 0: it does not stop the scaling
    ("F", [0.0, 1.0, 2.0], [0, 1, 2]),  # beyond 1: grey levels
])
def test_high_depth_grey_levels(mode, values, expected):
    dtype = {"I;16": "<u2", "I;16L": "<u2", "I;16B": ">u2", "I;16N": "=u2", "I": "=i4", "F": "=f4"}[mode]
    a = np.zeros((32, 32), dtype)  # 32x32: to_uint8 returns its pixels unresized
    a.flat[: len(values)] = values
    img = Image.frombytes(mode, (32, 32), a.tobytes())
    out = to_uint8(img)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert out[0, : len(values), 0].tolist() == expected


def half_transparent(mode: str, key=None, fmt: str | None = None) -> Image.Image | bytes:
    """Left half transparent (a red, or the colour ``key`` marked transparent), right half opaque, in
    ``mode``: a PIL image, or with a colour key a ``fmt`` file."""
    if key is None:
        rgba = Image.new("RGBA", (40, 30), (255, 0, 0, 0))
        rgba.paste((0, 0, 255, 255), (20, 0, 40, 30))
        return rgba.convert("LA").convert("La") if mode == "La" else rgba.convert(mode)
    img = Image.new(mode, (40, 30), key)
    if mode == "P":
        img.putpalette([255, 0, 0, 0, 0, 255])
    img.paste({"P": 1, "L": 100, "RGB": BLUE, "I;16": 30000}[mode], (20, 0, 40, 30))
    return encode(img, fmt, transparency=key)


@pytest.mark.parametrize("mode,key,fmt", [
    ("RGBA", None, None), ("LA", None, None), ("La", None, None), ("RGBa", None, None), ("PA", None, None),
    ("P", 0, "PNG"),  # a palette entry marked transparent
    ("L", 7, "PNG"),  # a grey colour key (PNG tRNS)
    ("RGB", (1, 2, 3), "PNG"),  # an RGB colour key
    ("I;16", 500, "PNG"),  # a 16-bit grey colour key
    ("P", 0, "GIF"),
])
def test_transparent_pixels_become_white_and_opaque_ones_keep_their_colour(mode, key, fmt):
    source = half_transparent(mode, key, fmt)
    rgb = to_rgb(open_image(source))
    assert rgb.mode == "RGB" and (source.mode if key is None else Image.open(io.BytesIO(source)).mode) == mode
    assert rgb.getpixel((2, 2)) == WHITE  # transparent pixels have no colour of their own
    assert rgb.getpixel((37, 2)) != WHITE


def test_half_transparent_black_is_mid_grey():
    assert all(abs(int(c) - 127) <= 1 for c in to_uint8(Image.new("RGBA", (8, 8), (0, 0, 0, 128)))[0, 0])


# --------------------------------------------------------------------------- EXIF orientation

# How a camera stores the upright picture for each EXIF orientation (EXIF 2.3, tag 0x0112): the
# inverse of what the viewer must do. 6 means "rotate 90 degrees clockwise to view", and so on.
CAMERA_STORES = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # view: mirror left-right
    3: lambda a: a[::-1, ::-1],  # view: rotate 180
    4: lambda a: a[::-1],  # view: mirror top-bottom
    5: lambda a: a.transpose(1, 0, 2),  # view: mirror left-right, then rotate 90 counter-clockwise
    6: lambda a: np.rot90(a, 1),  # view: rotate 90 clockwise
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),  # view: mirror left-right, then rotate 90 clockwise
    8: lambda a: np.rot90(a, -1),  # view: rotate 90 counter-clockwise
}
QUADRANTS = {"red": RED, "green": GREEN, "blue": BLUE, "white": WHITE}


def with_orientation(fmt: str, orientation: int) -> bytes:
    """Red top-left, green top-right, blue bottom-left, white bottom-right (64x48: not square, so a
    missing turn shows in the size too), stored as a camera would for ``orientation``, with the tag."""
    a = np.zeros((48, 64, 3), np.uint8)
    a[:24, :32], a[:24, 32:], a[24:, :32], a[24:, 32:] = RED, GREEN, BLUE, WHITE
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = Image.fromarray(np.ascontiguousarray(CAMERA_STORES[orientation](a)))
    return encode(stored, fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))


# every orientation in JPEG (phones), and the turn in the other formats that carry EXIF
ORIENTED = [("JPEG", o) for o in range(1, 9)] + [(fmt, 6) for fmt in ("PNG", "WEBP", "TIFF")]


@pytest.mark.parametrize("fmt,orientation", ORIENTED)
def test_exif_orientation_comes_out_upright(fmt, orientation):
    data = with_orientation(fmt, orientation)
    assert to_rgb(open_image(data)).size == (64, 48)
    out = to_uint8(data)
    corners = {(4, 4): "red", (4, 27): "green", (27, 4): "blue", (27, 27): "white"}  # (row, column)
    assert {rc: nearest(out[rc], QUADRANTS) for rc in corners} == corners


def test_an_exif_block_pillow_cannot_rewrite_costs_only_the_turn():
    data = FILES["exif_unwritable.jpg"].data
    with pytest.raises(Exception):  # the file really is one ImageOps.exif_transpose fails on
        ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    assert np.array_equal(to_uint8(data), to_uint8(Image.open(io.BytesIO(data)).convert("RGB")))


def test_a_pil_image_is_turned_upright_but_not_changed():
    img = Image.open(io.BytesIO(with_orientation("JPEG", 6)))
    img.load()
    before = img.tobytes()
    assert nearest(to_uint8(img)[4, 4], QUADRANTS) == "red"
    assert img.size == (48, 64) and img.getexif()[0x0112] == 6 and img.tobytes() == before


# --------------------------------------------------------------------------- crop, resize, JPEG drafting

@pytest.mark.parametrize("height,width,size", [(32, 37, 32), (37, 32, 32), (16, 21, 16)])
def test_the_largest_centred_square_is_cropped_at_whole_pixels(height, width, size):
    # 5 px too many: the square starts at pixel 2 (rounded down). Same size out: its pixels exactly.
    a = np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)
    expected = a[:, 2:2 + size] if width > height else a[2:2 + size]
    assert np.array_equal(to_uint8(Image.fromarray(a), size), expected)


def test_a_large_picture_is_averaged_in_whole_blocks_before_the_bicubic_resize():
    # 384 -> 32 is 12 times smaller; with reducing_gap 3 the first step averages 4x4 blocks
    # (12 / 3 = 4) down to 96 px, then the bicubic filter makes 32 px of those.
    a = np.random.default_rng(3).integers(0, 256, (384, 384, 3), dtype=np.uint8)
    blocks = np.floor(a.reshape(96, 4, 96, 4, 3).mean(axis=(1, 3)) + 0.5).astype(np.uint8)
    expected = np.asarray(Image.fromarray(blocks).resize((32, 32), Image.Resampling.BICUBIC))
    one_step = np.asarray(Image.fromarray(a).resize((32, 32), Image.Resampling.BICUBIC))
    assert not np.array_equal(expected, one_step)  # the two steps show in the pixels
    assert np.array_equal(to_uint8(Image.fromarray(a)), expected)


@pytest.mark.parametrize("fmt", ["JPEG", "MPO"])
def test_a_large_jpeg_is_decoded_at_reduced_scale(fmt):
    big = photo(1024, 512)
    data = encode(big, fmt, **({"save_all": True, "append_images": [big.rotate(180)]} if fmt == "MPO" else {}))
    img = open_image(data)
    assert img.format == fmt
    # The smallest of 1/1, 1/2, 1/4, 1/8 that keeps at least 4 x 32 = 128 px a side: 512 / 4 = 128.
    assert img.size == (256, 128)
    assert open_image(data, draft_size=None).size == (1024, 512)


# --------------------------------------------------------------------------- animation

@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP", "TIFF"])
def test_an_animation_gives_its_first_frame_and_leaves_no_file_open(tmp_path, fmt):
    frames = [Image.new("RGB", (20, 20), c) for c in (RED, BLUE, GREEN)]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:])
    palette = {"red": RED, "blue": BLUE, "green": GREEN}
    assert nearest(to_uint8(data)[10, 10], palette) == "red"
    img = Image.open(io.BytesIO(data))
    img.seek(1)  # a PIL animation handed over at a later frame
    assert nearest(to_uint8(img)[10, 10], palette) == "red"
    path = tmp_path / f"animation.{fmt.lower()}"
    path.write_bytes(data)
    img = open_image(path)  # Pillow would keep a multi-frame file open, for seeking
    assert str(path) not in [f.path for f in psutil.Process().open_files()]


# --------------------------------------------------------------------------- every kind of input

@pytest.mark.parametrize("name", ["exif_rotated.jpg", "animated.gif", "cmyk.jpg", "grey16.png", "phone_mpo.jpg",
                                  "truncated.jpg"])
def test_a_path_a_binary_file_bytes_and_a_pil_image_give_the_same_outcome(tmp_path, name):
    def outcome(source):
        try:
            return to_uint8(source).tobytes()
        except ImageError as err:
            return str(err)

    data = FILES[name].data
    path = tmp_path / name
    path.write_bytes(data)
    expected = outcome(data)
    assert outcome(path) == outcome(str(path)) == outcome(Image.open(io.BytesIO(data))) == expected
    with open(path, "rb") as f:
        assert outcome(f) == expected
        assert not f.closed  # the caller's file stays theirs to close


# --------------------------------------------------------------------------- normalize

PIXELS = torch.arange(256 * 3, dtype=torch.int32).reshape(1, 16, 16, 3).remainder(251).to(torch.uint8)


def normalized_by_hand(pixels: torch.Tensor, mean=CIFAR_MEAN, std=CIFAR_STD) -> torch.Tensor:
    """((pixels / 255) - mean) / std in float32, channels first."""
    x = pixels.to(torch.float32) / 255
    return ((x - torch.tensor(mean, dtype=torch.float32)) / torch.tensor(std, dtype=torch.float32)).permute(0, 3, 1, 2)


def test_normalize_scales_centres_and_puts_channels_first():
    torch.testing.assert_close(normalize(PIXELS), normalized_by_hand(PIXELS), rtol=0, atol=1e-6)
    torch.testing.assert_close(normalize(PIXELS[0]), normalized_by_hand(PIXELS), rtol=0, atol=1e-6)  # one picture
    stats = (0.2, 0.3, 0.4), (0.5, 0.6, 0.7)
    torch.testing.assert_close(normalize(PIXELS, *stats), normalized_by_hand(PIXELS, *stats), rtol=0, atol=1e-6)


def test_normalize_takes_uint8_pixels_only():
    for dtype in (torch.float32, torch.int64):
        with pytest.raises(TypeError) as err:
            normalize(torch.zeros(4, 4, 3, dtype=dtype))
        assert says(str(err.value), "uint8", str(dtype))


def test_normalize_gives_float32_on_the_pixels_device_whatever_torchs_defaults():
    # float64 as torch's default dtype shifted values by 1 ulp; a default device ("meta" stands in for
    # CUDA, so this runs without a GPU) would hold statistics with no values at all.
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with torch.device("meta"):
            got = normalize(PIXELS)
    finally:
        torch.set_default_dtype(before)
    assert got.dtype == torch.float32 and got.device.type == "cpu"
    assert torch.equal(got, normalized_by_hand(PIXELS))


# --------------------------------------------------------------------------- threads

def test_threads_decoding_at_once_give_the_same_outcomes_and_leave_warnings_filters_alone():
    # The app serves several users at once. warnings.catch_warnings() is process-wide and not
    # thread-safe (an "ignore" once stayed installed for good): decoding must not touch the filters.
    def outcome(data: bytes):
        try:
            return to_uint8(data).tobytes()
        except ImageError as err:
            return str(err)

    serial = {name: outcome(f.data) for name, f in FILES.items()}
    results: dict[tuple[int, str], object] = {}

    def work(i: int) -> None:
        for _ in range(3):
            for name, f in FILES.items():
                results[i, name] = outcome(f.data)

    filters, interval = list(warnings.filters), sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, to expose races
    try:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert warnings.filters == filters
    assert all(results[i, name] == serial[name] for i in range(4) for name in FILES)


# --------------------------------------------------------------------------- property test

PROPERTY_MODES = {"PNG": "1 L P RGB RGBA LA", "JPEG": "L RGB CMYK", "GIF": "L P", "WEBP": "RGB RGBA",
                  "BMP": "1 L P RGB", "TIFF": "L RGB CMYK F I;16"}


@st.composite
def pictures(draw) -> bytes:
    """Any format in one of its modes, a small or extreme size, an optional EXIF orientation, maybe cut short."""
    fmt = draw(st.sampled_from(sorted(PROPERTY_MODES)))
    mode = draw(st.sampled_from(PROPERTY_MODES[fmt].split()))
    side = st.one_of(st.integers(1, 80), st.sampled_from([1, 2, 31, 32, 33, 127, 128, 129, 700]))
    img = photo(draw(side), draw(side))
    if mode in ("F", "I;16"):
        grey = np.asarray(img.convert("L"), dtype=np.float64)
        img = Image.fromarray((grey / 255).astype(np.float32) if mode == "F" else (grey * 257).astype(np.uint16))
    else:
        img = img.convert(mode)
    exif = Image.Exif()
    exif[0x0112] = draw(st.integers(1, 8))
    data = encode(img, fmt, **({"exif": exif} if fmt in ("JPEG", "PNG", "WEBP", "TIFF") else {}))
    cut = draw(st.one_of(st.none(), st.floats(0.0, 1.0)))
    return data if cut is None else data[: int(len(data) * cut)]


@settings(max_examples=60, derandomize=True, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(pictures(), st.binary(max_size=64)))
def test_any_bytes_give_a_finite_network_input_or_an_image_error(data):
    try:
        x = normalize(torch.from_numpy(to_uint8(data)))
    except ImageError as err:
        assert_user_sentence(str(err))
    else:
        assert x.shape == (1, 3, 32, 32) and x.dtype == torch.float32 and torch.isfinite(x).all()
