"""The Ray backend: the same shards, scanned by a pool of stateful Ray Data actors that hold the model.

Ray Data distributes the list of unfinished shards (one row each). ``map_batches`` runs :class:`_ShardActor`, a
stateful actor class: each actor receives the backbone once (through Ray's object store), moves it to its GPU
when the cluster gave it one (``num_gpus=1`` per actor when the cluster has GPUs), and scans whole shards with
:func:`explorer.scan.local.scan_shards`, so it reads, batches and reduces exactly as the local backend does; raw
feature maps never leave the actor. What comes back per shard is its reduction as Parquet bytes (kilobytes) and
its skipped images; the driver writes the shard into its own cache folder (no shared file system is needed) and
merges shards in order, so the result is the local backend's.

``ray.init()`` is called when Ray is not running yet: with no address it starts a local Ray on this machine;
``address=`` (or the ``RAY_ADDRESS`` variable) joins a running cluster. Ray is left running afterwards, as
``ray.init`` leaves it (``ray.shutdown()`` stops it).

Example::

    >>> for shard, result in ray_shards(bb, source, shards, ["blocks.2"], k=9, batch_size=32):
    ...     print(shard.index, result.scanned)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence

import torch

from ..backbones import Backbone
from ..errors import MissingDependencyError
from .local import Projection, Shard, scan_shards
from .sources import ImageSource
from .store import ShardResult, reduction_from_parquet, reduction_to_parquet

__all__ = ["import_ray", "ray_shards"]

_log = logging.getLogger(__name__)


def import_ray():
    """The ``ray`` module with Ray Data, or :class:`~explorer.MissingDependencyError` naming the extra."""
    try:
        import ray
        import ray.data  # noqa: F401  (Ray without its data extra lacks it)
    except ImportError as err:
        raise MissingDependencyError(
            'backend="ray" needs Ray Data: pip install "explorer[ray]" (or pip install "ray[data]"), '
            'or scan with backend="local".'
        ) from err
    return ray


class _ShardActor:
    """Holds one copy of the model; each call scans whole shards and returns their reductions as Parquet."""

    def __init__(
        self,
        backbone,
        source: ImageSource,
        names: list[str],
        k: int,
        batch_size: int,
        threads: int,
        project: Projection | None = None,
    ):
        import ray

        bb = ray.get(backbone[0])
        self.bb = bb.to("cuda" if ray.get_gpu_ids() else "cpu")
        self.source, self.names, self.k, self.batch_size = source, names, k, batch_size
        self.project = project
        torch.set_num_threads(threads)

    def __call__(self, batch: dict) -> dict:
        rows: dict[str, list] = {
            "index": [],
            "start": [],
            "stop": [],
            "table": [],
            "scanned": [],
            "skipped": [],
        }
        for index, start, stop in zip(batch["index"], batch["start"], batch["stop"]):
            shard = Shard(int(index), int(start), int(stop))
            results = scan_shards(
                self.bb, self.source, [shard], self.names, self.k, self.batch_size, project=self.project
            )
            for _, result in results:
                rows["index"].append(shard.index)
                rows["start"].append(shard.start)
                rows["stop"].append(shard.stop)
                rows["table"].append(reduction_to_parquet(result.reduction))
                rows["scanned"].append(result.scanned)
                rows["skipped"].append(json.dumps(result.skipped))
        return rows


def ray_shards(
    bb: Backbone,
    source: ImageSource,
    shards: Sequence[Shard],
    names: Sequence[str],
    k: int,
    batch_size: int,
    address: str | None = None,
    project: Projection | None = None,
) -> Iterator[tuple[Shard, ShardResult]]:
    """Scan ``shards`` on Ray, yielding each shard's result as it arrives (in any order); ``project`` as in
    :func:`explorer.scan.local.scan_shards`."""
    ray = import_ray()
    if not shards:
        return
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the scan's own bar counts the images
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
    actors = max(1, min(len(shards), gpus or cpus))
    threads = 1 if gpus else max(1, cpus // actors)
    _log.info(
        "Ray: %d actors (%d GPUs, %d CPUs in the cluster) for %d shards", actors, gpus, cpus, len(shards)
    )
    plan = ray.data.from_items(
        [{"index": s.index, "start": s.start, "stop": s.stop} for s in shards],
        override_num_blocks=len(shards),
    )
    scanned = plan.map_batches(
        _ShardActor,
        fn_constructor_kwargs={
            "backbone": [ray.put(bb)],
            "source": source,
            "names": list(names),
            "k": k,
            "batch_size": batch_size,
            "threads": threads,
            "project": project,
        },
        batch_size=1,
        concurrency=actors,
        num_gpus=1 if gpus else 0,
        num_cpus=1 if gpus else threads,
    )
    for row in scanned.iter_rows():
        shard = Shard(int(row["index"]), int(row["start"]), int(row["stop"]))
        skipped = [(name, reason) for name, reason in json.loads(row["skipped"])]
        yield shard, ShardResult(reduction_from_parquet(row["table"], k), int(row["scanned"]), skipped)
