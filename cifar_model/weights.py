"""The weights folder: what is in it, checked, and where it comes from (the bundled ``weights/``, a
local folder, or a Hugging Face Hub repo).

A folder holds ``model.safetensors`` (the tensors: safetensors can't run code when loaded, so nothing
from the network is ever unpickled), ``config.json`` (:class:`Config`: what inference needs besides
the tensors), and optionally ``metrics.json`` (:class:`Metrics`: what training measured),
``model.onnx`` (the inference rule for the browser), ``example.jpg`` and the
``README.md`` model card. A Hub repo is fetched with ``snapshot_download`` and then read like any folder.

Everything in a folder is untrusted (a Hub repo is anyone's). Both JSON files go through one
validator (:func:`read_record`) that checks every field's type and range and names the field; the
tensor shapes in the safetensors header are compared with the network ``config.json`` implies on
the meta device before a single weight is allocated; a bad ``metrics.json`` costs only its figures.
"""

from __future__ import annotations

import hashlib
import json
import math
import types
import warnings
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model

from .model import CifarCNN

BUNDLED_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
CONFIG_FILE, WEIGHTS_FILE, METRICS_FILE, ONNX_FILE = "config.json", "model.safetensors", "metrics.json", "model.onnx"
EXAMPLE_FILE, CARD_FILE = "example.jpg", "README.md"  # the card shows the example
HUB_FILES = [CONFIG_FILE, WEIGHTS_FILE, METRICS_FILE, ONNX_FILE, EXAMPLE_FILE, CARD_FILE]
MAX_JSON_BYTES = 1_000_000  # a real config.json is a few KB, a metrics.json tens of KB
MAX_ONNX_BYTES = 64 * 1024 * 1024  # the network in float32 is 8.9 MB
MAX_CLASS_NAME = 64  # characters


class ModelLoadError(RuntimeError):
    """Weights could not be found or loaded. The message names the source or file and what to do."""


def _rule(check, why: str) -> dict:
    """Field metadata: ``check`` must hold for every number in the field's value, else ``why``."""
    return {"check": check, "why": why}


_FRACTION = _rule(lambda v: 0 <= v <= 1, "must be a fraction in [0, 1] (0.9 for 90%)")
_NOT_NEGATIVE = _rule(lambda v: v >= 0, "must be >= 0")


@dataclass
class Config:
    """``config.json``: everything inference needs besides the tensors."""

    classes: list[str]  # class names in logit order
    mean: list[float]  # per-channel mean of [0, 1] RGB pixels, subtracted first
    std: list[float] = field(metadata=_rule(lambda v: v > 0, "must be positive (it divides the pixels)"))
    # The logits are divided by it before the softmax (fitted on held-out pictures; 1.0 = none).
    temperature: float = field(default=1.0, metadata=_rule(lambda v: 0.01 <= v <= 100, "must be in [0.01, 100]"))
    # Knots [[x, y], ...]: the temperature-scaled top probability x becomes y (see classifier.Rule).
    top_label_map: list[list[float]] | None = field(
        default=None, metadata=_rule(lambda v: 0 < v < 1, "must hold numbers strictly between 0 and 1"))
    # The unsure rule: a picture is "unsure" when its unsure score (classifier.Rule) exceeds this.
    unsure_threshold: float | None = None
    onnx_sha256: str | None = None  # model.onnx's sha256: the browser's copy of this very rule

    def __post_init__(self) -> None:
        _check_fields(self)
        names = self.classes
        if not 2 <= len(names) <= 1000:
            raise ValueError("classes: must name 2 to 1000 classes")
        if not all(n.strip() and len(n) <= MAX_CLASS_NAME for n in names):
            raise ValueError(f"classes: must be non-empty names of at most {MAX_CLASS_NAME} characters")
        if len(set(names)) != len(names):
            raise ValueError("classes: must not repeat a name")
        for name in ("mean", "std"):
            if len(getattr(self, name)) != 3:
                raise ValueError(f"{name}: must be three numbers, one per colour channel")
        knots = self.top_label_map
        if knots is not None:
            if not 2 <= len(knots) <= 1000 or any(len(k) != 2 for k in knots):
                raise ValueError("top_label_map: must be 2 to 1000 [x, y] pairs")
            if any(b[0] <= a[0] or b[1] < a[1] for a, b in zip(knots, knots[1:])):
                raise ValueError("top_label_map: x must increase and y must not decrease")
        if self.onnx_sha256 is not None and not (len(self.onnx_sha256) == 64 and
                                                 all(c in "0123456789abcdef" for c in self.onnx_sha256)):
            raise ValueError("onnx_sha256: must be 64 lowercase hex digits")


