"""``metrics.json``: what a training run measured, as one typed record read and written by the same code.

Every accuracy and ECE here is a FRACTION in [0, 1] (0.9122, never 91.22), so nothing that reads the
file has to guess. ``Metrics.load`` checks every field's type and range and raises ``ValueError``
naming the file and the field; a file that can't be trusted is never half-read.

    m = Metrics.load("weights/metrics.json")
    print(f"{m.test_accuracy:.2%} on {m.test_images:,} pictures")
"""

from __future__ import annotations

import json
import math
import types
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

MAX_BYTES = 10_000_000  # a real metrics.json is tens of kB (with 150 epochs of history: 30 kB)
# Fields (or, for a dict, its values) that must lie in [0, 1].
FRACTIONS = frozenset({"test_accuracy", "val_accuracy", "per_class_accuracy", "ece", "ece_uncalibrated"})


@dataclass
class Metrics:
    """One training run's figures, as stored in ``metrics.json`` and shown on the model card.

    Accuracies and ECE are fractions in [0, 1]. ECE, NLL and Brier are measured on the test split,
    before (``*_uncalibrated``) and after dividing the logits by ``temperature``; the temperature is
    fitted on ``calibration_images`` validation pictures, never on the test split.
    """

    # The test split, scored once
    test_accuracy: float  # fraction of test pictures classified right
    test_images: int
    per_class_accuracy: dict[str, float]  # class name -> fraction, in logit order
    confusion_matrix: list[list[int]]  # rows: true class, columns: predicted (counts)
    dataset: str  # how to name the test split, e.g. "CIFAR-10 test split (JPEG q75 copy)"
    # The training run
    data_source: str  # where the pictures came from (file name and sha256, or "torchvision")
    train_images: int
    train_seconds: float  # first step to last, evaluation and compilation excluded
    hardware: str
    parameters: int
    torch: str  # torch.__version__
    config: dict  # the TrainConfig, as a dict
    history: list[dict]  # one entry per epoch: epoch, train_loss, train_acc, val_acc, elapsed
    val_accuracy: float | None = None  # on the held-out training pictures; None when nothing was held out
    val_images: int = 0  # training pictures held out for validation (0: nothing held out)
    skipped_images: int = 0  # pictures the data loader could not decode and skipped
    compile_seconds: float | None = None  # torch.compile and warm-up, not counted in train_seconds
    repo_id: str | None = None  # the Hub repo the folder is pushed to, if any
    command: str | None = None  # the command line that trained it
    # Calibration (temperature scaling); 1.0 and 0 images mean none was fitted
    temperature: float = 1.0
    calibration_images: int = 0  # validation pictures the temperature was fitted on
    ece: float | None = None  # expected calibration error (15 bins, top label), after calibration
    nll: float | None = None  # mean negative log-likelihood, after calibration
    brier: float | None = None  # Brier score, after calibration
    ece_uncalibrated: float | None = None
    nll_uncalibrated: float | None = None
    brier_uncalibrated: float | None = None

    def __post_init__(self) -> None:
        for f, hint in _HINTS.items():
            setattr(self, f, _check(getattr(self, f), hint, f, fraction=f in FRACTIONS))
        if self.temperature <= 0:
            raise ValueError(f"temperature: must be > 0, got {self.temperature}")
        k = len(self.per_class_accuracy)
        if len(self.confusion_matrix) != k or any(len(row) != k for row in self.confusion_matrix):
            raise ValueError(f"confusion_matrix: must be {k} x {k}, one row and column per class")
        if sum(map(sum, self.confusion_matrix)) != self.test_images:
            raise ValueError("confusion_matrix: its counts must add up to test_images")
        if self.val_accuracy is not None and self.val_images == 0:
            raise ValueError("val_accuracy: given, but val_images is 0 (nothing held out)")

    def save(self, path: str | Path) -> None:
        """Write ``path`` as indented JSON (with a trailing newline)."""
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Metrics:
        """Read and check ``path``; keys this version doesn't know are ignored.

        Raises:
            ValueError: unreadable or not JSON, not an object, a required field missing, or a field
                of the wrong type or out of range; the message names the file and the field.
        """
        try:
            if Path(path).stat().st_size > MAX_BYTES:
                raise ValueError(f"larger than {MAX_BYTES:,} bytes")
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
            raise ValueError(f"{path}: not a readable JSON file ({err})") from None
        try:
            return cls.from_dict(raw)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    @classmethod
    def from_dict(cls, raw: Any) -> Metrics:
        """Build from a decoded ``metrics.json`` (unknown keys ignored). Raises ``ValueError``."""
        if not isinstance(raw, dict):
            raise ValueError(f"must hold a JSON object, not {type(raw).__name__}")
        known = {f.name: raw[f.name] for f in fields(cls) if f.name in raw}
        # Files written before val_images existed held out config["val_size"] pictures when they had
        # a validation accuracy: keep their cards truthful.
        config = raw.get("config")
        if "val_images" not in raw and raw.get("val_accuracy") is not None and isinstance(config, dict):
            known["val_images"] = config.get("val_size")
        missing = [f.name for f in fields(cls) if f.name not in raw and f.default is f.default_factory is MISSING]
        if missing:
            raise ValueError(f"{', '.join(missing)}: missing")
        return cls(**known)


def _check(value: Any, hint: Any, name: str, fraction: bool = False) -> Any:
    """``value`` if it is of type ``hint`` (JSON's int accepted for float), else ``ValueError`` naming ``name``."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):  # only "X | None" occurs here
        if value is None:
            return None
        return _check(value, next(a for a in args if a is not type(None)), name, fraction)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name}: must be a number, got {type(value).__name__} {value!r:.40}")
        value = float(value)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name}: must be a finite number >= 0, got {value}")
        if fraction and value > 1:
            raise ValueError(f"{name}: must be a fraction in [0, 1] (0.9 for 90%), got {value}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name}: must be a whole number >= 0, got {type(value).__name__} {value!r:.40}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{name}: must be a string, got {type(value).__name__}")
        return value
    container = origin or hint
    if container is list:
        if not isinstance(value, list):
            raise ValueError(f"{name}: must be a list, got {type(value).__name__}")
        return [_check(v, args[0], f"{name}[{i}]", fraction) for i, v in enumerate(value)] if args else value
    if container is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{name}: must be an object, got {type(value).__name__}")
        if not args:
            return value
        return {_check(k, args[0], f"{name} key"): _check(v, args[1], f"{name}[{k!r}]", fraction)
                for k, v in value.items()}
    raise TypeError(f"no check for {hint!r}")  # a field added with a type this function doesn't know


_HINTS = get_type_hints(Metrics)  # field name -> type, resolved once (annotations are strings here)
