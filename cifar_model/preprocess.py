"""The one preprocessing path from an untrusted picture to the network's input.

Training's evaluation, the library, the CLI and the app all go through :func:`to_uint8`, and the
network's input is always :func:`normalize` of its result, so a prediction can't drift from what the
model was trained and scored on.

How a picture becomes 32x32 (a documented choice, tested in tests/test_preprocess.py):

1. Decode safely: only common image formats, at most :data:`MAX_PIXELS` pixels (checked from the
   header, before any pixel is decoded), truncated files are errors.
2. First frame of an animation; EXIF orientation applied (phone photos come out upright).
3. Colour: palette, grey, CMYK and 16-bit/float modes become 8-bit RGB (16-bit grey is scaled, not
   clipped); transparent pixels have no colour of their own, so they are composited onto white.
4. Shape: the largest centred square is cropped (the subject of a photo is usually in the middle and
   CIFAR-10 objects fill their frame; squeezing would distort it, padding would add borders CIFAR
   never has), then resized to 32x32 with an antialiased bicubic filter.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .model import CIFAR_MEAN, CIFAR_STD, IMAGE_SIZE

ImageInput = Union[Image.Image, str, os.PathLike, bytes, bytearray, BinaryIO]

# Largest picture accepted, in pixels (width x height), checked before decoding. 50 Mpx covers a
# 48 Mpx phone photo; Pillow's own bomb check only warns below 89 Mpx.
MAX_PIXELS = 50_000_000
# Formats other than JPEG (which is decoded at a reduced scale, see open_image) decode every pixel
# whatever the file's size: a 4 KB lossless WebP can declare 16 Mpx and cost 0.36 s of CPU. They get
# at most LOSSLESS_MAX_PIXELS, and past LOSSLESS_FREE_PIXELS at most PIXELS_PER_BYTE pixels per byte of
# file: screenshots and drawings compress to tens of pixels a byte, flat fills to thousands.
LOSSLESS_MAX_PIXELS, LOSSLESS_FREE_PIXELS, PIXELS_PER_BYTE = 16_000_000, 2_000_000, 100
# Decoders allowed to run on untrusted input. Multi-picture JPEGs from phones (MPO) are opened by
# the JPEG decoder; "MPO" has no opener of its own, and naming it here made Image.open raise
# KeyError('MPO') for every file no listed decoder recognised.
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
# Background for transparent pixels (see module docstring).
BACKGROUND = (255, 255, 255)

_SUPPORTED = "JPEG, PNG, WebP, GIF, BMP or TIFF"
_NOT_A_PICTURE = f"This file is not a picture we can read. Use a {_SUPPORTED} image."
_TRUNCATED = "The picture is incomplete: the file ends too early. Upload the whole file again."
_DAMAGED = ("The picture is damaged and could not be decoded. "
            "Open it in an image viewer and save it again as JPEG or PNG.")
_log = logging.getLogger(__name__)


class ImageError(ValueError):
    """The input can't be used as a picture. ``str(err)`` is a sentence a user can act on."""


