"""Behaviour of cifar_model.weights that mutation testing (python -m benchmarks.mutation) found
unchecked: what ``check_config`` accepts at the edges of each field and what it hands the model, and
where ``resolve`` looks for a source (the bundled folder, a local folder, a file, a repo id)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from cifar_model import CifarCNN, weights
from cifar_model.weights import ModelLoadError, check_config, resolve

NAMES = [f"c{i}" for i in range(10)]
GOOD = {"classes": NAMES, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


def config(**changes) -> dict:
    out = {k: list(v) for k, v in GOOD.items()}
    for key, value in changes.items():
        out.pop(key) if value is ... else out.__setitem__(key, value)
    return out


def refused(field: str, **changes) -> str:
    """check_config's whole message for ``changes``, which it must refuse naming ``field``, less the
    ``where/config.json: field '...' `` it starts with and the full stop it ends with."""
    with pytest.raises(ModelLoadError) as err:
        check_config(config(**changes), "where/config.json")
    head = f"where/config.json: field '{field}' "
    assert str(err.value).startswith(head) and str(err.value).endswith(".")
    return str(err.value)[len(head):-1]


# --- check_config -----------------------------------------------------------------------------------


def test_a_minimal_config_gets_the_defaults() -> None:
    assert check_config(config()) == {"classes": NAMES, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
                                      "image_size": 32, "dropout": 0.0, "temperature": 1.0,
                                      "unfamiliar_below": None}


def test_the_values_handed_on_are_floats() -> None:
    kwargs = check_config(config(mean=[0, 1, 0], std=[1, 2, 3], image_size=32, dropout=0, temperature=2,
                                 top_label_map=[[0.2, 0.3], [0.8, 0.9]], unfamiliar_below=5))
    for key in ("mean", "std"):
        assert all(type(v) is float for v in kwargs[key])
    assert type(kwargs["dropout"]) is float and type(kwargs["temperature"]) is float
    assert type(kwargs["unfamiliar_below"]) is float and kwargs["unfamiliar_below"] == 5.0
    assert kwargs["top_label_map"] == [[0.2, 0.3], [0.8, 0.9]]
    assert all(type(v) is float for pair in kwargs["top_label_map"] for v in pair)
    assert kwargs["mean"] == [0.0, 1.0, 0.0] and kwargs["std"] == [1.0, 2.0, 3.0] and kwargs["temperature"] == 2.0


def test_class_lists_at_the_edges() -> None:
    assert check_config(config(classes=["yes", "no"]))["classes"] == ["yes", "no"]
    many = [f"k{i}" for i in range(1000)]
    assert check_config(config(classes=many))["classes"] == many
    assert "must be a list of 2 to 1000 class names" == refused("classes", classes=["alone"])
    assert "must be a list of 2 to 1000 class names" == refused("classes", classes=many + ["one more"])
    assert "must be a list of 2 to 1000 class names" == refused("classes", classes=None)
    assert "must be a list of 2 to 1000 class names" == refused("classes", classes=...)
    assert "must be a list of 2 to 1000 class names" == refused("classes", classes={"a": 1, "b": 2})


def test_class_names_at_the_edges() -> None:
    long = "x" * 64
    assert check_config(config(classes=[long, "y"]))["classes"] == [long, "y"]
    assert "must hold non-empty strings of at most 64 characters" == refused("classes", classes=[long + "x", "y"])
    assert "must hold non-empty strings of at most 64 characters" == refused("classes", classes=["   ", "y"])
    assert "must hold non-empty strings of at most 64 characters" == refused("classes", classes=["x", 7])
    assert "must not repeat a name" == refused("classes", classes=["x", "y", "x"])


@pytest.mark.parametrize("field", ["mean", "std"])
def test_mean_and_std_must_be_three_finite_numbers(field: str) -> None:
    for bad in ([0.5] * 4, [0.5] * 2, (0.5, 0.5, 0.5), [0.5, 0.5, math.inf], [0.5, 0.5, None], [0.5, 0.5, False]):
        assert "must be a list of three finite numbers" == refused(field, **{field: bad})


def test_std_must_be_positive_however_small() -> None:
    assert check_config(config(std=[1e-6, 0.2, 0.2]))["std"] == [1e-6, 0.2, 0.2]
    assert "must be positive (it divides the pixels)" == refused("std", std=[0.2, 0.0, 0.2])
    assert "must be positive (it divides the pixels)" == refused("std", std=[0.2, 0.2, -1e-6])


def test_image_size_is_32_or_nothing() -> None:
    assert check_config(config(image_size=32))["image_size"] == 32
    assert check_config(config(image_size=32.0))["image_size"] == 32
    for bad in (31, 33, 0, True, None, "32"):
        assert "must be 32: the network's no-padding convolutions need it" == refused("image_size", image_size=bad)


def test_dropout_is_in_zero_to_one() -> None:
    assert check_config(config(dropout=0))["dropout"] == 0.0
    assert check_config(config(dropout=0.999))["dropout"] == 0.999
    for bad in (1, 1.0, -0.01, math.nan, True, "0.1", None):
        assert "must be a number in [0, 1)" == refused("dropout", dropout=bad)


def test_temperature_is_within_fit_temperatures_range() -> None:
    assert check_config(config(temperature=0.01))["temperature"] == 0.01
    assert check_config(config(temperature=100))["temperature"] == 100.0
    for bad in (0.0099, 100.01, True, None):
        assert "must be a number between 0.01 and 100" == refused("temperature", temperature=bad)


def test_top_label_map_sizes_and_contents() -> None:
    two = [[0.2, 0.3], [0.8, 0.9]]
    assert check_config(config(top_label_map=two))["top_label_map"] == two
    thousand = [[(i + 1) / 1002, (i + 1) / 1002] for i in range(1000)]
    assert len(check_config(config(top_label_map=thousand))["top_label_map"]) == 1000
    longer = [[(i + 1) / 1003, (i + 1) / 1003] for i in range(1001)]
    assert "is not a calibration map: it must be a list of 2 to 1000 [x, y] pairs" == refused(
        "top_label_map", top_label_map=longer)
    for bad in ([[0.2, 0.3]], "0.2,0.3"):
        assert refused("top_label_map", top_label_map=bad) == (
            "is not a calibration map: it must be a list of 2 to 1000 [x, y] pairs")
    assert refused("top_label_map", top_label_map=[[0.2, "0.3"], [0.8, 0.9]]) == (
        "is not a calibration map: top_label_map: every x and y must be a number")
    assert refused("top_label_map", top_label_map=[[0.8, 0.3], [0.2, 0.9]]) == (
        "is not a calibration map: top_label_map: x must increase and y must not decrease")
    assert "top_label_map" not in check_config(config())


def test_unfamiliar_below_is_a_finite_number_or_absent() -> None:
    assert check_config(config(unfamiliar_below=-3.5))["unfamiliar_below"] == -3.5
    assert check_config(config(unfamiliar_below=None))["unfamiliar_below"] is None
    for bad in (math.nan, math.inf, "5", True):
        assert "must be a finite number" == refused("unfamiliar_below", unfamiliar_below=bad)


def test_the_message_names_the_file_given() -> None:
    with pytest.raises(ModelLoadError, match=r"^config\.json: field 'classes' "):
        check_config(config(classes=[]))
    with pytest.raises(ModelLoadError, match=r"^/a/b/config\.json: field 'dropout' "):
        check_config(config(dropout=2), Path("/a/b/config.json"))


# --- resolve ------------------------------------------------------------------------------------------


def test_none_is_the_bundled_folder() -> None:
    info = resolve()
    assert info.source == "bundled" and info.folder == weights.BUNDLED_WEIGHTS and info.revision is None
    assert (info.folder / "config.json").is_file()


def test_no_bundled_folder_in_an_installed_copy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(weights, "BUNDLED_WEIGHTS", tmp_path / "missing")
    with pytest.raises(ModelLoadError) as err:
        resolve(None)
    assert str(err.value) == ("No bundled weights in an installed copy of cifar_model (they ship with the demo's"
                              " checkout): pass a weights folder or a Hub repo id.")


def test_a_local_folder_is_used_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights, "_download", lambda *a, **k: pytest.fail("a folder must not be downloaded"))
    (tmp_path / "owner" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    info = resolve("owner/name")  # both a folder and a valid repo id: the folder
    assert info.source == "owner/name" and info.folder == Path("owner/name") and info.revision is None
    info = resolve(tmp_path / "owner")
    assert info.source == str(tmp_path / "owner") and info.folder == tmp_path / "owner"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve("~/owner").folder == tmp_path / "owner"


def test_a_file_or_a_missing_path_is_not_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights, "_download", lambda *a, **k: pytest.fail("must not be downloaded"))
    (tmp_path / "config.json").write_text(json.dumps(GOOD))
    with pytest.raises(ModelLoadError, match="config.json is a file: pass the weights folder that holds it"):
        resolve(tmp_path / "config.json")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError, match="^No such weights folder: owner/name$"):
        resolve(Path("owner/name"))  # a Path is a folder, never a repo id
    with pytest.raises(ModelLoadError, match="^No such weights folder: no//such..repo$"):
        resolve("no//such..repo")


def test_a_repo_id_is_downloaded_at_its_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    snapshot = tmp_path / "snapshots" / ("ab" * 20)
    snapshot.mkdir(parents=True)

    def fake(repo_id, revision, **kwargs):
        calls.append((repo_id, revision, kwargs))
        return snapshot

    monkeypatch.setattr(weights, "_download", fake)
    monkeypatch.chdir(tmp_path)
    info = resolve("owner/model", "v1", cache_dir="c", token="t")
    assert calls == [("owner/model", "v1", {"cache_dir": "c", "token": "t"})]
    assert info.source == "owner/model" and info.folder == snapshot and info.revision == "ab" * 20
    assert info.label == "owner/model@abababa"


# --- loading a folder: the files, the tensors, the figures ------------------------------------------


BUNDLED = Path(weights.__file__).resolve().parent.parent / "weights"


def _folder(tmp_path: Path, *files: str) -> Path:
    folder = tmp_path / "w"
    folder.mkdir()
    for name in files:
        (folder / name).write_bytes((BUNDLED / name).read_bytes())
    return folder


def test_a_config_exactly_at_the_size_limit_is_read(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "model.safetensors")
    text = (BUNDLED / "config.json").read_text()
    (folder / "config.json").write_text(text + " " * (weights.MAX_CONFIG_BYTES - len(text.encode())))
    assert (folder / "config.json").stat().st_size == weights.MAX_CONFIG_BYTES
    model, _ = weights.load(folder)
    assert len(model.classes) == 10
    (folder / "config.json").write_text(text + " " * (weights.MAX_CONFIG_BYTES + 1 - len(text.encode())))
    with pytest.raises(ModelLoadError, match="is larger than 64 KiB"):
        weights.load(folder)


def test_the_model_class_names_a_missing_config(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "model.safetensors")
    with pytest.raises(ModelLoadError) as err:
        CifarCNN.from_pretrained(folder)
    assert str(err.value) == (f"{folder / 'config.json'} is missing: a weights folder needs config.json and "
                              "model.safetensors.")


def test_weights_without_the_last_layer_are_another_architecture(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder = _folder(tmp_path, "config.json")
    tensors = load_file(BUNDLED / "model.safetensors")
    del tensors["classifier.4.weight"]
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(ModelLoadError, match="names 10 classes but .* has None outputs"):
        weights.load(folder)


def test_a_failure_while_reading_the_tensors_names_the_file_and_the_first_line_of_the_cause(
        tmp_path: Path, monkeypatch) -> None:
    # The header passed every check; then the read fails (a disk error, the file replaced meanwhile).
    folder = _folder(tmp_path, "config.json", "model.safetensors")

    def failing(model, filename, strict=True):
        raise OSError("Input/output error\nsecond line of detail")

    monkeypatch.setattr(weights, "load_model", failing)
    with pytest.raises(ModelLoadError) as err:
        weights.load(folder)
    assert str(err.value) == f"{folder / 'model.safetensors'} could not be loaded: Input/output error"


def test_bad_figures_cost_the_figures_with_a_warning_at_the_callers_line(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "config.json", "model.safetensors")
    (folder / "metrics.json").write_text('{"test_accuracy": 2.0}')
    with pytest.warns(UserWarning) as caught:
        model, info = weights.load(folder)  # the warning points here, at the line that loaded
    [warning] = caught
    if Path(weights.__file__).parent.parent.name != "mutants":  # under mutmut, its trampolines add stack frames
        assert warning.filename == __file__
    assert info.metrics is None and str(warning.message) == info.warning
    assert info.warning.startswith("metrics.json ignored: ") and str(folder) not in info.warning
    assert info.warning.startswith("metrics.json ignored: metrics.json: test_images, ")  # what is wrong, by
    assert info.warning.endswith(": missing")  # the file's name, not the server's path to it


def test_an_unreachable_hub_names_the_repo_and_the_revision_only_when_one_was_asked_for(monkeypatch) -> None:
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(repo_id, **kwargs):
        raise LocalEntryNotFoundError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    for revision, where in ((None, "owner/name"), ("main", "owner/name@main")):
        with pytest.raises(ModelLoadError) as err:
            resolve("owner/name", revision)
        assert str(err.value) == f"Could not reach the Hugging Face Hub for {where}, and it is not in the local cache."
