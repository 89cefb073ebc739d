"""Edges of cifar_model.metrics that the mutation run showed untested: exact warning texts, range
edges, fractions inside containers, the confusion-matrix shape, the size limit, utf-8, legacy files."""

from __future__ import annotations

import json
import locale
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from cifar_model import metrics
from cifar_model.metrics import Metrics

BUNDLED = Path(__file__).resolve().parent.parent / "weights" / "metrics.json"


@pytest.fixture(scope="module")
def base() -> Metrics:
    return Metrics.load(BUNDLED)


def raw_of(m: Metrics, **changes) -> dict:
    return asdict(m) | changes


def write(tmp_path: Path, raw, name: str = "metrics.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(raw))
    return path


def load_error(path: Path) -> str:
    with pytest.raises(ValueError) as err:
        Metrics.load(path)
    return str(err.value)


# --- exact messages (the app shows them as "metrics.json ignored: ...") -----------------------------

@pytest.mark.parametrize("field, value, message", [
    ("test_accuracy", "x", "test_accuracy: must be a number, got str 'x'"),
    ("test_images", "x", "test_images: must be a whole number >= 0, got str 'x'"),
    ("dataset", 10, "dataset: must be a string, got int"),
    ("history", "x", "history: must be a list, got str"),
    ("config", "lr=0.4", "config: must be an object, got str"),
    ("test_accuracy", 1.5, "test_accuracy: must be a fraction in [0, 1] (0.9 for 90%), got 1.5"),
    ("val_accuracy", 1.5, "val_accuracy: must be a fraction in [0, 1] (0.9 for 90%), got 1.5"),
    ("ece", 1.5, "ece: must be a fraction in [0, 1] (0.9 for 90%), got 1.5"),
    ("train_seconds", -1, "train_seconds: must be a finite number >= 0, got -1.0"),
])
def test_load_reports_the_exact_reason(tmp_path, base, field, value, message):
    path = write(tmp_path, raw_of(base, **{field: value}))
    assert load_error(path) == f"{path}: {message}"


def test_not_an_object_names_its_type(tmp_path):
    path = write(tmp_path, [0.9, 0.8])
    assert load_error(path) == f"{path}: must hold a JSON object, not list"


def test_counts_not_adding_up_message(tmp_path, base):
    path = write(tmp_path, raw_of(base, test_images=base.test_images + 1))
    assert load_error(path) == f"{path}: confusion_matrix: its counts must add up to test_images"


def test_val_accuracy_without_val_images_message(base):
    with pytest.raises(ValueError) as err:
        replace(base, val_images=0)
    assert str(err.value) == "val_accuracy: given, but val_images is 0 (nothing held out)"


def test_dict_key_of_wrong_type_is_named(base):
    per_class = {**base.per_class_accuracy}
    per_class[7] = per_class.pop("horse")
    with pytest.raises(ValueError) as err:
        replace(base, per_class_accuracy=per_class)
    assert str(err.value) == "per_class_accuracy key: must be a string, got int"


# --- edges: accepted or refused ----------------------------------------------------------------------

def test_zero_is_accepted_where_negatives_are_refused(base):
    m = replace(base, train_seconds=0, nll=0.0, ece=0.0, test_accuracy=0)
    assert (m.train_seconds, m.nll, m.ece, m.test_accuracy) == (0.0, 0.0, 0.0, 0.0)


def test_exactly_one_is_a_valid_fraction(base):
    per_class = dict.fromkeys(base.per_class_accuracy, 1.0)
    m = replace(base, test_accuracy=1.0, val_accuracy=1.0, ece=1.0, per_class_accuracy=per_class)
    assert (m.test_accuracy, m.val_accuracy, m.ece) == (1.0, 1.0, 1.0)
    assert set(m.per_class_accuracy.values()) == {1.0}


def test_a_fraction_inside_a_dict_is_checked_as_a_fraction(tmp_path, base):
    path = write(tmp_path, raw_of(base, per_class_accuracy={**base.per_class_accuracy, "cat": 1.5}))
    assert load_error(path) == (f"{path}: per_class_accuracy['cat']: must be a fraction in [0, 1] (0.9 for 90%), "
                                "got 1.5")


def test_optional_fractions_are_checked_as_fractions(base):
    for field in ("val_accuracy", "ece_uncalibrated"):
        with pytest.raises(ValueError, match=rf"^{field}: must be a fraction in \[0, 1\]"):
            replace(base, **{field: 1.5})
    assert replace(base, nll=1.5).nll == 1.5  # not a fraction: above 1 is fine


def test_rows_of_the_wrong_length_are_refused(tmp_path, base):
    matrix = [list(row) for row in base.confusion_matrix]
    matrix[0] = matrix[0][:-2] + [matrix[0][-2] + matrix[0][-1]]  # 10 rows, first has 9 columns, same total
    path = write(tmp_path, raw_of(base, confusion_matrix=matrix))
    assert load_error(path) == f"{path}: confusion_matrix: must be 10 x 10, one row and column per class"


# --- the size limit ------------------------------------------------------------------------------------

def test_a_file_of_exactly_max_bytes_is_read(tmp_path, base, monkeypatch):
    text = json.dumps(asdict(base))
    size = len(text.encode()) + 100
    monkeypatch.setattr(metrics, "MAX_BYTES", size)
    exact = tmp_path / "exact.json"
    exact.write_text(text + " " * 100)
    assert exact.stat().st_size == size
    assert Metrics.load(exact) == base
    over = tmp_path / "over.json"
    over.write_text(text + " " * 101)
    assert load_error(over) == f"{over}: not a readable JSON file (larger than {size:,} bytes)"


# --- text encoding -------------------------------------------------------------------------------------

def test_non_ascii_round_trips(tmp_path, base):
    m = replace(base, dataset="CIFAR-10 — café", hardware="GPU «test» ü")
    m.save(tmp_path / "m.json")
    assert Metrics.load(tmp_path / "m.json") == m


@pytest.fixture
def ascii_locale():
    """A process whose locale is not UTF-8 (like many Windows set-ups); restores the locale after."""
    if sys.flags.utf8_mode:
        pytest.skip("Python runs in UTF-8 mode: the locale does not decide the default encoding")
    old = locale.setlocale(locale.LC_CTYPE)
    try:
        locale.setlocale(locale.LC_CTYPE, "C")
        if locale.getpreferredencoding(False).lower().replace("-", "") in {"utf8"}:
            pytest.skip("the C locale is UTF-8 here")
        yield
    finally:
        locale.setlocale(locale.LC_CTYPE, old)


def test_utf8_file_is_read_whatever_the_locale(tmp_path, base, ascii_locale):
    m = replace(base, dataset="CIFAR-10 — café")
    path = tmp_path / "m.json"
    path.write_bytes(json.dumps(asdict(m), ensure_ascii=False).encode("utf-8"))  # raw UTF-8, as other tools write
    assert Metrics.load(path).dataset == "CIFAR-10 — café"


# --- files written before val_images existed --------------------------------------------------------

def _legacy(base: Metrics, **changes) -> dict:
    raw = raw_of(base, **changes)
    del raw["val_images"]
    return raw


def test_legacy_file_takes_val_images_from_config(tmp_path, base):
    raw = _legacy(base, config={**base.config, "val_size": 4321})
    assert Metrics.load(write(tmp_path, raw)).val_images == 4321


def test_val_images_given_is_kept(tmp_path, base):
    raw = raw_of(base, val_images=3000, config={**base.config, "val_size": 4321})
    assert Metrics.load(write(tmp_path, raw)).val_images == 3000


def test_no_val_accuracy_takes_nothing_from_config(tmp_path, base):
    raw = _legacy(base, val_accuracy=None, config={**base.config, "val_size": 4321})
    m = Metrics.load(write(tmp_path, raw))
    assert (m.val_accuracy, m.val_images) == (None, 0)
