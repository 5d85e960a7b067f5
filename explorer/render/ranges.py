"""Value ranges: min and max or clipped percentiles per row (non-finite values left out), the range a
normalisation asks for, and values turned into colour-table indices.

Example::

    >>> value_range([torch.arange(10.0), -torch.ones(3)])
    (-1.0, 9.0)
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch

from .._args import closest, finite_pair, real, shown
from ..arrays import as_tensor
from ..errors import InvalidArgumentError
from ..vocabulary import NORMS
from .colormaps import NONFINITE_ENTRY

__all__ = ["all_finite", "check_clip", "norm_range", "row_ranges", "to_index", "value_range"]

_QUANTILE_SAMPLES = 1 << 16


def all_finite(values: torch.Tensor) -> bool:
    """True when every value is finite: the sum is finite (an overflowing sum only sends us the slow way)."""
    return bool(torch.isfinite(values.sum()))


def row_ranges(values: torch.Tensor, clip: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of ``(R, N)`` values, ``(low, high)`` of the finite values: min and max, or the ``100 - clip``
    and ``clip`` percentiles (linear interpolation, as ``numpy.percentile``; estimated from at most 65,536
    evenly spaced values per row). A row without finite values gets ``(0, 0)``."""
    values = values.float()
    finite_only = all_finite(values)
    if clip is None:
        if finite_only:
            return values.amin(1), values.amax(1)
        finite = torch.isfinite(values)
        low = values.masked_fill(~finite, math.inf).amin(1)
        high = values.masked_fill(~finite, -math.inf).amax(1)
    else:
        if values.shape[1] > _QUANTILE_SAMPLES:
            values = values[:, :: -(-values.shape[1] // _QUANTILE_SAMPLES)]
        finite = None if finite_only else torch.isfinite(values)
        low, high = _percentile(values, finite, 1.0 - clip / 100.0), _percentile(values, finite, clip / 100.0)
    empty = ~torch.isfinite(low) | ~torch.isfinite(high)
    return low.masked_fill(empty, 0.0), high.masked_fill(empty, 0.0)


def _percentile(values: torch.Tensor, finite: torch.Tensor | None, q: float) -> torch.Tensor:
    """The ``q`` quantile of each row's finite values, from a partial sort (``topk``) of the near end."""
    rows, size = values.shape
    if finite is None:
        count = torch.full((rows, 1), size, device=values.device)
    else:
        count = finite.sum(1, keepdim=True)
    last = (count - 1).clamp(min=0)
    position = (
        last.to(torch.float32 if values.device.type == "mps" else torch.float64) * q
    )  # no float64 on MPS
    below = position.floor().long()
    above = torch.minimum(below + 1, last)
    frac = (position - below).float()
    low_end = q <= 0.5
    rank_below, rank_above = (below, above) if low_end else (last - below, last - above)
    k = min(size, int(torch.maximum(rank_below, rank_above).max()) + 1)
    if finite is not None:
        values = values.masked_fill(~finite, math.inf if low_end else -math.inf)
    part = values.topk(k, dim=1, largest=not low_end, sorted=True).values
    at_below = part.gather(1, rank_below.clamp(max=k - 1))
    at_above = part.gather(1, rank_above.clamp(max=k - 1))
    return torch.where(frac > 0, at_below + frac * (at_above - at_below), at_below)[:, 0]


def check_clip(clip: float | None) -> float | None:
    """``clip`` as a float percentile in (50, 100], or None."""
    hint = "pass a percentile in (50, 100], for example clip=99.5, or None."
    if clip is None:
        return None
    clip = real("clip", clip, hint=hint)
    if not 50.0 < clip <= 100.0:
        raise InvalidArgumentError(f"clip={clip}; {hint}")
    return clip


def value_range(
    maps: torch.Tensor | np.ndarray | Iterable[torch.Tensor | np.ndarray] | dict,
    clip: float | None = None,
    symmetric: bool = False,
) -> tuple[float, float]:
    """One ``(low, high)`` over several maps, for ``render_grid(..., norm="global", vrange=...)``.

    Args:
        maps: a map, a list of maps, or a dict of them (a :class:`~explorer.FeatureMaps`), any shapes and
            devices.
        clip: a percentile (for example 99.5): each map's ``(100 - clip, clip)`` percentile range, then the
            widest of them; None for the plain min and max.
        symmetric: return ``(-m, m)`` with ``m`` the largest absolute value (or its ``clip`` percentile).

    Example::

        >>> lo, hi = value_range([before["blocks.2"], after["blocks.2"]], clip=99.5)
        >>> grid = render_grid(after["blocks.2"][0], norm="global", vrange=(lo, hi))
    """
    clip = check_clip(clip)
    if isinstance(maps, dict):
        maps = list(maps.values())
    elif isinstance(maps, (torch.Tensor, np.ndarray)):
        maps = [maps]
    if not isinstance(maps, (list, tuple)):
        raise InvalidArgumentError(
            f"value_range() takes a map, a list of maps or a dict of maps, got {type(maps).__name__}."
        )
    lows, highs = [], []
    for fmap in maps:
        tensor = as_tensor(fmap, "value_range()").reshape(1, -1)
        low, high = row_ranges(tensor.abs() if symmetric else tensor, clip)
        lows.append(float(low[0]))
        highs.append(float(high[0]))
    if not lows:
        raise InvalidArgumentError("value_range() needs at least one map.")
    if symmetric:
        return -max(highs), max(highs)
    return min(lows), max(highs)


def norm_range(
    selected: torch.Tensor,
    full: torch.Tensor,
    norm: str,
    clip: float | None,
    vrange: tuple[float, float] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(low, high)``, each ``(K,)`` or ``(1,)`` on the map's device."""
    if norm not in NORMS:
        raise InvalidArgumentError(
            f"Unknown norm {shown(norm)}.{closest(norm, NORMS)} Choose from: {', '.join(NORMS)}."
        )
    if vrange is not None and norm in ("channel", "stage"):
        raise InvalidArgumentError(
            'vrange is for norm="global" or norm="symmetric"; drop it, or pass norm="global".'
        )
    device = selected.device
    if norm == "global":
        if vrange is None:
            raise InvalidArgumentError(
                'norm="global" shares one range across maps: pass vrange=(low, high), for example '
                'vrange=explorer.value_range([map_a, map_b]). For one map alone use norm="stage".'
            )
        low, high = finite_pair("vrange", vrange)
        return torch.tensor([low], device=device), torch.tensor([high], device=device)
    if norm == "symmetric":
        if vrange is not None:
            top = max(abs(v) for v in finite_pair("vrange", vrange))
            top_t = torch.tensor([top], device=device)
        else:
            top_t = row_ranges(full.reshape(1, -1).abs(), clip)[1]
        top_t = torch.where(top_t > 0, top_t, torch.ones_like(top_t))
        return -top_t, top_t
    if norm == "stage":
        return row_ranges(full.reshape(1, -1), clip)
    return row_ranges(selected.reshape(selected.shape[0], -1), clip)


def to_index(values: torch.Tensor, low: torch.Tensor, high: torch.Tensor, finite: bool) -> torch.Tensor:
    """Colour-table indices (int32) of ``(K, H, W)`` values: ``floor((x - low) * 255 / (high - low) + 0.5)``
    clipped to 0..255; a constant range gives 0; non-finite values (when ``finite`` is False) get the
    non-finite entry."""
    low, high = low.view(-1, 1, 1).float(), high.view(-1, 1, 1).float()
    width = high - low
    scale = torch.where(width > 0, 255.0 / width, torch.zeros_like(width))
    index = torch.addcmul(0.5 - low * scale, values, scale).clamp_(0.0, 255.0)
    if not finite:
        index = torch.where(torch.isfinite(values), index, torch.full_like(index, float(NONFINITE_ENTRY)))
    return index.to(torch.int32)
