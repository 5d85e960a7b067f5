"""The Visualise button and its picture, shared by the Grid and Dataset tabs: the image the shown channel responds
to most (:func:`explorer.visualize`), optimised in the engine's worker and shown refining live.

The button sets the state's ``vis_target`` to the (stage, channel) on show; a view's ``compute`` then calls
:func:`visualise` in the worker, which hands each preview to the kernel's thread through
:meth:`~explorer.widgets.engine.Scene.preview` (the engine's frame path) and stops as soon as the user changes
anything (:meth:`~explorer.widgets.engine.Scene.changed`): showing another channel cancels it, and the next round
of work redoes what is still asked for. A finished picture is kept by content (checkpoint, stage, channel,
method, steps, size), so the other tab shows it at once. On random weights the caption says the picture means
nothing.

Example::

    >>> app = explorer.Explorer(vis_steps=32, vis_size=64)
    >>> app.views["Grid"].vis.button.click()     # the zoomed channel's optimised image
    >>> app.controller.frame.views["Grid"].vis.activation > 0
    True
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets

from ...vocabulary import VIS_METHODS
from ..engine import Scene

__all__ = ["SEED", "VisBox", "VisData", "asked", "vis_code", "visualise"]

SEED = 0
"""The seed of the panel's pictures (the code written for them states it)."""

WIDTH = 224
"""Display width of the picture, in CSS pixels."""

PREVIEWS = 16
"""Previews shown while one picture optimises."""

STEPS = (32, 64, 128, 256, 512)
"""The step counts offered (any count from 1 to 4096 can be set in code)."""


@dataclass(frozen=True, eq=False)
class VisData:
    """One picture on show: ``png``, what it is (``stage``, ``channel``, the settings), ``done`` of ``steps``, and
    ``activation`` (None while it optimises: the channel's mean on the finished 8-bit image)."""

    stage: str
    channel: int
    method: str
    steps: int
    size: int
    done: int
    png: bytes
    activation: float | None
    random: bool

    @property
    def caption(self) -> str:
        """What the picture is, as HTML."""
        what = (
            f"{html.escape(self.stage)} · channel {self.channel}: the optimised image ({self.method}, "
            f"{self.size} px, seed {SEED})"
        )
        if self.activation is None:
            what += f" · step {self.done} of {self.steps}..."
        else:
            what += f" · {self.steps} steps · activation {self.activation:.3g}"
        if self.random:
            what += (
                '<br><b class="random">RANDOM WEIGHTS</b>: this picture means nothing: the channel has learnt '
                "nothing, so the image shows only the architecture's biases."
            )
        else:
            what += (
                "<br>An image that drives the channel hard, not what it means: read it beside the exemplars."
            )
        return what


class _Stopped(Exception):
    """The user changed a choice while the picture optimised."""


def _png(image) -> bytes:
    import numpy as np

    from ...render import to_png

    return to_png(np.asarray(image))


def asked(scene: Scene) -> bool:
    """Whether the Visualise button asked for the (stage, channel) on show."""
    s = scene.state
    return s.vis_target is not None and tuple(s.vis_target) == (s.stage, s.channel)


def visualise(scene: Scene, title: str, show: Callable[[VisData], Any]) -> VisData | None:
    """In the worker: the picture of the channel on show when it was asked for (None otherwise, or when the user
    changed a choice meanwhile). Each preview is shown as ``show(partial)``, the data of view ``title``."""
    if not asked(scene):
        return None
    s, backbone = scene.state, scene.backbone
    settings = (s.stage, s.channel, s.vis_method, s.vis_steps, s.vis_size)

    def data(image, done: int, activation: float | None) -> VisData:
        return VisData(*settings, done, _png(image), activation, backbone.weights == "random")

    def preview(done: int, images) -> None:
        if scene.changed():
            raise _Stopped
        message = (
            f"Visualising <b>{html.escape(s.stage)}</b> channel {s.channel}: step {done} of {s.vis_steps}..."
        )
        scene.preview(title, show(data(images[0], done, None)), message, done, s.vis_steps)

    def run() -> VisData:
        from ...feature_vis import visualize

        scene.runtime.count_run()
        result = visualize(
            backbone,
            stage=s.stage,
            channel=s.channel,
            steps=s.vis_steps,
            size=s.vis_size,
            seed=SEED,
            method=s.vis_method,
            preview=preview,
            preview_every=max(1, s.vis_steps // PREVIEWS),
        )
        return data(result.image, s.vis_steps, result.activation)

    try:
        return scene.keyed(("vis", scene.backbone_key, *settings, SEED), run)
    except _Stopped:
        return None


def vis_code(vis: VisData | None) -> list[str]:
    """Lines that make the finished picture on show (binding ``vis_png`` to its bytes); none while it runs."""
    if vis is None or vis.activation is None:
        return []
    return [
        f"vis = explorer.visualize(bb, stage={vis.stage!r}, channel={vis.channel}, steps={vis.steps}, "
        f"size={vis.size}, seed={SEED}, method={vis.method!r})",
        "vis_png = explorer.to_png(np.asarray(vis.image))",
    ]


class VisBox:
    """The Visualise button, its method and steps, and the picture with its caption (``widget``)."""

    def __init__(self, controls) -> None:
        state = controls.state
        self.controls = controls
        self.button = widgets.Button(
            description="Visualise",
            icon="magic",
            tooltip="Optimise the image this channel responds to most (explorer.visualize); it refines live",
            layout=widgets.Layout(width="auto"),
        )
        self.button.on_click(lambda _button: controls.set("vis_target", (state.stage, state.channel)))
        self.method_box = widgets.Dropdown(options=VIS_METHODS, layout=widgets.Layout(width="80px"))
        self.steps_box = widgets.Dropdown(
            options=[(f"{n} steps", n) for n in STEPS], layout=widgets.Layout(width="110px")
        )
        controls.link("vis_method", self.method_box)
        controls.link("vis_steps", self.steps_box)
        self.image = widgets.Image(
            format="png", layout=widgets.Layout(width=f"{WIDTH}px", height=f"{WIDTH}px", display="none")
        )
        self.caption = widgets.HTML(layout=widgets.Layout(width=f"{WIDTH}px"))
        self.widget = widgets.VBox(
            [widgets.HBox([self.button, self.method_box, self.steps_box]), self.image, self.caption]
        )
        self.widget.add_class("explorer-vis")
        self._shown: VisData | None = None

    def update(self, vis: VisData | None) -> None:
        """Show ``vis`` (None hides the picture); writes only what changed."""
        if vis is self._shown:
            return
        self._shown = vis
        if vis is None:
            self.image.layout.display = "none"
            self.caption.value = ""
            return
        self.image.value = vis.png
        self.image.layout.display = ""
        self.caption.value = f'<div class="explorer-vis-caption">{vis.caption}</div>'
