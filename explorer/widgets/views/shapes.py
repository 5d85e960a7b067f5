"""The Shapes tab: shape, dtype, memory, reduction and device of every captured map, and the input's shape."""

from __future__ import annotations

import html

import ipywidgets as widgets

from ..engine import Frame, Scene
from . import View, register
from .html import format_bytes, html_table

__all__ = ["ShapesView"]


@register
class ShapesView(View):
    title = "Shapes"
    quick = True

    def __init__(self, controls) -> None:
        super().__init__(controls)
        self.shapes_table = self.widget = widgets.HTML()

    @staticmethod
    def compute(scene: Scene) -> str:
        backbone = scene.backbone
        height, width = backbone.preprocess.input_size
        rows = [
            {
                "map": name,
                "shape": tuple(fmap[:1].shape),
                "dtype": str(fmap.dtype).replace("torch.", ""),
                "memory": format_bytes(fmap[:1].numel() * fmap.element_size()),
                "reduction": backbone.stage(name).reduction
                if name in backbone.stage_names
                else round(height / fmap.shape[-2]),
                "device": str(fmap.device),
            }
            for name, fmap in scene.maps.items()
        ]
        return f"<b>Input</b> (1, 3, {height}, {width}) · {html.escape(backbone.spec)}" + html_table(rows)

    def update(self, frame: Frame) -> None:
        data = self.data(frame)
        if data is not None and data != self.shapes_table.value:
            self.shapes_table.value = data
