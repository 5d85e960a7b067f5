"""The names that arguments accept, in a module that imports nothing heavy (the panel's state reads them before
torch is imported).

Example::

    >>> from explorer.vocabulary import NORMS, STAT_NAMES
    >>> NORMS
    ('channel', 'stage', 'global', 'symmetric')
"""

from __future__ import annotations

__all__ = ["NORMS", "STAT_NAMES", "VIS_METHODS"]

NORMS = ("channel", "stage", "global", "symmetric")
"""The normalisations :func:`explorer.render_grid` accepts."""

STAT_NAMES = ("mean", "std", "min", "max", "l2", "sparsity", "positive", "nonfinite")
"""The per-channel statistics of :class:`explorer.ChannelStats`, in table order."""

VIS_METHODS = ("fft", "maco")
"""The ``method=`` names of :func:`explorer.visualize`: Lucid's Fourier parameterisation, MaCo's phase-only one."""
