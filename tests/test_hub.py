"""Hub publishing and loading, offline: save/load round trips, a hand-built Hub cache, a full push
and pinned download through a local stand-in Hub (tests/hub_server.py), push failures, and weights
that must be refused (missing, corrupt, another architecture, pickles).

Every test runs with HF_HOME in its tmp_path and fails if anything connects outside loopback: the
real Hub is never needed.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData, constants
from safetensors.torch import save_file
from torch import nn

from cifar_model import CLASSES, Classifier, CifarCNN, ModelLoadError
from cifar_model.weights import CARD_FILE, CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE, state_dict_to_cpu
from hub_server import FakeHub, git_blob_sha
from train.publish import PublishError, push_folder

ROOT = Path(__file__).resolve().parent.parent
REPO = "tester/cifar10-cnn"
TOKEN = "hf_test_token"
ACCURACY = 0.8765
# Four fixed pictures: the same input for every logits comparison.
PIXELS = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


# ---------------------------------------------------------------------------- isolation

@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch):
    """Refuse, and fail the test on, any connection or name lookup outside loopback.

    The client swallows some network errors (it falls back to the cache), so a refused attempt
    alone could pass unnoticed: the attempts are collected and asserted at teardown.
    """
    attempts: list[object] = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(sock: socket.socket, address) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in _LOOPBACK:
            attempts.append(address)
            raise ConnectionRefusedError(f"test_hub blocks connections outside loopback: {address}")
        return real_connect(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        if host not in _LOOPBACK and host is not None:
            attempts.append(host)
            raise socket.gaierror(f"test_hub blocks name lookups outside loopback: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield
    assert not attempts, f"the test tried to reach the network: {attempts}"


@pytest.fixture(autouse=True)
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HF_HOME (cache, token, registries) in tmp_path, no token, online mode, the default endpoint.

    huggingface_hub reads these at import time, so its constants are patched as well as the env.
    """
    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_ENDPOINT", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    for name, value in {
        "HF_HOME": home, "HF_HUB_CACHE": home / "hub", "HF_TOKEN_PATH": home / "token",
        "HF_STORED_TOKENS_PATH": home / "stored_tokens", "AGENT_HARNESSES_PATH": home / "agents.json",
    }.items():
        monkeypatch.setattr(constants, name, str(value))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return home


def point_client_at(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """What HF_ENDPOINT does at import: both the API endpoint and the file URL template."""
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    template = endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch):
    """A running stand-in Hub the client talks to; fails the test if the client used a route it lacks."""
    with FakeHub() as server:
        point_client_at(monkeypatch, server.url)
        yield server
    assert not server.unknown, f"requests the stand-in Hub does not implement: {server.unknown}"


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """HF_HUB_OFFLINE=1, as the client sees it after import."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


# ---------------------------------------------------------------------------- helpers

def make_model(seed: int = 0) -> CifarCNN:
    """A seeded CifarCNN in eval mode, with BatchNorm statistics that are not the defaults (so a
    round trip that lost the buffers would change the logits)."""
    torch.manual_seed(seed)
    model = CifarCNN()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0.0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def make_folder(folder: Path, seed: int = 0) -> CifarCNN:
    """A Hub-ready weights folder (safetensors, config, metrics, card with model-index) for a seeded model."""
    folder.mkdir(parents=True, exist_ok=True)
    data = ModelCardData(model_name="cifar10-cnn", license="mit", eval_results=[EvalResult(
        task_type="image-classification", dataset_type="cifar10", dataset_name="CIFAR-10",
        dataset_split="test", metric_type="accuracy", metric_value=ACCURACY)])
    # Written before save_pretrained, which only writes its own generic card where there is none.
    ModelCard(f"---\n{data.to_yaml()}\n---\n\n# CIFAR-10 CNN (seed {seed})\n").save(folder / CARD_FILE)
    (folder / METRICS_FILE).write_text(json.dumps({"test_accuracy": ACCURACY, "seed": seed}))
    model = make_model(seed)
    model.save_pretrained(folder)
    return model


def logits(model_or_classifier: CifarCNN | Classifier) -> torch.Tensor:
    """The flip-averaged logits of PIXELS, through the same inference path the app uses."""
    clf = model_or_classifier if isinstance(model_or_classifier, Classifier) else Classifier(model_or_classifier)
    return clf.logits(PIXELS)


def build_cache(cache: Path, repo_id: str, folder: Path, sha: str) -> Path:
    """The cache entry a download of ``repo_id`` at commit ``sha`` leaves: blobs named by ETag,
    snapshot symlinks, refs/main. Returns the snapshot folder."""
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / sha
    (repo_dir / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for f in folder.iterdir():
        blob = repo_dir / "blobs" / git_blob_sha(f.read_bytes())
        blob.write_bytes(f.read_bytes())
        (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(sha)
    return snapshot


class MaliciousPickle:
    """Unpickling this creates ``marker``: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


