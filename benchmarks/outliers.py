"""``python -m benchmarks.outliers [--fetch]``: pictures of none of the ten classes in three sets split by source,
train (for python -m train.finetune), dev and report, as outliers_<set>.npz: images (N x 32 x 32 x 3 uint8) and per
picture its source, category, filename and kind (whole, crop, synthetic). How, and from what: benchmarks/outliers.md.
"""

import argparse
import fnmatch
import glob
import hashlib
import json
import os
import re
import struct
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cifar_model.preprocess import ImageError, center_square_resize, open_image, to_rgb
from train import data
from train.recipe import split_train_val

CACHE = Path.home() / ".cache" / "cifar_demo" / "outliers"
IMG = re.compile(r".*\.(jpe?g|png|tiff?|bmp|gif|webp|ppm|pgm|pat)$", re.I)


def S(name, split, paths, *, skip=(), drop="", keep="", cat="", default="objects", minside=48, per_dir=0,
      sky=False, crops=True):
    """paths: globs in the cache; drop/keep: file-name patterns; cat: "regex=category" rules, else default."""
    drop, keep = (re.compile("|".join(map(fnmatch.translate, s.split()))) if s else None for s in (drop, keep))
    return dict(name=name, split=split, paths=paths, skip=skip, drop=drop, keep=keep, default=default, minside=minside,
                per_dir=per_dir, sky=sky, crops=crops, cat=[rule.rsplit("=", 1) for rule in cat.split()])


