"""The saved form of a scan, read back safely: where a saved scan is, its digest, and a check of every field.

``scan.json`` is data, never trusted: :func:`check_record` checks the type and range of every field and
:func:`check_reduction` that the Parquet tables agree with it, before :meth:`explorer.Scan.load` uses them.

Example::

    >>> record_digest({"info": {}}, b"")[:12]
    'd1489e870f60'
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from .._args import shown
from ..errors import CacheError, InvalidArgumentError
from ..images import MAX_INPUT_SIDE
from .reduce import MAX_K, NO_IMAGE, Reduction
from .store import DEFAULT_CACHE, FORMAT_VERSION

__all__ = [
    "MAX_RECORD_BYTES",
    "check_record",
    "check_reduction",
    "read_small",
    "record_digest",
    "saved_folder",
]

MAX_RECORD_BYTES = 256 * 2**20
"""Largest ``scan.json`` read (the exemplars' names and skipped images of a scan of millions of images fit)."""

_HEX = re.compile(r"[0-9a-f]{64}")
_KEY = re.compile(r"[0-9a-f]{1,64}")
_KINDS = ("folder", "paths", "torch", "hf")
_MOST = 2**40  # no count in a scan comes near it


def record_digest(record: dict, table: bytes) -> str:
    """SHA-256 over the saved fields (canonical JSON) and the Parquet bytes."""
    digest = hashlib.sha256(json.dumps(record, sort_keys=True, allow_nan=False).encode())
    digest.update(b"\x00")
    digest.update(table)
    return digest.hexdigest()


def saved_folder(path: str | os.PathLike) -> Path:
    """The folder a scan is saved in: ``path`` itself, or the folder of the key ``path`` in the default cache."""
    if not isinstance(path, (str, os.PathLike)) or "\x00" in str(path) or not str(path).strip():
        raise InvalidArgumentError(
            f"path={shown(path)}; pass the folder a scan was saved in (scan.save(folder)) or a scan key."
        )
    folder = Path(path).expanduser()
    try:
        if (
            not (folder / "scan.json").exists()
            and (DEFAULT_CACHE.expanduser() / str(path) / "scan.json").exists()
        ):
            folder = DEFAULT_CACHE.expanduser() / str(path)
    except OSError as err:  # a name too long, a folder that cannot be listed
        raise CacheError(f"Cannot read a scan at {shown(str(path))} ({err.strerror or err}).") from err
    return folder


def read_small(path: Path) -> str:
    """The text of a saved record; a ValueError when it is over :data:`MAX_RECORD_BYTES`."""
    size = path.stat().st_size
    if size > MAX_RECORD_BYTES:
        raise ValueError(f"{path.name} is {size:,} bytes, over {MAX_RECORD_BYTES:,}")
    return path.read_text(encoding="utf-8")


def _integer(value: object, name: str, low: int, high: int | None = None) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        raise ValueError(
            f"{name}={shown(value)} is not a whole number from {low} to {high if high is not None else 'up'}"
        )
    return value


def _text(value: object, name: str) -> str:
    if not isinstance(value, str) or len(value) > 4096:
        raise ValueError(f"{name}={shown(value)} is not a string")
    return value


def _source_name(value: object, name: str) -> str | int:
    return _integer(value, name, 0) if isinstance(value, int) else _text(value, name)


def check_record(body: dict) -> tuple[dict, dict[int, str | int], list[tuple[str | int, str]]]:
    """The saved fields, each checked for type and range; a ValueError names the first one that is wrong."""
    info = body["info"]
    if not isinstance(info, dict):
        raise ValueError("info is not a mapping")
    _text(info["spec"], "spec")
    _text(info["weights"], "weights")
    if not isinstance(info["weights_sha256"], str) or not _HEX.fullmatch(info["weights_sha256"]):
        raise ValueError("weights_sha256 is not a SHA-256")
    stages = info["stages"]
    if not isinstance(stages, list) or not stages or len(set(map(str, stages))) != len(stages):
        raise ValueError("stages is not a list of distinct names")
    for stage in stages:
        _text(stage, "stage")
    size = info["input_size"]
    if not isinstance(size, list) or len(size) != 2:
        raise ValueError("input_size is not [height, width]")
    for side in size:
        _integer(side, "input_size", 1, MAX_INPUT_SIDE)
    _integer(info["k"], "k", 1, MAX_K)
    if info["format"] != FORMAT_VERSION:
        raise ValueError(f"format {shown(info['format'])}, written by another version of explorer")
    for name in ("shard_size", "batch_size"):
        _integer(info[name], name, 1, _MOST)
    fields = info["fields"]
    if not isinstance(fields, dict) or set(fields) != set(stages):
        raise ValueError("fields does not give every stage's receptive field")
    for stage in stages:
        _integer(fields[stage], f"fields[{stage}]", 1, 4 * MAX_INPUT_SIDE)
    images = _integer(info["images"], "images", 1, _MOST)
    _integer(info["scanned"], "scanned", 1, images)
    if info["source_kind"] not in _KINDS:
        raise ValueError(f"source_kind={shown(info['source_kind'])}")
    if info["key"] is not None and not (isinstance(info["key"], str) and _KEY.fullmatch(info["key"])):
        raise ValueError("key is not a cache key")
    if not isinstance(body["names"], list) or not isinstance(body["skipped"], list):
        raise ValueError("names and skipped are not lists")
    names: dict[int, str | int] = {}
    for entry in body["names"]:
        if not isinstance(entry, list) or len(entry) != 2:
            raise ValueError("a name is not [index, source]")
        names[_integer(entry[0], "image index", 0, images - 1)] = _source_name(entry[1], "source")
    skipped = []
    for entry in body["skipped"]:
        if not isinstance(entry, list) or len(entry) != 2:
            raise ValueError("a skipped entry is not [source, reason]")
        skipped.append((_source_name(entry[0], "skipped source"), _text(entry[1], "reason")))
    return info, names, skipped


def check_reduction(info: dict, reduction: Reduction, names: dict[int, str | int]) -> None:
    """A ValueError when the tables hold other stages than ``info``, or an exemplar outside its map or images."""
    if list(reduction.stages) != list(info["stages"]):
        raise ValueError("scan.parquet holds other stages than scan.json")
    for stage, found in reduction.stages.items():
        height, width = found.map_size
        if height < 1 or width < 1:
            raise ValueError(f"{stage}: map size {found.map_size}")
        images = found.images[found.images != NO_IMAGE]
        if images.numel() and (int(images.min()) < 0 or any(int(i) not in names for i in images.unique())):
            raise ValueError(f"{stage}: an exemplar names an image that was not saved")
        cells = found.cells[found.images != NO_IMAGE]
        if cells.numel() and (int(cells.min()) < 0 or int(cells.max()) >= height * width):
            raise ValueError(f"{stage}: an exemplar's cell is outside its {height}x{width} map")
