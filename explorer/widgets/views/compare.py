"""The Compare tab: two images, or two checkpoints, side by side on one colour scale, their difference A - B on
a symmetric scale with its colour bar, the similarity of every captured stage, and the channels that differ most.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import ipywidgets as widgets

from ...vocabulary import DIVERGING_CMAP
from ..elements import ImageView
from ..engine import Frame, Grid, Scene
from . import View, register
from .html import html_table
from .images import show_grid

__all__ = ["CompareData", "CompareView"]


@dataclass(frozen=True, eq=False)
class CompareData:
    """What the Compare tab shows; ``grids`` is None with comparing off."""

    grids: tuple[tuple[str, Grid], ...] | None
    table: str
    similarity: dict


@register
class CompareView(View):
    title = "Compare"
    quick = True

    def __init__(self, controls) -> None:
        super().__init__(controls)
        self.panes = [ImageView(width=300) for _ in range(3)]
        self.compare_grids = widgets.HBox(
            self.panes, layout=widgets.Layout(display="none", flex_flow="row wrap")
        )
        self.compare_table = widgets.HTML()
        self.widget = widgets.VBox(
            [
                widgets.HBox([controls.compare_mode_box, controls.compare_image_box]),
                widgets.HBox([controls.compare_model_box, controls.compare_pretrained_box]),
                self.compare_grids,
                self.compare_table,
            ]
        )
        self._shown: CompareData | None = None

    @staticmethod
    def compute(scene: Scene) -> CompareData:
        from ...render import value_range
        from ...stats import channel_difference, stage_similarity

        s = scene.state
        if s.compare == "off":
            return CompareData(None, "<i>Choose Images or Checkpoints to compare.</i>", {})
        fmap = scene.fmap()
        if s.compare == "images":
            other = scene.cached(("fmap-b", s.stage), lambda: scene.maps[s.stage][1].float())
            names = scene.gallery.names
            title_a, title_b = names[s.image_index], names[s.compare_image_index]
            pairs = {name: (m[:1], m[1:2]) for name, m in scene.maps.items()}
        else:
            other = scene.cached(("fmap-b", s.stage), lambda: scene.compare_maps[s.stage][0].float())
            title_a = f"{s.model} ({'pretrained' if s.pretrained else 'random'})"
            title_b = f"{s.compare_model or s.model} ({'pretrained' if s.compare_pretrained else 'random'})"
            pairs = {name: (scene.maps[name][:1], m) for name, m in scene.compare_maps.items()}
        similarity = scene.cached(
            ("similarity", s.compare),
            lambda: {name: stage_similarity(a.float(), b.float()) for name, (a, b) in pairs.items()},
        )
        vrange = value_range([fmap, other], clip=s.clip) if s.norm == "global" else None
        grid_a = scene.grid(fmap, name=f"A:{s.stage}", vrange=vrange, max_size=480)
        grid_b = scene.grid(other, grid_a.layout.channels, name=f"B:{s.stage}", vrange=vrange, max_size=480)
        diff = scene.grid(
            scene.cached(("difference", s.stage), lambda: fmap - other),
            grid_a.layout.channels,
            name=f"A-B:{s.stage}",
            norm="symmetric",
            cmap=DIVERGING_CMAP,
            clip=None,
            max_size=480,
        )
        changed = channel_difference(fmap, other).top(8, by="mean_abs")
        rows = [
            {
                "stage": name,
                "cosine": round(v["cosine"], 4),
                "linear CKA": round(v["cka"], 4),
                "debiased CKA": round(v["cka_debiased"], 4),  # unbiased HSIC: no upward bias for few samples
            }
            for name, v in similarity.items()
        ]
        table = (
            "<b>Similarity per stage</b>"
            + html_table(rows)
            + f"<b>Channels that differ most at {html.escape(s.stage)}</b>"
            + html_table(
                [
                    {"channel": int(c), "mean |A−B|": float(v)}
                    for c, v in zip(changed.channels, changed.values)
                ]
            )
        )
        grids = ((f"A: {title_a}", grid_a), (f"B: {title_b}", grid_b), ("A − B", diff))
        return CompareData(grids, table, similarity)

    @staticmethod
    def code(frame: Frame, data: CompareData) -> tuple[list[str], list[int], bytes] | None:
        from ..engine.codegen import backbone_line

        s = frame.state
        if data.grids is None:
            return None
        diff = data.grids[2][1]
        names = list(frame.maps)
        arguments = ", ".join(f"{k}={v!r}" for k, v in diff.options)
        lines = [f"maps = bb.capture(bb.pixel_values(images), layers={names!r})"]
        if s["compare"] == "images":
            lines.append(f"a, b = maps[{s['stage']!r}][0].float(), maps[{s['stage']!r}][1].float()")
            indices = [s["image_index"], s["compare_image_index"]]
        else:
            spec = s["compare_model"] or s["model"]
            b = frame.compare_maps
            lines += backbone_line(
                "bb_b", spec, s["compare_pretrained"], str(frame.backbone.device), frame.backbone.precision
            )
            lines.append(f"maps_b = bb_b.capture(bb_b.pixel_values(images), layers={list(b)!r})")
            lines.append(f"a, b = maps[{s['stage']!r}][0].float(), maps_b[{s['stage']!r}][0].float()")
            indices = [s["image_index"]]
        lines += [f"grid = explorer.render_grid(a - b, {arguments})  # A - B", "png = explorer.to_png(grid)"]
        return lines, indices, diff.png

    def update(self, frame: Frame) -> None:
        data, old = self.data(frame), self._shown
        if data is None or data is old:
            return
        self._shown = data
        self.compare_grids.layout.display = "none" if data.grids is None else None
        for i, (pane, (title, grid)) in enumerate(zip(self.panes, data.grids or ())):
            if old is None or old.grids is None or old.grids[i][1] is not grid or old.grids[i][0] != title:
                show_grid(pane, grid, title)
        if self.compare_table.value != data.table:
            self.compare_table.value = data.table
