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
import sys
import tarfile
import zlib
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cifar_model import CLASSES, ImageError, to_uint8

DEFAULT_CACHE = Path(os.environ.get("CIFAR_CACHE", Path.home() / ".cache" / "cifar_demo"))
# The project's "CIFAR-10 raw jpeg images" archive: every picture re-encoded at JPEG quality 75.
JPEG_COPY_SHA256 = "a04ab66c4749177440136b75dc33ed026bff4a95bf6d58b46fb4109a892232d6"
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_SPLITS = ("train", "test")

# Limits for an archive or folder from anywhere, checked from tar headers / file sizes before any data is read.
# A CIFAR picture is 1-3 KB as JPEG, ~3 KB as PNG: a file over 1 MB is not one we would train on, so it is skipped.
MAX_MEMBER_BYTES = 1 << 20
# A split's pictures are held in memory, encoded, while they decode; CIFAR-10's 60,000 are well under 1 GiB.
MAX_TOTAL_BYTES = 1 << 30
# tarfile keeps every header it has read: CIFAR-10 has ~60,000 members (files and folders).
MAX_MEMBERS = 200_000
# A few broken files are survivable (skipped and counted); more than this share of a split's candidate
# pictures means the wrong or a damaged archive, and training on the rest would mislead.
MAX_SKIPPED_SHARE = 0.01


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
    skipped: int = 0  # pictures left out, both splits: undecodable or over MAX_MEMBER_BYTES

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
    cifar = _from_cache(cached) if cached.is_file() else _decode_to_cache(path, cached, workers)
    cifar.source, cifar.sha256 = _describe(path, digest), digest
    if cifar.skipped:
        print(f"data: skipped {cifar.skipped:,} files that are not usable pictures (damaged, not a picture, "
              f"or over {MAX_MEMBER_BYTES:,} bytes)", file=sys.stderr)
    return cifar


def _from_cache(cached: Path) -> Cifar:
    with np.load(cached) as z:
        # a cache written before skipped files were counted has no "skipped": nothing was skipped then
        skipped = int(z["skipped"]) if "skipped" in z.files else 0
        return Cifar(z["train_images"], z["train_labels"], z["test_images"], z["test_labels"],
                     list(CLASSES), "", skipped=skipped)


def _decode_to_cache(path: Path, cached: Path, workers: int | None) -> Cifar:
    splits = {split: _decode(*_read_split(path, split), workers, split) for split in _SPLITS}
    skipped = splits["train"][2] + splits["test"][2]
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp.npz")
    np.savez(tmp, train_images=splits["train"][0], train_labels=splits["train"][1],
             test_images=splits["test"][0], test_labels=splits["test"][1], skipped=np.int64(skipped))
    tmp.replace(cached)
    return Cifar(*splits["train"][:2], *splits["test"][:2], list(CLASSES), "", skipped=skipped)


def _describe(path: Path, digest: str | None) -> str:
    return f"{path.name} (sha256 {digest})" if digest else f"ImageFolder {path}"


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def iter_split(path: Path, split: str) -> Iterator[tuple[bytes, int]]:
    """(encoded picture, label) for every file under ``<split>/<class>/``, in a stable order. Files over
    MAX_MEMBER_BYTES are left out; an archive over MAX_MEMBERS or MAX_TOTAL_BYTES is a SystemExit."""
    yield from _read_split(path, split)[0]


def _where(rel: str) -> tuple[str, int] | None:
    """(split, label) of a picture at ``rel`` = ``.../<split>/<class>/<name>.<image suffix>``, else None."""
    parts = rel.strip("./").split("/")
    if len(parts) >= 3 and parts[-3] in _SPLITS and parts[-2] in CLASSES and rel.lower().endswith(_IMAGE_SUFFIXES):
        return parts[-3], CLASSES.index(parts[-2])
    return None


def _read_split(path: Path, split: str) -> tuple[list[tuple[bytes, int]], int]:
    """The split's (encoded picture, label) pairs, and how many pictures were over MAX_MEMBER_BYTES."""
    return _read_tree(path, split) if path.is_dir() else _read_tar(path, split)


def _read_tree(path: Path, split: str) -> tuple[list[tuple[bytes, int]], int]:
    items, oversize = [], 0
    for file in sorted(path.rglob("*")):
        where = _where(file.relative_to(path).as_posix())
        if where is None or where[0] != split or not file.is_file():
            continue
        if file.stat().st_size > MAX_MEMBER_BYTES:
            oversize += 1
        else:
            items.append((file.read_bytes(), where[1]))
    return items, oversize


