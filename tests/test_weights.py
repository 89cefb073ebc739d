"""The weights we ship in weights/: what their card claims, and what they score on real pictures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from cifar_model import BUNDLED_WEIGHTS, CLASSES, Classifier

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = sorted((ROOT / "tests" / "data" / "cifar10-test-sample").glob("*/*.jpg"))
# The full test split, where the project's data sits beside the checkout (as in CI).
DATA = Path(os.environ.get("CIFAR_DATA", ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"))


@pytest.fixture(scope="module")
def clf() -> Classifier:
    return Classifier.from_pretrained()


def accuracy(clf: Classifier, files: list[Path]) -> float:
    probs = clf.predict(files)
    return sum(max(p, key=p.get) == f.parent.name for p, f in zip(probs, files)) / len(files)


def test_bundled_folder_is_complete_and_consistent(clf: Classifier) -> None:
    assert {p.name for p in BUNDLED_WEIGHTS.iterdir()} >= {"model.safetensors", "config.json", "metrics.json", "README.md"}
    metrics = json.loads((BUNDLED_WEIGHTS / "metrics.json").read_text())
    assert clf.info.source == "bundled" and clf.classes == list(CLASSES)
    assert clf.info.card_accuracy == pytest.approx(metrics["test_accuracy"], abs=1e-4)
    assert clf.info.card_accuracy >= 0.90  # the floor for the shipped weights
    assert metrics["dataset"] == "CIFAR-10 test split (JPEG q75 copy)"
    assert metrics["config"]["tta"] is True and clf.tta  # the card's rule is predict's rule


def test_shipped_weights_score_at_least_88_percent_on_500_real_test_pictures(clf: Classifier) -> None:
    assert len(SAMPLE) == 500 and {f.parent.name for f in SAMPLE} == set(CLASSES)
    assert accuracy(clf, SAMPLE) >= 0.88


def test_bf16_and_fp32_paths_agree(clf: Classifier) -> None:
    fp32 = Classifier.from_pretrained(precision="fp32")
    bf16 = Classifier.from_pretrained(precision="bf16")
    pixels = torch.from_numpy(np.stack([fp32.to_uint8(f) for f in SAMPLE]))
    a, b = fp32.probabilities(pixels), bf16.probabilities(pixels)
    assert (a.argmax(1) == b.argmax(1)).float().mean() >= 0.99
    assert (a - b).abs().max() < 0.05
    assert torch.allclose(b.sum(1), torch.ones(len(b)), atol=1e-5)


@pytest.mark.skipif(not DATA.is_file(), reason=f"the full test split is not at {DATA} (set CIFAR_DATA)")
def test_card_figure_matches_predict_on_the_full_test_split(clf: Classifier) -> None:
    """The card's accuracy must be what Classifier.predict scores on all 10,000 pictures (+-0.5)."""
    from train.data import iter_split

    items = list(iter_split(DATA, "test"))
    assert len(items) == 10_000
    correct = 0
    for start in range(0, len(items), 1000):
        chunk = items[start:start + 1000]
        probs = clf.predict([blob for blob, _ in chunk])
        correct += sum(max(p, key=p.get) == CLASSES[label] for p, (_, label) in zip(probs, chunk))
    assert abs(correct / len(items) - clf.info.card_accuracy) <= 0.005
