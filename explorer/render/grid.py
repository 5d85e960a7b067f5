"""Channel grids: the tiles of one image's feature map, colour-mapped, laid out near-square, upscaled by whole
pixels, optionally labelled with their channel numbers (a 3x5 bitmap font), and the layout that maps a click back
to a channel.

Example::

    >>> grid, layout = render_grid(maps["blocks.6"][0], "first:16", return_layout=True)
    >>> grid.shape, layout.tile
    ((201, 201, 3), (49, 49))
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np
import torch
import torch.nn.functional as F

from .._args import real, shown, whole
from ..errors import InvalidArgumentError
from ..stats import STAT_NAMES, ChannelStats, channel_stats
from .channels import ChannelsT, select_channels
from .colormaps import (
    BACKGROUND_COLOR,
    BACKGROUND_ENTRY,
    DIVERGING_CMAP,
    LABEL_BG_ENTRY,
    LABEL_FG_ENTRY,
    MAP_CMAP,
    lookup,
    packed_palette,
    unpack,
)
from .ranges import all_finite, check_clip, norm_range, to_index

__all__ = ["MIN_TILE", "GridLayout", "render_grid"]

_log = logging.getLogger(__name__)

MIN_TILE = 48
"""Small maps are upscaled by whole pixels until a tile is at least this many pixels on its longer side."""

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
        last = len(self.channels) - 1
        position = whole("position", position, maximum=last, hint=f" Tiles are numbered 0 to {last}.")
        row, col = divmod(position, self.cols)
        top = self.pad + row * (self.tile[0] + self.pad)
        left = self.pad + col * (self.tile[1] + self.pad)
        return top, left, top + self.tile[0], left + self.tile[1]

    def locate(self, x: int, y: int) -> tuple[int, int, int] | None:
        """``(channel, row, col)`` under the image pixel ``(x, y)``: the channel and the feature-map position;
        None between tiles or past the last one.

        Example::

            >>> _, layout = render_grid(maps["blocks.1"][0], return_layout=True)     # 24 maps of 56x56
            >>> layout.locate(60, 3)          # 1 px padding: the 2nd tile, 3rd row and column
            (1, 2, 2)
        """
        hint = "pass the pixel's coordinates in the grid image, x to the right and y down."
        x, y = math.floor(real("x", x, hint=hint)), math.floor(real("y", y, hint=hint))
        height, width = self.tile
        col, dx = divmod(x - self.pad, width + self.pad)
        row, dy = divmod(y - self.pad, height + self.pad)
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
        cmap: any matplotlib colour map name; by default :data:`~explorer.render.MAP_CMAP` (``"viridis"``),
            :data:`~explorer.render.DIVERGING_CMAP` (``"RdBu_r"``) for ``norm="symmetric"``.
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
    clip = check_clip(clip)
    num_channels, height, width = x.shape
    if height == 0 or width == 0:
        raise InvalidArgumentError(f"The map has no pixels (shape {tuple(x.shape)}).")
    cmap = cmap or (DIVERGING_CMAP if norm == "symmetric" else MAP_CMAP)
    palette = packed_palette(cmap, x.device, background)

    values = None
    if isinstance(channels, str) and channels.strip().lower().startswith(("top:", "bottom:")):
        if by not in STAT_NAMES:
            raise InvalidArgumentError(f"by={shown(by)}; rank channels by one of: {', '.join(STAT_NAMES)}.")
        values = (stats if stats is not None else channel_stats(x)).values(by)
    chosen = select_channels(channels, num_channels, values)
    index = torch.as_tensor(chosen, device=x.device)
    full = x if x.is_floating_point() else x.float()
    selected = full.index_select(0, index).float()
    low, high = norm_range(selected, full, norm, clip, vrange)

    rows, cols, tile_h, tile_w = _plan(len(chosen), height, width, cols, pad, scale, max_size)
    if tile_h < height or tile_w < width:
        selected = F.interpolate(selected[None], size=(tile_h, tile_w), mode="area")[0]
    plan = (rows, cols, tile_h, tile_w, pad)
    colours = lookup(palette, to_index(selected, low, high, all_finite(selected)))
    canvas = _tile(colours, plan, palette[BACKGROUND_ENTRY])
    if labels:
        masks = _label_masks(chosen, (tile_h, tile_w))
        if masks is not None:
            text = torch.from_numpy(np.where(masks, LABEL_FG_ENTRY, LABEL_BG_ENTRY).astype(np.int32)).to(
                x.device
            )
            _paste(_corners(canvas, plan, masks.shape[1:]), lookup(palette, text))

    grid = unpack(canvas).contiguous().cpu().numpy()
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
