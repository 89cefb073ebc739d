"""Weights folders: the ones we ship in weights/ (what their metrics claim, what they score on real
pictures), and the ones we must refuse (strict loading, safetensors only, config.json checked field by
field against the tensor shapes before anything is built)."""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from cifar_model import BUNDLED_WEIGHTS, CLASSES, Classifier, CifarCNN, ModelLoadError
from cifar_model.weights import CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE

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


# ---------------------------------------------------------------------------- the weights we ship

def test_bundled_folder_is_complete_and_consistent(clf: Classifier) -> None:
    assert {p.name for p in BUNDLED_WEIGHTS.iterdir()} >= {WEIGHTS_FILE, CONFIG_FILE, METRICS_FILE, "README.md"}
    metrics = json.loads((BUNDLED_WEIGHTS / METRICS_FILE).read_text())
    assert clf.info.source == "bundled" and clf.classes == list(CLASSES) and clf.info.warning is None
    assert clf.info.metrics.test_accuracy == pytest.approx(metrics["test_accuracy"], abs=1e-4)
    assert clf.info.metrics.test_accuracy >= 0.90  # the floor for the shipped weights
    assert clf.info.metrics.dataset == "CIFAR-10 test split (JPEG q75 copy)"
    assert clf.info.metrics.config["tta"] is True and clf.tta  # the card's rule is predict's rule


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

    from benchmarks.eval_weights import accuracy

    items = list(iter_split(DATA, "test"))
    assert len(items) == 10_000
    assert abs(accuracy(clf, items, batch=1000) - clf.info.metrics.test_accuracy) <= 0.005


# ---------------------------------------------------------------------------- folders we must refuse

@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A weights folder written by save_pretrained (seeded random weights) with the bundled metrics.json."""
    torch.manual_seed(0)
    CifarCNN().eval().save_pretrained(tmp_path / "w")
    shutil.copy(BUNDLED_WEIGHTS / METRICS_FILE, tmp_path / "w" / METRICS_FILE)
    return tmp_path / "w"


def edit_config(folder: Path, **changes) -> Path:
    """Rewrite the folder's config.json with ``changes`` (a value of ``...`` deletes the key)."""
    path = folder / CONFIG_FILE
    config = json.loads(path.read_text())
    for key, value in changes.items():
        config.pop(key) if value is ... else config.__setitem__(key, value)
    path.write_text(json.dumps(config))  # NaN and Infinity are written as JSON's common extension
    return path


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / WEIGHTS_FILE)


def test_a_save_pretrained_folder_loads_strictly_with_its_metrics(folder: Path) -> None:
    clf = Classifier.from_pretrained(folder)
    saved = tensors(folder)
    loaded = clf.model.state_dict()
    assert loaded.keys() == saved.keys() and all(torch.equal(loaded[k], v) for k, v in saved.items())
    assert clf.info.metrics.test_accuracy == pytest.approx(0.9122) and clf.info.source == str(folder)


def _missing(t: dict) -> str:
    del t["classifier.4.bias"]
    return "classifier.4.bias"


def _extra(t: dict) -> str:
    t["features.99.weight"] = torch.zeros(3)
    return "features.99.weight"


def _renamed(t: dict) -> str:
    t["backbone.0.weight"] = t.pop("features.0.weight")
    return "backbone.0.weight"


def _reshaped(t: dict) -> str:
    t["features.4.weight"] = torch.zeros(128, 64, 5, 5)  # a 5x5 convolution where the seed net has 3x3
    return "features.4.weight"


def _no_bn_counter(t: dict) -> str:  # a buffer counts as a tensor too: strict means every one
    del t["features.1.num_batches_tracked"]
    return "features.1.num_batches_tracked"


@pytest.mark.parametrize("damage", [_missing, _extra, _renamed, _reshaped, _no_bn_counter])
def test_strict_loading_refuses_a_missing_extra_or_misshapen_tensor(folder: Path, damage) -> None:
    t = tensors(folder)
    name = damage(t)
    save_file(t, folder / WEIGHTS_FILE)
    with pytest.raises(ModelLoadError, match=f"another architecture than CifarCNN .first difference: {name}"):
        Classifier.from_pretrained(folder)


