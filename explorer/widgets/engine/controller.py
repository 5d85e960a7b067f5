"""The engine's controller: from an :class:`ExplorerState` to immutable :class:`Frame` s. No widgets here.

Data flows one way: widget -> state -> controller -> frame -> views. A control sets the state; the controller
does only the work the changed traits need (their ``work`` tag: load, capture, draw) and the tab on show needs
(its view's ``compute``, run here: captures, class-activation maps, scans), and posts a new frame; the views
draw it. Nothing is done twice: the :class:`Runtime` keeps backbones, captures and drawn parts by content.

**The one correction path.** The controller never writes the state. When it must correct a value (a channel
clamped after a stage change, a layer just added shown, image B or an upload shown) or refuse one (an unknown
checkpoint, a stage the model lacks: the state goes back to what is shown), it puts ``{trait: (from, to)}`` in
the frame's ``corrections``; the kernel's thread applies them when the frame arrives (:meth:`_deliver`), where
the state still holds ``from``. Until then the worker reads the state with its own corrections laid over it.
A refusal before anything was shown goes back to the state the panel was built with, which is then shown, with
the error kept on the status line until a valid change.

Threads: see :mod:`.scheduler`. Outside a kernel every change is worked at once in the caller's thread.

Example::

    >>> state = ExplorerState(model="resnet18", pretrained=False, device="cpu", out_indices=[1])
    >>> controller = Controller(state, views={"Grid": lambda scene: scene.grid()})
    >>> frame = controller.refresh()
    >>> frame.maps.shapes, controller.forward_passes
    ({'layer1': (1, 64, 56, 56)}, 1)
    >>> state.cmap = "magma"                     # a draw: no forward pass
    >>> controller.forward_passes
    1
"""

from __future__ import annotations

import dataclasses
import html
import logging
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from types import MappingProxyType, SimpleNamespace
from typing import TYPE_CHECKING, Any

from ...errors import ExplorerError, InvalidArgumentError
from ..state import CAPTURE, LOAD, ExplorerState
from . import rules
from .frame import Frame, Scene, Status, ok_status
from .gallery import LIVE, Gallery, add_uploads, gallery_from
from .offload import ModelWork
from .runtime import Runtime, devices, list_layers, model_view
from .scheduler import Scheduler

if TYPE_CHECKING:
    from ...backbones import Backbone

__all__ = ["Controller"]

_log = logging.getLogger(__name__)

MAX_PASSES = 8
"""Passes one round of work makes at most: a pass whose state changed meanwhile is followed by another."""

ComputeT = Callable[[Scene], Any]


