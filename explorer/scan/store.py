"""Where a scan's work is kept: content-hashed cache folders of atomically written Parquet shards.

A scan's cache folder is ``<cache>/<key>/``. The key (:func:`cache_key`) hashes everything that determines the
result: the weights (every tensor of the state dict), the spec, the stages and layers, the preprocessing, the
source's fingerprint (for a folder: every file's path, size and modification time), ``k``, the shard and batch
sizes, the device type, the precision and :data:`FORMAT_VERSION`. A changed dataset or checkpoint is another key,
so a stale cache is never served.

Inside, ``manifest.json`` records the key's parts. Each finished shard is two Parquet tables in one file
(``shard-00003.parquet``: the top-k rows and the statistics rows, told apart by a ``table`` column) and a marker
``shard-00003.json`` holding the file's SHA-256, the shard's image count and its skipped images. Both are written
to a temporary file, flushed to disk and renamed into place, the marker last: a shard without its marker is
unfinished and is recomputed; a shard whose file does not match its marker's hash, or does not parse, is corrupt:
it is logged, deleted and recomputed, never trusted.

Example::

    >>> store = ShardStore("~/.cache/explorer/scans", key, manifest)
    >>> store.save_shard(0, reduction, skipped=[])
    >>> store.load_shard(0).reduction.stages["blocks.2"].values.shape
    torch.Size([40, 9])
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch import nn

from ..errors import CacheError
from .reduce import ACCUMULATORS, Reduction, StageReduction

__all__ = [
    "DEFAULT_CACHE",
    "FORMAT_VERSION",
    "ShardResult",
    "ShardStore",
    "atomic_write",
    "cache_key",
    "reduction_from_parquet",
    "reduction_to_parquet",
    "weights_digest",
]

_log = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Bumped whenever what a cache folder holds changes meaning; part of every key."""