OCV = "ex/opencv-doc/usr/share/doc/opencv-doc/"
SOURCES = [  # the order is part of the sets' hashes
    S("opencv-doc", "train", [OCV + "examples/**/*", OCV + "opencv4/html/*", OCV + "opencv4/html/*/*/*"],
      skip=[r"/html/d[0-9a-f]/d[0-9a-f]{2}/",
            r"/html/(search|form|bc_|closed|open|doc|folder|nav|splitbar|sync_|tab_)"],
      drop="""chicky_512.png home.jpg licenseplate_motion.jpg 000.jpg [5-8].png scenetext0[16].jpg peilin_plane.png
      11.jpg 11_demo.jpg Bounding_Rects_Circles_Result.jpg Bounding_Rects_Circles_Source_Image.jpg
      Bounding_Rotated_Ellipses_Result.jpg Bounding_Rotated_Ellipses_Source_Image.jpg
      Histogram_Equalization_Equalized_Image.jpg Histogram_Equalization_Original_Image.jpg
      Histogram_Equalization_Theory_0.jpg Laplace_Operator_Tutorial_Original_Image.jpg
      Laplace_Operator_Tutorial_Result.jpg MatBasicImageForComputer.jpg Morphology_1_Result.jpg
      Morphology_1_Tutorial_Dilation_Result.jpg Morphology_1_Tutorial_Erosion_Result.jpg
      Morphology_1_Tutorial_Original_Image.jpg Pyramids_Tutorial_Original_Image.jpg Pyramids_Tutorial_PyrDown_Result.jpg
      Pyramids_Tutorial_PyrUp_Result.jpg Remap_Tutorial_Original_Image.jpg Remap_Tutorial_Result_[0-3].jpg
      Remap_Tutorial_Theory_[01].jpg Template_Matching_Correl_Result_[0-5].jpg Template_Matching_Image_Result.jpg
      Template_Matching_Mask_Example.jpg Template_Matching_Original_Image.jpg
      Template_Matching_Template_Theory_Result.jpg Template_Matching_Template_Theory_Sliding.jpg
      Template_Matching_Template_Theory_Summary.jpg Threshold_Tutorial_Original_Image.jpg
      Threshold_Tutorial_Result_Binary_Inverted.jpg Threshold_Tutorial_Result_Zero.jpg VideoDemo_RGB_PETS2006.jpg
      aero_det.jpg aero_thresh_det.jpg bus_det.jpg camshift_result.jpg cat_det.jpg filter_2d_tutorial_kernel_theory.png
      meanshift_result.jpg motion_original.jpg"""),
    S("povray-examples", "train", ["ex/povray-examples/usr/share/doc/povray/**/*"]),
    S("gimp-data-patterns", "train", ["ex/gimp-data/usr/share/gimp/2.0/patterns/**/*.pat"], minside=16,
      default="textures"),
    S("openshot-transitions", "train", ["ex/openshot-qt/usr/lib/python3/dist-packages/openshot_qt/transitions/**/*"],
      default="abstract", crops=False),
    S("pillow-tests", "train", ["ex/pillow/pillow-12.3.0/Tests/images/**/*"], minside=32, default="abstract",
      skip=[r"hopper", r"/fuzzer|/crash|/oom|/timeout|/bmp/b/|/jpeg2000|/apng/"],
      drop="app13-multiple.jpg exif_gps_typeerror.jpg exif_typeerror.jpg pil123p.png pil123rgba.png"),
    S("gimp-help-en", "dev", ["ex/gimp-help-en/usr/share/gimp/2.0/help/en/images/**/*"], minside=100,
      skip=[r"/images/(dialogs|menus|preferences|tool-options|glossary|contribute)/"],
      drop="""*default-layer-mode-* chrome-it-step[2-5].png convolution-crop.png convolution-extend.png
      convolution-milord.png convolution-wrap.png convolution.png dist_map-dialog.png erode-milord.png
      bucket-fill-ex-default.png bucket-fill-ex-feather.png bucket-fill-ex-grow.png bucket-fill-ex-origin.png
      free-selection.png fuzzy-selection.png iscissors-selection.png quickie-crop-example-result.jpg
      quickie-crop-example-source.jpg quickie-crop-options.png quickie-crop-step[12].png quickie-jpeg-010.jpg
      quickie-jpeg-040.jpg quickie-jpeg-070.jpg quickie-jpeg-100.jpg quickie-jpeg-dialog-preview.png
      quickie-jpeg-dialog.png quickie-jpeg-dialog2-preview.png quickie-jpeg-dialog2.png
      apple-orchard-truck-from-camera.jpg apple-orchard-truck-tone-mapped-with-Exposur.jpg
      auto-stretch-contrast-mask.jpg truck-tone-mapped-using-gegl-mantuik.jpg cairo-progress-indicator.png""",
      cat="""taj=buildings little_planet|pan-project|tone-mapping|landscape|sky|cloud=scenery
      zinnia|cosmos|sunflower|flower|rose|kvitveis|daisy|leaf|leaves|tree|plant|globe=plants"""),
    S("blender-studiolights", "dev", ["conv/blender_*.png"], cat="world=scenery matcap=abstract"),
    S("digikam-data", "dev", ["ex/digikam-data/**/*"], default="textures",  # (4 copies of GIMP patterns left out)
      keep="""body-background.jpg bluejean-texture.png bricks-texture.png bricks2-texture.png burlap-texture.png
      canvas-texture.png cellwood-texture.png chalk-pattern.png craters-pattern.png fabric-texture.png
      granit-pattern.png ice-pattern.png leaf-pattern.png marble-pattern.png marble-texture.png marble2-texture.png
      metalwire-texture.png modern-texture.png moss-texture.png paper-pattern.png paper-texture.png paper2-texture.png
      pine-pattern.png pink-pattern.png rain-pattern.png rock-pattern.png stone-texture.png wall-pattern.png
      wall-texture.png wood-pattern.png brownCard.png sample-aix.png summer.png assistant-tripod.png""",
      cat="body-background|summer|sample-aix=scenery tripod=objects"),
    S("gimp-data-extras", "dev", ["ex/gimp-data-extras/**/*.pat"], default="textures", minside=16),
    S("mypaint-backgrounds", "dev", ["ex/mypaint-data/usr/share/mypaint/backgrounds/**/*",
                                     "ex/mypaint-data-extras/**/*"], default="textures", minside=20),
    S("visp-images", "dev", ["ex/visp-images-data/**/*"], per_dir=3, minside=64),
    S("hugin-data", "report", ["ex/hugin-data/**/*"], minside=100, default="buildings",
      cat="""Lamp|PC_img|Celeste|CA_|SB_|Interpolate|Aliasing|Parallax=objects
      LagardePont|Little_planet|Tuebingen=scenery"""),
    S("scikit-image", "report", ["x/skimage/data/*"], drop="chelsea.png horse.png", minside=32,
      cat="brick|grass|gravel=textures coffee|coins|motorcycle|rocket|astronaut|camera=objects .=abstract"),
    S("scikit-learn", "report", ["x/sklearn/datasets/images/*"], cat="china=buildings flower=plants"),
    S("matplotlib-sample", "report", ["x/matplotlib/mpl-data/sample_data/*"], cat="hopper=objects .=abstract"),
    S("stellarium-landscapes", "report", ["ex/stellarium-data/usr/share/stellarium/landscapes/*/*"], default="scenery",
      sky=True, keep="""garching-gl[1-4].png garching-ground3.png grossmugl_leeberg_crop11.25_2048.png
      guereins[1-8b].png hurricane[1-8b].png ocean[1-9].png mars.png apollo17.png trees_512.png"""),
    S("krita-data", "report", ["ex/krita-data/usr/share/krita/**/*"], drop="banner.png", minside=64, default="textures",
      skip=[r"preset_icons|/icons/|qmlthemes|donation|paintoppresets"],
      cat="template|header|busy|kritasketch=abstract"),
    S("imagemagick-doc", "report", ["ex/imagemagick-6-doc/**/*"], drop="examples.jpg montage-sample-framed.jpg",
      minside=40, cat="bluebells|rose=plants granite=textures .=abstract"),
]
DEBS = """opencv-doc povray-examples gimp-data openshot-qt gimp-help-en blender-data digikam-data gimp-data-extras
mypaint-data mypaint-data-extras visp-images-data hugin-data stellarium-data krita-data imagemagick-6-doc""".split()
SKIES = [((70, 120, 200), (170, 200, 235)), ((120, 150, 190), (210, 215, 225)), ((150, 150, 155), (205, 205, 205)),
         ((40, 50, 110), (230, 140, 80)), ((25, 30, 60), (90, 80, 110)), ((95, 160, 225), (225, 235, 245))]


