"""Finding and loading a weights folder: the bundled ``weights/``, a local folder, or a Hub repo.

A weights folder holds ``config.json`` (what inference needs), ``model.safetensors`` (the tensors;
safetensors can't run code when loaded, so nothing from the network is ever unpickled), and
optionally ``metrics.json`` and a ``README.md`` model card with the test accuracy.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .model import CifarCNN

BUNDLED_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
CONFIG_FILE, WEIGHTS_FILE, METRICS_FILE, CARD_FILE = "config.json", "model.safetensors", "metrics.json", "README.md"
HUB_FILES = [CONFIG_FILE, WEIGHTS_FILE, METRICS_FILE, CARD_FILE]
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_FULL_SHA = re.compile(r"^[0-9a-f]{40}$")


class ModelLoadError(RuntimeError):
    """Weights could not be found or loaded. The message names the source or file and what to do."""


@dataclass
class WeightsInfo:
    """Where a model's weights came from and what its card says of it."""

    source: str  # "bundled", a local folder, or a Hub repo id
    folder: Path  # the local folder the files were read from (the Hub cache's snapshot for a repo)
    revision: str | None = None  # the Hub commit sha, for a repo
    metrics: dict = field(default_factory=dict)  # metrics.json, if the folder has one
    card_accuracy: float | None = None  # test accuracy from the card's model-index, if present

    @property
    def label(self) -> str:
        """A short human-readable origin: ``bundled weights/``, ``owner/name@1a2b3c4``, a folder."""
        if self.source == "bundled":
            return "bundled weights/"
        if self.revision:
            return f"{self.source}@{self.revision[:7]}"
        return self.source


def resolve(source: str | Path | None = None, revision: str | None = None, **hub_kwargs) -> WeightsInfo:
    """Find the weights folder for ``source`` without loading tensors.

    ``None`` is the bundled ``weights/``; an existing directory is used as it is (a folder path
    always wins, so name a Hub repo that has the same name as a local folder by its full id);
    any other string must look like a Hub repo id (``name`` or ``owner/name``) and is downloaded with
    huggingface_hub at ``revision`` (a branch, tag or, to pin it, a 40-hex commit sha).

    Raises:
        ModelLoadError: no such folder or repo, the Hub unreachable with nothing cached, etc.
    """
    if source is None:
        return WeightsInfo("bundled", BUNDLED_WEIGHTS)
    path = Path(source).expanduser()
    if path.is_dir():
        return WeightsInfo(str(source), path)
    text = str(source)
    if path.exists():  # a file such as weights/model.safetensors: the folder was meant, not a repo
        raise ModelLoadError(f"{text} is a file: pass the weights folder that holds it")
    # A Path object always names a local folder, even when its text would also be a valid repo id.
    looks_like_path = text.startswith((".", "/", "~")) or text.count("/") > 1 or not _REPO_ID.match(text)
    if isinstance(source, Path) or looks_like_path:
        raise ModelLoadError(f"No such weights folder: {text}")
    folder = _download(text, revision, **hub_kwargs)
    return WeightsInfo(text, folder, revision=folder.name if _FULL_SHA.match(folder.name) else revision)


def _download(repo_id: str, revision: str | None, **hub_kwargs) -> Path:
    import httpx2  # huggingface_hub 2.x's HTTP client: its transport errors are not OSErrors
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
        XetDownloadError,
    )

    where = f"{repo_id}@{revision}" if revision else repo_id
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_FILES, **hub_kwargs))
    except RepositoryNotFoundError:
        raise ModelLoadError(f"No model repo {repo_id!r} on the Hugging Face Hub (or it is private: set HF_TOKEN).") from None
    except RevisionNotFoundError:
        raise ModelLoadError(f"The repo {repo_id!r} has no revision {revision!r}.") from None
    except LocalEntryNotFoundError:
        raise ModelLoadError(
            f"Could not reach the Hugging Face Hub for {where}, and it is not in the local cache."
        ) from None
    # httpx2.HTTPError: the connection failed after the file listing (retries exhausted, proxy).
    except (HfHubHTTPError, OSError, ValueError, httpx2.HTTPError, XetDownloadError) as err:
        raise ModelLoadError(f"Could not download {where} from the Hugging Face Hub: {err}") from None


def load_model(info: WeightsInfo) -> CifarCNN:
    """Build the network from ``config.json`` and load ``model.safetensors`` strictly (in eval mode).

    Raises:
        ModelLoadError: a file missing or corrupt, or tensors of another architecture; the message
            names the file.
    """
    config_path, weights_path = info.folder / CONFIG_FILE, info.folder / WEIGHTS_FILE
    for p in (config_path, weights_path):
        if not p.is_file():
            raise ModelLoadError(f"{p} is missing: a weights folder needs {CONFIG_FILE} and {WEIGHTS_FILE}.")
    try:
        config = json.loads(config_path.read_text())
        model = CifarCNN(**config)
    except (ValueError, TypeError) as err:
        raise ModelLoadError(f"{config_path} is not a valid config for CifarCNN: {err}") from None
    try:
        state = load_file(weights_path)
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelLoadError(f"{weights_path} is not a readable safetensors file: {err}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0:3]
        raise ModelLoadError(
            f"{weights_path} holds weights of another architecture than CifarCNN: {' '.join(first)}"
        ) from None
    info.metrics = _read_metrics(info.folder / METRICS_FILE)
    info.card_accuracy = _card_accuracy(info.folder / CARD_FILE)
    return model.eval()


def _read_metrics(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return {}


def _card_accuracy(path: Path) -> float | None:
    """Test accuracy from the card's ``model-index`` (what the Hub shows as the evaluation result)."""
    if not path.is_file():
        return None
    from huggingface_hub import ModelCard

    try:
        results = ModelCard.load(path).data.eval_results or []
    except Exception:  # a hand-edited card with broken YAML is not worth refusing the weights for
        return None
    for r in results:
        if r.metric_type == "accuracy" and r.dataset_split == "test":
            return float(r.metric_value)
    return None


def state_dict_to_cpu(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous CPU float32 copies of the tensors, as safetensors wants them."""
    return {k: v.detach().float().cpu().contiguous() if v.is_floating_point() else v.detach().cpu().contiguous()
            for k, v in model.state_dict().items()}
