"""Score weights the way the app predicts: ``Classifier.predict`` on every encoded test picture.

    python -m benchmarks.eval_weights --data ../shared/data/cifar10-jpeg.tar.gz [--model weights]

Each JPEG goes through the library's whole path (decode, crop/resize, normalise, fused CPU network,
flip TTA); the accuracy is compared with the figure in the weights' model card.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from cifar_model import CLASSES, Classifier
from train.data import iter_split


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="ImageFolder tree or .tar/.tar.gz of one")
    p.add_argument("--model", default=None, help="weights folder or Hub repo id (default: bundled weights/)")
    p.add_argument("--precision", nargs="+", default=["auto"], help="auto, fp32 and/or bf16 (one line each)")
    args = p.parse_args()
    items = list(iter_split(Path(args.data), "test"))
    for precision in args.precision:
        evaluate(Classifier.from_pretrained(args.model, precision=precision), items)
    return 0


def accuracy(clf: Classifier, items: list[tuple[bytes, int]], batch: int = 500) -> float:
    """Share of (encoded picture, label) items whose top class under ``Classifier.predict`` is right."""
    correct = 0
    for start in range(0, len(items), batch):
        chunk = items[start:start + batch]
        probs = clf.predict([blob for blob, _ in chunk])
        correct += sum(max(p, key=p.get) == CLASSES[label] for p, (_, label) in zip(probs, chunk))
    return correct / len(items)


def evaluate(clf: Classifier, items: list[tuple[bytes, int]]) -> None:
    t0 = time.perf_counter()
    acc = accuracy(clf, items)
    card = clf.info.metrics.test_accuracy if clf.info.metrics is not None else None
    print(f"Classifier.predict ({clf.backend}) on {len(items):,} test pictures: {acc:.2%}"
          f" ({time.perf_counter() - t0:.0f}s)")
    if card is not None:
        print(f"  metrics.json (the model card's figure): {card:.2%}; difference {abs(acc - card) * 100:.2f} points")


if __name__ == "__main__":
    sys.exit(main())
