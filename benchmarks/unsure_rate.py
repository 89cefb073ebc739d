"""How often the app's "unsure" notice fires: on CIFAR-10 test pictures, and on pictures that are
none of the ten classes.

    .venv/bin/python benchmarks/unsure_rate.py [--data PATH] [--model DIR_OR_REPO] [--per-kind 100]

The rule is app.py's own (:func:`app.is_unsure`: top flip-TTA probability < ``app.UNSURE_BELOW``)
with the classifier app.py loads; other thresholds are shown beside it to choose from.

--data: a ``.tar``/``.tar.gz`` of the ImageFolder tree (``test/<class>/*.jpg``; default: the
shared CIFAR-10 JPEG tarball when present) or a folder of ``<class>/*.jpg`` (e.g. the committed
500-image sample, tests/data/cifar10-test-sample).

The "none of the ten" pictures are synthetic, drawn here with numpy and PIL, no network: noise,
smooth noise, gradients, flat colours, stripes and checks, rendered text and abstract shapes. They
are easy cases: real photos of other things (people, food, rooms) look far more like CIFAR
pictures, and the rule will fire on fewer of them.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # app.py, when run as a script from benchmarks/
SHARED_TARBALL = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
SAMPLE = ROOT / "tests" / "data" / "cifar10-test-sample"
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)


def load_test_split(path: Path) -> tuple[list[bytes], list[str]]:
    """Encoded test pictures and their class names from a tarball or a ``<class>/`` folder."""
    pictures, names = [], []
    if path.is_file():
        with tarfile.open(path) as tar:
            for member in tar:
                parts = member.name.split("/")
                if member.isfile() and len(parts) >= 3 and parts[-3] == "test":
                    pictures.append(tar.extractfile(member).read())
                    names.append(parts[-2])
        return pictures, names
    folder = path / "test" if (path / "test").is_dir() else path
    for file in sorted(folder.glob("*/*")):
        if file.suffix.lower() in (".jpg", ".jpeg", ".png"):
            pictures.append(file.read_bytes())
            names.append(file.parent.name)
    return pictures, names


# --- synthetic pictures that are none of the ten classes ---------------------------------------


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _noise(rng, w, h):
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _smooth_noise(rng, w, h):
    small = rng.integers(0, 256, (int(rng.integers(2, 8)), int(rng.integers(2, 8)), 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)


def _gradient(rng, w, h):
    angle = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:h, 0:w]
    t = (x * np.cos(angle) + y * np.sin(angle)).astype(np.float32)
    t = ((t - t.min()) / max(float(t.max() - t.min()), 1.0))[..., None]
    a, b = np.array(_colour(rng)), np.array(_colour(rng))
    return Image.fromarray(((1 - t) * a + t * b).astype(np.uint8))


def _flat(rng, w, h):
    return Image.new("RGB", (w, h), _colour(rng))


def _stripes(rng, w, h):
    period = int(rng.integers(4, 40))
    y, x = np.mgrid[0:h, 0:w]
    mask = (x // period) % 2 if rng.random() < 0.5 else ((x // period) + (y // period)) % 2
    a, b = np.array(_colour(rng)), np.array(_colour(rng))
    return Image.fromarray(np.where(mask[..., None] == 1, a, b).astype(np.uint8))


_WORDS = ["hello", "invoice", "2024", "TOTAL", "lorem ipsum", "Error 404", "sale -50%", "menu", "x = y + 1"]


def _text(rng, w, h):
    img = Image.new("RGB", (w, h), _colour(rng))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=int(rng.integers(max(8, h // 8), max(9, h // 3))))
    for _ in range(int(rng.integers(1, 4))):
        xy = (int(rng.integers(0, w // 2)), int(rng.integers(0, max(1, h - h // 4))))
        draw.text(xy, str(rng.choice(_WORDS)), fill=_colour(rng), font=font)
    return img


def _shapes(rng, w, h):
    img = Image.new("RGB", (w, h), _colour(rng))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 8))):
        box = sorted(rng.integers(0, w, 2).tolist()), sorted(rng.integers(0, h, 2).tolist())
        xy = [box[0][0], box[1][0], box[0][1], box[1][1]]
        getattr(draw, str(rng.choice(["ellipse", "rectangle"])))(xy, fill=_colour(rng))
    return img


KINDS: dict[str, Callable[[np.random.Generator, int, int], Image.Image]] = {
    "uniform noise": _noise, "smooth noise": _smooth_noise, "gradient": _gradient, "flat colour": _flat,
    "stripes/checks": _stripes, "text": _text, "shapes": _shapes,
}


def synthetic(kind: str, n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` pictures of one kind at sizes from 32 to 320 px, as the app's 32x32 uint8 input."""
    import app

    rng = np.random.default_rng([seed, list(KINDS).index(kind)])
    out = []
    for _ in range(n):
        w, h = (int(v) for v in rng.integers(32, 321, 2))
        out.append(app.CLASSIFIER.to_uint8(KINDS[kind](rng, w, h)))
    return out