@dataclass
class Metrics:
    """``metrics.json``: one training run's figures, as shown on the model card and in the app.

    Accuracies, ECE and rates are fractions in [0, 1] (0.9122, never 91.22). The test split is scored
    at the end of a run; calibration and the unsure threshold are fitted on ``val_images`` held-out
    training pictures, never on the test split.
    """

    test_accuracy: float = field(metadata=_FRACTION)  # share of test pictures classified right
    test_images: int
    per_class_accuracy: dict[str, float] = field(metadata=_FRACTION)  # class -> share right, logit order
    confusion_matrix: list[list[int]]  # rows: true class, columns: predicted (counts)
    dataset: str  # how to name the test split, e.g. "CIFAR-10 test split (JPEG q75 copy)"
    data_source: str  # where the pictures came from (file name and sha256, or "torchvision")
    train_images: int
    train_seconds: float = field(metadata=_NOT_NEGATIVE)  # first step to last, evaluation excluded
    hardware: str
    parameters: int
    torch: str  # torch.__version__
    config: dict  # the TrainConfig, as a dict
    history: list[dict]  # one entry per epoch: epoch, train_loss, train_acc, val_acc, elapsed
    val_accuracy: float | None = field(default=None, metadata=_FRACTION)  # on the held-out pictures
    val_images: int = 0  # training pictures held out for validation (0: nothing held out)
    skipped_images: int = 0  # pictures the data loader could not decode and skipped
    compile_seconds: float | None = field(default=None, metadata=_NOT_NEGATIVE)  # not in train_seconds
    repo_id: str | None = None  # the Hub repo the folder is pushed to, if any
    command: str | None = None  # the command line that trained it
    # Calibration, fitted on the validation pictures; ECE, NLL and Brier on the test split.
    temperature: float = field(default=1.0, metadata=_rule(lambda v: v > 0, "must be > 0"))
    ece: float | None = field(default=None, metadata=_FRACTION)  # 15 bins, top label, after calibration
    nll: float | None = field(default=None, metadata=_NOT_NEGATIVE)
    brier: float | None = field(default=None, metadata=_NOT_NEGATIVE)
    ece_uncalibrated: float | None = field(default=None, metadata=_FRACTION)
    nll_uncalibrated: float | None = field(default=None, metadata=_NOT_NEGATIVE)
    brier_uncalibrated: float | None = field(default=None, metadata=_NOT_NEGATIVE)
    # The test split after calibration, per equal-width confidence bin: [count, mean confidence, accuracy].
    reliability: list[list[float]] | None = field(default=None, metadata=_NOT_NEGATIVE)
    # The unsure rule on the test split: how often it fires, and how often the answer is right when it
    # does and when it doesn't.
    unsure_rate: float | None = field(default=None, metadata=_FRACTION)
    unsure_accuracy: float | None = field(default=None, metadata=_FRACTION)
    sure_accuracy: float | None = field(default=None, metadata=_FRACTION)
    # ...and on pictures of none of the classes: set name ("dev", "report") -> share flagged, and how many.
    outliers_flagged: dict[str, float] | None = field(default=None, metadata=_FRACTION)
    outliers_pictures: dict[str, int] | None = None
    finetune: dict | None = None  # python -m train.finetune's settings and cost, when the weights were fine-tuned

    def __post_init__(self) -> None:
        _check_fields(self)
        k = len(self.per_class_accuracy)
        if len(self.confusion_matrix) != k or any(len(row) != k for row in self.confusion_matrix):
            raise ValueError(f"confusion_matrix: must be {k} x {k}, one row and column per class")
        if sum(map(sum, self.confusion_matrix)) != self.test_images:
            raise ValueError("confusion_matrix: its counts must add up to test_images")
        if self.val_accuracy is not None and self.val_images == 0:
            raise ValueError("val_accuracy: given, but val_images is 0 (nothing held out)")


R = TypeVar("R", Config, Metrics)


def read_record(cls: type[R], path: str | Path) -> R:
    """Read ``path`` into ``cls`` (:class:`Config` or :class:`Metrics`), every field checked.

    Keys the record doesn't know are ignored.

    Raises:
        ValueError: unreadable, not JSON, not an object, a field missing or of the wrong type or
            range; the message names the file and the field.
    """
    path = Path(path)
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise ValueError(f"larger than {MAX_JSON_BYTES:,} bytes")
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        raise ValueError(f"{path}: not a readable JSON file ({err})") from None
    try:
        if not isinstance(raw, dict):
            raise ValueError(f"must hold a JSON object, not {type(raw).__name__}")
        missing = [f.name for f in fields(cls) if f.name not in raw and f.default is f.default_factory is MISSING]
        if missing:
            raise ValueError(f"{', '.join(missing)}: missing")
        return cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def write_record(record: Config | Metrics, path: str | Path) -> None:
    """Write ``record`` as indented JSON (with a trailing newline)."""
    Path(path).write_text(json.dumps(asdict(record), indent=2) + "\n")


