"""Channel grids, colour maps and overlays as ``np.uint8`` RGB arrays, and a fast PNG encoder. No widgets.

Modules, one job each: :mod:`~explorer.render.channels` (channel selections), :mod:`~explorer.render.colormaps`
(lookup tables), :mod:`~explorer.render.ranges` (value ranges and normalisation), :mod:`~explorer.render.grid`
(the grid), :mod:`~explorer.render.overlay` and :mod:`~explorer.render.png`.

Normalisation, colour mapping (a 256-entry lookup table built from matplotlib once per colour map and device),
upscaling and tiling all run in torch on the map's device; one uint8 array is copied to the CPU at the end.

Default colour maps, one per kind of picture (:data:`MAP_CMAP` for maps on their own, :data:`OVERLAY_CMAP` for
heat over a photo, :data:`DIVERGING_CMAP` for signed values around zero), defined in :mod:`explorer.vocabulary`.

Non-finite values (NaN, inf) never reach the colour map: they are left out of every range and drawn in
:data:`NONFINITE_COLOR` (magenta), a colour that none of the usual colour maps contains.

Example::

    >>> grid = render_grid(maps["blocks.1"][0], channels="top:16", norm="channel", cmap="viridis")
    >>> grid.shape, grid.dtype                   # 16 tiles of 56x56 in 4 columns, 1 px apart
    ((229, 229, 3), dtype('uint8'))
    >>> png = to_png(grid)                       # PNG bytes
    >>> over = overlay(image, maps["blocks.1"][0, 5], alpha=0.5, preprocess=bb.preprocess)
    >>> over.shape
    (224, 224, 3)
"""

from __future__ import annotations

from ..vocabulary import NORMS
from .channels import ChannelsT, select_channels
from .colormaps import (
    BACKGROUND_COLOR,
    DIVERGING_CMAP,
    MAP_CMAP,
    NONFINITE_COLOR,
    OVERLAY_CMAP,
    colormap_lut,
)
from .grid import MIN_TILE, GridLayout, render_grid
from .overlay import overlay
from .png import to_png
from .ranges import value_range

__all__ = [
    "BACKGROUND_COLOR",
    "ChannelsT",
    "DIVERGING_CMAP",
    "GridLayout",
    "MAP_CMAP",
    "MIN_TILE",
    "NONFINITE_COLOR",
    "NORMS",
    "OVERLAY_CMAP",
    "colormap_lut",
    "overlay",
    "render_grid",
    "select_channels",
    "to_png",
    "value_range",
]
