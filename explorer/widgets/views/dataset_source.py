"""What the Dataset tab's ``dataset_source`` names, shared by its two modes (channels and concepts): the sample
count of ``"samples:N"``, the folder to read, and an exemplar's caption.

Example::

    >>> sample_count("samples:8"), sample_count("~/photos")
    (8, None)
    >>> source_folder("samples:8").is_dir()
    True
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SAMPLES", "exemplar_caption", "sample_count", "source_folder"]

SAMPLES = "samples:64"
"""The ``dataset_source`` of the Sample images button."""


def sample_count(source: str) -> int | None:
    """N of ``"samples:N"`` (:func:`explorer.sample_dataset`'s ``n``), None for any other source; a
    :class:`~explorer.DatasetError` when N is not a positive number."""
    if not source.startswith("samples:"):
        return None
    count = source.split(":", 1)[1]
    if not count.isdigit() or int(count) < 1:
        from ...errors import DatasetError

        raise DatasetError(
            f"{source!r}: write samples:N with N a positive number of images, e.g. {SAMPLES!r}."
        )
    return int(count)


def source_folder(source: str) -> Path:
    """The folder ``source`` names: the sample images' for ``"samples:N"``, else the path (``~`` expanded)."""
    from ...dataset import sample_dataset

    count = sample_count(source)
    return sample_dataset(n=count) if count is not None else Path(os.path.expanduser(source))


def exemplar_caption(exemplar) -> tuple[str, str]:
    """An exemplar's caption: its value and file name, and its full source (the tooltip)."""
    source = exemplar.source
    name = Path(source).name if isinstance(source, str) else f"item {source}"
    return f"{exemplar.value:.3g} · {name}", str(source)
