"""The panel's engine: from an :class:`ExplorerState` to an immutable :class:`Frame`. No widgets here.

Data flows one way: a control sets the state; the controller notices, does only the work the changed traits
need (their ``work`` tag: load a checkpoint, capture feature maps, or draw), and publishes a new frame; the views
show it. Nothing is done twice: backbones are kept per slot, captures by (checkpoint, precision, images, stages,
layers), and drawn parts by their arguments, so display-only changes never run the model again.

A change that fails (an unknown checkpoint, a stage the model lacks, a channel past the last) is refused: the
state goes back to what the last frame shows, and the frame's status says why. Captures take the selection as an
argument (on a copy of the backbone), so the shared :class:`~explorer.Backbone` is never changed.

Outside a kernel every change is worked at once, in the caller's thread. In a kernel (``background=True``)
changes made together (one turn of the event loop) are worked together on the loop's next turn; a load (seconds)
runs in one worker thread instead, so the front end stays live meanwhile, events arriving during it are merged,
and the newest state wins. ``refresh()`` does pending work now; ``wait()`` waits for the worker.

Example::

    >>> state = ExplorerState(model="resnet18", pretrained=False, device="cpu", out_indices=[1])
    >>> controller = Controller(state, views={"Grid": grid_view.compute})
    >>> frame = controller.refresh()
    >>> frame.maps.shapes, controller.forward_passes
    ({'layer1': (1, 64, 56, 56)}, 1)
    >>> state.cmap = "magma"                     # a draw: no forward pass
    >>> controller.forward_passes
    1
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import gc
import html
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType, SimpleNamespace
from typing import TYPE_CHECKING, Any

from .state import CAPTURE, LOAD, ExplorerState

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image

    from ..backbones import Backbone
    from ..hooks import FeatureMaps
    from ..render import GridLayout
    from ..stats import ChannelStats

__all__ = ["Controller", "Frame", "Gallery", "Grid", "Scene", "Status", "GRID_SIZE"]

_log = logging.getLogger(__name__)

GRID_SIZE = 640
"""Longest side of a channel grid, in pixels: no grid is drawn larger than the view shows."""

MAX_PASSES = 8
"""Passes one refresh makes at most: a pass that changed the state (a clamp, another thread) is followed by one
more, until the state and the frame agree."""

ComputeT = Callable[["Scene"], Any]

_WEIGHTS = {
    "random": '<b class="random">RANDOM WEIGHTS</b> (pretrained=False): the maps show no learned features',
    "package": "ImageNet weights (packaged)",
    "cache": "pretrained weights (local cache)",
    "hub": "pretrained weights (downloaded)",
    "file": "weights from a local file",
}


@dataclass(frozen=True)
class Status:
    """The status line: ``kind`` is ok, busy, warn or error; ``html`` the message; ``progress`` (done, of)."""

    kind: str
    html: str
    progress: tuple[int, int] | None = None

    @property
    def text(self) -> str:
        """The message as plain text."""
        return html.unescape(re.sub(r"<[^>]+>", "", self.html)).strip()


@dataclass(frozen=True, eq=False)
class Grid:
    """A drawn grid: the uint8 array, its layout, and the :func:`~explorer.render_grid` arguments that drew it
    (``stage``'s map of the first image), so that :meth:`Controller.code` can write the call down."""

    array: np.ndarray
    layout: GridLayout
    stage: str
    options: tuple[tuple[str, object], ...]

    @cached_property
    def png(self) -> bytes:
        """PNG bytes (encoded once)."""
        from ..render import to_png

        return to_png(self.array)


@dataclass(frozen=True, eq=False)
class Gallery:
    """The images the panel can show. ``sources`` say where each came from, for :meth:`Controller.code`:
    ``("sample", name)``, ``("path", path)`` or ``("upload", name)``."""

    images: tuple[Image.Image, ...] = ()
    names: tuple[str, ...] = ()
    sources: tuple[tuple[str, str], ...] = ()

    def __len__(self) -> int:
        return len(self.images)

    def labels(self) -> list[tuple[str, int]]:
        """``(label, index)`` pairs for a dropdown; animated images say only their first frame is used."""
        return [
            (
                f"{name} ({image.info.get('format', 'animated')}: first frame)"
                if image.info.get("frames", 1) > 1
                else name,
                i,
            )
            for i, (name, image) in enumerate(zip(self.names, self.images))
        ]

    def add(self, images: Sequence[Image.Image], names: Sequence[str], sources: Sequence[tuple[str, str]]):
        return Gallery(self.images + tuple(images), self.names + tuple(names), self.sources + tuple(sources))


class Scene:
    """What a view's ``compute`` may use: the state it is drawn for, the backbone, maps and gallery, and drawing
    helpers whose results are cached per capture (a view asks again; nothing is redrawn)."""

    def __init__(self, controller: Controller, state: Mapping[str, object], **parts) -> None:
        self._controller = controller
        self.state = SimpleNamespace(**state)
        self.backbone: Backbone = parts["backbone"]
        self.maps: FeatureMaps = parts["maps"]
        self.compare_maps: FeatureMaps | None = parts["compare_maps"]
        self.gallery: Gallery = parts["gallery"]
        self.image: Image.Image = parts["image"]
        self.view: Image.Image = parts["view"]
        self.capture_id: int = parts["capture_id"]

    def cached(self, key: tuple, compute: Callable[[], Any]) -> Any:
        """``compute()``, once per capture and ``key``."""
        return self._controller._part((self.capture_id, *key), compute)

    def fmap(self, name: str | None = None) -> torch.Tensor:
        """``(C, H, W)`` float map of ``name`` (the shown stage by default) for the first image."""
        name = name or self.state.stage
        return self.cached(("fmap", name), lambda: self.maps[name][0].float())

    def stats(self, name: str | None = None) -> ChannelStats:
        """Channel statistics of a map for the first image."""
        from ..stats import channel_stats

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
            from ..render import render_grid

            array, layout = render_grid(self.fmap() if fmap is None else fmap, return_layout=True, **args)
            return Grid(array, layout, stage, tuple(args.items()))

        return self.cached(key, draw)


@dataclass(frozen=True, eq=False)
class Frame:
    """What the panel shows, all at once; replaced whole, never changed.

    Attributes:
        number: counts frames.
        state: the :meth:`ExplorerState.snapshot` this frame shows.
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
        update_ms: how long the last update took; ``ran``: whether it ran the model.
    """

    number: int = 0
    state: Mapping[str, object] = field(default_factory=dict)
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
    update_ms: float = 0.0
    ran: bool = False


class _Refused(ValueError):
    """A value that cannot be shown (a channel past the last, a stage not captured)."""


def _gallery_from(images: Sequence[object] | None) -> Gallery:
    from ..errors import ImageError
    from ..images import load_image, sample_images

    if images is None:
        samples = sample_images()
        return Gallery(tuple(samples.values()), tuple(samples), tuple(("sample", n) for n in samples))
    loaded = tuple(load_image(image) for image in images)
    if not loaded:
        raise ImageError("The panel needs at least one image; pass images=[...] or leave it out for samples.")
    paths = [os.fspath(image) if isinstance(image, (str, os.PathLike)) else None for image in images]
    names = tuple(path or f"image {i}" for i, path in enumerate(paths))
    sources = tuple(("path", path) if path else ("upload", name) for path, name in zip(paths, names))
    return Gallery(loaded, names, sources)


class Controller:
    """Turns state changes into frames; see the module docs.

    Args:
        state: the choices to show.
        images: the gallery (paths, bytes, PIL images, arrays); the sample images when None. Read at the first
            refresh, so that constructing a controller imports nothing heavy.
        views: each view's ``compute(scene)`` by title; the state's ``tab`` picks the one drawn.
        out_features: stage names to select once the first checkpoint has loaded (instead of ``out_indices``).
        background: work in a worker thread (see the module docs).
    """

    max_captures = 6
    max_parts = 48

    def __init__(
        self,
        state: ExplorerState,
        *,
        images: Sequence[object] | None = None,
        views: Mapping[str, ComputeT] | None = None,
        out_features: Sequence[str] | None = None,
        background: bool = False,
    ) -> None:
        self.state = state
        self.views: dict[str, ComputeT] = dict(views or {})
        self.background = background
        self.listeners: list[Callable[[Frame], None]] = []
        self.frame = Frame()
        self.forward_passes = 0
        self.loads = 0
        self.draws = 0
        self._gallery_source: tuple[Sequence[object] | None] | None = (images,)
        self._gallery = Gallery()
        self._pending_out_features = list(out_features) if out_features is not None else None
        self._backbones: dict[str, tuple[tuple, Backbone]] = {}
        self._captures: OrderedDict[tuple, FeatureMaps] = OrderedDict()
        self._parts: OrderedDict[tuple, Any] = OrderedDict()
        self._capture_id = 0
        self._applied: dict[str, object] | None = None
        self._failed: dict[str, object] | None = None
        self._forced = 0
        self._lock = threading.RLock()
        self._publishing = threading.Lock()
        self._refreshing: int | None = None
        self._wake = threading.Condition()
        self._wanted = False
        self._working = False
        self._worker: threading.Thread | None = None
        self._kick_loop: asyncio.AbstractEventLoop | None = None
        state.observe(self._on_change)

    # -- requests --------------------------------------------------------------------------------------------
    def _on_change(self, _change) -> None:
        self.request()

    def request(self) -> None:
        """Something changed: work now (``background`` False), or hand it to the worker. In an event loop the
        hand-over waits for the loop's next turn, so changes made together are worked together."""
        if not self.background:
            self.refresh()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:
            self._kick()
        elif self._kick_loop is not loop:
            self._kick_loop = loop
            loop.call_soon(self._soon)

    def _soon(self) -> None:
        """On the loop's next turn: a redraw or a capture runs here and now (a hand-over to the worker costs more
        than the work); a load, or anything while the worker is busy, goes to the worker."""
        self._kick_loop = None
        with self._wake:
            busy = self._working or self._wanted
        if busy or self._gallery_source is not None or self._level(self.state.snapshot()) >= LOAD:
            self._kick()
        else:
            self.refresh()

    def _kick(self) -> None:
        self._kick_loop = None
        with self._wake:
            self._wanted = True
            self._wake.notify_all()
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="explorer-panel", daemon=True)
                self._worker.start()

    def _work(self) -> None:
        while True:
            with self._wake:
                while not self._wanted:
                    self._wake.wait()
                self._wanted, self._working = False, True
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - refresh reports every failure; this only keeps the worker alive
                _log.exception("panel worker")
            finally:
                with self._wake:
                    self._working = False
                    self._wake.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the worker has done everything requested so far (starts no new work). False on timeout."""
        if self._kick_loop is not None:
            self._soon()  # a hand-over still waiting for its loop's turn: make it now
        with self._wake:
            return self._wake.wait_for(lambda: not self._wanted and not self._working, timeout)

    def start(self) -> None:
        """The first frame: at once, or in the worker."""
        self._forced = LOAD
        if self.background:
            self._kick()
        else:
            self.refresh()

    # -- gallery -----------------------------------------------------------------------------------------------
    @property
    def gallery(self) -> Gallery:
        """The images as they are now (the frame's gallery is the one on show)."""
        return self._gallery

    def set_images(self, images: Sequence[object] | None) -> None:
        """Replace the gallery (read at the next refresh); image 0 is shown."""
        self._gallery_source = (images,)
        self._forced = max(self._forced, CAPTURE)
        self.state.image_index = 0
        self.request()

    def add_images(self, images: Sequence[Image.Image], names: Sequence[str]) -> None:
        """Add decoded images (uploads) to the gallery and show the first of them."""
        with self._lock:
            first = len(self._gallery)
            self._gallery = self._gallery.add(images, names, [("upload", n) for n in names])
            self._forced = max(self._forced, CAPTURE)
        self.state.image_index = first
        self.request()

    # -- refreshing ------------------------------------------------------------------------------------------
    def refresh(self) -> Frame:
        """Do the pending work now, in this thread, and return the frame. A call made while this thread is
        already refreshing (a view or control reacting to a frame) returns at once: the running refresh makes
        another pass for whatever changed."""
        me = threading.get_ident()
        if self._refreshing == me:
            return self.frame
        with self._lock:
            self._refreshing = me
            try:
                for _ in range(MAX_PASSES):
                    if not self._pass():
                        break
            finally:
                self._refreshing = None
        return self.frame

    def _level(self, snap: dict[str, object]) -> int:
        if self._applied is None:
            return LOAD
        changed = [ExplorerState.work(name) for name, value in snap.items() if self._applied[name] != value]
        return max([self._forced, *changed])

    def _pass(self) -> bool:
        snap = self.state.snapshot()
        level = self._level(snap)
        if not level or (self._failed == snap and not self._forced):
            return False
        self._forced = 0
        start = time.perf_counter()
        runs = self.forward_passes
        try:
            frame = self._build(snap, level)
        except Exception as err:  # noqa: BLE001 - every failure lands in the status line; the panel lives on
            self._fail(snap, err)
            return False
        self._applied, self._failed = frame.state, None
        ran = self.forward_passes > runs
        frame = dataclasses.replace(
            frame, update_ms=(time.perf_counter() - start) * 1000, ran=ran, status=self._ok(frame, ran, start)
        )
        self._publish(frame)
        return True

    def _busy(self, message: str, step: int, steps: int = 4) -> None:
        self._publish(dataclasses.replace(self.frame, status=Status("busy", message, (step, steps))))

    def _build(self, snap: dict[str, object], level: int) -> Frame:
        s = SimpleNamespace(**snap)
        previous = self.frame
        if self._gallery_source is not None:
            self._busy("Reading the images...", 0)
            source, self._gallery_source = self._gallery_source, None  # a failure keeps the gallery shown
            self._gallery = _gallery_from(source[0])
            level = max(level, CAPTURE)
        gallery = self._gallery
        if level >= CAPTURE or previous.maps is None:
            if previous.backbone is None:
                self._busy("Importing torch and timm...", 0)
                import torch  # noqa: F401 - the first import takes seconds: say so first

            backbone = self._backbone("main", s.model, s.pretrained, s.device)
            snap = self._fit_selection(backbone, snap)
            s = SimpleNamespace(**snap)
            selected = self._selected(backbone, list(s.out_indices), s.precision)
            images = self._images(gallery, s)
            maps = self._capture(backbone, selected, images, list(s.layers))
            compare_maps = self._compare(selected, images, s)
            if maps is not previous.maps or compare_maps is not previous.compare_maps:
                self._capture_id += 1
            view_image = self._part((self._capture_id, "view"), lambda: self._model_view(selected, images[0]))
        else:
            selected, maps, compare_maps = previous.backbone, previous.maps, previous.compare_maps
            images, view_image = None, previous.view
        snap = self._fit_display(maps, snap, level)
        if snap["tab"] not in self.views and self.views:
            raise _Refused(f'No tab named "{snap["tab"]}"; the tabs are {", ".join(self.views)}.')
        scene = Scene(
            self,
            snap,
            backbone=selected,
            maps=maps,
            compare_maps=compare_maps,
            gallery=gallery,
            image=gallery.images[snap["image_index"]],
            view=view_image,
            capture_id=self._capture_id,
        )
        views = dict(previous.views)
        compute = self.views.get(snap["tab"])
        if compute is not None:
            if level >= CAPTURE:
                self._busy("Drawing...", 3)  # a redraw alone is quick: no message for it
            views[snap["tab"]] = compute(scene)
            self.draws += 1
        return Frame(
            number=previous.number + 1,
            state=MappingProxyType(snap),
            backbone=selected,
            maps=maps,
            compare_maps=compare_maps,
            gallery=gallery,
            view=view_image,
            scene=scene,
            views=MappingProxyType(views),
            devices=self._devices(),
            layers=self._part((self._capture_id, "layers"), lambda: tuple(_list_layers(selected))),
        )

    def _fail(self, snap: dict[str, object], err: BaseException) -> None:
        """Put the state back to what is shown and say why."""
        import torch

        if isinstance(err, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()
            message = (
                "Out of GPU memory. Switch Device to cpu, use fewer or smaller images, or a smaller checkpoint; "
                "what was shown before is kept."
            )
        else:
            message = str(err).strip() or type(err).__name__
        _log.info("panel: refused: %s", message, exc_info=not isinstance(err, (_Refused, ValueError)))
        if self._applied is None:
            self._failed = snap  # nothing shown yet: the next change tries again from the start
        else:
            now = self.state.snapshot()
            for name, value in self._applied.items():
                if now[name] != value:
                    setattr(self.state, name, list(value) if isinstance(value, tuple) else value)
        self.report(message)

    def report(self, error: object) -> None:
        """Show an error in the status line (what is shown stays); a refused control value comes here."""
        message = str(error).strip() or type(error).__name__
        self._publish(
            dataclasses.replace(self.frame, status=Status("error", f"<b>Error:</b> {html.escape(message)}"))
        )

    def _publish(self, frame: Frame) -> None:
        with self._publishing:
            self.frame = frame
            for listener in list(self.listeners):
                try:
                    listener(frame)
                except Exception:  # noqa: BLE001 - a view that fails to show must not stop the others
                    _log.exception("panel view failed to show frame %d", frame.number)

    def _ok(self, frame: Frame, ran: bool, start: float) -> Status:
        bb = frame.backbone
        weights = _WEIGHTS.get(bb.weights, html.escape(str(bb.weights)))
        note = getattr(bb, "weights_note", None)
        if note:
            weights += f" ({html.escape(str(note))})"
        image = frame.gallery.images[frame.state["image_index"]]
        frames = image.info.get("frames", 1)
        notes = f" · animated image: first of {frames} frames" if frames > 1 else ""
        unaligned = frame.maps.unaligned.get(frame.state["stage"]) if frame.maps is not None else None
        if unaligned:
            notes += (
                f" · <b>{html.escape(frame.state['stage'])}</b> is not an image-aligned map "
                f"({html.escape(unaligned)}): no overlay"
            )
        took = (time.perf_counter() - start) * 1000
        return Status(
            "warn" if bb.weights == "random" or unaligned else "ok",
            f"<b>{html.escape(bb.spec)}</b> · {weights} · {bb.device.type} · "
            f"{str(bb.dtype).replace('torch.', '')} · updated in {took:.0f} ms "
            f"({'forward pass' if ran else 'from cache'}){notes}",
        )

    # -- loading ---------------------------------------------------------------------------------------------
    def _backbone(self, slot: str, spec: str, pretrained: bool, device: str) -> Backbone:
        """The backbone of ``slot`` ("main" or "compare"), loaded when its key changed; the slot's previous one
        is released once the new one has loaded, so a failed load keeps what is shown."""
        key = (spec, pretrained, device)
        held = self._backbones.get(slot)
        if held is not None and held[0] == key:
            return held[1]
        from ..backbones import load_backbone

        what = "checkpoint B" if slot == "compare" else "the checkpoint"
        self._busy(
            f"Loading {what} <b>{html.escape(spec)}</b> ({'pretrained' if pretrained else 'random'} weights)...",
            1,
        )
        backbone = load_backbone(spec, pretrained=pretrained, device=device)
        self.release(slot)
        self._backbones[slot] = (key, backbone)
        self.loads += 1
        return backbone

    def release(self, slot: str) -> None:
        """Drop a slot's backbone and its captures, and give the memory back."""
        held = self._backbones.pop(slot, None)
        if held is None:
            return
        for key in [k for k in self._captures if k[0] == id(held[1])]:
            del self._captures[key]
        on_cuda = held[1].device.type == "cuda"
        del held
        gc.collect()
        if on_cuda:
            import torch

            torch.cuda.empty_cache()

    def _fit_selection(self, backbone: Backbone, snap: dict[str, object]) -> dict[str, object]:
        """A new checkpoint keeps the stages and layers it has; the rest go (the first stage when none is left)."""
        names = backbone.stage_names
        if self._pending_out_features is not None:
            from ..stages import select_stages

            wanted, self._pending_out_features = self._pending_out_features, None
            indices = tuple(select_stages(names, out_features=wanted)[1])
        elif self.frame.backbone is not None and self.frame.backbone.model is backbone.model:
            return snap
        else:
            indices = tuple(i for i in snap["out_indices"] if -len(names) <= i < len(names)) or (0,)
        known = set(_list_layers(backbone))
        layers = tuple(name for name in snap["layers"] if name in known)
        return self._adjust(snap, out_indices=indices, layers=layers)

    def _adjust(self, snap: dict[str, object], **values) -> dict[str, object]:
        """Set state traits the panel itself corrects (a clamp after a change elsewhere) and return the snapshot."""
        snap = dict(snap)
        for name, value in values.items():
            if snap[name] != value:
                snap[name] = value
                setattr(self.state, name, list(value) if isinstance(value, tuple) else value)
        return snap

    # -- capturing -------------------------------------------------------------------------------------------
    @staticmethod
    def _selected(backbone: Backbone, out_indices: list[int], precision: str) -> Backbone:
        """A copy of ``backbone`` with ``out_indices`` selected and ``precision`` set (the shared one is kept)."""
        import torch

        selected = copy.copy(backbone)
        selected.out_indices = out_indices  # transformers' rules; a refusal raises here
        dtype = getattr(torch, precision)
        if dtype != torch.float32 and selected.device.type == "cpu":
            raise _Refused(
                f"{precision} needs a GPU; this model runs on the CPU. Choose float32, or device cuda."
            )
        selected.precision = None if dtype == torch.float32 else dtype  # autocast: the weights stay as loaded
        return selected

    @staticmethod
    def _images(gallery: Gallery, s: SimpleNamespace) -> list[Image.Image]:
        for name in ("image_index",) + (("compare_image_index",) if s.compare == "images" else ()):
            index = getattr(s, name)
            if index >= len(gallery):
                raise _Refused(
                    f"{name}={index}: the gallery has {len(gallery)} images, 0-{len(gallery) - 1}."
                )
        images = [gallery.images[s.image_index]]
        if s.compare == "images":
            if len(gallery) < 2:
                raise _Refused("Comparing images needs two images in the gallery: upload another one.")
            images.append(gallery.images[s.compare_image_index])
        return images

    def _capture(
        self, owner: Backbone, selected: Backbone, images: list[Image.Image], layers: list[str]
    ) -> FeatureMaps:
        """Maps of the selected stages and ``layers`` for ``images`` (``selected``: a copy of ``owner``, the
        cached backbone), from the cache when this ran before."""
        names = [*selected.out_features, *(n for n in layers if n not in selected.out_features)]
        key = (id(owner), str(selected.precision), tuple(id(i) for i in images), tuple(names))
        cached = self._captures.get(key)
        if cached is not None:
            self._captures.move_to_end(key)
            return cached
        self._busy(f"Running <b>{html.escape(selected.spec)}</b> on {len(images)} image(s)...", 2)
        maps = selected.capture(selected.pixel_values(images), layers=names)
        self.forward_passes += 1
        self._captures[key] = maps
        while len(self._captures) > self.max_captures:
            self._captures.popitem(last=False)
        return maps

    def _compare(
        self, selected: Backbone, images: list[Image.Image], s: SimpleNamespace
    ) -> FeatureMaps | None:
        """Checkpoint B's maps of the same stages for the first image, in 'checkpoints' mode."""
        if s.compare != "checkpoints":
            self.release("compare")
            return None
        other = self._backbone("compare", s.compare_model or s.model, s.compare_pretrained, s.device)
        missing = [name for name in selected.out_features if name not in other.stage_names]
        if missing:
            raise _Refused(
                f"Checkpoint B ({other.spec}) has other stages ({other.stage_names}); compare checkpoints of the "
                "same architecture."
            )
        indices = [other.stage_names.index(name) for name in selected.out_features]
        return self._capture(other, self._selected(other, indices, s.precision), images[:1], list(s.layers))

    @staticmethod
    def _model_view(backbone: Backbone, image: Image.Image) -> Image.Image:
        from ..images import model_view

        return model_view(image, backbone.preprocess)

    def _part(self, key: tuple, compute: Callable[[], Any]) -> Any:
        if key in self._parts:
            self._parts.move_to_end(key)
            return self._parts[key]
        value = compute()
        self._parts[key] = value
        while len(self._parts) > self.max_parts:
            self._parts.popitem(last=False)
        return value

    @staticmethod
    def _devices() -> tuple[str, ...]:
        import torch

        return ("auto", "cpu") + (("cuda",) if torch.cuda.is_available() else ())

    # -- drawing ---------------------------------------------------------------------------------------------
    def _fit_display(self, maps: FeatureMaps, snap: dict[str, object], level: int) -> dict[str, object]:
        """Stage, channel and page that exist. After a capture or a stage change they are corrected (a layer just
        added is shown, the channel clamped, the page reset); a value typed for the map on show that it does not
        have is refused."""
        names = list(maps)
        applied = self._applied or {}
        corrected: dict[str, object] = {}
        stage = snap["stage"]
        added = [name for name in snap["layers"] if name not in applied.get("layers", ())] if applied else []
        if stage not in names:
            if level < CAPTURE and applied and applied["stage"] != stage:
                raise _Refused(f'No map named "{stage}" on show; choose one of: {", ".join(names)}.')
            stage = corrected["stage"] = added[-1] if added and added[-1] in names else names[0]
        elif level >= CAPTURE and added and added[-1] in names:
            stage = corrected["stage"] = added[-1]  # a layer just added is what the user wants to see
        count = maps[stage].shape[1]
        same_map = bool(applied) and level < CAPTURE and applied["stage"] == stage
        if snap["channel"] >= count:
            if same_map and applied["channel"] != snap["channel"]:
                raise _Refused(
                    f"Channel {snap['channel']} does not exist: {stage} has {count} channels, 0-{count - 1}."
                )
            corrected["channel"] = count - 1
        pages = -(-count // snap["page_size"])
        if snap["page"] >= pages:
            if same_map and applied["page"] != snap["page"] and applied["page_size"] == snap["page_size"]:
                raise _Refused(
                    f"Page {snap['page']} does not exist: {stage} has {pages} pages of {snap['page_size']}."
                )
            corrected["page"] = 0
        return self._adjust(snap, **corrected)

    # -- code ------------------------------------------------------------------------------------------------
    def code(self, grid: Grid | None = None) -> str:
        """Library code that draws ``grid`` (by default the one on the Grid tab): run as given in a fresh
        interpreter, it binds ``png`` to the same bytes as the grid's :attr:`Grid.png`.

        Example::

            >>> print(controller.code())
            import explorer
            <BLANKLINE>
            bb = explorer.load_backbone("default", pretrained=True, device="cpu")
            ...
            png = explorer.to_png(grid)
        """
        frame = self.frame
        if grid is None:
            data = frame.views.get("Grid")
            grid = getattr(data, "grid", None)
        if grid is None or frame.backbone is None:
            raise _Refused("Nothing is drawn yet: there is no code for the view.")
        bb, s = frame.backbone, frame.state
        lines = ["import explorer", ""]
        if bb.precision is not None:
            lines[0:0] = ["import torch"]
        lines.append(
            f"bb = explorer.load_backbone({bb.spec!r}, pretrained={s['pretrained']}, device={str(bb.device)!r})"
        )
        if bb.weights == "random":
            lines.append("# random weights: a fresh run draws other weights, so other maps")
        if bb.precision is not None:
            lines.append(f"bb.precision = torch.{str(bb.precision).replace('torch.', '')}")
        indices = [s["image_index"]] + ([s["compare_image_index"]] if s["compare"] == "images" else [])
        sources = [frame.gallery.sources[i] for i in indices]
        loads = []
        for kind, where in sources:
            if kind == "sample":
                loads.append(f"explorer.sample_images([{where!r}])[{where!r}]")
            elif kind == "path":
                loads.append(f"explorer.load_image({where!r})")
            else:
                loads.append(f"explorer.load_image({where!r})  # the uploaded file: save it here first")
        lines.append("images = [" + ", ".join(loads) + "]")
        names = list(frame.maps)
        lines.append(f"maps = bb.capture(bb.pixel_values(images), layers={names!r})")
        args = ", ".join(f"{k}={v!r}" for k, v in grid.options)
        lines.append(f"grid = explorer.render_grid(maps[{grid.stage!r}][0].float(), {args})")
        lines.append("png = explorer.to_png(grid)")
        return "\n".join(lines) + "\n"


def _list_layers(backbone: Backbone) -> list[str]:
    from ..hooks import list_layers

    return list_layers(backbone)
