"""Channel grids, colour maps and overlays as ``np.uint8`` RGB arrays, and a fast PNG encoder. No widgets.

Normalisation, colour mapping (a 256-entry lookup table built from matplotlib once per colour map and device),
upscaling and tiling all run in torch on the map's device; one uint8 array is copied to the CPU at the end.

Non-finite values (NaN, inf) never reach the colour map: they are left out of every range and drawn in
:data:`NONFINITE_COLOR` (magenta), a colour that none of the usual colour maps contains.

Example::

    >>> grid = render_grid(maps["layer1"][0], channels="top:64", norm="channel", cmap="viridis")
    >>> grid.shape, grid.dtype                   # 64 tiles of 56x56 in 8 columns, 1 px apart
    ((457, 457, 3), dtype('uint8'))
    >>> png = to_png(grid)                       # PNG bytes
    >>> over = overlay(image, maps["layer1"][0, 5], alpha=0.5, preprocess=bb.preprocess)
    >>> over.shape
    (224, 224, 3)
"""

from __future__ import annotations

import difflib
import functools
import logging
import math
import re
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np
import torch
import torch.nn.functional as F

try:  # a much faster deflate for display; optional
    from isal import isal_zlib as _isal_zlib
except ImportError:  # pragma: no cover - isal ships wheels for the usual platforms
    _isal_zlib = None

from ._args import finite_pair, real, shown, torch_device, whole
from .errors import InvalidArgumentError
from .images import ImageInput, Preprocess, load_image, model_view
from .stats import STAT_NAMES, ChannelStats, as_hw, as_tensor, channel_stats
from .vocabulary import NORMS

__all__ = [
    "BACKGROUND_COLOR",
    "ChannelsT",
    "GridLayout",
    "NONFINITE_COLOR",
    "NORMS",
    "colormap_lut",
    "overlay",
    "render_grid",
    "select_channels",
    "to_png",
    "value_range",
]

_log = logging.getLogger(__name__)

ChannelsT = str | int | Sequence[int] | range | slice | np.ndarray | torch.Tensor
"""Every form ``channels`` may take; see :func:`select_channels`."""

NONFINITE_COLOR = (255, 0, 255)
"""The colour of NaN and inf pixels: magenta."""

BACKGROUND_COLOR = (255, 255, 255)
"""The default colour between tiles."""

MIN_TILE = 48
"""Small maps are upscaled by whole pixels until a tile is at least this many pixels on its longer side."""

_LABEL_FG, _LABEL_BG = (255, 255, 255), (0, 0, 0)
_QUANTILE_SAMPLES = 1 << 16
_DIGITS = np.array(
    [
        ["111", "101", "101", "101", "111"],
        ["010", "110", "010", "010", "111"],
        ["111", "001", "111", "100", "111"],
        ["111", "001", "111", "001", "111"],
        ["101", "101", "111", "001", "001"],
        ["111", "100", "111", "001", "111"],
        ["111", "100", "111", "101", "111"],
        ["111", "001", "001", "001", "001"],
        ["111", "101", "111", "101", "111"],
        ["111", "101", "111", "001", "111"],
        ["000", "000", "000", "000", "000"],
    ]
)
_FONT = np.array([[[c == "1" for c in row] for row in glyph] for glyph in _DIGITS])  # (11, 5, 3): 0-9, blank


