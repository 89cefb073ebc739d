"""``python -m benchmarks.unsure [--weights FOLDER] [--sets DIR] [--report]``: how well unsure scores tell CIFAR-10
test pictures from pictures of none of the ten classes (benchmarks/outliers.py's dev set; with --report also the
report set: score that once, at the end), and what the weights' own unsure rule does.

Every score is "higher = more unsure". Its threshold here flags 10% of the CIFAR-10 test split (to compare scores;
the app's threshold is fitted on validation). AUROC, FPR95 (outliers let through at the threshold that keeps 95%
of the test split) and the share of outliers flagged, in all and per category, with 95% bootstrap intervals (1,000
draws; the test split resampled by picture, the outliers by file within each category, so crops move together).
Logits and penultimate features are the mean over the picture and its mirror image, in fp32 (tta_logits' rule).
Scores: energy (the app's), max softmax (raw, and calibrated as the app shows it), max logit, KNN (normalised
features; k=50 on the 45,000 training pictures, k=1 on 1,000 of them), Mahalanobis (class means, shared
covariance), relative Mahalanobis, ViM (principal subspace of 64 dimensions).
Then the rule as the app applies it (Classifier: its precision, config.json's threshold) on the test split, the
sets and scikit-image's public pictures (from scikit-image if installed, else from the wheel --fetch unpacked).
"""

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from cifar_model import Classifier, Rule, load, normalize
from cifar_model.classifier import unsure_score
from train import data
from train.recipe import split_train_val

from .outliers import CACHE

CATEGORIES = ["scenery", "buildings", "plants", "objects", "textures", "abstract"]
CHECKS = {"coffee.png": "unsure", "rocket.jpg": "unsure", "motorcycle_left.png": "unsure", "chelsea.png": "cat, sure"}


