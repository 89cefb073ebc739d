"""Where weights come from (the bundled folder, a local folder, a Hub repo) and our code at the
huggingface_hub boundary: what we pass to ``snapshot_download``, ``create_repo`` and ``upload_folder``,
what we make of their errors, and one end-to-end load of a pinned repo from a hand-built offline cache.

huggingface_hub's functions are replaced by fakes that record their arguments (bound to the real
signature: a renamed parameter fails here, not on the Hub); HTTP errors are made as huggingface_hub
makes them (``hf_raise_for_status``). Every test fails if anything tries to reach the network."""

from __future__ import annotations

import errno
import hashlib
import inspect
import os
import shutil
import socket
from pathlib import Path
from types import SimpleNamespace

import httpx2
import pytest
from huggingface_hub import CommitInfo, HfApi, constants
from huggingface_hub.errors import HfHubHTTPError, IncompleteSnapshotError, LocalEntryNotFoundError
from huggingface_hub.utils import hf_raise_for_status

from cifar_model import Classifier, ModelLoadError, Weights, load
from cifar_model import weights as weights_module
from cifar_model.weights import resolve
from train import publish
from train.publish import PublishError, push_folder

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "weights"
CAT = ROOT / "examples" / "cat_1.jpg"
REPO = "owner/name"
SHA = "0123456789abcdef0123456789abcdef01234567"  # a commit sha: 40 hex digits
TOKEN = "hf_test_token"
ENDPOINT = "https://huggingface.co"
FOLDER_FILES = ["config.json", "model.safetensors", "metrics.json", "model.onnx", "example.jpg", "README.md"]
REAL_SNAPSHOT_DOWNLOAD = inspect.signature(__import__("huggingface_hub").snapshot_download)


# ---------------------------------------------------------------------------- isolation

