"""``python -m train`` on the CPU (train/__main__.py, train/recipe.py) and its data loading (train/data.py),
hostile archives and folders included: limits checked from the headers before anything is read, links
never read, broken pictures skipped, counted and capped."""

from __future__ import annotations

import functools
import gzip
import io
import json
import pathlib
import shutil
import sys
import tarfile
import types
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image

from cifar_model import CLASSES, Classifier, to_uint8
from train import data as datasets
from train.__main__ import main as train_main
from train.__main__ import parse_args
from train.recipe import TrainConfig, _augment, split_train_val

SAMPLE = Path(__file__).parent / "data" / "cifar10-test-sample"
MB = 1_048_576  # the documented per-picture limit


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """An ImageFolder tree from the committed sample: 12 train and 4 test pictures a class."""
    root = tmp_path_factory.mktemp("cifar")
    for c in CLASSES:
        files = sorted((SAMPLE / c).glob("*.jpg"))
        for split, chosen in (("train", files[:12]), ("test", files[40:44])):
            (root / split / c).mkdir(parents=True)
            for f in chosen:
                shutil.copy(f, root / split / c / f.name)
    return root


# --- loading a dataset -------------------------------------------------------------------------------------


def test_a_tree_and_its_archive_decode_to_the_same_pictures_once(tree, tmp_path, monkeypatch):
    archive = tmp_path / "cifar.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname="cifar")
    a = datasets.load(str(tree), tmp_path / "c1", workers=1)
    b = datasets.load(str(archive), tmp_path / "c2", workers=2)  # worker processes decode the same
    files = sorted((tree / "train").rglob("*.jpg"))
    np.testing.assert_array_equal(a.train_images, np.stack([to_uint8(f) for f in files]))  # the app's preprocessing
    assert a.train_labels.tolist() == [CLASSES.index(f.parent.name) for f in files]
    for x, y in ((a.train_images, b.train_images), (a.test_images, b.test_images), (a.test_labels, b.test_labels)):
        np.testing.assert_array_equal(x, y)
    assert (a.test_images.shape, a.train_labels.dtype, a.skipped) == ((40, 32, 32, 3), np.int64, 0)
    assert (a.sha256, a.source) == (None, f"ImageFolder {tree}")
    assert b.sha256 == datasets._sha256(archive) and b.source == f"cifar.tar.gz (sha256 {b.sha256})"
    assert b.test_name == f"CIFAR-10 test split (cifar.tar.gz (sha256 {b.sha256}))"
    assert [(blob[:2], label) for blob, label in datasets.iter_split(archive, "test")][:1] == [(b"\xff\xd8", 0)]
    monkeypatch.setattr(datasets, "_read_split", lambda *a: pytest.fail("a second load must come from the cache"))
    c = datasets.load(str(archive), tmp_path / "c2", workers=1)
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(getattr(b, field), getattr(c, field))
    assert (c.source, c.classes, c.skipped) == (b.source, list(CLASSES), 0)


@pytest.mark.parametrize("sha, source, name", [
    (datasets.JPEG_COPY_SHA256, "cifar10-jpeg.tar.gz", "CIFAR-10 test split (JPEG q75 copy)"),
    (None, "torchvision CIFAR-10 (original binary batches)", "CIFAR-10 test split"),
    ("ab" * 32, "torchvision.tar", "CIFAR-10 test split (torchvision.tar)"),
    (None, "ImageFolder /data", "CIFAR-10 test split (ImageFolder /data)"),
])
def test_the_test_split_is_named_after_its_source(sha, source, name):
    assert datasets.Cifar(*([np.zeros(1)] * 4), list(CLASSES), source, sha).test_name == name


