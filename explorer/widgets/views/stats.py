"""The Statistics tab: per-channel statistics of the shown map, sorted as chosen, dead channels per map, and two
charts (the sorted statistic, the histogram of values) as SVG with the values in their tooltips."""

from __future__ import annotations

import html
from dataclasses import dataclass

import ipywidgets as widgets

from ..clickhtml import ClickHTML
from ..engine import Frame, Scene
from . import View, register
from .charts import bar_chart
from .html import html_table

__all__ = ["StatsData", "StatsView"]


@dataclass(frozen=True)
class StatsData:
    """What the Statistics tab shows, as HTML and SVG."""

    table: str
    dead: str
    bars: str
    histogram: str


@register
class StatsView(View):
    title = "Statistics"
    quick = True

    def __init__(self, controls) -> None:
        super().__init__(controls)
        pick = lambda channel: controls.set("channel", channel)  # noqa: E731 - a row or bar zooms its channel
        self.stats_table = ClickHTML(on_click=pick)
        self.dead_table = widgets.HTML()
        self.stats_figures = widgets.HBox([ClickHTML(on_click=pick), widgets.HTML()])
        self.widget = widgets.VBox(
            [
                widgets.HBox([controls.sort_box, controls.descending_box]),
                self.stats_figures,
                widgets.HBox([self.stats_table, self.dead_table]),
            ]
        )
        self._shown: StatsData | None = None

    @staticmethod
    def compute(scene: Scene) -> StatsData:
        from ...histograms import histogram

        s = scene.state
        stats = scene.stats()
        if s.sort_by == "channel":
            order = list(range(len(stats)))[:: -1 if s.descending else 1]
        else:
            order = [
                int(c) for c in (stats.top if s.descending else stats.bottom)(None, by=s.sort_by).channels
            ]
        rows = stats.rows()
        table = f"<b>{html.escape(s.stage)}</b> · {len(rows)} channels (click a row to zoom it)" + html_table(
            [rows[i] for i in order], limit=64, channels=order, selected=[i == s.channel for i in order]
        )
        dead = [
            {"stage": name, **{k: summary[k] for k in ("channels", "dead", "constant")}}
            for name in scene.maps
            for summary in [scene.stats(name).summary()]
        ]
        by = s.sort_by if s.sort_by != "channel" else "mean"
        values = stats.values(by)
        bars = bar_chart(
            [float(values[i]) for i in order],
            [f"channel {i}" for i in order],
            title=f"{by} per channel, sorted by {s.sort_by}",
            channels=order,
        )
        counts = scene.cached(("histogram", s.stage), lambda: histogram(scene.fmap(), bins=64))
        edges = counts.edges
        hist = bar_chart(
            [float(c) for c in counts.counts],
            [f"{edges[i]:.3g} to {edges[i + 1]:.3g}" for i in range(len(counts.counts))],
            title=f"values of {s.stage}"
            + (f" ({counts.nonfinite} NaN/inf left out)" if counts.nonfinite else ""),
            color="#55a868",
        )
        return StatsData(table, "<b>Dead channels per map</b>" + html_table(dead), bars, hist)

    def update(self, frame: Frame) -> None:
        data = self.data(frame)
        if data is None or data == self._shown:
            return
        self._shown = data
        for widget, value in (
            (self.stats_table, data.table),
            (self.dead_table, data.dead),
            (self.stats_figures.children[0], data.bars),
            (self.stats_figures.children[1], data.histogram),
        ):
            if widget.value != value:
                widget.value = value
