"""The numbers we publish hold: the calibration the shipped weights carry is the one their figures
describe, the README and the model card say what metrics.json says, and the unsure rule is the
benchmarked one.

Measured on the committed 500-picture sample, so the tolerances are those of 500 pictures: the
sample's ECE has a sampling noise of a few points (the full split's figures come from
benchmarks/calibration.py and train.calibrate, whose logs are in benchmarks/results/).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard

from cifar_model import CLASSES, Classifier, Metrics
from cifar_model import calibration as cal

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "data" / "cifar10-test-sample"
README = (ROOT / "README.md").read_text()
METRICS = Metrics.load(ROOT / "weights" / "metrics.json")


@pytest.fixture(scope="module")
def sample(classifier) -> tuple[torch.Tensor, torch.Tensor]:
    files = sorted(SAMPLE.glob("*/*.jpg"))
    pixels = torch.from_numpy(np.stack([classifier.to_uint8(f) for f in files]))
    labels = torch.tensor([CLASSES.index(f.parent.name) for f in files])
    return classifier.logits(pixels), labels


def test_predict_shows_the_calibrated_probabilities(classifier):
    photo = ROOT / "examples" / "horse_1.jpg"
    logits = classifier.logits(torch.from_numpy(classifier.to_uint8(photo)[None]))
    shown = classifier.predict(photo)[0]
    calibrated = cal.to_probabilities(logits, classifier.temperature, top_label_map=classifier.top_label_map)[0]
    assert [shown[c] for c in CLASSES] == pytest.approx(calibrated.tolist(), abs=1e-6)
    plain = torch.softmax(logits, dim=1)[0]
    assert max(shown.values()) > plain.max().item() + 0.05  # the smoothed network's "84%" is not what we show


def test_calibration_makes_the_sample_honest_and_keeps_every_answer(classifier, sample):
    logits, labels = sample
    before = cal.quality(cal.to_probabilities(logits), labels)
    after = cal.quality(classifier.calibrate(logits), labels)
    assert before["ece"] > 0.10 and after["ece"] < 0.05  # 16.3% -> 3.9% on these 500 pictures
    assert after["nll"] < before["nll"] and after["brier"] < before["brier"]
    assert torch.equal(classifier.calibrate(logits).argmax(1), logits.argmax(1))
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    assert accuracy == pytest.approx(METRICS.test_accuracy, abs=0.03)  # the split's 91.22%, on 500 of them


def test_readme_card_and_metrics_agree():
    m = METRICS
    assert m.calibration_images == 5000 and m.ece is not None and m.ece <= 0.01  # the goal: ECE <= 1.0%
    row = re.search(r"\| \*\*temperature \+ top-label map \(shipped\)\*\* \| \*\*([\d.]+)%\*\* \| \*\*[\d.]+%\*\* "
                    r"\| \*\*([\d.]+)%\*\* \| \*\*([\d.]+)\*\* \| \*\*([\d.]+)\*\* \|", README)
    assert row, "the README's calibration table lost its shipped row"
    accuracy, ece, nll, brier = (float(x) for x in row.groups())
    assert (accuracy, ece) == (round(100 * m.test_accuracy, 2), round(100 * m.ece, 2))
    assert (nll, brier) == (round(m.nll, 4), round(m.brier, 4))
    assert f"| before (softmax) | {100 * m.test_accuracy:.2f}% | " in README
    assert f"{100 * m.ece_uncalibrated:.2f}%" in README and f"T = {m.temperature:.3f}" in README
    card = ModelCard.load(ROOT / "weights" / "README.md")
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results == {"accuracy": m.test_accuracy, "ece": m.ece}
    assert f"| expected calibration error (ECE) | {100 * m.ece_uncalibrated:.2f}% | {100 * m.ece:.2f}% |" in card.text


def test_the_notice_follows_the_benchmarked_rule(classifier):
    log = (ROOT / "benchmarks" / "results" / "2026-11-26-cpu-calibration.log").read_text()
    benchmarked = float(re.search(r"unfamiliar_below = ([\d.]+)", log).group(1))
    assert classifier.unfamiliar_below == pytest.approx(benchmarked, abs=5e-4)
    assert f"`unfamiliar_below` = {classifier.unfamiliar_below:.3f}" in README
    # the rule fires on this score below that threshold, and only there
    z = torch.tensor([[classifier.unfamiliar_below - 0.01] + [-30.0] * 9,
                      [classifier.unfamiliar_below + 0.01] + [-30.0] * 9])
    assert classifier.unfamiliar(z).tolist() == [True, False]
