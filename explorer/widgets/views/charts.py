"""Small SVG bar charts for the Statistics tab: a few kilobytes of markup, drawn by any front end (JupyterLab,
Notebook, Voila, VS Code, Colab), with the value of each bar in its tooltip. plotly's ``FigureWidget`` carries a
4.96 MB script per widget and sends its values as JSON, which is too much for a view redrawn on every click."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

__all__ = ["bar_chart"]


def _tick(value: float) -> str:
    return f"{value:.3g}"


def bar_chart(
    values: Sequence[float],
    labels: Sequence[str],
    *,
    title: str,
    width: int = 440,
    height: int = 220,
    color: str = "#4c72b0",
    channels: Sequence[int] | None = None,
) -> str:
    """An SVG bar chart; hovering a bar shows its label and value; each bar carries its ``channels`` entry as
    ``data-channel`` (a click on it picks the channel). The left margin fits the longest tick label.

    Example::

        >>> svg = bar_chart([0.5, 1.0], ["channel 0", "channel 1"], title="mean")
        >>> svg.startswith("<svg")
        True
    """
    finite = [v for v in values if math.isfinite(v)]
    low, high = min([0.0, *finite]), max([0.0, *finite])
    left, right, top, bottom = 8 + 7 * max(len(_tick(high)), len(_tick(low))), 8, 22, 18
    span = (high - low) or 1.0
    plot_w, plot_h = width - left - right, height - top - bottom
    step = plot_w / max(len(values), 1)

    def y(value: float) -> float:
        return top + (high - value) / span * plot_h

    bars = []
    for i, (value, label) in enumerate(zip(values, labels)):
        tip = html.escape(f"{label}: {value:.4g}")
        pick = f' data-channel="{int(channels[i])}"' if channels is not None else ""
        if not math.isfinite(value):
            bars.append(
                f'<rect x="{left + i * step:.2f}" y="{top}" width="{max(step - 0.5, 0.5):.2f}" '
                f'height="{plot_h}" fill="#f0f"{pick}><title>{tip}</title></rect>'
            )
            continue
        y0, y1 = sorted((y(0.0), y(value)))
        bars.append(
            f'<rect x="{left + i * step:.2f}" y="{y0:.2f}" width="{max(step - 0.5, 0.5):.2f}" '
            f'height="{max(y1 - y0, 0.5):.2f}" fill="{color}"{pick}><title>{tip}</title></rect>'
        )
    axis = (
        f'<line x1="{left}" x2="{left + plot_w}" y1="{y(0.0):.2f}" y2="{y(0.0):.2f}" stroke="#888"/>'
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{_tick(high)}</text>'
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end">{_tick(low)}</text>'
        f'<text x="{left}" y="{height - 4}">{html.escape(labels[0]) if labels else ""}</text>'
        f'<text x="{left + plot_w}" y="{height - 4}" text-anchor="end">'
        f"{html.escape(labels[-1]) if labels else ''}</text>"
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'style="font: 11px sans-serif" class="explorer-chart">'
        f'<text x="{left}" y="14" font-weight="bold">{html.escape(title)}</text>{axis}{"".join(bars)}</svg>'
    )