# ---------------------------------------------------------------------------- round trips

def test_save_pretrained_round_trip_gives_identical_logits(tmp_path: Path) -> None:
    model = make_folder(tmp_path / "w")
    loaded = Classifier.from_pretrained(tmp_path / "w")
    assert torch.equal(logits(loaded), logits(model))
    assert loaded.info.card_accuracy == pytest.approx(ACCURACY)
    assert loaded.info.metrics["test_accuracy"] == ACCURACY


@pytest.mark.parametrize("pinned", [False, True], ids=["main", "pinned-sha"])
def test_repo_loads_offline_from_hand_built_cache(tmp_path: Path, offline: None, pinned: bool) -> None:
    model = make_folder(tmp_path / "w")
    sha = "a" * 40
    snapshot = build_cache(Path(constants.HF_HUB_CACHE), REPO, tmp_path / "w", sha)
    clf = Classifier.from_pretrained(REPO, revision=sha if pinned else None)
    assert torch.equal(logits(clf), logits(model))
    assert clf.info.folder == snapshot
    assert clf.info.revision == sha
    assert clf.info.label == f"{REPO}@aaaaaaa"


@pytest.mark.parametrize("revision", [None, "b" * 40])
def test_uncached_repo_offline_is_a_clear_error(offline: None, revision: str | None) -> None:
    with pytest.raises(ModelLoadError, match="Could not reach the Hugging Face Hub") as err:
        Classifier.from_pretrained(REPO, revision=revision)
    assert REPO in str(err.value) and "not in the local cache" in str(err.value)


def test_uncached_repo_with_hub_down_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, free_port) -> None:
    point_client_at(monkeypatch, f"http://127.0.0.1:{free_port()}")
    expected = f"Could not reach the Hugging Face Hub for {REPO}.*not in the local cache"
    with pytest.raises(ModelLoadError, match=expected):
        Classifier.from_pretrained(REPO)


# ---------------------------------------------------------------------------- push and pull

def test_push_then_load_pinned_revision(tmp_path: Path, hub: FakeHub) -> None:
    model = make_folder(tmp_path / "w")
    (tmp_path / "w" / "optimizer.pt").write_bytes(b"not part of a weights folder")
    sha = push_folder(tmp_path / "w", REPO, token=TOKEN)
    assert re.fullmatch(r"[0-9a-f]{40}", sha) and hub.repos[REPO].refs["main"] == sha
    assert set(hub.repos[REPO].commits[sha]) == {".gitattributes", CONFIG_FILE, WEIGHTS_FILE, METRICS_FILE, CARD_FILE}
    assert hub.auth_headers and set(hub.auth_headers) == {f"Bearer {TOKEN}"}

    clf = Classifier.from_pretrained(REPO, revision=sha, cache_dir=tmp_path / "cache")
    assert torch.equal(logits(clf), logits(model))
    assert clf.info.revision == sha and clf.info.label == f"{REPO}@{sha[:7]}"
    assert clf.info.card_accuracy == pytest.approx(ACCURACY)
    card = (tmp_path / "w" / CARD_FILE).read_bytes()
    assert hub.repos[REPO].commits[sha][CARD_FILE] == card  # uploaded as it is, not regenerated
    assert (clf.info.folder / CARD_FILE).read_bytes() == card
    assert not any(path.endswith("optimizer.pt") for _, path, _ in hub.log)


