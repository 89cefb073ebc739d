"""Behaviour that mutation testing (python -m benchmarks.mutation) found unchecked: what a caller of
``to_uint8`` gets for high-depth pictures (16/32-bit integers in every byte order, floats with NaN or
infinities), the exact sentence a visitor reads for each refusal, the formats and sizes refused, the
crop and the two-step resize, JPEG draft decoding of phone (MPO) photos, the debug log of a failed
conversion, and ``normalize``'s messages and independence from torch's default dtype and device.

Kept fast (well under a second of pictures): it runs once per mutant."""

from __future__ import annotations

import importlib
import io
import logging
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from cifar_model import CIFAR_MEAN, CIFAR_STD
from cifar_model.preprocess import FORMATS, ImageError, normalize, open_image, to_uint8
from tests.hostile import encode, photo


def grey_of(mode: str, values: list[float]) -> list[int]:
    """The grey level ``to_uint8`` gives each of ``values``, as pixels of a 32x32 picture in ``mode``."""
    a = np.zeros((32, 32), dtype=np.float32 if mode == "F" else np.int32)
    a.flat[: len(values)] = values
    out = to_uint8(Image.fromarray(a, mode=mode))
    assert out.shape == (32, 32, 3) and (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    return out[..., 0].flat[: len(values)].tolist()


def test_float_nan_and_infinities_become_black():
    # NaN, +inf and -inf have no brightness: black, like a missing sample; the other pixels keep theirs
    assert grey_of("F", [np.nan, np.inf, -np.inf, 100.0]) == [0, 0, 0, 100]


def test_float_pictures_in_0_1_are_scaled_to_0_255():
    assert grey_of("F", [0.0, 0.6, 1.0]) == [0, 153, 255]
    # -inf counts as 0, so it does not stop the rest of the picture from being scaled
    assert grey_of("F", [-np.inf, 0.6, 1.0]) == [0, 153, 255]


def test_float_pictures_above_1_are_grey_levels_clipped_to_0_255():
    assert grey_of("F", [0.0, 1.0, 2.0]) == [0, 1, 2]
    assert grey_of("F", [3.0, 300.0, 1000.0, -5.0]) == [3, 255, 255, 0]


def test_32_bit_integers_up_to_255_are_8_bit_levels():
    assert grey_of("I", [0, 7, 255]) == [0, 7, 255]
    assert grey_of("I", [-5, 200]) == [0, 200]  # negative samples are black, not wrapped round


def test_32_bit_integers_above_255_are_16_bit_samples():
    assert grey_of("I", [0, 256, 65535]) == [0, 1, 255]
    assert grey_of("I", [0, 256]) == [0, 1]  # 256 is already past the 8-bit range
    assert grey_of("I", [32896, 65535]) == [128, 255]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels and holds none: only its header is valid."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def test_a_picture_over_the_limit_is_refused_with_its_size_and_the_limit():
    with pytest.raises(ImageError) as err:
        to_uint8(png_header_only(10_000, 6_000))
    assert str(err.value) == "The picture is too large (10000x6000): the limit is 50 megapixels. Use a smaller copy."


def test_running_out_of_memory_while_decoding_says_too_large_without_a_size():
    img = Image.new("RGB", (40, 40))

    def load():
        raise MemoryError

    img.load = load
    with pytest.raises(ImageError) as err:
        to_uint8(img)
    assert str(err.value) == "The picture is too large: the limit is 50 megapixels. Use a smaller copy."


# --------------------------------------------------------------------------- the sentences a visitor reads

SUPPORTED = "JPEG, PNG, WebP, GIF, BMP or TIFF"
NOT_A_PICTURE = f"This file is not a picture we can read. Use a {SUPPORTED} image."
NO_PIXELS = "The picture has no pixels (its width or height is 0). Choose another picture."
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def refusal(source) -> str:
    """The sentence ``to_uint8`` refuses ``source`` with."""
    with pytest.raises(ImageError) as err:
        to_uint8(source)
    return str(err.value)


def test_empty_bytes_are_called_an_empty_file():
    assert refusal(b"") == f"The file is empty. Choose a photo ({SUPPORTED})."
    assert refusal(bytearray()) == f"The file is empty. Choose a photo ({SUPPORTED})."


def test_an_empty_file_is_named_and_a_one_byte_file_is_not_a_picture(tmp_path):
    empty = tmp_path / "holiday.jpg"
    empty.write_bytes(b"")
    assert refusal(empty) == f"The file holiday.jpg is empty. Choose a photo ({SUPPORTED})."
    assert refusal(str(empty)) == f"The file holiday.jpg is empty. Choose a photo ({SUPPORTED})."
    one_byte = tmp_path / "cut.jpg"
    one_byte.write_bytes(b"\xff")  # not empty: a file that is not (yet) a picture
    assert refusal(one_byte) == NOT_A_PICTURE


def test_a_missing_file_is_named(tmp_path):
    assert refusal(tmp_path / "nowhere" / "cat.png") == "No such file: cat.png. Check the name and the folder."


@pytest.mark.parametrize("source,type_name", [(42, "int"), (3.5, "float"), ([b"\0"], "list")])
def test_an_object_that_holds_no_picture_is_named_by_its_type(source, type_name):
    assert refusal(source) == (f"Can't read a picture from an object of type {type_name}. "
                               "Pass a file path, the file's bytes, a binary file or a PIL image.")


@pytest.mark.parametrize("fmt", ["PCX", "TGA", "PPM", "SGI"])
def test_a_picture_in_a_format_outside_the_allow_list_is_refused(fmt):
    assert fmt not in FORMATS
    data = encode(Image.new("RGB", (20, 10), (10, 200, 30)), fmt)
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == fmt  # a real picture: Pillow would decode it if allowed to
    assert refusal(data) == NOT_A_PICTURE


@pytest.mark.parametrize("size", [(0, 5), (5, 0), (0, 0)], ids=["no-columns", "no-rows", "neither"])
def test_a_picture_without_pixels_is_refused(size):
    assert refusal(Image.new("RGB", size)) == NO_PIXELS


def test_a_colour_format_pillow_cannot_convert_is_named_and_logged(caplog):
    img = Image.new("P", (8, 8))
    img.info["transparency"] = (0, 0, 0)  # an RGB colour key on a palette picture: Pillow can't convert it
    caplog.set_level(logging.DEBUG, logger="cifar_model.preprocess")
    assert refusal(img) == "The picture's colour format (P) is not supported. Save it again as JPEG or PNG."
    [record] = [r for r in caplog.records if r.name == "cifar_model.preprocess"]
    assert record.levelno == logging.DEBUG
    # for a developer: the mode and Pillow's own error (its repr), which the visitor does not see
    assert record.getMessage().startswith("converting a P picture failed: ValueError(")
    assert record.getMessage().endswith(")")


# --------------------------------------------------------------------------- the size limit and draft decoding

def test_the_size_limit_allows_exactly_max_pixels(monkeypatch):
    # (the package exports a function named preprocess, so fetch the module by its full name)
    monkeypatch.setattr(importlib.import_module("cifar_model.preprocess"), "MAX_PIXELS", 1000)
    for source in (photo(100, 10), photo(40, 25), encode(photo(10, 100), "PNG")):  # 1000 pixels each
        assert to_uint8(source).shape == (32, 32, 3)
    for source in (photo(1001, 1), encode(photo(1001, 1), "PNG")):
        assert refusal(source).startswith("The picture is too large (1001x1): ")


def test_a_phone_mpo_photo_is_decoded_at_reduced_scale():
    big = photo(1024, 768)
    data = encode(big, "MPO", save_all=True, append_images=[big.rotate(180)])
    img = open_image(data)
    assert img.format == "MPO"
    # The largest of 1/1, 1/2, 1/4, 1/8 keeping at least 4 x 32 = 128 px a side: 768 / 4 = 192.
    assert img.size == (256, 192)
    assert open_image(data, draft_size=None).size == (1024, 768)


# --------------------------------------------------------------------------- frames and 16-bit byte orders

@pytest.mark.parametrize("fmt", ["GIF", "PNG"])
def test_a_pil_animation_at_its_second_frame_uses_the_first(fmt):
    frames = [Image.new("RGB", (20, 20), c) for c in (RED, BLUE, GREEN)]
    img = Image.open(io.BytesIO(encode(frames[0], fmt, save_all=True, append_images=frames[1:])))
    img.seek(1)
    assert tuple(to_uint8(img)[10, 10]) == RED


@pytest.mark.parametrize("mode,byte_order", [("I;16", "<"), ("I;16L", "<"), ("I;16B", ">"), ("I;16N", "=")])
def test_16_bit_grey_is_scaled_in_every_byte_order(mode, byte_order):
    samples = [0, 255, 300, 32896, 40000, 65535]
    a = np.zeros((32, 32), dtype=f"{byte_order}u2")  # 32x32: to_uint8 returns its pixels unresized
    a.flat[: len(samples)] = samples
    img = Image.frombytes(mode, (32, 32), a.tobytes())
    assert img.mode == mode and img.getpixel((4, 0)) == 40000
    out = to_uint8(img)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    # value / 257, rounded: the 16-bit range onto 8 bits (clipping would make the last four 255)
    assert out[0, : len(samples), 0].tolist() == [0, 1, 1, 128, 156, 255]


# --------------------------------------------------------------------------- the crop and the resize

@pytest.mark.parametrize("height,width", [(32, 35), (35, 32)], ids=["wide", "tall"])
def test_an_odd_overhang_crops_whole_pixels(height, width):
    # 3 px too many: the centred square starts at pixel 1 (rounded down), and a 32 px square at a
    # whole-pixel offset comes out exactly as it is (no half-pixel shift blending neighbours).
    a = np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)
    expected = a[:, 1:33] if width > height else a[1:33]
    assert np.array_equal(to_uint8(Image.fromarray(a)), expected)


