"""The one preprocessing path: every colour mode, EXIF orientation and size, the documented crop,
transparency, animation, normalisation, and every kind of input giving the same pixels.

Pictures are generated here (see tests/hostile.py for the helpers); nothing touches the network.
"""

from __future__ import annotations

import gc
import io
import warnings

import numpy as np
import psutil
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from cifar_model import CIFAR_MEAN, CIFAR_STD, Classifier, CifarCNN, ImageError, normalize, open_image, to_rgb, to_uint8
from tests.hostile import encode, photo

pytestmark = pytest.mark.timeout(30)

RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)


def network_input(source, mean=CIFAR_MEAN, std=CIFAR_STD) -> torch.Tensor:
    """The one path from a picture to what the network takes: ``normalize(to_uint8(...))``."""
    return normalize(torch.from_numpy(to_uint8(source)), mean, std)


def check_tensor(x: torch.Tensor) -> None:
    """What the network takes: 1 x 3 x 32 x 32, float32, finite."""
    assert x.shape == (1, 3, 32, 32)
    assert x.dtype == torch.float32
    assert torch.isfinite(x).all()


def solid(mode: str, colour, size=(40, 30)) -> Image.Image:
    """A one-colour picture in ``mode``."""
    return Image.new(mode, size, colour)


def mean_colour(pixels: np.ndarray) -> np.ndarray:
    """Mean RGB of a uint8 H x W x 3 array."""
    return pixels.reshape(-1, 3).mean(0)


def nearest(pixel, palette: dict[str, tuple[int, int, int]]) -> str:
    """Name of the palette colour closest to ``pixel`` (robust to JPEG and resampling noise)."""
    return min(palette, key=lambda k: sum((int(a) - b) ** 2 for a, b in zip(pixel, palette[k])))


# --------------------------------------------------------------------------- colour modes

def high_depth(mode: str) -> Image.Image:
    """The test photo's grey levels in a 16-bit, 32-bit integer or float mode."""
    grey = np.asarray(photo().convert("L"), dtype=np.float64)
    if mode == "F":
        return Image.fromarray((grey / 255).astype(np.float32))  # floats in [0, 1]
    if mode == "I":
        return Image.fromarray((grey * 257).astype(np.int32))  # 16-bit samples in 32-bit ints
    if mode == "I;16B":  # big-endian; Pillow's convert("I;16B") clips at 255, so build it from bytes
        return Image.frombytes(mode, (grey.shape[1], grey.shape[0]), (grey * 257).astype(">u2").tobytes())
    return Image.fromarray((grey * 257).astype(np.uint16))  # I;16


# mode -> the picture in that mode, and what it should look like (the RGB or grey photo).
MODES = {
    "1": lambda: photo().convert("1"),
    "L": lambda: photo().convert("L"),
    "P": lambda: photo().convert("P"),
    "RGB": lambda: photo(),
    "RGBA": lambda: photo().convert("RGBA"),
    "RGBX": lambda: photo().convert("RGBX"),
    "RGBa": lambda: photo().convert("RGBa"),
    "LA": lambda: photo().convert("LA"),
    "La": lambda: photo().convert("LA").convert("La"),
    "PA": lambda: photo().convert("PA"),
    "CMYK": lambda: photo().convert("CMYK"),
    "YCbCr": lambda: photo().convert("YCbCr"),
    "LAB": lambda: photo().convert("LAB"),
    "HSV": lambda: photo().convert("HSV"),
    "I;16": lambda: high_depth("I;16"),
    "I;16B": lambda: high_depth("I;16B"),
    "I": lambda: high_depth("I"),
    "F": lambda: high_depth("F"),
}
GREY_MODES = {"1", "L", "LA", "La", "I;16", "I;16B", "I", "F"}


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_gives_the_pictures_colours(mode):
    img = MODES[mode]()
    assert img.mode == mode
    check_tensor(network_input(img))
    expected = to_uint8(photo().convert("L") if mode in GREY_MODES else photo()).astype(int)
    got = to_uint8(img).astype(int)
    # "1" is dithered and "P" quantised; LAB/HSV/YCbCr round through 8-bit maths: all close on average.
    tolerance = 40 if mode == "1" else 6
    assert np.abs(got - expected).mean() < tolerance, mode


