"""Our code at the huggingface_hub boundary: what we pass to ``snapshot_download``, ``create_repo`` and
``upload_folder``, and what we make of their errors; plus one end-to-end load from a hand-built
offline cache.

``huggingface_hub``'s functions are replaced by fakes that record their arguments (bound to the real
signature, so a renamed parameter fails here rather than on the Hub) and return or raise what the
real ones do. HTTP errors are made the way huggingface_hub makes them: ``hf_raise_for_status`` on an
``httpx2`` response. No test needs the network, and every test fails if anything tries to connect.
"""

from __future__ import annotations

import errno
import hashlib
import inspect
import os
import shutil
import socket
from pathlib import Path

import httpx2
import pytest
import torch
from huggingface_hub import CommitInfo, HfApi, RepoUrl, constants
from huggingface_hub.errors import HfHubHTTPError, IncompleteSnapshotError, LocalEntryNotFoundError
from huggingface_hub.utils import filter_repo_objects, hf_raise_for_status

from cifar_model import BUNDLED_WEIGHTS, Classifier, ModelLoadError
from cifar_model.weights import CONFIG_FILE, HUB_FILES, METRICS_FILE, WEIGHTS_FILE
from train import publish
from train.publish import PublishError, push_folder

REPO = "owner/name"
SHA = "0123456789abcdef0123456789abcdef01234567"  # a commit sha: 40 hex digits
TOKEN = "hf_test_token"
ENDPOINT = "https://huggingface.co"
# Four fixed pictures: the same input for every logits comparison.
PIXELS = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
REAL_SNAPSHOT_DOWNLOAD = inspect.signature(__import__("huggingface_hub").snapshot_download)


# ---------------------------------------------------------------------------- isolation

@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch):
    """Refuse, and fail the test on, any connection or name lookup.

    huggingface_hub falls back to its cache on some network errors, so a refused attempt alone could
    pass unnoticed: the attempts are collected and asserted at teardown.
    """
    attempts: list[object] = []

    def connect(sock: socket.socket, address) -> None:
        attempts.append(address)
        raise ConnectionRefusedError(f"test_hub blocks every connection: {address}")

    def getaddrinfo(host, *args, **kwargs):
        attempts.append(host)
        raise socket.gaierror(f"test_hub blocks every name lookup: {host}")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield
    assert not attempts, f"the test tried to reach the network: {attempts}"


@pytest.fixture(autouse=True)
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HF_HOME (cache, token) in tmp_path, no token, online mode, the default endpoint.

    huggingface_hub reads these at import time, so its constants are patched as well as the env.
    """
    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_ENDPOINT", "HF_HUB_OFFLINE",
                "HF_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    for name, value in {"HF_HOME": home, "HF_HUB_CACHE": home / "hub", "HF_TOKEN_PATH": home / "token",
                        "HF_STORED_TOKENS_PATH": home / "stored_tokens"}.items():
        monkeypatch.setattr(constants, name, str(value))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", ENDPOINT)
    return home


# ---------------------------------------------------------------------------- helpers

def http_error(status: int, url: str, method: str = "GET", **headers: str) -> HfHubHTTPError:
    """The typed error huggingface_hub raises for this response (RepositoryNotFoundError, ...)."""
    response = httpx2.Response(status, headers=headers, request=httpx2.Request(method, url))
    try:
        hf_raise_for_status(response)
    except HfHubHTTPError as err:
        return err
    raise AssertionError(f"hf_raise_for_status did not raise for {status}")


def snapshot_of_bundled_weights(cache: Path, sha: str = SHA) -> Path:
    """A snapshot folder as snapshot_download leaves it, holding the bundled weights' files."""
    snapshot = cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / sha
    snapshot.mkdir(parents=True)
    for f in BUNDLED_WEIGHTS.iterdir():
        (snapshot / f.name).symlink_to(f)
    return snapshot


