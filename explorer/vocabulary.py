"""The names that arguments accept, in a module that imports nothing heavy (the panel's state reads them before
torch is imported).

Example::

    >>> from explorer.vocabulary import NORMS, STAT_NAMES
    >>> NORMS
    ('channel', 'stage', 'global', 'symmetric')
"""

from __future__ import annotations

from ._args import closest, shown
from .errors import InvalidArgumentError

__all__ = [
    "CONCEPT_METHODS",
    "DIVERGING_CMAP",
    "MAP_CMAP",
    "NORMS",
    "OVERLAY_CMAP",
    "STAT_NAMES",
    "VIS_METHODS",
    "colormap_name",
    "page_count",
]

NORMS = ("channel", "stage", "global", "symmetric")
"""The normalisations :func:`explorer.render_grid` accepts."""

STAT_NAMES = ("mean", "std", "min", "max", "l2", "sparsity", "positive", "nonfinite")
"""The per-channel statistics of :class:`explorer.ChannelStats`, in table order."""


# The default colour maps, one per kind of picture; every function that takes ``cmap=`` defaults to one of these.
# They live here, not in explorer.render, because the panel's state and the CLI read them before torch is imported.

MAP_CMAP = "viridis"
"""Maps drawn on their own (channel grids, heatmaps, attention panels, the panel): perceptually uniform, and
readable in greyscale and by colour-blind readers."""

OVERLAY_CMAP = "inferno"
"""Heat laid over a photo (overlays, class-activation maps, exemplar crops, similarity over the image): black at
zero, so the photo shows through where nothing fires, and bright where it does."""

DIVERGING_CMAP = "RdBu_r"
"""Signed values around zero (``norm="symmetric"``, differences between backbones): white at zero, red above,
blue below."""


def colormap_name(cmap: object) -> str:
    """``cmap`` when matplotlib has a colour map of that name, else an :class:`~explorer.InvalidArgumentError` with
    the closest names: the one check for every function and widget that takes a colour map.

    Example::

        >>> colormap_name("magma")
        'magma'
    """
    import matplotlib

    if not isinstance(cmap, str) or cmap not in matplotlib.colormaps:
        raise InvalidArgumentError(
            f"Unknown colour map {shown(cmap)}.{closest(cmap, list(matplotlib.colormaps))} Any matplotlib name "
            'works: "viridis", "magma", "RdBu_r", ...'
        )
    return cmap


def page_count(count: int, page_size: int) -> int:
    """Pages of ``page_size`` channels needed for ``count`` channels (the last page may be shorter); 0 for size 0.

    Example::

        >>> page_count(768, 64), page_count(65, 64)
        (12, 2)
    """
    return -(-count // page_size) if page_size else 0


CONCEPT_METHODS = ("nmf", "semi-nmf", "topk-sae")
"""The dictionaries :func:`explorer.concepts` fits (its ``method=``)."""

VIS_METHODS = ("fft", "maco")
"""The ``method=`` names of :func:`explorer.visualize`: Lucid's Fourier parameterisation, MaCo's phase-only one."""