def fetch(cache: Path) -> None:
    """Download and unpack the sources: wheels -> x/, packages -> ex/, Blender's HDR worlds tone-mapped -> conv/."""
    dl = cache / "dl"
    for args in (["--only-binary", ":all:", "scikit-image==0.26.0", "scikit-learn==1.9.1", "matplotlib==3.11.2"],
                 ["--no-binary", ":all:", "pillow==12.3.0"]):  # Pillow: its source's Tests/images
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(dl), *args], check=True)
    subprocess.run(["apt-get", "download", *DEBS], cwd=dl, check=True)
    for whl in sorted(dl.glob("*.whl")):
        shutil.unpack_archive(whl, cache / "x", "zip")
    shutil.unpack_archive(next(dl.glob("pillow-*.tar.gz")), cache / "ex/pillow")
    for d in DEBS:
        subprocess.run(["dpkg", "-x", str(next(dl.glob(f"{d}_*.deb"))), str(cache / "ex" / d)], check=True)
    import OpenEXR  # pip install OpenEXR: only to read these files
    (cache / "conv").mkdir(exist_ok=True)
    for f in sorted((cache / "ex/blender-data/usr/share/blender/datafiles/studiolights").glob("*/*.exr")):
        ch = OpenEXR.File(str(f)).channels()
        a = np.clip(np.asarray((ch["RGB"] if "RGB" in ch else ch["RGBA"]).pixels[..., :3], np.float32), 0, None)
        a = np.clip(a / (1 + a) / max(np.percentile(a / (1 + a), 99.5), 1e-6), 0, 1) ** (1 / 2.2)
        Image.fromarray((a * 255).astype(np.uint8)).save(cache / "conv" / f"blender_{f.parent.name}_{f.stem}.png")


def read_rgb(path: str, rng: np.random.Generator | None) -> Image.Image:
    """The picture as the app reads it, or with ``rng`` onto a random sky gradient (for transparent skies)."""
    if path.endswith(".pat"):  # a GIMP pattern: header size, version, width, height, bytes a pixel, ...
        raw = Path(path).read_bytes()
        hsize, _, w, h, bpp = struct.unpack(">5I", raw[:20])
        px = np.frombuffer(raw[hsize:hsize + w * h * bpp], np.uint8).reshape(h, w, bpp)
        img = Image.fromarray(px if bpp > 1 else px[..., 0])  # L, LA, RGB or RGBA
    else:
        try:
            img = open_image(path, draft_size=None)
        except ImageError as err:  # netpbm (not for the app), and the app's CPU limit for large lossless uploads
            if not (path.endswith((".pgm", ".ppm")) or "too large for a" in str(err)):
                raise
            img = Image.open(path)
            img.load()
    if rng is None or img.mode not in ("RGBA", "LA", "P"):
        return to_rgb(img)
    top, bottom = SKIES[rng.integers(len(SKIES))]
    t = np.linspace(0, 1, img.height)[:, None, None] * np.ones((1, img.width, 1))
    sky = Image.fromarray((np.array(top) * (1 - t) + np.array(bottom) * t).astype(np.uint8))
    return Image.alpha_composite(sky.convert("RGBA"), img.convert("RGBA")).convert("RGB")


