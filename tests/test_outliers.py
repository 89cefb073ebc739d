"""Outlier exposure (train/finetune.py): fine-tuning pushes pictures of other things towards "unsure" while
BatchNorm keeps the training pictures' statistics, and ``python -m train.finetune`` writes a folder that says
how it was made and how often its rule flags the sets it was asked to score."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from cifar_model import CIFAR_MEAN, CIFAR_STD, CLASSES, Classifier, load, normalize, to_uint8
from cifar_model.classifier import unsure_score
from train import data as datasets
from train import finetune as ft

WEIGHTS = Path(__file__).parent.parent / "weights"
SAMPLE = Path(__file__).parent / "data" / "cifar10-test-sample"


def _sample() -> tuple[np.ndarray, np.ndarray]:
    files = sorted(SAMPLE.glob("*/*.jpg"))
    return np.stack([to_uint8(f) for f in files]), np.array([CLASSES.index(f.parent.name) for f in files])


def _noise(n: int, seed: int = 0) -> np.ndarray:
    """Smooth coloured noise: blobs no CIFAR-10 class looks like."""
    coarse = np.random.default_rng(seed).integers(0, 256, (n, 4, 4, 3), dtype=np.uint8)
    return np.stack([np.asarray(torch.nn.functional.interpolate(torch.from_numpy(c).permute(2, 0, 1)[None].float(),
                                                                 size=32, mode="bilinear")[0].permute(1, 2, 0))
                     for c in coarse]).astype(np.uint8)


@torch.inference_mode()
def _energy(net: torch.nn.Module, pixels: np.ndarray) -> np.ndarray:
    z = net(normalize(torch.from_numpy(pixels), CIFAR_MEAN, CIFAR_STD))
    return unsure_score(z.float()).numpy()


def test_outlier_exposure_makes_other_pictures_unsure_and_leaves_batchnorm_alone():
    pictures, labels = _sample()
    outliers, held_out = _noise(200), _noise(100, seed=1)
    gaps = {}
    for lam in (0.0, 1.0):  # the same run without and with the outliers' loss
        net = load(WEIGHTS).model
        bn_before = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
        ft.finetune(net, pictures, labels, outliers, epochs=3, lr=0.01, lam=lam, batch=64, log=lambda _: None)
        gaps[lam] = _energy(net, held_out).mean() - _energy(net, pictures).mean()
        assert all(torch.equal(net.state_dict()[k], v) for k, v in bn_before.items()) and not net.training
    assert gaps[1.0] > gaps[0.0] + 0.15  # unseen noise moved towards "unsure", relative to CIFAR-10 pictures


def test_the_command_writes_a_folder_that_says_how_it_was_made(tmp_path, monkeypatch, capsys):
    start = tmp_path / "start"
    shutil.copytree(WEIGHTS, start)
    metrics = json.loads((start / "metrics.json").read_text())
    metrics["config"]["val_size"] = 100  # the sample holds 500 pictures, not 50,000
    (start / "metrics.json").write_text(json.dumps(metrics))
    pictures, labels = _sample()
    sample = datasets.Cifar(pictures, labels, pictures, labels, list(CLASSES), "the committed sample")
    monkeypatch.setattr(ft.datasets, "load", lambda spec: sample)
    np.savez(tmp_path / "pool.npz", images=_noise(64))
    np.savez(tmp_path / "noise.npz", images=_noise(40, seed=2))
    argv = [str(start), "--data", "sample", "--outliers", str(tmp_path / "pool.npz"), "--out", str(tmp_path / "out"),
            "--epochs", "0", "--blend", "0", "--score", f"noise={tmp_path / 'noise.npz'}"]
    assert ft.main(argv) == 0
    assert "test accuracy" in capsys.readouterr().out
    clf = Classifier.from_pretrained(tmp_path / "out")
    got, m = clf.weights.model.state_dict(), clf.weights.metrics
    assert all(torch.equal(got[k], v) for k, v in load(start).model.state_dict().items())  # blend 0: the start
    assert m.finetune["command"] == "python -m train.finetune " + " ".join(argv)
    assert (m.finetune["started_from"], m.finetune["outlier_pictures"]) == (str(start), 64)
    assert m.outliers_pictures == {"noise": 40} and 0 <= m.outliers_flagged["noise"] <= 1
    flagged = np.mean([a.unsure for a in clf.answer(np.load(tmp_path / "noise.npz")["images"])])
    assert m.outliers_flagged["noise"] == flagged  # what the folder's own rule does to those pictures
    assert m.test_images == 500 and clf.weights.file("model.onnx") is not None