def test_torchvision_data_is_used_as_it_comes(monkeypatch, tmp_path):
    made = []

    class CIFAR10:
        classes = list(CLASSES)

        def __init__(self, root, train, download):
            made.append((root, train, download))
            self.data = np.full((3 if train else 2, 32, 32, 3), 7, np.uint8)
            self.targets = [1, 2, 3][: len(self.data)]

    fake = types.SimpleNamespace(datasets=types.SimpleNamespace(CIFAR10=CIFAR10))
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    cifar = datasets.load("torchvision", tmp_path)
    assert made == [(tmp_path / "torchvision", True, True), (tmp_path / "torchvision", False, True)]
    assert cifar.train_labels.tolist() == [1, 2, 3] and cifar.test_labels.tolist() == [1, 2]
    assert (cifar.train_images.shape, cifar.test_images.shape) == ((3, 32, 32, 3), (2, 32, 32, 3))
    assert cifar.source == "torchvision CIFAR-10 (original binary batches)" and cifar.classes == list(CLASSES)
    CIFAR10.classes = ["cat", "dog"]
    with pytest.raises(SystemExit, match="classes"):
        datasets.load("torchvision", tmp_path)


def test_the_documented_limits():
    assert (datasets.MAX_MEMBER_BYTES, datasets.MAX_TOTAL_BYTES, datasets.MAX_MEMBERS, datasets.MAX_SKIPPED_SHARE) == (
        MB, 1 << 30, 200_000, 0.01)


# --- hostile archives and folders --------------------------------------------------------------------------


@functools.cache
def _jpeg(value: int) -> bytes:
    """A 32x32 JPEG of one grey level: its mean after decoding tells which class it was saved for."""
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (value,) * 3).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _grey(label: int) -> int:
    return 20 * label + 10


def _pictures() -> dict[str, bytes]:
    """One picture a class in each split (20 files), each of a grey level that encodes its label."""
    return {f"cifar/{split}/{c}/1.jpg": _jpeg(_grey(i)) for split in ("train", "test") for i, c in enumerate(CLASSES)}


def _padded(label: int, size: int) -> bytes:
    return _jpeg(_grey(label)).ljust(size, b"\0")  # decodes like the picture alone


def _special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def _tar(path: Path, files: dict[str, bytes], specials: tuple[tarfile.TarInfo, ...] = ()) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        for info in specials:
            tar.addfile(info)
    return path


def _tree(path: Path, files: dict[str, bytes]) -> Path:
    for name, blob in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(blob)
    return path / "cifar"


def _load(make, tmp_path: Path, files: dict[str, bytes], **kw) -> datasets.Cifar:
    return datasets.load(str(make(tmp_path / "data", files, **kw)), tmp_path / "cache", workers=1)


def _aligned(images: np.ndarray, labels: np.ndarray) -> None:
    """Every picture still sits next to its own label."""
    np.testing.assert_allclose(images.mean(axis=(1, 2, 3)), [_grey(y) for y in labels], atol=3)


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """Names of the files whose data the loader reads, from an archive or a folder."""
    names: list[str] = []
    extract, read_bytes = tarfile.TarFile.extractfile, pathlib.Path.read_bytes
    monkeypatch.setattr(tarfile.TarFile, "extractfile", lambda self, m: names.append(m.name) or extract(self, m))
    monkeypatch.setattr(pathlib.Path, "read_bytes", lambda self: names.append(self.as_posix()) or read_bytes(self))
    return names


@pytest.mark.parametrize("make", [_tar, _tree])
def test_a_picture_over_the_size_limit_is_skipped_unread_and_one_at_it_is_kept(make, tmp_path, reads, monkeypatch):
    files = _pictures() | {"cifar/test/cat/0_edge.jpg": _padded(3, MB), "cifar/test/dog/0_big.jpg": _padded(5, MB + 1)}
    monkeypatch.setattr(datasets, "MAX_SKIPPED_SHARE", 0.1)  # 1 of 12 test candidates
    cifar = _load(make, tmp_path, files)
    assert any(n.endswith("0_edge.jpg") for n in reads) and not any(n.endswith("0_big.jpg") for n in reads)
    assert (len(cifar.train_images), len(cifar.test_images), cifar.skipped) == (10, 11, 1)
    _aligned(cifar.test_images, cifar.test_labels)


@pytest.mark.parametrize("make", [_tar, _tree])
def test_oversized_pictures_count_against_their_own_split(make, tmp_path, monkeypatch):
    files = _pictures() | {f"cifar/test/{c}/0_big.jpg": _padded(3, MB + 1) for c in ("cat", "dog")}
    monkeypatch.setattr(datasets, "MAX_SKIPPED_SHARE", 0.1)  # 2 of 12 is over it; train has none over
    with pytest.raises(SystemExit, match=r"^--data: 2 of the 12 test pictures are damaged, not pictures, or over "
                                         r"1,048,576 bytes \(the limit is 10%\)"):
        _load(make, tmp_path, files)


