"""plotly and matplotlib figures: the data they carry, their hover text, and no pyplot global state."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import explorer
from explorer.figures import heatmap_figure, histogram_figure, stage_grid_figure, stat_bar_figure
from explorer.histograms import histogram
from explorer.render import render_grid
from explorer.stats import channel_stats

NAN = float("nan")


def test_heatmap_carries_values_and_hover_text():
    fmap = torch.arange(12.0).view(3, 4)
    figure = heatmap_figure(fmap, title="channel 5")
    trace = figure.data[0]
    np.testing.assert_array_equal(np.asarray(trace.z), fmap.numpy())
    assert list(trace.x) == [0, 1, 2, 3] and list(trace.y) == [0, 1, 2]
    assert "row %{y}" in trace.hovertemplate and "column %{x}" in trace.hovertemplate
    assert "value %{z" in trace.hovertemplate
    assert figure.layout.yaxis.autorange == "reversed"  # row 0 on top, as in the image
    assert figure.layout.title.text == "channel 5"


def test_heatmap_of_a_large_map_is_subsampled_with_true_coordinates():
    fmap = torch.randn(300, 200)
    trace = heatmap_figure(fmap[None, None]).data[0]
    z = np.asarray(trace.z)
    assert z.shape == (100, 67)
    assert list(trace.x[:3]) == [0, 3, 6] and trace.y[-1] == 297
    assert z[1, 2] == pytest.approx(float(fmap[3, 6]))


def test_heatmap_reports_nonfinite_cells():
    fmap = torch.tensor([[NAN, 1.0], [float("inf"), 2.0]])
    figure = heatmap_figure(fmap)
    z = np.asarray(figure.data[0].z, dtype=float)
    assert np.isnan(z[0, 0]) and np.isnan(z[1, 0]) and z[1, 1] == 2.0
    assert "2 NaN/inf cells" in figure.layout.title.text
    with pytest.raises(ValueError, match=r'maps\["layer1"\]\[0, 5\]'):
        heatmap_figure(torch.zeros(3, 2, 2))


def test_stat_bar_is_sorted_with_channel_on_hover():
    fmap = torch.tensor([1.0, 3.0, 2.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    stats = channel_stats(fmap)
    figure = stat_bar_figure(stats, by="mean")
    bar = figure.data[0]
    assert list(bar.y) == [3.0, 2.0, 1.0]
    assert list(bar.customdata) == [1, 2, 0]
    assert "channel %{customdata}" in bar.hovertemplate and "mean" in bar.hovertemplate
    sorted_button, natural_button = figure.layout.updatemenus[0].buttons
    assert natural_button.args[0]["y"] == [[1.0, 3.0, 2.0]]
    assert sorted_button.args[0]["customdata"] == [[1, 2, 0]]
    unsorted = stat_bar_figure(stats, by="mean", sort=False).data[0]
    assert list(unsorted.x) == [0, 1, 2] and list(unsorted.y) == [1.0, 3.0, 2.0]
    top = stat_bar_figure(stats, by="mean", top=2).data[0]
    assert list(top.customdata) == [1, 2]


def test_stat_bar_of_a_difference_and_errors():
    diff = explorer.channel_difference(torch.zeros(2, 2, 2), torch.tensor([[[1.0]], [[3.0]]]).expand(2, 2, 2))
    assert list(stat_bar_figure(diff, by="mean_abs").data[0].customdata) == [1, 0]
    with pytest.raises(ValueError, match="Choose from"):
        stat_bar_figure(diff, by="sparsity")


def test_histogram_figure_counts():
    figure = histogram_figure(torch.tensor([0.0, 1.0, 2.0, 3.0, NAN]), bins=3, log=True)
    bar = figure.data[0]
    assert list(bar.y) == [1, 1, 2]
    np.testing.assert_allclose(bar.x, [0.5, 1.5, 2.5])
    np.testing.assert_allclose(bar.width, [1.0, 1.0, 1.0])
    assert figure.layout.yaxis.type == "log"
    assert "1 NaN/inf values" in figure.layout.title.text
    again = histogram_figure(histogram(torch.arange(4.0), bins=2))
    assert list(again.data[0].y) == [2, 2]


def test_stage_grid_figure_without_pyplot_state():
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    before = plt.get_fignums()
    fmap = torch.arange(16.0).view(4, 2, 2) - 4.0
    figure = stage_grid_figure(fmap, channels="all", title="stage", norm="stage")
    assert isinstance(figure, Figure)
    assert plt.get_fignums() == before
    grid_axes, bar_axes = figure.axes
    assert grid_axes.get_title() == "stage"
    np.testing.assert_array_equal(
        grid_axes.images[0].get_array(), render_grid(fmap, "all", norm="stage", pad=2)
    )
    assert bar_axes.get_ylim() == pytest.approx((-4.0, 11.0))
    assert [text.get_text() for text in grid_axes.texts] == ["0", "1", "2", "3"]
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    assert Image.open(io.BytesIO(buffer.getvalue())).size[0] > 100


def test_stage_grid_figure_per_channel_colour_bar():
    figure = stage_grid_figure(torch.randn(3, 4, 4), norm="channel", labels=False)
    grid_axes, bar_axes = figure.axes
    assert bar_axes.get_ylim() == pytest.approx((0.0, 1.0))
    assert "min to max" in bar_axes.get_ylabel()
    assert not grid_axes.texts


def test_figures_of_a_real_stage(default_backbone, samples):
    maps = default_backbone.extract(samples["coffee"])
    figure = stage_grid_figure(maps["blocks.2"][0], channels="top:16", norm="symmetric", title="blocks.2")
    assert figure.axes[1].get_ylim()[0] == pytest.approx(-figure.axes[1].get_ylim()[1])
    heat = heatmap_figure(maps["blocks.0"][0, 3])
    assert np.asarray(heat.data[0].z).shape == (112, 112)
    bars = stat_bar_figure(channel_stats(maps["blocks.1"]), by="std")
    assert len(bars.data[0].y) == 24


def test_heatmap_takes_matplotlib_and_plotly_colour_maps():
    import matplotlib

    figure = heatmap_figure(torch.arange(12.0).reshape(3, 4), cmap="magma")
    scale = figure.data[0].colorscale
    first = tuple(round(c * 255) for c in matplotlib.colormaps["magma"](0.0)[:3])
    assert scale[0][0] == 0.0 and scale[0][1] == "rgb({},{},{})".format(*first)
    assert scale[-1][0] == 1.0 and len(scale) == 11
    plotly_scale = heatmap_figure(torch.ones(2, 2), cmap="Viridis").data[0].colorscale
    assert plotly_scale[0][1] == "#440154"  # plotly's own Viridis
