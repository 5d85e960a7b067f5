"""Colour maps as lookup tables on the map's device: 256 matplotlib colours plus the special entries (non-finite,
background, label text), each RGBA packed in one int32 so a tile is coloured by one gather.

Example::

    >>> colormap_lut("viridis")[0]
    tensor([68,  1, 84], dtype=torch.uint8)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch

from .._args import shown, torch_device, whole
from ..errors import InvalidArgumentError
from ..vocabulary import DIVERGING_CMAP, MAP_CMAP, OVERLAY_CMAP, colormap_name

__all__ = [
    "BACKGROUND_COLOR",
    "BACKGROUND_ENTRY",
    "DIVERGING_CMAP",
    "MAP_CMAP",
    "OVERLAY_CMAP",
    "LABEL_BG_ENTRY",
    "LABEL_FG_ENTRY",
    "NONFINITE_COLOR",
    "NONFINITE_ENTRY",
    "colormap_lut",
    "lookup",
    "packed_palette",
    "unpack",
]

NONFINITE_COLOR = (255, 0, 255)
"""The colour of NaN and inf pixels: magenta."""

BACKGROUND_COLOR = (255, 255, 255)
"""The default colour between tiles."""

_LABEL_FG, _LABEL_BG = (255, 255, 255), (0, 0, 0)

NONFINITE_ENTRY, BACKGROUND_ENTRY, LABEL_FG_ENTRY, LABEL_BG_ENTRY = 256, 257, 258, 259
"""Where the special colours sit in a :func:`packed_palette`, after the colour map's 256."""


@functools.lru_cache(maxsize=64)
def _lut_cached(name: str, device: str, background: tuple[int, int, int]) -> torch.Tensor:
    import matplotlib

    colormap = matplotlib.colormaps[name]
    table = np.round(colormap(np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).astype(np.uint8)
    specials = np.array([NONFINITE_COLOR, background, _LABEL_FG, _LABEL_BG], dtype=np.uint8)
    rgba = np.concatenate([np.concatenate([table, specials]), np.full((260, 1), 255, np.uint8)], axis=1)
    return torch.from_numpy(np.ascontiguousarray(rgba).view(np.int32)[:, 0].copy()).to(device)


def colormap_lut(cmap: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """A matplotlib colour map as a ``(256, 3)`` uint8 lookup table on ``device`` (cached per name and device).

    Raises:
        ValueError: the name is unknown; the message lists the closest names.

    Example::

        >>> colormap_lut("viridis")[0], colormap_lut("viridis")[255]
        (tensor([68,  1, 84], dtype=torch.uint8), tensor([253, 231,  37], dtype=torch.uint8))
    """
    return unpack(packed_palette(cmap, torch_device("device", device))[:256])


def unpack(packed: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` uint8 RGB from packed RGBA int32 values."""
    return packed.contiguous().view(torch.uint8).unflatten(-1, (-1, 4))[..., :3]


def packed_palette(
    cmap: str, device: torch.device, background: Sequence[int] = BACKGROUND_COLOR
) -> torch.Tensor:
    """``(260,)`` int32, each RGBA packed in 4 bytes: the colour map's 256 colours, then the non-finite,
    background and label colours (tiles are laid out as packed pixels, 4 bytes each, and unpacked once)."""
    cmap = colormap_name(cmap)
    try:
        rgb = tuple(whole("background", v, maximum=255) for v in background)
    except (InvalidArgumentError, TypeError):  # not numbers, or not iterable
        rgb = ()
    if len(rgb) != 3:
        raise InvalidArgumentError(f"background={shown(background)}; pass an RGB triple of 0-255 integers.")
    return _lut_cached(cmap, str(device), rgb)


def lookup(palette: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Packed colours of an index tensor of any shape."""
    return palette.index_select(0, index.reshape(-1)).view(index.shape)
