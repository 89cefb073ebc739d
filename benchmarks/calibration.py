"""Calibration and the "unsure" rule, measured on the shipped weights in one run.

    python -m benchmarks.calibration [--model weights] [--data data/cifar10-jpeg.tar.gz]

1. Calibration. Everything is fitted on the folder's validation hold-out (rebuilt from its
   metrics.json config exactly as training split it), or read from its config.json when it already
   has a temperature; the test split is only scored. Accuracy, mean top probability, ECE (top label,
   15 equal-width bins), NLL, Brier and the share of test pictures above 90% are printed before and
   after, then the alternatives that were tried (vector scaling, a power on the logit gaps, histogram
   binning), the cross-validated choice of the top-label map's size, and a bootstrap of the
   validation set showing how much the test ECE moves with the 5,000 pictures it was fitted on.
2. The unsure rule. Candidate scores are compared by AUROC and by the false-positive rate at 95%
   true-positive rate, with CIFAR-10 test pictures as positives against pictures that show none of
   the ten classes: (a) real photos shipped with scikit-image, scikit-learn and matplotlib (each
   checked by eye; those showing a CIFAR-10 class are excluded and listed), several random square
   crops of each; (b) synthetic pictures (noise, gradients, stripes, text, shapes...). The best score
   gets its threshold from the validation pictures; the run reports how often it fires on each set
   and writes a risk-coverage curve (CSV and PNG) to benchmarks/results/.

Test-only dependencies: scikit-image, scikit-learn and matplotlib (for their sample photos).
Everything printed also goes to benchmarks/results/<date>-cpu-calibration.log.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from cifar_model import Classifier, to_uint8
from cifar_model import calibration as cal
from train import data as datasets
from train.calibrate import holdout, logits_of
from train.recipe import split_train_val

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
OVER = 0.9  # "very sure": share of pictures whose top probability is above this


# --- pictures that show none of the ten classes: real photos -----------------------------------
# (library, name, region to crop from (left, top, right, bottom) or None for the whole photo, what it shows)
PHOTOS: list[tuple[str, str, tuple[int, int, int, int] | None, str]] = [
    ("scikit-image", "astronaut", (0, 0, 330, 512), "a person in a spacesuit and a flag (left part only: the "
     "space-shuttle model on the right is left out)"),
    ("scikit-image", "camera", None, "a man with a camera on a tripod (grey)"),
    ("scikit-image", "coffee", None, "a cup of coffee on a saucer"),
    ("scikit-image", "coins", None, "old coins (grey)"),
    ("scikit-image", "moon", None, "the moon's surface (grey)"),
    ("scikit-image", "page", None, "a printed page (grey)"),
    ("scikit-image", "text", None, "handwritten text (grey)"),
    ("scikit-image", "clock", None, "a wall clock, motion-blurred (grey)"),
    ("scikit-image", "brick", None, "a brick wall (grey)"),
    ("scikit-image", "grass", None, "grass (grey)"),
    ("scikit-image", "gravel", None, "gravel (grey)"),
    ("scikit-image", "cell", None, "a cell under a microscope (grey)"),
    ("scikit-image", "hubble_deep_field", None, "galaxies (Hubble deep field)"),
    ("scikit-image", "immunohistochemistry", None, "stained tissue under a microscope"),
    ("scikit-image", "retina", None, "a retina (fundus photo)"),
    ("scikit-image", "microaneurysms", None, "retinal blood vessels (grey)"),
    ("scikit-image", "rocket", None, "a rocket on its launch pad at night"),
    ("scikit-image", "motorcycle", None, "a motorcycle in a workshop (near the 'automobile' class, but "
     "not one of the ten)"),
    ("scikit-learn", "china.jpg", (70, 0, 330, 427), "a Chinese pagoda and trees (the part without the "
     "lake and its boats)"),
    ("scikit-learn", "flower.jpg", None, "a dahlia"),
    ("matplotlib", "grace_hopper.jpg", None, "a portrait of Grace Hopper"),
]
FACES = 100  # scikit-image's lfw_subset: its first 100 pictures are 25x25 grey faces (whole, no crops)
EXCLUDED = [
    ("scikit-image", "chelsea (= cat)", "a cat: a CIFAR-10 class"),
    ("scikit-image", "horse", "a horse (silhouette): a CIFAR-10 class, and a drawing"),
    ("scikit-image", "astronaut, right part", "a space-shuttle model: close to 'airplane'"),
    ("scikit-learn", "china.jpg, lake", "boats on the lake: 'ship'"),
    ("scikit-image", "checkerboard, colorwheel, logo, binary_blobs, shepp_logan_phantom",
     "drawings, not photos (the synthetic set covers these)"),
    ("scikit-image", "lfw_subset pictures 100-199", "random patches from photos, content unchecked"),
    ("matplotlib", "Minduka_Present_Blue_Pack.png, logo2.png", "drawings, not photos"),
    ("scikit-image", "brain, eagle, lily, kidney, skin, ... ", "not shipped in the wheel (need a download)"),
]


def _rgb(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8) if a.max() <= 1 else a.astype(np.uint8)
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    return a[..., :3]


def load_photo(library: str, name: str) -> np.ndarray:
    """One sample photo as H x W x 3 uint8, offline (from the installed package)."""
    if library == "scikit-image":
        import skimage.data

        if name == "motorcycle":
            return _rgb(skimage.data.stereo_motorcycle()[0])
        return _rgb(getattr(skimage.data, name)())
    if library == "scikit-learn":
        from sklearn.datasets import load_sample_image

        return _rgb(load_sample_image(name))
    if library == "matplotlib":
        from matplotlib import cbook

        with cbook.get_sample_data(name) as f:
            return _rgb(np.asarray(Image.open(f).convert("RGB")))
    raise ValueError(library)


def crops(photo: np.ndarray, region: tuple[int, int, int, int] | None, n: int, seed: int) -> list[np.ndarray]:
    """The (region of the) photo whole, then ``n`` random square crops (side 40-100% of its shorter
    side), each as the 32x32 uint8 picture the app would classify."""
    img = Image.fromarray(photo)
    if region:
        img = img.crop(region)
    w, h = img.size
    rng = np.random.default_rng(seed)
    out = [to_uint8(img)]
    for _ in range(n):
        side = int(rng.uniform(0.4, 1.0) * min(w, h))
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        out.append(to_uint8(img.crop((x, y, x + side, y + side))))
    return out


def real_photos(n_crops: int) -> dict[str, np.ndarray]:
    """name -> N x 32 x 32 x 3 uint8 pictures, one entry per photo, plus the faces."""
    import skimage.data

    out = {}
    for i, (library, name, region, _) in enumerate(PHOTOS):
        out[f"{library}: {name}"] = np.stack(crops(load_photo(library, name), region, n_crops, seed=i))
    faces = skimage.data.lfw_subset()[:FACES]
    out["scikit-image: lfw_subset faces"] = np.stack([to_uint8(Image.fromarray(_rgb(f))) for f in faces])
    return out


# --- pictures that show none of the ten classes: synthetic -------------------------------------


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


def synthetic(kind: str, n: int, seed: int = 0) -> np.ndarray:
    """``n`` pictures of one kind drawn at sizes from 32 to 320 px, as the app's 32x32 uint8 input."""
    rng = np.random.default_rng([seed, list(KINDS).index(kind)])
    out = []
    for _ in range(n):
        w, h = (int(v) for v in rng.integers(32, 321, 2))
        out.append(to_uint8(KINDS[kind](rng, w, h)))
    return np.stack(out)


