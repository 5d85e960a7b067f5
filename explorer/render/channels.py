"""Channel selections (``"top:64"``, ``"page:1/64"``, lists, ranges) turned into channel indices.

Example::

    >>> select_channels("page:1/64", 768)[:3]
    [64, 65, 66]
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch

from .._args import shown, whole
from ..errors import InvalidArgumentError
from ..stats import ranked
from ..vocabulary import page_count

__all__ = ["ChannelsT", "select_channels"]

ChannelsT = str | int | Sequence[int] | range | slice | np.ndarray | torch.Tensor
"""Every form ``channels`` may take; see :func:`select_channels`."""


def select_channels(channels: ChannelsT, num_channels: int, values: np.ndarray | None = None) -> list[int]:
    """Turn a channel selection into a list of channel indices.

    Accepted forms:

    * ``"all"``: every channel.
    * ``"first:K"``: channels ``0 .. K-1`` (all of them when the map has fewer).
    * ``"top:K"`` / ``"bottom:K"``: the ``K`` channels with the highest / lowest ``values`` (a statistic per
      channel; :func:`render_grid` passes the one named by its ``by``), highest / lowest first.
    * ``"page:P/S"``: page ``P`` (from 0) of pages of ``S`` channels: ``"page:1/64"`` is channels 64-127, the
      last page may be shorter. This is how thousands of channels are browsed.
    * an ``int``, a list, tuple, ``range``, ``slice``, or a 1-D integer array or tensor of channel indices,
      shown in the order given.

    Args:
        channels: the selection.
        num_channels: ``C``, the number of channels in the map.
        values: ``(C,)`` ranking values, needed for ``"top:K"`` and ``"bottom:K"``.

    Returns:
        Channel indices, in display order.

    Raises:
        ValueError: an unknown form, an index or page out of range, or an empty selection.

    Example::

        >>> select_channels("page:1/64", 768)[:3], len(select_channels("page:11/64", 768))
        ([64, 65, 66], 64)
        >>> select_channels("top:2", 4, values=np.array([0.1, 0.9, 0.5, 0.2]))
        [1, 2]
    """
    num_channels = whole("num_channels", num_channels)
    if isinstance(channels, str):
        selected = _parse_channels(channels.strip().lower(), num_channels, values)
    elif isinstance(channels, slice):
        selected = list(range(num_channels))[channels]
    elif isinstance(channels, (int, np.integer)) and not isinstance(channels, (bool, np.bool_)):
        selected = [int(channels)]
    else:
        array = _index_array(channels)
        if array is None or array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
            raise InvalidArgumentError(
                f"channels={shown(channels)} is not a list of channel indices. Pass integers, a range, or one of "
                '"all", "first:K", "top:K", "bottom:K", "page:P/S".'
            )
        selected = array.astype(np.int64).tolist()
    if not selected:
        raise InvalidArgumentError(
            f"channels={shown(channels)} selects no channel; the map has {num_channels} (0..{num_channels - 1})."
        )
    bad = [c for c in selected if not 0 <= c < num_channels]
    if bad:
        raise InvalidArgumentError(
            f"Channel(s) {shown(bad)} out of range: this map has {num_channels} channels, 0..{num_channels - 1}."
        )
    return selected


def _index_array(channels: object) -> np.ndarray | None:
    """``channels`` as a NumPy array, or None when it is no sequence (``True``, ``2.0``, None)."""
    if isinstance(channels, torch.Tensor):
        return channels.detach().cpu().numpy()
    if isinstance(channels, (bool, float, bytes)) or not hasattr(channels, "__iter__"):
        return None
    try:
        return np.asarray(list(channels))
    except (TypeError, ValueError):  # ragged or unconvertible items
        return None


def _parse_channels(spec: str, num_channels: int, values: np.ndarray | None) -> list[int]:
    if spec == "all":
        return list(range(num_channels))
    match = re.fullmatch(r"(first|top|bottom):(\d+)", spec)
    if match:
        kind, k = match.group(1), min(int(match.group(2)), num_channels)
        if kind == "first":
            return list(range(k))
        if values is None:
            raise InvalidArgumentError(
                f'channels="{spec}" ranks channels by a statistic; pass values= (one per channel).'
            )
        return ranked(values, descending=kind == "top")[:k].tolist()
    match = re.fullmatch(r"page:(\d+)/(\d+)", spec)
    if match:
        page, size = int(match.group(1)), int(match.group(2))
        pages = page_count(num_channels, size)
        if not size or page >= pages:
            raise InvalidArgumentError(
                f'channels="{spec}": with pages of {size} channels this map of {num_channels} has '
                f"{pages} page(s), 0..{max(pages - 1, 0)}."
            )
        return list(range(page * size, min((page + 1) * size, num_channels)))
    raise InvalidArgumentError(
        f'Unknown channel selection "{spec}". Use "all", "first:K", "top:K", "bottom:K", "page:P/S" '
        '(for example "page:1/64" for channels 64-127), or a list or range of channel indices.'
    )
