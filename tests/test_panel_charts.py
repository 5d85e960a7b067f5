"""The Statistics tab's SVG charts, parsed: every bar's height is its value on the chart's scale, every bar's
tooltip names its value, and the bars follow the table's order, on the panel's real statistics."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import explorer
from explorer.widgets.views.charts import bar_chart

SVG = "{http://www.w3.org/2000/svg}"


def _bars(svg: str) -> list[dict]:
    """Each bar as ``{"top", "height", "channel", "tip"}``, plus the chart's zero line under key ``zero``."""
    root = ET.fromstring(svg)
    zero = float(root.find(f"{SVG}line").get("y1"))
    bars = []
    for rect in root.iter(f"{SVG}rect"):
        bars.append(
            {
                "top": float(rect.get("y")),
                "height": float(rect.get("height")),
                "channel": rect.get("data-channel"),
                "tip": rect.find(f"{SVG}title").text,
                "zero": zero,
                "fill": rect.get("fill"),
            }
        )
    return bars


def _signed_heights(bars: list[dict]) -> np.ndarray:
    """Each bar's extent above the zero line (negative below it), in pixels."""
    return np.array([b["height"] if b["top"] < b["zero"] - 1e-6 else -b["height"] for b in bars])


@pytest.mark.parametrize(
    "values",
    [[3.0, 1.5, 0.75, 0.0], [2.0, -1.0, 0.5, -3.0], [1090.0, 3.0, 12.5], [-0.5, -2.5]],
)
def test_bar_heights_are_the_values_on_one_scale(values):
    svg = bar_chart(
        values, [f"channel {i}" for i in range(len(values))], title="mean", channels=range(len(values))
    )
    bars = _bars(svg)
    heights = _signed_heights(bars)
    nonzero = [i for i, v in enumerate(values) if v != 0]
    scale = heights[nonzero[0]] / values[nonzero[0]]  # pixels per unit, the same for every bar
    for i, value in enumerate(values):
        expected = value * scale if value else 0.0
        assert heights[i] == pytest.approx(expected, abs=0.51), (i, value)  # zero bars are drawn 0.5 px tall
        assert bars[i]["tip"] == f"channel {i}: {value:.4g}" and bars[i]["channel"] == str(i)
    top = max(max(values), 0.0) - min(min(values), 0.0)
    assert abs(scale) * top == pytest.approx(220 - 22 - 18, rel=1e-3)  # the whole plot height spans the range


def test_nonfinite_values_get_a_full_height_magenta_bar():
    bars = _bars(bar_chart([1.0, math.nan, 2.0], ["a", "b", "c"], title="t"))
    assert bars[1]["fill"] == "#f0f" and bars[1]["height"] == 220 - 22 - 18
    assert _signed_heights([bars[0], bars[2]]) == pytest.approx(np.array([1.0, 2.0]) * bars[2]["height"] / 2)


def test_the_panel_charts_show_the_statistics_and_histogram_of_the_map_on_show():
    app = explorer.Explorer("resnet18", pretrained=False, device="cpu", out_indices=[2], display=False)
    try:
        app.sort_by, app.descending = "std", True
        app.tab = "Statistics"
        view = app.views["Statistics"]
        fmap = app.feature_maps[app.stage][0]
        stats = explorer.channel_stats(fmap)
        order = stats.top(None, by="std").channels
        bars = _bars(view.stats_figures.children[0].value)
        assert [int(b["channel"]) for b in bars] == order.tolist()  # the table's order
        heights = _signed_heights(bars)
        expected = stats.std[order]
        np.testing.assert_allclose(
            heights / heights[0] * expected[0], expected, atol=expected[0] * 0.51 / heights[0]
        )

        hist = explorer.histogram(fmap, bins=64)
        bars = _bars(view.stats_figures.children[1].value)
        heights = _signed_heights(bars)
        assert len(bars) == 64
        peak = int(hist.counts.argmax())
        np.testing.assert_allclose(
            heights / heights[peak] * hist.counts[peak],
            hist.counts,
            atol=hist.counts[peak] * 0.51 / heights[peak],
        )
    finally:
        app.close()