# --- ranking measures ---------------------------------------------------------------------------


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counted half (Mann-Whitney U / n1 n2)."""
    scores = np.concatenate([pos, neg]).astype(np.float64)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)
    ranks = (upper - (counts - 1) / 2)[inverse]  # average 1-based rank of each tie group
    n1, n2 = len(pos), len(neg)
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n2))


def fpr_at_tpr(pos: np.ndarray, neg: np.ndarray, tpr: float = 0.95) -> float:
    """Share of negatives still passed when the threshold keeps ``tpr`` of the positives."""
    threshold = np.quantile(pos, 1 - tpr, method="lower")
    return float(np.mean(neg >= threshold))


def risk_coverage(score: np.ndarray, right: np.ndarray, points: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Error rate among the ``coverage`` share of pictures with the highest scores, at ``points``
    coverages from 1/points to 1."""
    order = np.argsort(-score, kind="stable")
    errors = np.cumsum(~right[order])
    coverage = np.arange(1, points + 1) / points
    k = np.maximum(1, np.round(coverage * len(score)).astype(int))
    return coverage, errors[k - 1] / k


def aurc(score: np.ndarray, right: np.ndarray) -> float:
    """Area under the risk-coverage curve (every coverage k/N): lower ranks mistakes better."""
    order = np.argsort(-score, kind="stable")
    errors = np.cumsum(~right[order])
    return float(np.mean(errors / np.arange(1, len(score) + 1)))


