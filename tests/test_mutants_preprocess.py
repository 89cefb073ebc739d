"""Behaviour that mutation testing (python -m benchmarks.mutation) found unchecked: what a caller of
``to_uint8`` gets for high-depth pictures (16/32-bit integers, floats with NaN or infinities) and the
sentence shown for pictures over the size limit."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from cifar_model.preprocess import ImageError, to_uint8


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
