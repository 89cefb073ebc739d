"""What we publish about the shipped weights holds: accuracy and calibration on the 500 committed test
pictures (with the sampling noise of 500), bf16 agreeing with fp32, the README, the card and metrics.json
agreeing, and, where the dataset is on the machine, metrics.json's test accuracy on the whole split."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard

from cifar_model import CLASSES, Classifier, Metrics, to_uint8, tta_logits
from cifar_model.weights import read_record
from train.calibrate import quality

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "data" / "cifar10-test-sample"
FULL_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
METRICS = read_record(Metrics, ROOT / "weights" / "metrics.json")


@pytest.fixture(scope="module")
def sample() -> tuple[np.ndarray, np.ndarray]:
    files = sorted(SAMPLE.glob("*/*.jpg"))
    return np.stack([to_uint8(f) for f in files]), np.array([CLASSES.index(f.parent.name) for f in files])


@pytest.fixture(scope="module")
def fp32() -> Classifier:
    return Classifier.from_pretrained(precision="fp32")


@pytest.fixture(scope="module")
def logits(fp32, sample) -> torch.Tensor:
    """The flip-averaged raw logits of the sample, through the fp32 classifier's own network."""
    with torch.inference_mode():
        return tta_logits(fp32.rule.net, torch.from_numpy(sample[0]), fp32.weights.config.mean, fp32.weights.config.std)


def _table(answers) -> np.ndarray:
    return np.array([list(a.probabilities.values()) for a in answers])


def test_the_shipped_weights_score_88_percent_on_the_committed_sample(fp32, sample, logits):
    pixels, labels = sample
    assert len(labels) == 500 and sorted(np.bincount(labels)) == [50] * 10
    answers = _table(fp32.answer(pixels))
    np.testing.assert_allclose(answers, fp32.rule.calibrate(logits).numpy(), atol=1e-5)  # what the claims below score
    accuracy = float((answers.argmax(1) == labels).mean())
    assert accuracy >= 0.88
    assert accuracy == pytest.approx(METRICS.test_accuracy, abs=0.04)  # the full split's figure, within 500's noise


def test_bf16_and_fp32_give_the_same_answers(fp32, sample, logits):
    a = fp32.rule.calibrate(logits).numpy()
    b = _table(Classifier.from_pretrained(precision="bf16").answer(sample[0]))
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.99
    worst = np.abs(a - b).max(axis=1)  # per picture: a point or so, rarely more near a class boundary
    assert np.percentile(worst, 99) < 0.03 and np.abs(a - b).mean() < 0.002


def test_calibration_makes_the_sample_honest_without_changing_an_answer(fp32, sample, logits):
    labels = torch.from_numpy(sample[1])
    calibrated = fp32.rule.calibrate(logits)
    before, after = quality(torch.softmax(logits, dim=1), labels), quality(calibrated, labels)
    assert before["ece"] > 0.10 and after["ece"] < 0.05  # ~16% -> ~4% on these 500 pictures
    assert after["nll"] < before["nll"] and after["brier"] < before["brier"]
    assert torch.equal(calibrated.argmax(1), logits.argmax(1))


def _percent_after(label: str, text: str) -> float:
    """The first percentage in the README table row whose first cell starts with ``label``."""
    row = re.search(rf"^\|\s*{label}[^|]*\|([^\n]*)$", text, re.MULTILINE | re.IGNORECASE)
    assert row, f"README.md has no table row starting with {label!r}"
    return float(re.search(r"([\d.]+)\s*%", row.group(1)).group(1))


def test_readme_card_and_metrics_agree_on_the_headline_figures():
    m, readme = METRICS, (ROOT / "README.md").read_text()
    assert _percent_after("test accuracy", readme) == round(100 * m.test_accuracy, 2)
    row = re.search(r"^\|\s*expected calibration error[^\n]*$", readme, re.MULTILINE | re.IGNORECASE)
    eces = [float(x) for x in re.findall(r"([\d.]+)%", row.group(0))]
    assert eces == [round(100 * m.ece, 2), round(100 * m.ece_uncalibrated, 2)]  # after, before
    assert m.ece <= 0.015  # the goal: the bars mean what they say
    card = ModelCard.load(ROOT / "weights" / "README.md")
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == dict(accuracy=m.test_accuracy, ece=m.ece)
    text = " ".join(card.text.split())
    assert f"**Test accuracy: {m.test_accuracy:.2%}**" in text
    assert f"| expected calibration error (ECE) | {m.ece_uncalibrated:.2%} | {m.ece:.2%} |" in text


@pytest.mark.skipif(not FULL_DATA.is_file(), reason=f"the full test split is not on this machine ({FULL_DATA})")
def test_the_library_reproduces_the_test_accuracy_on_the_whole_split():
    from train.data import iter_split

    blobs, labels = zip(*iter_split(FULL_DATA, "test"))
    pixels, labels = np.stack([to_uint8(b) for b in blobs]), np.array(labels)
    assert len(labels) == METRICS.test_images
    clf = Classifier.from_pretrained()  # fp32: what the app serves, on any CPU
    right = sum(int((_table(clf.answer(pixels[i:i + 1000])).argmax(1) == labels[i:i + 1000]).sum())
                for i in range(0, len(labels), 1000))
    assert right / len(labels) == pytest.approx(METRICS.test_accuracy, abs=1e-9)
    assert METRICS.test_accuracy >= 0.91


def test_the_browsers_model_is_the_librarys_rule_on_the_sample(fp32, sample):
    # weights/model.onnx (what the Live tab runs) against Classifier, in native onnxruntime: same top class
    # and the same unsure verdict on every picture, probabilities within 1e-3.
    import onnxruntime

    session = onnxruntime.InferenceSession(str(ROOT / "weights" / "model.onnx"), providers=["CPUExecutionProvider"])
    probabilities, unsure = session.run(None, {"pixels": sample[0]})
    answers = fp32.answer(sample[0])
    expected = np.array([list(a.probabilities.values()) for a in answers])
    assert (probabilities.argmax(1) == expected.argmax(1)).all()
    assert np.abs(probabilities - expected).max() < 1e-3
    assert ((unsure > 0) == np.array([a.unsure for a in answers])).all()
