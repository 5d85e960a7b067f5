"""What a scan reads: a folder, a list of paths, a torch ``Dataset`` or a Hugging Face ``datasets.Dataset``.

:func:`open_source` turns any of them into an :class:`ImageSource`: a fixed, ordered list of images, each read
by position into an RGB ``PIL.Image`` (through :func:`explorer.load_image`), with a fingerprint for the cache
key. The order is the scan's image order, which breaks ties between equal values.

Folders are listed recursively, in the sorted order of their relative POSIX paths; files whose suffix is not an
image format that :func:`~explorer.load_image` reads are left out, as are hidden files and folders (a leading
dot, such as ``.ipynb_checkpoints``). A folder's fingerprint is its listing with every file's size and
modification time, so an edited, added or removed file changes it. A Hugging Face dataset's fingerprint is its
own (``Dataset._fingerprint``, which follows its data files and every transform; datasets has no public one, so a
version without it scans uncached). A torch ``Dataset`` has no content fingerprint unless it sets a
``fingerprint`` attribute (a string that changes with its contents); without one its scan is not cached
(:attr:`ImageSource.fingerprint` is None).

Example::

    >>> source = open_source(explorer.sample_dataset(16))
    >>> len(source), source.name(0)
    (16, '.../00000_astronaut.jpg')
    >>> source.read(0).size
    (256, 256)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from .._args import shown
from ..errors import DatasetError, ImageError
from ..images import load_image

__all__ = ["IMAGE_SUFFIXES", "ImageSource", "SourceT", "list_folder", "open_source"]

_log = logging.getLogger(__name__)

SourceT = str | os.PathLike | Sequence[str | os.PathLike] | Any
"""Every form a scan's source may take: a folder, a list of paths, a torch ``Dataset``, a ``datasets.Dataset``."""

IMAGE_SUFFIXES = (
    ".jpg",
    ".jpeg",
    ".jpe",
    ".jfif",
    ".mpo",
    ".png",
    ".apng",
    ".webp",
    ".gif",
    ".bmp",
    ".dib",
    ".tif",
    ".tiff",
    ".ico",
    ".tga",
    ".icb",
    ".vda",
    ".vst",
    ".ppm",
    ".pgm",
    ".pbm",
    ".pnm",
)
"""File suffixes (lower case) of the formats :data:`explorer.images.FORMATS` that a folder scan lists."""


def _digest(payload: object) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class ImageSource:
    """An ordered, fixed list of images that a scan reads by position.

    Attributes:
        kind: ``"folder"``, ``"paths"``, ``"torch"`` or ``"hf"``.
        fingerprint: a hash of what the images are, for the cache key; None when it cannot be known.
        unreadable: ``[(folder, reason), ...]`` for sub-folders that could not be listed (their images are not
            in the source; a scan lists them in ``scan.skipped``).
    """

    def __init__(self, kind: str, count: int, fingerprint: str | None) -> None:
        self.kind = kind
        self.fingerprint = fingerprint
        self.unreadable: list[tuple[str, str]] = []
        self._count = count

    def __len__(self) -> int:
        return self._count

    def name(self, index: int) -> str | int:
        """How an exemplar names the image: its path for files, its position for datasets."""
        return index

    def read(self, index: int) -> Image.Image:
        """The image at ``index`` as RGB; raises :class:`~explorer.ImageError` when it cannot be read."""
        raise NotImplementedError


class PathSource(ImageSource):
    """Image files, in the order given."""

    def __init__(self, kind: str, paths: Sequence[Path], fingerprint: str) -> None:
        super().__init__(kind, len(paths), fingerprint)
        self.paths = [str(path) for path in paths]

    def name(self, index: int) -> str:
        return self.paths[index]

    def read(self, index: int) -> Image.Image:
        return load_image(self.paths[index])


class _ItemSource(ImageSource):
    """Items of an indexable dataset; each item is an image, ``(image, label, ...)`` or a dict with an image."""

    def __init__(self, kind: str, dataset: Any, fingerprint: str | None, column: str | None = None) -> None:
        super().__init__(kind, len(dataset), fingerprint)
        self.dataset = dataset
        self.column = column

    def read(self, index: int) -> Image.Image:
        try:
            item = self.dataset[index]
            if self.column is not None:
                item = item[self.column]
            elif isinstance(item, (tuple, list)) and item:
                item = item[0]
            elif isinstance(item, dict):
                item = next((v for v in item.values() if isinstance(v, Image.Image)), item)
            return load_image(item, name=f"Item {index}")
        except ImageError:
            raise
        except Exception as err:  # a dataset's own decoder or transform failed on this item
            raise ImageError(f"Item {index} could not be read: {type(err).__name__}: {err}") from err


def list_folder(folder: Path, unreadable: list[tuple[str, str]] | None = None) -> list[Path]:
    """Every image file under ``folder`` (recursive), sorted by relative path, hidden entries left out.

    Sub-folders that cannot be listed are appended to ``unreadable`` as ``(folder, reason)``.
    """
    found = []

    def refused(err: OSError) -> None:
        if unreadable is not None:
            unreadable.append((str(err.filename), f"the folder could not be listed ({err.strerror or err})"))

    for root, dirs, files in os.walk(folder, onerror=refused):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [
            Path(root, f) for f in files if not f.startswith(".") and f.lower().endswith(IMAGE_SUFFIXES)
        ]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _listing_fingerprint(paths: Sequence[Path], root: Path | None) -> str:
    entries = []
    for path in paths:
        try:
            info = path.stat()
            entries.append([str(path.relative_to(root) if root else path), info.st_size, info.st_mtime_ns])
        except OSError:  # a file that vanished is skipped at read time; it still shapes the key
            entries.append([str(path), -1, -1])
    return _digest(entries)