def graphic_share(img: Image.Image) -> float:
    """Share of pixels in the 4 commonest (coarse) colours: near 1 for screenshots, diagrams, logos."""
    t = img.copy()
    t.thumbnail((128, 128))
    a = np.asarray(t.convert("RGB")).astype(np.int32) // 8
    _, counts = np.unique((a[..., 0] << 10) | (a[..., 1] << 5) | a[..., 2], return_counts=True)
    return float(np.sort(counts)[::-1][:4].sum() / a[..., 0].size)


def list_files(src: dict, cache: Path) -> list[tuple[str, str]]:
    """(path, path inside its package) of the source's pictures, sorted."""
    first, groups = {}, {}
    for p in sorted({p for pattern in src["paths"] for p in glob.glob(str(cache / pattern), recursive=True)}):
        rel, name = os.path.relpath(p, cache).split(os.sep, 1)[1], os.path.basename(p)
        if (not os.path.isfile(p) or not IMG.match(name) or any(re.search(r, rel) for r in src["skip"])
                or (src["drop"] and src["drop"].match(name)) or (src["keep"] and not src["keep"].match(name))):
            continue
        if first.setdefault(hashlib.md5(Path(p).read_bytes()).hexdigest(), p) == p:  # each content once
            groups.setdefault(os.path.dirname(p) if src["per_dir"] else "", []).append((p, rel))
    out = []
    for files in groups.values():  # per_dir: a few frames spread over each folder of a video-like sequence
        n = min(src["per_dir"] or len(files), len(files))
        out += [files[i] for i in sorted(set(np.linspace(0, len(files) - 1, n).round().astype(int)))]
    return sorted(out)


def build_real(src: dict, cache: Path, rng: np.random.Generator) -> list[tuple]:
    rows = []
    for path, rel in list_files(src, cache):
        try:
            img = read_rgb(path, rng if src["sky"] else None)
            (w, h), side = img.size, min(img.size)
            if side < src["minside"]:
                continue
            photo = graphic_share(img) < 0.45
            cat = next((c for rx, c in src["cat"] if re.search(rx, rel, re.I)),
                       src["default"] if photo or src["default"] in ("textures", "abstract") else "abstract")
            items = [("whole", np.asarray(center_square_resize(img, 32)))]
            k = (0 if side < 96 else 1 if side < 192 else 3 if side < 384 else 6) if photo else int(side >= 128)
            for _ in range(k if src["crops"] else 0):  # random squares of 30-85% of the short side
                s = int(max(48, rng.uniform(0.3, 0.85) * side))
                x, y = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
                items.append(("crop", np.asarray(center_square_resize(img.crop((x, y, x + s, y + s)), 32))))
        except Exception:  # unreadable files (Pillow's tests hold many on purpose)
            continue
        rows += [(a, cat, src["name"], rel, kind) for kind, a in items]
    print(f"{src['split']:6s} {src['name']:22s} files {len({r[3] for r in rows}):5d} pictures {len(rows):6d}")
    return rows


