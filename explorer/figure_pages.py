"""The blank matplotlib page every static figure starts from: a checked title, width and resolution, and a
constrained-layout ``Figure`` on an Agg canvas (object API only, never pyplot's global state).

Example::

    >>> page_options("blocks.2", 6, 100)
    ('blocks.2', 6.0, 100)
    >>> figure, axes = panel_figure(3, 6.0, 100)
    >>> axes.shape
    (1, 3)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._args import real, text, whole
from .errors import InvalidArgumentError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["page_options", "panel_figure"]


def page_options(title: object, width: object, dpi: object) -> tuple[str | None, float, int]:
    """A matplotlib figure's title, width (inches) and resolution, checked."""
    title = text("title", title, hint="pass a string or None.", optional=True)
    width = real("width", width, hint="pass the figure's width in inches, for example 6.")
    if not 0 < width <= 200:
        raise InvalidArgumentError(f"width={width}; pass a width in inches from 0 to 200, for example 6.")
    return title, width, whole("dpi", dpi, minimum=1, maximum=2400)


def panel_figure(count: int, width: float, dpi: int, rows: int = 1) -> tuple[Figure, list]:
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
