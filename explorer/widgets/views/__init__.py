"""The panel's tabs: one module per tab, each a :class:`View` registered in tab order.

A view has three parts. ``compute(scene)`` runs in the engine's worker with no widgets: it reads the
:class:`~explorer.widgets.engine.Scene` (maps, statistics, drawing helpers cached per capture or by content) and
does the tab's model work there (a class-activation map, a scan), returning immutable data that the engine puts
in the frame under the view's title. ``update(frame)`` runs on the kernel's thread and writes that data into the
view's widgets, only the parts that changed; it runs no model. ``code(frame, data)`` (optional) returns the body
of the library code for the tab (it must bind ``png``), the gallery indices it uses, and the bytes the view
shows that ``png`` must equal; tabs without it give the Grid's code.

**Adding a tab** (a "Patches" tab, say) is one module here with a ``@register``-ed subclass, imported at the end
of this file, plus any new choice as an :class:`~explorer.widgets.state.ExplorerState` trait (tagged ``draw``,
``capture`` or ``load``). The worker gives ``compute`` a scene; ``compute`` returns what the tab draws (PNG
bytes, HTML, numbers); ``update`` puts it in widgets; ``code`` writes it down. No other view, and nothing in the
engine, changes.

Example::

    >>> @register
    ... class Notes(View):
    ...     title = "Notes"
    ...     def __init__(self, controls):
    ...         super().__init__(controls)
    ...         self.widget = widgets.HTML()
    ...     @staticmethod
    ...     def compute(scene):
    ...         return f"{len(scene.maps)} maps"
    ...     def update(self, frame):
    ...         self.widget.value = self.data(frame) or ""
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import ipywidgets as widgets

    from ..controls import Controls
    from ..engine import Frame, Scene

__all__ = ["VIEWS", "View", "register"]


class View:
    """One tab of the panel (see the module docs)."""

    title: ClassVar[str]
    widget: widgets.Widget

    def __init__(self, controls: Controls) -> None:
        self.controls = controls

    @staticmethod
    def compute(scene: Scene) -> Any:
        """The data this tab shows for ``scene``; no widgets, nothing mutable."""
        raise NotImplementedError

    def update(self, frame: Frame) -> None:
        """Show ``frame``'s data for this tab; write only what changed."""
        raise NotImplementedError

    quick: ClassVar[bool] = False
    """True when ``compute`` runs no model (it draws the scene's maps): the engine may then draw this tab while
    a load or a forward pass runs (see :mod:`explorer.widgets.engine.offload`)."""

    code: ClassVar[Callable[[Frame, Any], tuple[list[str], list[int], bytes] | None] | None] = None
    """``code(frame, data) -> (body lines, gallery indices, png)``: the library code for this tab, and the bytes
    its ``png`` binds (the view's); None when the tab shows nothing to write down (see the module docs)."""

    def data(self, frame: Frame) -> Any:
        """This tab's data in ``frame`` (None before it was first drawn)."""
        return frame.views.get(self.title)


VIEWS: list[type[View]] = []
"""The registered views, in tab order."""


def register(view: type[View]) -> type[View]:
    """Add a view class to the panel's tabs (a class decorator)."""
    VIEWS.append(view)
    return view


# the tabs, registered in this order
# isort: off
from . import grid, stats, shapes, compare, cam, dataset, patches  # noqa: E402, F401
# isort: on
