"""The Grid tab: a page (or the top K) of channels, the zoomed channel with its colour bar, and its overlay.

Hovering the grid shows the channel, position and value under the pointer; clicking a tile zooms that channel.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import ipywidgets as widgets

from ..elements import ImageView
from ..engine import GRID_SIZE, Frame, Grid, Scene
from . import View, register
from .images import jpeg, show_grid
from .visualisation import VisBox, VisData, vis_code, visualise

__all__ = ["GridData", "GridView"]

ZOOM_WIDTH = 320
"""Display width of the zoomed channel, in CSS pixels (the map itself is sent at its own size)."""


@dataclass(frozen=True, eq=False)
class GridData:
    """What the Grid tab shows."""

    grid: Grid
    zoom: Grid
    overlay: bytes
    title: str
    zoom_title: str
    fmap: object  # the shown (C, H, W) map, for the values under the pointer
    vis: VisData | None = None  # the zoomed channel's optimised image, when the Visualise button asked for it


def _arguments(grid: Grid) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in grid.options)


def _title(scene: Scene, grid: Grid) -> str:
    s, channels = scene.state, grid.layout.channels
    count = scene.maps[s.stage].shape[1]
    shown = (
        f"top {len(channels)} by {s.top_by}"
        if s.channel_mode == "top"
        else f"channels {channels[0]}-{channels[-1]}"
    )
    return f"{s.stage} · {shown} of {count} · {grid.layout.norm} scale"


@register
class GridView(View):
    title = "Grid"
    quick = True

    def __init__(self, controls) -> None:
        super().__init__(controls)
        self.grid_view = ImageView(
            width=GRID_SIZE,
            clickable=True,
            value_at=self._value,
            on_click=lambda c: controls.set("channel", c),
        )
        self.grid_view.add_class("explorer-grid")
        self.zoom_view = ImageView(width=ZOOM_WIDTH, value_at=self._value)
        self.zoom_view.add_class("explorer-zoom")
        self.overlay_image = widgets.Image(
            format="jpeg", layout=widgets.Layout(width="224px", display="none")
        )
        self.vis = VisBox(controls)
        self.widget = widgets.HBox(
            [
                self.grid_view,
                widgets.VBox([self.zoom_view, self.overlay_image, controls.alpha_slider, self.vis.widget]),
            ],
            layout=widgets.Layout(align_items="flex-start", flex_flow="row nowrap"),
        )
        self.grid_view.layout = widgets.Layout(
            flex="0 1 auto", min_width="0"
        )  # narrows; the zoom stays beside
        self._shown: GridData | None = None

    def _value(self, channel: int, row: int, col: int) -> float:
        return float(self._shown.fmap[channel, row, col])

    @staticmethod
    def compute(scene: Scene) -> GridData:
        data = GridView._maps(scene)
        vis = visualise(scene, GridView.title, lambda partial: dataclasses.replace(data, vis=partial))
        return dataclasses.replace(data, vis=vis) if vis is not None else data

    @staticmethod
    def _maps(scene: Scene) -> GridData:
        from ...render import overlay

        s = scene.state
        fmap = scene.fmap()
        grid = scene.grid()
        zoom = scene.grid(channels=[s.channel], labels=False, pad=0, max_size=ZOOM_WIDTH)
        unaligned = scene.maps.unaligned.get(s.stage)
        if unaligned:  # not a map of the image: no overlay, and the titles say why
            note = f" · not an image-aligned map ({unaligned})"
            return GridData(
                grid,
                zoom,
                b"",
                _title(scene, grid) + note,
                f"{s.stage} · channel {s.channel}",
                fmap,
            )
        over = scene.cached(
            ("overlay", s.stage, s.channel, s.alpha, s.cmap, s.clip),
            lambda: jpeg(overlay(scene.view, fmap[s.channel], alpha=s.alpha, cmap=s.cmap, clip=s.clip)),
        )
        return GridData(grid, zoom, over, _title(scene, grid), f"{s.stage} · channel {s.channel}", fmap)

    @staticmethod
    def code(frame: Frame, data: GridData) -> tuple[list[str], list[int], bytes]:
        s, grid = frame.state, data.grid
        indices = [s["image_index"]] + ([s["compare_image_index"]] if s["compare"] == "images" else [])
        return (
            [
                f"maps = bb.capture(bb.pixel_values(images), layers={list(frame.maps)!r})",
                f"grid = explorer.render_grid(maps[{grid.stage!r}][0].float(), {_arguments(grid)})",
                "png = explorer.to_png(grid)",
                *vis_code(data.vis),
            ],
            indices,
            grid.png,
        )

    def update(self, frame: Frame) -> None:
        data, old = self.data(frame), self._shown
        self.grid_view.marked = frame.state.get("channel", -1)  # the zoomed channel, outlined in the grid
        if data is None or data is old:
            return
        self._shown = data
        if old is None or data.grid is not old.grid:
            show_grid(self.grid_view, data.grid, data.title)
        if old is None or data.zoom is not old.zoom:
            show_grid(self.zoom_view, data.zoom, data.zoom_title)
        if old is None or data.overlay is not old.overlay:
            self.overlay_image.value = data.overlay
            self.overlay_image.layout.display = "" if data.overlay else "none"  # no broken-image icon
        self.vis.update(data.vis)
