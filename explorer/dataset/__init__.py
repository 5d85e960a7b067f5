"""Dataset scans: what every channel responds to across a whole image collection, locally or on Ray.

Modules, one job each: :mod:`~explorer.dataset.sources` (what is read), :mod:`~explorer.dataset.reduce` (the running
top-k and statistics), :mod:`~explorer.dataset.store` (cache keys and atomic Parquet shards),
:mod:`~explorer.dataset.fields` (receptive-field boxes), :mod:`~explorer.dataset.local` and
:mod:`~explorer.dataset.ray_backend` (the backends), :mod:`~explorer.dataset.scanner` (:func:`scan`),
:mod:`~explorer.dataset.results` (:class:`Scan`, :class:`Exemplar`), :mod:`~explorer.dataset.report` (the HTML
report) and :mod:`~explorer.dataset.samples` (:func:`sample_dataset`).

Example::

    >>> scan = explorer.scan("default", explorer.sample_dataset(16), out_indices=[2], k=4, progress=False)
    >>> round(scan.top("blocks.2", 17)[0].value, 2)
    25.46
"""

from __future__ import annotations

from .results import Exemplar, Scan
from .samples import sample_dataset
from .scanner import scan

__all__ = ["Exemplar", "Scan", "sample_dataset", "scan"]
