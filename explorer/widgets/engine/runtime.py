"""The engine's runtime: loaded backbones, captures and drawn parts, behind one lock of its own.

Everything is keyed by content: a backbone by its (spec, pretrained, device) and the serial given at its load,
an image by its gallery key, a capture by (backbone serial, precision, image keys, map names). The lock guards
the dictionaries only: it is never held across :func:`~explorer.load_backbone` or a forward pass, so a reader
on the kernel's thread (a statistics getter, a hover) never waits for a load.

Example::

    >>> runtime = Runtime()
    >>> key, bb = runtime.backbone("main", "resnet18", False, "cpu", on_load=lambda: None)
    >>> runtime.part(("answer",), lambda: 42), runtime.part(("answer",), lambda: 0)
    (42, 42)
"""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .gallery import new_key

if TYPE_CHECKING:
    from PIL import Image

    from ...backbones import Backbone
    from ...hooks import FeatureMaps

__all__ = ["Runtime", "devices", "list_layers", "model_view"]


def devices() -> tuple[str, ...]:
    """The devices this kernel offers."""
    import torch

    return ("auto", "cpu") + (("cuda",) if torch.cuda.is_available() else ())


def list_layers(backbone: Backbone) -> list[str]:
    """Every layer name ``backbone`` offers (:func:`explorer.list_layers`)."""
    from ...hooks import list_layers as layers

    return layers(backbone)


def model_view(image: Image.Image, preprocess) -> Image.Image:
    """``image`` as the model sees it (resized and cropped by its preprocessing)."""
    from ...preprocessing import model_view as view

    return view(image, preprocess)


class Runtime:
    """Backbones per slot ("main", "compare"), captures and parts; counts loads and forward passes."""

    max_captures = 6
    max_parts = 64

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._backbones: dict[str, tuple[tuple, int, Backbone]] = {}
        self._captures: OrderedDict[tuple, FeatureMaps] = OrderedDict()
        self._parts: OrderedDict[tuple, Any] = OrderedDict()
        self.loads = 0
        self.forward_passes = 0

    def backbone(
        self, slot: str, spec: str, pretrained: bool, device: str, on_load: Callable[[], None]
    ) -> tuple[int, Backbone]:
        """``(serial, backbone)`` of ``slot``, loaded when its key changed (``on_load`` is called first). The
        slot's previous backbone is released once the new one has loaded, so a failed load keeps what is shown."""
        key = (spec, pretrained, device)
        with self._lock:
            held = self._backbones.get(slot)
        if held is not None and held[0] == key:
            return held[1], held[2]
        from ...backbones import load_backbone

        on_load()
        backbone = load_backbone(spec, pretrained=pretrained, device=device)  # outside the lock: seconds
        serial = new_key()
        self.release(slot)
        with self._lock:
            self._backbones[slot] = (key, serial, backbone)
            self.loads += 1
        return serial, backbone

    def shared(self, slot: str) -> Backbone | None:
        """The backbone loaded in ``slot`` (shared: never change its selection), or None."""
        with self._lock:
            held = self._backbones.get(slot)
        return held[2] if held is not None else None

    def release(self, slot: str) -> None:
        """Drop a slot's backbone and its captures, and give the memory back."""
        with self._lock:
            held = self._backbones.pop(slot, None)
            if held is None:
                return
            for key in [k for k in self._captures if k[0] == held[1]]:
                del self._captures[key]
        on_cuda = held[2].device.type == "cuda"
        del held
        gc.collect()
        if on_cuda:
            import torch

            torch.cuda.empty_cache()

    def capture(
        self,
        serial: int,
        selected: Backbone,
        images: Sequence[Image.Image],
        image_keys: Sequence[int],
        layers: Sequence[str],
        on_run: Callable[[], None],
    ) -> FeatureMaps:
        """Maps of ``selected``'s stages and ``layers`` for ``images``, from the cache when this ran before
        (``serial``: the loaded backbone ``selected`` is a copy of)."""
        names = [*selected.out_features, *(n for n in layers if n not in selected.out_features)]
        key = (serial, str(selected.precision), tuple(image_keys), tuple(names))
        with self._lock:
            cached = self._captures.get(key)
            if cached is not None:
                self._captures.move_to_end(key)
                return cached
        on_run()
        maps = selected.capture(selected.pixel_values(list(images)), layers=names)
        with self._lock:
            self.forward_passes += 1
            self._captures[key] = maps
            while len(self._captures) > self.max_captures:
                self._captures.popitem(last=False)
        return maps

    def part(self, key: tuple, compute: Callable[[], Any]) -> Any:
        """``compute()``, once per ``key`` (the most recent :attr:`max_parts` are kept)."""
        with self._lock:
            if key in self._parts:
                self._parts.move_to_end(key)
                return self._parts[key]
        value = compute()
        with self._lock:
            self._parts[key] = value
            while len(self._parts) > self.max_parts:
                self._parts.popitem(last=False)
        return value

    def count_run(self) -> None:
        """Count a forward pass a view made itself (a class-activation map, a scan), for the status line."""
        with self._lock:
            self.forward_passes += 1