# Formats and the modes each one stores natively, as files a user could upload.
FILE_MODES = {
    "PNG": ["1", "L", "P", "RGB", "RGBA", "LA", "I;16"],
    "JPEG": ["L", "RGB", "CMYK"],
    "GIF": ["L", "P"],
    # (not YCbCr: Pillow writes YCbCr TIFFs without the subsampling tag and then misreads its own file)
    "TIFF": ["1", "L", "P", "RGB", "RGBA", "CMYK", "I", "F", "I;16", "LAB"],
    "WEBP": ["RGB", "RGBA"],
    "BMP": ["1", "L", "P", "RGB"],
}


@pytest.mark.parametrize("fmt,mode", [(f, m) for f, modes in FILE_MODES.items() for m in modes])
def test_every_mode_as_a_file(fmt, mode):
    data = encode(MODES[mode](), fmt)
    check_tensor(network_input(data))


def test_palette_transparency_and_premultiplied_modes_composite_onto_white():
    # A transparent red must come out white: transparent pixels have no colour of their own.
    cases = {
        "RGBA": solid("RGBA", (255, 0, 0, 0)),
        "LA": solid("LA", (0, 0)),
        "La": solid("LA", (0, 0)).convert("La"),
        "RGBa": solid("RGBA", (255, 0, 0, 0)).convert("RGBa"),
        "PA": solid("RGBA", (255, 0, 0, 0)).convert("PA"),
    }
    for name, img in cases.items():
        assert img.mode == name
        assert tuple(to_uint8(img)[0, 0]) == WHITE, name
    half = to_uint8(solid("RGBA", (0, 0, 0, 128)))[0, 0]  # half-transparent black: mid grey
    assert all(abs(int(c) - 127) <= 1 for c in half)


@pytest.mark.parametrize("mode,colour,key", [
    ("P", 0, 0),  # a palette entry marked transparent
    ("L", 7, 7),  # a grey colour key (PNG tRNS)
    ("RGB", (1, 2, 3), (1, 2, 3)),  # an RGB colour key: was ignored (RGB returned early)
    ("I;16", 500, 500),  # a 16-bit grey colour key: was dropped by the 16-bit scaling
])
def test_png_transparency_keys_become_white(mode, colour, key):
    img = solid(mode, colour)
    if mode == "P":
        img.putpalette([255, 0, 0] * 256)
    # Half the picture is the transparent key, the other half an opaque colour.
    other = {"P": 1, "L": 100, "RGB": (0, 0, 255), "I;16": 30000}[mode]
    img.paste(other, (20, 0, 40, 30))
    data = encode(img, "PNG", transparency=key)
    assert "transparency" in Image.open(io.BytesIO(data)).info
    rgb = to_rgb(open_image(data))
    assert rgb.getpixel((2, 2)) == WHITE
    assert rgb.getpixel((37, 2)) != WHITE


def test_grey_alpha_and_palette_transparent_files():
    grey_alpha = Image.merge("LA", (solid("L", 0), solid("L", 0)))  # black, fully transparent
    assert tuple(to_uint8(encode(grey_alpha, "PNG"))[0, 0]) == WHITE
    gif = solid("P", 3)
    gif.putpalette([0, 255, 0] * 256)
    assert tuple(to_uint8(encode(gif, "GIF", transparency=3))[0, 0]) == WHITE


def test_16_bit_grey_is_scaled_not_clipped():
    ramp = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    rgb = np.asarray(to_rgb(open_image(encode(Image.fromarray(ramp), "PNG"))))
    assert Image.open(io.BytesIO(encode(Image.fromarray(ramp), "PNG"))).mode == "I;16"
    np.testing.assert_allclose(rgb[..., 0], ramp / 257, atol=0.51)  # clipping would make most 255
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all()
    assert tuple(to_uint8(solid("I;16", 40000))[0, 0]) == (156,) * 3  # 40000 / 257 = 155.6


def test_16_bit_brightness_does_not_depend_on_the_pictures_range():
    # A dark 16-bit picture (all values <= 255 of 65535) is nearly black, not 257 times brighter:
    # the scale comes from the mode's range, not from the picture's maximum.
    assert tuple(to_uint8(solid("I;16", 255))[0, 0]) == (1, 1, 1)
    assert tuple(to_uint8(solid("I;16", 0))[0, 0]) == BLACK


