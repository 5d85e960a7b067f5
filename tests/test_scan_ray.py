"""The Ray backend on a real local Ray (``ray.init(num_cpus=2)``): the same scan as the local backend."""

from __future__ import annotations

import os

import pytest
from test_scan import assert_same_top, small_backbone, write_images

import explorer
from explorer.dataset import ray_backend

try:
    import ray
except ImportError:
    if os.environ.get("CI"):  # CI installs the ray extra (make test: .[dev]); there a missing Ray fails
        raise
    pytest.skip("the ray extra: pip install 'explorer[ray]'", allow_module_level=True)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    for attempt in range(2):  # Ray gives a starting node 30 s; a loaded machine can miss that once
        try:
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
            break
        except Exception:
            ray.shutdown()
            if attempt:
                raise
    try:
        yield
    finally:
        ray.shutdown()


def test_ray_equals_local_and_resumes_from_local_shards(local_ray, tmp_path, monkeypatch, recwarn):
    bb = small_backbone()
    images = tmp_path / "images"
    write_images(images, 10)
    (images / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    options = dict(out_features=["layer1", "layer2"], k=3, batch_size=4, shard_size=4, progress=False)
    local = explorer.scan(bb, images, backend="local", num_workers=0, cache=None, **options)
    on_ray = explorer.scan(bb, images, backend="ray", cache=tmp_path / "cache", **options)
    # explorer calls Ray's current API: no deprecation warning points at explorer's code
    deprecated = [
        w for w in recwarn if issubclass(w.category, DeprecationWarning) and "explorer" in str(w.filename)
    ]
    assert not deprecated, [str(w.message) for w in deprecated]
    assert_same_top(local, on_ray)  # exactly: values, images, cells
    for stage in local.stages:
        for column in ("mean", "std", "min", "max", "sparsity"):
            a, b = getattr(local.stats(stage), column), getattr(on_ray.stats(stage), column)
            assert a.tolist() == b.tolist(), (stage, column)
    assert on_ray.skipped == local.skipped and len(on_ray.skipped) == 1
    folder = tmp_path / "cache" / on_ray.key
    assert sorted(p.name for p in folder.glob("shard-*.json")) == [f"shard-0000{i}.json" for i in range(3)]

    # a shard lost from the cache is rescanned on Ray alone; the others are read back
    (folder / "shard-00002.json").unlink()
    (folder / "scan.json").unlink()
    seen = []
    real = ray_backend.ray_shards

    def counting(bb, source, shards, *args, **kwargs):
        seen.extend(s.index for s in shards)
        return real(bb, source, shards, *args, **kwargs)

    monkeypatch.setattr(ray_backend, "ray_shards", counting)
    again = explorer.scan(bb, images, backend="ray", cache=tmp_path / "cache", **options)
    assert seen == [2]
    assert_same_top(local, again)
