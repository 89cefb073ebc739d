"""The README's deploy command gives a Space what it needs to run and nothing else.

The command (``hf upload``, huggingface_hub's own CLI) is read from the README, between the
``<!-- deploy-command -->`` and ``<!-- /deploy-command -->`` markers, and run through the real ``hf``
command line with ``HfApi.create_repo`` and ``HfApi.upload_folder`` replaced by fakes that record
what they are given. The patterns it passes are applied to the checkout's files the way
``upload_folder`` applies them (``filter_repo_objects``); the selected files are copied into an empty
folder and ``python app.py`` is started there and asked for a prediction. A file the Space needs but
the command leaves out fails here, not on the deployed Space.
"""

from __future__ import annotations

import inspect
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from huggingface_hub import CommitInfo, HfApi, RepoUrl
from huggingface_hub.utils import filter_repo_objects

from conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "examples" / "cat_1.jpg"
START, END = "<!-- deploy-command -->", "<!-- /deploy-command -->"
# What a Space runs: the app, the library, the weights, the examples, the pins, the README (its
# front matter configures the Space) and the licence that must travel with copies of the code.
NEEDED = ["app.py", "guard.py", "cifar_model/*.py", "static/*", "weights/*", "examples/*", "requirements.txt",
          "README.md"]
ALLOWED_EXTRA = {"LICENSE"}
NEVER = ("tests/", "benchmarks/", "data/", "train/", "docs/", ".ci/", ".venv/", "runs/")
# The format the README's block must have (also what a parser test reads).
EXAMPLE = f"""
Deploy:

{START}
```bash
hf upload your-name/cifar10-classifier . . --repo-type space \\
  --include "app.py" --include "guard.py" --include "cifar_model/*.py" --include "static/*" \\
  --include "weights/*" --include "examples/*" \\
  --include "requirements.txt" --include "README.md" --include "LICENSE" \\
  --exclude "*/.*" --exclude "*/__pycache__/*"
```
{END}
"""

pytestmark = [pytest.mark.timeout(240), pytest.mark.served]


def deploy_command(readme: str) -> list[str]:
    """The argv of the one command in the README's deploy block."""
    if START not in readme or END not in readme:
        pytest.fail(f"README.md has no deploy command: put the `hf upload` command between {START} and {END}"
                    " in a ```bash block")
    block = readme.split(START, 1)[1].split(END, 1)[0]
    fenced = re.fullmatch(r"\s*```bash\n(.*?)```\s*", block, re.DOTALL)
    assert fenced, f"the deploy block must hold one ```bash fenced block, got:\n{block}"
    argv = shlex.split(fenced.group(1).replace("\\\n", " "), comments=True)
    assert argv[:2] == ["hf", "upload"], f"the deploy block must be one `hf upload` command, got: {argv}"
    return argv


