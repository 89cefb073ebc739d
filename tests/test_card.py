"""The Hub-ready folder and its model card (train/report.py + train/card_template.md), read back the way
the Hub reads it: every figure on the card is one of the run's metrics.json."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard

from cifar_model import CLASSES, Classifier, CifarCNN, Config, Metrics, Weights
from cifar_model.weights import read_record
from train import report
from train.report import model_card, render_card, widget_example, write_folder

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "cat_1.jpg"
COMMAND = "python -m train --data cifar10-jpeg.tar.gz --out weights --epochs 2"
SRC = "https://huggingface.co/datasets/example/pictures/resolve/main/cat.jpg"
RELIABILITY = [[0, 0.0, 0.0]] * 15
RELIABILITY[5], RELIABILITY[13], RELIABILITY[14] = [100, 0.36, 0.35], [300, 0.9, 0.88], [600, 0.98, 0.975]


def realistic(**changes) -> Metrics:
    """A plausible calibrated run: 10 classes, 1,000 test pictures, 5,000 held out."""
    values = dict(
        test_accuracy=0.9, test_images=1000, per_class_accuracy={c: (81 + i) / 100 for i, c in enumerate(CLASSES)},
        confusion_matrix=[[90 if j == i else 10 if j == (i + 1) % 10 else 0 for j in range(10)] for i in range(10)],
        dataset="CIFAR-10 test split (JPEG q75 copy)", data_source="cifar10-jpeg.tar.gz (sha256 abc)",
        train_images=45000, train_seconds=23.51, hardware="1x NVIDIA H100 80GB HBM3", parameters=2211338,
        torch="2.11.0", history=[{"epoch": 1, "train_loss": 1.9, "train_acc": 0.4, "val_acc": 0.5, "elapsed": 0.2}],
        config={"epochs": 2, "batch_size": 1024, "lr": 0.4, "momentum": 0.9, "weight_decay": 5e-4,
                "label_smoothing": 0.2, "dropout": 0.0, "translate": 4, "cutout": 8, "ema": 0.0, "whiten": True,
                "val_size": 5000, "seed": 0},
        val_accuracy=0.9123, val_images=5000, skipped_images=3, compile_seconds=3.2, command=COMMAND,
        temperature=0.8431, ece=0.0123, nll=0.3012, brier=0.1456, ece_uncalibrated=0.0871, nll_uncalibrated=0.3921,
        brier_uncalibrated=0.1611, reliability=RELIABILITY, unsure_rate=0.11, unsure_accuracy=0.5598,
        sure_accuracy=0.9559,
    )
    return Metrics(**(values | changes))


UNCALIBRATED = dict(val_images=0, val_accuracy=None, temperature=1.0, ece=None, nll=None, brier=None,
                    ece_uncalibrated=None, nll_uncalibrated=None, brier_uncalibrated=None, reliability=None,
                    unsure_rate=None, unsure_accuracy=None, sure_accuracy=None)


def _text(m: Metrics, **kw) -> str:
    return " ".join(model_card(m, **kw).text.split())  # one line: the template's line breaks don't matter


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, CifarCNN, Config]:
    out = tmp_path_factory.mktemp("card")
    torch.manual_seed(0)
    model, config = CifarCNN().eval(), Config(list(CLASSES), [0.45, 0.5, 0.4], [0.25, 0.22, 0.28], temperature=0.5)
    write_folder(out, model, config, realistic())
    return out, model, config


def test_score_counts_right_answers_per_class_and_the_confusion_matrix():
    logits = torch.tensor([[3.0, 1, 0], [0, 2, 1], [0, 1, 2], [2, 0, 1], [0, 0, 5]])
    got = report.score(logits, torch.tensor([0, 1, 1, 2, 2]), ["a", "b", "c"])
    assert got == {"test_accuracy": 0.6, "test_images": 5, "per_class_accuracy": {"a": 1.0, "b": 0.5, "c": 0.5},
                   "confusion_matrix": [[1, 0, 0], [0, 1, 1], [1, 0, 1]]}  # rows: true class, columns: predicted


def test_hardware_names_the_gpu_or_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: f"GPU {index}")
    monkeypatch.setattr(report.platform, "processor", lambda: "")
    monkeypatch.setattr(report.platform, "machine", lambda: "x86_64")
    for gpu, expected in ((True, "1x GPU 0"), (False, f"CPU (x86_64, {torch.get_num_threads()} threads)")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
        assert report.hardware() == expected


def test_the_folder_holds_weights_config_metrics_card_and_this_models_answer(written):
    out, model, config = written
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "config.json", "metrics.json", "README.md",
                                              "example.jpg", "model.onnx"}
    assert read_record(Metrics, out / "metrics.json") == realistic()
    written = read_record(Config, out / "config.json")
    assert written.onnx_sha256 is not None and replace(written, onnx_sha256=None) == config  # and model.onnx's sha
    assert (out / "example.jpg").read_bytes() == EXAMPLE.read_bytes()
    text = (out / "README.md").read_text()  # one front matter, then the template
    assert text.startswith("---\n") and text.count("\n---\n") == 1 and "\n# CIFAR-10 seed CNN\n" in text
    answer = Classifier(Weights(model, config), precision="fp32").predict(EXAMPLE)
    best = sorted(answer.probabilities.items(), key=lambda kv: -kv[1])[:3]
    [example] = ModelCard.load(out / "README.md").data.get("widget")
    assert example["src"] == "example.jpg" and example["example_title"]
    assert [o["label"] for o in example["output"]] == [c for c, _ in best]
    assert [o["score"] for o in example["output"]] == pytest.approx([p for _, p in best], abs=6e-5)


def test_a_pushed_run_links_its_widget_picture_on_the_hub(tmp_path):
    write_folder(tmp_path, CifarCNN().eval(), Config(list(CLASSES), [0.5] * 3, [0.2] * 3), realistic(repo_id="me/c"))
    data = ModelCard.load(tmp_path / "README.md").data
    assert data.get("widget")[0]["src"] == "https://huggingface.co/me/c/resolve/main/example.jpg"
    assert data.model_name == "c"
    assert 'Classifier.from_pretrained("me/c", revision=' in ModelCard.load(tmp_path / "README.md").text


def test_card_metadata_follows_hub_conventions():
    data = model_card(realistic(), widget=[widget_example(SRC, {"cat": 0.71, "dog": 0.2, "frog": 0.05, "bird": 0.04},
                                                          "a cat")]).data
    assert (data.library_name, data.pipeline_tag, data.license, data.model_name) == (
        "cifar_model", "image-classification", "mit", "cifar10-seed-cnn")
    assert data.datasets == ["uoft-cs/cifar10"] and {"image-classification", "cifar10"} <= set(data.tags)
    results = {r.metric_type: r for r in data.eval_results}
    assert {k: r.metric_value for k, r in results.items()} == {"accuracy": 0.9, "ece": 0.0123} and data.metrics == [
        "accuracy", "ece"]
    for r in results.values():
        assert (r.task_type, r.dataset_type, r.dataset_name, r.dataset_split) == (
            "image-classification", "uoft-cs/cifar10", "CIFAR-10 test split (JPEG q75 copy)", "test")
    assert data.get("widget") == [{"example_title": "a cat", "src": SRC, "output": [
        {"label": "cat", "score": 0.71}, {"label": "dog", "score": 0.2}, {"label": "frog", "score": 0.05}]}]
    assert widget_example(SRC, {"cat": 0.123456, "dog": 0.9}, top=1) == {"src": SRC, "output": [
        {"label": "dog", "score": 0.9}]}
    assert widget_example(SRC, {"cat": 0.123456}) == {"src": SRC, "output": [{"label": "cat", "score": 0.1235}]}


def test_card_body_has_the_figures_of_the_run():
    text = _text(realistic())
    for fact in ("2,211,338 parameters", "https://github.com/cifar10-demo/cifar10-seed-cnn",
                 "**Test accuracy: 90.00%** on the 1,000 pictures of the CIFAR-10 test split (JPEG q75 copy)",
                 "JPEG compression costs a few points", "| airplane | 81.0% |", "| truck | 90.0% |",
                 "| airplane | 90 | 10 | 0 | 0 | 0 | 0 | 0 | 0 | 0 | 0 |", "| truck | 10 |" + " 0 |" * 8 + " 90 |",
                 "Validation accuracy: 91.23% on 5,000 training pictures held out",
                 "cifar10-jpeg.tar.gz (sha256 abc); 45,000 training pictures (3 pictures that could not be decoded",
                 "1x NVIDIA H100 80GB HBM3; training time 23.5 s for 2 epochs", "warm-up took another 3 s",
                 "batch 1024", "peaking at 0.4", "label smoothing 0.2", "cutout 8 px", "whitening init",
                 "seed 0", f"`{COMMAND}`", "PyTorch 2.11.0"):
        assert fact in text, fact
    plain = _text(realistic(dataset="CIFAR-10 test split", skipped_images=0, compile_seconds=None, command=None,
                            config=realistic().config | {"cutout": 0, "whiten": False, "ema": 0.999}))
    for fact in ("JPEG compression", "could not be decoded", "warm-up", "cutout", "whitening", "Command:"):
        assert fact not in plain, fact
    assert "weight EMA 0.999" in plain and "weight EMA" not in text


def test_card_reports_calibration_reliability_and_the_unsure_rule():
    text = _text(realistic())
    for fact in ("## Calibration", "fitted on the 5,000 validation pictures", "T = 0.843",
                 "| expected calibration error (ECE) | 8.71% | 1.23% |", "| Brier score | 0.161 | 0.146 |",
                 "| negative log-likelihood (NLL) | 0.392 | 0.301 |", "| 33%–40% | 100 | 36.0% | 35.0% |",
                 "| 87%–93% | 300 | 90.0% | 88.0% |",
                 "| 93%–100% | 600 | 98.0% | 97.5% |", "## When the model is unsure",
                 "fires on 11.0% of the pictures; the answer is right on 56.0% of those and on 95.6% of the others"):
        assert fact in text, fact
    assert text.count("| 0 | 0.0% | 0.0% |") == 0  # empty bins are left out
    assert "n/a of those" in _text(realistic(unsure_rate=0.0, unsure_accuracy=None))
    assert "| Brier score | n/a | 0.146 |" in _text(realistic(brier_uncalibrated=None))
    assert "top probability | pictures" not in _text(realistic(reliability=None))


@pytest.mark.parametrize("val_images", [0, 5000])
def test_the_hold_out_sentence_is_true_for_the_run(val_images):
    text = _text(realistic(**({} if val_images else UNCALIBRATED)))
    fitted = "the calibration and the unsure threshold were fitted on 5,000 training pictures held out for validation"
    none = "This run held out no training pictures, so nothing could be calibrated without touching the test split"
    assert (fitted in text, none in text) == (bool(val_images), not val_images)
    assert ("Validation accuracy: none measured (no training pictures held out)" in text) is not val_images


def test_an_uncalibrated_run_has_no_calibration_section(tmp_path):
    card = model_card(realistic(**UNCALIBRATED))
    assert "## Calibration" not in card.text and "## When the model is unsure" not in card.text
    assert "| top probability |" not in card.text
    assert [r.metric_type for r in card.data.eval_results] == ["accuracy"] and card.data.get("widget") is None


def test_render_card_takes_new_figures_and_keeps_the_widget(written, tmp_path):
    out, _, _ = written
    for p in out.iterdir():
        (tmp_path / p.name).write_bytes(p.read_bytes())
    widget = ModelCard.load(tmp_path / "README.md").data.get("widget")
    (tmp_path / "metrics.json").write_text(json.dumps(json.loads((out / "metrics.json").read_text()) | {"ece": 0.0099}))
    render_card(tmp_path)
    card = ModelCard.load(tmp_path / "README.md")
    assert "| expected calibration error (ECE) | 8.71% | 0.99% |" in card.text
    assert card.data.get("widget") == widget and widget
    assert {r.metric_type: r.metric_value for r in card.data.eval_results}["ece"] == 0.0099
    replaced = [widget_example(SRC, {"dog": 0.6})]
    assert render_card(tmp_path, widget=replaced).data.get("widget") == replaced
    (tmp_path / "README.md").unlink()  # no card yet: none to keep
    assert render_card(tmp_path).data.get("widget") is None
