"""metrics.json as one typed record (cifar_model.metrics) and the model card rendered from it
(train/report.py + train/card_template.md), parsed back the way the Hub reads it."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from cifar_model import CLASSES, CifarCNN
from cifar_model.metrics import Metrics
from train.report import render_card, widget_example, write_folder

COMMAND = "python -m train --data cifar10-jpeg.tar.gz --out weights --epochs 2"
LEGACY = Path(__file__).resolve().parent.parent / "weights" / "metrics.json"  # the bundled run's
SRC = "https://huggingface.co/datasets/example/pictures/resolve/main/cat.jpg"


def realistic(**changes) -> Metrics:
    """A plausible run: 10 classes, 1,000 test pictures, calibrated on 5,000 held-out pictures."""
    confusion = [[90 if i == j else (10 if j == (i + 1) % 10 else 0) for j in range(10)] for i in range(10)]
    values = dict(
        test_accuracy=0.9, test_images=1000, per_class_accuracy={c: 0.9 for c in CLASSES},
        confusion_matrix=confusion, dataset="CIFAR-10 test split (JPEG q75 copy)",
        data_source="cifar10-jpeg.tar.gz (sha256 abc)", train_images=45000, train_seconds=23.51,
        hardware="1x NVIDIA H100 80GB HBM3", parameters=2211338, torch="2.11.0",
        config={"epochs": 2, "batch_size": 1024, "lr": 0.4, "momentum": 0.9, "weight_decay": 5e-4,
                "label_smoothing": 0.2, "dropout": 0.0, "translate": 4, "cutout": 8, "ema": 0.0,
                "whiten": True, "tta": True, "val_size": 5000, "seed": 0},
        history=[{"epoch": 1, "train_loss": 1.9, "train_acc": 0.4, "val_acc": 0.5, "elapsed": 0.2}],
        val_accuracy=0.9123, val_images=5000, compile_seconds=3.2,
        temperature=0.8431, calibration_images=5000,
        ece=0.0123, nll=0.3012, brier=0.1456,
        ece_uncalibrated=0.0871, nll_uncalibrated=0.3921, brier_uncalibrated=0.1611,
    )
    return Metrics(**(values | changes))


def widget() -> list[dict]:
    return [widget_example(SRC, {"cat": 0.71, "dog": 0.2, "frog": 0.05, "bird": 0.04}, "a cat")]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("card")
    write_folder(CifarCNN(), out, realistic(), COMMAND, widget=widget())
    return out


def test_folder_holds_weights_metrics_and_our_card(folder):
    assert {p.name for p in folder.iterdir()} >= {"model.safetensors", "config.json", "metrics.json", "README.md"}
    saved = Metrics.load(folder / "metrics.json")
    assert saved == replace(realistic(), command=COMMAND)
    saved.save(folder.parent / "resaved.json")  # written by Metrics.save, byte for byte
    assert (folder / "metrics.json").read_text() == (folder.parent / "resaved.json").read_text()
    text = (folder / "README.md").read_text()
    assert "pushed to the Hub using the [PytorchModelHubMixin]" not in text  # the mixin's default card was replaced
    assert text.startswith("---\n") and text.count("\n---\n") == 1  # one front matter, made by ModelCardData
    assert f"`{COMMAND}`" in text


def test_card_metadata_follows_hub_conventions(folder):
    data = ModelCard.load(folder / "README.md").data
    assert data.library_name == "cifar_model"
    assert data.pipeline_tag == "image-classification"
    assert data.license == "mit"
    assert "uoft-cs/cifar10" in data.datasets
    results = {r.metric_type: r for r in data.eval_results}
    accuracy = results["accuracy"]
    assert accuracy.metric_value == realistic().test_accuracy
    assert (accuracy.task_type, accuracy.dataset_type, accuracy.dataset_split) == (
        "image-classification", "uoft-cs/cifar10", "test")
    assert results["ece"].metric_value == realistic().ece
    [example] = data.get("widget")
    assert example["src"] == SRC and example["example_title"] == "a cat"
    assert example["output"] == [{"label": "cat", "score": 0.71}, {"label": "dog", "score": 0.2},
                                 {"label": "frog", "score": 0.05}]


def test_card_links_the_code_from_the_mixin(folder):
    url = CifarCNN._hub_mixin_info.repo_url
    assert url, "CifarCNN's PyTorchModelHubMixin has no repo_url"
    assert url in (folder / "README.md").read_text()


def test_card_body_has_the_figures(folder):
    text = ModelCard.load(folder / "README.md").text
    assert "**Test accuracy: 90.00%** on the 1,000 pictures of the CIFAR-10 test split (JPEG q75 copy)" in text
    assert "JPEG compression costs a few points" in text
    assert "| cat | 90.0% |" in text
    assert "| airplane | 90 | 10 | 0 |" in text  # the confusion matrix's first row
    assert "Validation accuracy: 91.23% on 5,000 training pictures held out." in text
    assert "23.5 s for 2 epochs" in text and "cutout 8 px" in text


def test_card_reports_calibration_before_and_after(folder):
    text = ModelCard.load(folder / "README.md").text
    assert "## Calibration" in text
    assert "temperature T = 0.843" in text and "on 5,000 validation\npictures, never on the test split" in text
    assert "| expected calibration error (ECE) | 8.71% | 1.23% |" in text
    assert "| negative log-likelihood (NLL) | 0.392 | 0.301 |" in text
    assert "| Brier score | 0.161 | 0.146 |" in text
    assert "reliability.png" not in text  # no diagram in the folder, none on the card


def test_render_card_shows_the_reliability_diagram_and_keeps_the_widget(tmp_path):
    write_folder(CifarCNN(), tmp_path, realistic(), COMMAND, widget=widget())
    (tmp_path / "reliability.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    metrics = replace(Metrics.load(tmp_path / "metrics.json"), ece=0.0099)  # calibration updated the figures
    metrics.save(tmp_path / "metrics.json")
    render_card(tmp_path)
    card = ModelCard.load(tmp_path / "README.md")
    assert "](reliability.png)" in card.text
    assert "| expected calibration error (ECE) | 8.71% | 0.99% |" in card.text
    assert card.data.get("widget") == widget()
    assert {r.metric_type: r.metric_value for r in card.data.eval_results}["ece"] == 0.0099


def test_uncalibrated_run_has_no_calibration_section(tmp_path):
    m = realistic(temperature=1.0, calibration_images=0, ece=None, nll=None, brier=None,
                  ece_uncalibrated=None, nll_uncalibrated=None, brier_uncalibrated=None)
    write_folder(CifarCNN(), tmp_path, m, COMMAND)
    card = ModelCard.load(tmp_path / "README.md")
    assert "## Calibration" not in card.text
    assert [r.metric_type for r in card.data.eval_results] == ["accuracy"]
    assert card.data.get("widget") is None


@pytest.mark.parametrize("val_images", [0, 5000])
def test_hold_out_sentence_is_true_for_the_run(tmp_path, val_images):
    m = realistic(val_images=val_images, val_accuracy=0.9123 if val_images else None,
                  calibration_images=val_images, temperature=0.8431 if val_images else 1.0)
    write_folder(CifarCNN(), tmp_path, m, COMMAND)
    text = " ".join(ModelCard.load(tmp_path / "README.md").text.split())
    tuned = "the recipe was tuned on 5,000 training pictures held out for validation"
    if val_images:
        assert "The test split was used once, for this report; " + tuned in text
        assert "held out no training pictures" not in text
    else:
        assert "the recipe was tuned" not in text
        assert "This run held out no training pictures" in text
        assert "nothing in this run was tuned on held-out data" in text
        assert "Validation accuracy: none measured (no training pictures held out)" in text
        assert "No temperature was fitted" in text and "| metric | value |" in text


def test_metrics_round_trip_exactly(tmp_path):
    m = realistic(repo_id="someone/cifar10", command=COMMAND, skipped_images=3)
    m.save(tmp_path / "metrics.json")
    text = (tmp_path / "metrics.json").read_text()
    assert text.endswith("}\n") and text.startswith("{\n  \"test_accuracy\": 0.9,")
    back = Metrics.load(tmp_path / "metrics.json")
    assert back == m and asdict(back) == json.loads(text)
    back.save(tmp_path / "again.json")
    assert (tmp_path / "again.json").read_text() == text


def _write_with(tmp_path, field: str, value) -> Path:
    raw = asdict(realistic())
    raw[field] = value
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(raw))  # json writes NaN as the bare token NaN, as a careless writer would
    return path


@pytest.mark.parametrize(("field", "value"), [
    ("test_accuracy", "0.9"),  # a string
    ("test_accuracy", 91.2),  # a percentage, not a fraction
    ("test_accuracy", math.nan),
    ("test_accuracy", True),
    ("val_accuracy", -0.1),
    ("test_images", -1),
    ("train_images", 4.5e4),  # a float where a count belongs
    ("per_class_accuracy", {"cat": 81.9}),
    ("per_class_accuracy", [0.9] * 10),
    ("confusion_matrix", [[1, 2], [3, 4]]),
    ("ece", math.inf),
    ("nll", math.inf),
    ("train_seconds", math.nan),
    ("temperature", 0.0),
    ("dataset", 10),
    ("config", "lr=0.4"),
    ("history", [1, 2]),
])
def test_load_rejects_a_wrong_field_naming_file_and_field(tmp_path, field, value):
    path = _write_with(tmp_path, field, value)
    with pytest.raises(ValueError) as err:
        Metrics.load(path)
    assert str(path) in str(err.value) and field in str(err.value)


def test_load_rejects_a_missing_field(tmp_path):
    raw = asdict(realistic())
    del raw["test_accuracy"], raw["hardware"]
    (tmp_path / "m.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"m\.json: test_accuracy, hardware: missing"):
        Metrics.load(tmp_path / "m.json")


@pytest.mark.parametrize("content", ["{not json", "[0.9, 0.8]", '"0.9"', "", "null", "[" * 100_000 + "]" * 100_000,
                                     " " * 10_000_001])
def test_load_rejects_what_is_not_a_json_object(tmp_path, content):
    path = tmp_path / "metrics.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=str(path)):
        Metrics.load(path)


def test_load_rejects_a_missing_or_binary_file(tmp_path):
    with pytest.raises(ValueError, match="nothing.json"):
        Metrics.load(tmp_path / "nothing.json")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="bin.json"):
        Metrics.load(tmp_path / "bin.json")


def test_unknown_keys_are_ignored(tmp_path):
    raw = asdict(realistic()) | {"added_by_a_later_version": [1, 2, 3]}
    (tmp_path / "m.json").write_text(json.dumps(raw))
    assert Metrics.load(tmp_path / "m.json") == realistic()


def test_whole_numbers_load_as_floats(tmp_path):
    m = Metrics.load(_write_with(tmp_path, "train_seconds", 32))  # JSON writes 32.0 as 32 in other tools
    assert m.train_seconds == 32.0 and type(m.train_seconds) is float


def test_constructor_checks_too():
    with pytest.raises(ValueError, match="test_accuracy: must be a fraction"):
        realistic(test_accuracy=91.2)
    with pytest.raises(ValueError, match="val_accuracy: given, but val_images is 0"):
        realistic(val_images=0)


def test_legacy_bundled_metrics_load():
    raw = json.loads(LEGACY.read_text())
    m = Metrics.load(LEGACY)
    assert m.test_accuracy == raw["test_accuracy"] and 0 < m.test_accuracy <= 1
    assert m.per_class_accuracy == raw["per_class_accuracy"] and len(m.history) == len(raw["history"])
    # Written before val_images existed: its hold-out is read from the config it was trained with.
    assert m.val_images == raw.get("val_images", raw["config"]["val_size"])
    if "calibration_images" not in raw:
        assert (m.temperature, m.calibration_images, m.ece) == (1.0, 0, None)
