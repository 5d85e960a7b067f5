"""The panel's engine: loads checkpoints and captures feature maps, each at most once. No widgets here.

A capture is cached by (checkpoint, precision, images, stages, layers): display-only changes (colour map, page,
normalisation, channel) never run the model again. ``forward_passes`` counts the runs, so tests can check that.

Example::

    >>> session = Session()
    >>> bb = session.backbone("resnet18", pretrained=False, device="cpu", precision="float32")
    >>> maps = session.capture(bb, [image], out_indices=[1], layers=[])
    >>> session.forward_passes
    1
"""

from __future__ import annotations

import gc
import logging
from collections import OrderedDict
from collections.abc import Sequence

import torch
from PIL import Image

from ..backbones import Backbone, load_backbone
from ..hooks import FeatureMaps
from .state import PRECISIONS

__all__ = ["Session", "DTYPES"]

_log = logging.getLogger(__name__)

DTYPES = {name: getattr(torch, name) for name in PRECISIONS}


class Session:
    """Backbones and captures for one panel. Keeps one main and one comparison checkpoint, and a few captures."""

    max_captures = 6

    def __init__(self) -> None:
        self._backbones: dict[str, tuple[tuple, Backbone]] = {}
        self._captures: OrderedDict[tuple, FeatureMaps] = OrderedDict()
        self.forward_passes = 0
        self.loads = 0

    def backbone(
        self,
        spec: str,
        *,
        pretrained: bool,
        device: str,
        precision: str,
        slot: str = "main",
        **kwargs,
    ) -> Backbone:
        """The backbone for ``spec`` in ``slot`` ("main" or "compare"), loaded only when the key changes.

        The slot's previous backbone is released once the new one has loaded, so memory does not add up and a
        failed load leaves the previous one in place.
        """
        dtype = DTYPES[precision]
        key = (spec, pretrained, device, tuple(sorted(kwargs.items())))
        held = self._backbones.get(slot)
        if held is not None and held[0] == key:
            backbone = held[1]
        else:
            backbone = load_backbone(spec, pretrained=pretrained, device=device, **kwargs)
            self.release(slot)  # only once the new one loaded: a failed load keeps what is shown
            self._backbones[slot] = (key, backbone)
            self.loads += 1
        if dtype != torch.float32 and backbone.device.type == "cpu":
            raise ValueError(
                f"{precision} needs a GPU; this model runs on the CPU. Choose float32, or device cuda."
            )
        backbone.precision = None if dtype == torch.float32 else dtype  # autocast: the weights stay as loaded
        return backbone

    def release(self, slot: str) -> None:
        """Drop a slot's backbone and its captures, and give the memory back."""
        held = self._backbones.pop(slot, None)
        if held is None:
            return
        self._forget(held[1])
        on_cuda = held[1].device.type == "cuda"
        del held
        gc.collect()
        if on_cuda:
            torch.cuda.empty_cache()

    def _forget(self, backbone: Backbone) -> None:
        for key in [k for k in self._captures if k[0] == id(backbone)]:
            del self._captures[key]

    def capture(
        self,
        backbone: Backbone,
        images: Sequence[Image.Image],
        *,
        out_indices: Sequence[int],
        layers: Sequence[str] = (),
        images_key: object = None,
    ) -> FeatureMaps:
        """Maps of the selected stages and layers for ``images``, from the cache when this was run before.

        Args:
            backbone: from :meth:`backbone`.
            images: the images, in batch order.
            out_indices: stages to select (transformers' rules; a refused selection changes nothing).
            layers: extra module names.
            images_key: identifies ``images`` for the cache (by default their object ids).
        """
        backbone.out_indices = list(out_indices)
        images_key = images_key if images_key is not None else tuple(id(image) for image in images)
        key = (id(backbone), str(backbone.precision), images_key, tuple(backbone.out_features), tuple(layers))
        cached = self._captures.get(key)
        if cached is not None:
            self._captures.move_to_end(key)
            return cached
        maps = backbone.capture(backbone.pixel_values(list(images)), layers=[*backbone.out_features, *layers])
        self.forward_passes += 1
        self._captures[key] = maps
        while len(self._captures) > self.max_captures:
            self._captures.popitem(last=False)
        return maps
