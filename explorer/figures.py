"""Figures built from render and stats output: plotly for exploring, matplotlib for papers and exports.

The matplotlib figures use the object API only (``matplotlib.figure.Figure`` with an Agg canvas), never
pyplot's global state, so they neither leak into other cells nor pile up open figures in widgets and nbval runs.
plotly and matplotlib are imported on first use.

Example::

    >>> heatmap_figure(maps["layer1"][0, 5]).show()              # hover: row, column, value
    >>> stat_bar_figure(channel_stats(maps["layer1"]), by="sparsity").show()
    >>> fig = stage_grid_figure(maps["layer1"][0], channels="first:16", title="layer1")
    >>> fig.savefig("layer1.pdf")
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from ._args import real, shown, text, whole
from .arrays import as_hw
from .errors import InvalidArgumentError
from .histograms import Histogram, histogram
from .render import NONFINITE_COLOR, ChannelsT, render_grid
from .stats import ChannelDifference, ChannelStats

if TYPE_CHECKING:
    import plotly.graph_objects as go
    from matplotlib.figure import Figure

    from .attention_maps import Attention
    from .patch_views import PatchPCA, Similarity

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
    cmap: str = "Viridis",
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
            (``"Viridis"``, ``"RdBu"``, ...).
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
    title, width, dpi = _page(title, width, dpi)
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


def _page(title: object, width: object, dpi: object) -> tuple[str | None, float, int]:
    """A matplotlib figure's title, width (inches) and resolution, checked."""
    title = text("title", title, hint="pass a string or None.", optional=True)
    width = real("width", width, hint="pass the figure's width in inches, for example 6.")
    if not 0 < width <= 200:
        raise InvalidArgumentError(f"width={width}; pass a width in inches from 0 to 200, for example 6.")
    return title, width, whole("dpi", dpi, minimum=1, maximum=2400)


def _result(result: object, kind: type, maker: str) -> None:
    if not isinstance(result, kind):
        raise InvalidArgumentError(
            f"result={shown(result)} ({type(result).__name__}); pass the {kind.__name__} that {maker} returns."
        )


def _views(images: object, count: int) -> list[np.ndarray] | None:
    """The images drawn under the maps, read as :func:`~explorer.load_image` reads any image: one per map."""
    from .images import load_image

    if images is None:
        return None
    if not isinstance(images, Sequence) or isinstance(images, (str, bytes)) or len(images) != count:
        raise InvalidArgumentError(
            f"images={shown(images)}; pass a list of {count} images (one per map, as the model saw them: "
            "explorer.model_view(image, bb.preprocess)), or None."
        )
    return [np.asarray(load_image(image)) for image in images]


def _cmap(cmap: object) -> str:
    from .render import colormap_lut

    colormap_lut(cmap)  # refuses what matplotlib does not name
    return cmap


