"""The CAM tab: a class-activation map of the stage on show, drawn over the image as the model saw it.

The tab explains the panel's image at the stage chosen in **Show** with :func:`explorer.cam`, for the state's
``cam_method`` and ``cam_target`` (a class index, or None for the top prediction); the target list is the head's
top-5 predictions with their names, plus the chosen class when it is not among them (for a backbone without a
head: the stage's total activation). The map is computed in the engine's worker, only while the tab is on show,
and kept by content (checkpoint, image, stage, method, target): a change of colour map or opacity redraws the
overlay without running the model. A refused method or target goes back, with the reason on the status line.

Example::

    >>> app = explorer.Explorer()
    >>> app.tab = "CAM"
    >>> app.views["CAM"].result.target_name
    'tiger cat'
    >>> app.cam_method = "eigencam"; app.cam_target = 281
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import ipywidgets as widgets

from ..engine import Frame, Scene
from . import View, register
from .html import status_html

__all__ = ["CAMData", "CAMView"]

TOP = "top prediction"


@dataclass(frozen=True, eq=False)
class CAMData:
    """What the CAM tab shows: the :class:`explorer.CAM`, its overlay as PNG, and the choices to offer."""

    result: object
    png: bytes
    methods: tuple[str, ...]
    targets: tuple[tuple[str, int | None], ...]
    alpha: float
    cmap: str


def _targets(result, chosen: int | None) -> tuple[tuple[str, int | None], ...]:
    first = [(TOP, None)] if result.top5 else [(result.target_name, None)]
    options = first + [(f"{name} ({p:.1%})", index) for index, name, p in result.top5]
    if chosen is not None and chosen not in {value for _, value in options}:
        options.append((str(result.target_name), chosen))  # the chosen class stays offered: no silent revert
    return tuple(options)


@register
class CAMView(View):
    title = "CAM"

    def __init__(self, controls) -> None:
        super().__init__(controls)
        self.method_box = widgets.Dropdown(
            description="Method", options=["gradcam"], layout=widgets.Layout(width="220px")
        )
        self.target_box = widgets.Dropdown(
            description="Target", options=[(TOP, None)], layout=widgets.Layout(width="380px")
        )
        self.cam_image = widgets.Image(format="png", layout=widgets.Layout(width="448px", display="none"))
        self.cam_image.add_class("explorer-cam")
        self.cam_status = widgets.HTML(status_html("busy", "Drawing the class-activation map..."))
        self.widget = widgets.VBox(
            [widgets.HBox([self.method_box, self.target_box]), self.cam_status, self.cam_image]
        )
        self.method_link = controls.link("cam_method", self.method_box)
        self.target_link = controls.link("cam_target", self.target_box)
        controls.state.observe(self._offer, names="cam_method")
        self._offer({"new": controls.state.cam_method})  # built after a method was set from code
        self.result = None  # the explorer.CAM on show
        self._shown: CAMData | None = None

    def _offer(self, change) -> None:
        """A method set from code before the tab offered the list: offer it, so the box shows it."""
        if change["new"] not in self.method_box.options:
            self.method_link.set_options([*self.method_box.options, change["new"]])

    @staticmethod
    def compute(scene: Scene) -> CAMData:
        from ...class_activation import cam, cam_methods
        from ...render import overlay, to_png

        s = scene.state
        key = ("cam", scene.backbone_key, scene.image_key, s.stage, s.cam_method, s.cam_target)

        def run():
            scene.progress(f"Drawing {html.escape(s.cam_method)} at {html.escape(s.stage)}...", 3, 4)
            scene.runtime.count_run()
            return cam(scene.backbone, scene.image, stage=s.stage, target=s.cam_target, method=s.cam_method)

        result = scene.keyed(key, run)
        png = scene.keyed(
            (*key, s.alpha, s.cmap),
            lambda: to_png(
                overlay(
                    scene.image, result.map, alpha=s.alpha, cmap=s.cmap, preprocess=scene.backbone.preprocess
                )
            ),
        )
        return CAMData(result, png, tuple(cam_methods()), _targets(result, s.cam_target), s.alpha, s.cmap)

    @staticmethod
    def code(frame: Frame, data: CAMData) -> tuple[list[str], list[int], bytes]:
        s, result = frame.state, data.result
        return (
            [
                f"result = explorer.cam(bb, images[0], stage={result.stage!r}, target={s['cam_target']!r}, "
                f"method={result.method!r})",
                f"picture = explorer.overlay(images[0], result.map, alpha={data.alpha!r}, cmap={data.cmap!r}, "
                "preprocess=bb.preprocess)",
                "png = explorer.to_png(picture)",
            ],
            [s["image_index"]],
            data.png,
        )

    def update(self, frame: Frame) -> None:
        data = self.data(frame)
        if frame.status.error:
            self.cam_status.value = status_html("error", frame.status.error)
        if data is None or data is self._shown:
            return
        self._shown, self.result = data, data.result
        self.method_link.set_options(list(data.methods))
        self.target_link.set_options(list(data.targets))
        self.cam_image.value = data.png
        self.cam_image.layout.display = None
        if not frame.status.error:
            result = data.result
            self.cam_status.value = status_html(
                "ok",
                f"{html.escape(result.method)} at <b>{html.escape(result.stage)}</b> explains "
                f"<b>{html.escape(result.target_name)}</b>",
            )