# --- calibration alternatives (measured here, not kept in the library) ---------------------------


def _lbfgs(params: list[torch.Tensor], loss: Callable[[], torch.Tensor]) -> None:
    opt = torch.optim.LBFGS(params, lr=1, max_iter=500, tolerance_grad=1e-10, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        value = loss()
        value.backward()
        return value

    opt.step(closure)


def fit_vector_scaling(logits: torch.Tensor, labels: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Per-class scale and bias on the logits (Guo et al. 2017), NLL on validation."""
    z = logits.double()
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    _lbfgs([w, b], lambda: F.cross_entropy(z * torch.exp(w) + b, labels))
    w, b = w.detach(), b.detach()
    return lambda x: torch.softmax(x.double() * torch.exp(w) + b, dim=1).float()


def fit_power_gaps(logits: torch.Tensor, labels: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """softmax(-((max logit - logit) / s) ** a): temperature s plus a power a on the gaps to the top
    logit (a = 1 is temperature scaling); keeps every class's rank. NLL on validation."""
    z = logits.double()
    ls = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    la = torch.zeros(1, dtype=torch.float64, requires_grad=True)

    def transformed(x, s, a):
        gaps = (x.max(dim=1, keepdim=True).values - x).clamp_min(0)
        return -((gaps / s) ** a)

    _lbfgs([ls, la], lambda: F.cross_entropy(transformed(z, torch.exp(ls), torch.exp(la)), labels))
    s, a = float(torch.exp(ls.detach())), float(torch.exp(la.detach()))
    return lambda x: torch.softmax(transformed(x.double(), s, a), dim=1).float()


def fit_histogram_binning(logits: torch.Tensor, labels: torch.Tensor, temperature: float, bins: int = 15
                          ) -> Callable[[torch.Tensor], torch.Tensor]:
    """Top-label histogram binning after temperature scaling: 15 equal-mass bins of the top
    probability, each mapped to its (Laplace-smoothed, monotone) validation accuracy, as knots of a
    step function; the rest as in the kept map."""
    p = cal.to_probabilities(logits, temperature).double()
    top, pred = p.max(dim=1)
    right = (pred == labels).double()
    groups = torch.tensor_split(torch.argsort(top), bins)
    acc = torch.stack([(right[g].sum() + 1) / (len(g) + 2) for g in groups])
    acc = torch.cummax(acc, dim=0).values  # monotone (a simple stand-in for pool-adjacent-violators)
    upper = torch.stack([top[g].max() for g in groups])[:-1]
    knots: list[list[float]] = []
    lows = [0.1] + [float(u) for u in upper]
    highs = [float(u) for u in upper] + [0.99999]
    for lo, hi, a in zip(lows, highs, acc.tolist()):  # a step: two knots at each bin's ends
        if hi <= lo:
            continue
        x0 = max(lo + 1e-7, knots[-1][0] + 1e-9) if knots else lo
        knots += [[x0, a], [hi, a]]
    return lambda x: cal.to_probabilities(x, temperature, top_label_map=knots)


# --- output -------------------------------------------------------------------------------------


class Tee:
    """print() to the terminal and to a log file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "w")
        self.stdout = sys.stdout

    def write(self, text: str) -> int:
        self.stdout.write(text)
        return self.file.write(text)

    def flush(self) -> None:
        self.stdout.flush()
        self.file.flush()


def row(*cells) -> None:
    print("| " + " | ".join(str(c) for c in cells) + " |")


def figures(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    top = probs.max(dim=1).values
    return {"accuracy": float((probs.argmax(dim=1) == labels).double().mean()),
            "confidence": float(top.double().mean()), "over": float((top > OVER).double().mean()),
            **cal.quality(probs, labels)}


def print_figures(name: str, f: dict[str, float], reference: float | None = None) -> None:
    delta = "" if reference is None else f" ({(f['accuracy'] - reference) * 100:+.2f})"
    row(name, f"{f['accuracy']:.2%}{delta}", f"{f['confidence']:.2%}", f"{f['ece']:.2%}", f"{f['nll']:.4f}",
        f"{f['brier']:.4f}", f"{f['over']:.1%}")


def draw_risk_coverage(curves: dict[str, tuple[np.ndarray, np.ndarray]], chosen: str,
                       point: tuple[float, float], path: Path, size: tuple[int, int] = (640, 480)) -> None:
    """Selective risk against coverage, one line per score; the chosen one thick, its operating point marked."""
    w, h = size
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    font, small = ImageFont.load_default(size=15), ImageFont.load_default(size=12)
    left, top, right, bottom = 64, 40, w - 20, h - 56
    ymax = max(0.1, math.ceil(max(float(r.max()) for _, r in curves.values()) * 20) / 20)

    def px(c: float, r: float) -> tuple[float, float]:
        return left + c * (right - left), bottom - r / ymax * (bottom - top)

    d.text((w / 2, 10), "Risk-coverage on the CIFAR-10 test split", fill="black", font=font, anchor="mt")
    for i in range(11):
        x, _ = px(i / 10, 0)
        d.line([(x, top), (x, bottom)], fill=(232, 232, 232))
        d.text((x, bottom + 4), f"{i / 10:.1f}", fill="black", font=small, anchor="mt")
    steps = int(round(ymax / 0.01))
    for i in range(0, steps + 1, max(1, steps // 10)):
        _, y = px(0, i * 0.01)
        d.line([(left, y), (right, y)], fill=(232, 232, 232))
        d.text((left - 5, y), f"{i}%", fill="black", font=small, anchor="rm")
    colours = [(66, 110, 196), (220, 60, 40), (40, 160, 80), (150, 80, 190), (230, 150, 20), (90, 90, 90),
               (20, 170, 190)]
    for i, (name, (cov, risk)) in enumerate(curves.items()):
        colour = colours[i % len(colours)]
        d.line([px(c, r) for c, r in zip(cov, risk)], fill=colour, width=4 if name == chosen else 2)
        ly = top + 8 + 18 * i
        d.line([(left + 12, ly + 7), (left + 36, ly + 7)], fill=colour, width=4 if name == chosen else 2)
        d.text((left + 42, ly), name + ("  (chosen)" if name == chosen else ""), fill="black", font=small)
    x, y = px(*point)
    d.ellipse([x - 6, y - 6, x + 6, y + 6], outline="black", width=2)
    d.text((x - 8, y - 10), f"unsure rule: {point[0]:.1%} covered, {point[1]:.2%} errors", fill="black",
           font=small, anchor="rb")
    d.rectangle([left, top, right, bottom], outline="black")
    d.text(((left + right) / 2, h - 8), "coverage (share of pictures answered, surest first)", fill="black",
           font=font, anchor="mb")
    label = Image.new("RGBA", (bottom - top, 20), (0, 0, 0, 0))
    ImageDraw.Draw(label).text(((bottom - top) / 2, 10), "error rate among answered", fill="black", font=font,
                               anchor="mm")
    label = label.rotate(90, expand=True)
    img.paste(label, (6, top), label)
    img.save(path)


# --- the run ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--model", type=Path, default=ROOT / "weights", help="weights folder (default: weights/)")
    p.add_argument("--data", default=str(ROOT / "data" / "cifar10-jpeg.tar.gz"),
                   help="the dataset the folder was trained on (default: data/cifar10-jpeg.tar.gz)")
    p.add_argument("--crops", type=int, default=24, help="random crops per sample photo (besides the whole photo)")
    p.add_argument("--per-kind", type=int, default=100, help="synthetic pictures per kind")
    p.add_argument("--bootstrap", type=int, default=20, help="validation resamples for the ECE spread (0: skip)")
    p.add_argument("--fire-on", type=float, default=0.10,
                   help="the unsure rule's threshold makes it fire on this share of the validation pictures")
    p.add_argument("--out", type=Path, default=RESULTS / f"{time.strftime('%Y-%m-%d')}-cpu-",
                   help="prefix of the log, CSV and PNG written (default: benchmarks/results/<date>-cpu-)")
    args = p.parse_args(argv)
    sys.stdout = Tee(Path(f"{args.out}calibration.log"))
    t_start = time.perf_counter()
    torch.manual_seed(0)

    # --- data and logits
    val_size, seed = holdout(args.model)
    cifar = datasets.load(args.data)
    _, _, val_x, val_y_np = split_train_val(cifar.train_images, cifar.train_labels, val_size, seed)
    clf = Classifier.from_pretrained(args.model, precision="fp32")
    print(f"weights: {args.model} ({clf.backend}, flip TTA); data: {cifar.source}")
    print(f"validation: {len(val_x):,} training pictures held out by split_train_val(val_size={val_size}, "
          f"seed={seed}) (the pictures the weights never trained on); test: {len(cifar.test_labels):,} pictures "
          f"({cifar.test_name}); torch {torch.__version__}, {torch.get_num_threads()} threads")
    val_logits, val_y = logits_of(clf, val_x), torch.from_numpy(val_y_np)
    test_logits, test_y = logits_of(clf, cifar.test_images), torch.from_numpy(cifar.test_labels)
    torch.set_num_threads(1)  # the fits below are small; one thread is faster than two that contend

    config = json.loads((args.model / "config.json").read_text())
    if "temperature" in config:
        temperature, knots = float(config["temperature"]), config.get("top_label_map")
        source = "read from config.json" + ("" if knots else " (no top_label_map there: temperature only)")
    else:
        temperature = cal.fit_temperature(val_logits, val_y)
        knots = cal.fit_top_label_map(val_logits, val_y, temperature)
        source = "fitted here on the validation pictures (config.json has none)"
    print(f"calibration {source}: temperature T = {temperature:.4f}"
          + (f", top-label map with {len(knots)} knots ({cal.MAP_STEPS} logistic steps)" if knots else ""))

    def calibrated(logits: torch.Tensor) -> torch.Tensor:
        return cal.to_probabilities(logits, temperature, top_label_map=knots)

    print("\n## Calibration (top label; ECE with 15 equal-width bins)\n")
    row("split, probabilities", "accuracy", "mean top prob", "ECE", "NLL", "Brier", f"top prob > {OVER:.0%}")
    row(*["---"] * 7)
    for split, logits, labels in (("validation", val_logits, val_y), ("test", test_logits, test_y)):
        print_figures(f"{split}, before (softmax)", figures(cal.to_probabilities(logits), labels))
        print_figures(f"{split}, temperature only", figures(cal.to_probabilities(logits, temperature), labels))
        if knots:
            print_figures(f"{split}, after (temperature + top-label map)", figures(calibrated(logits), labels))
    test_probs = calibrated(test_logits)
    same = bool(torch.equal(test_probs.argmax(dim=1), test_logits.argmax(dim=1)))
    print(f"\nargmax unchanged on every test picture: {same}")
    table = cal.reliability_bins(test_probs, test_y)
    print("\nReliability on the test split after calibration (bins with pictures):\n")
    row("confidence bin", "pictures", "mean confidence", "accuracy", "gap")
    row(*["---"] * 5)
    for lo, hi, n, conf, acc in table:
        if n:
            row(f"({lo:.3f}, {hi:.3f}]", n, f"{conf:.3f}", f"{acc:.3f}", f"{conf - acc:+.3f}")

    # --- the alternatives, each fitted on validation and scored on test
    print("\n## Alternatives tried (each fitted on the validation pictures, scored on the test split)\n")
    row("method", "parameters", "test accuracy (change, points)", "mean top prob", "ECE", "NLL", "Brier",
        f"top prob > {OVER:.0%}")
    row(*["---"] * 8)
    t_fit = cal.fit_temperature(val_logits, val_y)
    reference = figures(cal.to_probabilities(test_logits), test_y)["accuracy"]
    alternatives = {
        ("none (softmax)", "0"): lambda x: cal.to_probabilities(x),
        ("temperature scaling", "1"): lambda x: cal.to_probabilities(x, t_fit),
        ("vector scaling (logits x w + b)", "20"): fit_vector_scaling(val_logits, val_y),
        ("power on the logit gaps", "2"): fit_power_gaps(val_logits, val_y),
        ("temperature + histogram binning (15 equal-mass bins)", "16"):
            fit_histogram_binning(val_logits, val_y, t_fit),
        ("temperature + top-label map (kept)", f"{1 + cal.MAP_STEPS + 2}"):
            (lambda k: (lambda x: cal.to_probabilities(x, t_fit, top_label_map=k)))(
                cal.fit_top_label_map(val_logits, val_y, t_fit)),
    }
    for (name, n_params), f in alternatives.items():
        g = figures(f(test_logits), test_y)
        row(name, n_params, f"{g['accuracy']:.2%} ({(g['accuracy'] - reference) * 100:+.2f})",
            f"{g['confidence']:.2%}", f"{g['ece']:.2%}", f"{g['nll']:.4f}", f"{g['brier']:.4f}", f"{g['over']:.1%}")

    # --- the map's size, by cross-validation on validation only
    print("\n## The top-label map's size, by 5-fold cross-validation on the validation pictures only\n")
    row("after the temperature", "val CV ECE", "val CV NLL", "val CV Brier")
    row(*["---"] * 4)
    folds = np.array_split(np.random.default_rng(1).permutation(len(val_y)), 5)
    cv = {}
    for steps in (None, 0, 4, 6, 8, 12, 16):  # None: temperature only; 0: histogram binning
        pooled = torch.zeros(len(val_y), val_logits.shape[1])
        for k in range(5):
            held = torch.from_numpy(folds[k])
            fit_on = torch.from_numpy(np.concatenate([folds[j] for j in range(5) if j != k]))
            t_k = cal.fit_temperature(val_logits[fit_on], val_y[fit_on])
            if steps is None:
                pooled[held] = cal.to_probabilities(val_logits[held], t_k)
            elif steps == 0:
                pooled[held] = fit_histogram_binning(val_logits[fit_on], val_y[fit_on], t_k)(val_logits[held])
            else:
                m_k = cal.fit_top_label_map(val_logits[fit_on], val_y[fit_on], t_k, steps=steps)
                pooled[held] = cal.to_probabilities(val_logits[held], t_k, top_label_map=m_k)
        f = cal.quality(pooled, val_y)
        name = {None: "nothing more", 0: "histogram binning, 15 bins"}.get(steps, f"top-label map, {steps} steps")
        if steps:
            cv[steps] = f
        row(name, f"{f['ece']:.2%}", f"{f['nll']:.4f}", f"{f['brier']:.4f}")
    print(f"\nlowest CV ECE of the map: {min(cv, key=lambda s: cv[s]['ece'])} steps (the library's MAP_STEPS: "
          f"{cal.MAP_STEPS})")

    if args.bootstrap:
        print(f"\n## How much the test ECE depends on the validation sample ({args.bootstrap} resamples of the "
              "5,000 validation pictures, refitted each time, scored on the whole test split)\n")
        rng = np.random.default_rng(2)
        ece_t, ece_m = [], []
        for _ in range(args.bootstrap):
            idx = torch.from_numpy(rng.integers(0, len(val_y), len(val_y)))
            t_b = cal.fit_temperature(val_logits[idx], val_y[idx])
            m_b = cal.fit_top_label_map(val_logits[idx], val_y[idx], t_b)
            ece_t.append(cal.expected_calibration_error(cal.to_probabilities(test_logits, t_b), test_y))
            ece_m.append(cal.expected_calibration_error(
                cal.to_probabilities(test_logits, t_b, top_label_map=m_b), test_y))
        row("calibration", "median test ECE", "10th-90th percentile", "share <= 1.0%")
        row(*["---"] * 4)
        for name, e in (("temperature only", ece_t), ("temperature + top-label map", ece_m)):
            e = np.array(e)
            row(name, f"{np.median(e):.2%}", f"{np.percentile(e, 10):.2%} - {np.percentile(e, 90):.2%}",
                f"{np.mean(e <= 0.01):.0%}")
        noise = []
        top = test_probs.max(dim=1).values.double()
        gen = torch.Generator().manual_seed(3)
        for _ in range(50):  # ECE of labels drawn from the probabilities themselves: the estimator's floor
            fake_right = torch.rand(len(top), generator=gen, dtype=torch.float64) < top
            fake_labels = torch.where(fake_right, test_probs.argmax(dim=1), (test_probs.argmax(dim=1) + 1) % 10)
            noise.append(cal.expected_calibration_error(test_probs, fake_labels))
        print(f"\nFor scale: a perfectly calibrated model with these confidences would still show a test ECE of "
              f"{np.mean(noise):.2%} +- {np.std(noise):.2%} on 10,000 pictures (sampling noise of the estimator).")

    # --- the unsure rule
    print("\n## The unsure rule: which score separates CIFAR-10 pictures from pictures of none of the ten\n")
    photos = real_photos(args.crops)
    synth = {kind: synthetic(kind, args.per_kind) for kind in KINDS}
    print(f"(a) real photos: {len(PHOTOS)} sample photos from scikit-image, scikit-learn and matplotlib, each whole "
          f"and as {args.crops} random square crops (side 40-100% of the shorter side), plus the {FACES} 25x25 "
          f"faces of scikit-image's lfw_subset: {sum(len(v) for v in photos.values())} pictures")
    print(f"(b) synthetic: {len(KINDS)} kinds x {args.per_kind} pictures drawn at 32-320 px, seed 0: "
          f"{sum(len(v) for v in synth.values())} pictures")
    print("\nExcluded sample pictures (looked at one by one):\n")
    row("library", "picture", "why")
    row(*["---"] * 3)
    for lib, name, why in EXCLUDED:
        row(lib, name, why)
    ood_logits = {name: logits_of(clf, x) for name, x in {**photos, **synth}.items()}
    real = torch.cat([ood_logits[n] for n in photos if "lfw" not in n])
    faces = ood_logits["scikit-image: lfw_subset faces"]
    fake = torch.cat([ood_logits[n] for n in synth])

    def scores(z: torch.Tensor) -> dict[str, np.ndarray]:
        probs = calibrated(z)
        top2 = z.topk(2, dim=1).values
        return {
            "calibrated top probability": probs.max(dim=1).values.numpy(),
            "uncalibrated top probability": torch.softmax(z, dim=1).max(dim=1).values.numpy(),
            "max logit": z.max(dim=1).values.numpy(),
            "energy, T=1 (logsumexp)": torch.logsumexp(z, dim=1).numpy(),
            f"energy, T={temperature:.2f}": (temperature * torch.logsumexp(z / temperature, dim=1)).numpy(),
            "margin of the top two logits": (top2[:, 0] - top2[:, 1]).numpy(),
            "negative entropy (calibrated)": (probs.double() * probs.double().clamp_min(1e-30).log()).sum(1).numpy(),
        }

    s_test, s_val = scores(test_logits), scores(val_logits)
    s_real, s_faces, s_fake = scores(real), scores(faces), scores(fake)
    right = (test_logits.argmax(dim=1) == test_y).numpy()
    q = args.fire_on
    print(f"\nHigher score = more CIFAR-like. AUROC: CIFAR-10 test pictures (positives) against each set; FPR95: "
          f"share of the set passed when 95% of the test pictures are; AURC: area under the test split's "
          f"risk-coverage curve (how well the score ranks mistakes; lower is better). Operating point: the "
          f"threshold at which the rule fires on {q:.0%} of the validation pictures (chosen there, then applied "
          f"to every set).\n")
    row("score", "AUROC real photos", "FPR95 real photos", "AUROC faces", "FPR95 faces", "AUROC synthetic",
        "FPR95 synthetic", "AURC (test)", "fires on test", "test accuracy where not firing", "fires on real photos",
        "fires on faces", "fires on synthetic")
    row(*["---"] * 13)
    at_point = {}
    for name in s_test:
        pos = s_test[name]
        cells = []
        for neg in (s_real[name], s_faces[name], s_fake[name]):
            cells += [f"{auroc(pos, neg):.3f}", f"{fpr_at_tpr(pos, neg):.1%}"]
        t = float(np.quantile(s_val[name], q, method="lower"))
        f_t = pos < t
        at_point[name] = (np.mean(s_real[name] < t), np.mean(s_fake[name] < t))
        row(name, *cells, f"{aurc(pos, right) * 100:.2f}%", f"{f_t.mean():.1%}", f"{right[~f_t].mean():.2%}",
            f"{np.mean(s_real[name] < t):.1%}", f"{np.mean(s_faces[name] < t):.1%}", f"{np.mean(s_fake[name] < t):.1%}")
    best = max(at_point, key=at_point.get)
    print(f"\nBest at the operating point (fires most on the real photos, then on the synthetic ones): {best}")
    print("(AUROC and FPR95 rank the scores differently: they average over, or sit at, other thresholds.)")

    # The library's rule, with the threshold config.json holds (or fitted here on validation)
    energy_below = config.get("unfamiliar_below")
    if energy_below is None:
        energy_below = cal.fit_unfamiliar_threshold(val_logits)
    rules = {"energy, T=1 (logsumexp)": ("is_unfamiliar", "unfamiliar_below", round(float(energy_below), 4))}
    print("\nThe library's rule (cifar_model.calibration.is_unfamiliar), firing below config.json's "
          "unfamiliar_below:\n")
    row("rule", "score", "constant", f"the {q:.0%} validation quantile now", "fires on validation")
    row(*["---"] * 5)
    for name, (fn, const, value) in rules.items():
        row(f"{fn}()", name, f"{const} = {value}", f"{np.quantile(s_val[name], q, method='lower'):.4f}",
            f"{np.mean(s_val[name] < value):.1%}")
    print()
    row("pictures", "n", *[f"{fn}() fires" for fn, _, _ in rules.values()])
    row(*["---"] * (2 + len(rules)))

    def rates(values: dict[str, np.ndarray]) -> list[str]:
        return [f"{np.mean(values[name] < value):.1%}" for name, (_, _, value) in rules.items()]

    row("validation", len(val_y), *rates(s_val))
    row("CIFAR-10 test split", len(test_y), *rates(s_test))
    acc_kept = [f"{right[s_test[n] >= v].mean():.2%}" for n, (_, _, v) in rules.items()]
    acc_fired = [f"{right[s_test[n] < v].mean():.2%}" for n, (_, _, v) in rules.items()]
    row("  test accuracy where it does not fire", "", *acc_kept)
    row("  test accuracy where it fires", "", *acc_fired)
    row("real photos, all (faces apart)", len(s_real[best]), *rates(s_real))
    for name in photos:
        if "lfw" not in name:
            row(f"  {name}", len(photos[name]), *rates(scores(ood_logits[name])))
    row("faces (lfw_subset)", len(s_faces[best]), *rates(s_faces))
    row("synthetic, all", len(s_fake[best]), *rates(s_fake))
    for kind in synth:
        row(f"  {kind}", len(synth[kind]), *rates(scores(ood_logits[kind])))
    for name in dict.fromkeys([best, "calibrated top probability"]):
        print(f"\nOther thresholds for {name} (validation quantile -> rates):\n")
        row("fires on validation", "threshold", "fires on test", "test acc. when not firing", "real photos",
            "faces", "synthetic")
        row(*["---"] * 7)
        for qq in (0.02, 0.05, 0.10, 0.15, 0.20):
            t = float(np.quantile(s_val[name], qq, method="lower"))
            f_t = s_test[name] < t
            row(f"{qq:.0%}", f"{t:.4f}", f"{f_t.mean():.1%}", f"{right[~f_t].mean():.2%}",
                f"{np.mean(s_real[name] < t):.1%}", f"{np.mean(s_faces[name] < t):.1%}",
                f"{np.mean(s_fake[name] < t):.1%}")
    fires = s_test[best] < rules[best][2] if best in rules else s_test[best] < np.quantile(s_val[best], q)

    # risk-coverage: CSV and PNG
    curves = {name: risk_coverage(s, right) for name, s in s_test.items()}
    csv_path, png_path = Path(f"{args.out}risk-coverage.csv"), Path(f"{args.out}risk-coverage.png")
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["coverage", *[f"error rate: {n}" for n in curves]])
        cov = next(iter(curves.values()))[0]
        for i, c in enumerate(cov):
            w.writerow([f"{c:.2f}", *[f"{curves[n][1][i]:.5f}" for n in curves]])
    draw_risk_coverage({n: curves[n] for n in curves}, best, (1 - fires.mean(), 1 - right[~fires].mean()),
                       png_path)
    print(f"\nwrote {csv_path.relative_to(ROOT) if csv_path.is_relative_to(ROOT) else csv_path} and "
          f"{png_path.relative_to(ROOT) if png_path.is_relative_to(ROOT) else png_path}")
    print(f"total {time.perf_counter() - t_start:.0f}s")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