def _panel_figure(count: int, width: float, dpi: int, rows: int = 1) -> tuple[Figure, list]:
    """A constrained-layout ``Figure`` (object API, Agg canvas) with ``rows`` x ``count`` axes, axes off."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    side = width / max(count, 1)
    figure = Figure(figsize=(width, side * rows + 0.9), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, count, squeeze=False)
    for axis in axes.flat:
        axis.set_axis_off()
    return figure, axes


def patch_pca_figure(
    result: PatchPCA,
    images: Sequence | None = None,
    *,
    title: str | None = None,
    width: float = 10.0,
    dpi: int = 100,
) -> Figure:
    """PCA colours of every image (under the images, when given), with a colour bar per component.

    Args:
        result: :func:`~explorer.pca` output.
        images: the images as the model saw them (``explorer.model_view(image, bb.preprocess)``), drawn above.
        title: the figure title; by default the stage and the variance the three components explain.

    Example::

        >>> fig = patch_pca_figure(explorer.pca(bb, photos, stage="blocks.5"), [model_view(p, bb.preprocess) ...])
        >>> fig.savefig("pca.png")
    """
    import matplotlib
    from matplotlib.colors import LinearSegmentedColormap, Normalize

    from .patch_views import PatchPCA

    _result(result, PatchPCA, "explorer.pca()")
    title, width, dpi = _page(title, width, dpi)
    count = result.rgb.shape[0]
    views = _views(images, count)
    rows = 2 if views is not None else 1
    figure, axes = _panel_figure(count, width, dpi, rows)
    for index in range(count):
        if views is not None:
            axes[0, index].imshow(views[index])
        axes[-1, index].imshow(result.rgb[index], interpolation="nearest")
    basis = result.basis
    for k in range(min(3, basis.components.shape[0])):
        colour = [(0, 0, 0), tuple(1.0 if c == k else 0.0 for c in range(3))]
        mappable = matplotlib.cm.ScalarMappable(
            norm=Normalize(float(basis.low[k]), float(basis.high[k])),
            cmap=LinearSegmentedColormap.from_list(f"pc{k}", colour),
        )
        share = float(basis.explained_variance_ratio[k])
        bar = figure.colorbar(mappable, ax=axes[-1, :].tolist(), shrink=0.9, pad=0.01, aspect=15)
        bar.set_label(f"PC{k + 1} ({share:.0%})")
    masked = " (foreground fit)" if result.foreground is not None else ""
    shares = float(basis.explained_variance_ratio[:3].sum())
    figure.suptitle(title or f"PCA of {result.stage}{masked}: first 3 components explain {shares:.0%}")
    return figure


def similarity_figure(
    result: Similarity,
    images: Sequence | None = None,
    *,
    title: str | None = None,
    cmap: str = "inferno",
    width: float = 10.0,
    dpi: int = 100,
) -> Figure:
    """Cosine-similarity maps of every image over the image, the query circled and each best match crossed.

    Args:
        result: :func:`~explorer.similarity` output.
        images: the images as the model saw them, drawn under the maps (each map stretched over its image).
        title: the figure title; by default the stage and the query.
        cmap: a matplotlib colour map.

    Example::

        >>> fig = similarity_figure(explorer.similarity(bb, photos, query=(0, 5, 7)), views)
    """
    import matplotlib
    from matplotlib.colors import Normalize

    from .patch_views import Similarity

    _result(result, Similarity, "explorer.similarity()")
    title, width, dpi = _page(title, width, dpi)
    cmap = _cmap(cmap)
    maps = result.maps.float().cpu().numpy()
    count, height, width_cells = maps.shape
    views = _views(images, count)
    low, high = float(maps.min()), float(maps.max())
    figure, axes = _panel_figure(count, width, dpi)
    query_image, query_row, query_col = result.query
    for index in range(count):
        axis = axes[0, index]
        extent = (-0.5, width_cells - 0.5, height - 0.5, -0.5)  # cell centres at integer positions
        alpha = 1.0
        if views is not None:
            axis.imshow(views[index], extent=extent)
            alpha = 0.6
        axis.imshow(
            maps[index], cmap=cmap, vmin=low, vmax=high, alpha=alpha, extent=extent, interpolation="bilinear"
        )
        row, col = result.best[index]
        axis.plot(col, row, marker="x", color="cyan", markersize=10, markeredgewidth=2.5)
        if index == query_image:
            axis.plot(
                query_col, query_row, marker="o", markerfacecolor="none", color="lime", markersize=12, mew=2.5
            )
        axis.set_title(f"image {index}: best ({row}, {col})", fontsize=9)
    mappable = matplotlib.cm.ScalarMappable(norm=Normalize(low, high), cmap=matplotlib.colormaps[cmap])
    figure.colorbar(mappable, ax=axes[0, :].tolist(), shrink=0.9, pad=0.01).set_label("cosine similarity")
    figure.suptitle(
        title
        or f"Similarity to image {query_image}, row {query_row}, column {query_col} at {result.stage} "
        "(o query, x best match)"
    )
    return figure


def attention_figure(
    result: Attention,
    image=None,
    *,
    title: str | None = None,
    cmap: str = "viridis",
    width: float = 12.0,
    dpi: int = 100,
) -> Figure:
    """The class token's attention per head (and the rollout, when computed), with a colour bar.

    Each head's panel says what share went to the prefix tokens instead of the patches.

    Args:
        result: :func:`~explorer.attention` output.
        image: the image as the model saw it, drawn first.
        title: the figure title; by default the block.
        cmap: a matplotlib colour map.

    Example::

        >>> fig = attention_figure(explorer.attention(bb, "cat.jpg", rollout=True), view)
    """
    import matplotlib
    from matplotlib.colors import Normalize

    from .attention_maps import Attention

    _result(result, Attention, "explorer.attention()")
    title, width, dpi = _page(title, width, dpi)
    cmap = _cmap(cmap)
    view = None if image is None else _views([image], 1)[0]
    maps = result.maps.float().cpu().numpy()
    heads = maps.shape[0]
    panels = [("image", None)] if view is not None else []
    panels += [(f"head {h}: {float(result.prefix_share[h]):.0%} to prefix", maps[h]) for h in range(heads)]
    if result.rollout is not None:
        panels.append(("rollout (own scale)", result.rollout.float().cpu().numpy()))
    columns = min(len(panels), 7)
    rows = -(-len(panels) // columns)
    figure, axes = _panel_figure(columns, width, dpi, rows)
    low, high = float(maps.min()), float(maps.max())
    for axis, (label, values) in zip(axes.flat, panels):
        if values is None:
            axis.imshow(view)
        elif label.startswith("rollout"):
            axis.imshow(values, cmap=cmap, interpolation="nearest")
        else:
            axis.imshow(values, cmap=cmap, vmin=low, vmax=high, interpolation="nearest")
        axis.set_title(label, fontsize=8)
    mappable = matplotlib.cm.ScalarMappable(norm=Normalize(low, high), cmap=matplotlib.colormaps[cmap])
    figure.colorbar(mappable, ax=axes.ravel().tolist(), shrink=0.8, pad=0.01).set_label(
        "class token's attention"
    )
    prefix = ", ".join(result.prefix_tokens)
    figure.suptitle(title or f"Class-token attention at {result.block} (prefix tokens: {prefix})")
    return figure
