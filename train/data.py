"""CIFAR-10 as uint8 arrays: from torchvision's download, an ImageFolder tree, or a .tar/.tar.gz of one.

Every picture goes through ``cifar_model.to_uint8``, the same function the app uses, so the network
is trained and scored on exactly what inference feeds it. Decoding 60,000 JPEGs takes seconds on
many cores and half a minute on one, so the result is cached as one ``.npz`` keyed by the source's
sha256.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cifar_model import CLASSES, to_uint8

DEFAULT_CACHE = Path(os.environ.get("CIFAR_CACHE", Path.home() / ".cache" / "cifar_demo"))
# The project's "CIFAR-10 raw jpeg images" archive: every picture re-encoded at JPEG quality 75.
JPEG_COPY_SHA256 = "a04ab66c4749177440136b75dc33ed026bff4a95bf6d58b46fb4109a892232d6"
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass
class Cifar:
    """The two splits as N x 32 x 32 x 3 uint8 pictures and int64 labels indexing ``classes``."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list[str]
    source: str  # human-readable description for the model card
    sha256: str | None = None  # of the archive, when the data came from one file

    @property
    def test_name(self) -> str:
        """How to name the test split in a report (the project's JPEG copy is not the original)."""
        if self.sha256 == JPEG_COPY_SHA256:
            return "CIFAR-10 test split (JPEG q75 copy)"
        if self.sha256 is None and self.source.startswith("torchvision"):
            return "CIFAR-10 test split"
        return f"CIFAR-10 test split ({self.source})"


def load(spec: str, cache_dir: Path = DEFAULT_CACHE, workers: int | None = None) -> Cifar:
    """``spec`` is ``torchvision`` (download the original CIFAR-10) or a path to an ImageFolder tree
    (``train/<class>/*``, ``test/<class>/*``) or a ``.tar``/``.tar.gz`` of one."""
    if spec == "torchvision":
        return _from_torchvision(cache_dir)
    path = Path(spec).expanduser()
    if not path.exists():
        raise SystemExit(f"--data: no such file or folder: {spec}")
    digest = _sha256(path) if path.is_file() else None
    key = digest or hashlib.sha256(str(path.resolve()).encode()).hexdigest()
    cached = cache_dir / f"cifar10-{key[:16]}.npz"
    if cached.is_file():
        z = np.load(cached)
        return Cifar(z["train_images"], z["train_labels"], z["test_images"], z["test_labels"],
                     list(CLASSES), _describe(path, digest), digest)
    splits = {split: _decode(list(iter_split(path, split)), workers) for split in ("train", "test")}
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp.npz")
    np.savez(tmp, train_images=splits["train"][0], train_labels=splits["train"][1],
             test_images=splits["test"][0], test_labels=splits["test"][1])
    tmp.replace(cached)
    return Cifar(*splits["train"], *splits["test"], list(CLASSES), _describe(path, digest), digest)


def _describe(path: Path, digest: str | None) -> str:
    return f"{path.name} (sha256 {digest})" if digest else f"ImageFolder {path}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def iter_split(path: Path, split: str) -> Iterator[tuple[bytes, int]]:
    """(encoded picture, label) for every file under ``<split>/<class>/``, in a stable order."""
    index = {name: i for i, name in enumerate(CLASSES)}

    def label_of(rel: str) -> int | None:
        parts = rel.strip("./").split("/")
        if len(parts) >= 3 and parts[-3] == split and parts[-2] in index and rel.lower().endswith(_IMAGE_SUFFIXES):
            return index[parts[-2]]
        return None

    if path.is_dir():
        for file in sorted(path.rglob("*")):
            label = label_of(file.relative_to(path).as_posix())
            if label is not None:
                yield file.read_bytes(), label
        return
    found = []
    # Read in archive order (a gzip stream can't seek back cheaply), then sort by name.
    with tarfile.open(path) as tar:  # mode "r:*" reads .tar and .tar.gz alike
        for member in tar:
            label = label_of(member.name) if member.isfile() else None
            if label is not None:
                found.append((member.name, tar.extractfile(member).read(), label))
    for _, blob, label in sorted(found):
        yield blob, label


def _decode_one(blob: bytes) -> np.ndarray:
    return to_uint8(io.BytesIO(blob))


def _decode(items: list[tuple[bytes, int]], workers: int | None) -> tuple[np.ndarray, np.ndarray]:
    if not items:
        raise SystemExit("--data: found no pictures under train/<class>/ or test/<class>/")
    blobs, labels = zip(*items)
    workers = workers or os.cpu_count() or 1
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            images = list(pool.map(_decode_one, blobs, chunksize=512))
    else:
        images = [_decode_one(b) for b in blobs]
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def _from_torchvision(cache_dir: Path) -> Cifar:
    import torchvision

    root = cache_dir / "torchvision"
    train = torchvision.datasets.CIFAR10(root, train=True, download=True)
    test = torchvision.datasets.CIFAR10(root, train=False, download=True)
    if list(train.classes) != list(CLASSES):
        raise SystemExit(f"torchvision's CIFAR-10 classes {train.classes} differ from {list(CLASSES)}")
    # The original pictures are already 32x32 RGB uint8: to_uint8 would return them unchanged.
    return Cifar(train.data, np.asarray(train.targets, dtype=np.int64), test.data,
                 np.asarray(test.targets, dtype=np.int64), list(CLASSES), "torchvision CIFAR-10 (original binary batches)")
