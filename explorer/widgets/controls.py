"""The panel's controls, each bound to one :class:`ExplorerState` trait through :class:`Link`.

A control sets its trait; the trait shows in its control. A value the state refuses (a ``TraitError`` from its
validation: a colour-map typo, a negative channel) goes to the status line, and the control shows the value still
in force, except a text box, which keeps the refused text (marked) for the user to fix; so does a name the engine
refuses (an unknown checkpoint). The choices a control offers (stage names, the gallery, the layers of the loaded model) come from each
new frame (:meth:`Controls.update`). No control writes to another, and nothing is silenced by a flag.

Example::

    >>> controls = Controls(ExplorerState(), report=print, add_upload=lambda name, data: None)
    >>> controls.cmap_box.value = "viridiss"      # refused
    Unknown colour map 'viridiss'. Closest names: viridis, viridis_r, cividis, cividis_r. Any matplotlib name works: "viridis", "magma", "RdBu_r", ...
    >>> controls.state.cmap, controls.cmap_box.value
    ('viridis', 'viridiss')
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import ipywidgets as widgets
from traitlets import TraitError

from ..vocabulary import page_count
from .elements import Upload
from .engine import Frame, Status
from .state import COMPARE_MODES, NORMS, PAGE_SIZES, PRECISIONS, SORT_KEYS, STAT_NAMES, ExplorerState
from .views.html import html_table, status_html

__all__ = ["Controls", "Link", "CMAPS"]

_log = logging.getLogger(__name__)

CMAPS = ("viridis", "magma", "inferno", "gray", "RdBu_r", "coolwarm", "jet", "cividis")
"""Colour maps offered in the box (any matplotlib name can be typed)."""


def _same(value):
    return value


class Link:
    """Binds ``widget.value`` to ``state.<name>`` both ways, through converters.

    A widget change sets the state; a refused value is reported and the widget shows the state again. A state
    change shows in the widget. :meth:`set_options` replaces a selection widget's options without the reset that
    ipywidgets makes on the way reaching the state.
    """

    def __init__(
        self,
        state: ExplorerState,
        name: str,
        widget: widgets.ValueWidget,
        report: Callable[[object], None],
        to_state: Callable = _same,
        to_widget: Callable = _same,
        trait: str = "value",
    ) -> None:
        self.state, self.name, self.widget, self.report = state, name, widget, report
        self.to_state, self.to_widget, self.trait = to_state, to_widget, trait
        widget.observe(self._from_widget, names=trait)
        state.observe(self.show, names=name)
        self.show()

    def _from_widget(self, change) -> None:
        self.widget.remove_class("explorer-refused")
        try:
            value = self.to_state(change["new"])
            if value is None:
                self.show()  # not a choice (an empty stage selection): the widget shows the state again
            else:
                setattr(self.state, self.name, value)
        except (TraitError, ValueError, IndexError) as err:
            self.report(err)
            self.show_refused(change["new"])

    def show_refused(self, value) -> None:
        """A text box keeps a refused ``value`` (marked, for the user to fix); other widgets show the state."""
        if not isinstance(self.widget, widgets.Text):
            self.show()
            return
        self.widget.unobserve(self._from_widget, names=self.trait)
        try:
            setattr(self.widget, self.trait, value)
            self.widget.add_class("explorer-refused")
        finally:
            self.widget.observe(self._from_widget, names=self.trait)

    def show(self, _change=None) -> None:
        """Make the widget show the state's value (showing it sets nothing back)."""
        self.widget.remove_class("explorer-refused")
        self.widget.unobserve(self._from_widget, names=self.trait)
        try:
            value = self.to_widget(getattr(self.state, self.name))
            if getattr(self.widget, self.trait) != value:
                setattr(self.widget, self.trait, value)
            elif isinstance(self.widget, widgets.Dropdown) and self.widget.index is None:
                values = [o[1] if isinstance(o, tuple) else o for o in self.widget.options]
                self.widget.index = values.index(value)  # None is a value too: select it (never a blank box)
        except (TraitError, ValueError, IndexError, TypeError):
            pass  # the widget does not offer the value (yet, or at all: the engine refuses it)
        finally:
            self.widget.observe(self._from_widget, names=self.trait)

    def set_options(self, options: Sequence) -> None:
        """New choices for a selection widget; it then shows the state's value."""
        if list(self.widget.options) == list(options):
            return
        self.widget.unobserve(self._from_widget, names=self.trait)
        try:
            self.widget.options = options
        finally:
            self.widget.observe(self._from_widget, names=self.trait)
        self.show()


