"""Finding, checking and loading a weights folder: the bundled ``weights/``, a local folder, or a Hub repo.

A weights folder holds ``config.json`` (what inference needs), ``model.safetensors`` (the tensors;
safetensors can't run code when loaded, so nothing from the network is ever unpickled), and
optionally ``metrics.json`` (the figures the card reports) and ``reliability.png``. A Hub repo is
downloaded with ``snapshot_download`` into the Hub cache and then loaded like any folder, through
the mixin's ``CifarCNN.from_pretrained`` whose loading hook is :func:`load_checked`.

Everything in a folder is untrusted (a Hub repo is anyone's): ``config.json`` is checked field by
field against the tensor shapes in the safetensors header before a model is built, so a folder that
lies about its size costs nothing; a bad ``metrics.json`` costs only its figures.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model

from .calibration import check_knots as _check_knots
from .metrics import Metrics
from .model import IMAGE_SIZE, CifarCNN

BUNDLED_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
CONFIG_FILE, WEIGHTS_FILE, METRICS_FILE = "config.json", "model.safetensors", "metrics.json"
DIAGRAM_FILE, EXAMPLE_FILE, CARD_FILE = "reliability.png", "example.jpg", "README.md"  # the card shows these
HUB_FILES = [CONFIG_FILE, WEIGHTS_FILE, METRICS_FILE, DIAGRAM_FILE, EXAMPLE_FILE, CARD_FILE]
MAX_CONFIG_BYTES = 64 * 1024  # today's config.json is 300 bytes; a bigger one is not ours
MAX_CLASS_NAME = 64  # characters


class ModelLoadError(RuntimeError):
    """Weights could not be found or loaded. The message names the source or file and what to do."""


@dataclass
class WeightsInfo:
    """Where a model's weights came from and what their ``metrics.json`` says of them."""

    source: str  # "bundled", a local folder, or a Hub repo id
    folder: Path  # the local folder the files were read from (the Hub cache's snapshot for a repo)
    revision: str | None = None  # the Hub commit sha, for a repo
    metrics: Metrics | None = None  # None when the folder has no readable metrics.json
    warning: str | None = None  # why metrics.json was not used, when it exists but is bad

    @property
    def label(self) -> str:
        """A short human-readable origin: ``bundled weights/``, ``owner/name@1a2b3c4``, a folder."""
        if self.source == "bundled":
            return "bundled weights/"
        return f"{self.source}@{self.revision[:7]}" if self.revision else self.source

    @property
    def diagram(self) -> Path | None:
        """The folder's reliability diagram, if it has one."""
        path = self.folder / DIAGRAM_FILE
        return path if path.is_file() else None


def load(source: str | Path | None = None, revision: str | None = None, **hub_kwargs) -> tuple[CifarCNN, WeightsInfo]:
    """Find the weights for ``source`` (see :func:`resolve`), check them and load them strictly.

    Raises:
        ModelLoadError: no such folder or repo, the Hub unreachable with nothing cached, a bad
            ``config.json``, tensors of another shape; the message names the file and the field.
    """
    info = resolve(source, revision, **hub_kwargs)
    _check_config_file(info.folder / CONFIG_FILE)
    model = CifarCNN.from_pretrained(info.folder)
    info.metrics, info.warning = _read_metrics(info.folder / METRICS_FILE)
    return model, info


