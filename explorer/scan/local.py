"""The local backend: shards of images through a DataLoader and one forward pass each, reduced on the device.

Images are read and preprocessed in ``num_workers`` DataLoader workers (:func:`explorer.images.preprocess`,
exactly as :meth:`explorer.Backbone.extract` does), batched within shard boundaries (a batch never spans two
shards, so a shard's result does not depend on its neighbours), and run through
:meth:`explorer.Backbone.capture`, which stops after the last scanned stage or layer. Each batch's maps are
folded into the shard's :class:`~explorer.scan.reduce.Reduction` and dropped; an unreadable image is skipped
and listed with its reason. The Ray backend runs the same :func:`scan_shards` inside its actors.

Example::

    >>> shards = plan_shards(len(source), shard_size=256)
    >>> for shard, result in scan_shards(bb, source, shards, ["blocks.2"], k=9, batch_size=32):
    ...     print(shard.index, result.scanned)
    0 256
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from ..backbones import Backbone
from ..errors import ImageError
from ..images import Preprocess, preprocess
from .reduce import Reduction
from .sources import ImageSource
from .store import ShardResult

__all__ = ["Projection", "Shard", "plan_shards", "scan_shards"]

_log = logging.getLogger(__name__)


Projection = Callable[[dict[str, torch.Tensor], torch.Tensor], dict[str, torch.Tensor]]
"""A per-batch hook of a scan: ``project(maps, image_indices)`` takes the captured ``{name: (B, C, H, W)}`` maps and
the ``(B,)`` image indices and returns the maps to reduce instead (concept codes, for example:
:func:`explorer.concepts`); it runs on the maps' device. A scan with a projection keys its cache on the
projection's ``digest`` attribute (a string that changes with what it computes), and a Ray scan pickles it."""


@dataclass(frozen=True)
class Shard:
    """The images ``start`` to ``stop - 1`` of a source, the unit of caching and of Ray's work."""

    index: int
    start: int
    stop: int


def plan_shards(count: int, shard_size: int) -> list[Shard]:
    """Consecutive shards of ``shard_size`` images (the last may be shorter) covering ``count`` images."""
    if int(shard_size) < 1:
        raise ValueError(f"shard_size={shard_size}; pass a positive number of images, for example 256.")
    return [
        Shard(i, start, min(start + shard_size, count)) for i, start in enumerate(range(0, count, shard_size))
    ]


class _Pixels(Dataset):
    """Item ``i``: ``(i, (3, H, W) float32 pixels or None, the reason it could not be read or None)``."""

    def __init__(self, source: ImageSource, config: Preprocess) -> None:
        self.source, self.config = source, config

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        try:
            return index, preprocess([self.source.read(index)], self.config)[0], None
        except ImageError as err:
            return index, None, str(err)


def _collate(items):
    read = [(index, pixels) for index, pixels, _ in items if pixels is not None]
    failed = [(index, reason) for index, pixels, reason in items if pixels is None]
    if not read:
        return [], None, failed
    return [index for index, _ in read], torch.stack([pixels for _, pixels in read]), failed


def scan_shards(
    bb: Backbone,
    source: ImageSource,
    shards: Sequence[Shard],
    names: Sequence[str],
    k: int,
    batch_size: int = 32,
    num_workers: int = 0,
    on_batch: Callable[[int], None] | None = None,
    project: Projection | None = None,
) -> Iterator[tuple[Shard, ShardResult]]:
    """Scan ``shards`` of ``source`` in order, yielding each one's result as soon as it is finished.

    Args:
        bb: the backbone, on its device.
        source: the images.
        shards: which images, in order.
        names: stage and layer names for :meth:`explorer.Backbone.capture`.
        k: exemplars per channel.
        batch_size: images per forward pass (a shard's last batch may be smaller).
        num_workers: DataLoader worker processes reading and preprocessing images; 0 reads in this process.
        on_batch: called with the number of images (read or skipped) after every batch, for a progress bar.
        project: applied to each batch's captured maps before they are reduced (see :data:`Projection`).
    """
    batches, ends = [], []
    for shard in shards:
        starts = range(shard.start, shard.stop, batch_size)
        batches += [list(range(start, min(start + batch_size, shard.stop))) for start in starts]
        ends += [None] * (len(starts) - 1) + [shard]
    loader = DataLoader(
        _Pixels(source, bb.preprocess),
        batch_sampler=batches,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=bb.device.type == "cuda",
    )
    reduction, scanned, skipped = Reduction(k), 0, []
    for end, (indices, pixels, failed) in zip(ends, loader):
        for index, reason in failed:
            _log.warning("skipped image %s: %s", source.name(index), reason)
            skipped.append((source.name(index), reason))
        if pixels is not None:
            image_indices = torch.tensor(indices, dtype=torch.int64)
            maps = bb.capture(pixels, list(names))
            if project is not None:
                maps = project(maps, image_indices)
            reduction.update(maps, image_indices)
            scanned += len(indices)
        if on_batch is not None:
            on_batch(len(indices) + len(failed))
        if end is not None:
            yield end, ShardResult(reduction, scanned, skipped)
            reduction, scanned, skipped = Reduction(k), 0, []
