"""The weights folder: config.json and metrics.json checked field by field (each refusal names the file and
the field), tensors loaded strictly from safetensors only and their shapes checked before anything is
allocated, model.onnx checked by sha256, a bad metrics.json costing only its figures, save/load round trips,
and the bundled weights/ complete and consistent."""

from __future__ import annotations

import hashlib
import json
import locale
import math
import os
import pickle
import tracemalloc
import warnings
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from cifar_model import CLASSES, CifarCNN, Config, Metrics, ModelLoadError, Weights, load, save
from cifar_model import weights as weights_module
from cifar_model.weights import read_record, write_record

BUNDLED = Path(__file__).resolve().parent.parent / "weights"
RAW_METRICS = json.loads((BUNDLED / "metrics.json").read_text())
CM = RAW_METRICS["confusion_matrix"]
SMALL_CONFIG = {"classes": ["cat", "dog", "frog"], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
FRACTION = "must be a fraction in [0, 1] (0.9 for 90%)"
UNDER_MUTMUT = "MUTANT_UNDER_TEST" in os.environ  # its trampolines add stack frames


def write_json(path: Path, raw: dict, **changes) -> Path:
    """``raw`` with ``changes`` (``...`` deletes a key) as JSON, NaN and Infinity as a careless writer writes them."""
    path.write_text(json.dumps({k: v for k, v in (raw | changes).items() if v is not ...}))
    return path


def refusal(cls, path: Path) -> str:
    with pytest.raises(ValueError) as err:
        read_record(cls, path)
    return str(err.value)


def knots(n: int) -> list[list[float]]:
    return [[(i + 1) / (n + 2)] * 2 for i in range(n)]


# ---------------------------------------------------------------------------- config.json

CONFIG_REFUSED = [
    ("classes", ..., "missing"),
    ("classes", "airplane", "must be a list"),
    ("classes", ["alone"], "must name 2 to 1000 classes"),
    ("classes", [f"c{i}" for i in range(1001)], "must name 2 to 1000 classes"),
    ("classes", ["x" * 65, "y"], "non-empty names of at most 64 characters"),
    ("classes", ["   ", "y"], "non-empty names of at most 64 characters"),
    ("classes[1]", ["x", 7], "must be a string, got int"),
    ("classes", ["x", "y", "x"], "must not repeat a name"),
    ("mean", [0.5, 0.5], "must be three numbers, one per colour channel"),
    ("mean", [0.5] * 4, "must be three numbers, one per colour channel"),
    ("mean", None, "must be a list"),
    ("mean[2]", [0.5, 0.5, "0.5"], "must be a finite number"),
    ("mean[2]", [0.5, 0.5, math.nan], "must be a finite number"),
    ("std", [0.25] * 4, "must be three numbers, one per colour channel"),
    ("std[0]", [True, 0.2, 0.2], "must be a finite number"),
    ("std", [0.2, 0, 0.2], "must be positive (it divides the pixels)"),
    ("std", [0.2, -1e-6, 0.2], "must be positive (it divides the pixels)"),
    ("temperature", 0.0099, "must be in [0.01, 100]"),
    ("temperature", 100.01, "must be in [0.01, 100]"),
    ("temperature", None, "must be a finite number"),
    ("top_label_map", [[0.2, 0.3]], "must be 2 to 1000 [x, y] pairs"),
    ("top_label_map", knots(1001), "must be 2 to 1000 [x, y] pairs"),
    ("top_label_map", [[0.2, 0.3, 0.4], [0.8, 0.9]], "must be 2 to 1000 [x, y] pairs"),
    ("top_label_map", [[0.2, 0.3], [0.2, 0.9]], "x must increase and y must not decrease"),
    ("top_label_map", [[0.2, 0.9], [0.8, 0.3]], "x must increase and y must not decrease"),
    ("top_label_map", [[0.0, 0.3], [0.8, 0.9]], "must hold numbers strictly between 0 and 1"),
    ("top_label_map", [[0.2, 0.3], [0.8, 1]], "must hold numbers strictly between 0 and 1"),
    ("top_label_map[0][1]", [[0.2, "0.3"], [0.8, 0.9]], "must be a finite number"),
    ("unsure_threshold", math.nan, "must be a finite number"),
    ("onnx_sha256", "0123456789abcdeX" * 4, "must be 64 lowercase hex digits"),
    ("onnx_sha256", "a" * 65, "must be 64 lowercase hex digits"),
    ("onnx_sha256", "A" * 64, "must be 64 lowercase hex digits"),
    ("onnx_sha256", 7, "must be a string"),
]


def test_config_edges_that_are_accepted_and_whole_numbers_read_as_floats() -> None:
    minimal = Config(["yes", "no"], [0, 1, 0], [1e-6, 2, 3])
    assert (minimal.temperature, minimal.top_label_map, minimal.unsure_threshold, minimal.onnx_sha256) == (
        1.0, None, None, None)
    assert minimal.mean == [0.0, 1.0, 0.0] and all(type(v) is float for v in minimal.mean + minimal.std)
    full = Config([f"k{i}" for i in range(1000)], [0.5] * 3, [0.25] * 3, temperature=100,
                  top_label_map=[[0.2, 0.3], [0.8, 0.3]], unsure_threshold=5, onnx_sha256="0123456789abcdef" * 4)
    assert (full.temperature, full.unsure_threshold, type(full.temperature), type(full.unsure_threshold)) == (
        100.0, 5.0, float, float) and full.top_label_map == [[0.2, 0.3], [0.8, 0.3]]  # y may stay flat
    assert Config(["x" * 64, "y"], [0.5] * 3, [0.25] * 3, temperature=0.01, top_label_map=knots(1000),
                  unsure_threshold=-3.5).unsure_threshold == -3.5


@pytest.mark.parametrize("content, problem", [
    (b"[1, 2]", "must hold a JSON object, not list"),
    (b"null", "must hold a JSON object, not NoneType"),
    (b'{"classes": [', "not a readable JSON file"),
    (b"", "not a readable JSON file"),
    (b"\xff\xfe not utf-8", "not a readable JSON file"),
    (b"[" * 100_000, "not a readable JSON file"),  # nested deeper than the parser goes
    (None, "not a readable JSON file"),  # no file at all
], ids=["list", "null", "cut-short", "empty", "binary", "deep", "absent"])
def test_a_record_that_is_not_a_json_object_is_refused(tmp_path: Path, content: bytes | None, problem: str) -> None:
    path = tmp_path / "config.json"
    if content is not None:
        path.write_bytes(content)
    assert refusal(Config, path).startswith(f"{path}: {problem}")


def test_a_record_of_exactly_a_million_bytes_is_read_and_one_more_is_refused(tmp_path: Path) -> None:
    path = write_json(tmp_path / "config.json", SMALL_CONFIG)
    text = path.read_text()
    path.write_text(text + " " * (1_000_000 - len(text)))
    assert read_record(Config, path).classes == ["cat", "dog", "frog"]
    path.write_text(text + " " * (1_000_001 - len(text)))
    assert refusal(Config, path) == f"{path}: not a readable JSON file (larger than 1,000,000 bytes)"


def test_a_utf8_record_is_read_whatever_the_locale(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(json.dumps(SMALL_CONFIG | {"classes": ["café", "thé"]}, ensure_ascii=False).encode())
    old = locale.setlocale(locale.LC_CTYPE)
    try:
        locale.setlocale(locale.LC_CTYPE, "C")  # an ASCII locale, as on many servers and Windows set-ups
        assert read_record(Config, path).classes == ["café", "thé"]
    finally:
        locale.setlocale(locale.LC_CTYPE, old)


# ---------------------------------------------------------------------------- metrics.json

PER_CLASS = RAW_METRICS["per_class_accuracy"]
METRICS_REFUSED = [
    ("test_accuracy, hardware", {"test_accuracy": ..., "hardware": ...}, "missing"),
    ("test_accuracy", {"test_accuracy": "0.9"}, "must be a finite number"),
    ("test_accuracy", {"test_accuracy": True}, "must be a finite number"),
    ("test_accuracy", {"test_accuracy": 91.2}, FRACTION),  # a percentage
    ("val_accuracy", {"val_accuracy": -0.1}, FRACTION),
    ("unsure_rate", {"unsure_rate": 1.01}, FRACTION),
    ("per_class_accuracy", {"per_class_accuracy": PER_CLASS | {"cat": 81.9}}, FRACTION),
    ("per_class_accuracy['cat']", {"per_class_accuracy": PER_CLASS | {"cat": "0.8"}}, "must be a finite number"),
    ("per_class_accuracy", {"per_class_accuracy": [0.9] * 10}, "must be an object"),
    ("test_images", {"test_images": -1}, "must be a whole number >= 0"),
    ("train_images", {"train_images": 4.5e4}, "must be a whole number >= 0"),
    ("skipped_images", {"skipped_images": True}, "must be a whole number >= 0"),
    ("confusion_matrix[0][0]", {"confusion_matrix": [[936.0, *CM[0][1:]], *CM[1:]]}, "must be a whole number >= 0"),
    ("confusion_matrix", {"confusion_matrix": CM[:9]}, "must be 10 x 10, one row and column per class"),
    ("confusion_matrix", {"confusion_matrix": [[*CM[0][:8], CM[0][8] + CM[0][9]], *CM[1:]]},
     "must be 10 x 10, one row and column per class"),
    ("confusion_matrix", {"test_images": 10_001}, "its counts must add up to test_images"),
    ("val_accuracy", {"val_images": 0}, "given, but val_images is 0 (nothing held out)"),
    ("dataset", {"dataset": 10}, "must be a string"),
    ("config", {"config": "lr=0.4"}, "must be an object"),
    ("history", {"history": "x"}, "must be a list, got str"),
    ("history[1]", {"history": [{}, 2]}, "must be an object"),
    ("train_seconds", {"train_seconds": -1}, "must be >= 0"),
    ("nll", {"nll": math.inf}, "must be a finite number"),
    ("reliability", {"reliability": [[1.0, 0.5, 0.5], [1.0, -0.5, 0.5]]}, "must be >= 0"),
    ("temperature", {"temperature": 0.0}, "must be > 0"),
]

REFUSED = [(Config, f, {f.split("[")[0]: v}, p) for f, v, p in CONFIG_REFUSED] + [
    (Metrics, f, c, p) for f, c, p in METRICS_REFUSED]


@pytest.mark.parametrize("cls, field, changes, problem", REFUSED,
                         ids=[f"{f}={list(c.values())[0]!r:.20}" for _, f, c, _ in REFUSED])
def test_each_bad_field_is_named_with_the_file(tmp_path: Path, cls, field: str, changes: dict, problem: str) -> None:
    base, name = (SMALL_CONFIG, "config.json") if cls is Config else (RAW_METRICS, "metrics.json")
    path = write_json(tmp_path / name, base, **changes)
    with pytest.raises(ValueError) as err:
        read_record(cls, path)
    message = str(err.value)  # the file, then the field, then the problem (and the value it echoes, if any)
    assert message.startswith(f"{path}: {field}") and (message.endswith(problem) or f"{problem}, got " in message)


def test_metrics_edges_that_are_accepted(tmp_path: Path) -> None:
    # 0 where negatives are refused, 1 where fractions end, nothing held out, whole numbers, keys added later.
    path = write_json(tmp_path / "metrics.json", RAW_METRICS, train_seconds=32, nll=0, ece=0, test_accuracy=0,
                      sure_accuracy=1, per_class_accuracy=dict.fromkeys(PER_CLASS, 1.0), val_accuracy=None,
                      val_images=0, skipped_images=0, added_later=[1, 2])
    m = read_record(Metrics, path)
    assert (m.train_seconds, m.nll, m.ece, m.test_accuracy, m.sure_accuracy) == (32.0, 0.0, 0.0, 0.0, 1.0)
    assert type(m.train_seconds) is float and type(m.test_accuracy) is float
    assert (m.val_accuracy, m.val_images, m.skipped_images) == (None, 0, 0)


def test_metrics_round_trip_exactly(tmp_path: Path) -> None:
    raw = RAW_METRICS | {"repo_id": "someone/cifar10", "command": "python -m train --epochs 2", "skipped_images": 3,
                         "dataset": "CIFAR-10 — café"}
    m = Metrics(**raw)
    write_record(m, tmp_path / "metrics.json")
    text = (tmp_path / "metrics.json").read_text()
    assert text.startswith(f'{{\n  "test_accuracy": {m.test_accuracy},\n  "test_images": {m.test_images},\n')
    assert text.endswith("\n}\n")
    back = read_record(Metrics, tmp_path / "metrics.json")
    assert back == m and asdict(back) == json.loads(text) == raw
    write_record(back, tmp_path / "again.json")
    assert (tmp_path / "again.json").read_text() == text


# ---------------------------------------------------------------------------- the bundled folder

def test_the_bundled_folder_is_complete_and_consistent() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # its metrics.json is good
        w = load()
    names = {p.name for p in BUNDLED.iterdir()}
    assert names >= {"config.json", "model.safetensors", "metrics.json", "example.jpg", "README.md"}
    assert (w.source, w.label, w.folder, w.revision, w.warning) == ("bundled", "bundled weights/", BUNDLED, None, None)
    assert w.config.classes == list(CLASSES) and not w.model.training
    m = w.metrics
    assert asdict(m) == RAW_METRICS and list(m.per_class_accuracy) == list(CLASSES)
    for i, name in enumerate(CLASSES):  # the per-class figures are the confusion matrix's
        assert m.per_class_accuracy[name] == pytest.approx(m.confusion_matrix[i][i] / sum(m.confusion_matrix[i]))
    assert m.test_accuracy == pytest.approx(sum(m.confusion_matrix[i][i] for i in range(10)) / m.test_images)
    assert m.temperature == w.config.temperature and m.parameters == sum(p.numel() for p in w.model.parameters())
    for name, record in (("config.json", w.config), ("metrics.json", m)):  # as write_record writes them
        assert (BUNDLED / name).read_text() == json.dumps(asdict(record), indent=2) + "\n"
    assert Image.open(BUNDLED / "example.jpg").size[0] > 0
    assert w.file("README.md") == BUNDLED / "README.md" and w.file("nothing.txt") is None
    if w.config.onnx_sha256 is None:
        assert w.file("model.onnx") is None
    else:  # the browser's copy of this very network
        assert w.file("model.onnx") == BUNDLED / "model.onnx"
        assert hashlib.sha256((BUNDLED / "model.onnx").read_bytes()).hexdigest() == w.config.onnx_sha256


# ---------------------------------------------------------------------------- save and load

@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The device of every CifarCNN built from now on ("meta" allocates nothing)."""
    devices: list[str] = []
    init = CifarCNN.__init__

    def spy(self, *args, **kwargs) -> None:
        init(self, *args, **kwargs)
        devices.append(next(self.parameters()).device.type)

    monkeypatch.setattr(CifarCNN, "__init__", spy)
    return devices


def test_save_then_load_gives_the_same_network_and_config(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = CifarCNN(3).eval()
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # buffers travel too
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.num_batches_tracked.fill_(7)
    config = Config(["cat", "dog", "frog"], [0.4, 0.5, 0.6], [0.2, 0.25, 0.3], temperature=0.7,
                    top_label_map=[[0.2, 0.25], [0.9, 0.8]], unsure_threshold=-3.0)
    folder = tmp_path / "runs" / "one"
    save(folder, CifarCNN(3), Config(["a", "b", "c"], [0.5] * 3, [0.25] * 3))
    save(folder, model, config)  # overwrites in place
    assert json.loads((folder / "config.json").read_text()) == {
        "classes": ["cat", "dog", "frog"], "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3], "temperature": 0.7,
        "top_label_map": [[0.2, 0.25], [0.9, 0.8]], "unsure_threshold": -3.0, "onnx_sha256": None}
    w = load(folder)
    assert w.config == config and (w.source, w.label, w.folder, w.revision) == (str(folder), str(folder), folder, None)
    assert (w.metrics, w.warning) == (None, None) and not w.model.training
    saved, loaded = model.state_dict(), w.model.state_dict()
    assert saved.keys() == loaded.keys() and all(torch.equal(saved[k], loaded[k]) for k in saved)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(w.model(x), model(x), atol=1e-5)
    in_memory = Weights(model, config)
    assert in_memory.label == "in-memory" and in_memory.file("config.json") is None


# ---------------------------------------------------------------------------- hostile folders

@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The bundled folder's config.json and metrics.json, copied; its tensors linked (never written through)."""
    f = tmp_path / "w"
    f.mkdir()
    for name in ("config.json", "metrics.json"):
        (f / name).write_bytes((BUNDLED / name).read_bytes())
    (f / "model.safetensors").symlink_to(BUNDLED / "model.safetensors")
    return f


def replace_file(path: Path, data: bytes | dict) -> None:
    """Write ``data`` (bytes, or tensors) at ``path`` after unlinking it: never into the bundled file."""
    path.unlink(missing_ok=True)
    path.write_bytes(data) if isinstance(data, bytes) else save_file(data, path)


def load_error(folder: Path) -> str:
    with pytest.raises(ModelLoadError) as err:
        load(folder)
    return str(err.value)


@pytest.mark.parametrize("damage, says, allocated", [
    (lambda t: t.pop("classifier.4.bias"), "first difference: classifier.4.bias)", ["meta"]),
    (lambda t: t.update({"features.99.weight": torch.zeros(3)}), "first difference: features.99.weight)", ["meta"]),
    (lambda t: t.update({"backbone.0.weight": t.pop("features.0.weight")}), "first difference: backbone.0.weight)",
     ["meta"]),
    (lambda t: t.pop("features.1.num_batches_tracked"), "first difference: features.1.num_batches_tracked)",
     ["meta"]),  # buffers count too
    (lambda t: t.update({"features.4.weight": torch.zeros(128, 64, 5, 5)}), "first difference: features.4.weight)",
     ["meta"]),  # a 5x5 convolution where the network has 3x3
    (lambda t: t.update(CifarCNN(11).state_dict()), "names 10 classes but {weights} has 11 outputs.", []),
    (lambda t: t.pop("classifier.4.weight"), "names 10 classes but {weights} has None outputs.", []),
], ids=["missing", "extra", "renamed", "no-bn-counter", "reshaped", "11-outputs", "no-outputs"])
def test_strict_loading_refuses_other_tensors_before_allocating_any(folder: Path, built: list[str], damage,
                                                                    says: str, allocated: list[str]) -> None:
    tensors = load_file(BUNDLED / "model.safetensors")
    damage(tensors)
    replace_file(folder / "model.safetensors", tensors)
    built.clear()
    message = load_error(folder)
    assert message.startswith(f"{folder / ('model.safetensors' if allocated else 'config.json')}")
    assert says.format(weights=folder / "model.safetensors") in message
    assert built == allocated  # "meta": the expected shapes came from a network without storage


@pytest.mark.parametrize("n, problem", [
    (300_000, "config.json: not a readable JSON file (larger than 1,000,000 bytes)"),
    (1001, "config.json: classes: must name 2 to 1000 classes"),
    (1000, "config.json: field 'classes' names 1000 classes but"),
])
def test_a_config_claiming_many_classes_costs_nothing(folder: Path, built: list[str], n: int, problem: str) -> None:
    # A network for 300,000 classes would be 300 MB: nothing may be built or read before the checks.
    write_json(folder / "config.json", json.loads((folder / "config.json").read_text()),
               classes=[f"class{i}" for i in range(n)])
    tracemalloc.start()
    try:
        message = load_error(folder)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert message.startswith(str(folder)) and problem in message
    assert built == [] and peak < 2_000_000


MISSING = " is missing: a weights folder needs config.json and model.safetensors."


@pytest.mark.parametrize("damage, name, problem", [
    (lambda f: (f / "model.safetensors").unlink(), "model.safetensors", MISSING),
    (lambda f: (f / "config.json").unlink(), "config.json", MISSING),
    (lambda f: (f / "config.json").unlink() or (f / "config.json").mkdir(), "config.json", MISSING),
    (lambda f: replace_file(f / "model.safetensors", bytes(range(256)) * 16), "model.safetensors",
     " is not a readable safetensors file: "),
    (lambda f: replace_file(f / "model.safetensors", (BUNDLED / "model.safetensors").read_bytes()[:-1000]),
     "model.safetensors", " is not a readable safetensors file: "),
    (lambda f: (f / "config.json").write_text('{"classes": ["cat", "cat"], "mean": [0, 0, 0], "std": [1, 1, 1]}'),
     "config.json", ": classes: must not repeat a name"),
], ids=["no-weights", "no-config", "config-is-a-folder", "garbage", "truncated", "bad-config"])
def test_a_missing_or_corrupt_file_is_named(folder: Path, damage, name: str, problem: str) -> None:
    damage(folder)
    assert load_error(folder).startswith(f"{folder / name}{problem}")


def test_a_failure_while_reading_the_tensors_names_the_file_and_the_first_line_of_the_cause(
        folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The header passed every check; then the read fails (a disk error, the file replaced meanwhile).
    def failing(model, filename, strict=True):
        raise OSError("Input/output error\nsecond line of detail")

    monkeypatch.setattr(weights_module, "load_model", failing)
    assert load_error(folder) == f"{folder / 'model.safetensors'} could not be loaded: Input/output error"


class MaliciousPickle:
    """Unpickling this creates ``marker``: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.mark.parametrize("with_safetensors", [False, True], ids=["pickle-only", "pickle-beside-safetensors"])
def test_a_pickle_is_never_loaded(folder: Path, tmp_path: Path, with_safetensors: bool) -> None:
    pickle.loads(pickle.dumps(MaliciousPickle(tmp_path / "control")))
    assert (tmp_path / "control").exists()  # the payload works: unpickling it does run code
    for name in ("pytorch_model.bin", "model.pt", "model.pkl"):
        (folder / name).write_bytes(pickle.dumps(MaliciousPickle(tmp_path / "pwned")))
    if with_safetensors:
        assert load(folder).folder == folder
    else:  # no fallback to a pickle
        (folder / "model.safetensors").unlink()
        assert load_error(folder).startswith(f"{folder / 'model.safetensors'} is missing")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("content, problem", [
    ('{"test_accuracy": 0.9, ', "metrics.json: not a readable JSON file"),
    (json.dumps(RAW_METRICS | {"test_accuracy": "91%"}), "metrics.json: test_accuracy: must be a finite number"),
    ('{"test_accuracy": 2.0}', "metrics.json: test_images, "),
], ids=["not-json", "percent", "missing-fields"])
def test_a_bad_metrics_file_costs_only_its_figures(folder: Path, content: str, problem: str) -> None:
    (folder / "metrics.json").write_text(content)
    with pytest.warns(UserWarning) as caught:
        w = load(folder)  # the warning points here, at the line that loaded
    [warning] = caught
    assert w.metrics is None and w.config.classes == list(CLASSES) and w.source == str(folder)
    assert str(warning.message) == w.warning and w.warning.startswith(f"metrics.json ignored: {problem}")
    assert str(folder) not in w.warning  # the file's name, not the server's path to it
    if not UNDER_MUTMUT:
        assert warning.filename == __file__


@pytest.mark.parametrize("size, sha, outcome", [
    (100, "its own", "served"),
    (100, "another", "refused"),
    (None, "its own", "not served"),  # no browser copy: the live tab runs on the server
    (100, None, "not served"),  # a copy the config doesn't vouch for is never handed out
    (64 * 2**20, "its own", "served"),  # the size limit
    (64 * 2**20 + 1, "its own", "refused"),  # one byte more: not even hashed
], ids=["matches", "differs", "absent", "unvouched", "64-MiB", "64-MiB-and-1"])
def test_model_onnx_is_handed_out_only_when_its_sha256_is_the_configs(folder: Path, size, sha, outcome) -> None:
    zeros = bytes(size or 0)
    digest = {"its own": hashlib.sha256(zeros).hexdigest(), "another": hashlib.sha256(b"other").hexdigest()}
    write_json(folder / "config.json", json.loads((folder / "config.json").read_text()), onnx_sha256=digest.get(sha))
    if size is not None:
        with open(folder / "model.onnx", "wb") as f:
            f.truncate(size)  # zeros, without writing them
    if outcome == "refused":
        message = load_error(folder)
        assert message.startswith(f"{folder / 'model.onnx'} is not the network config.json describes")
        assert "'onnx_sha256'" in message and message.endswith("export it again from these weights.")
    else:
        assert load(folder).file("model.onnx") == (folder / "model.onnx" if outcome == "served" else None)