def fractal(rng, size=96):
    """A random iterated-function-system fractal (as in PixMix / FractalDB), coloured."""
    n = int(rng.integers(2, 5))
    while not (abs(np.linalg.det(A := rng.uniform(-1, 1, (n, 2, 2)))) < 0.9).all():  # contractions only
        pass
    b, p = rng.uniform(-1, 1, (n, 2)), np.abs(np.linalg.det(A)) + 0.05
    pts = rng.uniform(-1, 1, (30000, 2))  # the chaos game, all points at once
    for _ in range(30):
        choice = rng.choice(n, len(pts), p=p / p.sum())
        pts = np.einsum("nij,nj->ni", A[choice], pts) + b[choice]
    lo, hi = np.percentile(pts, 1, axis=0), np.percentile(pts, 99, axis=0)
    ij = ((pts - lo) / np.maximum(hi - lo, 1e-6) * (size - 1)).round().astype(int)
    ok = (ij >= 0).all(1) & (ij < size).all(1)
    canvas = np.zeros((size, size, 3))
    np.add.at(canvas, (ij[ok, 1], ij[ok, 0]), rng.uniform(0, 1, (n, 3))[choice[ok]])
    canvas = np.log1p(canvas) / max(np.log1p(canvas).max(), 1e-6)
    bg = rng.uniform(0, 0.4, 3) if rng.random() < 0.5 else np.zeros(3)
    return (np.clip(canvas + bg * (canvas.sum(-1, keepdims=True) == 0), 0, 1) * 255).astype(np.uint8)


def noise(rng, size=64):
    k = rng.integers(3)
    if k == 0:
        return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    if k == 1:
        g = rng.normal(rng.uniform(60, 200), rng.uniform(10, 60), (size, size, 1 if rng.random() < 0.5 else 3))
        return np.clip(np.broadcast_to(g, (size, size, 3)), 0, 255).astype(np.uint8)
    out = np.zeros((size, size, 3))
    for octave in range(int(rng.integers(1, 5))):
        small = rng.uniform(0, 1, (2 ** (octave + 1),) * 2 + (3,)) * 0.5 ** octave
        out += np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)) / 255
    out = (out - out.min()) / max(out.max() - out.min(), 1e-6)
    if rng.random() < 0.5:
        out = out.mean(-1, keepdims=True) * rng.uniform(0.3, 1, 3) + rng.uniform(0, 0.3, 3)
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)


def gradient(rng, size=64):
    c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    k = rng.integers(5)
    if k == 0:
        ang = rng.uniform(0, 2 * np.pi)
        t = np.cos(ang) * xx + np.sin(ang) * yy
    elif k == 1:
        t = np.hypot(xx - rng.uniform(0, 1), yy - rng.uniform(0, 1))
    elif k == 2:  # stripes
        f, ang = rng.uniform(2, 12), rng.uniform(0, np.pi)
        t = (np.sin(2 * np.pi * f * (np.cos(ang) * xx + np.sin(ang) * yy)) > 0) * 1.0
    elif k == 3:  # checks
        f = int(rng.integers(2, 10))
        t = (np.floor(xx * f) + np.floor(yy * f)) % 2
    t = np.zeros_like(xx) + rng.uniform() if k == 4 else (t - t.min()) / max(t.max() - t.min(), 1e-6)
    return (c1 * (1 - t[..., None]) + c2 * t[..., None]).astype(np.uint8)


FONTS = sorted(glob.glob("/usr/share/fonts/truetype/**/*.ttf", recursive=True))
WORDS = ("the quick brown fox jumps over lazy dog hello world total price menu page chapter invoice error warning "
         "open close file edit view help 2024 12:45 OK cancel abc XYZ lorem ipsum dolor sit amet").split()


