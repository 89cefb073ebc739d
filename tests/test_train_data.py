"""``train.data`` on hostile archives and folders: size and count limits checked from the headers before
anything is read, links never followed, and broken pictures skipped, counted and capped."""

from __future__ import annotations

import functools
import gzip
import io
import pathlib
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cifar_model import CLASSES
from train import data as datasets


@functools.cache
def _jpeg(value: int) -> bytes:
    """A 32x32 JPEG of one grey level: after decoding, its mean tells which class it was saved for."""
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (value,) * 3).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _grey(label: int) -> int:
    return 20 * label + 10


def _pictures() -> dict[str, bytes]:
    """One picture a class in each split: 20 members, each of a grey level that encodes its label."""
    return {f"cifar/{split}/{c}/1.jpg": _jpeg(_grey(i)) for split in ("train", "test") for i, c in enumerate(CLASSES)}


def _tar(path: Path, files: dict[str, bytes], specials: tuple[tarfile.TarInfo, ...] = ()) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        for info in specials:
            tar.addfile(info)
    return path


def _special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def _assert_aligned(images: np.ndarray, labels: np.ndarray) -> None:
    """Every picture still sits next to its own label (each class was saved at its own grey level)."""
    np.testing.assert_allclose(images.mean(axis=(1, 2, 3)), [_grey(y) for y in labels], atol=3)


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """Names of the tar members whose data the loader opens."""
    names: list[str] = []
    original = tarfile.TarFile.extractfile

    def spy(self, member):
        names.append(getattr(member, "name", member))
        return original(self, member)

    monkeypatch.setattr(tarfile.TarFile, "extractfile", spy)
    return names


def test_member_over_the_size_limit_is_skipped_unread(tmp_path: Path, reads: list[str], monkeypatch) -> None:
    files = _pictures()
    # a valid picture padded past the limit: had it been read, it would have decoded and been kept
    files["cifar/test/cat/0_big.jpg"] = _jpeg(_grey(3)) + bytes(datasets.MAX_MEMBER_BYTES)
    monkeypatch.setattr(datasets, "MAX_SKIPPED_SHARE", 0.5)
    cifar = datasets.load(str(_tar(tmp_path / "big.tar", files)), tmp_path / "cache", workers=1)
    assert "cifar/test/cat/0_big.jpg" not in reads and len(reads) == 20
    assert (len(cifar.train_images), len(cifar.test_images), cifar.skipped) == (10, 10, 1)
    _assert_aligned(cifar.test_images, cifar.test_labels)



def test_a_member_exactly_at_the_size_limit_is_read_and_kept(tmp_path: Path, reads: list[str], monkeypatch) -> None:
    files = _pictures()
    edge = _jpeg(_grey(3)) + bytes(100)  # decodes like the picture alone
    files["cifar/test/cat/0_edge.jpg"] = edge
    monkeypatch.setattr(datasets, "MAX_MEMBER_BYTES", len(edge))
    cifar = datasets.load(str(_tar(tmp_path / "edge.tar", files)), tmp_path / "cache", workers=1)
    assert "cifar/test/cat/0_edge.jpg" in reads
    assert (len(cifar.test_images), cifar.skipped) == (11, 0)
    _assert_aligned(cifar.test_images, cifar.test_labels)


def test_oversized_pictures_count_against_their_own_split(tmp_path: Path, monkeypatch) -> None:
    # Two of the 12 test candidates are over the limit: more than the 10% allowed here, and said so for
    # the test split, with both counted. The train split has none over the limit and loads alone.
    files = _pictures()
    for name in ("cifar/test/cat/0_big.jpg", "cifar/test/dog/0_big.jpg"):
        files[name] = _jpeg(_grey(3)) + bytes(datasets.MAX_MEMBER_BYTES)
    monkeypatch.setattr(datasets, "MAX_SKIPPED_SHARE", 0.1)
    archive = _tar(tmp_path / "big.tar", files)
    with pytest.raises(SystemExit, match=r"^--data: 2 of the 12 test pictures are damaged"):
        datasets.load(str(archive), tmp_path / "cache", workers=1)
    assert datasets._read_split(archive, "train")[1] == 0