def _dropdown(description: str, options, width: str = "170px") -> widgets.Dropdown:
    return widgets.Dropdown(
        options=options,
        description=description,
        layout=widgets.Layout(width=width),
        style={"description_width": "initial"},
    )


def _combobox(description: str, placeholder: str, width: str = "420px", options=()) -> widgets.Combobox:
    """A text box with suggestions that sends its value on Enter (or on leaving it), not on every key."""
    return widgets.Combobox(
        options=list(options),
        placeholder=placeholder,
        description=description,
        continuous_update=False,
        ensure_option=False,
        layout=widgets.Layout(width=width),
    )


class Controls:
    """Every control of the panel, linked to ``state``; ``report`` shows a refusal in the status line.

    ``header`` is the block above the tabs; the tabs lay out their own controls (``sort_box``,
    ``compare_mode_box``, ...) from here.
    """

    def __init__(self, state: ExplorerState, report: Callable[[object], None], add_upload: Callable) -> None:
        self.state, self.report = state, report
        self._stage_names: list[str] = []
        self._status: Status | None = None
        self._updates = 0
        self.links: dict[str, Link] = {}
        wide = widgets.Layout(width="auto")
        self.status_line = widgets.HTML(status_html("busy", "Starting: importing torch and timm..."))
        self.progress = widgets.IntProgress(
            value=0, min=0, max=4, bar_style="info", layout=widgets.Layout(width="120px")
        )
        self.model_box = _combobox(
            "Checkpoint", "default, resnet50, hf:..., hf-hub:..., /path/model.safetensors"
        )
        self.pretrained_box = widgets.Checkbox(
            description="pretrained", indent=False, layout=widgets.Layout(width="auto", margin="0 16px 0 4px")
        )
        self.device_box = _dropdown("Device", ["auto", "cpu"], "160px")
        self.precision_box = _dropdown("Precision", PRECISIONS, "190px")
        self.stage_select = widgets.SelectMultiple(
            options=[], rows=6, description="Stages", layout=widgets.Layout(width="260px")
        )
        self.stage_table = widgets.HTML()
        self.layer_box = _combobox("Add layer", "a layer name, then Enter")
        self.layers_box = widgets.TagsInput(allow_duplicates=False, layout=widgets.Layout(width="420px"))
        self.image_box = _dropdown("Image", [], "260px")
        self.upload = Upload(on_file=add_upload, on_refused=self._refused_upload, on_error=report)
        self.view_image = widgets.Image(format="jpeg", layout=widgets.Layout(width="224px", display="none"))
        self.shown_stage = _dropdown("Show", [], "260px")
        self.mode_box = widgets.ToggleButtons(
            options=[("Page", "page"), ("Top K", "top")], style={"button_width": "64px"}
        )
        self.page_slider = widgets.IntSlider(  # pages count from 1 on screen, from 0 in the state
            min=1, max=1, description="Page", continuous_update=True, layout=widgets.Layout(width="300px")
        )
        self.page_size_box = _dropdown("Per page", PAGE_SIZES, "150px")
        self.top_by_box = _dropdown("Top by", STAT_NAMES, "160px")
        self.norm_box = _dropdown("Norm", NORMS, "170px")
        self.cmap_box = _combobox("Colours", "", "200px", CMAPS)
        self.channel_box = widgets.IntText(description="Channel", layout=widgets.Layout(width="160px"))
        self.alpha_slider = widgets.FloatSlider(
            min=0.0, max=1.0, step=0.05, description="Opacity", layout=widgets.Layout(width="224px")
        )
        self.sort_box = _dropdown("Sort by", SORT_KEYS, "170px")
        self.descending_box = widgets.Checkbox(description="descending", indent=False, layout=wide)
        self.compare_mode_box = widgets.ToggleButtons(options=[(m.title(), m) for m in COMPARE_MODES])
        self.compare_image_box = _dropdown("Image B", [], "260px")
        self.compare_model_box = widgets.Text(
            placeholder="same checkpoint",
            description="Checkpoint B",
            continuous_update=False,
            layout=widgets.Layout(width="360px"),
            style={"description_width": "initial"},
        )
        self.compare_pretrained_box = widgets.Checkbox(description="B pretrained", indent=False, layout=wide)

        for name, widget in (
            ("model", self.model_box),
            ("pretrained", self.pretrained_box),
            ("device", self.device_box),
            ("precision", self.precision_box),
            ("stage", self.shown_stage),
            ("channel_mode", self.mode_box),
            ("page_size", self.page_size_box),
            ("top_by", self.top_by_box),
            ("norm", self.norm_box),
            ("cmap", self.cmap_box),
            ("channel", self.channel_box),
            ("alpha", self.alpha_slider),
            ("sort_by", self.sort_box),
            ("descending", self.descending_box),
            ("compare", self.compare_mode_box),
            ("compare_model", self.compare_model_box),
            ("compare_pretrained", self.compare_pretrained_box),
            ("image_index", self.image_box),
            ("compare_image_index", self.compare_image_box),
        ):
            self.link(name, widget)
        self.link("page", self.page_slider, lambda page: page - 1, lambda page: page + 1)
        self.link("out_indices", self.stage_select, self._indices, self._names)
        self.link("layers", self.layers_box, list, list)
        self.layer_box.observe(self._add_layer, names="value")
        state.observe(self._enable, names="channel_mode")
        self._enable()

        checkpoint_row = widgets.HBox(
            [self.model_box, self.pretrained_box, self.device_box, self.precision_box, self.progress]
        )
        stages_box = widgets.VBox(
            [widgets.HBox([self.stage_select, self.stage_table]), self.layer_box, self.layers_box]
        )
        images_box = widgets.VBox([widgets.HBox([self.image_box, self.upload]), self.view_image])
        rows = widgets.Layout(flex_flow="row wrap", align_items="center")
        self.header = widgets.VBox(
            [
                self.status_line,
                checkpoint_row,
                widgets.HBox([stages_box, images_box], layout=widgets.Layout(flex_flow="row wrap")),
                widgets.HBox(
                    [self.shown_stage, self.mode_box, self.page_slider, self.page_size_box, self.top_by_box],
                    layout=rows,
                ),
                widgets.HBox([self.norm_box, self.cmap_box, self.channel_box], layout=rows),
            ]
        )
        self._shown: Frame | None = None

    def link(self, name: str, widget: widgets.Widget, to_state=_same, to_widget=_same, trait="value") -> Link:
        """Bind ``widget``'s ``trait`` to the state trait ``name`` (see :class:`Link`)."""
        self.links[name] = Link(self.state, name, widget, self.report, to_state, to_widget, trait)
        return self.links[name]

    def set(self, name: str, value) -> None:
        """Set a state trait as a control would: a refused value goes to the status line."""
        try:
            setattr(self.state, name, value)
        except TraitError as err:
            self.report(err)

    # -- converters and reactions --------------------------------------------------------------------------
    def _indices(self, names: Sequence[str]) -> list[int] | None:
        known = self._stage_names
        indices = sorted(known.index(name) for name in names if name in known)
        return indices or None  # an empty selection is not a choice: the last one stays

    def _names(self, indices: Sequence[int]) -> tuple[str, ...]:
        return tuple(self._stage_names[i] for i in indices)

    def _add_layer(self, change) -> None:
        name = change["new"].strip()
        if not name:
            return
        if name not in self.state.layers:
            self.set("layers", [*self.state.layers, name])
        if name in self.state.layers:
            self.set("stage", name)
        self.layer_box.value = ""

    def _refused_upload(self, name: str, size: int) -> None:
        self.report(
            f"{name} is {size / 2**20:.1f} MiB; the panel takes images up to "
            f"{self.upload.max_bytes / 2**20:.0f} MiB. Make it smaller, or pass it as a path: Explorer(images=[...])."
        )

    def _enable(self, _change=None) -> None:
        top = self.state.channel_mode == "top"
        self.page_slider.disabled = top
        self.top_by_box.disabled = not top

    # -- showing a frame -------------------------------------------------------------------------------------
    def show_status(self, status: Status) -> None:
        if status is self._status:
            return
        self._status, self._updates = status, self._updates + 1
        error = f'<div class="explorer-error">{status.error}</div>' if status.error else ""
        self.status_line.value = status_html(status.level, status.html + error, self._updates)
        if status.progress is not None:
            self.progress.max, self.progress.value = status.progress[1], status.progress[0] + 1
        else:
            self.progress.value = self.progress.max
        self.progress.bar_style = {"busy": "info", "error": "danger", "warn": "warning"}.get(
            status.level, "success"
        )

    def update(self, frame: Frame) -> None:
        """Offer what ``frame`` offers (stages, maps, images, layers, devices), show its status."""
        self.show_status(frame.status)
        for name, (refused, _) in frame.corrections.items():
            if frame.failed and name in self.links:
                self.links[name].show_refused(list(refused) if isinstance(refused, tuple) else refused)
        mode = frame.state.get("compare", self.state.compare)
        self.compare_image_box.layout.display = None if mode == "images" else "none"
        for box in (self.compare_model_box, self.compare_pretrained_box):
            box.layout.display = None if mode == "checkpoints" else "none"
        old, self._shown = self._shown, frame
        if frame.backbone is None:
            return
        if old is None or old.backbone is not frame.backbone:
            backbone = frame.backbone
            self._stage_names = backbone.stage_names
            self.links["out_indices"].set_options(backbone.stage_names)
            table = frame.stage_table  # probed in the worker: the kernel's thread runs no model
            self.stage_table.value = html_table(
                [{k: row[k] for k in ("index", "name", "channels", "reduction", "shape")} for row in table],
                selected=[row["selected"] for row in table],
            )
            if not self.model_box.options:
                from ..backbones import SUGGESTED

                self.model_box.options = list(SUGGESTED)
        if old is None or old.layers != frame.layers:
            self.layer_box.options = list(frame.layers)
            self.layers_box.allowed_tags = list(frame.layers)
            if frame.layers:
                self.layer_box.placeholder = f"e.g. {frame.layers[len(frame.layers) // 2]}, then Enter"
        self.links["layers"].show()
        self.layers_box.layout.display = None if frame.state["layers"] else "none"
        if old is None or old.devices != frame.devices:
            self.links["device"].set_options(list(frame.devices))
        if old is None or old.gallery is not frame.gallery:
            labels = frame.gallery.labels()
            self.links["image_index"].set_options(labels)
            self.links["compare_image_index"].set_options(labels)
        if old is None or old.maps is not frame.maps:
            self.links["stage"].set_options(list(frame.maps))
        stage = frame.state["stage"]
        count = frame.maps[stage].shape[1]
        self.page_slider.max = max(1, page_count(count, frame.state["page_size"]))
        self.links["page"].show()
        self.channel_box.tooltip = f"0-{count - 1}"
        if old is None or old.view is not frame.view:
            import numpy as np

            from .views.images import jpeg

            self.view_image.value = jpeg(np.asarray(frame.view))
            self.view_image.layout.display = None  # hidden while empty: no broken-image icon
