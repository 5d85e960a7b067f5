"""Showing drawn grids in an :class:`~explorer.widgets.elements.ImageView`: bytes, hover geometry, colour bar."""

from __future__ import annotations

import functools
import io

import numpy as np

from ..elements import ImageView
from ..engine import Grid

__all__ = ["show_grid", "jpeg", "colorbar"]


@functools.lru_cache(maxsize=32)
def _stops(cmap: str, count: int = 9) -> tuple[str, ...]:
    from ...render import colormap_lut

    table = colormap_lut(cmap).numpy()
    return tuple("rgb({},{},{})".format(*table[int(i)]) for i in np.linspace(0, 255, count).round())


def colorbar(grid: Grid) -> dict:
    """The colour bar of a grid: its colour map, and the range of its values (per tile: 'min' to 'max')."""
    layout = grid.layout
    if layout.norm == "channel" and len(layout.ranges) > 1:
        low, high, note = "min", "max", "per tile"
    else:
        low, high = (f"{value:.3g}" for value in layout.ranges[0])
        note = {"channel": "", "stage": "one scale for the stage", "symmetric": "zero in the middle"}.get(
            layout.norm, f"{layout.norm} scale"
        )
    return {"colors": list(_stops(layout.cmap)), "low": low, "high": high, "note": note}


def geometry(grid: Grid) -> dict:
    """What the front end needs to find the channel and position under the pointer."""
    layout = grid.layout
    return {
        "cols": layout.cols,
        "tile": list(layout.tile),
        "pad": layout.pad,
        "channels": list(layout.channels),
        "map": list(layout.map_size),
    }


def show_grid(view: ImageView, grid: Grid, title: str) -> None:
    """Put ``grid`` on ``view`` (lossless PNG: the colours are the values), in one message."""
    view.show(grid.png, "png", title=title, grid=geometry(grid), colorbar=colorbar(grid))


def jpeg(array: np.ndarray, quality: int = 88) -> bytes:
    """JPEG bytes of a uint8 RGB array: for photographs on show, where lossless is not needed."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()
