"""Two small anywidgets the panel is built from; their JavaScript ships in ``static/`` (no CDN, no build step).

- :class:`ImageView`: PNG or JPEG bytes with a title and a colour bar; for a channel grid, the channel, position
  and value under the pointer, a click that zooms the channel (or picks a location), and outlined locations. One message per update, the bytes as a binary
  buffer (never JSON arrays of values).
- :class:`Upload`: a file button that sends files in chunks under the Jupyter server's 10 MiB message limit,
  and refuses files over ``max_bytes`` before sending anything; the kernel checks every chunk message and bounds
  what it holds (see the class).

Example::

    >>> view = ImageView(on_click=lambda channel: print(channel))
    >>> view.show(to_png(render_grid(maps["blocks.1"])), "png", title="blocks.1 · channels 0-63")
    >>> view.format, view.title
    ('png', 'blocks.1 · channels 0-63')
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anywidget
from traitlets import Bool, Bytes, Dict, Int, List, Unicode

from .._args import shown

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


MAX_IN_FLIGHT = 3
"""Files the kernel assembles at once (the browser sends one file at a time)."""

MAX_PENDING_BYTES = 2 * MAX_UPLOAD_BYTES
"""Bytes the kernel holds for unfinished files, in all."""

UPLOAD_TIMEOUT = 120.0
"""Seconds without a chunk after which an unfinished file is dropped (the default of ``Upload(timeout=...)``)."""

MAX_NAME = 1024
"""Longest file name taken."""


class Upload(anywidget.AnyWidget):
    """A file button; ``on_file(name, data)`` is called for each file received, ``on_refused(name, size)`` for
    each file over ``max_bytes`` (nothing of it was sent), ``on_error(message)`` for a message the kernel refuses.

    The kernel trusts nothing the browser says: every chunk message is checked (its id, name, declared size, chunk
    count and index, and the chunk's length against ``chunk_bytes``) before any of it is kept; a file's declared
    size is capped at ``max_bytes`` here too; at most :data:`MAX_IN_FLIGHT` files are assembled at once, holding
    at most :data:`MAX_PENDING_BYTES` in all; a file with no chunk for ``timeout`` seconds is dropped, by a timer
    on the kernel's event loop (so on the kernel's thread) armed while files are unfinished, and at every message.
    A refused message drops its file and is reported through ``on_error`` (the panel's status line).

    Example::

        >>> received = []
        >>> upload = Upload(on_file=lambda name, data: received.append(name), on_refused=lambda name, size: None)
        >>> upload.description
        'Upload'
    """

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
        on_error: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = UPLOAD_TIMEOUT,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.on_file, self.on_refused, self.on_error = on_file, on_refused, on_error
        self._clock, self._timeout = clock, timeout
        self._files: dict[str, _Partial] = {}
        self._timer: asyncio.TimerHandle | None = None
        self.on_msg(self._on_message)

    @property
    def pending_bytes(self) -> int:
        """Bytes held for files not yet complete."""
        return sum(partial.held for partial in self._files.values())

    def _on_message(self, _widget, content: object, buffers) -> None:
        self._expire()
        try:
            self._receive(content, buffers)
        except _Malformed as err:
            if isinstance(content, dict) and isinstance(content.get("id"), str):
                self._files.pop(content["id"], None)
            _log.warning("upload message refused: %s", err)
            if self.on_error is not None:
                self.on_error(f"Upload refused: {err}. Choose the file again.")
        self._arm()

    def _arm(self) -> None:
        """Schedule the next expiry check on the running event loop (the kernel's) for the oldest unfinished
        file; none without unfinished files or outside a loop (then every message checks)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._files:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        due = min(partial.last for partial in self._files.values()) + self._timeout - self._clock()
        self._timer = loop.call_later(max(due, 0.0), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._expire()
        self._arm()

    def _expire(self) -> None:
        now = self._clock()
        for key, partial in list(self._files.items()):
            if now - partial.last >= self._timeout:
                del self._files[key]
                _log.warning("upload of %s dropped: no chunk for %.0f s", partial.name, self._timeout)
                if self.on_error is not None:
                    self.on_error(
                        f"The upload of {partial.name} stopped before it was complete; choose the file again."
                    )

    def _receive(self, content: object, buffers) -> None:
        if not isinstance(content, dict):
            raise _Malformed("the message is not a mapping")
        event = content.get("event")
        name = _field(content, "name", str, "upload")
        if len(name) > MAX_NAME:
            raise _Malformed(f"a file name of {len(name):,} characters (at most {MAX_NAME})")
        if event == "refused":
            self.on_refused(name, _field(content, "size", int, 0))
            return
        if event != "chunk":
            raise _Malformed(f"an unknown event {shown(event)}")
        key = _field(content, "id", str, None)
        if not key or len(key) > 64:
            raise _Malformed("a chunk without a proper upload id")
        size = _field(content, "size", int, None)
        if not 0 <= size <= self.max_bytes:
            self._files.pop(key, None)
            self.on_refused(name, size)
            return
        count, index = _field(content, "count", int, None), _field(content, "index", int, None)
        expected = max(1, -(-size // self.chunk_bytes))
        if count != expected:
            raise _Malformed(f"count={count} for a file of {size:,} bytes in chunks of {self.chunk_bytes:,}")
        if not 0 <= index < count:
            raise _Malformed(f"chunk index {index} of {count}")
        if not buffers or len(buffers) != 1:
            raise _Malformed("a chunk message without exactly one buffer")
        length = memoryview(buffers[0]).nbytes
        want = min(self.chunk_bytes, size - index * self.chunk_bytes)
        if length != want:
            raise _Malformed(f"chunk {index} holds {length:,} bytes, not {want:,}")
        partial = self._files.get(key)
        if partial is None:
            if len(self._files) >= MAX_IN_FLIGHT:
                raise _Malformed(f"more than {MAX_IN_FLIGHT} files at once; wait for the others")
            partial = self._files[key] = _Partial(name, size, count, self._clock())
        elif (partial.name, partial.size, partial.count) != (name, size, count):
            raise _Malformed("a chunk that does not match its file's first chunk")
        if index in partial.parts:
            raise _Malformed(f"chunk {index} sent twice")
        if self.pending_bytes + length > MAX_PENDING_BYTES:
            raise _Malformed(f"more than {MAX_PENDING_BYTES / 2**20:.0f} MiB held for unfinished files")
        partial.parts[index] = bytes(buffers[0])
        partial.held += length
        partial.last = self._clock()
        if len(partial.parts) == count:
            del self._files[key]
            self.on_file(name, b"".join(partial.parts[i] for i in range(count)))


class _Malformed(Exception):
    """A message the kernel refuses; the text says why."""


@dataclass
class _Partial:
    name: str
    size: int
    count: int
    last: float
    parts: dict[int, bytes] = field(default_factory=dict)
    held: int = 0


def _field(content: dict, key: str, kind: type, default):
    value = content.get(key, default)
    if value is None or isinstance(value, bool) or not isinstance(value, kind):
        raise _Malformed(f"{key}={shown(value)} is not a {kind.__name__}")
    return value