def test_pinned_revision_keeps_old_weights_after_a_new_push(tmp_path: Path, hub: FakeHub) -> None:
    old_model, new_model = make_folder(tmp_path / "old", seed=0), make_folder(tmp_path / "new", seed=1)
    old_sha = push_folder(tmp_path / "old", REPO, token=TOKEN)
    new_sha = push_folder(tmp_path / "new", REPO, token=TOKEN)
    assert new_sha != old_sha
    cache = tmp_path / "cache"
    assert torch.equal(logits(Classifier.from_pretrained(REPO, revision=old_sha, cache_dir=cache)), logits(old_model))
    latest = Classifier.from_pretrained(REPO, cache_dir=cache)
    assert latest.info.revision == new_sha and torch.equal(logits(latest), logits(new_model))


def test_cli_pushes_and_prints_how_to_load(tmp_path: Path, hub: FakeHub, hf_home: Path) -> None:
    # A subprocess, so that HF_ENDPOINT and HF_TOKEN are read at import as in a user's shell.
    make_folder(tmp_path / "w")
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HOME": str(hf_home),
           "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    done = subprocess.run([sys.executable, "-m", "train.publish", str(tmp_path / "w"), REPO, "--private"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    sha = hub.repos[REPO].refs["main"]
    assert hub.repos[REPO].private
    assert done.stdout.splitlines() == [sha, f'Classifier.from_pretrained("{REPO}", revision="{sha}")']


# ---------------------------------------------------------------------------- push failures

def test_push_without_token_says_how_to_log_in(tmp_path: Path, hub: FakeHub) -> None:
    make_folder(tmp_path / "w")
    with pytest.raises(PublishError, match="HF_TOKEN") as err:
        push_folder(tmp_path / "w", REPO)
    assert "hf auth login" in str(err.value) and f"kept at {tmp_path / 'w'}" in str(err.value)
    assert hub.log == [] and (tmp_path / "w" / WEIGHTS_FILE).is_file()


@pytest.mark.parametrize("status", [401, 403])
def test_push_with_refused_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: int) -> None:
    make_folder(tmp_path / "w")
    with FakeHub(refuse=status) as server:
        point_client_at(monkeypatch, server.url)
        with pytest.raises(PublishError, match=f"token .*\\({status}\\)") as err:
            push_folder(tmp_path / "w", REPO, token="hf_revoked")
    assert "kept at" in str(err.value) and (tmp_path / "w" / WEIGHTS_FILE).is_file()


def test_push_with_hub_unreachable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, free_port) -> None:
    make_folder(tmp_path / "w")
    point_client_at(monkeypatch, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(PublishError, match="could not be reached.*kept at"):
        push_folder(tmp_path / "w", REPO, token=TOKEN)
    assert {p.name for p in (tmp_path / "w").iterdir()} == {CARD_FILE, CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE}


def test_push_refuses_a_folder_without_weights(tmp_path: Path, hub: FakeHub) -> None:
    (tmp_path / "w").mkdir()
    with pytest.raises(PublishError, match=f"not a weights folder.*{WEIGHTS_FILE}"):
        push_folder(tmp_path / "w", REPO, token=TOKEN)
    assert hub.log == []


# ---------------------------------------------------------------------------- weights that must be refused

def _delete(weights: Path) -> None:
    weights.unlink()


def _random_bytes(weights: Path) -> None:
    weights.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
                        .numpy().tobytes())