def test_to_uint8_gives_the_size_asked_for():
    a = np.random.default_rng(2).integers(0, 256, (16, 20, 3), dtype=np.uint8)
    assert np.array_equal(to_uint8(Image.fromarray(a), 16), a[:, 2:18])  # the centred 16x16, unresized


def test_a_large_picture_is_averaged_in_whole_blocks_before_the_bicubic_resize():
    # 384 -> 32 is 12 times smaller; with reducing_gap 3 the first step averages 4x4 blocks
    # (int(12 / 3) = 4) down to 96 px, then the bicubic filter makes 32 px of those.
    a = np.random.default_rng(3).integers(0, 256, (384, 384, 3), dtype=np.uint8)
    blocks = np.floor(a.reshape(96, 4, 96, 4, 3).mean(axis=(1, 3)) + 0.5).astype(np.uint8)
    expected = np.asarray(Image.fromarray(blocks).resize((32, 32), Image.Resampling.BICUBIC))
    one_step = np.asarray(Image.fromarray(a).resize((32, 32), Image.Resampling.BICUBIC))
    assert not np.array_equal(expected, one_step)  # the two steps are visible in the pixels
    assert np.array_equal(to_uint8(Image.fromarray(a)), expected)


# --------------------------------------------------------------------------- normalize