def run_hf(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> dict[str, dict]:
    """Run ``argv`` (``hf upload ...``) through huggingface_hub's real command line in the checkout,
    with the Hub calls faked (bound to their real signatures); return each call's arguments."""
    from huggingface_hub.cli.hf import app

    calls: dict[str, dict] = {}

    def fake(name: str):
        signature = inspect.signature(getattr(HfApi, name))

        def method(api: HfApi, *args, **kwargs):
            calls[name] = signature.bind(api, *args, **kwargs).arguments
            repo = f"spaces/{calls[name]['repo_id']}"
            if name == "create_repo":
                return RepoUrl(f"https://huggingface.co/{repo}", endpoint="https://huggingface.co")
            return CommitInfo(commit_url=f"https://huggingface.co/{repo}/commit/{'0' * 40}", commit_message="",
                              commit_description="", oid="0" * 40)

        return method

    for name in ("create_repo", "upload_folder"):
        monkeypatch.setattr(HfApi, name, fake(name))
    monkeypatch.setattr("socket.socket.connect", lambda *a: pytest.fail(f"hf upload tried to connect: {a}"))
    monkeypatch.chdir(ROOT)
    app.main(args=argv[1:], prog_name="hf", standalone_mode=False)
    return calls


def git_files(*options: str) -> list[str]:
    listed = subprocess.run(["git", "ls-files", "-z", *options], cwd=ROOT, capture_output=True, check=True)
    return [f for f in listed.stdout.decode().split("\0") if f and (ROOT / f).is_file()]


@pytest.fixture(scope="module")
def upload() -> dict:
    """What the README's command hands to upload_folder, and the checkout files it selects."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        calls = run_hf(deploy_command((ROOT / "README.md").read_text()), monkeypatch)
    args = calls["upload_folder"]
    patterns = {"allow_patterns": args.get("allow_patterns"), "ignore_patterns": args.get("ignore_patterns")}
    # A clone's files (what CI has), then also the ignored ones a working checkout holds (.venv, caches).
    clean = sorted(filter_repo_objects(git_files("--cached", "--others", "--exclude-standard"), **patterns))
    messy = sorted(filter_repo_objects(git_files("--cached", "--others"), **patterns))
    return {"calls": calls, "files": clean, "from_a_working_checkout": messy}


def test_the_command_parser_reads_the_documented_format() -> None:
    argv = deploy_command(EXAMPLE)
    assert argv[2:5] == ["your-name/cifar10-classifier", ".", "."] and "--include" in argv and "--exclude" in argv
    with pytest.raises(pytest.fail.Exception, match="README.md has no deploy command"):
        deploy_command("# A README without the block\n")


def test_readme_deploys_the_checkout_to_a_gradio_space(upload: dict) -> None:
    create, send = upload["calls"]["create_repo"], upload["calls"]["upload_folder"]
    assert create["repo_type"] == "space" and create["space_sdk"] == "gradio"
    assert send["repo_type"] == "space" and Path(send["folder_path"]).resolve() == ROOT
    assert send.get("path_in_repo") in (None, ".", "")  # the checkout's layout, at the Space's root
    assert not send.get("delete_patterns")  # nothing deleted on the Space (its .gitattributes stays)


def test_the_space_gets_what_it_needs_and_nothing_else(upload: dict) -> None:
    files = upload["files"]
    needed = sorted(filter_repo_objects(git_files("--cached", "--others", "--exclude-standard"), allow_patterns=NEEDED))
    assert set(needed) <= set(files), f"needed but not uploaded: {sorted(set(needed) - set(files))}"
    assert set(files) - set(needed) <= ALLOWED_EXTRA, f"uploaded but not needed: {sorted(set(files) - set(needed))}"
    assert not [f for f in files if f.startswith(NEVER) or "__pycache__" in f or "/." in f]
    # Run from a working checkout (not a fresh clone) it would send the same files: no caches,
    # no .venv, no local data or training runs.
    assert upload["from_a_working_checkout"] == files


def test_the_app_starts_from_exactly_those_files_and_predicts(upload: dict, tmp_path: Path, classifier) -> None:
    from gradio_client import Client, handle_file

    space = tmp_path / "space"
    for f in upload["files"]:
        (space / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, space / f)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MODEL_", "GRADIO_"))}
    port = free_port()
    env |= {"GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "GRADIO_MCP_SERVER": "False",
            "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    # -s -E: no user site-packages, no PYTHONPATH; the script's folder (the copy) comes first on sys.path.
    found = subprocess.run([sys.executable, "-s", "-E", "-c", "import importlib.util as u; "
                            "print(u.find_spec('cifar_model').origin)"], cwd=space, env=env, capture_output=True,
                           text=True, timeout=60)
    assert Path(found.stdout.strip()).is_relative_to(space), found  # not an installed or the checkout's copy
    log = tmp_path / "app.log"
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-s", "-E", "app.py"], cwd=space, env=env, stdout=out,
                                  stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 150
        while not _answers(url):
            assert server.poll() is None, f"app.py exited with {server.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"app.py did not answer within 150 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.25)
        label, _, _ = Client(url, verbose=False).predict(handle_file(str(PHOTO)), api_name="/predict")
        with urllib.request.urlopen(url + "live/model.onnx", timeout=10) as model:  # the Live tab's network
            assert model.read() == (ROOT / "weights" / "model.onnx").read_bytes()
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert label["label"] == classifier.predict(PHOTO).top
    assert {c["label"] for c in label["confidences"]} == set(classifier.classes)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False