class FakeSnapshotDownload:
    """Stands in for ``huggingface_hub.snapshot_download``: records each call's arguments (bound to
    the real signature) and returns ``folder`` or raises ``error``."""

    def __init__(self, folder: Path | None = None, error: BaseException | None = None) -> None:
        self.folder, self.error, self.calls = folder, error, []

    def __call__(self, *args, **kwargs) -> str:
        self.calls.append(REAL_SNAPSHOT_DOWNLOAD.bind(*args, **kwargs).arguments)
        if self.error is not None:
            raise self.error
        return str(self.folder)


@pytest.fixture
def download(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeSnapshotDownload:
    """snapshot_download replaced (weights.py imports it from huggingface_hub when it downloads)."""
    fake = FakeSnapshotDownload(snapshot_of_bundled_weights(tmp_path / "cache"))
    monkeypatch.setattr("huggingface_hub.snapshot_download", fake)
    return fake


# ---------------------------------------------------------------------------- loading: what we pass

@pytest.mark.parametrize("source", ["../x", "a/b/c", "x--y", "x..y", "-x", "name.git", "owner/", "a b",
                                    "./no/such/folder", "/no/such/folder", Path("runs/missing")])
def test_not_a_folder_nor_a_repo_id_never_reaches_the_hub(download: FakeSnapshotDownload, source) -> None:
    # Path("runs/missing") reads like a repo id, but a Path always names a folder.
    with pytest.raises(ModelLoadError, match="No such weights folder"):
        Classifier.from_pretrained(source)
    assert download.calls == []


def test_a_file_instead_of_a_folder_says_so(download: FakeSnapshotDownload) -> None:
    with pytest.raises(ModelLoadError, match="is a file: pass the weights folder"):
        Classifier.from_pretrained(str(BUNDLED_WEIGHTS / WEIGHTS_FILE))
    assert download.calls == []


def test_repo_id_is_downloaded_at_the_revision_with_only_the_weights_files(
        download: FakeSnapshotDownload, classifier: Classifier, tmp_path: Path) -> None:
    clf = Classifier.from_pretrained(REPO, revision="v1.0", cache_dir=tmp_path / "c", token=TOKEN)
    assert download.calls == [{"repo_id": REPO, "revision": "v1.0", "allow_patterns": HUB_FILES,
                               "cache_dir": tmp_path / "c", "token": TOKEN}]
    # The revision recorded is the commit the snapshot folder is named by, not the tag asked for.
    assert clf.info.source == REPO and clf.info.revision == SHA and clf.info.label == f"{REPO}@{SHA[:7]}"
    assert clf.info.folder == download.folder
    assert clf.info.metrics.test_accuracy == classifier.info.metrics.test_accuracy
    assert torch.equal(clf.logits(PIXELS), classifier.logits(PIXELS))


def test_no_revision_is_passed_as_none_and_the_commit_still_recorded(download: FakeSnapshotDownload) -> None:
    clf = Classifier.from_pretrained(REPO, local_files_only=True)
    assert download.calls == [{"repo_id": REPO, "revision": None, "allow_patterns": HUB_FILES,
                               "local_files_only": True}]
    assert clf.info.revision == SHA


def test_allow_patterns_fetch_no_pickle_and_nothing_else() -> None:
    # What snapshot_download does with our allow_patterns on a repo holding more than a weights folder.
    repo_files = [".gitattributes", "pytorch_model.bin", "optimizer.pt", "model.pkl", "train.py", "runs/config.json",
                  "checkpoints/model.safetensors", *HUB_FILES]
    assert sorted(filter_repo_objects(repo_files, allow_patterns=HUB_FILES)) == sorted(HUB_FILES)


def test_a_downloaded_folder_is_checked_like_any_folder(download: FakeSnapshotDownload, tmp_path: Path) -> None:
    snapshot = tmp_path / "bad" / SHA
    snapshot.mkdir(parents=True)
    (snapshot / CONFIG_FILE).write_text('{"classes": ["cat", "cat"], "mean": [0, 0, 0], "std": [1, 1, 1]}')
    shutil.copy(BUNDLED_WEIGHTS / WEIGHTS_FILE, snapshot / WEIGHTS_FILE)
    download.folder = snapshot
    with pytest.raises(ModelLoadError, match=f"{snapshot / CONFIG_FILE}: field 'classes'"):
        Classifier.from_pretrained(REPO)


# ---------------------------------------------------------------------------- loading: their errors

API = f"{ENDPOINT}/api/models/{REPO}/revision/v2"
NO_REPO = r"No model repo 'owner/name' on the Hugging Face Hub \(or it is private: set HF_TOKEN\)\.$"
NOT_CACHED = r"Could not reach the Hugging Face Hub for owner/name@v2, and it is not in the local cache\.$"
FAILED = r"Could not download owner/name@v2 from the Hugging Face Hub: "


@pytest.mark.parametrize("error, message", [
    (lambda: http_error(404, API, **{"X-Error-Code": "RepoNotFound"}), NO_REPO),
    (lambda: http_error(401, API), NO_REPO),  # private, no token: the Hub answers 401
    (lambda: http_error(403, API, **{"X-Error-Code": "GatedRepo"}),
     r"The repo 'owner/name' is gated: accept its terms on the Hub and set HF_TOKEN\.$"),
    (lambda: http_error(404, API, **{"X-Error-Code": "RevisionNotFound"}),
     r"The repo 'owner/name' has no revision 'v2'\.$"),
    (lambda: LocalEntryNotFoundError("Cannot find an appropriate cached snapshot folder"), NOT_CACHED),
    (lambda: IncompleteSnapshotError("The cached snapshot misses model.safetensors", "/cache/snap"), NOT_CACHED),
    (lambda: http_error(500, API), FAILED + "HfHubHTTPError: Server error .500 Internal Server Error."),
    (lambda: httpx2.ProxyError("407 Proxy Authentication Required"), FAILED + "ProxyError: 407"),
    (lambda: httpx2.ConnectError("[Errno 111] Connection refused"), FAILED + "ConnectError:"),  # mid-download
    (lambda: httpx2.ReadTimeout("The read operation timed out"), FAILED + "ReadTimeout:"),
    (lambda: OSError(errno.ENOSPC, "No space left on device"), FAILED + r"OSError: \[Errno 28\] No space left"),
], ids=["not-found", "private", "gated", "no-revision", "offline-uncached", "offline-incomplete", "server-error",
        "proxy", "transport", "timeout", "disk-full"])
def test_each_hub_error_becomes_a_model_load_error(download: FakeSnapshotDownload, error, message: str) -> None:
    download.error = error()
    with pytest.raises(ModelLoadError, match=message) as caught:
        Classifier.from_pretrained(REPO, revision="v2")
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # one message, no chained traceback
    assert len(download.calls) == 1


def test_an_interrupt_is_not_turned_into_a_load_error(download: FakeSnapshotDownload) -> None:
    download.error = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        Classifier.from_pretrained(REPO)


# ---------------------------------------------------------------------------- end to end, offline

def test_end_to_end_pinned_repo_loads_offline_from_a_hand_built_cache(
        monkeypatch: pytest.MonkeyPatch, classifier: Classifier) -> None:
    """The real snapshot_download, HF_HUB_OFFLINE=1, sockets blocked: the cache layout
    huggingface_hub documents (blobs named by hash, snapshot symlinks, refs/main) is all it has."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets at import
    repo_dir = Path(constants.HF_HUB_CACHE) / "models--owner--name"
    snapshot = repo_dir / "snapshots" / SHA
    (repo_dir / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for f in BUNDLED_WEIGHTS.iterdir():
        blob = repo_dir / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        blob.write_bytes(f.read_bytes())
        (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(SHA)

    for revision in (SHA, None):  # pinned, and main through refs/main
        clf = Classifier.from_pretrained(REPO, revision=revision)
        assert clf.info.folder == snapshot and clf.info.revision == SHA and clf.info.label == f"{REPO}@{SHA[:7]}"
        assert torch.equal(clf.logits(PIXELS), classifier.logits(PIXELS))
        assert clf.predict(BUNDLED_WEIGHTS.parent / "examples" / "cat_1.jpg") == \
            classifier.predict(BUNDLED_WEIGHTS.parent / "examples" / "cat_1.jpg")
    with pytest.raises(ModelLoadError, match="Could not reach the Hugging Face Hub for owner/other"):
        Classifier.from_pretrained("owner/other")


# ---------------------------------------------------------------------------- publishing: what we pass

class FakeHfApi:
    """Stands in for ``HfApi.create_repo`` and ``HfApi.upload_folder``: records each call (bound to
    the real signature), the token the client was made with, and which files of the folder the
    patterns select; returns what the Hub returns, or raises ``errors[method]``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, dict, str | None]] = []
        self.errors: dict[str, BaseException] = {}
        self.uploaded: list[str] = []
        for name in ("create_repo", "upload_folder"):
            monkeypatch.setattr(HfApi, name, self._fake(name, inspect.signature(getattr(HfApi, name))))

    def _fake(self, name: str, signature: inspect.Signature):
        fake = self

        def method(api: HfApi, *args, **kwargs):
            arguments = signature.bind(api, *args, **kwargs).arguments
            del arguments["self"]
            fake.calls.append((name, arguments, api.token))
            if name in fake.errors:
                raise fake.errors[name]
            if name == "create_repo":
                return RepoUrl(f"{ENDPOINT}/{arguments['repo_id']}", endpoint=ENDPOINT)
            folder = Path(arguments["folder_path"])
            files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
            fake.uploaded = list(filter_repo_objects(files, allow_patterns=arguments.get("allow_patterns"),
                                                     ignore_patterns=arguments.get("ignore_patterns")))
            return CommitInfo(commit_url=f"{ENDPOINT}/{arguments['repo_id']}/commit/{SHA}",
                              commit_message=arguments.get("commit_message") or "", commit_description="", oid=SHA)

        return method