def _check_fields(record: Config | Metrics) -> None:
    hints = get_type_hints(type(record))
    for f in fields(record):
        value = _check(getattr(record, f.name), hints[f.name], f.name)
        rule = f.metadata.get("check")
        if rule is not None and not all(rule(v) for v in _numbers(value)):
            raise ValueError(f"{f.name}: {f.metadata['why']}, got {value!r:.60}")
        setattr(record, f.name, value)


def _numbers(value: Any) -> list[float]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    return [n for v in value for n in _numbers(v)] if isinstance(value, list) else []


def _check(value: Any, hint: Any, name: str) -> Any:
    """``value`` if it is of type ``hint`` (JSON's int accepted for float), else ``ValueError`` naming ``name``."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):  # only "X | None" occurs here
        return None if value is None else _check(value, args[0], name)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name}: must be a finite number, got {value!r:.40}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name}: must be a whole number >= 0, got {value!r:.40}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{name}: must be a string, got {type(value).__name__}")
        return value
    container = origin or hint
    if not isinstance(value, container):
        kind = "a list" if container is list else "an object"
        raise ValueError(f"{name}: must be {kind}, got {type(value).__name__}")
    if container is list:
        return [_check(v, args[0], f"{name}[{i}]") for i, v in enumerate(value)] if args else value
    if not args:
        return value
    return {_check(k, args[0], f"{name} key"): _check(v, args[1], f"{name}[{k!r}]") for k, v in value.items()}


@dataclass
class Weights:
    """A loaded network with its config, and where it came from."""

    model: CifarCNN
    config: Config
    source: str = "in-memory"  # "bundled", a local folder, or a Hub repo id
    folder: Path | None = None  # the local folder read (the Hub cache's snapshot for a repo)
    revision: str | None = None  # the Hub commit sha, for a repo
    metrics: Metrics | None = None  # None when the folder has no usable metrics.json
    warning: str | None = None  # why metrics.json was not used, when it exists but is bad

    @property
    def label(self) -> str:
        """A short human-readable origin: ``bundled weights/``, ``owner/name@1a2b3c4``, a folder."""
        if self.source == "bundled":
            return "bundled weights/"
        return f"{self.source}@{self.revision[:7]}" if self.revision else self.source

    def file(self, name: str) -> Path | None:
        """``name`` in the folder if it is there; ``model.onnx`` only if it is the config's (checked on load)."""
        if self.folder is None or (name == ONNX_FILE and self.config.onnx_sha256 is None):
            return None
        path = self.folder / name
        return path if path.is_file() else None


def load(source: str | Path | None = None, revision: str | None = None, **hub_kwargs) -> Weights:
    """Find the weights for ``source`` (see :func:`resolve`), check everything, load strictly.

    Raises:
        ModelLoadError: no such folder or repo, the Hub unreachable with nothing cached, a bad
            ``config.json``, tensors of another shape, a ``model.onnx`` that isn't the config's;
            the message names the file and the field.
    """
    label, folder, revision = resolve(source, revision, **hub_kwargs)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise ModelLoadError(f"{path} is missing: a weights folder needs {CONFIG_FILE} and {WEIGHTS_FILE}.")
    try:
        config = read_record(Config, config_path)
    except ValueError as err:
        raise ModelLoadError(str(err)) from None
    model = _build(weights_path, config)
    _check_onnx(folder / ONNX_FILE, config)
    metrics, warning = _read_metrics(folder / METRICS_FILE)
    return Weights(model, config, label, folder, revision, metrics, warning)


