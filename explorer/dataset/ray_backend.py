"""The Ray backend: the same shards, scanned by a pool of stateful Ray Data actors that hold the model.

Ray Data distributes the list of unfinished shards (one row each). ``map_batches`` runs :class:`_ShardActor`, a
stateful actor class: each actor receives the backbone once (through Ray's object store), moves it to its GPU
when the cluster gave it one (``num_gpus=1`` per actor when the cluster has GPUs), and scans whole shards with
:func:`explorer.dataset.local.scan_shards`, so it reads, batches and reduces exactly as the local backend does; raw
feature maps never leave the actor. What comes back per shard is its reduction as Parquet bytes (kilobytes) and
its skipped images; the driver writes the shard into its own cache folder (no shared file system is needed) and
merges shards in order, so the result is the local backend's.

``ray.init()`` is called when Ray is not running yet: with no address it starts a local Ray on this machine;
``address=`` (or the ``RAY_ADDRESS`` variable) joins a running cluster. Ray is left running afterwards, as
``ray.init`` leaves it (``ray.shutdown()`` stops it).

Example::

    >>> from explorer.dataset.local import plan_shards
    >>> from explorer.dataset.sources import open_source
    >>> source = open_source(explorer.sample_dataset(8))
    >>> shards = plan_shards(len(source), shard_size=4)
    >>> for shard, result in ray_shards(bb, source, shards, ["blocks.2"], 3, 4):  # doctest: +SKIP
    ...     print(shard.index, result.scanned)     # starts Ray (tests/test_scan_ray.py runs it)
    0 4
    1 4
"""

from __future__ import annotations

import json
import logging
import re
import socket
from collections.abc import Iterator, Sequence

import torch

from .._args import shown
from ..backbones import Backbone
from ..errors import ClusterError, ExplorerError, MissingDependencyError
from .local import Projection, Shard, scan_shards
from .sources import ImageSource
from .store import ShardResult, reduction_from_parquet, reduction_to_parquet

__all__ = ["actor_plan", "check_address", "import_ray", "ray_shards", "reason"]

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


CONNECT_TIMEOUT = 5.0
"""Seconds to wait for a cluster's head to answer at ``host:port`` before refusing the address."""

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*:")


def reason(err: BaseException) -> str:
    """One line saying why Ray failed: ANSI colours and tracebacks dropped, the innermost ``XError: message``
    line when there is one, else the first line, at most 300 characters."""
    lines = [line.strip() for line in _ANSI.sub("", str(err)).splitlines() if line.strip()]
    found = [line for line in lines if _ERROR_LINE.match(line)]
    if found:
        return found[-1][:300]
    return f"{type(err).__name__}: {lines[0] if lines else ''}"[:300]


def check_address(address: str | None) -> None:
    """Refuse a malformed Ray address, or a ``host:port`` where nothing answers, before Ray waits on it.

    Raises:
        ClusterError: the address is not ``"auto"``, ``"local"``, ``"host:port"`` or ``"ray://host:port"``, or
            nothing listens at it.
    """
    if address is None or address in ("auto", "local"):
        return
    hint = 'Pass "host:port" of the head node (its GCS port, 6379 by default), "ray://host:10001" or "auto".'
    if not isinstance(address, str) or "\x00" in address or any(c.isspace() for c in address):
        raise ClusterError(f"address={shown(address)} is not a Ray address. {hint}")
    bare = address.removeprefix("ray://")
    host, _, port = bare.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterError(f"address={shown(address)} is not a Ray address. {hint}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT).close()
    except (OSError, UnicodeError) as err:
        raise ClusterError(
            f"Nothing answers at {address} ({getattr(err, 'strerror', None) or err}). Start the cluster "
            f"(ray start --head), or check the address. {hint}"
        ) from None


def actor_plan(nodes: list[dict], shards: int) -> tuple[int, int, int]:
    """``(actors, CPUs per actor, GPUs per actor)`` that fit on the alive nodes of ``ray.nodes()``.

    A request is placed on one node, so an actor never asks for more CPUs than one node has: with GPUs, one
    actor per GPU; else as many actors as there are CPUs (at most one per shard), each given the most CPUs that
    still lets every actor be placed.

    Example::

        >>> actor_plan([{"Alive": True, "Resources": {"CPU": 2.0}}] * 2, shards=1)
        (1, 2, 0)
    """
    alive = [node.get("Resources", {}) for node in nodes if node.get("Alive")]
    gpus = sum(int(resources.get("GPU", 0)) for resources in alive)
    if gpus:
        return max(1, min(shards, gpus)), 1, 1
    cpus = [int(resources.get("CPU", 0)) for resources in alive]
    actors = max(1, min(shards, sum(cpus)))
    threads = next((t for t in range(max(cpus, default=1), 0, -1) if sum(c // t for c in cpus) >= actors), 1)
    return actors, max(1, threads), 0


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
    :func:`explorer.dataset.local.scan_shards`.

    A dead actor (a lost node, say) is restarted and its shard retried by Ray Data's own fault tolerance: Ray
    2.60 takes a retry bound only through its deprecated ``**ray_remote_args``, so the scan passes named
    parameters only and keeps Ray's default. For any other failure of Ray, the scan stops with a
    :class:`~explorer.ClusterError` giving Ray's reason in one line (the shards finished before it are kept in
    the cache).

    Raises:
        ClusterError: a malformed or unreachable address, or a failure of the cluster past its retries.
    """
    ray = import_ray()
    if not shards:
        return
    try:
        if not ray.is_initialized():
            check_address(address)
            ray.init(address=address, log_to_driver=False)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the scan's own bar counts the images
        actors, threads, gpus = actor_plan(ray.nodes(), len(shards))
        _log.info("Ray: %d actors of %d CPUs, %d GPU for %d shards", actors, threads, gpus, len(shards))
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
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors),
            num_gpus=gpus,
            num_cpus=1 if gpus else threads,
        )
        for row in scanned.iter_rows():
            shard = Shard(int(row["index"]), int(row["start"]), int(row["stop"]))
            skipped = [(name, why) for name, why in json.loads(row["skipped"])]
            yield shard, ShardResult(reduction_from_parquet(row["table"], k), int(row["scanned"]), skipped)
    except ExplorerError:
        raise
    except Exception as err:  # noqa: BLE001 - every failure of Ray, one line, no traceback
        raise ClusterError(
            f"The scan on Ray failed: {reason(err)}. Finished shards are kept in the cache; run the scan again, "
            'or scan with backend="local".'
        ) from None