def test_total_size_limit_stops_the_load_before_any_read(tmp_path: Path, reads: list[str], monkeypatch) -> None:
    archive = _tar(tmp_path / "many.tar", _pictures())
    total = sum(map(len, _pictures().values()))
    monkeypatch.setattr(datasets, "MAX_TOTAL_BYTES", total - 1)
    with pytest.raises(SystemExit, match=r"many\.tar holds more than [\d,]+ bytes of pictures \(MAX_TOTAL_BYTES\); "
                                          r"this is not a CIFAR-10 archive$"):
        datasets.load(str(archive), tmp_path / "c1", workers=1)
    assert reads == []
    monkeypatch.setattr(datasets, "MAX_TOTAL_BYTES", total)  # exactly at the limit is allowed
    assert len(datasets.load(str(archive), tmp_path / "c2", workers=1).test_images) == 10


def test_member_count_limit_stops_the_load_before_any_read(tmp_path: Path, reads: list[str], monkeypatch) -> None:
    archive = _tar(tmp_path / "crowded.tar", _pictures(), (_special("cifar/README", tarfile.DIRTYPE),))
    monkeypatch.setattr(datasets, "MAX_MEMBERS", 20)  # 21 members: every kind counts, not just pictures
    with pytest.raises(SystemExit, match=r"crowded\.tar has more than 20 members \(MAX_MEMBERS\); "
                                          r"this is not a CIFAR-10 archive$"):
        datasets.load(str(archive), tmp_path / "c1", workers=1)
    assert reads == []
    monkeypatch.setattr(datasets, "MAX_MEMBERS", 21)
    assert len(datasets.load(str(archive), tmp_path / "c2", workers=1).train_images) == 10


def test_links_and_special_members_are_never_read(tmp_path: Path, reads: list[str]) -> None:
    specials = (
        _special("cifar/test/cat/2.jpg", tarfile.SYMTYPE, "/etc/passwd"),
        _special("cifar/test/dog/2.jpg", tarfile.LNKTYPE, "cifar/test/cat/1.jpg"),  # would read the cat's data
        _special("cifar/test/frog/2.jpg", tarfile.CHRTYPE),
        _special("cifar/test/bird/2.jpg", tarfile.DIRTYPE),
    )
    cifar = datasets.load(str(_tar(tmp_path / "links.tar", _pictures(), specials)), tmp_path / "cache", workers=1)
    assert not [name for name in reads if name.endswith("/2.jpg")]
    assert (len(cifar.test_images), cifar.skipped) == (10, 0)
    assert sorted(cifar.test_labels) == list(range(10))


def test_text_named_jpg_is_skipped_counted_and_labels_stay_aligned(tmp_path: Path, monkeypatch) -> None:
    files = _pictures()
    files["cifar/train/airplane/0_notes.jpg"] = b"these are my notes, not a picture\n"  # sorts first
    files["cifar/test/truck/0_page.jpg"] = b"<html>404 Not Found</html>"
    monkeypatch.setattr(datasets, "MAX_SKIPPED_SHARE", 0.1)  # 1 of 11 candidates in each split
    cifar = datasets.load(str(_tar(tmp_path / "text.tar", files)), tmp_path / "cache", workers=1)
    assert cifar.skipped == 2
    assert (len(cifar.train_images), len(cifar.train_labels), len(cifar.test_labels)) == (10, 10, 10)
    _assert_aligned(cifar.train_images, cifar.train_labels)
    _assert_aligned(cifar.test_images, cifar.test_labels)


def test_more_skipped_than_the_allowed_share_fails_the_load(tmp_path: Path) -> None:
    files = _pictures()
    files["cifar/test/ship/0_bad.jpg"] = b"not a picture"
    assert 1 / 11 > datasets.MAX_SKIPPED_SHARE
    with pytest.raises(SystemExit, match=r"1 of the 11 test pictures"):
        datasets.load(str(_tar(tmp_path / "bad.tar", files)), tmp_path / "cache", workers=1)


