"""Histograms of a map's finite values, counted on its device.

Example::

    >>> histogram(torch.tensor([0.0, 1.0, 1.0, 3.0]), bins=3).counts
    array([1, 2, 1])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ._args import finite_pair, whole
from .arrays import as_tensor
from .errors import InvalidArgumentError

__all__ = ["Histogram", "histogram"]


@dataclass(frozen=True, eq=False)
class Histogram:
    """Counts of a map's finite values in equal bins.

    Attributes:
        counts: ``(bins,)`` int64.
        edges: ``(bins + 1,)`` float64, the bin edges from the lowest to the highest.
        nonfinite: NaN and inf values, not counted in any bin.
        outside: finite values outside ``edges`` (only when a range was given).
    """

    counts: np.ndarray
    edges: np.ndarray
    nonfinite: int = 0
    outside: int = 0

    @property
    def centers(self) -> np.ndarray:
        """``(bins,)`` bin centres."""
        return (self.edges[:-1] + self.edges[1:]) / 2

    def to_dict(self) -> dict:
        """Counts, edges and the left-out counts as plain Python values."""
        return {
            "counts": self.counts.tolist(),
            "edges": self.edges.tolist(),
            "nonfinite": self.nonfinite,
            "outside": self.outside,
        }


def histogram(
    fmap: torch.Tensor | np.ndarray, bins: int = 64, range: tuple[float, float] | None = None
) -> Histogram:
    """A histogram of the finite values of a map of any shape, counted on its device.

    Args:
        fmap: a tensor or array of any shape: a stage, one image's map, one channel.
        bins: the number of equal bins.
        range: ``(low, high)`` of the bins; the finite values' min and max when None. A map with one value
            gets the range ``(value - 0.5, value + 0.5)``.

    Example::

        >>> hist = histogram(maps["blocks.1"][0, 5], bins=4)
        >>> hist.counts, hist.edges
        (array([  58,  372, 2005,  701]), array([-36.06113434, -21.64859724,  -7.23606014,   7.17647696,
                21.58901405]))
    """
    bins = whole(
        "bins", bins, minimum=1, maximum=1 << 20, hint=" It is a positive number of bins, for example 64."
    )
    x = as_tensor(fmap, "histogram()").reshape(-1).float()
    finite = torch.isfinite(x)
    all_finite = bool(finite.all())
    values = x if all_finite else x[finite]
    nonfinite = 0 if all_finite else int(x.numel() - values.numel())
    if range is not None:
        low, high = finite_pair("range", range)
        if not low < high:
            raise InvalidArgumentError(f"range={range}; the low end must be below the high end.")
    elif values.numel():
        low, high = (float(v) for v in torch.stack(torch.aminmax(values)).cpu().tolist())
    else:
        low, high = 0.0, 1.0
    if low == high:
        low, high = low - 0.5, high + 0.5
    counts = torch.histc(values, bins=int(bins), min=low, max=high)
    counts_np = counts.cpu().numpy().round().astype(np.int64)
    return Histogram(
        counts=counts_np,
        edges=np.linspace(low, high, int(bins) + 1),
        nonfinite=nonfinite,
        outside=int(values.numel() - counts_np.sum()),
    )