def _read_tar(path: Path, split: str) -> tuple[list[tuple[bytes, int]], int]:
    try:
        with tarfile.open(path) as tar:  # mode "r:*" reads .tar and .tar.gz alike
            wanted, oversize = _plan_tar(path, tar, split)
            # Read in archive order, then sort by name: a gzip stream can't seek back cheaply, so after the
            # header pass this is one rewind and one forward pass.
            found = [(member.name, tar.extractfile(member).read(), label) for member, label in wanted]
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as err:  # truncated, corrupt, not a tar
        raise SystemExit(f"--data: {path.name} is not a readable tar archive ({err})") from None
    return [(blob, label) for _, blob, label in sorted(found)], oversize


def _plan_tar(path: Path, tar: tarfile.TarFile, split: str) -> tuple[list[tuple[tarfile.TarInfo, int]], int]:
    """From the headers alone, before any data is read: the split's members to read with their labels,
    and how many of its pictures are over MAX_MEMBER_BYTES. Only regular files are candidates (a link
    could point anywhere). The total counts both splits, so both reads of an archive see the same."""
    wanted, oversize, total = [], 0, 0
    for count, member in enumerate(tar, 1):
        if count > MAX_MEMBERS:
            raise SystemExit(f"--data: {path.name} has more than {MAX_MEMBERS:,} members (MAX_MEMBERS); "
                             "this is not a CIFAR-10 archive")
        where = _where(member.name) if member.isfile() else None
        if where is None:
            continue
        if not 0 <= member.size <= MAX_MEMBER_BYTES:  # a base-256 header can say -5000, to shrink the total
            oversize += 1 if where[0] == split else 0
            continue
        total += member.size
        if total > MAX_TOTAL_BYTES:
            raise SystemExit(f"--data: {path.name} holds more than {MAX_TOTAL_BYTES:,} bytes of pictures "
                             "(MAX_TOTAL_BYTES); this is not a CIFAR-10 archive")
        if where[0] == split:
            wanted.append((member, where[1]))
    return wanted, oversize


def _decode_one(blob: bytes) -> np.ndarray | None:
    try:
        return to_uint8(io.BytesIO(blob))
    except ImageError:  # one bad file must not abort the whole load: None is counted by _decode
        return None


def _decode(items: list[tuple[bytes, int]], oversize: int, workers: int | None,
            split: str) -> tuple[np.ndarray, np.ndarray, int]:
    """N x 32 x 32 x 3 pictures, their labels, and how many candidates were skipped (``oversize`` included)."""
    candidates = len(items) + oversize
    if not candidates:
        raise SystemExit("--data: found no pictures under train/<class>/ or test/<class>/")
    blobs, labels = zip(*items) if items else ((), ())
    workers = workers or os.cpu_count() or 1
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            images = list(pool.map(_decode_one, blobs, chunksize=512))
    else:
        images = [_decode_one(b) for b in blobs]
    kept = [i for i, image in enumerate(images) if image is not None]
    skipped = candidates - len(kept)
    if skipped > MAX_SKIPPED_SHARE * candidates or not kept:
        raise SystemExit(f"--data: {skipped:,} of the {candidates:,} {split} pictures are damaged, not pictures, or "
                         f"over {MAX_MEMBER_BYTES:,} bytes (the limit is {MAX_SKIPPED_SHARE:.0%}); check the data")
    return np.stack([images[i] for i in kept]), np.asarray([labels[i] for i in kept], dtype=np.int64), skipped


def _from_torchvision(cache_dir: Path) -> Cifar:
    import torchvision

    root = cache_dir / "torchvision"
    train = torchvision.datasets.CIFAR10(root, train=True, download=True)
    test = torchvision.datasets.CIFAR10(root, train=False, download=True)
    if list(train.classes) != list(CLASSES):
        raise SystemExit(f"torchvision's CIFAR-10 classes {train.classes} differ from {list(CLASSES)}")
    # The original pictures are already 32x32 RGB uint8: to_uint8 would return them unchanged.
    labels = [np.asarray(split.targets, dtype=np.int64) for split in (train, test)]
    return Cifar(train.data, labels[0], test.data, labels[1], list(CLASSES),
                 "torchvision CIFAR-10 (original binary batches)")