def _other_shapes(weights: Path) -> None:  # eleven classes: the last layer has another shape
    save_file(state_dict_to_cpu(CifarCNN(classes=[*CLASSES, "extra"])), weights)


def _other_keys(weights: Path) -> None:
    save_file({"backbone.conv.weight": torch.zeros(8, 3, 3, 3)}, weights)


@pytest.mark.parametrize("damage, message", [
    (_delete, "is missing"),
    (_random_bytes, "not a readable safetensors file"),
    (_other_shapes, "another architecture"),
    (_other_keys, "another architecture"),
])
def test_bad_weights_file_is_named_in_the_error(tmp_path: Path, damage, message: str) -> None:
    make_folder(tmp_path / "w")
    weights = tmp_path / "w" / WEIGHTS_FILE
    damage(weights)
    with pytest.raises(ModelLoadError, match=message) as err:
        Classifier.from_pretrained(tmp_path / "w")
    assert str(weights) in str(err.value)


@pytest.mark.parametrize("with_safetensors", [False, True])
def test_pickle_beside_config_is_never_executed(tmp_path: Path, with_safetensors: bool) -> None:
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(MaliciousPickle(control)))
    assert control.exists()  # the payload works: unpickling it does run code

    make_folder(tmp_path / "w")
    marker = tmp_path / "pwned"
    (tmp_path / "w" / "pytorch_model.bin").write_bytes(pickle.dumps(MaliciousPickle(marker)))
    if with_safetensors:
        assert Classifier.from_pretrained(tmp_path / "w").info.folder == tmp_path / "w"
    else:
        (tmp_path / "w" / WEIGHTS_FILE).unlink()
        with pytest.raises(ModelLoadError, match=WEIGHTS_FILE):
            Classifier.from_pretrained(tmp_path / "w")
    assert not marker.exists()


def test_pickle_only_repo_is_refused_and_not_downloaded(tmp_path: Path, hub: FakeHub) -> None:
    marker = tmp_path / "pwned"
    config = json.dumps(make_model().inference_config).encode()
    sha = hub.add_repo(REPO, {CONFIG_FILE: config, "pytorch_model.bin": pickle.dumps(MaliciousPickle(marker))})
    with pytest.raises(ModelLoadError, match=WEIGHTS_FILE):
        Classifier.from_pretrained(REPO, revision=sha, cache_dir=tmp_path / "cache")
    assert not marker.exists()
    assert not any(path.endswith("pytorch_model.bin") for _, path, _ in hub.log)


# ---------------------------------------------------------------------------- sources that are not there

@pytest.mark.parametrize("source", ["./no/such/folder", "/no/such/folder", "a/b/c", Path("runs/missing")],
                         ids=["relative", "absolute", "three-parts", "path-object"])
def test_missing_local_folder(source: str | Path) -> None:
    # Path("runs/missing") reads like a repo id, but a Path is always a folder: no Hub lookup
    # (the no_network fixture would fail the test if one were made).
    with pytest.raises(ModelLoadError, match="No such weights folder"):
        Classifier.from_pretrained(source)


def test_weights_file_instead_of_folder(tmp_path: Path) -> None:
    make_folder(tmp_path / "w")
    with pytest.raises(ModelLoadError, match="is a file"):
        Classifier.from_pretrained(str(tmp_path / "w" / WEIGHTS_FILE))


def test_download_cut_off_midway_is_a_model_load_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_folder(tmp_path / "w")
    monkeypatch.setattr("huggingface_hub.file_download.time.sleep", lambda s: None)  # its retry back-off
    with FakeHub(drop_downloads=True) as server:
        point_client_at(monkeypatch, server.url)
        sha = server.add_repo(REPO, {p.name: p.read_bytes() for p in (tmp_path / "w").iterdir()})
        with pytest.raises(ModelLoadError, match=f"Could not download {REPO}@{sha}"):
            Classifier.from_pretrained(REPO, revision=sha, cache_dir=tmp_path / "cache")
