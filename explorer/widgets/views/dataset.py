"""The Dataset tab: scan a folder (or open a saved scan, or the sample images) and see the top-k exemplars of
the channel on show.

The state's ``dataset_source`` names what is scanned: a folder, a saved scan (``scan.save_html`` or
``scan.save``), or ``"samples:N"`` for :func:`explorer.sample_dataset` ``(n=N)``; the Scan and Sample images
buttons set it. The scan runs in the engine's worker, only while the tab is on show, with its progress on the
status line; it scans every map the panel captures (the selected stages and any added layers), and is kept by
content, so choosing another stage or channel only redraws the exemplars: their receptive-field crops with the
channel overlaid (all the same size), with values and sources. A source that cannot be scanned is refused: the
previous one stays and the status line says why. The Concepts mode (``dataset_mode``) shows concepts learnt at
the stage instead of channels: :mod:`.dataset_concepts`.

Example::

    >>> app = explorer.Explorer()
    >>> app.tab = "Dataset"; app.dataset_source = "samples:64"
    >>> len(app.views["Dataset"].crops_box.children)
    9
"""

from __future__ import annotations

import copy
import dataclasses
import html
import os
from dataclasses import dataclass
from pathlib import Path

import ipywidgets as widgets

from ..engine import Frame, Scene
from . import View, register
from .dataset_concepts import PROGRESS, ConceptsData, ConceptsMode, compute_concepts, concepts_code
from .dataset_source import SAMPLES, exemplar_caption, sample_count, source_folder
from .html import status_html
from .visualisation import VisBox, VisData, vis_code, visualise

__all__ = ["DatasetData", "DatasetView", "SAMPLES"]

K = 9
"""Exemplars per channel."""

CROP_SIZE = 112
"""Display width and height of each crop, in CSS pixels (a crop keeps its aspect inside that square)."""


@dataclass(frozen=True, eq=False)
class DatasetData:
    """What the Dataset tab shows: the scan, and for the shown stage and channel the crops (PNG) and captions."""

    scan: object
    crops: tuple[bytes, ...]
    captions: tuple[tuple[str, str], ...]  # (text, full source)
    message: tuple[str, str]  # (kind, HTML)
    vis: VisData | None = None  # the channel's optimised image beside its exemplars (the Visualise button)


def _scan(scene: Scene, names: tuple[str, ...], source: str, cache: str | None):
    from ...dataset import Scan, scan
    from ...dataset.store import weights_digest

    folder = source_folder(source)
    scene.runtime.count_run()
    backbone = copy.copy(scene.backbone)  # the scan selects its own stages on a copy
    if (folder / "scan.json").is_file():
        found = Scan.load(folder)
        same = found.info["weights_sha256"] == weights_digest(backbone.model)
        return Scan.load(folder, backbone=backbone) if same else found
    stages = [name for name in names if name in backbone.stage_names]
    layers = [name for name in names if name not in backbone.stage_names]
    return scan(
        backbone,
        folder,
        out_features=stages or None,
        layers=layers or None,
        k=K,
        cache=cache,
        num_workers=0,
        progress=lambda done, total: scene.progress(f"Scanning: {done} of {total} images...", done, total),
    )