# ----------------------------------------------------------------------------------------------- channels


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
        nan = np.isnan(values)
        key = np.where(nan, 0.0, -values if kind == "top" else values)
        return np.lexsort((np.arange(num_channels), key, nan))[:k].tolist()
    match = re.fullmatch(r"page:(\d+)/(\d+)", spec)
    if match:
        page, size = int(match.group(1)), int(match.group(2))
        pages = -(-num_channels // size) if size else 0
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


# ----------------------------------------------------------------------------------------------- colours


@functools.lru_cache(maxsize=64)
def _lut_cached(name: str, device: str, background: tuple[int, int, int]) -> torch.Tensor:
    import matplotlib

    colormap = matplotlib.colormaps[name]
    table = np.round(colormap(np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).astype(np.uint8)
    specials = np.array([NONFINITE_COLOR, background, _LABEL_FG, _LABEL_BG], dtype=np.uint8)
    rgba = np.concatenate([np.concatenate([table, specials]), np.full((260, 1), 255, np.uint8)], axis=1)
    return torch.from_numpy(np.ascontiguousarray(rgba).view(np.int32)[:, 0].copy()).to(device)


def colormap_lut(cmap: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """A matplotlib colour map as a ``(256, 3)`` uint8 lookup table on ``device`` (cached per name and device).

    Raises:
        ValueError: the name is unknown; the message lists the closest names.

    Example::

        >>> colormap_lut("viridis")[0], colormap_lut("viridis")[255]
        (tensor([68,  1, 84], dtype=torch.uint8), tensor([253, 231,  37], dtype=torch.uint8))
    """
    return _unpack(_palette(cmap, torch_device("device", device))[:256])


def _unpack(packed: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` uint8 RGB from packed RGBA int32 values."""
    return packed.contiguous().view(torch.uint8).unflatten(-1, (-1, 4))[..., :3]


def _palette(cmap: str, device: torch.device, background: Sequence[int] = BACKGROUND_COLOR) -> torch.Tensor:
    """``(260,)`` int32, each RGBA packed in 4 bytes: the colour map's 256 colours, then the non-finite,
    background and label colours (tiles are laid out as packed pixels, 4 bytes each, and unpacked once)."""
    import matplotlib

    if not isinstance(cmap, str) or cmap not in matplotlib.colormaps:
        cmap = cmap if isinstance(cmap, str) else shown(cmap)
        close = difflib.get_close_matches(cmap, list(matplotlib.colormaps), n=5, cutoff=0.5)
        hint = f" Closest names: {', '.join(close)}." if close else ""
        raise InvalidArgumentError(
            f'Unknown colour map "{cmap}".{hint} Any matplotlib name works: "viridis", "magma", "RdBu_r", ...'
        )
    try:
        rgb = tuple(whole("background", v, maximum=255) for v in background)
    except (InvalidArgumentError, TypeError):  # not numbers, or not iterable
        rgb = ()
    if len(rgb) != 3:
        raise InvalidArgumentError(f"background={shown(background)}; pass an RGB triple of 0-255 integers.")
    return _lut_cached(cmap, str(device), rgb)


_NONFINITE, _BACKGROUND, _FG, _BG = 256, 257, 258, 259


# ----------------------------------------------------------------------------------------------- ranges


def _all_finite(values: torch.Tensor) -> bool:
    """True when every value is finite: the sum is finite (an overflowing sum only sends us the slow way)."""
    return bool(torch.isfinite(values.sum()))


def _ranges(values: torch.Tensor, clip: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of ``(R, N)`` values, ``(low, high)`` of the finite values: min and max, or the ``100 - clip``
    and ``clip`` percentiles (linear interpolation, as ``numpy.percentile``; estimated from at most 65,536
    evenly spaced values per row). A row without finite values gets ``(0, 0)``."""
    values = values.float()
    all_finite = _all_finite(values)
    if clip is None:
        if all_finite:
            return values.amin(1), values.amax(1)
        finite = torch.isfinite(values)
        low = values.masked_fill(~finite, math.inf).amin(1)
        high = values.masked_fill(~finite, -math.inf).amax(1)
    else:
        if values.shape[1] > _QUANTILE_SAMPLES:
            values = values[:, :: -(-values.shape[1] // _QUANTILE_SAMPLES)]
        finite = None if all_finite else torch.isfinite(values)
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


def _check_clip(clip: float | None) -> float | None:
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

        >>> lo, hi = value_range([before["layer2"], after["layer2"]], clip=99.5)
        >>> grid = render_grid(after["layer2"][0], norm="global", vrange=(lo, hi))
    """
    clip = _check_clip(clip)
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
        low, high = _ranges(tensor.abs() if symmetric else tensor, clip)
        lows.append(float(low[0]))
        highs.append(float(high[0]))
    if not lows:
        raise InvalidArgumentError("value_range() needs at least one map.")
    if symmetric:
        return -max(highs), max(highs)
    return min(lows), max(highs)


def _norm_range(
    selected: torch.Tensor,
    full: torch.Tensor,
    norm: str,
    clip: float | None,
    vrange: tuple[float, float] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(low, high)``, each ``(K,)`` or ``(1,)`` on the map's device."""
    if norm not in NORMS:
        norm = norm if isinstance(norm, str) else shown(norm)
        close = difflib.get_close_matches(norm, NORMS, n=1)
        hint = f' Did you mean "{close[0]}"?' if close else ""
        raise InvalidArgumentError(f'Unknown norm "{norm}".{hint} Choose from: {", ".join(NORMS)}.')
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
            top_t = _ranges(full.reshape(1, -1).abs(), clip)[1]
        top_t = torch.where(top_t > 0, top_t, torch.ones_like(top_t))
        return -top_t, top_t
    if norm == "stage":
        return _ranges(full.reshape(1, -1), clip)
    return _ranges(selected.reshape(selected.shape[0], -1), clip)


def _to_index(values: torch.Tensor, low: torch.Tensor, high: torch.Tensor, finite: bool) -> torch.Tensor:
    """Colour-table indices (int32) of ``(K, H, W)`` values: ``floor((x - low) * 255 / (high - low) + 0.5)``
    clipped to 0..255; a constant range gives 0; non-finite values (when ``finite`` is False) get the
    non-finite entry."""
    low, high = low.view(-1, 1, 1).float(), high.view(-1, 1, 1).float()
    width = high - low
    scale = torch.where(width > 0, 255.0 / width, torch.zeros_like(width))
    index = torch.addcmul(0.5 - low * scale, values, scale).clamp_(0.0, 255.0)
    if not finite:
        index = torch.where(torch.isfinite(values), index, torch.full_like(index, float(_NONFINITE)))
    return index.to(torch.int32)


def _lookup(palette: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Packed colours of an index tensor of any shape."""
    return palette.index_select(0, index.reshape(-1)).view(index.shape)


# ----------------------------------------------------------------------------------------------- grid


@dataclass(frozen=True)
class GridLayout:
    """Where each channel sits in a grid from :func:`render_grid`, to map a click back to a channel.

    Attributes:
        channels: the channels shown, in tile order (row by row).
        rows, cols: the grid's size in tiles.
        tile: ``(height, width)`` of a tile in pixels, padding excluded.
        pad: pixels between tiles and around the grid.
        map_size: ``(H, W)`` of the feature map.
        size: ``(height, width)`` of the whole image.
        norm, cmap: what was used.
        ranges: ``(low, high)`` per tile (per-channel norm) or one pair for all tiles; values at or below
            ``low`` get the colour map's first colour, at or above ``high`` its last.
    """

    channels: tuple[int, ...]
    rows: int
    cols: int
    tile: tuple[int, int]
    pad: int
    map_size: tuple[int, int]
    size: tuple[int, int]
    norm: str
    cmap: str
    ranges: tuple[tuple[float, float], ...]

    @property
    def vrange(self) -> tuple[float, float] | None:
        """The one range shared by every tile, or None with per-channel normalisation."""
        return None if self.norm == "channel" else self.ranges[0]

    def box(self, position: int) -> tuple[int, int, int, int]:
        """``(top, left, bottom, right)`` pixel bounds (end exclusive) of the tile at ``position``."""
        row, col = divmod(position, self.cols)
        top = self.pad + row * (self.tile[0] + self.pad)
        left = self.pad + col * (self.tile[1] + self.pad)
        return top, left, top + self.tile[0], left + self.tile[1]

    def locate(self, x: int, y: int) -> tuple[int, int, int] | None:
        """``(channel, row, col)`` under the image pixel ``(x, y)``: the channel and the feature-map position;
        None between tiles or past the last one.

        Example::

            >>> layout.locate(60, 3)          # 56x56 maps, 1 px padding: the 2nd tile, 3rd row and column
            (1, 2, 2)
        """
        height, width = self.tile
        col, dx = divmod(int(x) - self.pad, width + self.pad)
        row, dy = divmod(int(y) - self.pad, height + self.pad)
        position = row * self.cols + col
        if min(col, row, dx, dy) < 0 or dx >= width or dy >= height or col >= self.cols:
            return None
        if position >= len(self.channels):
            return None
        return self.channels[position], dy * self.map_size[0] // height, dx * self.map_size[1] // width


def _plan(
    count: int, height: int, width: int, cols: int | None, pad: int, scale: int | None, max_size: int | None
) -> tuple[int, int, int, int]:
    """``(rows, cols, tile_height, tile_width)``: near-square layout, whole-pixel upscale, capped size."""
    if cols is None:
        cols = math.ceil(math.sqrt(count * (height + pad) / (width + pad)))
    cols = max(1, min(int(cols), count))
    rows = -(-count // cols)

    def longest(tile_h: int, tile_w: int) -> int:
        return max(rows * (tile_h + pad) + pad, cols * (tile_w + pad) + pad)

    factor = int(scale) if scale else max(1, math.ceil(MIN_TILE / max(height, width)))
    if max_size:  # the largest whole upscale that fits, computed (a loop from scale=10**9 down would hang)
        fits = min(
            (max_size - pad - rows * pad) // (rows * height), (max_size - pad - cols * pad) // (cols * width)
        )
        factor = max(1, min(factor, fits))
    tile_h, tile_w = height * factor, width * factor
    if max_size and longest(tile_h, tile_w) > max_size:
        shrink = 1
        while longest(tile_h, tile_w) > max_size and max(tile_h, tile_w) > 1:
            shrink += 1
            tile_h, tile_w = -(-height // shrink), -(-width // shrink)
        if longest(tile_h, tile_w) > max_size:
            raise InvalidArgumentError(
                f"{count} tiles in {rows}x{cols} with pad={pad} need {longest(tile_h, tile_w)} px even at one "
                f'pixel a tile, over max_size={max_size}: lower pad, show fewer channels (channels="page:0/64"), '
                "or raise max_size."
            )
        _log.info(
            "grid shrunk: %dx%d maps drawn as %dx%d tiles to fit max_size", height, width, tile_h, tile_w
        )
    return rows, cols, tile_h, tile_w


def _label_masks(channels: Sequence[int], tile: tuple[int, int]) -> np.ndarray | None:
    """``(K, h, w)`` label boxes: 1 for text, 0 for the box; None when the tiles are too small for them."""
    digits = len(str(max(channels)))
    size = 1 if tile[1] < 96 else 2
    box_h, box_w = 5 * size + 2, (4 * digits - 1) * size + 2
    if box_h > tile[0] or box_w > tile[1]:
        _log.debug("labels skipped: %dx%d tiles are smaller than a %dx%d label", *tile, box_h, box_w)
        return None
    codes = np.array([list(map(int, str(ch))) + [10] * (digits - len(str(ch))) for ch in channels])
    glyphs = np.pad(_FONT[codes], ((0, 0), (0, 0), (0, 0), (0, 1)))  # (K, digits, 5, 4)
    text = glyphs.transpose(0, 2, 1, 3).reshape(len(channels), 5, digits * 4)[:, :, :-1]
    text = text.repeat(size, axis=1).repeat(size, axis=2)
    return np.pad(text, ((0, 0), (1, 1), (1, 1)))


def _corners(
    canvas: torch.Tensor, layout: tuple[int, int, int, int, int], size: tuple[int, int]
) -> torch.Tensor:
    """A view ``(rows, cols, h, w)`` of the top-left ``size`` of every tile of a packed ``canvas``."""
    rows, cols, tile_h, tile_w, pad = layout
    cells = canvas[pad:, pad:].unflatten(0, (rows, tile_h + pad)).unflatten(2, (cols, tile_w + pad))
    return cells[:, : size[0], :, : size[1]].permute(0, 2, 1, 3)


def _paste(view: torch.Tensor, pieces: torch.Tensor) -> None:
    """Copy ``(K, ...)`` pieces into the first ``K`` cells of a ``(rows, cols, ...)`` view, row by row."""
    cols = view.shape[1]
    full_rows, rest = divmod(pieces.shape[0], cols)
    if full_rows:
        view[:full_rows].copy_(pieces[: full_rows * cols].unflatten(0, (full_rows, cols)))
    if rest:
        view[full_rows, :rest].copy_(pieces[full_rows * cols :])


def _tile(
    colours: torch.Tensor, layout: tuple[int, int, int, int, int], background: torch.Tensor
) -> torch.Tensor:
    """Lay packed ``(K, h, w)`` tiles out row by row on a background canvas, each upscaled (nearest) to the
    layout's tile size, which is a whole multiple of ``(h, w)``."""
    rows, cols, tile_h, tile_w, pad = layout
    count, height, width = colours.shape
    canvas = background.expand(rows * (tile_h + pad) + pad, cols * (tile_w + pad) + pad).clone()
    view = _corners(canvas, layout, (tile_h, tile_w))
    factor = tile_h // height
    if factor > 1:
        view = view.unflatten(3, (width, factor)).unflatten(2, (height, factor))
        colours = colours[:, :, None, :, None].expand(count, height, factor, width, factor)
    _paste(view, colours)
    return canvas


@overload
def render_grid(
    fmap: torch.Tensor | np.ndarray,
    channels: ChannelsT = ...,
    *,
    norm: str = ...,
    cmap: str | None = ...,
    clip: float | None = ...,
    vrange: tuple[float, float] | None = ...,
    by: str = ...,
    stats: ChannelStats | None = ...,
    cols: int | None = ...,
    pad: int = ...,
    scale: int | None = ...,
    max_size: int | None = ...,
    labels: bool = ...,
    background: tuple[int, int, int] = ...,
    return_layout: Literal[False] = ...,
) -> np.ndarray: ...


@overload
def render_grid(
    fmap: torch.Tensor | np.ndarray,
    channels: ChannelsT = ...,
    *,
    norm: str = ...,
    cmap: str | None = ...,
    clip: float | None = ...,
    vrange: tuple[float, float] | None = ...,
    by: str = ...,
    stats: ChannelStats | None = ...,
    cols: int | None = ...,
    pad: int = ...,
    scale: int | None = ...,
    max_size: int | None = ...,
    labels: bool = ...,
    background: tuple[int, int, int] = ...,
    return_layout: Literal[True],
) -> tuple[np.ndarray, GridLayout]: ...


def render_grid(
    fmap: torch.Tensor | np.ndarray,
    channels: ChannelsT = "all",
    *,
    norm: str = "channel",
    cmap: str | None = None,
    clip: float | None = None,
    vrange: tuple[float, float] | None = None,
    by: str = "mean",
    stats: ChannelStats | None = None,
    cols: int | None = None,
    pad: int = 1,
    scale: int | None = None,
    max_size: int | None = 2048,
    labels: bool = False,
    background: tuple[int, int, int] = BACKGROUND_COLOR,
    return_layout: bool = False,
) -> np.ndarray | tuple[np.ndarray, GridLayout]:
    """Draw channels of one image's feature map as a grid of colour-mapped tiles.

    Args:
        fmap: ``(C, H, W)``, or ``(1, C, H, W)``, or ``(H, W)`` for one channel; on any device.
        channels: which channels, in which order (see :func:`select_channels`): ``"all"``, ``"first:K"``,
            ``"top:K"`` / ``"bottom:K"`` (ranked by the statistic ``by``), ``"page:P/S"`` (``"page:1/64"`` is
            channels 64-127), or a list, range, slice or integer array of indices.
        norm: how values become colours:

            * ``"channel"``: each tile from its own min to max (shape within a channel).
            * ``"stage"``: one range over every channel of ``fmap``, shown or not (compare channels).
            * ``"global"``: the range ``vrange``, shared across several maps (see :func:`value_range`).
            * ``"symmetric"``: ``(-m, m)`` with ``m`` the largest absolute value in ``fmap`` (or from
              ``vrange``), so zero sits in the middle of a diverging colour map; for signed maps.
        cmap: any matplotlib colour map name; ``"viridis"`` by default, ``"RdBu_r"`` for ``norm="symmetric"``.
        clip: a percentile such as ``99.5``: ranges run from the ``100 - clip`` to the ``clip`` percentile, so
            one hot pixel does not wash out a channel; None for the plain min and max.
        vrange: ``(low, high)`` for ``norm="global"`` (required) or ``norm="symmetric"`` (optional).
        by: the statistic that ranks ``"top:K"`` and ``"bottom:K"``: one of ``mean, std, min, max, l2,
            sparsity, positive, nonfinite``.
        stats: :func:`~explorer.channel_stats` of this map, to rank without recomputing.
        cols: columns of tiles; near-square when None.
        pad: pixels of ``background`` between tiles and around the grid.
        scale: whole-pixel upscale of each map; when None, the smallest that makes tiles at least
            :data:`MIN_TILE` pixels (a 7x7 map becomes 49x49).
        max_size: the longest side of the result in pixels; the upscale is lowered, then maps are shrunk (area
            average) to fit. None for no cap.
        labels: draw each channel's number in its tile's top-left corner (white on black), when it fits.
        background: the RGB colour between tiles.
        return_layout: also return a :class:`GridLayout`, to map pixels back to channels.

    Returns:
        ``np.uint8`` of shape ``(height, width, 3)``; with ``return_layout``, ``(array, layout)``. NaN and inf
        pixels are :data:`NONFINITE_COLOR` (magenta); a constant channel gets its colour map's first colour
        (with ``norm="symmetric"``, zero gets the middle colour).

    Raises:
        ValueError: a bad shape, channel selection, norm, range or colour map; the message names the fix.

    Example::

        >>> fmap = maps["blocks.6"][0]                       # (320, 7, 7)
        >>> grid, layout = render_grid(fmap, "first:16", return_layout=True)
        >>> grid.shape, layout.tile, (layout.rows, layout.cols)     # 7x7 maps upscaled 7x
        ((201, 201, 3), (49, 49), (4, 4))
    """
    if not isinstance(fmap, (torch.Tensor, np.ndarray)):
        raise InvalidArgumentError(
            f"render_grid() draws a tensor or array, got {type(fmap).__name__}; pass maps[name][0], (C, H, W)."
        )
    x = torch.as_tensor(fmap).detach()
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    elif x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        hint = " Pick one image: maps[name][i]." if x.ndim == 4 else ""
        raise InvalidArgumentError(
            f"render_grid() draws one image's map, (C, H, W); got shape {tuple(x.shape)}.{hint}"
        )
    if max_size is not None:
        max_size = whole(
            "max_size", max_size, minimum=1, hint=" It caps the grid's longest side; None for no cap."
        )
    pad = whole("pad", pad, maximum=max_size, hint=" It is the gap between tiles, at most max_size.")
    if scale is not None:
        scale = whole("scale", scale, minimum=1, hint=" It is pixels per map pixel; None picks one.")
    if cols is not None:
        cols = whole("cols", cols, minimum=1, hint=" None lays the grid out near-square.")
    clip = _check_clip(clip)
    num_channels, height, width = x.shape
    if height == 0 or width == 0:
        raise InvalidArgumentError(f"The map has no pixels (shape {tuple(x.shape)}).")
    cmap = cmap or ("RdBu_r" if norm == "symmetric" else "viridis")
    palette = _palette(cmap, x.device, background)

    values = None
    if isinstance(channels, str) and channels.strip().lower().startswith(("top:", "bottom:")):
        if by not in STAT_NAMES:
            raise InvalidArgumentError(f"by={shown(by)}; rank channels by one of: {', '.join(STAT_NAMES)}.")
        values = (stats if stats is not None else channel_stats(x)).values(by)
    chosen = select_channels(channels, num_channels, values)
    index = torch.as_tensor(chosen, device=x.device)
    full = x if x.is_floating_point() else x.float()
    selected = full.index_select(0, index).float()
    low, high = _norm_range(selected, full, norm, clip, vrange)

    rows, cols, tile_h, tile_w = _plan(len(chosen), height, width, cols, pad, scale, max_size)
    if tile_h < height or tile_w < width:
        selected = F.interpolate(selected[None], size=(tile_h, tile_w), mode="area")[0]
    plan = (rows, cols, tile_h, tile_w, pad)
    colours = _lookup(palette, _to_index(selected, low, high, _all_finite(selected)))
    canvas = _tile(colours, plan, palette[_BACKGROUND])
    if labels:
        masks = _label_masks(chosen, (tile_h, tile_w))
        if masks is not None:
            text = torch.from_numpy(np.where(masks, _FG, _BG).astype(np.int32)).to(x.device)
            _paste(_corners(canvas, plan, masks.shape[1:]), _lookup(palette, text))

    grid = _unpack(canvas).contiguous().cpu().numpy()
    if not return_layout:
        return grid
    pairs = torch.stack([low, high], 1).cpu().tolist()
    layout = GridLayout(
        channels=tuple(chosen),
        rows=rows,
        cols=cols,
        tile=(tile_h, tile_w),
        pad=pad,
        map_size=(height, width),
        size=(grid.shape[0], grid.shape[1]),
        norm=norm,
        cmap=cmap,
        ranges=tuple((float(lo), float(hi)) for lo, hi in pairs),
    )
    return grid, layout


# ----------------------------------------------------------------------------------------------- overlay


def overlay(
    image: ImageInput,
    channel_map: torch.Tensor | np.ndarray,
    alpha: float = 0.5,
    cmap: str = "inferno",
    *,
    preprocess: Preprocess | None = None,
    clip: float | None = None,
    vrange: tuple[float, float] | None = None,
) -> np.ndarray:
    """One channel, upsampled (bilinear) onto the image as the model saw it, to show where the channel fires.

    The map spans the whole image it is drawn on. Pass the original image with ``preprocess`` (the backbone's
    ``bb.preprocess``) and it is first resized and cropped as the model's input was
    (:func:`~explorer.images.model_view`), so the map lines up; or pass that view itself.

    Args:
        image: a PIL image, path, bytes or array (not the normalised ``pixel_values``).
        channel_map: ``(H, W)`` (or ``(1, 1, H, W)``): one channel of one image, for example
            ``maps["layer1"][0, 5]``. The work runs on its device.
        alpha: the colour's weight, 0 (image only) to 1 (map only).
        cmap: a matplotlib colour map name.
        preprocess: resize and crop ``image`` as the model did first.
        clip: a percentile (for example ``99.5``) for the map's range, or None for its min and max.
        vrange: a fixed ``(low, high)`` instead, to compare overlays.

    Returns:
        ``np.uint8`` ``(height, width, 3)`` at the image's (model view's) size; NaN and inf are magenta.

    Example::

        >>> over = overlay(cat, maps["blocks.2"][0, 5], alpha=0.5, preprocess=bb.preprocess)
        >>> over.shape
        (224, 224, 3)
    """
    alpha_hint = "pass a weight between 0 (image only) and 1 (map only)."
    alpha = real("alpha", alpha, hint=alpha_hint)
    if not 0.0 <= alpha <= 1.0:
        raise InvalidArgumentError(f"alpha={alpha}; {alpha_hint}")
    clip = _check_clip(clip)
    values = as_hw(channel_map, "overlay()")
    picture = load_image(image)
    if preprocess is not None:
        if not isinstance(preprocess, Preprocess):
            raise InvalidArgumentError(
                f"preprocess={shown(preprocess)} ({type(preprocess).__name__}); pass bb.preprocess or None."
            )
        picture = model_view(picture, preprocess)
    device = values.device
    palette = _unpack(_palette(cmap, device)).float()
    pixels = torch.from_numpy(np.array(picture)).to(device)
    values = values.float()
    if vrange is not None:
        low, high = (torch.tensor([bound], device=device) for bound in finite_pair("vrange", vrange))
    else:
        low, high = _ranges(values.reshape(1, -1), clip)
    upsampled = F.interpolate(
        values[None, None], size=pixels.shape[:2], mode="bilinear", align_corners=False
    )[0]
    colours = palette[_to_index(upsampled, low, high, _all_finite(upsampled))[0]]
    blended = torch.where(
        (colours == palette[_NONFINITE]).all(-1, keepdim=True),
        colours,
        pixels.float() * (1.0 - float(alpha)) + colours * float(alpha),
    )
    return blended.round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()


# ----------------------------------------------------------------------------------------------- PNG


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def _deflate(data: memoryview, level: int) -> bytes:
    """zlib-format deflate: ISA-L (about 3x zlib's speed, about 10% larger output) for the fast display levels
    1-3 when the ``isal`` package is there, else the standard library's zlib."""
    if 1 <= level <= 3 and _isal_zlib is not None:
        return _isal_zlib.compress(data, level + 1 if level < 3 else 3)
    return zlib.compress(data, level)


def to_png(array: np.ndarray | torch.Tensor, level: int = 1) -> bytes:
    """Encode a uint8 image as PNG bytes, quickly.

    The rows are written unfiltered and deflated at ``level`` (1: fast, the default for display; 6-9: smaller,
    for files; 0: stored, fastest and largest). Levels 1-3 use ISA-L's deflate when the ``isal`` package is
    installed (a dependency): a 913x913 grid encodes in about 8 ms against zlib's 23 ms, for a file about 10%
    larger.

    Args:
        array: ``(H, W)`` grey, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA, ``np.uint8`` (a tensor is copied to
            the CPU).
        level: zlib level, 0-9.

    Returns:
        A complete PNG file as bytes.

    Example::

        >>> png = to_png(render_grid(fmap))
        >>> png[:4]
        b'\\x89PNG'
    """
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    if not isinstance(array, np.ndarray):
        raise InvalidArgumentError(
            f"to_png() takes a uint8 array or tensor, got {type(array).__name__}. Render with render_grid()."
        )
    if array.dtype != np.uint8:
        raise InvalidArgumentError(
            f"to_png() takes uint8 pixels, got {array.dtype}. Render with render_grid()/overlay(), or convert "
            "with np.clip(a, 0, 255).astype(np.uint8)."
        )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    depth = 1 if array.ndim == 2 else array.shape[2] if array.ndim == 3 else 0
    kind = {1: 0, 3: 2, 4: 6}.get(depth)
    if kind is None or 0 in array.shape[:2]:
        raise InvalidArgumentError(
            f"to_png() takes (H, W), (H, W, 3) or (H, W, 4) pixels; got shape {array.shape}."
        )
    level = whole("level", level, maximum=9, hint=" A zlib level runs from 0 (fastest) to 9 (smallest).")
    height, width = array.shape[:2]
    raw = np.empty((height, 1 + width * depth), dtype=np.uint8)
    raw[:, 0] = 0
    raw[:, 1:] = array.reshape(height, -1)
    header = struct.pack(">IIBBBBB", width, height, 8, kind, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", _deflate(raw.data, int(level)))
        + _chunk(b"IEND", b"")
    )
