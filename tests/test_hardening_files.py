"""Hardening, second round (issue 19): what explorer writes and what it reads back.

- Every file explorer writes goes through :func:`explorer.files.write_atomic`: a symbolic link (or a folder)
  planted where a report page, a crop, a scan file, a shard, a marker or an export goes is refused, and the
  link's target is left as it was.
- The scan report escapes every value it writes: hostile values in every field of a scan (spec, weights, counts,
  sources, skip reasons) never reach a page as markup.
- ``Scan.load`` refuses an edited ``scan.json`` (a digest over the whole saved result), and one re-signed by the
  editor still has every field checked for type and range.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import explorer
from explorer.backbones.timm import TimmPreprocess
from explorer.dataset.results import Scan
from explorer.dataset.saved import record_digest
from explorer.dataset.store import ShardStore
from explorer.errors import CacheError, ExplorerError, InvalidArgumentError, WriteError
from explorer.files import make_folder, write_atomic

SIZE = (32, 32)
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>"\'&'


def tiny_backbone(seed: int = 0) -> explorer.Backbone:
    torch.manual_seed(seed)
    bb = explorer.load_backbone("test_resnet", out_features=["layer1"], pretrained=False, device="cpu")
    bb.preprocess = TimmPreprocess({"input_size": (3, *SIZE), "crop_pct": 1.0})
    return bb


@pytest.fixture(scope="module")
def bb() -> explorer.Backbone:
    return tiny_backbone()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / f"im{i}.png")
    return root


@pytest.fixture(scope="module")
def scan(bb, images) -> Scan:
    return explorer.scan(bb, images, k=2, batch_size=4, num_workers=0, cache=None, progress=False)


# -- the writer ---------------------------------------------------------------------------------------------------


def test_writer_replaces_files_and_refuses_links_and_folders(tmp_path):
    target = tmp_path / "outside.txt"
    target.write_bytes(b"precious")
    write_atomic(tmp_path / "a.txt", b"one")
    write_atomic(tmp_path / "a.txt", b"two")
    assert (tmp_path / "a.txt").read_bytes() == b"two"
    (tmp_path / "link.txt").symlink_to(target)
    (tmp_path / "dangling.txt").symlink_to(tmp_path / "nowhere.txt")
    (tmp_path / "folder.txt").mkdir()
    for name in ("link.txt", "dangling.txt", "folder.txt"):
        with pytest.raises(WriteError, match="symbolic link|not a regular file"):
            write_atomic(tmp_path / name, b"evil")
    assert target.read_bytes() == b"precious" and not (tmp_path / "nowhere.txt").exists()
    with pytest.raises(WriteError, match="NUL"):
        write_atomic(tmp_path / "a\x00b", b"x")
    (tmp_path / "dir-link").symlink_to(tmp_path / "real-dir")
    with pytest.raises(WriteError, match="symbolic link"):
        make_folder(tmp_path / "dir-link")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def _exports(tmp_path: Path) -> dict:
    """Every exporter, writing to ``name`` in ``tmp_path``."""
    grid = np.zeros((4, 4, 3), np.uint8)
    stats = explorer.channel_stats(torch.rand(1, 3, 4, 4))
    maps = {"a": torch.rand(1, 2, 3, 3)}
    return {
        "x.png": lambda path: explorer.save_png(grid, path),
        "x.jpg": lambda path: explorer.save_image(grid, path),
        "x.csv": lambda path: explorer.stats_to_csv(stats, path),
        "x.json": lambda path: explorer.stats_to_json(stats, path),
        "x.npz": lambda path: explorer.save_feature_maps(maps, path),
        "x.safetensors": lambda path: explorer.save_feature_maps(maps, path),
    }


def test_every_export_refuses_a_planted_link_and_writes_otherwise(tmp_path):
    target = tmp_path / "target"
    target.write_bytes(b"precious")
    for name, export in _exports(tmp_path).items():
        export(tmp_path / name)  # a plain write works, and again over the old file
        export(tmp_path / name)
        (tmp_path / f"link-{name}").symlink_to(target)
        with pytest.raises(WriteError):
            export(tmp_path / f"link-{name}")
    assert target.read_bytes() == b"precious"
    np.testing.assert_array_equal(explorer.load_feature_maps(tmp_path / "x.npz")["a"].shape, (1, 2, 3, 3))


def test_cli_refuses_a_link_in_one_line(tmp_path, capsys):
    from explorer.cli import main

    image = tmp_path / "cat.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(image)
    target = tmp_path / "target"
    target.write_bytes(b"precious")
    (tmp_path / "grid.png").symlink_to(target)
    code = main(
        [
            "render",
            "test_resnet",
            str(image),
            "--random",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "grid.png"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "symbolic link" in err
    assert target.read_bytes() == b"precious"


# -- the report ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["index.html", "layer1.html", "scan.json", "scan.parquet", "layer1/c0000_00.png"]
)
def test_report_never_writes_through_a_planted_link(scan, tmp_path, name):
    target = tmp_path / "target"
    target.write_bytes(b"precious")
    report = tmp_path / "report"
    (report / "layer1").mkdir(parents=True)
    (report / name).symlink_to(target)
    with pytest.raises(ExplorerError, match="symbolic link"):
        scan.save_html(report)
    assert target.read_bytes() == b"precious"


def test_report_refuses_a_linked_crops_folder(scan, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    report = tmp_path / "report"
    report.mkdir()
    (report / "layer1").symlink_to(elsewhere)
    with pytest.raises(WriteError, match="symbolic link"):
        scan.save_html(report)
    assert list(elsewhere.iterdir()) == []


def _hostile_scans(scan: Scan):
    """The scan with one field at a time made hostile: every value the report shows."""
    reduction, names = scan._reduction, scan._names
    base = dict(scan.info)
    for key in ("spec", "weights", "k", "images"):
        yield (
            key,
            Scan(
                {**base, key: HOSTILE},
                reduction,
                names,
                scan.skipped,
                backbone=scan._backbone,
                source=scan._source,
            ),
        )
    yield (
        "skipped",
        Scan(
            base,
            reduction,
            names,
            [(HOSTILE, HOSTILE), (3, HOSTILE)],
            backbone=scan._backbone,
            source=scan._source,
        ),
    )
    yield (
        "names",
        Scan(
            base,
            reduction,
            {i: f"/x/{HOSTILE}.png" for i in names},
            [],
            backbone=scan._backbone,
            source=scan._source,
        ),
    )


def test_report_escapes_every_value(scan, tmp_path):
    cases = 0
    for key, hostile in _hostile_scans(scan):
        folder = tmp_path / key
        hostile.save_html(folder)
        pages = "".join(p.read_text() for p in folder.glob("*.html"))
        assert "<script" not in pages and "<img src=x" not in pages, key
        assert "&lt;script&gt;alert(&quot;x&quot;)" in pages, key
        cases += 1
    assert cases == 6


# -- reading back -------------------------------------------------------------------------------------------------


def test_load_round_trip_and_digest_covers_every_field(scan, tmp_path):
    folder = scan.save(tmp_path / "saved")
    loaded = Scan.load(folder, backbone=scan._backbone)
    assert loaded.info == scan.info and loaded.skipped == scan.skipped
    assert [e.value for e in loaded.top("layer1", 0)] == [e.value for e in scan.top("layer1", 0)]
    record = json.loads((folder / "scan.json").read_text())
    edits = [("info", key) for key in record["info"]] + [("skipped", None), ("names", None)]
    refused = 0
    for part, key in edits:
        edited = json.loads(json.dumps(record))
        if key is None:
            edited[part] = [[0, HOSTILE]]
        else:
            edited["info"][key] = (
                HOSTILE if not isinstance(record["info"][key], str) else record["info"][key] + "x"
            )
        (folder / "scan.json").write_text(json.dumps(edited))
        with pytest.raises(CacheError, match="digest"):
            Scan.load(folder)
        refused += 1
    (folder / "scan.json").write_text(json.dumps(record))
    parquet = (folder / "scan.parquet").read_bytes()
    (folder / "scan.parquet").write_bytes(parquet[:-9] + bytes(9))
    with pytest.raises(CacheError, match="digest"):
        Scan.load(folder)
    assert refused == len(record["info"]) + 2


def _values() -> list:
    return [HOSTILE, -1, 0, 10**30, 1.5, float("nan"), None, [], {}, [[[[1]]]], True, "\x00"]


def test_load_checks_every_field_even_when_resigned(scan, tmp_path):
    """An editor who recomputes the digest still cannot pass a wrong type or range in any field."""
    folder = scan.save(tmp_path / "saved")
    record = json.loads((folder / "scan.json").read_text())
    table = (folder / "scan.parquet").read_bytes()
    free_text = {"spec", "weights"}  # any string is a valid spec or weights note: escaped when shown
    outcomes = {"refused": 0, "accepted": 0}
    for key in record["info"]:
        for value in _values():
            body = {k: record[k] for k in ("info", "skipped", "names")}
            body = json.loads(json.dumps(body))
            body["info"][key] = value
            try:
                signed = {**body, "sha256": record_digest(body, table)}
            except ValueError:  # NaN cannot be saved as strict JSON: the writer never writes it
                continue
            (folder / "scan.json").write_text(json.dumps(signed))
            try:
                Scan.load(folder)
            except CacheError:
                outcomes["refused"] += 1
                continue
            outcomes["accepted"] += 1
            assert key in free_text or (key == "key" and value is None), (key, value)
    assert outcomes["refused"] >= 100, outcomes


def test_load_refuses_other_weights(scan, tmp_path):
    folder = scan.save(tmp_path / "saved")
    with pytest.raises(InvalidArgumentError, match="other weights"):
        Scan.load(folder, backbone=tiny_backbone(seed=1))
    with pytest.raises(InvalidArgumentError, match="Backbone"):
        Scan.load(folder, backbone="test_resnet")
    assert Scan.load(folder, backbone=tiny_backbone(seed=0)).backbone() is not None


# -- the cache ----------------------------------------------------------------------------------------------------


def _shard_damages(folder: Path, marker: Path) -> dict:
    record = json.loads(marker.read_text())
    nested = "[" * 100_000 + "]" * 100_000

    def fields(**changes):
        return lambda: marker.write_text(json.dumps({**record, **changes}))

    return {
        "nested marker": lambda: marker.write_text(nested),
        "marker folder": lambda: (marker.unlink(), marker.mkdir(), (marker / "x").write_text("x")),
        "scanned edited": fields(scanned=record["scanned"] + 1),
        "scanned string": fields(scanned="4"),
        "skipped edited": fields(skipped=[["x", "y"]]),
        "skipped nested": fields(skipped=[[[["x"]]]]),
        "hash missing": lambda: marker.write_text(
            json.dumps({k: v for k, v in record.items() if k != "sha256"})
        ),
        "marker list": lambda: marker.write_text("[1, 2]"),
        "manifest nested": lambda: (folder / "manifest.json").write_text(nested),
        "manifest folder": lambda: ((folder / "manifest.json").unlink(), (folder / "manifest.json").mkdir()),
    }


def test_damaged_markers_and_manifests_are_recomputed(bb, images, tmp_path):
    options = dict(k=2, batch_size=4, num_workers=0, shard_size=2, cache=tmp_path / "cache", progress=False)
    want = explorer.scan(bb, images, **options)
    (folder,) = (tmp_path / "cache").iterdir()
    marker = folder / "shard-00001.json"
    names = list(_shard_damages(folder, marker))
    for name in names:
        (folder / "scan.json").unlink()
        _shard_damages(folder, marker)[name]()
        got = explorer.scan(bb, images, **options)
        assert len(got) == len(want) and got.skipped == want.skipped, name
        assert [e.value for e in got.top("layer1", 1)] == [e.value for e in want.top("layer1", 1)], name
        assert json.loads(marker.read_text())["scanned"] == 2, name
    assert len(names) == 10


def test_shard_store_checks_scanned_against_the_shard(tmp_path):
    from explorer.dataset.reduce import Reduction
    from explorer.dataset.store import ShardResult

    store = ShardStore(tmp_path, "abc", {"k": 1})
    reduction = Reduction(1)
    reduction.update({"s": torch.rand(2, 3, 2, 2)}, torch.tensor([0, 1]))
    store.save_shard(0, ShardResult(reduction, 2, []))
    assert store.load_shard(0, 1, 2).scanned == 2
    assert store.load_shard(0, 1, 3) is None  # a marker that does not add up to the shard is recomputed
    assert not (tmp_path / "abc" / "shard-00000.json").exists()