def resolve(source: str | Path | None = None, revision: str | None = None, **hub_kwargs) -> WeightsInfo:
    """The local folder for ``source``, downloading it first if it is a Hub repo id.

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
        return WeightsInfo("bundled", BUNDLED_WEIGHTS)
    path = Path(source).expanduser()
    if path.is_dir():
        return WeightsInfo(str(source), path)
    if path.exists():
        raise ModelLoadError(f"{source} is a file: pass the weights folder that holds it")
    try:
        if isinstance(source, Path):
            raise HFValidationError("a Path names a folder")
        validate_repo_id(str(source))
    except HFValidationError:
        raise ModelLoadError(f"No such weights folder: {source}") from None
    folder = _download(str(source), revision, **hub_kwargs)
    return WeightsInfo(str(source), folder, revision=folder.name)  # the snapshot folder is named by its sha


def _download(repo_id: str, revision: str | None, **hub_kwargs) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

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


def _check_config_file(path: Path) -> None:
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing: a weights folder needs {CONFIG_FILE} and {WEIGHTS_FILE}.")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ModelLoadError(f"{path} is larger than {MAX_CONFIG_BYTES // 1024} KiB: not a CifarCNN config.")
    try:
        config = json.loads(path.read_bytes())
    except ValueError as err:
        raise ModelLoadError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"{path} must hold a JSON object, not {type(config).__name__}.")


def load_checked(cls: type[CifarCNN], folder: str, config: dict | None) -> CifarCNN:
    """``CifarCNN._from_pretrained``: check ``config`` against the safetensors header, build, load strictly.

    Nothing is allocated for the network until every field of ``config.json`` is valid and every
    tensor shape in the header is the one the config implies.
    """
    weights = Path(folder) / WEIGHTS_FILE
    config_path = Path(folder) / CONFIG_FILE
    if config is None:
        raise ModelLoadError(f"{config_path} is missing: a weights folder needs {CONFIG_FILE} and {WEIGHTS_FILE}.")
    if not weights.is_file():
        raise ModelLoadError(f"{weights} is missing: a weights folder needs {CONFIG_FILE} and {WEIGHTS_FILE}.")
    kwargs = check_config(config, config_path)
    try:
        with safe_open(weights, "pt") as f:
            shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelLoadError(f"{weights} is not a readable safetensors file: {err}") from None
    out_features = shapes.get("classifier.4.weight", (None,))[0]
    if out_features != len(kwargs["classes"]):
        raise ModelLoadError(f"{config_path}: field 'classes' names {len(kwargs['classes'])} classes but {weights}"
                             f" has {out_features} outputs.")
    with torch.device("meta"):  # the expected shapes, without allocating a single weight
        expected = {k: tuple(v.shape) for k, v in cls(**kwargs).state_dict().items()}
    if shapes != expected:
        wrong = sorted(set(shapes) ^ set(expected)) or [k for k in expected if shapes[k] != expected[k]]
        raise ModelLoadError(f"{weights} holds weights of another architecture than CifarCNN"
                             f" (first difference: {wrong[0]}).")
    model = cls(**kwargs)
    try:
        load_model(model, weights, strict=True)
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        raise ModelLoadError(f"{weights} could not be loaded: {str(err).splitlines()[0]}") from None
    return model.eval()


def check_config(config: dict, path: Path | str = CONFIG_FILE) -> dict[str, Any]:
    """The ``CifarCNN`` keyword arguments in ``config``, each checked; unknown keys are ignored.

    Raises:
        ModelLoadError: naming ``path`` and the first bad field.
    """
    def bad(field: str, why: str) -> ModelLoadError:
        return ModelLoadError(f"{path}: field {field!r} {why}.")

    classes = config.get("classes")
    if not isinstance(classes, list) or not 2 <= len(classes) <= 1000:
        raise bad("classes", "must be a list of 2 to 1000 class names")
    if not all(isinstance(c, str) and c.strip() and len(c) <= MAX_CLASS_NAME for c in classes):
        raise bad("classes", f"must hold non-empty strings of at most {MAX_CLASS_NAME} characters")
    if len(set(classes)) != len(classes):
        raise bad("classes", "must not repeat a name")
    kwargs: dict[str, Any] = {"classes": classes}
    for field in ("mean", "std"):
        value = config.get(field)
        if not (isinstance(value, list) and len(value) == 3 and all(_is_finite(v) for v in value)):
            raise bad(field, "must be a list of three finite numbers")
        kwargs[field] = [float(v) for v in value]
    if min(kwargs["std"]) <= 0:
        raise bad("std", "must be positive (it divides the pixels)")
    size = config.get("image_size", IMAGE_SIZE)
    if size != IMAGE_SIZE or isinstance(size, bool):
        raise bad("image_size", f"must be {IMAGE_SIZE}: the network's no-padding convolutions need it")
    kwargs["image_size"] = IMAGE_SIZE
    dropout = config.get("dropout", 0.0)
    if not (_is_finite(dropout) and 0 <= dropout < 1):
        raise bad("dropout", "must be a number in [0, 1)")
    kwargs["dropout"] = float(dropout)
    temperature = config.get("temperature", 1.0)
    if not (_is_finite(temperature) and 0.01 <= temperature <= 100):  # fit_temperature's range
        raise bad("temperature", "must be a number between 0.01 and 100")
    kwargs["temperature"] = float(temperature)
    knots = config.get("top_label_map")
    if knots is not None:
        try:
            if not (isinstance(knots, list) and 2 <= len(knots) <= 1000):
                raise ValueError("it must be a list of 2 to 1000 [x, y] pairs")
            _check_knots(knots)
        except (ValueError, TypeError) as err:
            raise bad("top_label_map", f"is not a calibration map: {err}") from None
        kwargs["top_label_map"] = [[float(x), float(y)] for x, y in knots]
    threshold = config.get("unfamiliar_below")
    if threshold is not None and not _is_finite(threshold):
        raise bad("unfamiliar_below", "must be a finite number")
    kwargs["unfamiliar_below"] = None if threshold is None else float(threshold)
    return kwargs


def _is_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _read_metrics(path: Path) -> tuple[Metrics | None, str | None]:
    """The folder's figures, or ``None`` and why: a bad metrics file costs its figures, never the weights."""
    if not path.is_file():
        return None, None
    try:
        return Metrics.load(path), None
    except (OSError, ValueError) as err:
        message = f"{path.name} ignored: {str(err).replace(str(path), path.name)}"
        warnings.warn(message, stacklevel=3)
        return None, message