def test_weights_for_more_classes_than_the_config_names(folder: Path) -> None:
    save_file(CifarCNN(classes=[*CLASSES, "extra"]).state_dict(), folder / WEIGHTS_FILE)
    with pytest.raises(ModelLoadError, match=f"{folder / CONFIG_FILE}: field 'classes' names 10 classes but"
                                             f" {folder / WEIGHTS_FILE} has 11 outputs"):
        Classifier.from_pretrained(folder)


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / WEIGHTS_FILE).unlink(), f"{WEIGHTS_FILE} is missing"),
    (lambda f: (f / CONFIG_FILE).unlink(), f"{CONFIG_FILE} is missing"),
    (lambda f: (f / WEIGHTS_FILE).write_bytes(os.urandom(4096)), "is not a readable safetensors file"),
    (lambda f: (f / WEIGHTS_FILE).write_bytes((f / WEIGHTS_FILE).read_bytes()[:-1000]),
     "is not a readable safetensors file|could not be loaded"),
], ids=["no-weights", "no-config", "random-bytes", "truncated"])
def test_a_missing_or_corrupt_file_is_named(folder: Path, damage, message: str) -> None:
    damage(folder)
    with pytest.raises(ModelLoadError, match=message) as err:
        Classifier.from_pretrained(folder)
    assert str(folder) in str(err.value)


class MaliciousPickle:
    """Unpickling this creates ``marker``: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.mark.parametrize("with_safetensors", [False, True], ids=["pickle-only", "pickle-beside-safetensors"])
def test_a_pickle_is_never_loaded(folder: Path, tmp_path: Path, with_safetensors: bool) -> None:
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(MaliciousPickle(control)))
    assert control.exists()  # the payload works: unpickling it does run code

    marker = tmp_path / "pwned"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(MaliciousPickle(marker)))
    if with_safetensors:
        assert Classifier.from_pretrained(folder).info.folder == folder
    else:  # no fallback to the pickle
        (folder / WEIGHTS_FILE).unlink()
        with pytest.raises(ModelLoadError, match=f"{folder / WEIGHTS_FILE} is missing"):
            Classifier.from_pretrained(folder)
    assert not marker.exists()


NAMES = [f"c{i}" for i in range(10)]
BAD_FIELDS = [
    ("classes", ["cat"] * 10), ("classes", []), ("classes", list(range(10))), ("classes", ["", *NAMES[1:]]),
    ("classes", "airplane"), ("classes", ...), ("classes", NAMES[:9]), ("classes", [*NAMES[:9], "x" * 65]),
    ("mean", [0.5, 0.5]), ("mean", [0.5, 0.5, "0.5"]), ("mean", [0.5, 0.5, math.nan]), ("mean", None),
    ("std", [0.2, 0.2, math.inf]), ("std", [0.2, 0.2, 0]), ("std", [0.2, -0.2, 0.2]), ("std", [True, 0.2, 0.2]),
    ("image_size", 64), ("image_size", "32"),
    ("temperature", 0), ("temperature", -1.0), ("temperature", math.nan), ("temperature", "1.0"),
    ("temperature", 1e9), ("dropout", 1.5),
]


@pytest.mark.parametrize("field, value", BAD_FIELDS, ids=[f"{f}={v!r:.20}" for f, v in BAD_FIELDS])
def test_each_bad_config_field_is_named(folder: Path, field: str, value) -> None:
    path = edit_config(folder, **{field: value})
    with pytest.raises(ModelLoadError, match=f"^{path}: field '{field}' "):
        Classifier.from_pretrained(folder)


@pytest.mark.parametrize("classes, message", [
    (300_000, "is larger than 64 KiB: not a CifarCNN config"),
    (1001, "field 'classes' must be a list of 2 to 1000 class names"),
    (1000, "field 'classes' names 1000 classes but .* has 10 outputs"),
])
def test_a_config_claiming_many_classes_costs_nothing(folder: Path, monkeypatch: pytest.MonkeyPatch,
                                                      classes: int, message: str) -> None:
    # A model for 300,000 classes would be 300 MB of weights; nothing may be built before the check.
    edit_config(folder, classes=[f"class{i}" for i in range(classes)])
    built: list[str] = []
    real_init = CifarCNN.__init__

    def spy(self, *args, **kwargs) -> None:
        real_init(self, *args, **kwargs)
        built.append(next(self.parameters()).device.type)

    monkeypatch.setattr(CifarCNN, "__init__", spy)
    tracemalloc.start()
    try:
        with pytest.raises(ModelLoadError, match=message):
            Classifier.from_pretrained(folder)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert built == [] and peak < 2_000_000


@pytest.mark.parametrize("content, message", [
    (b'["classes", "mean", "std"]', "must hold a JSON object, not list"),
    (b'{"classes": ' + b" " * 70_000 + b"[]}", "is larger than 64 KiB"),
    (b'{"classes": [', "is not valid JSON"),
    (b"\xff\xfe not utf-8", "is not valid JSON"),
], ids=["list", "over-64KiB", "cut-short", "binary"])
def test_a_config_that_is_not_a_small_json_object_is_refused(folder: Path, content: bytes, message: str) -> None:
    (folder / CONFIG_FILE).write_bytes(content)
    with pytest.raises(ModelLoadError, match=f"^{folder / CONFIG_FILE} {message}"):
        Classifier.from_pretrained(folder)
