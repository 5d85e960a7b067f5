"""Model work off the worker, and the draws made meanwhile: loads and forward passes run in a helper thread
(:meth:`Scheduler.offload`); while one runs, the engine's worker draws a change that needs no model at once, from the maps on show, on a tab whose view runs no model (the
controller's ``quick`` titles): a colour map chosen during a large model's forward shows within a draw, not after
the forward. The status line keeps saying what runs, and nothing is corrected here: the pass, once done, draws
the choices made meanwhile (:meth:`ModelWork._caught_up`) and applies the corrections.

Example (the controller is a ``ModelWork``; in its build, ``self._capture(...)`` runs the forward in the helper
thread while a colour map set meanwhile is drawn, and ``self._caught_up(snap)`` draws it into the pass too)::

    >>> app = explorer.Explorer(display=False)
    >>> isinstance(app.controller, ModelWork)
    True
"""

from __future__ import annotations

import dataclasses
import html
import logging
from collections.abc import Callable
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..state import DRAW, ExplorerState
from . import rules

if TYPE_CHECKING:
    from ...backbones import Backbone
    from ...hooks import FeatureMaps
    from .frame import Frame

__all__ = ["ModelWork"]

_log = logging.getLogger(__name__)


class ModelWork:
    """The controller's loads and captures, and its draws while they run (see the module docs); mixed into
    :class:`~explorer.widgets.engine.Controller`, whose state it reads."""

    def _load(
        self,
        post: Callable[[Frame], None],
        snap: dict[str, object],
        slot: str,
        spec: str,
        pretrained: bool,
        message: str,
    ) -> tuple[int, Backbone]:
        """``(serial, backbone)`` of ``slot`` (loaded, saying ``message`` first, when it changed)."""

        def busy() -> None:
            self._busy(post, message, 1)

        return self._offload(
            post, snap, lambda: self.runtime.backbone(slot, spec, pretrained, snap["device"], busy)
        )

    def _capture(
        self,
        post: Callable[[Frame], None],
        snap: dict[str, object],
        serial: int,
        selected: Backbone,
        images: list,
        keys: list,
        running: Callable[[], None],
    ) -> FeatureMaps:
        """The maps of ``selected``'s stages and the state's layers for ``images`` (cached by content)."""
        layers = list(snap["layers"])
        return self._offload(
            post, snap, lambda: self.runtime.capture(serial, selected, images, keys, layers, running)
        )

    def _compare(self, post, selected: Backbone, images: list, keys: list, snap: dict, running):
        """Checkpoint B's maps of the same stages for the first image, in 'checkpoints' mode."""
        if snap["compare"] != "checkpoints":
            self.runtime.release("compare")
            return None
        spec = snap["compare_model"] or snap["model"]
        message = f"Loading checkpoint B <b>{html.escape(spec)}</b>..."
        serial, other = self._load(post, snap, "compare", spec, snap["compare_pretrained"], message)
        b = rules.select(other, rules.same_stages(selected, other), snap["precision"])
        return self._capture(post, snap, serial, b, images, keys, running)

    def _offload(
        self, post: Callable[[Frame], None], snap: dict[str, object], work: Callable[[], Any]
    ) -> Any:
        """``work()`` (a load or a forward pass) in a helper thread, drawing display-only changes meanwhile."""
        return self.scheduler.offload(work, lambda: self._interim(post, snap))

    def _display_changes(self, snap: dict[str, object]) -> dict[str, object]:
        """The draw-only choices made since ``snap`` was taken."""
        now = self._snapshot()
        return {n: v for n, v in now.items() if ExplorerState.work(n) == DRAW and rules.differs(snap[n], v)}

    def _caught_up(self, snap: dict[str, object]) -> dict[str, object]:
        """``snap`` with the draw-only choices made while the model ran: the pass draws them, in one frame."""
        return {**snap, **self._display_changes(snap)}

    def _interim(self, post: Callable[[Frame], None], snap: dict[str, object]) -> None:
        """Draw the maps on show anew with the display choices made since ``snap`` (the running pass's), on a tab
        whose view runs no model; the status line keeps saying what runs. Nothing is corrected here: the pass
        that follows applies the corrections."""
        shown = self._built
        changes = self._display_changes(snap)
        if shown.maps is None or shown.failed or not changes:
            return
        wanted = {**shown.state, **changes}
        if wanted["tab"] not in self.quick or not any(
            rules.differs(shown.state[n], v) for n, v in changes.items()
        ):
            return
        applied, self._applied = self._applied, dict(shown.state)
        try:
            frame, _corrected, _refused = self._build(wanted, DRAW, post, interim=True)
        except Exception:  # noqa: BLE001 - the pass that follows draws and reports it
            _log.debug("panel: interim draw failed", exc_info=True)
            return
        finally:
            self._applied = applied
        status = self._busy_status or frame.status
        self._built = dataclasses.replace(frame, corrections=MappingProxyType({}), status=status)
        post(self._built)