def open_image(source: ImageInput, *, draft_size: int | None = 4 * IMAGE_SIZE) -> Image.Image:
    """Decode ``source`` (a path, bytes, a binary file or a PIL image) into a loaded PIL image.

    ``draft_size`` lets a JPEG decoder skip detail the 32x32 result can't use (it decodes at 1/2 to
    1/8 scale while keeping at least ``draft_size`` pixels on each side); ``None`` decodes in full.
    Only the first frame of an animation is decoded, and a file opened from a path is closed
    before this returns (the image no longer needs it).

    Raises:
        ImageError: unreadable, unsupported, truncated, empty, or larger than :data:`MAX_PIXELS`.
    """
    if isinstance(source, Image.Image):
        _check_size(source.size)
        with _decoding():  # a picture from Image.open is decoded lazily: here, inside the handling
            source.load()
        return source
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageError(f"The file is empty. Choose a photo ({_SUPPORTED}).")
        fp: BinaryIO | str | os.PathLike = io.BytesIO(source)
        nbytes = len(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"No such file: {path.name}. Check the name and the folder.")
        nbytes = path.stat().st_size
        if nbytes == 0:
            raise ImageError(f"The file {path.name} is empty. Choose a photo ({_SUPPORTED}).")
        fp = path
    elif hasattr(source, "read"):
        fp = source if source.seekable() else io.BytesIO(source.read())
        nbytes = fp.seek(0, io.SEEK_END)  # Pillow reads the file from its start
        fp.seek(0)
    else:
        raise ImageError(f"Can't read a picture from an object of type {type(source).__name__}. "
                         "Pass a file path, the file's bytes, a binary file or a PIL image.")
    # Leaving Image.open's `with` closes a file Pillow opened from a path (for multi-frame formats
    # it would otherwise stay open, for seeking, until garbage collection); the loaded frame stays.
    with _decoding(), Image.open(fp, formats=FORMATS) as img:
        _check_size(img.size)  # from the header: nothing is decoded yet
        if img.format in ("JPEG", "MPO"):
            if draft_size:
                img.draft("RGB", (draft_size, draft_size))  # pragma: no mutate (modes but L/YCbCr: ignored)
        else:
            _check_cost(img.size, img.format, nbytes)
        img.load()
    return img


@contextlib.contextmanager
def _decoding() -> Iterator[None]:
    """Turn whatever decoding untrusted bytes raises into an ImageError with a fixed sentence.

    Pillow's messages are for developers (reprs of bytes and file objects): they go to the debug
    log, not to the user.
    """
    try:
        yield
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(_NOT_A_PICTURE) from None
    # Pillow warns from 89.5 Mpx: only on a picture MAX_PIXELS refuses anyway, so the warning is
    # left to the warnings filters, and caught here if they make it an error. Silencing it with
    # warnings.catch_warnings() is not thread-safe: threads restoring each other's saved filters
    # left the "ignore" installed process-wide.
    except (Image.DecompressionBombError, Image.DecompressionBombWarning, MemoryError):
        raise ImageError(_too_big_message()) from None
    except Exception as err:  # plugins raise OSError, SyntaxError, ValueError, struct.error... on bad bytes
        _log.debug("decoding failed: %r", err)
        truncated = isinstance(err, EOFError) or "truncated" in str(err).lower()
        raise ImageError(_TRUNCATED if truncated else _DAMAGED) from None


def _too_big_message(size: tuple[int, int] | None = None) -> str:
    dims = f" ({size[0]}x{size[1]})" if size else ""
    return f"The picture is too large{dims}: the limit is {MAX_PIXELS // 1_000_000} megapixels. Use a smaller copy."


def _check_size(size: tuple[int, int]) -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise ImageError("The picture has no pixels (its width or height is 0). Choose another picture.")
    if w * h > MAX_PIXELS:
        raise ImageError(_too_big_message(size))


def _check_cost(size: tuple[int, int], fmt: str, nbytes: int) -> None:
    pixels = size[0] * size[1]
    if pixels > LOSSLESS_MAX_PIXELS or pixels > max(LOSSLESS_FREE_PIXELS, PIXELS_PER_BYTE * nbytes):
        raise ImageError(f"The picture is too large for a {fmt} file of {nbytes:,} bytes ({size[0]}x{size[1]}): "
                         f"{fmt} pictures may have at most {LOSSLESS_MAX_PIXELS // 1_000_000} megapixels, and "
                         f"beyond {LOSSLESS_FREE_PIXELS // 1_000_000} megapixels at most {PIXELS_PER_BYTE} pixels "
                         "per byte of file. Save it as JPEG, or use a smaller copy.")


