"""The panel's tabs: one module per tab, each a :class:`View` registered in tab order.

A view has two halves. ``compute(scene)`` runs in the controller's thread with no widgets: it reads the
:class:`~explorer.widgets.controller.Scene` (maps, statistics, drawing helpers cached per capture) and returns
immutable data, which the controller puts in the frame under the view's title. ``update(frame)`` writes that data
into the view's widgets, only the parts that changed (a part that is the same object as last time is skipped).

A new tab (a dataset scan, a class-activation map) is a new module with a ``@register``-ed subclass, imported at
the end of this file; no other view changes.

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

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import ipywidgets as widgets

    from ..controller import Frame, Scene
    from ..controls import Controls

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
from . import grid, stats, shapes, compare, cam, dataset  # noqa: E402, F401
# isort: on