@pytest.mark.parametrize("limit, message", [
    ("MAX_TOTAL_BYTES", r"holds more than [\d,]+ bytes of pictures \(MAX_TOTAL_BYTES\)"),
    ("MAX_MEMBERS", r"has more than 20 members \(MAX_MEMBERS\)"),
])
def test_an_archive_over_a_limit_is_refused_before_any_read(limit, message, tmp_path, reads, monkeypatch):
    archive = _tar(tmp_path / "big.tar", _pictures(), (_special("cifar/README", tarfile.DIRTYPE),))
    at = {"MAX_TOTAL_BYTES": sum(map(len, _pictures().values())), "MAX_MEMBERS": 21}[limit]  # both splits, all members
    monkeypatch.setattr(datasets, limit, at - 1)
    with pytest.raises(SystemExit, match=r"big\.tar " + message + "; this is not a CIFAR-10 archive$"):
        datasets.load(str(archive), tmp_path / "c1", workers=1)
    assert reads == []
    monkeypatch.setattr(datasets, limit, at)  # exactly at the limit is allowed
    assert len(datasets.load(str(archive), tmp_path / "c2", workers=1).test_images) == 10


def test_links_and_special_members_are_never_read(tmp_path, reads):
    specials = (
        _special("cifar/test/cat/2.jpg", tarfile.SYMTYPE, "/etc/passwd"),
        _special("cifar/test/dog/2.jpg", tarfile.LNKTYPE, "cifar/test/cat/1.jpg"),  # would read the cat's data
        _special("cifar/test/frog/2.jpg", tarfile.CHRTYPE),
        _special("cifar/test/bird/2.jpg", tarfile.DIRTYPE),
    )
    cifar = _load(_tar, tmp_path, _pictures(), specials=specials)
    assert not [name for name in reads if name.endswith("/2.jpg")]
    assert (len(cifar.test_images), cifar.skipped) == (10, 0) and sorted(cifar.test_labels) == list(range(10))