@torch.inference_mode()
def outputs(net, pixels: np.ndarray, mean, std, batch: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """uint8 N x 32 x 32 x 3 -> (N x 10 logits, N x 256 penultimate features), each averaged with the mirror image."""
    logits, feats = [], []
    for i in range(0, len(pixels), batch):
        x = normalize(torch.from_numpy(pixels[i:i + batch]), mean, std).contiguous(memory_format=torch.channels_last)
        f = net.classifier[:4](net.features(torch.cat([x, x.flip(-1)])))
        z, n = net.classifier[4](f), len(x)
        logits.append((z[:n] + z[n:]) / 2)
        feats.append((f[:n] + f[n:]) / 2)
    return torch.cat(logits).double().numpy(), torch.cat(feats).double().numpy()


def fit(net, feats: np.ndarray, labels: np.ndarray) -> dict:
    """What the feature-based scores need, from the training pictures' features."""
    W, b = (p.detach().double().numpy() for p in (net.classifier[4].weight, net.classifier[4].bias))
    unit = torch.from_numpy(feats / np.linalg.norm(feats, axis=1, keepdims=True)).float()
    mu = np.stack([feats[labels == c].mean(0) for c in range(len(W))])
    r, r0 = feats - mu[labels], feats - feats.mean(0)
    u = -np.linalg.pinv(W) @ b  # ViM's origin: where the logits are 0
    vals, vecs = np.linalg.eigh((feats - u).T @ (feats - u) / len(feats))
    null = vecs[:, np.argsort(-vals)[64:]]  # the complement of the 64 principal directions
    alpha = (feats @ W.T + b).max(1).mean() / np.linalg.norm((feats - u) @ null, axis=1).mean()
    return dict(bank=unit, bank1000=unit[np.random.default_rng(0).choice(len(unit), 1000, replace=False)], mu=mu,
                prec=np.linalg.pinv(r.T @ r / len(r)), mu0=feats.mean(0), prec0=np.linalg.pinv(r0.T @ r0 / len(r0)),
                u=u, null=null, alpha=alpha)


def knn(feats: np.ndarray, bank: torch.Tensor, k: int) -> np.ndarray:
    """Distance to the k-th nearest picture of the bank, on the unit sphere."""
    q = torch.from_numpy(feats / np.linalg.norm(feats, axis=1, keepdims=True)).float()
    cos = torch.cat([(chunk @ bank.T).topk(k, dim=1).values[:, -1] for chunk in q.split(1000)])
    return torch.sqrt(torch.clamp(2 - 2 * cos, min=0)).double().numpy()


def scores(z: np.ndarray, f: np.ndarray, fitted: dict, rule: Rule) -> dict[str, np.ndarray]:
    lse = -unsure_score(torch.from_numpy(z)).numpy()  # the app's score is -lse
    softmax = np.exp(z - lse[:, None])
    scaled = torch.softmax(torch.from_numpy(z) / rule.temperature, 1).max(1).values.numpy()
    calibrated = rule.calibrate(torch.from_numpy(z).float()).max(1).values.double().numpy()

    def maha(m, prec):
        return (((f - m) @ prec) * (f - m)).sum(1)

    d = np.stack([maha(m, fitted["prec"]) for m in fitted["mu"]], 1)
    return {"energy": -lse, "max softmax": -softmax.max(1),
            "max softmax, calibrated": -(calibrated + 1e-9 * scaled),  # ties (flat ends of the map) broken
            "max logit": -z.max(1), "KNN k=50": knn(f, fitted["bank"], 50), "KNN k=1, 1,000 pictures":
            knn(f, fitted["bank1000"], 1), "Mahalanobis": d.min(1),
            "relative Mahalanobis": (d - maha(fitted["mu0"], fitted["prec0"])[:, None]).min(1),
            "ViM": fitted["alpha"] * np.linalg.norm((f - fitted["u"]) @ fitted["null"], axis=1) - lse}


def summary(test: np.ndarray, out: np.ndarray, cats: np.ndarray, files: np.ndarray, draws: int = 1000) -> np.ndarray:
    """Rows: value, low, high; columns: AUROC, FPR95, flagged at 10% of test (all, then per category)."""
    present = [c for c in CATEGORIES if (cats == c).any()]
    _, group = np.unique(files, return_inverse=True)
    strata = [np.unique(group[cats == c]) for c in present]

    def stats(t, w):
        t = np.sort(t)
        auroc = (np.searchsorted(t, out, "left") + np.searchsorted(t, out, "right")) / (2 * len(t))
        flagged = out > np.quantile(t, 0.9)
        return [np.average(auroc, weights=w), np.average(out <= np.quantile(t, 0.95), weights=w),
                np.average(flagged, weights=w)] + [np.average(flagged[cats == c], weights=w[cats == c])
                                                   for c in present]

    rng = np.random.default_rng(0)
    boot = []
    for _ in range(draws):
        picks = np.zeros(group.max() + 1)
        for s in strata:
            np.add.at(picks, s[rng.integers(0, len(s), len(s))], 1)
        boot.append(stats(test[rng.integers(0, len(test), len(test))], picks[group]))
    return np.vstack([stats(test, np.ones(len(out))), np.percentile(boot, [2.5, 97.5], axis=0)])


def table(name: str, s_test: dict, s_out: dict, sets: dict) -> str:
    cats, files = sets["category"], np.char.add(np.char.add(sets["source"], "/"), sets["filename"])
    files = np.where(sets["filename"] == "", np.arange(len(files)).astype(str), files)
    present = [c for c in CATEGORIES if (cats == c).any()]
    lines = [f"\n### {name}: {len(cats)} pictures from {len(set(files))} files; threshold: 10% of the test split\n",
             "| score | AUROC | FPR95 | flagged, all | "
             + " | ".join(f"{c} ({(cats == c).sum()})" for c in present) + " |",
             "|---" * (4 + len(present)) + "|"]
    for key in s_test:
        (v, lo, hi) = summary(s_test[key], s_out[key], cats, files)
        cells = [f"{v[0]:.3f} [{lo[0]:.3f}, {hi[0]:.3f}]"]
        cells += [f"{a:.1%} [{b:.0%}, {c:.0%}]" for a, b, c in zip(v[1:], lo[1:], hi[1:])]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def public_checks(clf: Classifier, sets: Path) -> str:
    try:
        import skimage.data
        folder = Path(skimage.data.__file__).parent
    except ImportError:
        folder = next((p for p in (sets / "x/skimage/data", CACHE / "x/skimage/data") if p.is_dir()), None)
    if folder is None:
        return "\nPublic checks skipped: no scikit-image, and no wheel unpacked by benchmarks.outliers --fetch."
    lines = [f"\n### Public checks ({folder})\n", "| picture | answer | unsure margin | unsure? | wanted |",
             "|---" * 5 + "|"]
    for name, wanted in CHECKS.items():
        a = clf.predict(folder / name)
        lines.append(f"| {name} | {a.top} {a.probabilities[a.top]:.1%} | {a.unsure_margin:+.3f} | "
                     f"{'yes' if a.unsure else 'no'} | {wanted} |")
    return "\n".join(lines)


@torch.inference_mode()
def rule_flags(clf: Classifier, pixels: np.ndarray) -> np.ndarray:
    return np.concatenate([(clf.rule(torch.from_numpy(pixels[i:i + 1000]))[1] > 0).numpy()
                           for i in range(0, len(pixels), 1000)])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.unsure", description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=None, help="a weights folder (default: the bundled weights/)")
    p.add_argument("--sets", type=Path, default=CACHE, help=f"where benchmarks.outliers wrote the sets ({CACHE})")
    p.add_argument("--report", action="store_true", help="also the report set (score it once, at the end)")
    p.add_argument("--data", default="../shared/data/cifar10-jpeg.tar.gz", help="the CIFAR-10 the weights know")
    args = p.parse_args(argv)
    started = time.perf_counter()
    weights = load(args.weights)
    net, config = weights.model, weights.config
    cifar = data.load(args.data)
    train_x, train_y, _, _ = split_train_val(cifar.train_images, cifar.train_labels, 5000, 0)
    z_test, f_test = outputs(net, cifar.test_images, config.mean, config.std)
    rule, fitted = Rule(net, config), fit(net, outputs(net, train_x, config.mean, config.std)[1], train_y)
    s_test = scores(z_test, f_test, fitted, rule)
    clf = Classifier(weights)
    accuracy = (z_test.argmax(1) == cifar.test_labels).mean()
    print(f"weights: {weights.label}; test accuracy (flip TTA, fp32) {accuracy:.2%}"
          f"; torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}")
    rows = [f"| CIFAR-10 test | {len(cifar.test_images)} | {rule_flags(clf, cifar.test_images).mean():.1%} |"]
    for name in ["dev", "report"] if args.report else ["dev"]:
        sets = dict(np.load(args.sets / f"outliers_{name}.npz"))
        z, f = outputs(net, sets["images"], config.mean, config.std)
        print(table(name, s_test, scores(z, f, fitted, rule), sets))
        flags, cats = rule_flags(clf, sets["images"]), sets["category"]
        rows.append(f"| {name} | {len(flags)} | {flags.mean():.1%} (" + ", ".join(
            f"{c} {flags[cats == c].mean():.0%}" for c in CATEGORIES if (cats == c).any()) + ") |")
    print(f"\n### The weights' own rule, as the app applies it (Classifier, {str(clf.dtype).split('.')[-1]}; "
          f"unsure when energy - ({config.unsure_threshold:.4f}) > 0)\n\n| pictures | n | flagged |\n|---|---|---|")
    print("\n".join(rows))
    print(public_checks(clf, args.sets))
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
