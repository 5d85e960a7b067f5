"""The running reduction of a scan: per channel, the top-k images by spatial maximum, and dataset statistics.

For every stage, a :class:`StageReduction` keeps, on the maps' device:

- the top ``k`` images of every channel by the channel's spatial maximum: value, image index and map cell (the
  first cell holding the maximum, in row-major order). Ties break by image index, so any grouping of the images
  into batches and shards, merged in any order, gives the same answer. NaN never ranks.
- the statistics of every channel over every value of every image, as sums that merge exactly: count, mean and
  sum of squared deviations (Chan et al.'s pairwise update), min, max, sum of squares, zeros, positives and
  non-finite values; each batch is reduced by :func:`explorer.channel_stats` on the device.
- a fixed-bin histogram per channel: :data:`HISTOGRAM_BINS` bins, equal in ``asinh(value)`` over
  ``[-HISTOGRAM_LIMIT, HISTOGRAM_LIMIT]`` (about +-1,490, finer near zero); values beyond fall in the end bins.
  Counts add, so the histogram of a merge is exactly the histogram of the whole.

Example::

    >>> reduction = Reduction(k=1)
    >>> reduction.update(maps, torch.arange(1))       # maps: FeatureMaps of one image, image index 0
    >>> reduction.stages["blocks.2"].values.shape     # (C, k), best first
    torch.Size([40, 1])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..stats import ChannelStats, channel_stats

__all__ = [
    "ACCUMULATORS",
    "HISTOGRAM_BINS",
    "HISTOGRAM_LIMIT",
    "NO_IMAGE",
    "Reduction",
    "StageReduction",
    "histogram_edges",
]

HISTOGRAM_BINS = 64
HISTOGRAM_LIMIT = 8.0
"""The histogram's bins are equal in ``asinh(value)`` over ``[-HISTOGRAM_LIMIT, HISTOGRAM_LIMIT]``."""

NO_IMAGE = torch.iinfo(torch.int64).max
"""The image index of an empty top-k slot (fewer than k images seen); its value is ``-inf``."""

MAX_K = 1000
"""Most exemplars a scan keeps per channel: its tables hold ``channels x k`` entries per stage (about 40 MB for
2,048 channels at this bound), allocated before the first image."""

ACCUMULATORS = ("count", "mean", "m2", "min", "max", "sumsq", "zeros", "positive", "nonfinite")
"""The per-channel sums behind a scan's statistics, in column order."""


def histogram_edges() -> np.ndarray:
    """The ``(HISTOGRAM_BINS + 1,)`` bin edges of every scan histogram, in value units."""
    return np.sinh(np.linspace(-HISTOGRAM_LIMIT, HISTOGRAM_LIMIT, HISTOGRAM_BINS + 1))


def _select(values: torch.Tensor, images: torch.Tensor, cells: torch.Tensor, k: int):
    """The best ``k`` of ``(C, n)`` candidates per row: highest value first, ties by lowest image index."""
    by_image = torch.sort(images, dim=1, stable=True).indices
    values, images, cells = (t.gather(1, by_image) for t in (values, images, cells))
    by_value = torch.sort(values, dim=1, descending=True, stable=True).indices[:, :k]
    return values.gather(1, by_value), images.gather(1, by_value), cells.gather(1, by_value)


def _from_stats(stats: ChannelStats) -> np.ndarray:
    """``(C, len(ACCUMULATORS))`` float64 sums from the pooled statistics of one batch."""
    batch, _, height, width = stats.shape
    count = batch * height * width - stats.nonfinite.astype(np.float64)
    with np.errstate(invalid="ignore"):
        columns = [
            count,
            np.where(count > 0, stats.mean, 0.0),
            np.where(count > 0, stats.std**2 * count, 0.0),
            np.where(count > 0, stats.min, math.inf),
            np.where(count > 0, stats.max, -math.inf),
            stats.l2**2,
            np.round(np.where(count > 0, stats.sparsity * count, 0.0)),
            np.round(np.where(count > 0, stats.positive * count, 0.0)),
            stats.nonfinite.astype(np.float64),
        ]
    return np.stack(columns, -1)