@pytest.fixture
def hub_api(monkeypatch: pytest.MonkeyPatch) -> FakeHfApi:
    return FakeHfApi(monkeypatch)


def weights_folder(folder: Path) -> dict[str, bytes]:
    """A trained-run folder: the weights files and some that must not be uploaded. Returns its contents."""
    folder.mkdir(parents=True)
    for f in BUNDLED_WEIGHTS.iterdir():
        shutil.copy(f, folder / f.name)
    (folder / "reliability.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (folder / "optimizer.pt").write_bytes(b"not part of a weights folder")
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / WEIGHTS_FILE).write_bytes(b"an older checkpoint")
    return contents(folder)


def contents(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_push_creates_a_model_repo_and_uploads_only_the_weights_files(tmp_path: Path, hub_api: FakeHfApi) -> None:
    before = weights_folder(tmp_path / "w")
    assert push_folder(tmp_path / "w", REPO, token=TOKEN) == SHA
    assert hub_api.calls == [
        ("create_repo", {"repo_id": REPO, "exist_ok": True, "repo_type": "model", "private": False}, TOKEN),
        ("upload_folder", {"folder_path": tmp_path / "w", "repo_id": REPO, "repo_type": "model",
                           "allow_patterns": HUB_FILES, "commit_message": "Upload CIFAR-10 CNN weights"}, TOKEN),
    ]
    assert hub_api.uploaded == sorted(["README.md", CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE, "reliability.png",
                                       "example.jpg"])
    assert contents(tmp_path / "w") == before  # the card is uploaded as it is: nothing written or deleted


def test_cli_pushes_private_with_the_saved_token_and_prints_how_to_load(
        tmp_path: Path, hub_api: FakeHfApi, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    weights_folder(tmp_path / "w")
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # read by huggingface_hub's get_token at call time
    assert publish.main([str(tmp_path / "w"), REPO, "--private", "--message", "Epoch 40"]) == 0
    (_, create, token), (_, upload, _) = hub_api.calls
    assert create["private"] is True and upload["commit_message"] == "Epoch 40" and token == TOKEN
    assert capsys.readouterr().out.splitlines() == [SHA, f'Classifier.from_pretrained("{REPO}", revision="{SHA}")']


# ---------------------------------------------------------------------------- publishing: their errors

def test_push_without_a_token_says_how_to_log_in(tmp_path: Path, hub_api: FakeHfApi,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    before = weights_folder(tmp_path / "w")
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(PublishError, match="No Hugging Face token: run `hf auth login` or set HF_TOKEN") as err:
        push_folder(tmp_path / "w", REPO)
    assert f"the folder is kept at {tmp_path / 'w'}" in str(err.value)
    assert hub_api.calls == [] and contents(tmp_path / "w") == before


CREATE = f"{ENDPOINT}/api/repos/create"
PREUPLOAD = f"{ENDPOINT}/api/models/{REPO}/preupload/main"


@pytest.mark.parametrize("method, error, message", [
    ("create_repo", lambda: http_error(401, CREATE, "POST"),
     r"the token was refused \(401\): run `hf auth login` again or set a valid HF_TOKEN"),
    ("create_repo", lambda: http_error(403, CREATE, "POST"),
     r"the token may not write there \(403\): use a write token for a namespace you belong to"),
    ("upload_folder", lambda: http_error(403, PREUPLOAD, "POST"), r"the token may not write there \(403\)"),
    ("create_repo", lambda: httpx2.ConnectError("[Errno 111] Connection refused"),
     r"the Hub could not be reached \(ConnectError: \[Errno 111\] Connection refused\)"),
    ("upload_folder", lambda: httpx2.ReadTimeout("The read operation timed out"), r"the Hub did not answer in time"),
    ("upload_folder", lambda: http_error(500, PREUPLOAD, "POST"),
     r"the Hub answered 500: try again later \(HfHubHTTPError: Server error .500 Internal Server Error. for url \S+ "),
    ("upload_folder", lambda: ValueError("Invalid metadata in README.md."),
     r"ValueError: Invalid metadata in README\.md"),
], ids=["401", "403", "403-on-upload", "unreachable", "timeout", "server-error", "bad-card"])
def test_push_failure_says_what_to_do_and_keeps_the_folder(
        tmp_path: Path, hub_api: FakeHfApi, capsys, monkeypatch: pytest.MonkeyPatch, method: str, error,
        message: str) -> None:
    before = weights_folder(tmp_path / "w")
    hub_api.errors[method] = error()
    with pytest.raises(PublishError, match=f"^Could not push {REPO} to {ENDPOINT}: {message}") as err:
        push_folder(tmp_path / "w", REPO, token=TOKEN)
    assert str(err.value).endswith(f"; the folder is kept at {tmp_path / 'w'}.") and "\n" not in str(err.value)
    assert contents(tmp_path / "w") == before

    monkeypatch.setenv("HF_TOKEN", TOKEN)  # the command line says the same, on stderr, and exits 1
    assert publish.main([str(tmp_path / "w"), REPO]) == 1
    assert capsys.readouterr().err == f"push failed: {err.value}\n"


def test_push_refuses_a_folder_without_weights(tmp_path: Path, hub_api: FakeHfApi) -> None:
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / CONFIG_FILE).write_text("{}")
    with pytest.raises(PublishError, match=f"not a weights folder: {WEIGHTS_FILE} missing"):
        push_folder(tmp_path / "w", REPO, token=TOKEN)
    assert hub_api.calls == []