PIXELS = torch.arange(256, dtype=torch.uint8).repeat(3).reshape(1, 16, 16, 3)  # every level, each channel


def normalized_by_hand(pixels: torch.Tensor) -> torch.Tensor:
    """((pixels / 255) - mean) / std in float32, channels first."""
    x = pixels.to(torch.float32) / 255
    x = (x - torch.tensor(CIFAR_MEAN, dtype=torch.float32)) / torch.tensor(CIFAR_STD, dtype=torch.float32)
    return x.permute(0, 3, 1, 2)


def test_normalize_names_the_dtype_it_refuses():
    for dtype in (torch.float32, torch.int64):
        with pytest.raises(TypeError) as err:
            normalize(torch.zeros(4, 4, 3, dtype=dtype))
        assert str(err.value) == f"normalize takes uint8 pixels, got {dtype}"


def test_normalize_does_not_depend_on_torchs_default_dtype():
    # The network's input must be the float32 values training used, even in a process that made
    # float64 torch's default (the statistics then became float64 and shifted values by 1 ulp).
    expected = normalized_by_hand(PIXELS)
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        got = normalize(PIXELS)
    finally:
        torch.set_default_dtype(before)
    assert got.dtype == torch.float32
    assert torch.equal(got, expected)


def test_normalize_puts_its_statistics_on_the_pixels_device():
    # CPU pixels inside `with torch.device(...)` (as a script that made CUDA its default device would
    # hand them over): the statistics must go where the pixels are. "meta" stands in for the other
    # device, so this runs without a GPU: statistics created there hold no values at all.
    expected = normalized_by_hand(PIXELS)
    with torch.device("meta"):
        got = normalize(PIXELS)
    assert got.device.type == "cpu"
    assert torch.equal(got, expected)
