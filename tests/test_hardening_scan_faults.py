"""Hardening, second round (issue 19): a scan never loses its work to one bad item.

Generated faults, one image of a source at a time: every kind of failure a read can raise (permissions, an
I/O error, a dataset's own exception of any class, a worker process that dies) at every position, in this
process and in DataLoader workers. Each scan must finish, skip exactly the bad item with its reason, and give the
exemplars of the scan without it. Unreadable folders, too many failures, sizes the machine cannot hold, and odd
sources (an empty path, bytes paths, duplicates) are checked beside them.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import explorer
from explorer.backbones.timm import TimmPreprocess
from explorer.dataset import sources
from explorer.errors import DatasetError, InvalidArgumentError

SIZE = (32, 32)
COUNT = 6


def tiny_backbone() -> explorer.Backbone:
    torch.manual_seed(0)
    bb = explorer.load_backbone("test_resnet", out_features=["layer1"], pretrained=False, device="cpu")
    bb.preprocess = TimmPreprocess({"input_size": (3, *SIZE), "crop_pct": 1.0})
    return bb


@pytest.fixture(scope="module")
def bb() -> explorer.Backbone:
    return tiny_backbone()


def pictures(count: int = COUNT) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (36, 36, 3), dtype=np.uint8) for _ in range(count)]


class Faulty(torch.utils.data.Dataset):
    """Images; item ``bad`` fails as ``fault`` says (at module level so that workers can unpickle it)."""

    def __init__(self, fault: str, bad: int) -> None:
        self.images, self.fault, self.bad = pictures(), fault, bad

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        if index == self.bad:
            if self.fault == "exit":
                os._exit(3)
            raise FAULTS[self.fault]
        return Image.fromarray(self.images[index])


FAULTS = {
    "PermissionError": PermissionError(errno.EACCES, "Permission denied"),
    "OSError": OSError(errno.EIO, "Input/output error"),
    "KeyError": KeyError("label"),
    "RuntimeError": RuntimeError("decoder state"),
    "ZeroDivisionError": ZeroDivisionError("division by zero"),
    "ValueError": ValueError("bad value"),
    "custom": type("CustomDatasetError", (Exception,), {})("the dataset's own"),
}


def top_values(scan, channels=range(4)) -> list:
    return [[round(e.value, 5) for e in scan.top("layer1", c)] for c in channels]


def reference(bb, without: int):
    """The scan of the same images with the bad one left out (indices shift, values do not)."""
    images = [Image.fromarray(p) for i, p in enumerate(pictures()) if i != without]
    return explorer.scan(
        bb, images_dataset(images), k=3, batch_size=2, num_workers=0, cache=None, progress=False
    )


class images_dataset(torch.utils.data.Dataset):  # noqa: N801 - a tiny list dataset
    def __init__(self, images) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index]


@pytest.mark.parametrize("workers", [0, 2])
def test_any_failure_of_one_item_is_skipped_with_its_reason(bb, workers):
    faults = [*FAULTS, "exit"] if workers else list(FAULTS)
    cases, failures = 0, []
    for fault in faults:
        for bad in (0, 3, COUNT - 1):
            cases += 1
            try:
                scan = explorer.scan(
                    bb, Faulty(fault, bad), k=3, batch_size=2, num_workers=workers, cache=None, progress=False
                )
            except Exception as err:  # noqa: BLE001 - the family's failure
                failures.append(f"{fault}@{bad}: {type(err).__name__}: {err}")
                continue
            if [source for source, _ in scan.skipped] != [bad] or len(scan) != COUNT - 1:
                failures.append(f"{fault}@{bad}: skipped {scan.skipped}")
            elif top_values(scan) != top_values(reference(bb, bad)):
                failures.append(f"{fault}@{bad}: other exemplars")
            elif fault != "exit" and fault.replace("custom", "CustomDatasetError") not in scan.skipped[0][1]:
                failures.append(f"{fault}@{bad}: reason {scan.skipped[0][1]}")
    assert cases == len(faults) * 3 and failures == []


def write_folder(root: Path) -> list[Path]:
    paths = []
    for i, pixels in enumerate(pictures()):
        path = root / ("sub" if i % 2 else "") / f"im{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def test_unreadable_files_and_folders_are_listed_in_skipped(bb, tmp_path, monkeypatch):
    """As root, permissions do not stop a read: the refusal is simulated where the OS would raise it."""
    paths = write_folder(tmp_path / "images")
    locked = paths[2]
    real_open = Path.open

    def guarded(self, *args, **kwargs):
        if self == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    real_walk = os.walk

    def walk(top, onerror=None, **kwargs):
        for root, dirs, files in real_walk(top, onerror=onerror, **kwargs):
            if Path(root).name == "sub":
                onerror(PermissionError(errno.EACCES, "Permission denied", root))
                continue
            yield root, dirs, files

    monkeypatch.setattr(Path, "open", guarded)
    scan = explorer.scan(bb, tmp_path / "images", k=2, num_workers=0, cache=None, progress=False)
    assert len(scan) == COUNT - 1  # im2 is locked
    assert [Path(source).name for source, _ in scan.skipped] == ["im2.png"]
    assert "Permission denied" in scan.skipped[0][1]
    monkeypatch.setattr(sources.os, "walk", walk)
    scan = explorer.scan(bb, tmp_path / "images", k=2, num_workers=0, cache=None, progress=False)
    assert len(scan) == 2  # im0 and im4: sub/ (im1, im3, im5) cannot be listed, im2 is locked
    assert [Path(source).name for source, _ in scan.skipped] == ["sub", "im2.png"]
    assert "could not be listed" in scan.skipped[0][1]


def test_past_half_failing_the_scan_stops_with_the_first_reasons(bb, tmp_path):
    paths = write_folder(tmp_path / "images")
    for path in paths[:4]:
        path.write_bytes(b"not an image")
    with pytest.raises(DatasetError, match=r"4 of the 6 images could not be read.*im0\.png"):
        explorer.scan(bb, paths, k=2, num_workers=0, cache=None, progress=False)
    for path in paths[4:]:
        path.write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="None of the 6 images could be read"):
        explorer.scan(bb, paths, k=2, num_workers=0, cache=None, progress=False)
    with pytest.raises(DatasetError, match="4 of the 6 images"):  # stopped before the last shard was read
        explorer.scan(bb, paths, k=2, num_workers=0, cache=None, progress=False, shard_size=2)
    paths = write_folder(tmp_path / "fine")
    paths[0].write_bytes(b"not an image")  # one of six: skipped, the scan goes on
    assert len(explorer.scan(bb, paths, k=2, num_workers=0, cache=None, progress=False)) == 5


def test_odd_sources(bb, tmp_path, monkeypatch):
    paths = write_folder(tmp_path / "images")
    monkeypatch.chdir(tmp_path / "images")
    for empty in ("", "   ", b""):
        with pytest.raises(DatasetError, match="empty path"):
            explorer.scan(bb, empty, cache=None, progress=False)
    with pytest.raises(DatasetError, match="NUL"):
        explorer.scan(bb, "im\x00.png", cache=None, progress=False)
    with pytest.raises(DatasetError, match="NUL"):
        explorer.scan(bb, [str(paths[0]), "x\x00"], cache=None, progress=False)
    as_bytes = explorer.scan(
        bb, os.fsencode(tmp_path / "images"), k=2, num_workers=0, cache=None, progress=False
    )
    as_text = explorer.scan(bb, tmp_path / "images", k=2, num_workers=0, cache=None, progress=False)
    assert top_values(as_bytes) == top_values(as_text) and len(as_bytes) == COUNT
    twice = [paths[0], str(paths[0]), os.fsencode(paths[0]), Path("im0.png"), paths[1]]
    scan = explorer.scan(bb, twice, k=3, num_workers=0, cache=None, progress=False)
    assert len(scan) == 2  # one file, however it is named, is scanned once
    images = {e.index for c in range(4) for e in scan.top("layer1", c)}
    assert images <= {0, 1}


HUGE = [10**9, 10**18, 2**63, 10**6]


@pytest.mark.parametrize("name", ["k", "batch_size", "num_workers", "shard_size"])
def test_huge_sizes_are_refused_or_harmless_before_anything_is_allocated(bb, tmp_path, name):
    write_folder(tmp_path / "images")
    for value in HUGE:
        try:
            options = {"k": 2, "num_workers": 0, name: value}
            scan = explorer.scan(bb, tmp_path / "images", cache=None, progress=False, **options)
        except InvalidArgumentError as err:
            assert name in str(err)
            continue
        assert name in ("batch_size", "shard_size") and len(scan) == COUNT  # capped by the dataset


def test_scans_with_huge_arguments_run_batches_no_larger_than_the_images(bb, monkeypatch):
    """Huge k and num_workers are refused before any forward; huge batch_size and shard_size are capped by
    the number of images: the largest batch ``bb.capture`` ever receives is the six images."""
    images = [Image.fromarray(np.full((36, 36, 3), i * 40, np.uint8)) for i in range(COUNT)]
    arguments = {"k": 10**7, "batch_size": 10**9, "shard_size": 10**12, "num_workers": 10**6}
    capture, batches = bb.capture, []
    monkeypatch.setattr(
        bb, "capture", lambda pixels, *a, **kw: batches.append(len(pixels)) or capture(pixels, *a, **kw)
    )
    found: dict[str, object] = {}
    for name, value in arguments.items():
        batches.clear()
        try:
            explorer.scan(bb, images, cache=None, progress=False, **{"num_workers": 0, name: value})
            found[name] = max(batches)
        except explorer.ExplorerError as err:
            found[name] = (type(err).__name__, len(batches))
    assert found["k"] == ("InvalidArgumentError", 0) and found["num_workers"] == ("InvalidArgumentError", 0)
    assert found["batch_size"] == COUNT and found["shard_size"] == COUNT, found
