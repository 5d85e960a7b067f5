"""A bounded, seeded sample of map locations per stage, drawn during a scan: the training set of a dictionary.

Every location (image ``i``, cell ``j``) of a stage gets a random key from a generator seeded by ``(seed, i)``
alone; the reservoir keeps the ``size`` locations with the smallest keys (bottom-k sampling: a uniform sample
without replacement). The result depends only on the seed and the images, never on batches, shards or their
order, and memory is ``size`` feature vectors per stage whatever the dataset's size. Ties between keys (float64,
so practically never) break by image, then cell. Locations holding a non-finite value are never sampled.

A :class:`Reservoir` is a scan projection (:data:`explorer.dataset.local.Projection`) that keeps what it sees and
reduces nothing.

Example::

    >>> from explorer.dataset.local import plan_shards, scan_shards
    >>> from explorer.dataset.sources import open_source
    >>> source = open_source(explorer.sample_dataset(4))
    >>> reservoir = Reservoir(size=500, seed=0)
    >>> for _ in scan_shards(bb, source, plan_shards(4, 4), ["blocks.4"], k=1, project=reservoir):
    ...     pass
    >>> reservoir.sample("blocks.4").vectors.shape          # 500 of the 4 x 14 x 14 locations
    torch.Size([500, 112])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Reservoir", "StageSample"]


@dataclass
class StageSample:
    """The locations a stage's reservoir holds, ordered by key.

    Attributes:
        keys: ``(n,)`` float64 random keys, ascending.
        images: ``(n,)`` int64 image indices.
        cells: ``(n,)`` int64 flat map cells (``row * width + col``).
        vectors: ``(n, C)`` float32 feature vectors, on the CPU.
    """

    keys: torch.Tensor
    images: torch.Tensor
    cells: torch.Tensor
    vectors: torch.Tensor


class Reservoir:
    """Bottom-``size`` samples of map locations per stage; see the module docs.

    Args:
        size: locations kept per stage.
        seed: seeds every location's key.
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size, self.seed = int(size), int(seed)
        self.stages: dict[str, StageSample] = {}
        self.digest = f"reservoir:{self.size}:{self.seed}"

    def __call__(self, maps: dict[str, torch.Tensor], image_indices: torch.Tensor) -> dict[str, torch.Tensor]:
        for name, fmap in maps.items():
            self.add(name, fmap, image_indices)
        return {}

    def add(self, name: str, fmap: torch.Tensor, image_indices: torch.Tensor) -> None:
        """Offer every location of a ``(B, C, H, W)`` map of the images ``image_indices`` to the stage's sample."""
        batch, channels, height, width = fmap.shape
        cells = height * width
        indices = [int(i) for i in image_indices]
        keys = torch.from_numpy(
            np.concatenate([np.random.default_rng([self.seed, i]).random(cells) for i in indices])
        )
        images = torch.tensor(indices, dtype=torch.int64).repeat_interleave(cells)
        cell = torch.arange(cells, dtype=torch.int64).repeat(batch)
        vectors = fmap.detach().float().permute(0, 2, 3, 1).reshape(-1, channels).cpu()
        keep = torch.isfinite(vectors).all(1)
        found = self.stages.get(name)
        if found is not None and len(found.keys) == self.size:
            keep &= keys <= found.keys[-1]  # cannot enter a full reservoir
        candidate = StageSample(keys[keep], images[keep], cell[keep], vectors[keep])
        if found is not None:
            candidate = StageSample(
                *(torch.cat([old, new]) for old, new in zip(_fields(found), _fields(candidate)))
            )
        order = torch.sort(
            candidate.cells, stable=True
        ).indices  # the least key first, ties by image, then cell
        order = order[torch.sort(candidate.images[order], stable=True).indices]
        order = order[torch.sort(candidate.keys[order], stable=True).indices][: self.size]
        self.stages[name] = StageSample(*(t[order] for t in _fields(candidate)))

    def sample(self, name: str) -> StageSample:
        """The stage's sampled locations (``KeyError`` for a stage never seen)."""
        return self.stages[name]

    @property
    def nbytes(self) -> int:
        """Bytes held by every stage's sample."""
        return sum(t.numel() * t.element_size() for s in self.stages.values() for t in _fields(s))


def _fields(sample: StageSample) -> tuple[torch.Tensor, ...]:
    return sample.keys, sample.images, sample.cells, sample.vectors