def test_image_folder_skips_oversized_files_unread(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "tree"
    files = _pictures()
    files["cifar/train/ship/0_big.png"] = _jpeg(_grey(8)) + bytes(datasets.MAX_MEMBER_BYTES)
    files["cifar/train/ship/0_bad.jpg"] = b"not a picture"
    for name, blob in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(blob)
    read: list[str] = []
    original = pathlib.Path.read_bytes
    monkeypatch.setattr(pathlib.Path, "read_bytes", lambda self: read.append(self.name) or original(self))
    monkeypatch.setattr(datasets, "MAX_SKIPPED_SHARE", 0.2)
    cifar = datasets.load(str(root / "cifar"), tmp_path / "cache", workers=1)
    assert "0_big.png" not in read and "0_bad.jpg" in read
    assert (len(cifar.train_images), cifar.skipped) == (10, 2)
    _assert_aligned(cifar.train_images, cifar.train_labels)


def test_decoded_cache_keeps_the_skipped_count(tmp_path: Path, monkeypatch) -> None:
    files = _pictures()
    files["cifar/test/horse/0_bad.jpg"] = b"not a picture"
    archive, cache = _tar(tmp_path / "c.tar", files), tmp_path / "cache"
    monkeypatch.setattr(datasets, "MAX_SKIPPED_SHARE", 0.1)
    first = datasets.load(str(archive), cache, workers=1)
    monkeypatch.setattr(datasets, "_read_split", lambda *a: pytest.fail("the second load must come from the cache"))
    again = datasets.load(str(archive), cache, workers=1)
    assert first.skipped == again.skipped == 1
    np.testing.assert_array_equal(first.test_labels, again.test_labels)
    assert again.sha256 == datasets._sha256(archive) and again.sha256 in again.source
    # a cache written before the count existed reads as nothing skipped
    (npz,) = cache.glob("*.npz")
    with np.load(npz) as z:
        old = {k: z[k] for k in z.files if k != "skipped"}
    np.savez(npz, **old)
    assert datasets.load(str(archive), cache, workers=1).skipped == 0


def _negative_size_cycle(path: Path) -> Path:
    """A tar whose last header claims a negative size (base-256), which sends tarfile back to the picture
    before it: the two repeat forever. A negative size must not shrink the running total."""
    pad, pic = tarfile.TarInfo("cifar/pad"), tarfile.TarInfo("cifar/train/cat/1.jpg")
    pad.type, pic.size = tarfile.DIRTYPE, len(_jpeg(_grey(3)))
    data = _jpeg(_grey(3)).ljust(-(-pic.size // 512) * 512, b"\0")  # whole blocks
    raw = pad.tobuf() + pic.tobuf() + data  # pad at 0, pic at 512, the negative one at len(raw)
    neg = bytearray(tarfile.TarInfo("cifar/train/dog/2.jpg").tobuf(format=tarfile.GNU_FORMAT))
    # its data would start at len(raw) + 512: a size of -len(raw) lands the next header on the picture's at 512
    neg[124:136] = b"\xff" + (256 ** 11 - len(raw)).to_bytes(11, "big")
    neg[148:156] = b"%06o\0 " % (sum(neg[:148]) + 8 * 32 + sum(neg[156:]))
    path.write_bytes(raw + neg + bytes(10240))
    return path


def test_negative_member_size_cannot_shrink_the_total(tmp_path: Path, reads: list[str], monkeypatch) -> None:
    monkeypatch.setattr(datasets, "MAX_MEMBERS", 1000)
    monkeypatch.setattr(datasets, "MAX_TOTAL_BYTES", 20 * len(_jpeg(_grey(3))))
    with pytest.raises(SystemExit, match="MAX_TOTAL_BYTES"):  # not MAX_MEMBERS, 1000 headers later
        datasets.load(str(_negative_size_cycle(tmp_path / "neg.tar")), tmp_path / "cache", workers=1)
    assert reads == []


def test_damaged_archive_is_a_clear_error(tmp_path: Path) -> None:
    good = _tar(tmp_path / "good.tar", _pictures())
    (tmp_path / "cut.tar.gz").write_bytes(gzip.compress(good.read_bytes())[:-2000])
    with pytest.raises(SystemExit, match=r"cut\.tar\.gz is not a readable tar archive"):
        datasets.load(str(tmp_path / "cut.tar.gz"), tmp_path / "cache", workers=1)


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, blob in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(blob)
    return root


@pytest.mark.parametrize("rel, where", [
    ("train/cat/1.jpg", ("train", 3)),
    ("./cifar/test/dog/2.PNG", ("test", 5)),
    ("a/b/test/truck/x.webp", ("test", 9)),
    ("Xtrain/cat/1.jpg", None),  # a folder named otherwise is not a split
    (" train/cat/1.jpg", None),
    ("train/cats/1.jpg", None),
    ("val/cat/1.jpg", None),
    ("train/cat/notes.txt", None),
    ("cat/1.jpg", None),  # too shallow to name a split and a class
    ("misc/stuff/1.jpg", None),
])
def test_a_picture_counts_only_under_a_split_and_a_class(rel: str, where) -> None:
    assert datasets._where(rel) == where


def test_a_file_exactly_at_the_size_limit_in_a_folder_is_kept(tmp_path: Path, monkeypatch) -> None:
    files = _pictures()
    edge = _jpeg(_grey(3)) + bytes(100)
    files["cifar/test/cat/0_edge.jpg"] = edge
    monkeypatch.setattr(datasets, "MAX_MEMBER_BYTES", len(edge))
    cifar = datasets.load(str(_tree(tmp_path / "tree", files)), tmp_path / "cache", workers=1)
    assert (len(cifar.test_images), cifar.skipped) == (11, 0)


def test_oversized_files_in_a_folder_are_each_counted(tmp_path: Path, monkeypatch) -> None:
    files = _pictures()
    for name in ("cifar/test/cat/0_big.jpg", "cifar/test/dog/0_big.jpg"):
        files[name] = _jpeg(_grey(3)) + bytes(datasets.MAX_MEMBER_BYTES)
    monkeypatch.setattr(datasets, "MAX_SKIPPED_SHARE", 0.1)
    with pytest.raises(SystemExit, match=r"^--data: 2 of the 12 test pictures are damaged"):
        datasets.load(str(_tree(tmp_path / "tree", files)), tmp_path / "cache", workers=1)


def test_exactly_the_allowed_share_of_bad_files_is_still_loaded(tmp_path: Path, monkeypatch) -> None:
    files = _pictures()
    files.update({f"cifar/test/ship/0_bad{i}.jpg": b"not a picture" for i in range(10)})
    monkeypatch.setattr(datasets, "MAX_SKIPPED_SHARE", 0.5)  # 10 of 20: the limit itself, allowed
    cifar = datasets.load(str(_tar(tmp_path / "half.tar", files)), tmp_path / "cache", workers=1)
    assert (len(cifar.test_images), cifar.skipped) == (10, 10)


def test_a_split_whose_every_picture_is_over_the_limit_is_a_clear_error(tmp_path: Path) -> None:
    files = {n: b for n, b in _pictures().items() if n.startswith("cifar/train/")}
    files["cifar/test/cat/0_big.jpg"] = _jpeg(_grey(3)) + bytes(datasets.MAX_MEMBER_BYTES)
    with pytest.raises(SystemExit, match=r"^--data: 1 of the 1 test pictures are damaged, not pictures, or over"):
        datasets.load(str(_tar(tmp_path / "big.tar", files)), tmp_path / "cache", workers=1)


def test_no_pictures_at_all_says_where_they_belong(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as err:
        datasets.load(str(_tar(tmp_path / "empty.tar", {"cifar/README.txt": b"hello"})), tmp_path / "cache", workers=1)
    assert str(err.value) == "--data: found no pictures under train/<class>/ or test/<class>/"


def test_worker_processes_decode_the_same_pictures(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "w.tar", _pictures())
    one = datasets.load(str(archive), tmp_path / "c1", workers=1)
    two = datasets.load(str(archive), tmp_path / "c2", workers=2)
    np.testing.assert_array_equal(one.test_images, two.test_images)
    np.testing.assert_array_equal(one.train_labels, two.train_labels)
