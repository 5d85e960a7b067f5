"""What the panel shows, all at once: the :class:`Frame`, its :class:`Status` line, drawn :class:`Grid` s and the
:class:`Scene` a view computes its data from. No widgets, no HTML layout; frames are replaced whole, never changed.

Example::

    >>> status = Status("warn", "<b>resnet18</b> · RANDOM WEIGHTS", error="<b>Error:</b> No map named &quot;x&quot;")
    >>> status.text
    'resnet18 · RANDOM WEIGHTS · Error: No map named "x"'
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from .gallery import Gallery

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image

    from ...backbones import Backbone
    from ...hooks import FeatureMaps
    from ...render import GridLayout
    from ...stats import ChannelStats
    from .runtime import Runtime

__all__ = ["GRID_SIZE", "Frame", "Grid", "Scene", "Status", "ok_status"]

GRID_SIZE = 640
"""Longest side of a channel grid, in pixels: no grid is drawn larger than the view shows."""


def _plain(markup: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", markup)).strip()


@dataclass(frozen=True)
class Status:
    """The status line: the model line (``kind`` ok, busy or warn; ``html``; ``progress`` as (done, of)) and,
    under it, the last refusal (``error``, HTML), kept until a valid change is shown."""

    kind: str
    html: str
    progress: tuple[int, int] | None = None
    error: str = ""

    @property
    def level(self) -> str:
        """What the line's colour says: error when a refusal is on show, else ``kind``."""
        return "error" if self.error and self.kind != "busy" else self.kind

    @property
    def text(self) -> str:
        """The line as plain text."""
        return _plain(self.html) + (f" · {_plain(self.error)}" if self.error else "")


@dataclass(frozen=True, eq=False)
class Grid:
    """A drawn grid: the uint8 array, its layout, and the :func:`~explorer.render_grid` arguments that drew it
    (``stage``'s map of the first image), so that code generation can write the call down."""

    array: np.ndarray
    layout: GridLayout
    stage: str
    options: tuple[tuple[str, object], ...]

    @cached_property
    def png(self) -> bytes:
        """PNG bytes (encoded once)."""
        from ...render import to_png

        return to_png(self.array)


class Scene:
    """What a view's ``compute`` may use, in the engine's worker: the state it is drawn for, the backbone, maps,
    gallery, and helpers whose results are cached (per capture, or by content keys)."""

    def __init__(self, runtime: Runtime, state: Mapping[str, object], **parts) -> None:
        self.runtime = runtime
        self.state = SimpleNamespace(**state)
        self.backbone: Backbone = parts["backbone"]
        self.backbone_key: int = parts["backbone_key"]
        self.maps: FeatureMaps = parts["maps"]
        self.compare_maps: FeatureMaps | None = parts["compare_maps"]
        self.gallery: Gallery = parts["gallery"]
        self.image: Image.Image = parts["image"]
        self.image_key: int = parts["image_key"]
        self.view: Image.Image = parts["view"]
        self.capture_id: int = parts["capture_id"]
        self.progress: Callable[..., None] = parts.get("progress", lambda *_: None)
        self._changed: Callable[[], bool] = parts.get("changed", lambda: False)

    def changed(self) -> bool:
        """Whether the user changed a choice since this scene's work began: long work (an optimisation) stops
        early, and the next round of work redoes what is still asked for."""
        return self._changed()

    def preview(self, title: str, data: Any, message: str, done: int, of: int) -> None:
        """Show ``data`` in the view ``title`` before the frame is done (an image refining while it optimises),
        with ``message`` and the progress on the status line; it goes to the kernel's thread as frames do."""
        self.progress(message, done, of, {title: data})

    def cached(self, key: tuple, compute: Callable[[], Any]) -> Any:
        """``compute()``, once per capture and ``key``."""
        return self.runtime.part((self.capture_id, *key), compute)

    def keyed(self, key: tuple, compute: Callable[[], Any]) -> Any:
        """``compute()``, once per ``key`` (which names its content: backbone and image keys, not a capture)."""
        return self.runtime.part(("keyed", *key), compute)

    def fmap(self, name: str | None = None) -> torch.Tensor:
        """``(C, H, W)`` float map of ``name`` (the shown stage by default) for the first image."""
        name = name or self.state.stage
        return self.cached(("fmap", name), lambda: self.maps[name][0].float())

    def stats(self, name: str | None = None) -> ChannelStats:
        """Channel statistics of a map for the first image."""
        from ...stats import channel_stats

        name = name or self.state.stage
        return self.cached(("stats", name), lambda: channel_stats(self.fmap(name)))

    @property
    def channels(self) -> str:
        """The channel selection on show: ``"top:K"`` or ``"page:P/S"``."""
        s = self.state
        return f"top:{s.page_size}" if s.channel_mode == "top" else f"page:{s.page}/{s.page_size}"

    def grid(
        self,
        fmap: torch.Tensor | None = None,
        channels: object = None,
        *,
        name: str | None = None,
        vrange: tuple[float, float] | None = None,
        **options,
    ) -> Grid:
        """A grid of ``fmap`` (the shown stage's by default) drawn with the state's colour settings; ``options``
        override :func:`~explorer.render_grid` arguments. ``name`` keys the cache (the stage by default)."""
        s = self.state
        norm = "stage" if s.norm == "global" and vrange is None else s.norm
        args = dict(
            channels=self.channels if channels is None else channels,
            norm=norm,
            cmap=s.cmap,
            clip=s.clip,
            by=s.top_by,
            labels=True,
            max_size=GRID_SIZE,
        )
        if vrange is not None:
            args["vrange"] = tuple(float(v) for v in vrange)
        args.update(options)
        if not isinstance(args["channels"], str):
            args["channels"] = [int(c) for c in args["channels"]]
        stage = s.stage if fmap is None else name
        key = (
            "grid",
            name or s.stage,
            tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in args.items()),
        )

        def draw() -> Grid:
            from ...render import render_grid

            array, layout = render_grid(self.fmap() if fmap is None else fmap, return_layout=True, **args)
            return Grid(array, layout, stage, tuple(args.items()))

        return self.cached(key, draw)