def test_float_pictures():
    assert tuple(to_uint8(solid("F", 0.5))[0, 0]) == (128,) * 3  # [0, 1] floats
    assert tuple(to_uint8(solid("F", 200.0))[0, 0]) == (200,) * 3  # [0, 255] floats
    nan = np.full((30, 40), np.nan, np.float32)
    nan[:, 20:] = np.inf
    check_tensor(network_input(Image.fromarray(nan)))


# --------------------------------------------------------------------------- EXIF orientation

QUADRANTS = {"red": RED, "green": GREEN, "blue": BLUE, "white": WHITE}


def upright_quadrants(width: int = 64, height: int = 48) -> np.ndarray:
    """The picture as it should be seen: red top-left, green top-right, blue bottom-left, white
    bottom-right. Not square, so a missing 90-degree turn shows in the size too."""
    a = np.zeros((height, width, 3), np.uint8)
    a[: height // 2, : width // 2] = RED
    a[: height // 2, width // 2:] = GREEN
    a[height // 2:, : width // 2] = BLUE
    a[height // 2:, width // 2:] = WHITE
    return a


# How a camera stores the upright picture for each EXIF orientation: the inverse of what the
# viewer must do (EXIF 2.3, tag 0x0112). 6 means "rotate 90 degrees clockwise to view", so the
# camera stored it turned 90 degrees counter-clockwise, and so on.
STORED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # view: mirror left-right
    3: lambda a: a[::-1, ::-1],  # view: rotate 180
    4: lambda a: a[::-1],  # view: mirror top-bottom
    5: lambda a: a.transpose(1, 0, 2),  # view: mirror left-right, then rotate 90 counter-clockwise
    6: lambda a: np.rot90(a, 1),  # view: rotate 90 clockwise
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),  # view: mirror left-right, then rotate 90 clockwise
    8: lambda a: np.rot90(a, -1),  # view: rotate 90 counter-clockwise
}


def with_orientation(fmt: str, orientation: int) -> bytes:
    """The quadrant picture stored as a camera would for ``orientation``, with the EXIF tag."""
    stored = Image.fromarray(np.ascontiguousarray(STORED[orientation](upright_quadrants())))
    exif = Image.Exif()
    exif[0x0112] = orientation
    params = {"quality": 95} if fmt == "JPEG" else {}
    return encode(stored, fmt, exif=exif, **params)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_exif_orientation_comes_out_upright(fmt, orientation):
    data = with_orientation(fmt, orientation)
    assert to_rgb(open_image(data)).size == (64, 48)
    out = to_uint8(data)
    corners = {(4, 4): "red", (4, 27): "green", (27, 4): "blue", (27, 27): "white"}  # (row, col)
    assert {rc: nearest(out[rc], QUADRANTS) for rc in corners} == corners


def test_orientation_of_a_pil_image_is_applied_without_changing_it():
    img = Image.open(io.BytesIO(with_orientation("JPEG", 6)))
    assert nearest(to_uint8(img)[4, 4], QUADRANTS) == "red"
    assert img.size == (48, 64) and img.getexif()[0x0112] == 6  # the caller's image is untouched


# --------------------------------------------------------------------------- sizes and the crop

SIZES = [(1, 1), (2, 1), (8000, 6), (6, 8000), (33, 32), (32, 33), (32, 32), (640, 480), (4000, 3000)]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_sizes(size):
    # Large ones as JPEG (fast to encode and decode with draft); small ones as lossless PNG.
    fmt = "JPEG" if size[0] * size[1] > 1_000_000 else "PNG"
    data = encode(photo(*size), fmt)
    x = network_input(data)
    check_tensor(x)
    assert tuple(to_uint8(data).shape) == (32, 32, 3)


def test_large_jpeg_is_drafted_not_decoded_in_full():
    # A 4000x3000 JPEG decodes at reduced scale (at least 128 px a side): 8x fewer pixels each way.
    data = encode(photo(4000, 3000), "JPEG")
    assert open_image(data).size == (500, 375)
    assert open_image(data, draft_size=None).size == (4000, 3000)


def thirds(horizontal: bool) -> Image.Image:
    """Red, green and blue thirds, side by side (or stacked): 96x32 (or 32x96)."""
    a = np.zeros((32, 96, 3), np.uint8)
    a[:, :32], a[:, 32:64], a[:, 64:] = RED, GREEN, BLUE
    return Image.fromarray(a if horizontal else np.ascontiguousarray(a.transpose(1, 0, 2)))


@pytest.mark.parametrize("horizontal", [True, False], ids=["wide", "tall"])
def test_non_square_pictures_are_centre_cropped(horizontal):
    # The documented choice: the largest centred square, so only the green third remains.
    # Squeezing would keep a third of each colour; padding would add borders.
    out = to_uint8(thirds(horizontal)).reshape(-1, 3)
    names = [nearest(p, {"red": RED, "green": GREEN, "blue": BLUE}) for p in out]
    assert names.count("green") / len(names) > 0.95
    assert abs(mean_colour(to_uint8(thirds(horizontal)))[1] - 255) < 8


def test_crop_keeps_the_centre_of_an_odd_overhang():
    a = np.zeros((32, 35, 3), np.uint8)
    a[:, 1:34] = GREEN  # 35 wide: the centred 32 columns start at 1
    assert (to_uint8(Image.fromarray(a)) == GREEN).all()


# --------------------------------------------------------------------------- animation

def animation(fmt: str) -> bytes:
    """Three frames, red then blue then green."""
    frames = [solid("RGB", c, (20, 20)) for c in (RED, BLUE, GREEN)]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=40, loop=0)


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP", "TIFF"])
def test_animation_uses_the_first_frame(fmt):
    data = animation(fmt)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    assert nearest(to_uint8(data)[10, 10], {"red": RED, "blue": BLUE, "green": GREEN}) == "red"


def test_a_pil_animation_at_a_later_frame_uses_the_first():
    img = Image.open(io.BytesIO(animation("GIF")))
    img.seek(2)
    assert nearest(to_uint8(img)[10, 10], {"red": RED, "blue": BLUE, "green": GREEN}) == "red"


@pytest.mark.parametrize("fmt", ["GIF", "TIFF", "PNG"])
def test_animation_opened_by_path_leaves_no_file_open(tmp_path, fmt):
    # Pillow keeps a multi-frame file open for seeking (until garbage collection, with a
    # ResourceWarning); open_image must close it once the first frame is decoded.
    path = tmp_path / f"anim.{fmt.lower()}"
    path.write_bytes(animation(fmt))
    gc.collect()  # earlier tests' garbage (a server's sockets) must not warn inside the block below
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        img = open_image(path)
        assert img.fp is None
        assert str(path) not in [f.path for f in psutil.Process().open_files()]
        to_uint8(path)
        del img
        gc.collect()  # an unclosed file warns when it is collected
    assert not [w for w in caught if issubclass(w.category, ResourceWarning) and path.name in str(w.message)]


# --------------------------------------------------------------------------- normalisation and inputs

def test_normalisation_uses_the_models_mean_and_std():
    model = CifarCNN()
    assert tuple(model.mean) == CIFAR_MEAN and tuple(model.std) == CIFAR_STD
    img = photo()
    pixels = torch.from_numpy(to_uint8(img)).float() / 255  # H x W x 3
    by_hand = ((pixels - torch.tensor(CIFAR_MEAN)) / torch.tensor(CIFAR_STD)).permute(2, 0, 1)[None]
    torch.testing.assert_close(network_input(img), by_hand, rtol=0, atol=1e-6)
    x = network_input(img, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    torch.testing.assert_close(x, (pixels.permute(2, 0, 1)[None] - 0.5) / 0.25, rtol=0, atol=1e-6)


def test_classifier_normalises_with_its_models_statistics():
    torch.manual_seed(0)
    model = CifarCNN(mean=(0.2, 0.3, 0.4), std=(0.5, 0.6, 0.7)).eval()
    clf = Classifier(model, tta=False, precision="fp32")
    pixels = torch.from_numpy(to_uint8(photo()))[None]
    with torch.no_grad():
        expected = model(normalize(pixels, (0.2, 0.3, 0.4), (0.5, 0.6, 0.7)))
    torch.testing.assert_close(clf.logits(pixels), expected, rtol=1e-4, atol=1e-4)


def test_normalize_takes_uint8_only():
    with pytest.raises(TypeError):
        normalize(torch.zeros(32, 32, 3))
    assert normalize(torch.zeros(32, 32, 3, dtype=torch.uint8)).shape == (1, 3, 32, 32)


@pytest.mark.parametrize("name,data", [
    ("jpeg", encode(photo(200, 150), "JPEG", quality=90)),  # under 2 x 128 a side: no draft scaling
    ("png", encode(photo(61, 47).convert("RGBA"), "PNG")),
    ("gif", animation("GIF")),
    ("jpeg-rotated", with_orientation("JPEG", 6)),
    ("cmyk-jpeg", encode(photo(90, 70).convert("CMYK"), "JPEG")),
    ("tiff-16bit", encode(high_depth("I;16"), "TIFF")),
])
def test_bytes_path_file_and_pil_inputs_agree(tmp_path, name, data):
    path = tmp_path / f"picture-{name}"
    path.write_bytes(data)
    expected = to_uint8(data)
    assert np.array_equal(to_uint8(bytearray(data)), expected)
    assert np.array_equal(to_uint8(path), expected)
    assert np.array_equal(to_uint8(str(path)), expected)
    with open(path, "rb") as f:
        assert np.array_equal(to_uint8(f), expected)
        assert not f.closed  # the caller's file stays theirs to close
    assert np.array_equal(to_uint8(io.BytesIO(data)), expected)
    assert np.array_equal(to_uint8(Image.open(io.BytesIO(data))), expected)
    torch.testing.assert_close(network_input(path), network_input(data), rtol=0, atol=0)


def test_a_pil_image_is_not_modified():
    img = photo(50, 40).convert("RGBA")
    before = img.tobytes()
    to_uint8(img)
    assert img.mode == "RGBA" and img.size == (50, 40) and img.tobytes() == before


def test_truncated_images_stay_refused_process_wide():
    # LOAD_TRUNCATED_IMAGES would let a truncated JPEG decode with grey fill: it must stay off.
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    jpeg = encode(photo(640, 480), "JPEG")
    for cut in (0.3, 0.6, 0.9, 0.99):
        with pytest.raises(ImageError, match="incomplete"):
            to_uint8(jpeg[: int(len(jpeg) * cut)])


# --------------------------------------------------------------------------- property test

PROPERTY_FORMATS = {f: m for f, m in FILE_MODES.items() if f != "TIFF"} | {"TIFF": ["L", "RGB", "CMYK", "F", "I;16"]}
EXIF_FORMATS = {"JPEG", "PNG", "WEBP", "TIFF"}


@st.composite
def pictures(draw) -> bytes:
    """An encoded picture: any format, one of its modes, any small or extreme size, an optional
    EXIF orientation, optionally cut short."""
    fmt = draw(st.sampled_from(sorted(PROPERTY_FORMATS)))
    mode = draw(st.sampled_from(PROPERTY_FORMATS[fmt]))
    side = st.one_of(st.integers(1, 80), st.sampled_from([1, 2, 3, 31, 32, 33, 127, 128, 129, 1500]))
    w, h = draw(side), draw(side)
    img = photo(w, h)
    img = high_depth_resized(mode, img) if mode in ("F", "I;16") else img.convert(mode)
    params = {}
    orientation = draw(st.integers(0, 8))
    if orientation and fmt in EXIF_FORMATS:
        params["exif"] = Image.Exif()
        params["exif"][0x0112] = orientation
    data = encode(img, fmt, **params)
    cut = draw(st.one_of(st.none(), st.floats(0.0, 1.0)))
    return data if cut is None else data[: int(len(data) * cut)]


def high_depth_resized(mode: str, img: Image.Image) -> Image.Image:
    """``img``'s grey levels as 16-bit (I;16) or [0, 1] float (F) samples."""
    grey = np.asarray(img.convert("L"), dtype=np.float64)
    return Image.fromarray((grey / 255).astype(np.float32) if mode == "F" else (grey * 257).astype(np.uint16))


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")  # EXIF blocks cut short
@settings(max_examples=100, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(pictures())
def test_property_a_finite_tensor_or_an_image_error(data):
    try:
        x = network_input(data)
    except ImageError as err:
        assert str(err).endswith(".") and "\n" not in str(err)
    else:
        check_tensor(x)
