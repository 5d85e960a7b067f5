"""The local backend: shards of images through a DataLoader and one forward pass each, reduced on the device.

Images are read and preprocessed in ``num_workers`` DataLoader workers (:func:`explorer.images.preprocess`,
exactly as :meth:`explorer.Backbone.extract` does), batched within shard boundaries (a batch never spans two
shards, so a shard's result does not depend on its neighbours), and run through
:meth:`explorer.Backbone.capture`, which stops after the last scanned stage or layer. Each batch's maps are
folded into the shard's :class:`~explorer.dataset.reduce.Reduction` and dropped; an unreadable image is skipped
and listed with its reason. The Ray backend runs the same :func:`scan_shards` inside its actors.

Example::

    >>> from explorer.dataset.sources import open_source
    >>> source = open_source(explorer.sample_dataset(8))
    >>> shards = plan_shards(len(source), shard_size=4)
    >>> for shard, result in scan_shards(bb, source, shards, ["blocks.2"], k=3, batch_size=4):
    ...     print(shard.index, result.scanned, result.reduction.stages["blocks.2"].values.shape)
    0 4 torch.Size([40, 3])
    1 4 torch.Size([40, 3])
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from ..backbones import Backbone
from ..errors import DatasetError, ImageError
from ..preprocessing import Preprocess, preprocess
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
    """Item ``i``: ``(i, (3, H, W) float32 pixels or None, the reason it could not be read or None)``.

    Any failure to read or decode one item (an unreadable file, a dataset's own exception) is that item's reason,
    never the end of the scan.
    """

    def __init__(self, source: ImageSource, config: Preprocess) -> None:
        self.source, self.config = source, config

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        try:
            return index, preprocess([self.source.read(index)], self.config)[0], None
        except ImageError as err:
            return index, None, str(err)
        except Exception as err:  # noqa: BLE001 - one bad item is skipped with its reason, whatever it raised
            return index, None, f"{type(err).__name__}: {err}"


def _collate(items):
    read = [(index, pixels) for index, pixels, _ in items if pixels is not None]
    failed = [(index, reason) for index, pixels, reason in items if pixels is None]
    if not read:
        return [], None, failed
    return [index for index, _ in read], torch.stack([pixels for _, pixels in read]), failed


WORKER_RETRIES = 3
"""Times a shard is read again after a DataLoader worker died in it before the scan stops."""


def _worker_died(err: BaseException) -> bool:
    return isinstance(err, RuntimeError) and "DataLoader worker" in str(err)


def _loader(pixels: _Pixels, batches: list[list[int]], num_workers: int, pin: bool) -> DataLoader:
    return DataLoader(
        pixels, batch_sampler=batches, num_workers=num_workers, collate_fn=_collate, pin_memory=pin
    )


def _probe(pixels: _Pixels, items: list[int], sender) -> None:
    """In a child process: read each item in order and report its index once it is read."""
    for index in items:
        pixels[index]
        sender.send(index)
    sender.close()


def _killers(pixels: _Pixels, items: list[int]) -> dict[int, str]:
    """The items whose reading kills the process reading them: one child process reads the items in order and
    reports each; when it dies, the first item it did not report is the one, and the child reads on after it."""
    found: dict[int, str] = {}
    remaining = list(items)
    context = multiprocessing.get_context()
    while remaining:
        receiver, sender = context.Pipe(duplex=False)
        child = context.Process(target=_probe, args=(pixels, remaining, sender), daemon=True)
        child.start()
        sender.close()
        returned = 0
        try:
            while returned < len(remaining):
                receiver.recv()
                returned += 1
        except EOFError:  # the child ended before reporting every item
            pass
        child.join()
        receiver.close()
        if returned < len(remaining):
            found[remaining[returned]] = f"reading it ended the reading process (exit code {child.exitcode})"
            returned += 1
        remaining = remaining[returned:]
    return found


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

    Each shard has its own DataLoader, so no worker outlives its shard. An item that cannot be read is skipped
    with its reason; a worker that dies (an item that crashes the decoder, a kill) makes the shard be read again:
    first each of its items alone, to find the ones that end their process (skipped, with that reason), then the
    rest as usual; after :data:`WORKER_RETRIES` deaths with no such item found the scan stops with a
    :class:`~explorer.DatasetError`.

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
    pixels = _Pixels(source, bb.preprocess)
    pin = bb.device.type == "cuda"
    for shard in shards:
        killers: dict[int, str] = {}
        reported, deaths = 0, 0
        while True:
            items = [index for index in range(shard.start, shard.stop) if index not in killers]
            batches = [items[start : start + batch_size] for start in range(0, len(items), batch_size)]
            reduction, scanned, done = Reduction(k), 0, 0
            failures = dict(killers)
            try:
                for indices, found, failed in _loader(pixels, batches, min(num_workers, len(batches)), pin):
                    failures.update(failed)
                    if found is not None:
                        image_indices = torch.tensor(indices, dtype=torch.int64)
                        maps = bb.capture(found, list(names))
                        if project is not None:
                            maps = project(maps, image_indices)
                        reduction.update(maps, image_indices)
                        scanned += len(indices)
                    done += len(indices) + len(failed)
                    if on_batch is not None and done > reported:
                        on_batch(done - reported)
                        reported = done
            except RuntimeError as err:
                if num_workers == 0 or not _worker_died(err):
                    raise
                deaths += 1
                _log.warning("a DataLoader worker died in shard %d (%s); reading it again", shard.index, err)
                more = _killers(pixels, items)
                killers.update(more)
                if not more and deaths >= WORKER_RETRIES:
                    raise DatasetError(
                        f"DataLoader workers died {deaths} times reading images {shard.start} to {shard.stop - 1} "
                        f"({' '.join(str(err).split())[:200]}), with no image to blame. Scan with num_workers=0, "
                        "or give the workers more memory."
                    ) from None
                continue
            skipped = [(source.name(index), reason) for index, reason in sorted(failures.items())]
            for name, reason in skipped:
                _log.warning("skipped image %s: %s", name, reason)
            if on_batch is not None and len(killers) + done > reported:
                on_batch(len(killers) + done - reported)
            yield shard, ShardResult(reduction, scanned, skipped)
            break