def _build(path: Path, config: Config) -> CifarCNN:
    """The network, once every tensor shape in ``path``'s header is the one ``config`` implies."""
    try:
        with safe_open(path, "pt") as f:
            shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelLoadError(f"{path} is not a readable safetensors file: {err}") from None
    outputs = shapes.get("classifier.4.weight", (None,))[0]
    if outputs != len(config.classes):
        raise ModelLoadError(f"{path.parent / CONFIG_FILE}: field 'classes' names {len(config.classes)} classes"
                             f" but {path} has {outputs} outputs.")
    with torch.device("meta"):  # the expected shapes, without allocating a single weight
        expected = {k: tuple(v.shape) for k, v in CifarCNN(len(config.classes)).state_dict().items()}
    if shapes != expected:
        wrong = sorted(set(shapes) ^ set(expected)) or [k for k in expected if shapes[k] != expected[k]]
        raise ModelLoadError(f"{path} holds weights of another architecture than CifarCNN"
                             f" (first difference: {wrong[0]}).")
    model = CifarCNN(len(config.classes))
    try:
        load_model(model, path, strict=True)
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        raise ModelLoadError(f"{path} could not be loaded: {str(err).splitlines()[0]}") from None
    return model.eval()


def _check_onnx(path: Path, config: Config) -> None:
    if config.onnx_sha256 is None or not path.is_file():
        return  # no browser copy: the Live tab runs on the server
    with open(path, "rb") as f:
        digest = None if path.stat().st_size > MAX_ONNX_BYTES else hashlib.file_digest(f, "sha256").hexdigest()
    if digest != config.onnx_sha256:
        raise ModelLoadError(f"{path} is not the network {CONFIG_FILE} describes (its sha256 differs from"
                             " field 'onnx_sha256'): export it again from these weights.")


def _read_metrics(path: Path) -> tuple[Metrics | None, str | None]:
    """The folder's figures, or ``None`` and why: a bad metrics file costs its figures, never the weights."""
    if not path.is_file():
        return None, None
    try:
        return read_record(Metrics, path), None
    except ValueError as err:
        message = f"{path.name} ignored: {str(err).replace(str(path), path.name)}"
        warnings.warn(message, stacklevel=3)
        return None, message


def save(folder: str | Path, model: CifarCNN, config: Config) -> None:
    """Write ``model.safetensors`` and ``config.json`` into ``folder`` (made if needed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_model(model, str(folder / WEIGHTS_FILE))
    write_record(config, folder / CONFIG_FILE)


def resolve(source: str | Path | None = None, revision: str | None = None, **hub_kwargs
            ) -> tuple[str, Path, str | None]:
    """``(label, local folder, commit sha or None)`` for ``source``, downloading a Hub repo first.

    ``None`` is the bundled ``weights/``; an existing directory is used as it is (a ``Path`` always
    names a folder; a string that is both a folder and a repo id is the folder); any other string
    must be a valid repo id (``name`` or ``owner/name``) and is fetched with ``snapshot_download`` at
    ``revision`` (a branch, tag or, to pin it, a 40-hex commit sha). ``hub_kwargs`` go to
    ``snapshot_download`` (``cache_dir``, ``token``, ``local_files_only``...).
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if source is None:
        if not BUNDLED_WEIGHTS.is_dir():  # an installed copy: weights/ ships with the demo's checkout only
            raise ModelLoadError("No bundled weights in an installed copy of cifar_model (they ship with the demo's"
                                 " checkout): pass a weights folder or a Hub repo id.")
        return "bundled", BUNDLED_WEIGHTS, None
    path = Path(source).expanduser()
    if path.is_dir():
        return str(source), path, None
    if path.exists():
        raise ModelLoadError(f"{source} is a file: pass the weights folder that holds it")
    try:
        if isinstance(source, Path):
            raise HFValidationError("a Path names a folder")
        validate_repo_id(str(source))
    except HFValidationError:
        raise ModelLoadError(f"No such weights folder: {source}") from None
    folder = _download(str(source), revision, **hub_kwargs)
    return str(source), folder, folder.name  # the snapshot folder is named by its commit sha


def _download(repo_id: str, revision: str | None, **hub_kwargs) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    where = f"{repo_id}@{revision}" if revision else repo_id
    known = {  # most specific first: a gated repo is also "not found"
        GatedRepoError: f"The repo {repo_id!r} is gated: accept its terms on the Hub and set HF_TOKEN.",
        RepositoryNotFoundError: f"No model repo {repo_id!r} on the Hugging Face Hub (or it is private: set HF_TOKEN).",
        RevisionNotFoundError: f"The repo {repo_id!r} has no revision {revision!r}.",
        LocalEntryNotFoundError: f"Could not reach the Hugging Face Hub for {where}, and it is not in the local cache.",
    }
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_FILES, **hub_kwargs))
    except Exception as err:  # the network's failures come in many types (HTTP, transport, proxy, disk)
        message = next((text for kind, text in known.items() if isinstance(err, kind)), None)
        reason = " ".join(str(err).split())
        raise ModelLoadError(message or f"Could not download {where} from the Hugging Face Hub: "
                             f"{type(err).__name__}: {reason}") from None