def drawing(rng, text: bool, size=96):
    bg = tuple(int(v) for v in rng.integers(0, 256, 3))
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 5 if text else 8))):
        if text:
            font = ImageFont.truetype(FONTS[rng.integers(len(FONTS))], int(rng.integers(10, 48))) if FONTS \
                else ImageFont.load_default()
            words = " ".join(rng.choice(WORDS, int(rng.integers(1, 4))))
            fg = tuple(int((v + 128 + rng.integers(-60, 60)) % 256) for v in bg)
            d.text((int(rng.integers(-10, size // 2)), int(rng.integers(-5, size - 10))), words, fill=fg, font=font)
            continue
        (x0, x1), (y0, y1) = sorted(rng.integers(-10, size + 10, 2)), sorted(rng.integers(-10, size + 10, 2))
        fill, shape = tuple(int(v) for v in rng.integers(0, 256, 3)), rng.integers(3)
        if shape == 2:
            d.polygon([(x0, y1 + 3), ((x0 + x1 + 3) / 2, y0), (x1 + 3, y1 + 3)], fill=fill)
        else:
            (d.ellipse if shape == 0 else d.rectangle)([x0, y0, x1 + 3, y1 + 3], fill=fill)
    return np.asarray(img)


def shuffled(x, rng, tile):
    """A CIFAR picture cut in tile x tile squares, shuffled and rotated: colours and texture kept, shape gone."""
    n = 32 // tile
    tiles = [np.rot90(x[i * tile:(i + 1) * tile, j * tile:(j + 1) * tile], int(rng.integers(4)))
             for i in range(n) for j in range(n)]
    order = rng.permutation(len(tiles))
    return np.concatenate([np.concatenate([tiles[order[i * n + j]] for j in range(n)], 1) for i in range(n)], 0)


def synthetic(rng, cifar_train: np.ndarray, textures: list) -> list[tuple]:
    """Fractals, noise, gradients, text, shapes, shuffled CIFAR pictures and PixMix-style mixes of them: 6,100."""
    makers = [("fractal", 1000, fractal), ("noise", 600, noise), ("gradient", 600, gradient),
              ("text", 500, lambda r: drawing(r, True)), ("shapes", 400, lambda r: drawing(r, False))]
    made = [(np.asarray(center_square_resize(Image.fromarray(make(rng)), 32)), kind) for kind, n, make in makers
            for _ in range(n)]
    fractals = [a for a, kind in made if kind == "fractal"]
    idx = rng.choice(len(cifar_train), 3000, replace=False)
    made += [(shuffled(cifar_train[j], rng, 4 + 4 * (i % 2)), "patch-shuffled-cifar") for i, j in enumerate(idx[:2000])]
    for j in idx[2000:]:
        pool = [fractals, textures][rng.integers(2)] if textures else fractals
        m = pool[rng.integers(len(pool))].astype(np.float32) / 255
        a, w = shuffled(cifar_train[j], rng, 8).astype(np.float32) / 255, rng.uniform(0.6, 0.85)
        out = (1 - w) * a + w * m if rng.random() < 0.5 else np.exp((1 - w) * np.log(a + 1e-3) + w * np.log(m + 1e-3))
        made.append(((np.clip(out, 0, 1) * 255).astype(np.uint8), "pixmix-cifar"))
    return [(a, "synthetic", f"synthetic-{kind}", "", "synthetic") for a, kind in made]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.outliers", description=__doc__.splitlines()[0])
    p.add_argument("--fetch", action="store_true", help="download and unpack the sources into --cache first")
    p.add_argument("--cache", type=Path, default=CACHE, help=f"the downloaded sources (default {CACHE})")
    p.add_argument("--out", type=Path, default=CACHE, help=f"where to write the sets (default {CACHE})")
    p.add_argument("--data", default="../shared/data/cifar10-jpeg.tar.gz", help="CIFAR-10 (for synthetic pictures)")
    args = p.parse_args(argv)
    if args.fetch:
        fetch(args.cache)
    sets = {"train": [], "dev": [], "report": []}
    for src in SOURCES:
        sets[src["split"]] += build_real(src, args.cache, np.random.default_rng([0, zlib.crc32(src["name"].encode())]))
    cifar = data.load(args.data)
    train_x = split_train_val(cifar.train_images, cifar.train_labels, 5000, 0)[0]  # the 45,000 training pictures
    textures = [a for a, cat, *_ in sets["train"] if cat == "textures"]
    sets["train"] += synthetic(np.random.default_rng([0, 7]), train_x, textures)
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for name, rows in sets.items():
        images, category, source, filename, kind = (np.array(v) for v in zip(*rows))
        np.savez_compressed(args.out / f"outliers_{name}.npz", images=images, category=category, source=source,
                            filename=filename, kind=kind)
        manifest[name] = {"pictures": len(images), "images_sha256": hashlib.sha256(images.tobytes()).hexdigest(),
                          "categories": {c: int((category == c).sum()) for c in dict.fromkeys(category)},
                          "sources": {s: int((source == s).sum()) for s in dict.fromkeys(source)},
                          "files": {s: len(set(filename[source == s]) - {""}) for s in dict.fromkeys(source)}}
        print(f"{name}: {len(images)} pictures, sha256 of the images {manifest[name]['images_sha256'][:16]}")
    (args.out / "outliers_manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