def _value(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


class Controller(ModelWork):
    """Turns state changes into frames; see the module docs.

    Args:
        state: the choices to show.
        images: the gallery (paths, bytes, PIL images, arrays); the sample images when None. Read by the first
            round of work, so that constructing a controller imports nothing heavy.
        views: each view's ``compute(scene)`` by title; the state's ``tab`` picks the one computed.
        out_features: stage names to select once the first checkpoint has loaded (instead of ``out_indices``).
        background: work in the engine's worker and deliver on the kernel's loop (see :mod:`.scheduler`).
        quick: titles of the views whose ``compute`` runs no model. While a load or a forward pass runs (in a
            helper thread), a change that only needs a draw is drawn at once on such a tab, from the maps on
            show; the status line keeps saying what runs, and the pass, once done, draws the latest choices.
    """

    def __init__(
        self,
        state: ExplorerState,
        *,
        images: Sequence[object] | None = None,
        views: Mapping[str, ComputeT] | None = None,
        out_features: Sequence[str] | None = None,
        background: bool = False,
        quick: Collection[str] = (),
    ) -> None:
        self.state = state
        self.views: dict[str, ComputeT] = dict(views or {})
        self.quick = frozenset(quick)
        self.runtime = Runtime()
        self.listeners: list[Callable[[Frame], None]] = []
        self.frame = Frame()  # the frame on show (delivered)
        self.draws = 0
        self._built = Frame()  # the last frame the worker built
        self._gallery_source: tuple[Sequence[object] | None] | None = (images,)
        self._gallery = Gallery()
        self._uploads: deque[tuple[str, bytes]] = deque()
        self._pending_out_features = list(out_features) if out_features is not None else None
        self._fallback = state.snapshot()
        self._applied: dict[str, object] | None = None
        self._failed: dict[str, object] | None = None
        self._corrections: dict[str, tuple[object, object]] = {}  # posted, maybe not yet applied
        self._error, self._error_at = "", None
        self._forced = LOAD
        self._capture_id = 0
        self._busy_status: Status | None = None  # what the status line says while a pass runs
        self._main_serial: int | None = None  # the main backbone's serial, once loaded
        self.scheduler = Scheduler(self._work, self._deliver, background)
        state.observe(lambda _change: self.scheduler.request())

    # -- public ----------------------------------------------------------------------------------------------
    @property
    def background(self) -> bool:
        """Whether the work runs in the worker (in a kernel)."""
        return self.scheduler.background

    @background.setter
    def background(self, value: bool) -> None:
        self.scheduler.background = value

    @property
    def forward_passes(self) -> int:
        """Forward passes made for the panel's captures."""
        return self.runtime.forward_passes

    @property
    def loads(self) -> int:
        """Checkpoints loaded."""
        return self.runtime.loads

    def start(self) -> None:
        """The first frame: at once, or in the worker."""
        self.scheduler.request()

    def refresh(self) -> Frame:
        """Do the pending work and return the frame on show (in a kernel: wait for the worker)."""
        self.scheduler.request()
        self.scheduler.wait()
        return self.frame

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the work requested so far is shown; False on timeout."""
        return self.scheduler.wait(timeout)

    def set_images(self, images: Sequence[object] | None) -> None:
        """Replace the gallery (read by the worker); image 0 is shown."""
        self._gallery_source = (images,)
        self._forced = max(self._forced, CAPTURE)
        self.scheduler.request()

    def add_upload(self, name: str, data: bytes) -> None:
        """An uploaded file: decoded in the worker, added to the gallery and shown (or refused with a reason)."""
        self._uploads.append((name, data))
        self._forced = max(self._forced, CAPTURE)
        self.scheduler.request()

    def report(self, error: object) -> None:
        """Show a refusal (a control's value the state refused) on the status line; what is shown stays. Call
        it on the kernel's thread."""
        message = str(error).strip() or type(error).__name__
        self._error, self._error_at = f"<b>Error:</b> {html.escape(message)}", None
        frame = dataclasses.replace(
            self.frame,
            corrections={},
            failed=False,
            status=dataclasses.replace(self.frame.status, error=self._error),
        )
        self._deliver(frame)

    # -- delivery (the kernel's thread) ---------------------------------------------------------------------
    def _deliver(self, frame: Frame) -> None:
        self.frame = frame
        for name, (was, to) in frame.corrections.items():  # the one path that corrects the state
            if not rules.differs(_value(getattr(self.state, name)), was):
                setattr(self.state, name, list(to) if isinstance(to, tuple) else to)
        for listener in list(self.listeners):
            try:
                listener(frame)
            except Exception:  # noqa: BLE001 - a view that fails to show must not stop the others
                _log.exception("panel view failed to show frame %d", frame.number)

    # -- work (the worker) ----------------------------------------------------------------------------------
    def _snapshot(self) -> dict[str, object]:
        """The state, with the corrections already posted laid over it."""
        snap = self.state.snapshot()
        for name, (was, to) in list(self._corrections.items()):
            if rules.differs(snap[name], was):
                del self._corrections[name]  # applied, or changed since
            else:
                snap[name] = to
        return snap

    def _level(self, snap: dict[str, object]) -> int:
        if self._applied is None:
            return LOAD
        changed = [ExplorerState.work(n) for n, v in snap.items() if rules.differs(self._applied[n], v)]
        return max([self._forced, *changed])

    def _work(self, post: Callable[[Frame], None]) -> None:
        for _ in range(MAX_PASSES):
            if not self._pass(post):
                break

    def _pass(self, post: Callable[[Frame], None]) -> bool:
        snap = self._snapshot()
        level = self._level(snap)
        if not level or (self._failed == snap and not self._forced):
            return False
        self._forced = 0
        self._busy_status = None
        start, runs = time.perf_counter(), self.runtime.forward_passes
        try:
            frame, corrected, refused = self._build(snap, level, post)
        except Exception as err:  # noqa: BLE001 - every failure lands in the status line; the panel lives on
            self._fail(snap, err, post)
            return False
        if refused:  # kept on the status line until the state changes again
            self._error = f"<b>Error:</b> {html.escape(' '.join(refused))}"
            self._error_at = {**snap, **corrected}
        elif self._error and (self._error_at is None or rules.differs(self._error_at, snap)):
            self._error = ""  # a valid change: the refusal is no longer news
        self._applied, self._failed = dict(frame.state), None
        corrections = {n: (snap[n], v) for n, v in corrected.items() if rules.differs(snap[n], v)}
        self._corrections.update(corrections)
        ran = self.runtime.forward_passes > runs
        self._built = dataclasses.replace(
            frame,
            corrections=MappingProxyType(corrections),
            update_ms=(time.perf_counter() - start) * 1000,
            ran=ran,
            status=ok_status(frame, ran, (time.perf_counter() - start) * 1000, self._error),
        )
        post(self._built)
        return True

    def _fail(self, snap: dict[str, object], err: BaseException, post: Callable[[Frame], None]) -> None:
        """Go back to what is shown (or, before anything was, to the state the panel was built with); say why."""
        import torch

        if isinstance(err, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()
            message = (
                "Out of GPU memory. Switch Device to cpu, use fewer or smaller images, or a smaller checkpoint; "
                "what was shown before is kept."
            )
        else:
            message = str(err).strip() or type(err).__name__
        _log.info("panel: refused: %s", message, exc_info=not isinstance(err, (ExplorerError, ValueError)))
        target = self._applied if self._applied is not None else self._fallback
        corrections = {n: (v, target[n]) for n, v in snap.items() if rules.differs(target[n], v)}
        self._failed = None if corrections else snap  # nothing to go back to: wait for the next change
        self._corrections.update(corrections)
        self._error, self._error_at = f"<b>Error:</b> {html.escape(message)}", dict(target)
        status = self._built.status if self._applied is not None else Status("warn", "Nothing is shown yet.")
        post(
            dataclasses.replace(
                self._built,
                corrections=MappingProxyType(corrections),
                status=dataclasses.replace(status, progress=None, error=self._error),
                failed=True,
            )
        )

    def _busy(self, post: Callable, message: str, step: int, steps: int = 4, views: dict | None = None):
        status = Status("busy", message, (step, steps), self._error)
        self._busy_status = status
        views = MappingProxyType({**self._built.views, **(views or {})})  # partial results shown meanwhile
        post(dataclasses.replace(self._built, corrections={}, views=views, status=status, failed=False))

    def _read_gallery(self, post: Callable[[Frame], None], corrected: dict) -> tuple[Gallery, list[str]]:
        """The gallery with any new source read and uploads decoded (the first new image is shown), and the
        reasons of uploads refused."""
        if self._gallery_source is not None:
            self._busy(post, "Reading the images...", 0)
            source, self._gallery_source = self._gallery_source, None  # a failure keeps the gallery shown
            self._gallery = gallery_from(source[0])
            corrected["image_index"] = 0
        uploads = [self._uploads.popleft() for _ in range(len(self._uploads))]
        self._gallery, first, refused = add_uploads(self._gallery, uploads)
        if first is not None:
            corrected["image_index"] = first
        return self._gallery, refused

    def _build(
        self, snap: dict[str, object], level: int, post: Callable[[Frame], None], interim: bool = False
    ) -> tuple[Frame, dict[str, object], list[str]]:
        """The frame for ``snap``, the values it corrected, and the reasons of uploads refused (an ``interim``
        draw leaves new images and uploads to the pass it interrupts)."""
        corrected: dict[str, object] = {}
        previous, started = self._built, dict(snap)
        # a pass for camera frames alone says nothing while it runs and draws: at ten frames a second the
        # messages would only flicker on the status line and cost the kernel and the browser a redraw each
        live = not interim and self._gallery_source is None and previous.maps is not None
        live = live and bool(self._uploads) and all(name == LIVE for name, _ in self._uploads)
        if interim:
            gallery, refused = previous.gallery, []
        else:
            gallery, refused = self._read_gallery(post, corrected)
        if corrected:
            snap = {**snap, **corrected}
            level = max(level, CAPTURE)
        if level >= CAPTURE or previous.maps is None:
            if previous.backbone is None:
                self._busy(post, "Importing torch and timm...", 0)
                import torch  # noqa: F401 - the first import takes seconds: say so first

            s = SimpleNamespace(**snap)
            weights = "pretrained" if s.pretrained else "random"
            message = f"Loading the checkpoint <b>{html.escape(s.model)}</b> ({weights} weights)..."
            serial, backbone = self._load(post, snap, "main", s.model, s.pretrained, message)
            if self._pending_out_features is not None or self._main_serial not in (None, serial):
                corrected.update(self._fit_selection(backbone, snap))
                snap = {**snap, **corrected}
            self._main_serial = serial
            s = SimpleNamespace(**snap)
            selected = rules.select(backbone, s.out_indices, s.precision)
            indices = rules.shown_images(gallery, snap)
            images = [gallery.images[i] for i in indices]
            keys = [gallery.keys[i] for i in indices]

            def running() -> None:
                if not live:
                    self._busy(post, f"Running <b>{html.escape(s.model)}</b> on {len(images)} image(s)...", 2)

            maps = self._capture(post, snap, serial, selected, images, keys, running)
            compare_maps = self._compare(post, selected, images[:1], keys[:1], snap, running)
            snap = self._caught_up(snap)
            if maps is not previous.maps or compare_maps is not previous.compare_maps:
                self._capture_id += 1
            view_image = self.runtime.part(
                (self._capture_id, "view"), lambda: model_view(images[0], selected.preprocess)
            )
        else:
            p = previous
            selected, maps, compare_maps, view_image = p.backbone, p.maps, p.compare_maps, p.view
        corrected.update(rules.fit_display(maps, snap, self._applied, level))
        snap = {**snap, **corrected}
        if snap["tab"] not in self.views and self.views:
            raise InvalidArgumentError(f'No tab named "{snap["tab"]}"; the tabs are {", ".join(self.views)}.')
        scene = Scene(
            self.runtime,
            snap,
            backbone=selected,
            backbone_key=(self._main_serial, str(selected.precision)),
            maps=maps,
            compare_maps=compare_maps,
            gallery=gallery,
            image=gallery.images[snap["image_index"]],
            image_key=gallery.keys[snap["image_index"]],
            view=view_image,
            capture_id=self._capture_id,
            progress=lambda message, done, of, views=None: (
                None if live and views is None else self._busy(post, message, done, of, views)
            ),
            changed=lambda: rules.differs(self._snapshot(), started),
        )
        views = dict(previous.views)
        compute = self.views.get(snap["tab"])
        if compute is not None:
            if level >= CAPTURE and not live:
                self._busy(post, "Drawing...", 3)  # a redraw alone is quick: no message for it
            views[snap["tab"]] = compute(scene)
            self.draws += 1
            refused.extend(filter(None, [getattr(views[snap["tab"]], "refusal", "")]))  # attention on a CNN
        frame = Frame(
            number=self._built.number + 1,  # after any interim frame
            state=MappingProxyType(snap),
            backbone=selected,
            maps=maps,
            compare_maps=compare_maps,
            gallery=gallery,
            view=view_image,
            scene=scene,
            views=MappingProxyType(views),
            devices=devices(),
            layers=self.runtime.part((self._capture_id, "layers"), lambda: tuple(list_layers(selected))),
            stage_table=self.runtime.part(
                (self._capture_id, "stage table"), lambda: tuple(selected.stage_table())
            ),
        )
        return frame, corrected, refused

    # -- loading and capturing -----------------------------------------------------------------------------
    def _fit_selection(self, backbone: Backbone, snap: dict[str, object]) -> dict[str, object]:
        """A new checkpoint keeps the stages and layers it has (or selects the ``out_features`` asked for)."""
        if self._pending_out_features is not None:
            from ...stages import select_stages

            wanted, self._pending_out_features = self._pending_out_features, None
            return {"out_indices": tuple(select_stages(backbone.stage_names, out_features=wanted)[1])}
        return rules.fit_selection(backbone.stage_names, list_layers(backbone), snap)
