"""``pip install .`` gives the library alone: a wheel holding ``cifar_model`` (not the app, tests, training
code or weights), requiring what it imports (in ranges requirements.txt's pins satisfy), that loads weights
and classifies a picture from outside the checkout: installed with ``--target`` into tmp_path and imported
by ``python -I`` from another folder, so neither the checkout nor the current directory is what is imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "examples" / "cat_1.jpg"
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]

pytestmark = [
    pytest.mark.timeout(120),
    # mutmut's copy has no LICENSE, README.md or requirements.txt (and a wheel per mutant would take minutes).
    pytest.mark.skipif("MUTANT_UNDER_TEST" in os.environ, reason="packaging checks need the whole checkout"),
]

# Run by `python -I` (no checkout, no current directory, no PYTHONPATH) with pip's --target folder as a site dir.
SCRIPT = r"""
import contextlib, importlib.util, io, json, site, sys
site.addsitedir(sys.argv[1])
import cifar_model
from cifar_model import Classifier, ModelLoadError
from cifar_model.__main__ import main
weights, photo = sys.argv[2:4]
answer = Classifier.from_pretrained(weights, precision="fp32").predict(photo)
out = {"file": cifar_model.__file__, "answer": [answer.probabilities, answer.top, answer.unsure],
       "checkout_visible": [m for m in ("app", "guard", "train", "tests") if importlib.util.find_spec(m)]}
with contextlib.redirect_stdout(io.StringIO()) as cli:
    out["cli_status"] = main(["--model", weights, "--top", "1", photo])
out["cli"] = cli.getvalue()
try:
    Classifier.from_pretrained()
except ModelLoadError as err:
    out["no_source"] = str(err)
print(json.dumps(out))
"""


def run(*args: str, cwd: Path) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def canonical(name: str) -> str:
    return name.lower().replace("_", "-")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `pip install .` builds (offline, the venv's setuptools) from a copy of what a clone holds."""
    tmp = tmp_path_factory.mktemp("install")
    for f in run("git", "ls-files", "--cached", "--others", "--exclude-standard", cwd=ROOT).splitlines():
        if (ROOT / f).is_file():
            (tmp / "src" / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, tmp / "src" / f)
    run(*PIP, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", "dist", "./src", cwd=tmp)
    (found,) = (tmp / "dist").glob("*.whl")
    return found


def test_the_wheel_holds_the_library_and_nothing_else(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    assert {n.split("/")[0] for n in names} == {"cifar_model", dist_info}
    assert {n for n in names if n.startswith("cifar_model/")} == {
        f"cifar_model/{p.name}" for p in (ROOT / "cifar_model").glob("*.py")}


def test_the_wheel_requires_what_the_library_imports(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        metadata = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    requires = [Requirement(line.split(":", 1)[1]) for line in metadata.splitlines()
                if line.startswith("Requires-Dist:")]
    assert {canonical(r.name) for r in requires if not r.marker} == {
        "torch", "numpy", "pillow", "safetensors", "huggingface-hub"}
    assert {r.name for r in requires if r.marker and r.marker.evaluate({"extra": "train"})} == {
        "torchvision", "tqdm", "onnx", "onnxscript"}
    assert "Requires-Python: >=3.10" in metadata


def test_requirements_txt_pins_are_within_the_librarys_ranges() -> None:
    # requirements.txt is what a Space runs; the library's ranges must admit exactly those versions.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = [s for s in (ROOT / "requirements.txt").read_text().splitlines() if s.strip() and not s.startswith("#")]
    pins = {canonical(r.name): Version(next(iter(r.specifier)).version) for r in map(Requirement, lines)}
    for r in map(Requirement, project["dependencies"] + project["optional-dependencies"]["train"]):
        assert canonical(r.name) in pins, f"{r.name} is a dependency of the library but not pinned in requirements.txt"
        assert r.specifier.contains(pins[canonical(r.name)]), f"requirements.txt pins {r.name} outside {r}"


def test_the_installed_copy_loads_weights_and_classifies_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    run(*PIP, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel), cwd=tmp_path)
    elsewhere.mkdir()
    out = json.loads(run(sys.executable, "-I", "-c", SCRIPT, str(site), str(ROOT / "weights"), str(PHOTO),
                         cwd=elsewhere).splitlines()[-1])
    assert Path(out["file"]).is_relative_to(site) and out["checkout_visible"] == []  # the installed copy

    from cifar_model import Classifier

    expected = Classifier.from_pretrained(ROOT / "weights", precision="fp32").predict(PHOTO)
    probabilities, top, unsure = out["answer"]
    assert list(probabilities) == list(expected.probabilities) and (top, unsure) == (expected.top, expected.unsure)
    assert probabilities == pytest.approx(expected.probabilities, abs=1e-5)
    assert out["cli_status"] == 0 and out["cli"].startswith(f"{PHOTO}: ") and f" {top} " in out["cli"]
    # An installed copy has no bundled weights/: asking for them must say what to pass instead.
    assert "bundled" in out["no_source"] and "Hub repo id" in out["no_source"], out["no_source"]
