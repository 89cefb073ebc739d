"""Publishing a weights folder to the Hugging Face Hub, and pinning the commit it made.

    python -m train.publish runs/cifar you/cifar10-seed-cnn      # push a folder trained earlier

Only the files a weights folder is made of (``config.json``, ``model.safetensors``,
``metrics.json``, ``README.md``) are uploaded, as they are: the model card written at training
time is the one the Hub shows, never a regenerated one. Nothing local is deleted or changed, so a
failed push can simply be run again.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cifar_model.weights import CONFIG_FILE, HUB_FILES, WEIGHTS_FILE


class PublishError(RuntimeError):
    """The folder could not be pushed. The message says why, what to do, and that the folder is kept."""


def push_folder(
    folder: Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload CIFAR-10 CNN weights",
) -> str:
    """Create ``repo_id`` if needed (a model repo) and upload the weights folder to it in one commit.

    Args:
        folder: a weights folder (``config.json`` and ``model.safetensors``; ``metrics.json`` and
            the ``README.md`` card when present). Other files in it are not uploaded.
        repo_id: ``owner/name`` on the Hub.
        token: a write token; by default ``HF_TOKEN`` or the login saved by ``hf auth login``.
        private: create the repo private (an existing repo keeps its visibility).
        commit_message: the commit's title.

    Returns:
        The 40-hex commit sha, to pin: ``Classifier.from_pretrained(repo_id, revision=sha)``.

    Raises:
        PublishError: not a weights folder, no token, the token refused, the Hub unreachable...
    """
    from huggingface_hub import HfApi, get_token

    folder = Path(folder)
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
    if missing:
        raise PublishError(f"{folder} is not a weights folder: {' and '.join(missing)} missing.")
    kept = f"the folder is kept at {folder}"
    token = token or get_token()
    if not token:
        raise PublishError(f"No Hugging Face token: run `hf auth login` or set HF_TOKEN; {kept}.")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, exist_ok=True, repo_type="model", private=private)
        commit = api.upload_folder(
            folder_path=folder, repo_id=repo_id, repo_type="model",
            allow_patterns=HUB_FILES, commit_message=commit_message,
        )
    except Exception as err:  # the Hub's and the network's failures come in many types (HTTP, transport, disk)
        raise PublishError(f"Could not push {repo_id} to {api.endpoint}: {_explain(err)}; {kept}.") from err
    return commit.oid


def _explain(err: Exception) -> str:
    """What went wrong in one line, with what to do where there is something to do."""
    from huggingface_hub.errors import HfHubHTTPError

    response = getattr(err, "response", None) if isinstance(err, HfHubHTTPError) else None
    status = response.status_code if response is not None else None
    what = f"{type(err).__name__}: {' '.join(str(err).split())}"  # one line: the Hub's messages span several
    if status == 401:
        return "the token was refused (401): run `hf auth login` again or set a valid HF_TOKEN"
    if status == 403:
        return "the token may not write there (403): use a write token for a namespace you belong to"
    if status is not None:  # checked before transport errors: HfHubHTTPError is an HTTP client error too
        return f"the Hub answered {status}{': try again later' if status >= 500 else ''} ({what})"
    # huggingface_hub's HTTP client (httpx2) is its own dependency, not ours: its errors are told by name.
    kinds = {c.__name__ for c in type(err).__mro__}
    if kinds & {"TimeoutException", "TimeoutError"}:
        return f"the Hub did not answer in time ({what})"
    if kinds & {"TransportError", "HTTPError", "ConnectionError"}:
        return f"the Hub could not be reached ({what})"
    return what


def main(argv: list[str] | None = None) -> int:
    """``python -m train.publish FOLDER REPO_ID``: push a weights folder and print how to load it."""
    p = argparse.ArgumentParser(prog="python -m train.publish", description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, help="a weights folder (config.json, model.safetensors, ...)")
    p.add_argument("repo_id", help="the Hub model repo, owner/name")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--message", default="Upload CIFAR-10 CNN weights", help="commit message")
    args = p.parse_args(argv)
    try:
        sha = push_folder(args.folder, args.repo_id, private=args.private, commit_message=args.message)
    except PublishError as err:
        print(f"push failed: {err}", file=sys.stderr)
        return 1
    print(sha)
    print(f'Classifier.from_pretrained("{args.repo_id}", revision="{sha}")')
    return 0


if __name__ == "__main__":
    sys.exit(main())
