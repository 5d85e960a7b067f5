"""The Dataset tab: scan a folder (or open a saved scan) and see the top-k exemplars of the channel on show.

The scan runs in its own thread, on a copy of the panel's backbone (its own hooks never meet the panel's), so the
kernel stays free; a progress bar follows it image by image. It scans every map the panel captures (the selected
stages and any added layers), so choosing another stage or channel in the Grid or Statistics tab only redraws
the exemplars: their receptive-field crops with the channel overlaid, with values and sources. A folder that holds
a saved scan (``scan.save_html`` or ``scan.save``) opens as it is. Errors go to the panel's status line and to the
tab's own line; the panel keeps working.

Example::

    >>> app = explorer.Explorer()
    >>> dataset = app.views["Dataset"]
    >>> dataset.source_box.value = str(explorer.sample_dataset(n=64))
    >>> dataset.scan_button.click(); dataset.wait()
    >>> len(dataset.crops_box.children)
    9
"""

from __future__ import annotations

import copy
import html
import io
import os
from dataclasses import dataclass
from pathlib import Path

import ipywidgets as widgets

from ..controller import Frame, Scene
from . import View, register
from .html import status_html
from .worker import TabWorker

__all__ = ["DatasetTarget", "DatasetView"]

K = 9
"""Exemplars per channel."""

CROP_WIDTH = 112
"""Display width of each crop, in CSS pixels."""


@dataclass(frozen=True, eq=False)
class DatasetTarget:
    """What the tab is asked to show: the panel's backbone, its captured maps, and the shown stage and channel."""

    backbone: object
    names: tuple[str, ...]
    stage: str
    channel: int


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


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
            layout=widgets.Layout(width="520px"),
        )
        self.scan_button = widgets.Button(description="Scan", button_style="primary")
        self.scan_button.on_click(self._start)
        self.scan_progress = widgets.IntProgress(value=0, min=0, max=1, layout=widgets.Layout(width="300px"))
        self.scan_status = widgets.HTML(status_html("ok", "Point at a folder and press Scan."))
        self.crop_images: list[widgets.Image] = []
        self.crop_captions: list[widgets.HTML] = []
        self._slots: list[widgets.VBox] = []  # one per exemplar, made once and reused
        self.crops_box = widgets.HBox(layout=widgets.Layout(flex_flow="row wrap"))
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.source_box, self.scan_button, self.scan_progress]),
                self.scan_status,
                self.crops_box,
            ]
        )
        self.scan = None  # the finished explorer.Scan
        self._target: DatasetTarget | None = None
        self._shown: tuple | None = None
        self.worker = TabWorker("explorer-dataset", on_error=self._failed, after=self._enable)

    @staticmethod
    def compute(scene: Scene) -> DatasetTarget:
        s = scene.state
        return DatasetTarget(scene.backbone, tuple(scene.maps), s.stage, int(s.channel))

    def update(self, frame: Frame) -> None:
        target = self.data(frame)
        if target is None or target is self._target:
            return
        self._target = target
        if self.scan is not None:
            self._run(self._show_crops)

    # -- work in the tab's thread --------------------------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the tab's running work (a scan, crops); True when it finished."""
        return self.worker.wait(timeout)

    def _run(self, job) -> None:
        self.worker.run(job)

    def _failed(self, err: Exception) -> None:
        self._say("error", f"<b>Error:</b> {html.escape(str(err) or type(err).__name__)}")
        self.controls.report(err)

    def _enable(self) -> None:
        self.scan_button.disabled = False

    def _say(self, kind: str, message: str) -> None:
        self.scan_status.value = status_html(kind, message)

    def _start(self, _button=None) -> None:
        target = self._target
        if target is None:
            self._say("warn", "The panel has not drawn yet; open the Grid tab first.")
            return
        source = self.source_box.value.strip()
        self.scan_button.disabled = True
        self._run(lambda: self._scan(target, source))

    def _progress(self, done: int, total: int) -> None:
        self.scan_progress.max = max(1, total)
        self.scan_progress.value = done
        self._say("busy", f"Scanning: {done} of {total} images...")

    def _scan(self, target: DatasetTarget, source: str) -> None:
        from ...scan import Scan, scan
        from ...scan.store import weights_digest

        if not source:
            raise ValueError(
                "Type a folder of images (or of a saved scan) in the Images box, then press Scan."
            )
        folder = Path(os.path.expanduser(source))
        backbone = copy.deepcopy(target.backbone)  # the scan's hooks never meet the panel's
        if (folder / "scan.json").is_file():
            found = Scan.load(folder)
            same = found.info["weights_sha256"] == weights_digest(backbone.model)
            found = Scan.load(folder, backbone=backbone) if same else found
        else:
            stages = [name for name in target.names if name in backbone.stage_names]
            layers = [name for name in target.names if name not in backbone.stage_names]
            found = scan(
                backbone,
                folder,
                out_features=stages or None,
                layers=layers or None,
                k=K,
                cache=self.cache,
                num_workers=0,
                progress=self._progress,
            )
        self.scan = found
        skipped = f", {len(found.skipped)} skipped" if found.skipped else ""
        self._say("ok", f"{html.escape(repr(found))}{html.escape(skipped)}")
        self._shown = None
        self._show_crops()

    def _show_crops(self) -> None:
        found, target = self.scan, self._target
        if found is None or target is None:
            return
        key = (id(found), target.stage, target.channel)
        if key == self._shown:
            return
        if target.stage not in found.stages:
            self._say(
                "warn",
                f"This scan holds no {html.escape(target.stage)}; it scanned {html.escape(', '.join(found.stages))}. "
                "Choose one of those stages, or scan again.",
            )
            return
        exemplars = found.top(target.stage, target.channel)
        crops = found.crops(target.stage, target.channel)
        while len(self._slots) < len(crops):
            self.crop_images.append(
                widgets.Image(format="png", layout=widgets.Layout(width=f"{CROP_WIDTH}px"))
            )
            self.crop_captions.append(widgets.HTML(layout=widgets.Layout(width=f"{CROP_WIDTH}px")))
            self._slots.append(widgets.VBox([self.crop_images[-1], self.crop_captions[-1]]))
        for image, caption, crop, exemplar in zip(self.crop_images, self.crop_captions, crops, exemplars):
            image.value = _png(crop)
            name = (
                Path(exemplar.source).name if isinstance(exemplar.source, str) else f"item {exemplar.source}"
            )
            caption.value = (
                f'<span style="font-size:11px" title="{html.escape(str(exemplar.source))}">'
                f"{exemplar.value:.3g} · {html.escape(name)}</span>"
            )
        self.crops_box.children = tuple(self._slots[: len(crops)])
        self._shown = key
        self._say(
            "ok",
            f"{html.escape(target.stage)} · channel {target.channel}: top {len(crops)} of {len(found)} images "
            "(receptive-field crops, channel overlaid)",
        )
