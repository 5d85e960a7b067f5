"""Two small anywidgets the panel is built from; their JavaScript ships in ``static/`` (no CDN, no build step).

- :class:`ImageView`: PNG or JPEG bytes with a title and a colour bar; for a channel grid, the channel, position
  and value under the pointer, a click that zooms the channel (or picks a location), and outlined locations. One message per update, the bytes as a binary
  buffer (never JSON arrays of values).
- :class:`Upload`: a file button that sends files in chunks under the Jupyter server's 10 MiB message limit,
  and refuses files over ``max_bytes`` before sending anything.

Example::

    >>> view = ImageView(width=640, clickable=True, on_click=lambda channel: print(channel))
    >>> view.show(png_bytes, "png", title="blocks.1 · channels 0-63", grid=layout_dict)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import anywidget
from traitlets import Bool, Bytes, Dict, Int, List, Unicode

__all__ = ["ImageView", "Upload", "MAX_UPLOAD_BYTES"]

_log = logging.getLogger(__name__)
_STATIC = Path(__file__).with_name("static")

MAX_UPLOAD_BYTES = 64 * 2**20
"""Largest file the upload button sends (images are decoded with explorer's own pixel limits after that)."""


class ImageView(anywidget.AnyWidget):
    """An image with a title, a colour bar, hover values and click-to-zoom (see the module docs).

    Args:
        value_at: ``(channel, row, col) -> float`` for the value under the pointer; None shows no value.
        on_click: called with the channel clicked.
        on_pick: called with ``(channel, row, col)`` clicked: the tile and the location on its map.
    """

    _esm = _STATIC / "imageview.js"
    _css = _STATIC / "imageview.css"
    data = Bytes(b"", help="The encoded image.").tag(sync=True)
    format = Unicode("png", help="png or jpeg.").tag(sync=True)
    title = Unicode("").tag(sync=True)
    width = Int(0, help="Display width in CSS pixels; 0 for the image's own.").tag(sync=True)
    grid = Dict(help="Tile geometry for hover and click: cols, tile, pad, channels, map.").tag(sync=True)
    colorbar = Dict(help="colors (CSS), low, high, note.").tag(sync=True)
    clickable = Bool(False).tag(sync=True)
    marked = Int(-1, help="A channel of the grid outlined (the zoomed one); -1 for none.").tag(sync=True)
    marks = List(
        help="Cells of the grid outlined: [channel, row, col, kind] with kind 'query' or 'best' (a location of "
        "a map, not a whole tile)."
    ).tag(sync=True)

    def __init__(
        self,
        *,
        value_at: Callable[[int, int, int], float] | None = None,
        on_click: Callable[[int], None] | None = None,
        on_pick: Callable[[int, int, int], None] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.value_at = value_at
        self.on_click, self.on_pick = on_click, on_pick
        self.on_msg(self._on_message)

    def show(self, data: bytes, format: str, **traits) -> None:
        """Replace the image (and any of title, grid, colorbar) in one message."""
        with self.hold_sync():
            self.format = format
            self.data = data
            for name, value in traits.items():
                setattr(self, name, value)

    def _on_message(self, _widget, content: dict, _buffers) -> None:
        event = content.get("event")
        at = (int(content.get("channel", -1)), int(content.get("row", -1)), int(content.get("col", -1)))
        if event == "hover":
            value = None
            if self.value_at is not None:
                try:
                    value = f"{self.value_at(*at):.4g}"
                except (IndexError, KeyError, ValueError, RuntimeError):
                    value = None  # the pointer is over a grid that has just been replaced
            self.send({"hover": {"channel": at[0], "row": at[1], "col": at[2], "value": value}})
        elif event == "click":
            if self.on_click is not None:
                self.on_click(at[0])
            if self.on_pick is not None:
                self.on_pick(*at)


class Upload(anywidget.AnyWidget):
    """A file button; ``on_file(name, data)`` is called for each file received, ``on_refused(name, size)`` for
    each file over ``max_bytes`` (nothing of it was sent)."""

    _esm = _STATIC / "upload.js"
    description = Unicode("Upload").tag(sync=True)
    accept = Unicode("image/*").tag(sync=True)
    max_bytes = Int(MAX_UPLOAD_BYTES).tag(sync=True)
    chunk_bytes = Int(4 * 2**20, help="Bytes per message, under the server's 10 MiB limit.").tag(sync=True)

    def __init__(
        self,
        *,
        on_file: Callable[[str, bytes], None],
        on_refused: Callable[[str, int], None],
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.on_file, self.on_refused = on_file, on_refused
        self._parts: dict[str, list[bytes | None]] = {}
        self.on_msg(self._on_message)

    def _on_message(self, _widget, content: dict, buffers) -> None:
        name = str(content.get("name", "upload"))
        if content.get("event") == "refused":
            self.on_refused(name, int(content.get("size", 0)))
            return
        if content.get("event") != "chunk" or not buffers:
            return
        count, index = int(content["count"]), int(content["index"])
        parts = self._parts.setdefault(str(content["id"]), [None] * count)
        parts[index] = bytes(buffers[0])
        if all(part is not None for part in parts):
            del self._parts[str(content["id"])]
            self.on_file(name, b"".join(parts))