DEFAULT_CACHE = Path("~/.cache/explorer/scans")
"""Where scans are cached unless ``cache=`` says otherwise."""


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of every tensor in ``model.state_dict()`` (name, dtype, shape and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_key(parts: dict) -> str:
    """A short content hash of the JSON-able ``parts`` that determine a scan's result."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def _disk_error(err: OSError, folder: Path) -> CacheError:
    if err.errno == errno.ENOSPC:
        return CacheError(
            f"The disk holding {folder} is full. Free some space, or pass cache=<another folder>."
        )
    return CacheError(
        f"Cannot write the scan cache in {folder} ({err.strerror or err}). "
        "Pass cache=<a writable folder>, or cache=None to keep the scan in memory."
    )


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either absent, as before, or complete: a temporary file in
    the same folder, flushed to disk, then renamed over it.

    Raises:
        CacheError: the folder is not writable or the disk is full (the temporary file is removed).
    """
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise _disk_error(err, path.parent) from err
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as err:
        Path(temporary).unlink(missing_ok=True)
        raise _disk_error(err, path.parent) from err


def _stage_tables(name: str, stage: StageReduction) -> tuple[dict, dict]:
    channels, k = stage.values.shape
    top = {
        "stage": [name] * (channels * k),
        "channel": np.repeat(np.arange(channels, dtype=np.int32), k),
        "rank": np.tile(np.arange(k, dtype=np.int32), channels),
        "value": stage.values.cpu().numpy().reshape(-1),
        "image": stage.images.cpu().numpy().reshape(-1),
        "cell": stage.cells.cpu().numpy().reshape(-1),
    }
    stats = {"stage": [name] * channels, "channel": np.arange(channels, dtype=np.int32)}
    stats.update({column: stage.sums[:, i] for i, column in enumerate(ACCUMULATORS)})
    stats["histogram"] = list(stage.histogram.cpu().numpy())
    return top, stats


def reduction_to_parquet(reduction: Reduction) -> bytes:
    """One Parquet file holding a reduction: its top-k rows and its statistics rows (``table`` tells which)."""
    tables = []
    for name, stage in reduction.stages.items():
        top, stats = _stage_tables(name, stage)
        tables.append(pa.table({"table": ["top"] * len(top["stage"]), **top}))
        stats_table = pa.table({"table": ["stats"] * len(stats["stage"]), **stats})
        height, width = stage.map_size
        tables.append(stats_table.append_column("map_height", pa.array([height] * len(stats_table))))
        tables[-1] = tables[-1].append_column("map_width", pa.array([width] * len(stats_table)))
    if not tables:  # every image of the shard was skipped
        return b""
    table = pa.concat_tables(tables, promote_options="permissive")
    table = table.replace_schema_metadata({"k": str(reduction.k), "format": str(FORMAT_VERSION)})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def reduction_from_parquet(data: bytes, k: int) -> Reduction:
    """The :class:`Reduction` that :func:`reduction_to_parquet` wrote."""
    reduction = Reduction(k)
    if not data:
        return reduction
    table = pq.read_table(io.BytesIO(data))
    for name in dict.fromkeys(table.column("stage").to_pylist()):
        in_stage = pc.equal(table["stage"], name)
        top = table.filter(pc.and_(in_stage, pc.equal(table["table"], "top")))
        top = top.sort_by([("channel", "ascending"), ("rank", "ascending")])
        stats = table.filter(pc.and_(in_stage, pc.equal(table["table"], "stats"))).sort_by("channel")
        channels = len(stats)
        if len(top) != channels * k or channels == 0:
            raise ValueError(f"stage {name}: {len(top)} top rows for {channels} channels and k={k}")

        def column(part: pa.Table, name: str, dtype, rows: int = channels) -> torch.Tensor:
            return torch.from_numpy(part.column(name).to_numpy().astype(dtype).reshape(rows, -1))

        reduction.stages[name] = StageReduction(
            values=column(top, "value", np.float32),
            images=column(top, "image", np.int64),
            cells=column(top, "cell", np.int64),
            sums=np.stack([stats.column(c).to_numpy().astype(np.float64) for c in ACCUMULATORS], -1),
            histogram=torch.from_numpy(
                np.stack(stats.column("histogram").to_numpy(zero_copy_only=False)).astype(np.int64)
            ),
            map_size=(int(stats.column("map_height")[0].as_py()), int(stats.column("map_width")[0].as_py())),
        )
    return reduction


@dataclass
class ShardResult:
    """One finished shard: its reduction, how many images it scanned, and the images it skipped."""

    reduction: Reduction
    scanned: int
    skipped: list[tuple[str | int, str]] = field(default_factory=list)


class ShardStore:
    """The cache folder of one scan key: its manifest and its finished shards.

    Args:
        root: the cache folder (``~`` expanded); created when missing.
        key: the scan's :func:`cache_key`.
        manifest: the key's parts, written as ``manifest.json``.

    Raises:
        CacheError: the folder cannot be created or written, or holds another key's manifest.
    """

    def __init__(self, root: str | os.PathLike, key: str, manifest: dict) -> None:
        self.folder = Path(root).expanduser() / key
        self.key = key
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise _disk_error(err, self.folder) from err
        if not os.access(self.folder, os.W_OK):
            raise _disk_error(PermissionError(errno.EACCES, "permission denied"), self.folder)
        path = self.folder / "manifest.json"
        if path.exists():
            try:
                found = json.loads(path.read_text())
            except (OSError, ValueError):
                found = None
            if found != json.loads(json.dumps(manifest)):
                _log.warning("%s does not match this scan's key parts; rewriting it", path)
                atomic_write(path, json.dumps(manifest, indent=1, sort_keys=True).encode())
        else:
            atomic_write(path, json.dumps(manifest, indent=1, sort_keys=True).encode())

    def _paths(self, shard: int) -> tuple[Path, Path]:
        stem = self.folder / f"shard-{shard:05d}"
        return stem.with_suffix(".parquet"), stem.with_suffix(".json")

    def save_shard(self, shard: int, result: ShardResult) -> None:
        """Write a finished shard: its Parquet file, then its marker."""
        data = reduction_to_parquet(result.reduction)
        table, marker = self._paths(shard)
        atomic_write(table, data)
        record = {
            "shard": shard,
            "sha256": hashlib.sha256(data).hexdigest(),
            "scanned": result.scanned,
            "skipped": [list(item) for item in result.skipped],
        }
        atomic_write(marker, json.dumps(record).encode())

    def load_shard(self, shard: int, k: int) -> ShardResult | None:
        """A finished shard, or None when it is unfinished or corrupt (a corrupt one is deleted)."""
        table, marker = self._paths(shard)
        if not marker.exists():
            return None
        try:
            record = json.loads(marker.read_text())
            data = table.read_bytes()
            if hashlib.sha256(data).hexdigest() != record["sha256"]:
                raise ValueError("the Parquet file does not match the hash in its marker")
            reduction = reduction_from_parquet(data, k)
            skipped = [(source, reason) for source, reason in record["skipped"]]
            return ShardResult(reduction, int(record["scanned"]), skipped)
        except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as err:
            _log.warning("shard %d in %s is corrupt (%s); recomputing it", shard, self.folder, err)
            marker.unlink(missing_ok=True)
            table.unlink(missing_ok=True)
            return None
