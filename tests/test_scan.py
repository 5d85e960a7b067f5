"""Dataset scans: exactness against brute force, merging, caching and resuming, sources, bad input, results.

Models are random-init timm networks at a 64x64 input (fast); images are files the tests write. The Ray backend is
tested in test_scan_ray.py, the command line in test_cli.py.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import explorer
from explorer.backbones.timm import TimmPreprocess
from explorer.dataset import local as scan_local
from explorer.dataset import scanner
from explorer.dataset.reduce import HISTOGRAM_BINS, HISTOGRAM_LIMIT, NO_IMAGE, Reduction
from explorer.dataset.store import reduction_from_parquet, reduction_to_parquet
from explorer.files import write_atomic

SIZE = (64, 64)
STAGES = ["layer1", "layer2"]
LAYER = "layer2.0.conv1"


def small_backbone(spec: str = "resnet18", seed: int = 0) -> explorer.Backbone:
    torch.manual_seed(seed)
    bb = explorer.load_backbone(spec, out_features=STAGES, pretrained=False, device="cpu")
    bb.preprocess = TimmPreprocess({"input_size": (3, *SIZE), "crop_pct": 1.0, "interpolation": "bicubic"})
    return bb


@pytest.fixture(scope="module")
def bb() -> explorer.Backbone:
    return small_backbone()


def write_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """Noise, gradients and stripes of several sizes and formats; sorted names give the scan order."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        height, width = int(rng.integers(40, 120)), int(rng.integers(40, 120))
        kind = i % 3
        if kind == 0:
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        elif kind == 1:
            ramp = np.linspace(0, 255, width)[None, :, None] * rng.uniform(0.2, 1.0, (1, 1, 3))
            pixels = np.broadcast_to(ramp, (height, width, 3)).astype(np.uint8)
        else:
            period = int(rng.integers(3, 12))
            stripes = ((np.arange(height)[:, None] // period) % 2) * 255
            pixels = np.repeat(np.broadcast_to(stripes, (height, width))[..., None], 3, -1).astype(np.uint8)
        suffix = (".png", ".jpg", ".webp")[i % 3]
        path = folder / ("sub" if i % 4 == 3 else "") / f"img{i:03d}{suffix}"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return sorted(paths, key=lambda p: p.relative_to(folder).as_posix())


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    write_images(root, 14)
    (root / "notes.txt").write_text("not an image")  # left out: not an image suffix
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # listed, skipped with its reason
    return root


def listed(folder: Path) -> list[Path]:
    return scanner.open_source(folder).paths  # the scan's own order


def brute_force(bb: explorer.Backbone, paths, k: int) -> dict:
    """Per stage and layer: per image maps from Backbone.extract / capture one image at a time, fully sorted."""
    per_image = {name: [] for name in [*STAGES, LAYER]}
    readable = []
    for index, path in enumerate(paths):
        try:
            maps = bb.extract([path])
        except explorer.ImageError:
            continue
        readable.append(index)
        maps.update(bb.capture(bb.pixel_values([path]), [LAYER]))
        for name in per_image:
            per_image[name].append(maps[name])
    expected = {}
    for name, maps in per_image.items():
        stacked = torch.cat(maps)  # (N, C, H, W)
        flat = stacked.flatten(2).numpy()
        best, cell = flat.max(-1), flat.argmax(-1)
        tops = []
        for channel in range(stacked.shape[1]):
            order = sorted(range(len(readable)), key=lambda i: (-best[i, channel], readable[i]))[:k]
            tops.append([(readable[i], best[i, channel], int(cell[i, channel])) for i in order])
        expected[name] = {"top": tops, "maps": stacked, "width": stacked.shape[-1]}
    return expected


def assert_same_top(scan: explorer.Scan, other: explorer.Scan, exact: bool = True) -> None:
    assert scan.stages == other.stages
    for stage in scan.stages:
        for channel in range(scan.channels(stage)):
            a, b = scan.top(stage, channel), other.top(stage, channel)
            if exact:
                assert a == b, (stage, channel)
            else:
                assert [(e.index, e.cell) for e in a] == [(e.index, e.cell) for e in b], (stage, channel)
                np.testing.assert_allclose([e.value for e in a], [e.value for e in b], rtol=1e-5)


# ----------------------------------------------------------------------------------------------- exactness


def test_scan_equals_brute_force(bb, folder):
    k = 4
    scan = explorer.scan(
        bb,
        folder,
        layers=[LAYER],
        out_features=STAGES,
        k=k,
        batch_size=4,
        shard_size=8,
        num_workers=0,
        cache=None,
    )
    paths = listed(folder)
    expected = brute_force(bb, paths, k)
    assert scan.stages == [*STAGES, LAYER]
    assert len(scan) == len(paths) - 1
    assert [Path(source).name for source, _ in scan.skipped] == ["broken.png"]
    assert "broken.png" in scan.skipped[0][0] and "not an image" in scan.skipped[0][1]
    for name, want in expected.items():
        width = want["width"]
        for channel, top in enumerate(want["top"]):
            got = scan.top(name, channel)
            assert [e.index for e in got] == [index for index, _, _ in top], (name, channel)
            assert [e.cell for e in got] == [(cell // width, cell % width) for _, _, cell in top]
            assert [e.source for e in got] == [paths[index] for index, _, _ in top]
            np.testing.assert_allclose([e.value for e in got], [v for _, v, _ in top], rtol=1e-5, atol=1e-6)
        stats, oracle = scan.stats(name), explorer.channel_stats(want["maps"])
        assert stats.shape == oracle.shape
        for column in ("mean", "std", "min", "max", "l2", "sparsity", "positive"):
            np.testing.assert_allclose(getattr(stats, column), getattr(oracle, column), rtol=1e-4, atol=1e-5)
        values = want["maps"].double().transpose(0, 1).flatten(1).numpy()  # (C, N*H*W)
        bins = np.clip(
            np.floor((np.arcsinh(values) + HISTOGRAM_LIMIT) * HISTOGRAM_BINS / (2 * HISTOGRAM_LIMIT)), 0, 63
        )
        for channel in range(values.shape[0]):
            counts = scan.histogram(name, channel).counts
            want_counts = np.bincount(bins[channel].astype(int), minlength=HISTOGRAM_BINS)
            assert counts.sum() == values.shape[1]
            assert np.abs(counts - want_counts).sum() <= max(2, values.shape[1] // 1000)  # float32 bin edges


def test_ties_break_by_image_order():
    reduction = Reduction(k=3)
    fmap = torch.zeros(4, 2, 2, 2)
    fmap[:, 0, 1, 0] = torch.tensor([5.0, 7.0, 7.0, 5.0])  # channel 0: images 1 and 2 tie, then 0 and 3
    fmap[:, 1] = float("nan")
    fmap[3, 1, 0, 1] = 1.0  # channel 1: NaN never ranks; only image 3 has a finite value
    fmap[2, 1, 1, 1] = 1.0
    # fed in reverse order, in two batches: the answer must not depend on it
    reduction.update({"x": fmap[2:]}, torch.tensor([2, 3]))
    reduction.update({"x": fmap[:2]}, torch.tensor([0, 1]))
    stage = reduction.stages["x"]
    assert stage.images[0].tolist() == [1, 2, 0]
    assert stage.values[0].tolist() == [7.0, 7.0, 5.0]
    assert stage.cells[0].tolist() == [2, 2, 2]
    assert stage.images[1].tolist() == [2, 3, 0]  # ties at 1.0 by image; then -inf (all NaN) by image
    assert stage.cells[1].tolist()[:2] == [3, 1]
    assert stage.values[1].tolist()[2] == -float("inf")
    assert stage.sums[1, -1] == 4 * 4 - 2  # non-finite values counted


def test_merge_of_shards_equals_single_pass(bb, folder):
    options = dict(k=3, batch_size=4, num_workers=0, cache=None, progress=False)
    single = explorer.scan(bb, folder, shard_size=64, **options)
    sharded = explorer.scan(bb, folder, shard_size=4, **options)
    assert_same_top(single, sharded)
    for stage in single.stages:
        a, b = single.stats(stage), sharded.stats(stage)
        for column in ("mean", "std", "min", "max", "l2", "sparsity", "positive"):
            np.testing.assert_allclose(getattr(a, column), getattr(b, column), rtol=1e-12)
    # shard reductions merged in any order give the same top-k
    source = scanner.open_source(folder)
    shards = scan_local.plan_shards(len(source), 4)
    results = [r.reduction for _, r in scan_local.scan_shards(bb, source, shards, STAGES, 3, batch_size=4)]
    forward, backward = Reduction(3), Reduction(3)
    for r in results:
        forward.merge(r)
    for r in reversed(results):
        backward.merge(r)
    for name in STAGES:
        assert torch.equal(forward.stages[name].images, backward.stages[name].images)
        assert torch.equal(forward.stages[name].values, backward.stages[name].values)
        assert torch.equal(forward.stages[name].histogram, backward.stages[name].histogram)


def test_parquet_round_trip_is_exact(bb, folder):
    source = scanner.open_source(folder)
    shards = scan_local.plan_shards(len(source), 8)
    _, result = next(scan_local.scan_shards(bb, source, shards[:1], [*STAGES, LAYER], 5, batch_size=8))
    data = reduction_to_parquet(result.reduction)
    back = reduction_from_parquet(data, 5)
    assert reduction_to_parquet(back) == data
    for name, stage in result.reduction.stages.items():
        assert torch.equal(back.stages[name].values, stage.values)
        assert torch.equal(back.stages[name].cells, stage.cells)
        assert np.array_equal(back.stages[name].sums, stage.sums)
        assert back.stages[name].map_size == stage.map_size


# ----------------------------------------------------------------------------------------------- cache


def count_scanned_shards(monkeypatch) -> list[int]:
    seen: list[int] = []
    original = scanner.scan_shards

    def counting(bb, source, shards, *args, **kwargs):
        seen.extend(s.index for s in shards)
        return original(bb, source, shards, *args, **kwargs)

    monkeypatch.setattr(scanner, "scan_shards", counting)
    return seen


def test_cache_serves_the_same_scan_and_a_changed_file_changes_the_key(bb, tmp_path, monkeypatch):
    images = tmp_path / "images"
    paths = write_images(images, 6)
    options = dict(k=2, batch_size=4, shard_size=4, num_workers=0, cache=tmp_path / "cache", progress=False)
    seen = count_scanned_shards(monkeypatch)
    first = explorer.scan(bb, images, **options)
    assert seen == [0, 1]
    again = explorer.scan(bb, images, **options)
    assert seen == [0, 1] and again.key == first.key  # served from the cache: nothing ran
    assert_same_top(first, again)

    Image.fromarray(np.full((50, 70, 3), 255, np.uint8)).save(paths[0])  # one file changes
    changed = explorer.scan(bb, images, **options)
    assert changed.key != first.key
    assert seen == [0, 1, 0, 1]
    fresh = explorer.scan(bb, images, **{**options, "cache": None})
    assert_same_top(changed, fresh)  # the new content, never the stale cache
    assert explorer.scan(bb, images, **{**options, "k": 3}).key not in (first.key, changed.key)
    other = small_backbone(seed=1)
    assert explorer.scan(other, images, **options).key != changed.key  # other weights, other key
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        [
            first.key,
            changed.key,
            explorer.scan(bb, images, **{**options, "k": 3}).key,
            explorer.scan(other, images, **options).key,
        ]
    )


def test_corrupt_cache_files_are_detected_and_recomputed(bb, tmp_path, monkeypatch, caplog):
    images = tmp_path / "images"
    write_images(images, 10)
    options = dict(k=2, batch_size=4, shard_size=4, num_workers=0, cache=tmp_path / "cache", progress=False)
    first = explorer.scan(bb, images, **options)
    folder = tmp_path / "cache" / first.key
    table = folder / "shard-00001.parquet"
    table.write_bytes(table.read_bytes()[:-40] + b"\0" * 40)  # damaged in place
    (folder / "scan.parquet").write_bytes(b"garbage")  # and the merged result too
    seen = count_scanned_shards(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="explorer.dataset"):
        again = explorer.scan(bb, images, **options)
    assert seen == [1]  # only the damaged shard ran again
    assert "shard 1" in caplog.text and "corrupt" in caplog.text
    assert "unreadable" in caplog.text
    assert_same_top(first, again)
    with pytest.raises(explorer.CacheError, match="damaged"):
        (folder / "scan.parquet").write_bytes(b"garbage again")
        explorer.Scan.load(folder)


def test_unfinished_shard_without_marker_is_recomputed(bb, tmp_path, monkeypatch):
    images = tmp_path / "images"
    write_images(images, 8)
    options = dict(k=2, batch_size=4, shard_size=4, num_workers=0, cache=tmp_path / "cache", progress=False)
    first = explorer.scan(bb, images, **options)
    folder = tmp_path / "cache" / first.key
    (folder / "shard-00000.json").unlink()  # the table is there, its marker is not: unfinished
    (folder / "scan.json").unlink()
    seen = count_scanned_shards(monkeypatch)
    assert_same_top(explorer.scan(bb, images, **options), first)
    assert seen == [0]


RESUME_SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_scan import small_backbone
    import explorer
    from explorer.dataset import local

    read = local._Pixels.__getitem__
    def slow(self, index):  # slow enough to be killed mid-scan
        time.sleep(0.25)
        return read(self, index)
    local._Pixels.__getitem__ = slow
    explorer.scan(small_backbone(), {images!r}, k=3, batch_size=2, shard_size=4, num_workers=0,
                  cache={cache!r}, progress=False)
    print("finished")
    """
)


def test_resume_after_a_kill_equals_an_uninterrupted_scan(bb, tmp_path, monkeypatch):
    images = tmp_path / "images"
    write_images(images, 20)
    cache = tmp_path / "cache"
    script = RESUME_SCRIPT.format(tests=str(Path(__file__).parent), images=str(images), cache=str(cache))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while not list(cache.glob("*/shard-00001.json")):
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the child scan never finished a second shard"
            time.sleep(0.05)
    finally:
        child.kill()
        child.wait()
    folder = next(cache.iterdir())
    done = sorted(p.name for p in folder.glob("shard-*.json"))
    assert 2 <= len(done) < 5 and not (folder / "scan.json").exists()  # killed mid-scan
    seen = count_scanned_shards(monkeypatch)
    options = dict(k=3, batch_size=2, shard_size=4, num_workers=0, progress=False)
    resumed = explorer.scan(bb, images, cache=cache, **options)
    assert resumed.key == folder.name
    assert len(seen) == 5 - len(done)  # only what the kill left undone
    assert_same_top(resumed, explorer.scan(bb, images, cache=None, **options))


# ----------------------------------------------------------------------------------------------- sources


def test_paths_torch_and_hf_datasets_give_the_folder_scan(bb, tmp_path):
    images = tmp_path / "images"
    paths = write_images(images, 8)
    options = dict(out_features=["layer2"], k=3, batch_size=4, num_workers=0, cache=None, progress=False)
    by_folder = explorer.scan(bb, images, **options)
    by_paths = explorer.scan(bb, [str(p) for p in paths], **options)
    assert_same_top(by_folder, by_paths)

    class Labelled(torch.utils.data.Dataset):
        def __len__(self):
            return len(paths)

        def __getitem__(self, index):
            return Image.open(paths[index]).convert("RGB"), index % 2

    by_torch = explorer.scan(bb, Labelled(), **options)
    assert [e.source for e in by_torch.top("layer2", 0)] == [e.index for e in by_folder.top("layer2", 0)]
    assert_same_top(by_folder, by_torch, exact=False)

    datasets = pytest.importorskip("datasets")
    hf = datasets.load_dataset("imagefolder", data_dir=str(images), split="train")
    order = [item["path"] for item in hf.cast_column("image", datasets.Image(decode=False))["image"]]
    by_hf = explorer.scan(bb, hf, **options)
    names = [Path(p).name for p in paths]
    for channel in range(by_folder.channels("layer2")):
        want = [names[e.index] for e in by_folder.top("layer2", channel)]
        got = [Path(order[e.index]).name for e in by_hf.top("layer2", channel)]
        assert got == want or np.allclose(
            [e.value for e in by_hf.top("layer2", channel)],
            [e.value for e in by_folder.top("layer2", channel)],
            rtol=1e-5,
        )


def test_sample_dataset_is_deterministic_and_offline(tmp_path):
    small = explorer.sample_dataset(n=4, folder=tmp_path / "a")
    large = explorer.sample_dataset(n=6, folder=tmp_path / "b")
    names = sorted(p.name for p in small.iterdir())
    assert len(names) == 4 and sorted(p.name for p in large.iterdir())[:4] == names
    for name in names:
        assert (small / name).read_bytes() == (large / name).read_bytes()
        image = explorer.load_image(small / name)
        assert image.size == (256, 256)
    assert len({(small / n).read_bytes() for n in names}) == 4
    with pytest.raises(explorer.InvalidArgumentError):
        explorer.sample_dataset(n=0)


# ----------------------------------------------------------------------------------------------- bad input


def test_bad_sources_name_their_fix(bb, tmp_path):
    options = dict(num_workers=0, cache=None, progress=False)
    with pytest.raises(explorer.DatasetError, match="No folder"):
        explorer.scan(bb, tmp_path / "missing", **options)
    (tmp_path / "empty").mkdir()
    with pytest.raises(explorer.DatasetError, match="holds no image files"):
        explorer.scan(bb, tmp_path / "empty", **options)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"")
    (bad / "b.png").write_bytes(b"GIF89a nope")
    with pytest.raises(explorer.DatasetError, match="None of the 2 images could be read"):
        explorer.scan(bb, bad, **options)
    with pytest.raises(explorer.DatasetError, match="holds no images"):
        explorer.scan(bb, [], **options)
    with pytest.raises(explorer.DatasetError, match="Cannot scan a int"):
        explorer.scan(bb, 5, **options)
    assert issubclass(explorer.DatasetError, ValueError)


def test_unknown_stage_or_layer_and_bad_arguments(bb, folder):
    options = dict(num_workers=0, cache=None, progress=False)
    with pytest.raises(explorer.StageSelectionError):
        explorer.scan(bb, folder, out_features=["layer9"], **options)
    with pytest.raises(explorer.LayerNotFoundError, match="list_layers"):
        explorer.scan(bb, folder, layers=["layer2.9.conv"], **options)
    for wrong in (
        dict(k=0),
        dict(batch_size=-1),
        dict(shard_size=1.5),
        dict(backend="spark"),
        dict(num_workers=-1),
    ):
        with pytest.raises(explorer.InvalidArgumentError):
            explorer.scan(bb, folder, **{**options, **wrong})


def test_unwritable_cache_and_full_disk(bb, folder, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should go")
    with pytest.raises(explorer.CacheError, match="cache=None"):
        explorer.scan(bb, folder, cache=blocker / "scans", num_workers=0, progress=False)

    def full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(explorer.CacheError, match="full"):
        explorer.scan(bb, folder, cache=tmp_path / "cache", shard_size=4, num_workers=0, progress=False)
    folders = list((tmp_path / "cache").iterdir())
    leftovers = [p.name for f in folders for p in f.iterdir()] if folders else []
    assert not [
        name for name in leftovers if name.endswith((".json", ".parquet")) and name != "manifest.json"
    ]
    assert not [name for name in leftovers if name.endswith(".tmp")]  # temporary files removed


def test_atomic_write_leaves_old_content_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "x.json"
    write_atomic(path, b"old", explorer.CacheError)

    def broken(*_args):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(explorer.CacheError):
        write_atomic(path, b"new", explorer.CacheError)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_ray_missing_names_the_extra(bb, folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(explorer.MissingDependencyError, match=r"explorer\[ray\]"):
        explorer.scan(bb, folder, backend="ray", cache=None, progress=False)


# ----------------------------------------------------------------------------------------------- results


def test_crops_boxes_and_html_report(bb, folder, tmp_path):
    scan = explorer.scan(bb, folder, k=3, batch_size=4, num_workers=0, cache=None, progress=False)
    sides = scan.info["fields"]
    assert 4 <= sides["layer1"] < sides["layer2"] <= 2 * SIZE[0]  # at least the stride; grows with depth
    exemplar = scan.top("layer2", 5)[0]
    left, top, right, bottom = exemplar.box
    center = ((exemplar.cell[1] + 0.5) * 8, (exemplar.cell[0] + 0.5) * 8)  # layer2: stride 8
    assert 0 <= left < right <= SIZE[1] and 0 <= top < bottom <= SIZE[0]
    assert left <= center[0] <= right and top <= center[1] <= bottom
    crops = scan.crops("layer2", 5)
    assert [c.size for c in crops] == [
        (e.box[2] - e.box[0], e.box[3] - e.box[1]) for e in scan.top("layer2", 5)
    ]
    # the first crop is the overlay of the exemplar's own map, cut at its box
    view = explorer.model_view(explorer.load_image(exemplar.source), bb.preprocess)
    fmap = bb.extract([exemplar.source])["layer2"][0, 5]
    vrange = (float(scan.stats("layer2").mean[5]), exemplar.value)
    want = explorer.overlay(view, fmap, alpha=0.5, cmap="inferno", vrange=vrange)
    assert np.array_equal(np.asarray(crops[0]), want[top:bottom, left:right])

    index = scan.save_html(tmp_path / "report")
    page = (tmp_path / "report" / "layer2.html").read_text()
    assert index.name == "index.html" and 'href="layer2.html"' in index.read_text()
    assert page.count("<figure>") == scan.channels("layer2") * 3
    crop_file = tmp_path / "report" / "layer2" / "c0005_00.png"
    assert crop_file.read_bytes()[:4] == b"\x89PNG"
    assert np.array_equal(np.asarray(Image.open(crop_file).convert("RGB")), np.asarray(crops[0]))
    assert "broken.png" in index.read_text()  # the skipped image is listed

    loaded = explorer.Scan.load(tmp_path / "report", backbone=bb)
    assert_same_top(scan, loaded)
    assert loaded.skipped == scan.skipped and len(loaded) == len(scan)
    np.testing.assert_array_equal(loaded.stats("layer1").mean, scan.stats("layer1").mean)
    assert np.array_equal(np.asarray(loaded.crops("layer2", 5)[0]), np.asarray(crops[0]))
    record = json.loads((tmp_path / "report" / "scan.json").read_text())
    assert record["info"]["weights"] == "random"
    with pytest.raises(explorer.InvalidArgumentError, match="backbone=bb"):
        explorer.Scan.load(tmp_path / "report").crops("layer2", 5)
    with pytest.raises(explorer.LayerNotFoundError, match="Scanned: layer1, layer2"):
        scan.top("layer3", 0)
    with pytest.raises(explorer.InvalidArgumentError, match="0 to 127"):
        scan.top("layer2", 128)
    with pytest.raises(explorer.CacheError, match="No saved scan"):
        explorer.Scan.load(tmp_path / "nothing")


def test_fewer_images_than_k(bb, tmp_path):
    images = tmp_path / "images"
    write_images(images, 2)
    scan = explorer.scan(bb, images, k=5, num_workers=0, cache=None, progress=False)
    assert all(len(scan.top("layer2", c)) == 2 for c in range(scan.channels("layer2")))
    assert NO_IMAGE not in [e.index for e in scan.top("layer2", 0)]


def test_dataloader_workers_give_the_same_scan(bb, folder):
    options = dict(k=3, batch_size=4, shard_size=8, cache=None, progress=False)
    assert_same_top(
        explorer.scan(bb, folder, num_workers=0, **options),
        explorer.scan(bb, folder, num_workers=2, **options),
    )


def test_explorer_scan_is_the_function_however_imported():
    import explorer.dataset as package
    from explorer.dataset.scanner import scan

    assert explorer.scan is scan and package.scan is scan  # a plain function, whatever was imported first
    assert explorer.Scan is package.Scan and explorer.Exemplar is package.Exemplar


def test_histogram_bins_tiny_negative_values_below_zero():
    from explorer.dataset.reduce import _histogram, histogram_edges

    values = torch.tensor([-4e-7, -1e-30, 0.0, 3e-7, -2.5, 7.0]).view(1, 1, -1)
    counts = _histogram(values)[0]
    edges = histogram_edges()
    expected = np.clip(np.searchsorted(edges, values.view(-1).double().numpy(), side="right") - 1, 0, 63)
    assert counts.tolist() == np.bincount(expected, minlength=64).tolist()
    assert counts[31] == 2 and counts[32] == 2  # the two negatives below zero, 0.0 and 3e-7 above
