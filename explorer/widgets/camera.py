"""A live camera as an image source: an anywidget on the browser's ``getUserMedia``.

The front end (``static/camera.js``) sends downscaled JPEG frames, at most ``max_fps`` a second, and sends none
while the kernel has not acknowledged the previous one: the kernel acknowledges a frame after ``on_frame`` has
returned (or, with ``acknowledge="later"``, when its owner calls :meth:`Camera.acknowledge` once the frame is
drawn: the panel, whose drawing happens in its engine's worker), so a slow model drops frames instead of
queueing them. Frames arrive on the kernel's own thread (comm messages), so ``on_frame`` may write widgets.
Where the browser gives no camera the reason is in ``error``.

Example::

    >>> import ipywidgets
    >>> bb = explorer.load_backbone("default")
    >>> view = ipywidgets.Image(format="png")
    >>> def draw(image):
    ...     view.value = explorer.to_png(explorer.pca(bb, [image], stage="blocks.4", size=224).rgb[0])
    >>> camera = Camera(on_frame=draw, max_fps=10)
    >>> panel = ipywidgets.VBox([camera, view])  # display(panel); camera.image: the latest frame as a PIL image
    >>> camera.max_fps
    10.0
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path

import anywidget
from PIL import Image
from traitlets import Bool, Bytes, Float, Int, TraitError, Unicode, validate

from ..errors import InvalidArgumentError

__all__ = ["Camera"]

_log = logging.getLogger(__name__)
_STATIC = Path(__file__).with_name("static")


class Camera(anywidget.AnyWidget):
    """The browser's camera; ``on_frame(image)`` is called with each frame received, as a PIL RGB image.

    Args:
        on_frame: called on the kernel's thread with each frame.
        acknowledge: ``"on_return"``: the next frame is sent once ``on_frame`` has returned; ``"later"``: once
            :meth:`acknowledge` is called (by an owner that draws elsewhere), or at once if ``on_frame`` fails.
        decode: ``on_frame`` gets the frame as a PIL image (True) or as its JPEG bytes (False: an owner that
            decodes elsewhere, as the panel's engine does, so that the kernel's thread does not decode it too).
    """

    _esm = _STATIC / "camera.js"
    width = Int(
        224,
        help="Width in pixels of the frames sent (downscaled in the browser; height keeps the "
        "camera's aspect).",
    ).tag(sync=True)
    max_fps = Float(10.0, help="Most frames sent per second.").tag(sync=True)
    quality = Float(0.8, help="JPEG quality, 0 to 1.").tag(sync=True)
    preview_width = Int(224, help="Width in CSS pixels of the live preview.").tag(sync=True)
    active = Bool(True, help="Send frames; False pauses (the preview keeps running).").tag(sync=True)
    error = Unicode(
        "", help="Why the camera cannot be used (set by the front end); empty when it works."
    ).tag(sync=True)
    frame = Bytes(b"", help="The latest frame as JPEG bytes (kernel side only).")
    frames = Int(0, help="Frames received so far.").tag(sync=True)
    acknowledged = Int(0, help="Frames acknowledged so far (drawn, so the front end may send the next).").tag(
        sync=True
    )

    def __init__(
        self,
        *,
        on_frame: Callable[[Image.Image], None] | None = None,
        acknowledge: str = "on_return",
        decode: bool = True,
        **kwargs,
    ) -> None:
        if acknowledge not in ("on_return", "later"):
            raise InvalidArgumentError(f'acknowledge={acknowledge!r}; pass "on_return" or "later".')
        super().__init__(**kwargs)
        self.on_frame = on_frame
        self._later = acknowledge == "later"
        self._decode = decode
        self._waiting: object = None  # the seq of the frame received and not yet acknowledged
        self.on_msg(self._on_message)

    def acknowledge(self) -> None:
        """The frame received last is drawn: let the front end send the next (no-op when none is waiting).
        Call it on the kernel's thread.

        Example::

            >>> frames = []                              # drawn later, e.g. by the kernel's event loop
            >>> camera = Camera(on_frame=frames.append, acknowledge="later")
            >>> camera.acknowledge()                     # no frame waits: nothing to say
        """
        if self._waiting is None:
            return
        seq, self._waiting = self._waiting, None
        self.acknowledged += 1
        self.send({"ack": seq})

    @validate("width", "preview_width")
    def _valid_width(self, proposal):
        if not 16 <= proposal["value"] <= 4096:
            raise TraitError(f"{proposal['trait'].name}={proposal['value']}; pass 16 to 4096 pixels.")
        return proposal["value"]

    @validate("max_fps")
    def _valid_fps(self, proposal):
        if not 0 < proposal["value"] <= 60:
            raise TraitError(
                f"max_fps={proposal['value']}; pass a rate above 0 and at most 60 frames a second."
            )
        return proposal["value"]

    @validate("quality")
    def _valid_quality(self, proposal):
        if not 0 < proposal["value"] <= 1:
            raise TraitError(f"quality={proposal['value']}; pass a JPEG quality above 0 and at most 1.")
        return proposal["value"]

    @property
    def image(self) -> Image.Image | None:
        """The latest frame as a PIL RGB image, or None before the first."""
        if not self.frame:
            return None
        with Image.open(io.BytesIO(self.frame)) as image:
            return image.convert("RGB")

    def _on_message(self, _widget, content: dict, buffers) -> None:
        if content.get("event") != "frame" or not buffers:
            return
        self._waiting = content.get("seq")
        try:
            self.frame = bytes(buffers[0])
            self.frames += 1
            if self.on_frame is not None:
                self.on_frame(self.image if self._decode else self.frame)
        except BaseException:
            self.acknowledge()  # a frame that failed is done with: the camera keeps going
            raise
        if not self._later:
            self.acknowledge()
