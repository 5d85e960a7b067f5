"""The CAM tab: a class-activation map of the stage on show, drawn over the image as the model saw it.

The tab explains the panel's image at the stage chosen in **Show** with :func:`explorer.cam`, for the method and
target picked in its own boxes; the target list is the head's top-5 predictions with their names (or, for a
backbone without a head, the stage's total activation). A CAM needs its own forward and backward pass, so it runs
in the tab's thread while the kernel stays free, and only while the tab is on show; a change of colour map or
opacity redraws the overlay without running the model. Errors go to the tab's line and the panel's status line;
the map on show stays.

Example::

    >>> app = explorer.Explorer()
    >>> app.tab = "CAM"; app.views["CAM"].wait()
    >>> app.views["CAM"].result.target_name
    'tiger cat'
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import ipywidgets as widgets

from ..controller import Frame, Scene
from . import View, register
from .html import status_html
from .images import jpeg
from .worker import TabWorker

__all__ = ["CAMTarget", "CAMView"]

TOP = "top prediction"


@dataclass(frozen=True, eq=False)
class CAMTarget:
    """What the tab is asked to explain, and how to draw it: the panel's backbone, image, stage and colours."""

    backbone: object
    image: object
    stage: str
    cmap: str
    alpha: float


@register
class CAMView(View):
    title = "CAM"

    def __init__(self, controls) -> None:
        super().__init__(controls)
        self.method_box = widgets.Dropdown(
            description="Method", options=["gradcam"], value="gradcam", layout=widgets.Layout(width="220px")
        )
        self.target_box = widgets.Dropdown(
            description="Target", options=[(TOP, None)], value=None, layout=widgets.Layout(width="380px")
        )
        self.cam_image = widgets.Image(format="jpeg", layout=widgets.Layout(width="448px"))
        self.cam_status = widgets.HTML(status_html("ok", "Where the prediction rests, at the stage on show."))
        self.widget = widgets.VBox(
            [widgets.HBox([self.method_box, self.target_box]), self.cam_status, self.cam_image]
        )
        self.result = None  # the explorer.CAM on show
        self.worker = TabWorker("explorer-cam", on_error=self._failed)
        self._target: CAMTarget | None = None
        self._key: tuple | None = None  # what self.result explains
        self._requests = 0
        self._filling = False  # set while the tab fills its own boxes
        self.method_box.observe(self._on_box, "value")
        self.target_box.observe(self._on_box, "value")

    @staticmethod
    def compute(scene: Scene) -> CAMTarget:
        s = scene.state
        return CAMTarget(scene.backbone, scene.image, s.stage, s.cmap, float(s.alpha))

    def update(self, frame: Frame) -> None:
        target = self.data(frame)
        if target is None or target is self._target:
            return
        previous, self._target = self._target, target
        if previous is None or (previous.backbone, previous.image) != (target.backbone, target.image):
            self._fill(self.target_box, [(TOP, None)], None)  # new predictions: back to the top one
        self._request()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the map being drawn; True when it is on show (or failed)."""
        return self.worker.wait(timeout)

    def _on_box(self, _change) -> None:
        if not self._filling and self._target is not None:
            self._request()

    def _request(self) -> None:
        self._requests += 1
        number, target = self._requests, self._target
        method, wanted = self.method_box.value, self.target_box.value
        self.worker.run(lambda: self._draw(number, target, method, wanted))

    def _fill(self, box: widgets.Dropdown, options, value) -> None:
        self._filling = True
        try:
            box.options = options
            box.value = value
        finally:
            self._filling = False

    def _failed(self, err: Exception) -> None:
        message = str(err).strip() or type(err).__name__
        self.cam_status.value = status_html("error", f"<b>Error:</b> {html.escape(message)}")
        self.controls.report(err)

    def _draw(self, number: int, target: CAMTarget, method: str, wanted: int | None) -> None:
        if number != self._requests:
            return  # a newer request supersedes this one
        from ...cam import cam, cam_methods
        from ...render import overlay

        if len(self.method_box.options) == 1:
            self._fill(self.method_box, cam_methods(), method)
        key = (id(target.backbone), id(target.image), target.stage, method, wanted)
        if key != self._key:
            self.cam_status.value = status_html("busy", f"Drawing {html.escape(method)} at {target.stage}...")
            self.result = cam(target.backbone, target.image, stage=target.stage, target=wanted, method=method)
            self._key = key
        result = self.result
        picture = overlay(
            target.image,
            result.map,
            alpha=target.alpha,
            cmap=target.cmap,
            preprocess=target.backbone.preprocess,
        )
        self.cam_image.value = jpeg(picture)
        first = [(TOP, None)] if result.top5 else [(result.target_name, None)]
        options = first + [(f"{name} ({p:.1%})", index) for index, name, p in result.top5]
        if list(self.target_box.options) != options:
            self._fill(self.target_box, options, wanted if wanted in dict(options).values() else None)
        self.cam_status.value = status_html(
            "ok",
            f"{html.escape(result.method)} at <b>{html.escape(result.stage)}</b> explains "
            f"<b>{html.escape(result.target_name)}</b>",
        )