# --- measuring ---------------------------------------------------------------------------------


def top_probabilities(pixels: list[np.ndarray], batch: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """(top probability, top class index) of each 32x32 picture with the app's classifier."""
    import app

    probs = [app.CLASSIFIER.probabilities(torch.from_numpy(np.stack(pixels[i:i + batch])))
             for i in range(0, len(pixels), batch)]
    top, index = torch.cat(probs).max(dim=1)
    return top.numpy(), index.numpy()


def print_tables(test_top, test_right, ood: dict[str, np.ndarray], threshold: float) -> None:
    """Markdown tables: the app's rule on each set, then a sweep of thresholds."""
    n_ood = sum(len(v) for v in ood.values())
    print(f"\nThe app's rule: unsure when the top probability < {threshold} (flip TTA)\n")
    print("| pictures | n | notice fires |")
    print("| --- | --- | --- |")
    print(f"| CIFAR-10 test split | {len(test_top)} | {np.mean(test_top < threshold):.1%} |")
    for kind, top in ood.items():
        print(f"| none of the ten: {kind} (synthetic) | {len(top)} | {np.mean(top < threshold):.1%} |")
    all_ood = np.concatenate(list(ood.values()))
    print(f"| none of the ten: all synthetic kinds | {n_ood} | {np.mean(all_ood < threshold):.1%} |")
    print("\nOther thresholds (test accuracy split by whether the notice fires)\n")
    print("| threshold | fires on test | test acc. when sure | test acc. when unsure | fires on synthetic |")
    print("| --- | --- | --- | --- | --- |")
    for t in sorted(set(THRESHOLDS) | {threshold}):
        unsure = test_top < t
        sure_acc = f"{test_right[~unsure].mean():.1%}" if (~unsure).any() else "-"
        unsure_acc = f"{test_right[unsure].mean():.1%}" if unsure.any() else "-"
        mark = " (app)" if t == threshold else ""
        print(f"| {t}{mark} | {unsure.mean():.1%} | {sure_acc} | {unsure_acc} | {np.mean(all_ood < t):.1%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = SHARED_TARBALL if SHARED_TARBALL.is_file() else SAMPLE
    parser.add_argument("--data", type=Path, default=default, help=f"test pictures (default: {default})")
    parser.add_argument("--model", default=None, help="weights folder or Hub repo id (default: what app.py loads)")
    parser.add_argument("--per-kind", type=int, default=100, help="synthetic pictures per kind")
    args = parser.parse_args()
    if args.model:
        os.environ["MODEL_REPO"] = args.model  # read when app.py is imported, just below
    import app

    pictures, names = load_test_split(args.data)
    if not pictures:
        raise SystemExit(f"no test pictures found in {args.data}")
    test_top, index = top_probabilities([app.CLASSIFIER.to_uint8(p) for p in pictures])
    right = np.array([app.CLASSIFIER.classes[i] for i in index]) == np.array(names)
    ood = {kind: top_probabilities(synthetic(kind, args.per_kind))[0] for kind in KINDS}
    # The sweep below uses numpy; check once that it is the app's own rule at the app's threshold.
    probe = {c: (0.0 if i else app.UNSURE_BELOW) for i, c in enumerate(app.CLASSIFIER.classes)}
    assert not app.is_unsure(probe) and app.is_unsure({**probe, app.CLASSIFIER.classes[0]: app.UNSURE_BELOW - 1e-6})
    print(f"weights: {app.CLASSIFIER.info.label}; data: {args.data} ({len(pictures)} test pictures, "
          f"accuracy {right.mean():.1%}); synthetic: {args.per_kind} per kind, 32-320 px, seed 0")
    print_tables(test_top, right, ood, app.UNSURE_BELOW)


if __name__ == "__main__":
    main()