@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch):
    """Refuse, and fail the test on, any connection or name lookup (a refused one alone could pass
    unnoticed: huggingface_hub falls back to its cache on some network errors)."""
    attempts: list[tuple] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise ConnectionRefusedError(f"test_hub blocks every connection and name lookup: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield
    assert not attempts, f"the test tried to reach the network: {attempts}"


@pytest.fixture(autouse=True)
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """HF_HOME in tmp_path, no token, online, the default endpoint (constants too: read at import)."""
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


@pytest.fixture(scope="module")
def bundled() -> Weights:
    return load()


def http_error(status: int, url: str, method: str = "GET", **headers: str) -> HfHubHTTPError:
    """The typed error huggingface_hub raises for this response (RepositoryNotFoundError, ...)."""
    response = httpx2.Response(status, headers=headers, request=httpx2.Request(method, url))
    try:
        hf_raise_for_status(response)
    except HfHubHTTPError as err:
        return err
    raise AssertionError(f"hf_raise_for_status did not raise for {status}")


@pytest.fixture
def download(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> SimpleNamespace:
    """snapshot_download replaced: each call's arguments recorded (bound to the real signature); it raises
    ``error`` if set, else returns a snapshot folder (named by its commit) of the bundled files."""
    fake = SimpleNamespace(folder=tmp_path / "models--owner--name" / "snapshots" / SHA, error=None, calls=[])
    fake.folder.mkdir(parents=True)
    for f in BUNDLED.iterdir():
        (fake.folder / f.name).symlink_to(f)

    def snapshot_download(*args, **kwargs) -> str:
        fake.calls.append(REAL_SNAPSHOT_DOWNLOAD.bind(*args, **kwargs).arguments)
        if fake.error is not None:
            raise fake.error
        return str(fake.folder)

    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)
    return fake


# ---------------------------------------------------------------------------- where the weights are

def test_an_installed_copy_has_no_bundled_folder_and_says_what_to_pass(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(weights_module, "BUNDLED_WEIGHTS", tmp_path / "missing")
    with pytest.raises(ModelLoadError) as err:
        resolve()
    message = str(err.value)
    assert message.startswith("No bundled weights in an installed copy of cifar_model")
    assert "checkout): pass a weights folder" in message and message.endswith("or a Hub repo id.")


def test_a_local_folder_is_used_as_it_is(tmp_path: Path, monkeypatch, download: SimpleNamespace) -> None:
    (tmp_path / "owner" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert resolve("owner/name") == ("owner/name", Path("owner/name"), None)  # a folder and a repo id: the folder
    assert resolve(tmp_path / "owner") == (str(tmp_path / "owner"), tmp_path / "owner", None)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve("~/owner") == ("~/owner", tmp_path / "owner", None)
    assert download.calls == []


@pytest.mark.parametrize("source", ["../x", "a/b/c", "x--y", "x..y", "-x", "name.git", "owner/", "a b",
                                    "./no/such/folder", "/no/such/folder", Path("runs/missing"),
                                    str(BUNDLED / "model.safetensors")])
def test_not_a_folder_nor_a_repo_id_never_reaches_the_hub(download: SimpleNamespace, source) -> None:
    # Path("runs/missing") reads like a repo id, but a Path always names a folder.
    with pytest.raises(ModelLoadError) as err:
        load(source)
    assert str(err.value) == (f"{source} is a file: pass the weights folder that holds it" if Path(source).is_file()
                              else f"No such weights folder: {source}")
    assert download.calls == []


# ---------------------------------------------------------------------------- downloading: what we pass

@pytest.mark.parametrize("revision, hub_kwargs", [("v1.0", {"cache_dir": "/c", "token": TOKEN}),
                                                   (None, {"local_files_only": True})])
def test_a_repo_id_is_downloaded_at_its_revision_with_only_the_weights_files(
        download: SimpleNamespace, bundled: Weights, revision: str | None, hub_kwargs: dict) -> None:
    w = load(REPO, revision, **hub_kwargs)
    assert download.calls == [{"repo_id": REPO, "revision": revision, "allow_patterns": FOLDER_FILES} | hub_kwargs]
    # The revision recorded is the commit the snapshot folder is named by, not the tag asked for.
    assert (w.source, w.revision, w.label, w.folder) == (REPO, SHA, "owner/name@0123456", download.folder)
    assert w.metrics == bundled.metrics and w.config == bundled.config


# ---------------------------------------------------------------------------- downloading: their errors

API = f"{ENDPOINT}/api/models/{REPO}/revision/v2"
NO_REPO = "No model repo 'owner/name' on the Hugging Face Hub (or it is private: set HF_TOKEN)."
NOT_CACHED = "Could not reach the Hugging Face Hub for owner/name@v2, and it is not in the local cache."
FAILED = "Could not download owner/name@v2 from the Hugging Face Hub: "


@pytest.mark.parametrize("revision, error, message", [
    ("v2", lambda: http_error(404, API, **{"X-Error-Code": "RepoNotFound"}), NO_REPO),
    ("v2", lambda: http_error(401, API), NO_REPO),  # private, no token: the Hub answers 401
    ("v2", lambda: http_error(403, API, **{"X-Error-Code": "GatedRepo"}),
     "The repo 'owner/name' is gated: accept its terms on the Hub and set HF_TOKEN."),
    ("v2", lambda: http_error(404, API, **{"X-Error-Code": "RevisionNotFound"}),
     "The repo 'owner/name' has no revision 'v2'."),
    ("v2", lambda: LocalEntryNotFoundError("Cannot find an appropriate cached snapshot folder"), NOT_CACHED),
    (None, lambda: LocalEntryNotFoundError("offline"),
     "Could not reach the Hugging Face Hub for owner/name, and it is not in the local cache."),
    ("v2", lambda: IncompleteSnapshotError("The cached snapshot misses model.safetensors", "/cache/snap"), NOT_CACHED),
    ("v2", lambda: http_error(500, API), FAILED + "HfHubHTTPError: Server error '500 Internal Server Error' for url"),
    ("v2", lambda: httpx2.ProxyError("407 Proxy\n  Authentication Required"),
     FAILED + "ProxyError: 407 Proxy Authentication Required"),  # one line, whatever the error's own lines
    ("v2", lambda: httpx2.ConnectError("[Errno 111] Connection refused"), FAILED + "ConnectError: [Errno 111]"),
    ("v2", lambda: httpx2.ReadTimeout("The read operation timed out"), FAILED + "ReadTimeout: The read"),
    ("v2", lambda: OSError(errno.ENOSPC, "No space left on device"), FAILED + "OSError: [Errno 28] No space left"),
], ids=["not-found", "private", "gated", "no-revision", "offline-uncached", "offline-no-revision-asked",
        "offline-incomplete", "server-error", "proxy", "transport", "timeout", "disk-full"])
def test_each_hub_error_becomes_a_model_load_error_naming_the_repo(
        download: SimpleNamespace, revision: str | None, error, message: str) -> None:
    download.error = error()
    with pytest.raises(ModelLoadError) as caught:
        load(REPO, revision)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # one message, no chained traceback
    assert len(download.calls) == 1


def test_an_interrupt_is_not_turned_into_a_load_error(download: SimpleNamespace) -> None:
    download.error = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        load(REPO)


# ---------------------------------------------------------------------------- end to end, offline

def test_a_pinned_repo_loads_offline_from_a_hand_built_cache(monkeypatch: pytest.MonkeyPatch,
                                                             bundled: Weights) -> None:
    """The real snapshot_download, HF_HUB_OFFLINE=1, sockets blocked: the cache layout huggingface_hub
    documents (blobs named by hash, snapshot symlinks, refs/main) is all it has."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets at import
    repo_dir = Path(constants.HF_HUB_CACHE) / "models--owner--name"
    snapshot = repo_dir / "snapshots" / SHA
    (repo_dir / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for f in BUNDLED.iterdir():
        blob = repo_dir / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        blob.write_bytes(f.read_bytes())
        (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(SHA)

    expected = Classifier(bundled, precision="fp32").predict(CAT)
    for revision in (SHA, None):  # pinned, and main through refs/main
        w = load(REPO, revision=revision)
        assert (w.folder, w.revision, w.label) == (snapshot, SHA, "owner/name@0123456")
        answer = Classifier(w, precision="fp32").predict(CAT)
        assert answer.top == expected.top == "cat" and answer.unsure == expected.unsure
        assert answer.probabilities == pytest.approx(expected.probabilities, abs=1e-5)
    with pytest.raises(ModelLoadError, match="Could not reach the Hugging Face Hub for owner/other"):
        load("owner/other")


# ---------------------------------------------------------------------------- publishing: what we pass

@pytest.fixture
def hub_api(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """HfApi.create_repo and upload_folder replaced: each call recorded (bound to the real signature) with
    the client's token; ``errors[method]`` raised if set, else a commit returned."""
    hub = SimpleNamespace(calls=[], errors={})

    def fake(name: str):
        signature = inspect.signature(getattr(HfApi, name))

        def method(api: HfApi, *args, **kwargs):
            arguments = signature.bind(api, *args, **kwargs).arguments
            del arguments["self"]
            hub.calls.append((name, arguments, api.token))
            if name in hub.errors:
                raise hub.errors[name]
            return CommitInfo(commit_url=f"{ENDPOINT}/{REPO}/commit/{SHA}", commit_message="", commit_description="",
                              oid=SHA)

        return method

    for name in ("create_repo", "upload_folder"):
        monkeypatch.setattr(HfApi, name, fake(name))
    return hub


@pytest.fixture
def run_folder(tmp_path: Path) -> Path:
    """A trained run's folder: the weights folder's files and one more."""
    shutil.copytree(BUNDLED, tmp_path / "w")
    (tmp_path / "w" / "optimizer.pt").write_bytes(b"not part of a weights folder")
    return tmp_path / "w"


def contents(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_push_creates_a_model_repo_and_uploads_only_the_weights_files(run_folder: Path, hub_api) -> None:
    before = contents(run_folder)
    assert push_folder(run_folder, REPO, token=TOKEN) == SHA
    assert hub_api.calls == [
        ("create_repo", {"repo_id": REPO, "exist_ok": True, "repo_type": "model", "private": False}, TOKEN),
        ("upload_folder", {"folder_path": run_folder, "repo_id": REPO, "repo_type": "model",
                           "allow_patterns": FOLDER_FILES, "commit_message": "Upload CIFAR-10 CNN weights"}, TOKEN),
    ]
    assert contents(run_folder) == before  # the card is uploaded as it is: nothing written or deleted


def test_cli_pushes_private_with_the_saved_token_and_prints_how_to_load(
        run_folder: Path, hub_api: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # read by huggingface_hub's get_token at call time
    assert publish.main([str(run_folder), REPO, "--private", "--message", "Epoch 40"]) == 0
    (_, create, token), (_, upload, _) = hub_api.calls
    assert create["private"] is True and upload["commit_message"] == "Epoch 40" and token == TOKEN
    assert capsys.readouterr().out.splitlines() == [SHA, f'Classifier.from_pretrained("{REPO}", revision="{SHA}")']


# ---------------------------------------------------------------------------- publishing: their errors

@pytest.mark.parametrize("missing, problem", [
    (None, "No Hugging Face token: run `hf auth login` or set HF_TOKEN; the folder is kept at "),
    ("model.safetensors", "is not a weights folder: model.safetensors missing."),
    ("config.json", "is not a weights folder: config.json missing."),
])
def test_push_refuses_before_calling_the_hub(run_folder: Path, hub_api: SimpleNamespace, monkeypatch, missing,
                                            problem: str) -> None:
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)  # no saved login either
    if missing:
        (run_folder / missing).unlink()
    before = contents(run_folder)
    with pytest.raises(PublishError) as err:
        push_folder(run_folder, REPO, token=TOKEN if missing else None)
    assert problem in str(err.value) and str(run_folder) in str(err.value)
    assert hub_api.calls == [] and contents(run_folder) == before


CREATE = f"{ENDPOINT}/api/repos/create"
PREUPLOAD = f"{ENDPOINT}/api/models/{REPO}/preupload/main"


@pytest.mark.parametrize("method, error, reason", [
    ("create_repo", lambda: http_error(401, CREATE, "POST"),
     "the token was refused (401): run `hf auth login` again or set a valid HF_TOKEN"),
    ("create_repo", lambda: http_error(403, CREATE, "POST"),
     "the token may not write there (403): use a write token for a namespace you belong to"),
    ("upload_folder", lambda: http_error(403, PREUPLOAD, "POST"), "the token may not write there (403)"),
    ("create_repo", lambda: httpx2.ConnectError("[Errno 111] Connection refused"),
     "the Hub could not be reached (ConnectError: [Errno 111] Connection refused)"),
    ("upload_folder", lambda: httpx2.ReadTimeout("The read operation timed out"), "the Hub did not answer in time"),
    ("upload_folder", lambda: http_error(500, PREUPLOAD, "POST"),
     "the Hub answered 500: try again later (HfHubHTTPError: Server error '500 Internal Server Error' for url"),
    ("upload_folder", lambda: ValueError("Invalid metadata in README.md."), "ValueError: Invalid metadata in"),
], ids=["401", "403", "403-on-upload", "unreachable", "timeout", "server-error", "bad-card"])
def test_push_failure_says_what_to_do_and_keeps_the_folder(
        run_folder: Path, hub_api: SimpleNamespace, capsys, monkeypatch: pytest.MonkeyPatch, method: str, error,
        reason: str) -> None:
    before = contents(run_folder)
    hub_api.errors[method] = error()
    with pytest.raises(PublishError) as err:
        push_folder(run_folder, REPO, token=TOKEN)
    message = str(err.value)
    assert message.startswith(f"Could not push {REPO} to {ENDPOINT}: {reason}"), message
    assert message.endswith(f"; the folder is kept at {run_folder}.") and "\n" not in message
    assert contents(run_folder) == before

    monkeypatch.setenv("HF_TOKEN", TOKEN)  # the command line says the same, on stderr, and exits 1
    assert publish.main([str(run_folder), REPO]) == 1
    assert capsys.readouterr().err == f"push failed: {message}\n"