@dataclass(frozen=True, eq=False)
class Frame:
    """What the panel shows, all at once; replaced whole, never changed.

    Attributes:
        number: counts frames.
        state: the :meth:`ExplorerState.snapshot` this frame shows.
        corrections: ``{trait: (from, to)}``: values the engine corrected (a clamp) or refused (a revert); the
            kernel's thread applies them to the state when the frame arrives, where the state still holds
            ``from`` (the one path by which the state is corrected).
        backbone: the shown checkpoint, with the shown stages selected (a copy; the shared one is never changed).
        maps: the captured maps (with two images when comparing images).
        compare_maps: checkpoint B's maps when comparing checkpoints.
        gallery: the images.
        view: the shown image as the model saw it (resized and cropped).
        scene: the drawing context, for the statistics getters.
        views: each view's data by title (what its ``compute`` returned), the latest for every view drawn.
        status: the status line.
        devices: the devices this kernel offers.
        layers: every layer name the backbone offers (for suggestions).
        stage_table: ``backbone.stage_table()`` (its shapes come from a probe: built in the worker, never drawn).
        update_ms: how long the last update took; ``ran``: whether it ran the model.
        failed: the frame says a change was refused (its corrections go back to what is shown).
    """

    number: int = 0
    state: Mapping[str, object] = field(default_factory=dict)
    corrections: Mapping[str, tuple[object, object]] = field(default_factory=dict)
    backbone: Backbone | None = None
    maps: FeatureMaps | None = None
    compare_maps: FeatureMaps | None = None
    gallery: Gallery = field(default_factory=Gallery)
    view: Image.Image | None = None
    scene: Scene | None = None
    views: Mapping[str, Any] = field(default_factory=dict)
    status: Status = Status("busy", "Starting...")
    devices: tuple[str, ...] = ("auto", "cpu")
    layers: tuple[str, ...] = ()
    stage_table: tuple[Mapping[str, object], ...] = ()
    update_ms: float = 0.0
    ran: bool = False
    failed: bool = False


_WEIGHTS = {
    "random": '<b class="random">RANDOM WEIGHTS</b> (pretrained=False): the maps show no learned features',
    "package": "ImageNet weights (packaged)",
    "cache": "pretrained weights (local cache)",
    "hub": "pretrained weights (downloaded)",
    "file": "weights from a local file",
}


def ok_status(frame: Frame, ran: bool, took_ms: float, error: str = "") -> Status:
    """The model line of a frame just built: checkpoint, weights (random ones said loud), device, dtype, time,
    and notes (an animated image, a map that is not image-aligned); ``error`` is kept under it."""
    bb, s = frame.backbone, frame.state
    weights = _WEIGHTS.get(bb.weights, html.escape(str(bb.weights)))
    note = getattr(bb, "weights_note", None)
    if note:
        weights += f" ({html.escape(str(note))})"
    frames = frame.gallery.images[s["image_index"]].info.get("frames", 1)
    notes = f" · animated image: first of {frames} frames" if frames > 1 else ""
    unaligned = frame.maps.unaligned.get(s["stage"])
    if unaligned:
        notes += f" · <b>{html.escape(s['stage'])}</b> is not an image-aligned map ({html.escape(unaligned)}): no overlay"
    return Status(
        "warn" if bb.weights == "random" or unaligned else "ok",
        f"<b>{html.escape(bb.spec)}</b> · {weights} · {bb.device.type} · "
        f"{str(bb.dtype).replace('torch.', '')} · updated in {took_ms:.0f} ms "
        f"({'forward pass' if ran else 'from cache'}){notes}",
        error=error,
    )
