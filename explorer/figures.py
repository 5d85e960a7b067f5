"""Figures built from render and stats output: plotly for exploring, matplotlib for papers and exports.

The matplotlib figures use the object API only (``matplotlib.figure.Figure`` with an Agg canvas), never
pyplot's global state, so they neither leak into other cells nor pile up open figures in widgets and nbval runs.
plotly and matplotlib are imported on first use. The patch views' figures are :mod:`explorer.patch_figures`
(re-exported here); the blank page every matplotlib figure starts from is :mod:`explorer.figure_pages`.

Example::

    >>> heatmap_figure(maps["blocks.1"][0, 5]).data[0].type      # .show(): hover gives row, column, value
    'heatmap'
    >>> stat_bar_figure(channel_stats(maps["blocks.1"]), by="sparsity").data[0].type
    'bar'
    >>> fig = stage_grid_figure(maps["blocks.1"][0], channels="first:16", title="blocks.1")
    >>> fig.savefig("blocks1.pdf")
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from ._args import shown, text, whole
from .arrays import as_hw
from .errors import InvalidArgumentError
from .figure_pages import page_options
from .histograms import Histogram, histogram
from .patch_figures import attention_figure, patch_pca_figure, similarity_figure
from .render import MAP_CMAP, NONFINITE_COLOR, ChannelsT, render_grid
from .stats import ChannelDifference, ChannelStats

if TYPE_CHECKING:
    import plotly.graph_objects as go
    from matplotlib.figure import Figure


__all__ = [
    "attention_figure",
    "heatmap_figure",
    "histogram_figure",
    "patch_pca_figure",
    "similarity_figure",
    "stage_grid_figure",
    "stat_bar_figure",
]

_log = logging.getLogger(__name__)

MAX_HEATMAP_SIDE = 128
"""plotly heatmaps show at most this many rows and columns; larger maps are subsampled (every k-th cell)."""

_NONFINITE_CSS = "rgb({}, {}, {})".format(*NONFINITE_COLOR)


def _colorscale(cmap: str) -> str | list:
    """A plotly colour scale: a matplotlib colour map name becomes 11 sampled stops; plotly names pass through."""
    import matplotlib
    import plotly.colors

    if not isinstance(cmap, str):
        raise InvalidArgumentError(f"cmap={shown(cmap)} ({type(cmap).__name__}); pass a colour map name.")
    if cmap not in matplotlib.colormaps:
        named = plotly.colors.named_colorscales()
        if cmap.lower().removesuffix("_r") not in named:
            raise InvalidArgumentError(
                f"cmap={shown(cmap)} is neither a matplotlib nor a plotly colour map; try viridis or Viridis."
            )
        return cmap
    positions = np.linspace(0.0, 1.0, 11)
    colours = matplotlib.colormaps[cmap](positions)[:, :3] * 255
    return [[float(p), "rgb({:.0f},{:.0f},{:.0f})".format(*c)] for p, c in zip(positions, colours)]


def heatmap_figure(
    channel_map: torch.Tensor | np.ndarray,
    title: str | None = None,
    cmap: str = MAP_CMAP,
    max_side: int = MAX_HEATMAP_SIDE,
) -> go.Figure:
    """One channel as a plotly heatmap; hovering shows the row, column and value.

    Row 0 is at the top, as in the image. Maps larger than ``max_side`` are subsampled to every k-th row and
    column (hover shows the true row and column of each cell shown). NaN and inf cells are left blank and
    counted in the title.

    Args:
        channel_map: ``(H, W)``, for example ``maps["layer1"][0, 5]``.
        title: the figure title.
        cmap: a matplotlib colour map name (``"viridis"``, ``"magma"``, ...) or a plotly colour scale name
            (``"Viridis"``, ``"RdBu"``, ...); :data:`~explorer.render.MAP_CMAP` by default, as every map drawn
            on its own.
        max_side: the largest number of rows or columns drawn.

    Example::

        >>> fig = heatmap_figure(maps["blocks.1"][0, 5], title="blocks.1, channel 5")
        >>> fig.data[0].z.shape
        (56, 56)
    """
    import plotly.graph_objects as go

    values = as_hw(channel_map, "heatmap_figure()")
    title = text("title", title, hint="pass a string or None.", optional=True)
    max_side = whole("max_side", max_side, minimum=1)
    height, width = values.shape
    step = max(1, math.ceil(max(height, width) / max_side))
    z = values[::step, ::step].float().cpu().numpy().astype(np.float64)
    nonfinite = int((~np.isfinite(z)).sum())
    z[~np.isfinite(z)] = np.nan
    heading = title or "channel map"
    if step > 1:
        heading += f" (every {step}th cell of {height}x{width})"
    if nonfinite:
        heading += f" - {nonfinite} NaN/inf cells left blank"
    figure = go.Figure(
        go.Heatmap(
            z=z,
            x=np.arange(0, width, step),
            y=np.arange(0, height, step),
            colorscale=_colorscale(cmap),
            hovertemplate="row %{y}<br>column %{x}<br>value %{z:.4g}<extra></extra>",
        )
    )
    figure.update_yaxes(autorange="reversed", scaleanchor="x", constrain="domain", title_text="row")
    figure.update_xaxes(constrain="domain", title_text="column")
    figure.update_layout(
        title_text=heading, margin={"l": 40, "r": 20, "t": 50, "b": 40}, plot_bgcolor=_NONFINITE_CSS
    )
    return figure


def stat_bar_figure(
    stats: ChannelStats | ChannelDifference,
    by: str = "mean",
    sort: bool = True,
    image: int | None = None,
    top: int | None = None,
    title: str | None = None,
) -> go.Figure:
    """A bar per channel of one statistic; hovering shows the channel index and value.

    The figure carries two buttons, "sorted" and "by channel", that reorder the bars in place.

    Args:
        stats: :func:`~explorer.channel_stats` or :func:`~explorer.channel_difference` output.
        by: the statistic (``"mean"``, ``"sparsity"``, ``"mean_abs"``, ...).
        sort: start sorted, highest first (NaN last); else in channel order.
        image: one image's values instead of the pooled ones (``ChannelStats`` only).
        top: show only the ``top`` highest channels (sorted view).
        title: the figure title.

    Example::

        >>> fig = stat_bar_figure(channel_stats(maps["blocks.1"]), by="sparsity")
        >>> len(fig.data[0].y)
        24
    """
    import plotly.graph_objects as go

    if not isinstance(stats, (ChannelStats, ChannelDifference)):
        raise InvalidArgumentError(
            f"stats={shown(stats)}; pass channel_stats() or channel_difference() output."
        )
    title = text("title", title, hint="pass a string or None.", optional=True)
    values = stats.values(by, image)
    ranked = stats.top(top, by=by, image=image)
    ordered = {
        "x": [list(range(len(ranked.channels)))],
        "y": [ranked.values.tolist()],
        "customdata": [ranked.channels.tolist()],
    }
    channels = np.arange(len(values)) if top is None else np.sort(ranked.channels)
    natural = {"x": [channels.tolist()], "y": [values[channels].tolist()], "customdata": [channels.tolist()]}
    start = ordered if sort else natural
    figure = go.Figure(
        go.Bar(
            x=start["x"][0],
            y=start["y"][0],
            customdata=start["customdata"][0],
            hovertemplate=f"channel %{{customdata}}<br>{by} %{{y:.4g}}<extra></extra>",
        )
    )
    buttons = [
        {"label": "sorted", "method": "update", "args": [ordered, {"xaxis.title.text": "rank"}]},
        {"label": "by channel", "method": "update", "args": [natural, {"xaxis.title.text": "channel"}]},
    ]
    figure.update_layout(
        title_text=title or f"{by} per channel",
        xaxis_title_text="rank" if sort else "channel",
        yaxis_title_text=by,
        bargap=0.05,
        margin={"l": 50, "r": 20, "t": 60, "b": 40},
        updatemenus=[
            {
                "type": "buttons",
                "direction": "left",
                "x": 1.0,
                "y": 1.15,
                "xanchor": "right",
                "buttons": buttons,
            }
        ],
    )
    return figure


def histogram_figure(
    data: torch.Tensor | np.ndarray | Histogram,
    bins: int = 64,
    log: bool = False,
    title: str | None = None,
) -> go.Figure:
    """A histogram of activations (counted on the map's device by :func:`~explorer.histogram`).

    Args:
        data: a map of any shape (a stage, an image's map, a channel), or a :class:`~explorer.Histogram`.
        bins: the number of bins when ``data`` is a map.
        log: a logarithmic count axis (ReLU maps are mostly zeros).
        title: the figure title; NaN and inf values, left out, are counted in it.

    Example::

        >>> fig = histogram_figure(maps["blocks.1"][0], bins=32)
        >>> len(fig.data[0].y)
        32
    """
    import plotly.graph_objects as go

    hist = data if isinstance(data, Histogram) else histogram(data, bins=bins)
    heading = text("title", title, hint="pass a string or None.", optional=True) or "activations"
    if hist.nonfinite:
        heading += f" - {hist.nonfinite} NaN/inf values not counted"
    figure = go.Figure(
        go.Bar(
            x=hist.centers,
            y=hist.counts,
            width=np.diff(hist.edges),
            customdata=np.stack([hist.edges[:-1], hist.edges[1:]], axis=1),
            hovertemplate="[%{customdata[0]:.4g}, %{customdata[1]:.4g})<br>count %{y}<extra></extra>",
        )
    )
    figure.update_layout(
        title_text=heading,
        xaxis_title_text="value",
        yaxis_title_text="count",
        yaxis_type="log" if log else "linear",
        bargap=0,
        margin={"l": 50, "r": 20, "t": 50, "b": 40},
    )
    return figure


def stage_grid_figure(
    fmap: torch.Tensor | np.ndarray,
    channels: ChannelsT = "first:16",
    *,
    title: str | None = None,
    cmap: str | None = None,
    norm: str = "stage",
    clip: float | None = None,
    vrange: tuple[float, float] | None = None,
    cols: int | None = None,
    labels: bool = True,
    width: float = 6.0,
    dpi: int = 100,
) -> Figure:
    """A static, titled grid of channels with a colour bar, as a matplotlib ``Figure`` (object API only).

    The grid is :func:`~explorer.render_grid`'s; the colour bar shows the shared range (``norm`` of
    ``"stage"``, ``"global"`` or ``"symmetric"``), or 0-1 of each channel's own range with
    ``norm="channel"``. Save it with ``fig.savefig(path)``; in a notebook it displays as the cell's value.

    Args:
        fmap: ``(C, H, W)`` or ``(1, C, H, W)``: one image's map of one stage.
        channels: which channels (see :func:`~explorer.select_channels`).
        title: the figure title.
        cmap, norm, clip, vrange: as for :func:`~explorer.render_grid`.
        cols: columns of tiles; near-square when None.
        labels: write each channel's number in its tile's corner.
        width: the figure's width in inches (its height follows the grid).
        dpi: resolution.

    Example::

        >>> fig = stage_grid_figure(maps["blocks.2"][0], channels="top:16", title="blocks.2")
        >>> fig.savefig("blocks2.png")
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    grid, layout = render_grid(
        fmap, channels, norm=norm, cmap=cmap, clip=clip, vrange=vrange, cols=cols, pad=2, return_layout=True
    )
    title, width, dpi = page_options(title, width, dpi)
    aspect = grid.shape[0] / grid.shape[1]
    figure = Figure(figsize=(width, width * aspect * 0.85 + 0.6), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.imshow(grid, interpolation="nearest")
    axes.set_axis_off()
    if labels and len(layout.channels) <= 256:
        size = max(4.0, min(9.0, 200.0 / layout.cols))
        for position, channel in enumerate(layout.channels):
            top, left, _, _ = layout.box(position)
            axes.text(
                left + 1,
                top + 1,
                str(channel),
                fontsize=size,
                color="white",
                va="top",
                ha="left",
                bbox={"facecolor": "black", "alpha": 0.6, "pad": 0.8, "linewidth": 0},
            )
    low, high = layout.vrange if layout.vrange is not None else (0.0, 1.0)
    mappable = matplotlib.cm.ScalarMappable(norm=Normalize(low, high), cmap=matplotlib.colormaps[layout.cmap])
    bar = figure.colorbar(mappable, ax=axes, shrink=0.8, pad=0.02)
    bar.set_label("each channel's min to max" if layout.vrange is None else "activation")
    if title:
        axes.set_title(title)
    return figure