def _folder_source(folder: Path) -> PathSource:
    if not os.access(folder, os.R_OK | os.X_OK) and folder.is_dir():
        raise DatasetError(f"The folder {folder} cannot be read (permission denied). Check its permissions.")
    if not folder.exists():
        raise DatasetError(f"No folder at {folder}. Check the path, or pass a list of image paths instead.")
    if not folder.is_dir():
        raise DatasetError(
            f"{folder} is a file, not a folder. Pass its folder, or a list of paths: scan(spec, [{str(folder)!r}])."
        )
    unreadable: list[tuple[str, str]] = []
    paths = list_folder(folder, unreadable)
    if not paths:
        raise DatasetError(
            f"{folder} holds no image files (looked recursively for {', '.join(IMAGE_SUFFIXES[:6])}, ...). "
            "Point at a folder of images, for example explorer.sample_dataset()."
        )
    found = PathSource("folder", paths, _listing_fingerprint(paths, folder))
    found.unreadable = unreadable
    return found


def _is_hf_dataset(source: object) -> bool:
    return type(source).__module__.startswith("datasets.") and hasattr(source, "features")


def _hf_source(dataset: Any) -> _ItemSource:
    import datasets

    columns = [name for name, feature in dataset.features.items() if isinstance(feature, datasets.Image)]
    if not columns:
        raise DatasetError(
            f"The datasets.Dataset has no image column (features: {', '.join(dataset.features)}). "
            'Cast one: dataset.cast_column("image", datasets.Image()).'
        )
    column = "image" if "image" in columns else columns[0]
    # datasets has no public fingerprint: read its private one tolerantly; without it the scan is not cached
    own = getattr(dataset, "_fingerprint", None)
    key = _digest(["hf", own, column, len(dataset)]) if isinstance(own, str) else None
    return _ItemSource("hf", dataset, key, column)


def _path(source: str | bytes | os.PathLike) -> Path:
    """A path from a ``str``, ``bytes`` (decoded as the file system does) or path-like; an empty one, or one
    holding a NUL byte, is refused rather than read as the current folder."""
    try:
        text = os.fsdecode(source)
    except (TypeError, UnicodeDecodeError) as err:
        raise DatasetError(
            f"{shown(source)} is not a path ({err}). Pass a folder or a list of paths."
        ) from err
    if not text.strip():
        raise DatasetError(
            'The source is an empty path. Pass a folder ("." for the current one) or a list of image paths.'
        )
    if "\x00" in text:
        raise DatasetError(f"The path {shown(text)} holds a NUL byte. Pass a plain folder or file path.")
    return Path(text).expanduser()


def open_source(source: SourceT) -> ImageSource:
    """Turn a folder, a list of paths, a torch ``Dataset`` or a ``datasets.Dataset`` into an :class:`ImageSource`.

    Raises:
        DatasetError: a missing or empty folder, an empty list or dataset, or a source of another kind.
    """
    if isinstance(source, ImageSource):
        found = source
    elif isinstance(source, (str, bytes, os.PathLike)):
        found = _folder_source(_path(source))
    elif _is_hf_dataset(source):
        found = _hf_source(source)
    elif isinstance(source, (list, tuple)) and all(isinstance(p, (str, bytes, os.PathLike)) for p in source):
        paths, seen = [], set()
        for path in map(_path, source):  # the same file twice would fill a top-k twice: kept once
            if (key := os.path.realpath(path)) not in seen:
                seen.add(key)
                paths.append(path)
        if len(paths) < len(source):
            _log.warning("%d duplicate paths left out of the scan", len(source) - len(paths))
        found = PathSource("paths", paths, _listing_fingerprint(paths, None))
    elif hasattr(source, "__getitem__") and hasattr(source, "__len__"):
        try:
            count = len(source)
        except Exception as err:  # noqa: BLE001 - a dataset whose len() fails
            raise DatasetError(
                f"len() of the {type(source).__name__} failed ({type(err).__name__})."
            ) from err
        if not isinstance(count, int) or count < 0:
            raise DatasetError(f"The {type(source).__name__} gives len() = {shown(count)}; it needs a count.")
        fingerprint = getattr(source, "fingerprint", None)
        fingerprint = fingerprint if isinstance(fingerprint, str) else None
        key = _digest(["torch", type(source).__qualname__, fingerprint, count]) if fingerprint else None
        found = _ItemSource("torch", source, key)
    else:
        raise DatasetError(
            f"Cannot scan a {type(source).__name__}. Pass a folder, a list of image paths, a torch Dataset "
            "or a datasets.Dataset with an image column."
        )
    if len(found) == 0:
        raise DatasetError(f"The {found.kind} source holds no images. Pass a source with at least one image.")
    return found