@register
class DatasetView(View):
    title = "Dataset"
    cache: str | None = "~/.cache/explorer/scans"
    """Where the tab's scans are cached (``explorer.scan``'s ``cache=``); None keeps them in memory."""

    def __init__(self, controls) -> None:
        super().__init__(controls)
        self.source_box = widgets.Text(
            description="Images",
            placeholder="a folder of images, or a saved scan",
            layout=widgets.Layout(width="440px"),
        )
        self.scan_button = widgets.Button(description="Scan", button_style="primary")
        self.scan_button.on_click(lambda _button: self._scan(self.source_box.value.strip()))
        self.samples_button = widgets.Button(description="Sample images", tooltip=f"scan {SAMPLES}")
        self.samples_button.on_click(lambda _button: self._scan(SAMPLES))
        self.scan_progress = widgets.IntProgress(value=0, min=0, max=1, layout=widgets.Layout(width="200px"))
        self.scan_status = widgets.HTML(
            status_html("ok", "Point at a folder and press Scan, or scan the samples.")
        )
        self.crop_images: list[widgets.Image] = []
        self.crop_captions: list[widgets.HTML] = []
        self._slots: list[widgets.VBox] = []  # one per exemplar, made once and reused
        self.crops_box = widgets.HBox(layout=widgets.Layout(flex_flow="row wrap"))
        self.crops_box.add_class("explorer-crops")
        self._build_concepts_mode(controls)
        self.vis = VisBox(controls)
        self.widget = widgets.VBox(
            [
                self.mode_buttons,
                widgets.HBox([self.source_box, self.scan_button, self.samples_button, self.scan_progress]),
                self.scan_status,
                _beside_exemplars(self.crops_box, self.vis),
                self.concepts_mode.widget,
            ]
        )
        self.scan = None  # the explorer.Scan on show
        self._shown: DatasetData | None = None
        controls.state.observe(self._show_source, names="dataset_source")
        self._show_source()

    # -- the Concepts mode (dataset_concepts.py) --------------------------------------------------------------
    def _build_concepts_mode(self, controls) -> None:
        self.mode_buttons = widgets.ToggleButtons(
            options=(("Channels", "channels"), ("Concepts", "concepts")), layout=widgets.Layout(width="auto")
        )
        controls.link("dataset_mode", self.mode_buttons)
        self.concepts_mode = ConceptsMode(controls, CROP_SIZE)

    def _update_concepts_mode(self, frame: Frame, data) -> bool:
        """Show the mode on show; True when ``data`` was the Concepts mode's (and is now drawn)."""
        concepts = isinstance(data, ConceptsData)
        self.crops_box.layout.display = "none" if concepts else ""
        self.concepts_mode.show(concepts)
        if concepts:
            if not frame.status.error and data is not self._shown:
                self.scan_status.value = status_html(*data.message)
            self._shown = data
            if data.concepts is not None:
                self.scan_progress.max = self.scan_progress.value = 2 * max(1, len(data.concepts.scan))
            self.concepts_mode.update(data)
        return concepts

    def _show_source(self, _change=None) -> None:
        self.source_box.value = self.controls.state.dataset_source

    def _scan(self, source: str) -> None:
        if not source:
            self.controls.report(
                "Type a folder of images (or of a saved scan) in the Images box, then press Scan."
            )
            return
        self.controls.set("dataset_source", source)

    @staticmethod
    def compute(scene: Scene) -> DatasetData:
        from ...render import to_png

        s = scene.state
        if s.dataset_mode == "concepts":
            return compute_concepts(scene, DatasetView.cache)
        if not s.dataset_source:
            return DatasetData(None, (), (), ("ok", "Point at a folder and press Scan, or scan the samples."))
        names = tuple(scene.maps)
        cache = DatasetView.cache
        found = scene.keyed(
            ("scan", scene.backbone_key, names, s.dataset_source, cache),
            lambda: _scan(scene, names, s.dataset_source, cache),
        )
        if s.stage not in found.stages:
            message = (
                f"This scan holds no {html.escape(s.stage)}; it scanned {html.escape(', '.join(found.stages))}. "
                "Choose one of those stages, or scan again."
            )
            return DatasetData(found, (), (), ("warn", message))
        import numpy as np

        exemplars = found.top(s.stage, s.channel)
        crops = scene.keyed(
            ("crops", scene.backbone_key, names, s.dataset_source, cache, s.stage, s.channel),
            lambda: tuple(to_png(np.asarray(crop)) for crop in found.crops(s.stage, s.channel)),
        )
        message = (
            f"{html.escape(s.stage)} · channel {s.channel}: top {len(crops)} of {len(found)} images "
            "(receptive-field crops, channel overlaid)"
        )
        return _with_vis(
            scene, DatasetData(found, crops, tuple(exemplar_caption(e) for e in exemplars), ("ok", message))
        )

    @staticmethod
    def code(frame: Frame, data: DatasetData) -> tuple[list[str], list[int], bytes] | None:
        if isinstance(data, ConceptsData):
            return concepts_code(frame, data)
        s = frame.state
        if data.scan is None or not data.crops:
            return None
        count = sample_count(s["dataset_source"])
        folder = (
            f"explorer.sample_dataset(n={count})" if count else repr(os.path.expanduser(s["dataset_source"]))
        )
        if count is None and (Path(os.path.expanduser(s["dataset_source"])) / "scan.json").is_file():
            line = f"scan = explorer.Scan.load({folder}, backbone=bb)"
        else:
            names = list(frame.maps)
            stages = [n for n in names if n in frame.backbone.stage_names] or None
            layers = [n for n in names if n not in frame.backbone.stage_names] or None
            line = (
                f"scan = explorer.scan(bb, {folder}, out_features={stages!r}, layers={layers!r}, k={K}, "
                "num_workers=0, cache=None, progress=False)"
            )
        return (
            [
                line,
                f"crops = scan.crops({s['stage']!r}, {s['channel']!r})",
                "png = explorer.to_png(np.asarray(crops[0]))",
                *vis_code(data.vis),
            ],
            [],
            data.crops[0],
        )

    def update(self, frame: Frame) -> None:
        data = self.data(frame)
        status = frame.status
        if status.kind == "busy" and status.progress and status.html.startswith(("Scanning", PROGRESS)):
            self.scan_progress.max, self.scan_progress.value = max(1, status.progress[1]), status.progress[0]
        if status.error and frame.state.get("tab") == self.title:
            self.scan_status.value = status_html("error", status.error)
        if self._update_concepts_mode(frame, data):
            return
        if data is None or data is self._shown:
            return
        self._shown, self.scan = data, data.scan
        if data.scan is not None:
            self.scan_progress.max = self.scan_progress.value = max(1, len(data.scan))
        if not status.error:
            self.scan_status.value = status_html(*data.message)
        while len(self._slots) < len(data.crops):
            self.crop_images.append(
                widgets.Image(
                    format="png",
                    layout=widgets.Layout(
                        width=f"{CROP_SIZE}px", height=f"{CROP_SIZE}px", object_fit="contain"
                    ),
                )
            )
            self.crop_captions.append(widgets.HTML(layout=widgets.Layout(width=f"{CROP_SIZE}px")))
            self._slots.append(
                widgets.VBox(
                    [self.crop_images[-1], self.crop_captions[-1]],
                    layout=widgets.Layout(margin="0 6px 6px 0"),
                )
            )
        for image, caption, crop, (text, source) in zip(
            self.crop_images, self.crop_captions, data.crops, data.captions
        ):
            image.value = crop
            caption.value = (
                f'<div class="explorer-caption" style="max-width: {CROP_SIZE}px" title="{html.escape(source)}">'
                f"{html.escape(text)}</div>"  # cut with an ellipsis at the crop's width; the title says it all
            )
        self.crops_box.children = tuple(self._slots[: len(data.crops)])
        self.vis.update(data.vis)


# ----------------------------------------------------------------------------------------------- Visualise


def _with_vis(scene: Scene, data: DatasetData) -> DatasetData:
    """The exemplars with the channel's optimised image beside them, when the Visualise button asked for it
    (previews shown while it optimises)."""
    vis = visualise(scene, DatasetView.title, lambda partial: dataclasses.replace(data, vis=partial))
    return dataclasses.replace(data, vis=vis) if vis is not None else data


def _beside_exemplars(crops_box: widgets.Box, vis: VisBox) -> widgets.Box:
    """The exemplars, with the Visualise button and its picture to their right."""
    crops_box.layout.flex = "1 1 auto"
    return widgets.HBox([crops_box, vis.widget], layout=widgets.Layout(align_items="flex-start"))
