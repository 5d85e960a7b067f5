"""An HTML widget whose rows and bars pick a channel: elements with a ``data-channel`` attribute are clickable.

Example::

    >>> table = ClickHTML(on_click=lambda channel: print(channel))
    >>> table.value = '<table><tr data-channel="3"><td>channel 3</td></tr></table>'
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anywidget
from traitlets import Unicode

__all__ = ["ClickHTML"]


class ClickHTML(anywidget.AnyWidget):
    """HTML whose ``data-channel`` elements call ``on_click(channel)`` when clicked (``value``: the HTML)."""

    _esm = Path(__file__).with_name("static") / "clickhtml.js"
    _css = """
    .explorer-click-html [data-channel] { cursor: pointer; }
    .explorer-click-html tr[data-channel]:hover td { background: #eef2fb; }
    .explorer-click-html rect[data-channel]:hover { opacity: 0.7; }
    """
    value = Unicode("", help="The HTML shown.").tag(sync=True)

    def __init__(self, *, on_click: Callable[[int], None], **kwargs) -> None:
        super().__init__(**kwargs)
        self.on_click = on_click
        self.on_msg(self._on_message)

    def _on_message(self, _widget, content: dict, _buffers) -> None:
        if content.get("event") == "click":
            self.on_click(int(content["channel"]))
