"""``pip install .`` gives the library alone: a wheel holding ``cifar_model`` (not the app, tests,
benchmarks, training code or weights) that loads weights and classifies a picture from outside the
checkout, with the dependencies pyproject.toml names.

The wheel is built offline from a copy of the checkout (``--no-build-isolation``: the venv's own
setuptools), installed with ``--target`` into tmp_path, and imported by ``python -I`` run from another
folder, so neither the checkout nor the current directory can be what is imported.
"""

from __future__ import annotations

import json
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

pytestmark = pytest.mark.timeout(120)

# Run by `python -I` (no checkout, no current directory, no PYTHONPATH) with the installed copy's
# folder added as a site directory, as pip's --target folder is meant to be used.
SCRIPT = r"""
import contextlib, importlib.util, io, json, site, sys
site.addsitedir(sys.argv[1])
import cifar_model
from cifar_model import Classifier, ModelLoadError
from cifar_model.__main__ import main
weights, photo = sys.argv[2:4]
out = {"file": cifar_model.__file__, "checkout_visible": [m for m in ("app", "train", "tests")
                                                           if importlib.util.find_spec(m) is not None]}
out["probs"] = Classifier.from_pretrained(weights, precision="fp32").predict(photo)[0]
with contextlib.redirect_stdout(io.StringIO()) as cli:
    out["cli_status"] = main(["--model", weights, "--top", "1", photo])
out["cli"] = cli.getvalue()
try:
    Classifier.from_pretrained()
    out["no_source"] = None
except ModelLoadError as err:
    out["no_source"] = str(err)
print(json.dumps(out))
"""


def checkout_files() -> list[str]:
    """What a clone holds (plus files not yet committed): git's tracked and untracked-not-ignored files."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    return [f for f in listed if f and (ROOT / f).is_file()]


def pip(*args: str, cwd: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `pip install .` builds, from a copy of the checkout (building writes build/ and
    *.egg-info into the source folder)."""
    import setuptools

    needed = Requirement(tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"][0])
    if not needed.specifier.contains(setuptools.__version__):
        pytest.fail(f"building offline needs {needed} in this venv (it has {setuptools.__version__}): "
                    "pip install it (requirements-dev.txt)")
    tmp = tmp_path_factory.mktemp("install")
    for f in checkout_files():
        (tmp / "src" / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, tmp / "src" / f)
    pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp / "dist"), "./src", cwd=tmp)
    (found,) = (tmp / "dist").glob("*.whl")
    return found


def test_the_wheel_holds_the_library_and_nothing_else(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    assert {n.split("/")[0] for n in names} == {"cifar_model", dist_info}
    package = {n for n in names if n.startswith("cifar_model/")}
    assert package == {f"cifar_model/{p.name}" for p in (ROOT / "cifar_model").glob("*.py")}
    assert not [n for n in names if n.split("/")[0] in ("tests", "benchmarks", "weights", "train", "examples")
                or n.endswith((".safetensors", ".jpg", ".log"))]


def test_the_wheel_requires_what_the_library_imports(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        metadata = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    requires = [Requirement(line.split(":", 1)[1]) for line in metadata.splitlines()
                if line.startswith("Requires-Dist:")]
    assert {r.name.lower().replace("_", "-") for r in requires if not r.marker} == {
        "torch", "numpy", "pillow", "safetensors", "huggingface-hub"}
    assert {r.name for r in requires if r.marker and r.marker.evaluate({"extra": "train"})} == {"torchvision", "tqdm"}
    assert "Requires-Python: >=3.10" in metadata


def test_requirements_txt_pins_are_within_the_librarys_ranges() -> None:
    # requirements.txt is what a Space runs; the library's ranges must admit exactly those versions.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ranges = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["train"]]
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            pin = Requirement(line)
            pins[pin.name.lower().replace("_", "-")] = Version(next(iter(pin.specifier)).version)
    for r in ranges:
        name = r.name.lower().replace("_", "-")
        assert name in pins, f"{r.name} is a dependency of the library but not pinned in requirements.txt"
        assert r.specifier.contains(pins[name]), f"requirements.txt pins {name}=={pins[name]}, outside {r}"


def test_the_installed_copy_loads_weights_and_classifies_outside_the_checkout(
        wheel: Path, tmp_path: Path, classifier) -> None:
    site = tmp_path / "site"
    pip("install", "--no-deps", "--no-index", "--target", str(site), str(wheel), cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run([sys.executable, "-I", "-c", SCRIPT, str(site), str(ROOT / "weights"), str(PHOTO)],
                          cwd=elsewhere, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])

    assert Path(out["file"]).is_relative_to(site) and out["checkout_visible"] == []  # the installed copy
    from cifar_model import Classifier

    expected = Classifier(classifier.model, precision="fp32").predict(PHOTO)[0]
    assert out["probs"].keys() == expected.keys()
    assert out["probs"] == pytest.approx(expected, abs=1e-6)
    assert out["cli_status"] == 0 and out["cli"].startswith(f"{PHOTO}: {max(expected, key=expected.get)} ")
    # An installed copy has no bundled weights/: asking for them must say what to pass instead.
    assert out["no_source"] is not None
    assert "bundled" in out["no_source"].lower() and "hub repo id" in out["no_source"].lower(), out["no_source"]