def _negative_size_cycle(path: Path) -> Path:
    """A tar whose last header claims a negative size (base-256), sending tarfile back to the picture
    before it: the two repeat forever. A negative size must not shrink the running total."""
    pad, pic = tarfile.TarInfo("cifar/pad"), tarfile.TarInfo("cifar/train/cat/1.jpg")
    pad.type, pic.size = tarfile.DIRTYPE, len(_jpeg(_grey(3)))
    raw = pad.tobuf() + pic.tobuf() + _jpeg(_grey(3)).ljust(-(-pic.size // 512) * 512, b"\0")
    neg = bytearray(tarfile.TarInfo("cifar/train/dog/2.jpg").tobuf(format=tarfile.GNU_FORMAT))
    neg[124:136] = b"\xff" + (256 ** 11 - len(raw)).to_bytes(11, "big")  # the next header lands on the picture's
    neg[148:156] = b"%06o\0 " % (sum(neg[:148]) + 8 * 32 + sum(neg[156:]))
    path.write_bytes(raw + neg + bytes(10240))
    return path


def test_a_negative_member_size_cannot_shrink_the_total(tmp_path, reads, monkeypatch):
    monkeypatch.setattr(datasets, "MAX_MEMBERS", 1000)
    monkeypatch.setattr(datasets, "MAX_TOTAL_BYTES", 20 * len(_jpeg(_grey(3))))
    with pytest.raises(SystemExit, match="MAX_TOTAL_BYTES"):  # not MAX_MEMBERS, 1000 headers later
        datasets.load(str(_negative_size_cycle(tmp_path / "neg.tar")), tmp_path / "cache", workers=1)
    assert reads == []


@pytest.mark.parametrize("make", [_tar, _tree])
@pytest.mark.parametrize("bad", [1, 2])
def test_undecodable_pictures_are_skipped_and_counted_up_to_one_percent(make, bad, tmp_path, capsys):
    files = {f"cifar/{s}/{c}/{i}.jpg": _jpeg(_grey(k)) for k, c in enumerate(CLASSES)
             for s, n in (("train", 1), ("test", 10)) for i in range(n)}
    files |= {f"cifar/test/cat/{i}.jpg": b"<html>404 Not Found</html>" for i in range(bad)}  # sorts before the dogs
    if bad == 2:  # 2 of 100: over 1%, the load stops naming the split
        with pytest.raises(SystemExit, match=r"^--data: 2 of the 100 test pictures .* \(the limit is 1%\)"):
            _load(make, tmp_path, files)
        return
    cifar = _load(make, tmp_path, files)  # 1 of 100: exactly the limit, still loaded
    assert (cifar.skipped, len(cifar.test_images), len(cifar.test_labels), len(cifar.train_labels)) == (1, 99, 99, 10)
    _aligned(cifar.test_images, cifar.test_labels)
    assert "skipped 1 files" in capsys.readouterr().err


def test_the_skipped_count_survives_the_cache(tmp_path, monkeypatch):
    archive = _tar(tmp_path / "c.tar", _pictures() | {"cifar/test/horse/0_bad.jpg": b"not a picture"})
    monkeypatch.setattr(datasets, "MAX_SKIPPED_SHARE", 0.1)
    assert datasets.load(str(archive), tmp_path / "cache", workers=1).skipped == 1
    assert datasets.load(str(archive), tmp_path / "cache", workers=1).skipped == 1
    (npz,) = (tmp_path / "cache").glob("*.npz")
    with np.load(npz) as z:  # a cache written before the count existed reads as nothing skipped
        old = {k: z[k] for k in z.files if k != "skipped"}
    np.savez(npz, **old)
    assert datasets.load(str(archive), tmp_path / "cache", workers=1).skipped == 0


@pytest.mark.parametrize("files, message", [
    ({"cifar/README.txt": b"hello"}, "^--data: found no pictures under train/<class>/ or test/<class>/$"),
    ({"cifar/train/cat/1.jpg": _jpeg(10), "cifar/test/cat/0_big.jpg": _padded(3, MB + 1)}, "1 of the 1 test pictures"),
])
def test_a_split_with_nothing_usable_is_a_clear_error(tmp_path, files, message):
    with pytest.raises(SystemExit, match=message):
        _load(_tar, tmp_path, files)


def test_missing_or_damaged_data_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no such file or folder: .*nope.tar.gz"):
        datasets.load(str(tmp_path / "nope.tar.gz"), tmp_path)
    good = _tar(tmp_path / "good.tar", _pictures())
    (tmp_path / "cut.tar.gz").write_bytes(gzip.compress(good.read_bytes())[:-2000])
    with pytest.raises(SystemExit, match=r"cut\.tar\.gz is not a readable tar archive"):
        datasets.load(str(tmp_path / "cut.tar.gz"), tmp_path / "cache", workers=1)


@pytest.mark.parametrize("rel, where", [
    ("train/cat/1.jpg", ("train", 3)), ("./cifar/test/dog/2.PNG", ("test", 5)), ("a/b/test/truck/x.webp", ("test", 9)),
    ("train/airplane/x.bmp", ("train", 0)), ("test/bird/x.jpeg", ("test", 2)),
    ("Xtrain/cat/1.jpg", None), ("val/cat/1.jpg", None),  # a folder named otherwise is not a split
    ("train/cats/1.jpg", None), ("train/cat/notes.txt", None),
    ("cat/1.jpg", None),  # too shallow to name a split and a class
])
def test_a_picture_counts_only_under_a_split_and_a_class(rel, where):
    assert datasets._where(rel) == where


# --- the recipe and the command ----------------------------------------------------------------------------


def test_the_validation_split_is_a_seeded_hold_out():
    x, y = np.arange(100)[:, None].repeat(3, 1), np.arange(100)
    xt, yt, xv, yv = split_train_val(x, y, 20, seed=3)
    assert (len(xt), len(xv)) == (80, 20) and not set(yv) & set(yt) and set(yv) | set(yt) == set(range(100))
    np.testing.assert_array_equal(xv[:, 0], yv)  # pictures stay with their labels
    np.testing.assert_array_equal(yv, split_train_val(x, y, 20, seed=3)[3])
    assert not np.array_equal(yv, split_train_val(x, y, 20, seed=4)[3])
    assert len(split_train_val(x, y, 0, seed=3)[2]) == 0


def test_augmentation_flips_shifts_and_cuts_out_keeping_shapes():
    torch.manual_seed(0)
    x = torch.randn(32, 3, 32, 32)
    flipped = _augment(x.clone(), translate=0, cutout=0)
    same = [torch.equal(p, q) for p, q in zip(flipped, x)]
    assert all(s or torch.equal(p, q.flip(-1)) for s, p, q in zip(same, flipped, x)) and 0 < sum(same) < 32
    shifted = _augment(x.clone(), translate=2, cutout=0)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    for out, pad in zip(shifted, padded):  # a reflect-padded crop of the picture or its mirror
        assert any(torch.equal(out, p[:, i:i + 32, j:j + 32]) for p in (pad, pad.flip(-1)) for i in range(5)
                   for j in range(5))
    holes = _augment(x.clone(), translate=4, cutout=8)
    assert holes.shape == x.shape and torch.isfinite(holes).all()
    assert ((holes == 0).all(dim=1).sum(dim=(1, 2)) == 64).all()  # one 8x8 square per picture (randn has no 0)


def test_the_command_line_flags_mirror_the_training_config():
    defaults = parse_args([])
    for f in fields(TrainConfig):
        assert getattr(defaults, f.name) == f.default, f.name
    args = parse_args(["--epochs", "7", "--no-whiten", "--lr", "0.1", "--compile-mode", "default", "--val-size", "0"])
    assert (args.epochs, args.whiten, args.lr, args.compile_mode, args.val_size) == (7, False, 0.1, "default", 0)
    assert parse_args(["--no-channels-last"]).channels_last is False and parse_args(["--whiten"]).whiten is True


def test_a_tiny_cpu_run_writes_a_calibrated_folder_the_library_loads(tree, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--data", str(tree), "--out", str(out), "--epochs", "1", "--batch-size", "32", "--val-size", "30",
            "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--seed", "1"]
    assert train_main(argv) == 0
    printed = capsys.readouterr().out
    assert "No GPU" in printed and "epoch   1/1" in printed and "test accuracy" in printed and "ECE" in printed
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "config.json", "metrics.json", "README.md",
                                              "example.jpg", "model.onnx"}
    metrics, config = (json.loads((out / name).read_text()) for name in ("metrics.json", "config.json"))
    assert (metrics["train_images"], metrics["val_images"], metrics["test_images"]) == (90, 30, 40)
    assert config["temperature"] == metrics["temperature"] and len(config["top_label_map"]) == 48
    assert config["unsure_threshold"] is not None and metrics["ece"] is not None and metrics["val_accuracy"] is not None
    assert metrics["config"]["epochs"] == 1 and metrics["command"] == "python -m train " + " ".join(argv)
    assert len(metrics["history"]) == 1 and metrics["parameters"] == 2_211_338 and metrics["skipped_images"] == 0
    clf = Classifier.from_pretrained(out, precision="fp32")
    assert clf.weights.metrics.test_accuracy == metrics["test_accuracy"] and clf.weights.warning is None
    assert clf.weights.config.top_label_map == config["top_label_map"]
    assert clf.weights.file("model.onnx") is not None  # exported, and its sha256 recorded in config.json
    accuracy = {r.metric_type: r.metric_value for r in ModelCard.load(out / "README.md").data.eval_results}["accuracy"]
    assert accuracy == metrics["test_accuracy"]


def test_a_run_that_holds_nothing_out_is_uncalibrated(tree, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_main(["--data", str(tree), "--out", str(out), "--epochs", "1", "--batch-size", "64", "--val-size", "0",
                       "--limit", "50", "--cache-dir", str(tmp_path / "cache"), "--no-progress"]) == 0
    assert "ECE" not in capsys.readouterr().out
    metrics, config = (json.loads((out / name).read_text()) for name in ("metrics.json", "config.json"))
    assert [metrics[k] for k in ("train_images", "val_images", "val_accuracy", "ece")] == [50, 0, None, None]
    assert (config["temperature"], config["top_label_map"], config["unsure_threshold"]) == (1.0, None, None)
