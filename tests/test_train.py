"""``python -m train`` on the CPU: data loading from an ImageFolder tree and a .tar.gz, a tiny
training run that writes a Hub-ready folder the library loads, and the recipe's augmentation."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard

from cifar_model import CLASSES, Classifier
from train import data as datasets
from train.__main__ import main as train_main
from train.recipe import TrainConfig, _augment, split_train_val

SAMPLE = Path(__file__).parent / "data" / "cifar10-test-sample"


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """An ImageFolder tree from the committed sample: 30 train and 10 test pictures a class."""
    root = tmp_path_factory.mktemp("cifar")
    for c in CLASSES:
        files = sorted((SAMPLE / c).glob("*.jpg"))
        for split, chosen in (("train", files[:30]), ("test", files[30:40])):
            (root / split / c).mkdir(parents=True)
            for f in chosen:
                shutil.copy(f, root / split / c / f.name)
    return root


@pytest.fixture(scope="module")
def archive(tree: Path, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tar") / "cifar.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(tree / "train", arcname="cifar/train")
        tar.add(tree / "test", arcname="cifar/test")
    return path


def test_tree_and_archive_decode_to_the_same_pictures(tree: Path, archive: Path, tmp_path: Path) -> None:
    a = datasets.load(str(tree), tmp_path / "c1", workers=1)
    b = datasets.load(str(archive), tmp_path / "c2", workers=2)
    assert a.train_images.shape == (300, 32, 32, 3) and a.train_images.dtype == np.uint8
    assert a.test_images.shape == (100, 32, 32, 3)
    np.testing.assert_array_equal(a.train_images, b.train_images)
    np.testing.assert_array_equal(a.test_labels, b.test_labels)
    assert sorted(np.bincount(a.train_labels)) == [30] * 10
    assert b.sha256 and b.sha256 in b.source
    # the second load comes from the decoded cache, identically
    c = datasets.load(str(archive), tmp_path / "c2", workers=2)
    np.testing.assert_array_equal(b.train_images, c.train_images)
    assert list((tmp_path / "c2").glob("*.npz"))


def test_the_project_jpeg_copy_is_named_as_such() -> None:
    cifar = datasets.Cifar(*([np.zeros(1)] * 4), list(CLASSES), "x", datasets.JPEG_COPY_SHA256)
    assert cifar.test_name == "CIFAR-10 test split (JPEG q75 copy)"


def test_missing_data_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no such file"):
        datasets.load(str(tmp_path / "nope.tar.gz"), tmp_path)


def test_validation_split_is_held_out_and_repeatable() -> None:
    x = np.arange(100)[:, None].repeat(3, 1)
    y = np.arange(100)
    xt, yt, xv, yv = split_train_val(x, y, 20, seed=3)
    assert len(xv) == 20 and len(xt) == 80 and not set(yv) & set(yt)
    np.testing.assert_array_equal(yv, split_train_val(x, y, 20, seed=3)[3])


def test_augmentation_keeps_shapes_and_pixels() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 3, 32, 32)
    out = _augment(x.clone(), translate=4, cutout=8)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert not torch.equal(out, x)
    # without translation or cutout a picture is itself or its mirror image
    plain = _augment(x.clone(), translate=0, cutout=0)
    assert all(torch.equal(p, q) or torch.equal(p, q.flip(-1)) for p, q in zip(plain, x))
    # cutout zeroes one 8x8 square (64 pixels, all channels) per picture; randn has no exact zeros
    holes = _augment(x.clone(), translate=0, cutout=8)
    assert ((holes == 0).all(dim=1).sum(dim=(1, 2)) == 64).all()


def test_tiny_cpu_run_writes_a_folder_the_library_loads(tree: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    code = train_main(["--data", str(tree), "--out", str(out), "--epochs", "1", "--batch-size", "64",
                       "--val-size", "50", "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--seed", "1"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "No GPU" in printed and "epoch   1/1" in printed and "test accuracy" in printed
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "config.json", "metrics.json", "README.md",
                                              "reliability.png", "example.jpg"}
    metrics = json.loads((out / "metrics.json").read_text())
    # calibrated on the 50 held-out pictures, and the temperature travels in config.json
    assert metrics["calibration_images"] == 50 and metrics["ece"] is not None
    assert json.loads((out / "config.json").read_text())["temperature"] == pytest.approx(metrics["temperature"])
    assert metrics["test_images"] == 100 and metrics["train_images"] == 250
    assert len(metrics["confusion_matrix"]) == 10 and sum(map(sum, metrics["confusion_matrix"])) == 100
    assert set(metrics["per_class_accuracy"]) == set(CLASSES)
    card = ModelCard.load(out / "README.md")
    result = card.data.eval_results[0]
    assert (result.metric_type, result.dataset_split) == ("accuracy", "test")
    assert result.metric_value == pytest.approx(metrics["test_accuracy"], abs=1e-4)
    assert "python -m train --data" in card.text and "Confusion matrix" in card.text
    clf = Classifier.from_pretrained(out)
    assert clf.info.metrics.test_accuracy == pytest.approx(metrics["test_accuracy"], abs=1e-4)
    assert clf.temperature == pytest.approx(metrics["temperature"])
    widget = card.data.widget[0]
    assert widget["src"] == "example.jpg" and len(widget["output"]) == 3
    probs = clf.predict(sorted(SAMPLE.glob("cat/*.jpg"))[:3])
    assert all(abs(sum(p.values()) - 1) < 1e-5 for p in probs)


def test_cli_flags_mirror_the_config() -> None:
    from train.__main__ import parse_args

    args = parse_args(["--epochs", "7", "--no-whiten", "--lr", "0.1"])
    assert (args.epochs, args.whiten, args.lr) == (7, False, 0.1)
    assert parse_args([]).epochs == TrainConfig().epochs
