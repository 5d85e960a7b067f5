"""Where a scan's work is kept: content-hashed cache folders of atomically written Parquet shards.

A scan's cache folder is ``<cache>/<key>/``. The key (:func:`cache_key`) hashes everything that determines the
result: the weights (every tensor of the state dict), the spec, the stages and layers, the preprocessing, the
source's fingerprint (for a folder: every file's path, size and modification time), ``k``, the shard and batch
sizes, the device type, the precision and :data:`FORMAT_VERSION`. A changed dataset or checkpoint is another key,
so a stale cache is never served.

Inside, ``manifest.json`` records the key's parts. Each finished shard is two Parquet tables in one file
(``shard-00003.parquet``: the top-k rows and the statistics rows, told apart by a ``table`` column) and a marker
``shard-00003.json`` holding the shard's image count, its skipped images and one SHA-256 over those fields and
the file. Both are written
to a temporary file, flushed to disk and renamed into place, the marker last: a shard without its marker is
unfinished and is recomputed; a shard whose file does not match its marker's hash, or does not parse, is corrupt:
it is logged, deleted and recomputed, never trusted.

Example::

    >>> reduction = Reduction(k=3)
    >>> reduction.update({"blocks.2": maps["blocks.2"]}, torch.arange(1))
    >>> store = ShardStore("scans", cache_key({"example": 1}), {"example": 1})
    >>> store.save_shard(0, ShardResult(reduction, scanned=1, skipped=[]))
    >>> store.load_shard(0, k=3).reduction.stages["blocks.2"].values.shape
    torch.Size([40, 3])
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch import nn

from ..errors import CacheError
from ..files import make_folder, write_atomic
from .reduce import ACCUMULATORS, Reduction, StageReduction

__all__ = [
    "DAMAGED",
    "DEFAULT_CACHE",
    "FORMAT_VERSION",
    "ShardResult",
    "ShardStore",
    "cache_key",
    "reduction_from_parquet",
    "reduction_to_parquet",
    "weights_digest",
]

DAMAGED = (OSError, ValueError, KeyError, TypeError, IndexError, RecursionError, pa.ArrowException)
"""What reading a damaged or edited saved file raises (recomputed in the cache, a CacheError on load)."""

_log = logging.getLogger(__name__)

FORMAT_VERSION = 2
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


_CACHE_HINT = "Pass cache=<a writable folder>, or cache=None to keep the scan in memory."


def _disk_error(err: OSError, folder: Path) -> CacheError:
    if err.errno == errno.ENOSPC:
        return CacheError(
            f"The disk holding {folder} is full. Free some space, or pass cache=<another folder>."
        )
    return CacheError(
        f"Cannot write the scan cache in {folder} ({err.strerror or err}). "
        "Pass cache=<a writable folder>, or cache=None to keep the scan in memory."
    )


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
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise _disk_error(err, self.folder) from err
        make_folder(self.folder, CacheError, _CACHE_HINT)  # a link planted in its place is refused
        self.key = key
        if not os.access(self.folder, os.W_OK):
            raise _disk_error(PermissionError(errno.EACCES, "permission denied"), self.folder)
        path = self.folder / "manifest.json"
        try:
            found = json.loads(_read_json_text(path))
        except FileNotFoundError:
            found = None
        except (OSError, ValueError, RecursionError) as err:  # a folder in its place, nested or broken JSON
            _log.warning("%s is unreadable (%s); rewriting it", path, type(err).__name__)
            _remove(path)
            found = None
        if found != json.loads(json.dumps(manifest)):
            if found is not None:
                _log.warning("%s does not match this scan's key parts; rewriting it", path)
            write_atomic(
                path, json.dumps(manifest, indent=1, sort_keys=True).encode(), CacheError, _CACHE_HINT
            )

    def _paths(self, shard: int) -> tuple[Path, Path]:
        stem = self.folder / f"shard-{shard:05d}"
        return stem.with_suffix(".parquet"), stem.with_suffix(".json")

    def save_shard(self, shard: int, result: ShardResult) -> None:
        """Write a finished shard: its Parquet file, then its marker (a hash over the file and every field)."""
        data = reduction_to_parquet(result.reduction)
        table, marker = self._paths(shard)
        write_atomic(table, data, CacheError, _CACHE_HINT)
        record = {
            "shard": shard,
            "scanned": result.scanned,
            "skipped": [list(item) for item in result.skipped],
        }
        record["sha256"] = _marker_digest(record, data)
        write_atomic(marker, json.dumps(record).encode(), CacheError, _CACHE_HINT)

    def load_shard(self, shard: int, k: int, size: int | None = None) -> ShardResult | None:
        """A finished shard, or None when it is unfinished or corrupt (a corrupt one is deleted).

        ``size`` (the shard's image count), when given, bounds the marker's ``scanned`` and ``skipped``.
        """
        table, marker = self._paths(shard)
        if not os.path.lexists(marker):
            return None
        try:
            record = json.loads(_read_json_text(marker))
            data = table.read_bytes()
            if not isinstance(record, dict) or _marker_digest(
                {key: record.get(key) for key in ("shard", "scanned", "skipped")}, data
            ) != record.get("sha256"):
                raise ValueError("the marker's fields or the Parquet file do not match the marker's hash")
            scanned, skipped = record["scanned"], record["skipped"]
            if isinstance(scanned, bool) or not isinstance(scanned, int) or scanned < 0:
                raise ValueError(f"scanned={scanned!r}")
            if not isinstance(skipped, list) or not all(
                isinstance(item, list)
                and len(item) == 2
                and isinstance(item[0], (str, int))
                and isinstance(item[1], str)
                for item in skipped
            ):
                raise ValueError("skipped is not a list of [source, reason]")
            if size is not None and scanned + len(skipped) != size:
                raise ValueError(f"{scanned} scanned and {len(skipped)} skipped of {size} images")
            reduction = reduction_from_parquet(data, k)
            return ShardResult(reduction, scanned, [(source, reason) for source, reason in skipped])
        except DAMAGED as err:
            _log.warning(
                "shard %d in %s is corrupt (%s); recomputing it", shard, self.folder, type(err).__name__
            )
            _remove(marker)
            _remove(table)
            return None


MAX_MARKER_BYTES = 64 * 2**20
"""Largest marker or manifest read; a bigger one is damaged and recomputed."""


def _read_json_text(path: Path) -> str:
    """The text of a small JSON file; a folder, a link or an oversized file in its place is an OSError or a
    ValueError (the caller recomputes)."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise IsADirectoryError(errno.EISDIR, "not a regular file", str(path))
    if path.stat().st_size > MAX_MARKER_BYTES:
        raise ValueError(f"{path.name} is over {MAX_MARKER_BYTES:,} bytes")
    return path.read_text(encoding="utf-8")


def _marker_digest(record: dict, data: bytes) -> str:
    digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode())
    digest.update(b"\x00")
    digest.update(data)
    return digest.hexdigest()


def _remove(path: Path) -> None:
    """Delete a damaged cache entry, whatever it is (a file, a link, a folder)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError as err:
        raise _disk_error(err, path.parent) from err