def to_rgb(img: Image.Image) -> Image.Image:
    """First frame, upright, 8-bit RGB, transparency composited onto :data:`BACKGROUND`."""
    # tell(), not n_frames: counting frames walks the whole file (a GIF of 50,000 frames: 0.2 s).
    if img.tell() != 0:  # a PIL animation handed over at a later frame
        with _decoding():
            img.seek(0)
            img.load()
    try:
        img = ImageOps.exif_transpose(img) or img
    except Exception:  # a malformed EXIF block must not cost the user the prediction
        pass
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        img = _high_depth_to_l(img)
    if img.mode == "La":
        img = img.convert("LA")  # premultiplied: Pillow converts it only to LA
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa") or "transparency" in img.info
    if not has_alpha:
        return img.convert("RGB")  # a copy when it is RGB already
    rgba = img.convert("RGBA")  # also applies a palette's or an RGB/grey colour key's transparency
    opaque = BACKGROUND + (255,)  # pragma: no mutate (Pillow clips an alpha of 256 to 255)
    background = Image.new("RGBA", rgba.size, opaque)
    return Image.alpha_composite(background, rgba).convert("RGB")


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    # Pillow's convert("L") clips 16-bit values at 255 (a 16-bit photo turns white): scale instead.
    raw = np.asarray(img)
    # NaN -> 0 by default; astype(None) is float64 too
    a = np.nan_to_num(raw.astype(np.float64), posinf=0.0, neginf=0.0)  # pragma: no mutate
    if img.mode.startswith("I;16"):
        a = a / 257.0  # the 16-bit range -> 8 bits, whatever range this picture happens to use
    elif img.mode == "I" and a.size and a.max() > 255:
        a = a / 257.0  # 32-bit integers holding 16-bit samples
    elif img.mode == "F" and a.size and a.max() <= 1.0 and a.min() >= 0.0:
        a = a * 255.0  # float images in [0, 1]
    grey = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))
    transparent = img.info.get("transparency")
    if isinstance(transparent, int):  # a PNG colour key: pixels of this grey level are transparent
        grey.putalpha(Image.fromarray(np.where(raw == transparent, 0, 255).astype(np.uint8)))
    return grey


def center_square_resize(img: Image.Image, size: int = IMAGE_SIZE) -> Image.Image:
    """Crop the largest centred square and resize it to ``size`` x ``size`` (antialiased bicubic).

    Not ``ImageOps.fit``: it gives other pixels (up to 6 levels off on 4 of 10 pictures tried: no
    ``reducing_gap``, other crop rounding), and the shipped weights' figures were measured with these.
    """
    w, h = img.size
    if (w, h) == (size, size):
        return img
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    # equivalent mutants here: bicubic is Pillow's default
    return img.resize((size, size), Image.Resampling.BICUBIC,  # pragma: no mutate (bicubic is the default)
                      box=(left, top, left + side, top + side), reducing_gap=3.0)


def to_uint8(source: ImageInput, size: int = IMAGE_SIZE) -> np.ndarray:
    """Any picture -> the ``size`` x ``size`` x 3 uint8 RGB array the network sees (before normalising).

    Raises:
        ImageError: the input can't be used (see :func:`open_image`).
    """
    img = open_image(source)
    try:
        return np.array(center_square_resize(to_rgb(img), size))  # uint8: the picture is RGB
    except ImageError:
        raise
    except (OSError, ValueError, TypeError, EOFError, MemoryError) as err:
        # e.g. a colour mode Pillow can't convert to RGB ("La" before its fix, exotic TIFF modes)
        _log.debug("converting a %s picture failed: %r", img.mode, err)
        raise ImageError(f"The picture's colour format ({img.mode}) is not supported. "
                         "Save it again as JPEG or PNG.") from None


def normalize(images: torch.Tensor, mean=CIFAR_MEAN, std=CIFAR_STD) -> torch.Tensor:
    """uint8 images, N x H x W x 3 (or H x W x 3) -> float32 N x 3 x H x W, normalised per channel.

    The single normalisation used by training (on the GPU, in batches) and by inference.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"normalize takes uint8 pixels, got {images.dtype}")
    if images.ndim == 3:
        images = images.unsqueeze(0)
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    shape = (1, 3, 1, 1)  # pragma: no mutate ((3, 1, 1) broadcasts the same)
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(shape)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(shape)
    return x.sub_(m).div_(s)