def _merge_sums(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Combine two ``(C, len(ACCUMULATORS))`` sums (Chan et al.'s update for the mean and squared deviations)."""
    na, nb = a[:, 0], b[:, 0]
    n = na + nb
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(n > 0, nb / n, 0.0)
        delta = b[:, 1] - a[:, 1]
        merged = np.stack(
            [
                n,
                a[:, 1] + delta * share,
                a[:, 2] + b[:, 2] + delta**2 * na * share,
                np.minimum(a[:, 3], b[:, 3]),
                np.maximum(a[:, 4], b[:, 4]),
                a[:, 5] + b[:, 5],
                a[:, 6] + b[:, 6],
                a[:, 7] + b[:, 7],
                a[:, 8] + b[:, 8],
            ],
            -1,
        )
    return merged


def _histogram(flat: torch.Tensor) -> torch.Tensor:
    """``(C, HISTOGRAM_BINS)`` int64 counts of the finite values of a ``(B, C, N)`` map, on its device."""
    channels = flat.shape[1]
    # compared with the edges, not shifted and scaled: asinh(-1e-7) + 8 rounds to 8.0, the first bin above zero
    inner = torch.linspace(-HISTOGRAM_LIMIT, HISTOGRAM_LIMIT, HISTOGRAM_BINS + 1, device=flat.device)[1:-1]
    bins = torch.bucketize(torch.asinh(flat.float()).nan_to_num_(nan=0.0), inner, right=True)
    bins += torch.arange(channels, device=flat.device).view(1, -1, 1) * HISTOGRAM_BINS
    finite = torch.isfinite(flat)
    index = bins.reshape(-1) if bool(finite.all()) else bins[finite]
    return torch.bincount(index, minlength=channels * HISTOGRAM_BINS).view(channels, HISTOGRAM_BINS)


@dataclass
class StageReduction:
    """The running top-k and statistics of one stage.

    Attributes:
        values: ``(C, k)`` float32, each channel's best spatial maxima, best first (``-inf`` in empty slots).
        images: ``(C, k)`` int64 image indices of those maxima (:data:`NO_IMAGE` in empty slots).
        cells: ``(C, k)`` int64 flat map cells (``row * width + col``) of those maxima.
        sums: ``(C, len(ACCUMULATORS))`` float64 statistics sums, on the CPU.
        histogram: ``(C, HISTOGRAM_BINS)`` int64 counts.
        map_size: ``(height, width)`` of the stage's map.
    """

    values: torch.Tensor
    images: torch.Tensor
    cells: torch.Tensor
    sums: np.ndarray
    histogram: torch.Tensor
    map_size: tuple[int, int]

    @classmethod
    def empty(cls, channels: int, k: int, map_size: tuple[int, int], device: torch.device) -> StageReduction:
        """A reduction that has seen no image."""
        sums = np.zeros((channels, len(ACCUMULATORS)))
        sums[:, 3], sums[:, 4] = math.inf, -math.inf
        return cls(
            values=torch.full((channels, k), -math.inf, device=device),
            images=torch.full((channels, k), NO_IMAGE, dtype=torch.int64, device=device),
            cells=torch.zeros((channels, k), dtype=torch.int64, device=device),
            sums=sums,
            histogram=torch.zeros((channels, HISTOGRAM_BINS), dtype=torch.int64, device=device),
            map_size=tuple(map_size),
        )

    @property
    def k(self) -> int:
        return self.values.shape[1]

    def update(self, fmap: torch.Tensor, image_indices: torch.Tensor) -> None:
        """Fold in a ``(B, C, H, W)`` map of the images ``image_indices`` (``(B,)`` int64)."""
        batch, channels = fmap.shape[:2]
        flat = fmap.reshape(batch, channels, -1).float()
        best, cells = flat.nan_to_num(nan=-math.inf).max(-1)  # (B, C): the first cell holding the maximum
        images = image_indices.to(fmap.device).view(-1, 1).expand(batch, channels)
        self.values, self.images, self.cells = _select(
            torch.cat([self.values, best.T], 1),
            torch.cat([self.images, images.T], 1),
            torch.cat([self.cells, cells.T], 1),
            self.k,
        )
        self.sums = _merge_sums(self.sums, _from_stats(channel_stats(fmap)))
        self.histogram += _histogram(flat)

    def merge(self, other: StageReduction) -> None:
        """Fold in another reduction of the same stage (of other images), as if its images had come next."""
        if other.values.shape[0] != self.values.shape[0] or other.map_size != self.map_size:
            raise ValueError(
                f"Cannot merge reductions of maps {other.values.shape[0]}x{other.map_size} and "
                f"{self.values.shape[0]}x{self.map_size}; merge shards of one scan only."
            )
        device = self.values.device
        self.values, self.images, self.cells = _select(
            torch.cat([self.values, other.values.to(device)], 1),
            torch.cat([self.images, other.images.to(device)], 1),
            torch.cat([self.cells, other.cells.to(device)], 1),
            self.k,
        )
        self.sums = _merge_sums(self.sums, other.sums)
        self.histogram = self.histogram + other.histogram.to(device)

    def cpu(self) -> StageReduction:
        """A copy with every tensor on the CPU (never sharing memory with this one)."""
        tensors = (t.to("cpu", copy=True) for t in (self.values, self.images, self.cells, self.histogram))
        values, images, cells, histogram = tensors
        return StageReduction(values, images, cells, self.sums.copy(), histogram, self.map_size)


class Reduction:
    """The running reductions of every scanned stage or layer, keyed by name, in scan order.

    Args:
        k: exemplars kept per channel.
    """

    def __init__(self, k: int) -> None:
        self.k = int(k)
        self.stages: dict[str, StageReduction] = {}

    def update(self, maps: dict[str, torch.Tensor], image_indices: torch.Tensor) -> None:
        """Fold in one batch: ``maps`` from :meth:`explorer.Backbone.capture`, of the images ``image_indices``."""
        for name, fmap in maps.items():
            if name not in self.stages:
                self.stages[name] = StageReduction.empty(
                    fmap.shape[1], self.k, tuple(fmap.shape[-2:]), fmap.device
                )
            self.stages[name].update(fmap, image_indices)

    def merge(self, other: Reduction) -> None:
        """Fold in the reduction of other images (a shard)."""
        for name, stage in other.stages.items():
            if name in self.stages:
                self.stages[name].merge(stage)
            else:
                self.stages[name] = stage.cpu()

    def cpu(self) -> Reduction:
        """A copy with every tensor on the CPU."""
        copy = Reduction(self.k)
        copy.stages = {name: stage.cpu() for name, stage in self.stages.items()}
        return copy
